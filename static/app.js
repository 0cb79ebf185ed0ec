// Progressive enhancement only: every page works without this file.
"use strict";

// Choosing a Datadog site fills in its logs intake URL (unless "Custom URL" is chosen).
document.addEventListener("DOMContentLoaded", () => {
  const site = document.getElementById("datadog_site");
  const url = document.getElementById("datadog_url");
  if (!site || !url) return;
  site.addEventListener("change", () => {
    const option = site.options[site.selectedIndex];
    const intake = option && option.dataset.intakeUrl;
    if (intake) {
      url.value = intake;
    } else {
      url.focus();
    }
  });
});
