//! A subscription's stored SIEM configuration, opened for use: plain fields parsed back into
//! domain types and secrets unsealed with the master key.
//!
//! Shared by the settings page (Test Connection with the stored key) and the forwarder, so
//! both read the configuration the same way.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    domain::{
        datadog::{DatadogApiKey, DatadogIntakeUrl, DatadogSite},
        provider::Provider,
    },
    store,
};

/// Name of the Datadog API key among the provider's secrets.
pub const DATADOG_API_KEY: &str = "api_key";

/// The associated data that binds a sealed secret to its subscription, provider and name.
pub fn secret_context(subscription_id: Uuid, provider: Provider, name: &str) -> String {
    format!("{subscription_id}/{}/{name}", provider.id())
}

/// Datadog's plain fields as stored (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatadogFields {
    /// Site code (`US1`…), or `None` for a custom URL.
    pub site: Option<String>,
    /// Intake base URL.
    pub url: Option<String>,
}

/// A stored secret as the page and the forwarder see it.
pub enum StoredSecret<T> {
    /// Unsealed and valid.
    Usable(T, String),
    /// Present but it no longer opens (another master key) or no longer parses.
    Unreadable(String),
}

impl<T> StoredSecret<T> {
    /// The last 4 characters.
    pub fn hint(&self) -> &str {
        match self {
            StoredSecret::Usable(_, hint) | StoredSecret::Unreadable(hint) => hint,
        }
    }

    /// The value, when usable.
    pub fn usable(&self) -> Option<&T> {
        match self {
            StoredSecret::Usable(v, _) => Some(v),
            StoredSecret::Unreadable(_) => None,
        }
    }
}

/// Datadog settings as stored.
pub struct StoredDatadog {
    /// The chosen site, if a known one.
    pub site: Option<DatadogSite>,
    /// The intake URL.
    pub url: Option<DatadogIntakeUrl>,
    /// The API key.
    pub api_key: Option<StoredSecret<DatadogApiKey>>,
}

impl StoredDatadog {
    /// A complete configuration, when the URL and a usable key are both there.
    pub fn config(&self) -> Option<crate::siem::datadog::DatadogConfig> {
        Some(crate::siem::datadog::DatadogConfig {
            site: self.site,
            url: self.url.clone()?,
            api_key: self.api_key.as_ref()?.usable()?.clone(),
        })
    }
}

/// Loads and opens a subscription's Datadog settings.
pub async fn load_datadog(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
) -> Result<StoredDatadog, store::Error> {
    let provider = Provider::Datadog;
    let fields: DatadogFields = store::siem::provider_fields(pool, subscription_id, provider.id())
        .await?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let secret = store::siem::secret(pool, subscription_id, provider.id(), DATADOG_API_KEY).await?;
    let api_key = secret.map(|row| {
        let context = secret_context(subscription_id, provider, DATADOG_API_KEY);
        let key = master_key
            .open(&row.sealed, &context)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| DatadogApiKey::parse(&text).ok());
        match key {
            Some(key) => StoredSecret::Usable(key, row.hint),
            None => StoredSecret::Unreadable(row.hint),
        }
    });
    Ok(StoredDatadog {
        site: fields
            .site
            .as_deref()
            .and_then(|s| DatadogSite::parse(s).ok()),
        url: fields
            .url
            .as_deref()
            .and_then(|u| DatadogIntakeUrl::parse(u).ok()),
        api_key,
    })
}
