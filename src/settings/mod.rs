//! The settings service: a subscription's stored SIEM settings (loading and unsealing them, and
//! the destination the forwarder sends through), saving them (`save`), the secrets' expiry dates
//! (`expiry`), Save-after-Test (`tested`), the administrators' actions (`actions`) and the
//! history's wording (`history`). The settings page and the REST API are thin adapters over it;
//! the form rules are the providers' own (`siem::provider`). It works with the pool and the master
//! key ([`Service`]) and answers with [`Error`].

pub mod actions;
pub mod destinations;
pub mod expiry;
pub mod history;
pub mod save;
pub mod tested;

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::{
    crypto::MasterKey,
    domain::destination::{DestinationKey, DestinationNo},
    siem::{
        provider::Provider,
        provider::{secret_context, BuildError, Context, StoredProvider, StoredSecret},
        SiemDestination,
    },
    store,
};

/// What the settings service works with.
#[derive(Clone, Copy)]
pub struct Service<'a> {
    /// The database.
    pub pool: &'a PgPool,
    /// Seals and opens the stored secrets.
    pub master_key: &'a MasterKey,
    /// For the actions that call a SIEM (monitors).
    pub client: &'a reqwest::Client,
    /// The outbound policy those calls go through.
    pub egress: &'a crate::siem::egress::EgressPolicy,
}

/// Why the settings service refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's role does not allow this: the sentence to show.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// Someone saved since the writer read the settings: who, and when. Nothing was saved.
    #[error("the settings were saved by {by} at {at} since they were read")]
    Stale {
        by: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    /// The request cannot be done as asked: the sentence to show (e.g. a sixth destination).
    #[error("{0}")]
    Refused(String),
    /// The subscription has no destination with this number (never added, or removed).
    #[error("this subscription has no destination {0}")]
    NoDestination(DestinationNo),
    /// The database.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Anything else: a bug.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Loads and unseals what is stored for `provider` (see [`load_all`]).
pub async fn load(
    pool: &PgPool,
    master_key: &MasterKey,
    dest: DestinationKey,
    provider: Provider,
) -> Result<StoredProvider, store::Error> {
    Ok(load_all(pool, master_key, dest)
        .await?
        .into_iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, stored)| stored)
        .unwrap_or_default())
}

/// Loads and unseals what is stored for every provider of a destination, in two queries.
pub async fn load_all(
    pool: &PgPool,
    master_key: &MasterKey,
    dest: DestinationKey,
) -> Result<Vec<(Provider, StoredProvider)>, store::Error> {
    let fields = store::siem::all_provider_fields(pool, dest).await?;
    let secrets = store::siem::all_secrets(pool, dest).await?;
    Ok(open_all(master_key, dest, &fields, &secrets))
}

/// What is stored for every provider, from rows already read: typed settings per provider and
/// sealed secrets, opened with the master key (a secret that does not open is unreadable).
pub fn open_all(
    master_key: &MasterKey,
    dest: DestinationKey,
    fields: &[(String, serde_json::Value)],
    secrets: &[(String, String, store::siem::SecretRow)],
) -> Vec<(Provider, StoredProvider)> {
    Provider::all()
        .map(|provider| {
            let settings = fields
                .iter()
                .find(|(p, _)| p == provider.id())
                .map(|(_, v)| v.clone())
                .unwrap_or(serde_json::Value::Null);
            let mut stored = StoredProvider {
                fields: (provider.spec().form)(&settings),
                settings,
                secrets: BTreeMap::new(),
                expiries: BTreeMap::new(),
            };
            for field in provider.sealed_fields() {
                let Some(name) = field.sealed_as else {
                    continue;
                };
                if let Some((_, _, row)) = secrets
                    .iter()
                    .find(|(p, n, _)| p == provider.id() && n == name)
                {
                    let context = secret_context(dest, provider, name);
                    let value = master_key
                        .open(&row.sealed, &context)
                        .and_then(|bytes| String::from_utf8(bytes).ok());
                    if let Some(date) = row.expires_on {
                        stored.expiries.insert(field.name.to_owned(), date);
                    }
                    let opened = match value {
                        Some(v) => StoredSecret::Usable(v, row.hint.clone()),
                        None => StoredSecret::Unreadable(row.hint.clone()),
                    };
                    stored.secrets.insert(field.name.to_owned(), opened);
                }
            }
            (provider, stored)
        })
        .collect()
}

/// Why stored settings give the forwarder no destination: the reason its failure and email
/// carry, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// The stored provider id is not one this version knows.
    #[error("Unknown SIEM provider `{0}`.")]
    UnknownProvider(String),
    /// A sealed value does not open under the current master key.
    #[error(
        "The stored {provider} {field} can no longer be read (the master key changed); {fix}."
    )]
    Unreadable {
        provider: &'static str,
        field: String,
        fix: &'static str,
    },
    /// The provider's `build` refused the stored settings.
    #[error("The {provider} settings cannot be used: {reason}. Open Settings, complete or fix them and save.")]
    Settings {
        provider: &'static str,
        reason: BuildError,
    },
}

/// Why [`destination`] gave none: the settings, or the database.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Unusable(#[from] Unusable),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The destination the forwarder sends through, or why there is none: the provider's own
/// `build` over the typed settings and the secrets that open. Nothing is parsed from a form
/// and nothing is generated here.
pub async fn destination(
    pool: &PgPool,
    master_key: &MasterKey,
    dest: DestinationKey,
    provider: Provider,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, DestinationError> {
    let stored = load(pool, master_key, dest, provider).await?;
    if let Some(field) = provider.sealed_fields().find(|f| {
        matches!(
            stored.secrets.get(f.name),
            Some(StoredSecret::Unreadable(_))
        )
    }) {
        let fix = provider
            .generated()
            .filter(|g| g.field == field.name)
            .map_or("open Settings and enter it again", |g| g.unreadable_fix);
        return Err(Unusable::Unreadable {
            provider: provider.label(),
            field: field.label.to_lowercase(),
            fix,
        }
        .into());
    }
    let secrets = stored.usable_secrets(provider);
    (provider.spec().build)(&stored.settings, &secrets, context).map_err(|reason| {
        Unusable::Settings {
            provider: provider.label(),
            reason,
        }
        .into()
    })
}
