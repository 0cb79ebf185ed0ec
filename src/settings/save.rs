//! Saving validated settings: secrets sealed, delivery switched, history written, in one
//! transaction.

use super::history::describe_changes;
use super::{Error, Service};
use crate::{
    domain::{
        destination::{DestinationKey, DestinationName, MAX_DESTINATIONS},
        events::EventFilter,
    },
    siem::provider::{self, StoredProvider},
    store::{self, siem::Slot},
};

/// The switch and the event filter of a save (`filter: None` keeps the stored one).
pub struct Export<'a> {
    pub enabled: bool,
    pub filter: Option<&'a EventFilter>,
    /// "Expires on" dates of the provider's secrets (`None`: unchanged).
    pub expiries: Option<Vec<(&'static str, &'static str, Option<chrono::NaiveDate>)>>,
    /// On a provider switch: the events the previous destination still owes go to the new one.
    pub carry_backlog: bool,
    /// The version the writer read: a save since then refuses this one ([`Error::Stale`]).
    pub expected: Option<store::siem::SettingsVersion>,
}

/// Which destination a save writes, and its name.
pub struct Target<'a> {
    pub subscription_id: uuid::Uuid,
    /// An existing destination, or one to add under the number the caller read with
    /// [`store::siem::next_destination`] (and showed, and checked against): a save whose number
    /// another add took meanwhile is refused as stale.
    pub slot: Slot,
    /// The name (`None` keeps the stored one; `Some(None)` clears it).
    pub name: Option<Option<&'a DestinationName>>,
}

/// Stores validated settings (secrets sealed), switches delivery on or off, and writes the
/// history entry: for the page and the REST API alike. Returns the destination saved (an
/// added one's number).
pub async fn save(
    svc: Service<'_>,
    user: (uuid::Uuid, &str),
    target: Target<'_>,
    export: Export<'_>,
    before: Option<&store::siem::SettingsRow>,
    stored: &StoredProvider,
    validated: provider::Validated,
) -> Result<DestinationKey, Error> {
    let sub = target.subscription_id;
    // An added destination's secrets are sealed for the number it will get; the save checks
    // under the subscription's lock that no other add took it meanwhile.
    let number = match target.slot {
        Slot::Existing(number) | Slot::Added(number) => number,
    };
    let dest = DestinationKey::new(sub, number);
    let Export {
        enabled,
        filter,
        expiries,
        carry_backlog,
        expected,
    } = export;
    let provider = validated.provider;
    let mut changes = describe_changes(before, enabled, stored, &validated);
    if matches!(target.slot, Slot::Added(_)) {
        let name = number.label(
            target.name.flatten().map(DestinationName::as_str),
            provider.label(),
        );
        changes.insert(0, format!("Added destination {name}"));
    }
    // Worded here, before the transaction: whether a date changed compares with what was
    // stored (a date of a secret typed anew is new).
    let mut expiry_changes = Vec::new();
    let mut expiry_dates = Vec::new();
    for (name, label, date) in expiries.unwrap_or_default() {
        let field = provider
            .fields()
            .iter()
            .find(|f| f.sealed_as == Some(name))
            .map(|f| f.name)
            .unwrap_or(name);
        let secret_kept = validated.new_secrets.iter().all(|(n, _, _)| *n != name);
        let before = stored.expiries.get(field).copied().filter(|_| secret_kept);
        expiry_dates.push((name, date));
        if before != date {
            expiry_changes.push(match date {
                Some(d) => format!("{label} expires on {d}"),
                None => format!("{label}: expiry date removed"),
            });
        }
    }
    let new_secrets = validated
        .new_secrets
        .iter()
        .map(|(name, value, hint)| {
            let sealed = svc.master_key.seal(
                value.as_bytes(),
                &provider::secret_context(dest, provider, name),
            );
            (*name, sealed, hint.as_str())
        })
        .collect();
    let save = store::siem::SettingsSave {
        expected,
        subscription_id: sub,
        slot: target.slot,
        name: target.name.map(|n| n.map(DestinationName::as_str)),
        user,
        enabled,
        provider: provider.id(),
        settings: &validated.settings,
        removed_secrets: &validated.removed_secrets,
        new_secrets,
        expiries: expiry_dates,
        filter: filter.map(EventFilter::ids),
        carry_backlog,
    };
    store::siem::save_settings(svc.pool, &save, |saved| {
        if saved.switched.carried > 0 {
            changes.push(format!(
                "{} event(s) not yet delivered to the previous provider sent to {} instead",
                saved.switched.carried,
                provider.label()
            ));
        }
        if saved.switched.not_owed > 0 {
            changes.push(format!(
                "{} event(s) recorded while export was off were not sent (Replay can send them)",
                saved.switched.not_owed
            ));
        }
        changes.extend(expiry_changes);
        if let (Some(filter), Some(before)) = (filter, &saved.filter_before) {
            if before != filter {
                changes.push(format!(
                    "Events to send changed from {} to {}",
                    before.describe(),
                    filter.describe()
                ));
            }
        }
        changes
    })
    .await
    .map_err(|e| match e {
        store::Error::Stale { by, at } => Error::Stale { by, at },
        store::Error::TooManyDestinations => Error::Refused(format!(
            "This subscription already has {MAX_DESTINATIONS} destinations, the most it may have. Remove one first."
        )),
        store::Error::NotFound => Error::NoDestination(number),
        other => Error::Store(other),
    })?;
    tracing::info!(subscription_id = %sub, destination = %number, user_id = %user.0, enabled, provider = provider.id(), "SIEM settings saved");
    Ok(dest)
}
