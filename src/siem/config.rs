//! A subscription's SIEM configuration, whatever the provider: the form's raw values parsed
//! and checked into a [`ProviderConfig`] (every field error at once), what is stored (plain
//! fields as JSON, secrets sealed), and the one place that turns a configuration into a
//! destination for the forwarder or into a connection test for the settings page — so both use
//! the same code path.
//!
//! Form field names are the contract of DESIGN.md (`datadog_site`, `datadog_url`,
//! `datadog_api_key`, and `<provider>_<field>` for the others). Secrets are write-only: a blank
//! secret field keeps the stored secret.

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    domain::{
        datadog::{DatadogApiKey, DatadogIntakeUrl, DatadogSite},
        provider::Provider,
    },
    siem::{
        datadog::{self, DatadogConfig, DatadogDestination},
        egress::EgressPolicy,
        SiemDestination, TestFailure, TestSuccess,
    },
    store,
};

/// Raw form values by field name.
pub type FormValues = BTreeMap<String, String>;

/// One message per field name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    /// Records an error for `field`.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    /// The error of `field`, if any.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// How many fields are wrong.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

/// The associated data that binds a sealed secret to its subscription, provider and name.
pub fn secret_context(subscription_id: Uuid, provider: Provider, name: &str) -> String {
    format!("{subscription_id}/{}/{name}", provider.id())
}

/// A stored secret as the page and the forwarder see it.
#[derive(Clone)]
pub enum StoredSecret {
    /// Unsealed.
    Usable(String, String),
    /// Present but it no longer opens (another master key).
    Unreadable(String),
}

impl StoredSecret {
    /// The last 4 characters.
    pub fn hint(&self) -> &str {
        match self {
            StoredSecret::Usable(_, hint) | StoredSecret::Unreadable(hint) => hint,
        }
    }

    /// The value, when usable.
    pub fn usable(&self) -> Option<&str> {
        match self {
            StoredSecret::Usable(v, _) => Some(v),
            StoredSecret::Unreadable(_) => None,
        }
    }
}

/// What is stored for one provider of one subscription.
#[derive(Clone, Default)]
pub struct StoredProvider {
    /// Plain fields by form field name.
    pub fields: BTreeMap<String, String>,
    /// Secrets by form field name.
    pub secrets: BTreeMap<String, StoredSecret>,
}

/// A secret field of a provider: its form field and the name it is stored under.
pub struct SecretField {
    /// Form field name.
    pub field: &'static str,
    /// Storage name.
    pub name: &'static str,
}

/// The secret fields of each provider.
pub fn secret_fields(provider: Provider) -> &'static [SecretField] {
    match provider {
        Provider::Datadog => &[SecretField {
            field: "datadog_api_key",
            name: "api_key",
        }],
    }
}

/// Loads and unseals what is stored for `provider`.
pub async fn load(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
    provider: Provider,
) -> Result<StoredProvider, store::Error> {
    let fields: BTreeMap<String, String> =
        store::siem::provider_fields(pool, subscription_id, provider.id())
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
    let mut secrets = BTreeMap::new();
    for secret in secret_fields(provider) {
        if let Some(row) =
            store::siem::secret(pool, subscription_id, provider.id(), secret.name).await?
        {
            let context = secret_context(subscription_id, provider, secret.name);
            let value = master_key
                .open(&row.sealed, &context)
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let stored = match value {
                Some(v) => StoredSecret::Usable(v, row.hint),
                None => StoredSecret::Unreadable(row.hint),
            };
            secrets.insert(secret.field.to_owned(), stored);
        }
    }
    Ok(StoredProvider { fields, secrets })
}

/// A complete, valid configuration of one provider.
#[derive(Clone, Debug)]
pub enum ProviderConfig {
    /// Datadog Logs.
    Datadog(DatadogConfig),
}

impl ProviderConfig {
    /// The destination the forwarder sends through.
    pub fn destination(self, hostname: &str) -> Box<dyn SiemDestination> {
        match self {
            ProviderConfig::Datadog(config) => Box::new(DatadogDestination {
                config,
                hostname: hostname.to_owned(),
            }),
        }
    }

    /// Sends one test event through the same code path as the forwarder.
    pub async fn test_connection(
        &self,
        client: &reqwest::Client,
        egress: &EgressPolicy,
        subscription_id: Uuid,
        hostname: &str,
    ) -> Result<TestSuccess, TestFailure> {
        match self {
            ProviderConfig::Datadog(config) => {
                datadog::test_connection(client, egress, config, subscription_id, hostname).await
            }
        }
    }
}

/// The form checked against the rules of its provider.
pub struct Validated {
    /// The provider.
    pub provider: Provider,
    /// A complete configuration, when every required value is there.
    pub config: Option<ProviderConfig>,
    /// Normalised plain fields to store.
    pub fields: BTreeMap<String, String>,
    /// Newly typed secrets to seal: (storage name, value, hint).
    pub new_secrets: Vec<(&'static str, String, String)>,
}

/// Checks `form` for `provider`; `complete` demands a usable configuration (Test Connection,
/// or saving with export on). Blank secret fields fall back to `stored`.
pub fn validate(
    provider: Provider,
    form: &FormValues,
    stored: &StoredProvider,
    egress: &EgressPolicy,
    complete: bool,
) -> Result<Validated, FieldErrors> {
    let mut errors = FieldErrors::default();
    let get = |name: &str| {
        form.get(name)
            .map(|v| v.trim())
            .unwrap_or_default()
            .to_owned()
    };
    let mut validated = Validated {
        provider,
        config: None,
        fields: BTreeMap::new(),
        new_secrets: Vec::new(),
    };
    match provider {
        Provider::Datadog => {
            let site = match get("datadog_site").as_str() {
                "" | "custom" => None,
                code => match DatadogSite::parse(code) {
                    Ok(site) => Some(site),
                    Err(e) => {
                        errors.add("datadog_site", e.to_string());
                        None
                    }
                },
            };
            // Without JavaScript the select cannot fill the URL in: a blank URL means the site's.
            let url_text = match (get("datadog_url"), site) {
                (text, Some(site)) if text.is_empty() => site.intake_base_url(),
                (text, _) => text,
            };
            let url = if url_text.is_empty() {
                if complete {
                    errors.add(
                        "datadog_url",
                        "Enter the logs intake URL, or choose a Datadog site.",
                    );
                }
                None
            } else {
                DatadogIntakeUrl::parse(&url_text)
                    .map_err(|e| e.to_string())
                    .and_then(|url| {
                        egress
                            .check_url(&url.logs_endpoint())
                            .map(|()| url)
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| errors.add("datadog_url", e))
                    .ok()
            };
            let key = secret_value(
                form,
                stored,
                "datadog_api_key",
                complete,
                &mut errors,
                |raw| {
                    DatadogApiKey::parse(raw)
                        .map_err(|e| e.to_string())
                        .map(|k| {
                            let hint = k.last4().to_owned();
                            (k, hint)
                        })
                },
                "Enter the API key from Datadog (Organization Settings → API Keys).",
            );
            if let Some(site) = site {
                validated
                    .fields
                    .insert("datadog_site".into(), site.code().into());
            }
            if let Some(url) = &url {
                validated
                    .fields
                    .insert("datadog_url".into(), url.as_str().into());
            }
            if let Some((key, typed, hint)) = key {
                if typed {
                    validated
                        .new_secrets
                        .push(("api_key", key.expose_secret().to_owned(), hint));
                }
                if let Some(url) = url {
                    validated.config = Some(ProviderConfig::Datadog(DatadogConfig {
                        site,
                        url,
                        api_key: key,
                    }));
                }
            }
        }
    }
    if errors.count() > 0 {
        Err(errors)
    } else {
        Ok(validated)
    }
}

/// A secret from the form (typed now) or from storage (kept), parsed; `None` with an error
/// recorded when it is required and missing or wrong. The flag tells whether it was typed.
fn secret_value<T>(
    form: &FormValues,
    stored: &StoredProvider,
    field: &str,
    complete: bool,
    errors: &mut FieldErrors,
    parse: impl Fn(&str) -> Result<(T, String), String>,
    missing: &str,
) -> Option<(T, bool, String)> {
    let typed = form.get(field).map(|v| v.trim()).unwrap_or_default();
    if !typed.is_empty() {
        return match parse(typed) {
            Ok((value, hint)) => Some((value, true, hint)),
            Err(e) => {
                errors.add(field, e);
                None
            }
        };
    }
    match stored.secrets.get(field) {
        Some(StoredSecret::Usable(raw, _)) => match parse(raw) {
            Ok((value, hint)) => Some((value, false, hint)),
            Err(_) => {
                if complete {
                    errors.add(
                        field,
                        "The stored value is no longer valid; enter it again.",
                    );
                }
                None
            }
        },
        Some(StoredSecret::Unreadable(_)) => {
            if complete {
                errors.add(field, "The stored value can no longer be read (the master key changed); enter it again.");
            }
            None
        }
        None => {
            if complete {
                errors.add(field, missing);
            }
            None
        }
    }
}

/// The configuration the forwarder uses for a destination, or why there is none.
pub async fn destination_config(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
    provider: Provider,
    egress: &EgressPolicy,
) -> Result<Result<ProviderConfig, String>, store::Error> {
    let stored = load(pool, master_key, subscription_id, provider).await?;
    let form: FormValues = stored.fields.clone();
    Ok(match validate(provider, &form, &stored, egress, true) {
        Ok(Validated {
            config: Some(config),
            ..
        }) => Ok(config),
        Ok(_) => Err(format!(
            "The {} settings are incomplete; open Settings and complete them.",
            provider.label()
        )),
        Err(errors) => Err(format!(
            "The stored {} settings are not valid any more ({}); open Settings, fix them and save.",
            provider.label(),
            errors.0.values().cloned().collect::<Vec<_>>().join(" ")
        )),
    })
}

/// The Datadog site of a subscription's stored settings, for links into its Log Explorer.
pub fn datadog_site(stored: &StoredProvider) -> Option<DatadogSite> {
    stored
        .fields
        .get("datadog_site")
        .and_then(|s| DatadogSite::parse(s).ok())
        .or_else(|| {
            stored
                .fields
                .get("datadog_url")
                .and_then(|u| DatadogIntakeUrl::parse(u).ok())
                .and_then(|u| u.site())
        })
}
