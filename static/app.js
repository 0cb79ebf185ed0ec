// Progressive enhancement only: every page works without this file.
"use strict";

// An option that fills other fields (a Datadog site: its intake and API URLs) fills them when
// chosen; one that fills nothing (a custom URL) moves the focus to the field to type into.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("select[data-fills-focus]").forEach((select) => {
    select.addEventListener("change", () => {
      const option = select.options[select.selectedIndex];
      const fills = option && option.dataset.fills ? JSON.parse(option.dataset.fills) : null;
      if (fills) {
        for (const [name, value] of Object.entries(fills)) {
          const field = document.getElementById(name);
          if (field) field.value = value;
        }
      } else {
        const field = document.getElementById(select.dataset.fillsFocus);
        if (field) field.focus();
      }
    });
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
