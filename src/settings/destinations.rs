//! A subscription's destinations: listing them and removing one. Adding one is a save without a
//! number (`save::Target::destination` `None`).

use super::{Error, Service};
use crate::{
    domain::destination::{DestinationKey, DestinationNo},
    siem::Provider,
    store::{self, siem::Removed},
};

/// How the page, the history and the Events page name a destination: the name given, else its
/// provider (stored by id) and, after the first, its number.
pub fn destination_label(number: DestinationNo, name: Option<&str>, provider: &str) -> String {
    number.label(
        name,
        Provider::parse(provider).map_or(provider, |p| p.label()),
    )
}

/// Removes a destination other than the first: its settings, secrets and delivery state go,
/// what it still owed is counted as not sent, and the history (shown with the first
/// destination's) says who removed it and what was lost.
pub async fn remove(
    svc: Service<'_>,
    actor: (uuid::Uuid, &str),
    dest: DestinationKey,
) -> Result<Removed, Error> {
    if dest.number.is_first() {
        return Err(Error::Refused(
            "The first destination cannot be removed. To stop sending to it, switch Send Audit Logs to SIEM off and save."
                .to_owned(),
        ));
    }
    let removed = store::siem::remove_destination(svc.pool, dest, actor, |removed| {
        let name = destination_label(dest.number, removed.name.as_deref(), &removed.provider);
        vec![
            format!("Removed destination {name}"),
            format!(
                "{} event(s) it had not been sent yet will not be sent",
                removed.unsent
            ),
        ]
    })
    .await?
    .ok_or(Error::NoDestination(dest.number))?;
    tracing::info!(
        subscription_id = %dest.subscription_id,
        destination = %dest.number,
        user_id = %actor.0,
        unsent = removed.unsent,
        "SIEM destination removed"
    );
    Ok(removed)
}
