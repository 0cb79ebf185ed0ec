//! Saving validated settings: secrets sealed, delivery switched, history written, in one
//! transaction.

use super::history::describe_changes;
use super::{Error, Service};
use crate::{
    domain::events::EventFilter,
    siem::provider::{self, StoredProvider},
    store,
};

/// The switch and the event filter of a save (`filter: None` keeps the stored one).
pub struct Export<'a> {
    pub enabled: bool,
    pub filter: Option<&'a EventFilter>,
    /// "Expires on" dates of the provider's secrets (`None`: unchanged).
    pub expiries: Option<Vec<(&'static str, &'static str, Option<chrono::NaiveDate>)>>,
    /// On a provider switch: the events the previous destination still owes go to the new one.
    pub carry_backlog: bool,
}

/// Stores validated settings (secrets sealed), switches delivery on or off, and writes the
/// history entry: for the page and the REST API alike.
pub async fn save(
    svc: Service<'_>,
    user: (uuid::Uuid, &str),
    sub: uuid::Uuid,
    export: Export<'_>,
    before: Option<&store::siem::SettingsRow>,
    stored: &StoredProvider,
    validated: provider::Validated,
) -> Result<(), Error> {
    let Export {
        enabled,
        filter,
        expiries,
        carry_backlog,
    } = export;
    let provider = validated.provider;
    let mut changes = describe_changes(before, enabled, stored, &validated);
    let settings = &validated.settings;

    let mut tx = svc.pool.begin().await.map_err(store::Error::from)?;
    store::siem::upsert_settings(&mut tx, sub, enabled, provider.id(), user.0, user.1).await?;
    store::siem::upsert_provider_fields(&mut tx, sub, provider.id(), settings).await?;
    for name in &validated.removed_secrets {
        store::siem::delete_secret(&mut tx, sub, provider.id(), name).await?;
    }
    for (name, value, hint) in &validated.new_secrets {
        let sealed = svc.master_key.seal(
            value.as_bytes(),
            &provider::secret_context(sub, provider, name),
        );
        store::siem::upsert_secret(&mut tx, sub, provider.id(), name, &sealed, hint).await?;
    }
    let switched =
        store::delivery::apply_switch(&mut tx, sub, enabled.then(|| provider.id()), carry_backlog)
            .await?;
    if switched.carried > 0 {
        changes.push(format!(
            "{} event(s) not yet delivered to the previous provider sent to {} instead",
            switched.carried,
            provider.label()
        ));
    }
    if switched.not_owed > 0 {
        changes.push(format!(
            "{} event(s) recorded while export was off were not sent (Replay can send them)",
            switched.not_owed
        ));
    }
    for (name, label, date) in expiries.unwrap_or_default() {
        let field = provider
            .fields()
            .iter()
            .find(|f| f.sealed_as == Some(name))
            .map(|f| f.name)
            .unwrap_or(name);
        let secret_kept = validated.new_secrets.iter().all(|(n, _, _)| *n != name);
        let before = stored.expiries.get(field).copied().filter(|_| secret_kept);
        store::siem::set_secret_expiry(&mut tx, sub, provider.id(), name, date).await?;
        if before != date {
            changes.push(match date {
                Some(d) => format!("{label} expires on {d}"),
                None => format!("{label}: expiry date removed"),
            });
        }
    }
    if let Some(filter) = filter {
        let before = store::delivery::set_filter(&mut tx, sub, provider.id(), filter.ids()).await?;
        if let Some(before) = before.filter(|b| b != filter) {
            changes.push(format!(
                "Events to send changed from {} to {}",
                before.describe(),
                filter.describe()
            ));
        }
    }
    store::siem::record_history(&mut *tx, sub, user.0, user.1, "saved", &changes).await?;
    tx.commit().await.map_err(store::Error::from)?;
    tracing::info!(subscription_id = %sub, user_id = %user.0, enabled, provider = provider.id(), "SIEM settings saved");
    Ok(())
}
