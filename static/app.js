// Progressive enhancement only: every page works without this file.
"use strict";

// Choosing a Datadog site fills in its logs intake URL (unless "Custom URL" is chosen).
document.addEventListener("DOMContentLoaded", () => {
  const site = document.getElementById("datadog_site");
  const url = document.getElementById("datadog_url");
  const api = document.getElementById("datadog_api_url");
  if (!site || !url) return;
  site.addEventListener("change", () => {
    const option = site.options[site.selectedIndex];
    const intake = option && option.dataset.intakeUrl;
    if (intake) {
      url.value = intake;
      // The site's API lives at api.<site>, beside http-intake.logs.<site>.
      if (api) api.value = intake.replace("://http-intake.logs.", "://api.");
    } else {
      url.focus();
    }
  });
});

// Copy buttons next to read-only query fields (shown only when the clipboard is available).
document.addEventListener("DOMContentLoaded", () => {
  if (!navigator.clipboard) return;
  document.querySelectorAll("button.copy[data-copy]").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      if (!field) return;
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = "Copy"; }, 2000);
      } catch (_) {
        field.select();
      }
    });
  });
});

// Show only the fields of the chosen SIEM provider (without JavaScript every section shows).
document.addEventListener("DOMContentLoaded", () => {
  const provider = document.getElementById("provider");
  if (!provider) return;
  const sections = document.querySelectorAll("fieldset.provider-fields[data-provider]");
  const show = () => {
    sections.forEach((section) => {
      section.hidden = section.dataset.provider !== provider.value;
    });
  };
  provider.addEventListener("change", show);
  show();
});

// The backlog checkbox shows only while another provider is chosen, and names it.
document.addEventListener("DOMContentLoaded", () => {
  const provider = document.getElementById("provider");
  const field = document.getElementById("carry-backlog-field");
  const to = document.getElementById("carry-backlog-to");
  if (!provider || !field || !to) return;
  const show = () => {
    field.hidden = provider.value === field.dataset.from;
    to.textContent = provider.options[provider.selectedIndex].text;
  };
  provider.addEventListener("change", show);
  show();
});
