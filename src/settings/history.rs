//! The history's wording: what a save changed, in sentences, never a secret.

use crate::{
    siem::{
        provider::{self, StoredProvider},
        Provider,
    },
    store,
};

/// The label people see for a stored field (history entries use it).
pub fn field_label(provider: Provider, name: &str) -> String {
    provider
        .field(name)
        .map_or_else(|| name.to_owned(), |f| f.label.to_owned())
}

/// Sentences for the history: what this save changes. Never a secret itself.
pub fn describe_changes(
    before: Option<&store::siem::SettingsRow>,
    enabled: bool,
    stored: &StoredProvider,
    new: &provider::Validated,
) -> Vec<String> {
    let mut changes = Vec::new();
    let was_enabled = before.is_some_and(|b| b.enabled);
    if was_enabled != enabled {
        changes.push(if enabled {
            "Send Audit Logs to SIEM turned on".to_owned()
        } else {
            "Send Audit Logs to SIEM turned off".to_owned()
        });
    }
    if before.map(|b| b.provider.as_str()) != Some(new.provider.id()) {
        changes.push(format!("SIEM Provider set to {}", new.provider.label()));
    }
    let names: std::collections::BTreeSet<&String> =
        stored.fields.keys().chain(new.fields.keys()).collect();
    for name in names {
        let old = stored.fields.get(name);
        let now = new.fields.get(name);
        if old != now {
            // A URL's query may carry a credential: the history never shows its values.
            let shown = |value: Option<&String>| match value {
                None => "none".to_owned(),
                Some(v) => url::Url::parse(v)
                    .ok()
                    .filter(|u| u.query().is_some())
                    .map_or_else(|| v.clone(), |u| provider::hide_query_values(&u)),
            };
            let label = field_label(new.provider, name);
            let (old, now) = (shown(old), shown(now));
            changes.push(if old == now {
                format!("{label} changed (its query's values are not shown)")
            } else {
                format!("{label} changed from {old} to {now}")
            });
        }
    }
    for (name, value, hint) in &new.new_secrets {
        let field = new
            .provider
            .sealed_fields()
            .find(|f| f.sealed_as == Some(*name))
            .map_or(*name, |f| f.name);
        let label = field_label(new.provider, field);
        changes.push(match stored.secrets.get(field) {
            Some(old) if old.usable() == Some(value.as_str()) => {
                format!("{label} entered again (unchanged)")
            }
            Some(_) => format!("{label} replaced (now ending in {hint})"),
            None => format!("{label} set (ending in {hint})"),
        });
    }
    if changes.is_empty() {
        changes.push("Saved without changes".to_owned());
    }
    changes
}

/// A time as the portal shows it.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}
