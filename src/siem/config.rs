//! A subscription's SIEM configuration, whatever the provider: the form's raw values parsed
//! and checked into a [`ProviderConfig`] (every field error at once), what is stored (plain
//! fields as JSON, secrets sealed), and the one place that turns a configuration into a
//! destination for the forwarder or into a connection test for the settings page — so both use
//! the same code path.
//!
//! Form field names are the contract of DESIGN.md (`datadog_site`, `datadog_url`,
//! `datadog_api_key`, and `<provider>_<field>` for the others). Secrets are write-only: a blank
//! secret field keeps the stored secret.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    domain::{
        datadog::{DatadogApiKey, DatadogIntakeUrl, DatadogSite},
        hec::{HecHost, HecSource, HecToken, HecUrl, SourceType, SplunkIndex},
        provider::Provider,
        sentinel::{
            AzureCloud, ClientId, ClientSecret, DcrImmutableId, IngestionEndpoint, LoginBaseUrl,
            StreamName, TenantId,
        },
        webhook::{ExtraHeaders, SigningSecret, WebhookUrl},
    },
    siem::{
        datadog::{self, DatadogConfig, DatadogDestination},
        egress::EgressPolicy,
        hec::{self, HecConfig, HecDestination, HecFlavor},
        sentinel::{self, SentinelConfig, SentinelDestination, TokenCache},
        webhook::{self, WebhookConfig, WebhookDestination},
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

/// How long a replaced webhook signing secret still signs (receivers switch over meanwhile).
pub const WEBHOOK_ROTATION_OVERLAP_HOURS: i64 = 24;

/// The secret fields of each provider.
pub fn secret_fields(provider: Provider) -> &'static [SecretField] {
    match provider {
        Provider::Datadog => &[SecretField {
            field: "datadog_api_key",
            name: "api_key",
        }],
        Provider::Splunk => &[SecretField {
            field: "splunk_token",
            name: "token",
        }],
        Provider::LogScale => &[SecretField {
            field: "logscale_token",
            name: "token",
        }],
        Provider::Sentinel => &[SecretField {
            field: "sentinel_client_secret",
            name: "client_secret",
        }],
        // The signing secrets are generated, never typed; the extra headers may carry
        // credentials (`Authorization`), so they are sealed too.
        Provider::Webhook => &[
            SecretField {
                field: "webhook_secret",
                name: "signing_secret",
            },
            SecretField {
                field: "webhook_secret_previous",
                name: "signing_secret_previous",
            },
            SecretField {
                field: "webhook_headers",
                name: "headers",
            },
            // A query (`?token=…`) may carry a credential: the whole URL is sealed, and the
            // page and the history see it with the query's values hidden.
            SecretField {
                field: "webhook_url_sealed",
                name: "url",
            },
        ],
    }
}

/// Loads and unseals what is stored for `provider` (see [`load_all`]).
pub async fn load(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
    provider: Provider,
) -> Result<StoredProvider, store::Error> {
    Ok(load_all(pool, master_key, subscription_id)
        .await?
        .into_iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, stored)| stored)
        .unwrap_or_default())
}

/// Loads and unseals what is stored for every provider, in two queries.
pub async fn load_all(
    pool: &PgPool,
    master_key: &MasterKey,
    subscription_id: Uuid,
) -> Result<Vec<(Provider, StoredProvider)>, store::Error> {
    let fields = store::siem::all_provider_fields(pool, subscription_id).await?;
    let secrets = store::siem::all_secrets(pool, subscription_id).await?;
    Ok(Provider::ALL
        .iter()
        .map(|provider| {
            let mut stored = StoredProvider {
                fields: fields
                    .iter()
                    .find(|(p, _)| p == provider.id())
                    .and_then(|(_, v)| serde_json::from_value(v.clone()).ok())
                    .unwrap_or_default(),
                secrets: BTreeMap::new(),
            };
            for secret in secret_fields(*provider) {
                if let Some((_, _, row)) = secrets
                    .iter()
                    .find(|(p, n, _)| p == provider.id() && n == secret.name)
                {
                    let context = secret_context(subscription_id, *provider, secret.name);
                    let value = master_key
                        .open(&row.sealed, &context)
                        .and_then(|bytes| String::from_utf8(bytes).ok());
                    let opened = match value {
                        Some(v) => StoredSecret::Usable(v, row.hint.clone()),
                        None => StoredSecret::Unreadable(row.hint.clone()),
                    };
                    stored.secrets.insert(secret.field.to_owned(), opened);
                }
            }
            (*provider, stored)
        })
        .collect())
}

/// A complete, valid configuration of one provider.
#[derive(Clone, Debug)]
pub enum ProviderConfig {
    /// Datadog Logs.
    Datadog(DatadogConfig),
    /// Splunk HEC or LogScale's HEC-compatible endpoint.
    Hec(HecConfig),
    /// Microsoft Sentinel (Logs Ingestion API).
    Sentinel(SentinelConfig),
    /// Signed webhook.
    Webhook(WebhookConfig),
}

/// Parts every destination of a process shares (the Entra ID token cache).
#[derive(Clone, Default)]
pub struct Shared {
    /// OAuth2 tokens for Sentinel, cached until shortly before they expire.
    pub tokens: Arc<TokenCache>,
}

impl ProviderConfig {
    /// The destination the forwarder sends through.
    pub fn destination(self, hostname: &str, shared: &Shared) -> Box<dyn SiemDestination> {
        let hostname = hostname.to_owned();
        match self {
            ProviderConfig::Datadog(config) => Box::new(DatadogDestination { config, hostname }),
            ProviderConfig::Hec(config) => Box::new(HecDestination { config, hostname }),
            ProviderConfig::Sentinel(config) => Box::new(SentinelDestination {
                config,
                hostname,
                tokens: shared.tokens.clone(),
            }),
            ProviderConfig::Webhook(config) => Box::new(WebhookDestination { config }),
        }
    }

    /// Sends one test event through the same code path as the forwarder.
    pub async fn test_connection(
        &self,
        client: &reqwest::Client,
        egress: &EgressPolicy,
        shared: &Shared,
        subscription_id: Uuid,
        hostname: &str,
    ) -> Result<TestSuccess, TestFailure> {
        match self {
            ProviderConfig::Datadog(config) => {
                datadog::test_connection(client, egress, config, subscription_id, hostname).await
            }
            ProviderConfig::Hec(config) => {
                hec::test_connection(client, egress, config, subscription_id, hostname).await
            }
            ProviderConfig::Sentinel(config) => {
                sentinel::test_connection(
                    client,
                    egress,
                    &shared.tokens,
                    config,
                    subscription_id,
                    hostname,
                )
                .await
            }
            ProviderConfig::Webhook(config) => {
                webhook::test_connection(client, egress, config, subscription_id).await
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
    /// Secrets to delete (storage names).
    pub removed_secrets: Vec<&'static str>,
    /// A signing secret generated by this save, to show once.
    pub generated_secret: Option<String>,
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
        removed_secrets: Vec::new(),
        generated_secret: None,
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
        Provider::Splunk | Provider::LogScale => {
            let (prefix, flavor) = if provider == Provider::Splunk {
                ("splunk", HecFlavor::Splunk)
            } else {
                ("logscale", HecFlavor::LogScale)
            };
            let url_field = format!("{prefix}_url");
            let token_field = format!("{prefix}_token");
            let url = required(
                &get(&url_field),
                complete,
                &url_field,
                "Enter the HEC URL.",
                &mut errors,
                |t| {
                    let url = HecUrl::parse(t).map_err(|e| e.to_string())?;
                    egress
                        .check_url(&url.endpoint(flavor.event_path()))
                        .map_err(|e| e.to_string())?;
                    Ok(url)
                },
            );
            let token_parse = |raw: &str| {
                let token = if flavor == HecFlavor::Splunk {
                    HecToken::parse_splunk(raw)
                } else {
                    HecToken::parse_logscale(raw)
                };
                token.map_err(|e| e.to_string()).map(|t| {
                    let hint = t.last4().to_owned();
                    (t, hint)
                })
            };
            let missing = if flavor == HecFlavor::Splunk {
                "Enter the HEC token (Settings → Data inputs → HTTP Event Collector in Splunk)."
            } else {
                "Enter the ingest token of the LogScale repository."
            };
            let token = secret_value(
                form,
                stored,
                &token_field,
                complete,
                &mut errors,
                token_parse,
                missing,
            );
            let (mut index, mut sourcetype, mut source, mut host, mut ack) =
                (None, SourceType::default(), None, None, false);
            if flavor == HecFlavor::Splunk {
                index = SplunkIndex::parse_optional(&get("splunk_index"))
                    .map_err(|e| errors.add("splunk_index", e.to_string()))
                    .ok()
                    .flatten();
                sourcetype = SourceType::parse_or_default(&get("splunk_sourcetype"))
                    .map_err(|e| errors.add("splunk_sourcetype", e.to_string()))
                    .unwrap_or_default();
                source = optional(&get("splunk_source"), "splunk_source", &mut errors, |t| {
                    HecSource::parse(t).map_err(|e| e.to_string())
                });
                host = optional(&get("splunk_host"), "splunk_host", &mut errors, |t| {
                    HecHost::parse(t).map_err(|e| e.to_string())
                });
                ack = form.get("splunk_ack").is_some_and(|v| v == "on");
                if let Some(index) = &index {
                    validated
                        .fields
                        .insert("splunk_index".into(), index.as_str().into());
                }
                validated
                    .fields
                    .insert("splunk_sourcetype".into(), sourcetype.as_str().into());
                if let Some(source) = &source {
                    validated
                        .fields
                        .insert("splunk_source".into(), source.as_str().into());
                }
                if let Some(host) = &host {
                    validated
                        .fields
                        .insert("splunk_host".into(), host.as_str().into());
                }
                if ack {
                    validated.fields.insert("splunk_ack".into(), "on".into());
                }
            }
            if let Some(url) = &url {
                validated
                    .fields
                    .insert(url_field.clone(), url.as_str().into());
            }
            if let Some((token, typed, hint)) = token {
                if typed {
                    validated
                        .new_secrets
                        .push(("token", token.expose_secret().to_owned(), hint));
                }
                if let Some(url) = url {
                    let mut config = HecConfig::new(flavor, url, token);
                    config.index = index;
                    config.sourcetype = sourcetype;
                    config.source = source;
                    config.host = host;
                    config.ack = ack;
                    match config.validate() {
                        Ok(()) => validated.config = Some(ProviderConfig::Hec(config)),
                        Err(e) => errors.add(&format!("{prefix}_ack"), e.to_string()),
                    }
                }
            }
        }
        Provider::Sentinel => {
            let cloud = AzureCloud::parse(&get("sentinel_cloud"))
                .or_else(|e| {
                    if get("sentinel_cloud").is_empty() {
                        Ok(AzureCloud::Public)
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| errors.add("sentinel_cloud", e.to_string()))
                .ok();
            let login_base = match get("sentinel_login_url").as_str() {
                "" => cloud.map(AzureCloud::default_login_base),
                text => LoginBaseUrl::parse(text)
                    .map_err(|e| errors.add("sentinel_login_url", e.to_string()))
                    .ok(),
            };
            let tenant = required(
                &get("sentinel_tenant_id"),
                complete,
                "sentinel_tenant_id",
                "Enter the Directory (tenant) ID of your Entra ID app registration.",
                &mut errors,
                |t| TenantId::parse(t).map_err(|e| e.to_string()),
            );
            let client_id = required(
                &get("sentinel_client_id"),
                complete,
                "sentinel_client_id",
                "Enter the Application (client) ID of the app registration.",
                &mut errors,
                |t| ClientId::parse(t).map_err(|e| e.to_string()),
            );
            let endpoint = required(
                &get("sentinel_endpoint"),
                complete,
                "sentinel_endpoint",
                "Enter the logs ingestion endpoint of the data collection rule (or its DCE).",
                &mut errors,
                |t| IngestionEndpoint::parse(t).map_err(|e| e.to_string()),
            );
            let dcr = required(
                &get("sentinel_dcr_id"),
                complete,
                "sentinel_dcr_id",
                "Enter the immutable ID of the data collection rule (dcr-…).",
                &mut errors,
                |t| DcrImmutableId::parse(t).map_err(|e| e.to_string()),
            );
            let stream = required(&get("sentinel_stream"), complete, "sentinel_stream", "Enter the stream name declared in the data collection rule, e.g. Custom-EzcaAudit.", &mut errors, |t| StreamName::parse(t).map_err(|e| e.to_string()));
            let secret = secret_value(
                form,
                stored,
                "sentinel_client_secret",
                complete,
                &mut errors,
                |raw| {
                    ClientSecret::parse(raw)
                        .map_err(|e| e.to_string())
                        .map(|s| {
                            let hint = s.last4().to_owned();
                            (s, hint)
                        })
                },
                "Enter a client secret of the app registration (Certificates & secrets).",
            );
            if let Some(cloud) = cloud {
                validated
                    .fields
                    .insert("sentinel_cloud".into(), cloud.code().into());
            }
            if !get("sentinel_login_url").is_empty() {
                if let Some(base) = &login_base {
                    validated
                        .fields
                        .insert("sentinel_login_url".into(), base.as_str().into());
                }
            }
            for (name, value) in [
                (
                    "sentinel_tenant_id",
                    tenant.as_ref().map(|v| v.as_str().to_owned()),
                ),
                (
                    "sentinel_client_id",
                    client_id.as_ref().map(|v| v.as_str().to_owned()),
                ),
                (
                    "sentinel_endpoint",
                    endpoint.as_ref().map(|v| v.as_str().to_owned()),
                ),
                (
                    "sentinel_dcr_id",
                    dcr.as_ref().map(|v| v.as_str().to_owned()),
                ),
                (
                    "sentinel_stream",
                    stream.as_ref().map(|v| v.as_str().to_owned()),
                ),
            ] {
                if let Some(value) = value {
                    validated.fields.insert(name.into(), value);
                }
            }
            if let Some((secret, typed, hint)) = secret {
                if typed {
                    validated.new_secrets.push((
                        "client_secret",
                        secret.expose_secret().to_owned(),
                        hint,
                    ));
                }
                if let (
                    Some(cloud),
                    Some(login_base),
                    Some(tenant_id),
                    Some(client_id),
                    Some(endpoint),
                    Some(dcr_id),
                    Some(stream),
                ) = (cloud, login_base, tenant, client_id, endpoint, dcr, stream)
                {
                    let config = SentinelConfig {
                        cloud,
                        login_base,
                        tenant_id,
                        client_id,
                        client_secret: secret,
                        endpoint,
                        dcr_id,
                        stream,
                    };
                    let checked = egress
                        .check_url(&config.token_url())
                        .map_err(|e| errors.add("sentinel_login_url", e.to_string()))
                        .and_then(|()| {
                            egress
                                .check_url(&config.ingestion_url())
                                .map_err(|e| errors.add("sentinel_endpoint", e.to_string()))
                        });
                    if checked.is_ok() {
                        validated.config = Some(ProviderConfig::Sentinel(config));
                    }
                }
            }
        }
        Provider::Webhook => {
            // The page shows the URL with its query's values hidden; sending that back
            // unchanged keeps the sealed URL.
            let typed_url = get("webhook_url");
            let sealed_url = stored
                .secrets
                .get("webhook_url_sealed")
                .and_then(StoredSecret::usable)
                .filter(|_| {
                    !typed_url.is_empty()
                        && stored.fields.get("webhook_url").map(String::as_str)
                            == Some(typed_url.as_str())
                })
                .map(str::to_owned);
            if sealed_url.is_none() && typed_url.contains('…') {
                errors.add(
                    "webhook_url",
                    "The query's values are hidden on this page; to change the URL, type it again in full, query included.",
                );
            }
            let url = required(
                sealed_url.as_deref().unwrap_or(&typed_url),
                complete,
                "webhook_url",
                "Enter the https URL that receives the events.",
                &mut errors,
                |t| {
                    let url = WebhookUrl::parse(t).map_err(|e| e.to_string())?;
                    egress.check_url(url.as_url()).map_err(|e| e.to_string())?;
                    Ok(url)
                },
            );
            let typed_headers = form
                .get("webhook_headers")
                .map(|v| v.trim())
                .unwrap_or_default();
            let clear_headers = form.get("webhook_clear_headers").is_some_and(|v| v == "on");
            let headers = if clear_headers {
                validated.removed_secrets.push("headers");
                Some(ExtraHeaders::none())
            } else if !typed_headers.is_empty() {
                match ExtraHeaders::parse(typed_headers) {
                    Ok(h) => {
                        let names = h.names().collect::<Vec<_>>().join(", ");
                        validated
                            .new_secrets
                            .push(("headers", h.expose_text(), names));
                        Some(h)
                    }
                    Err(e) => {
                        errors.add("webhook_headers", e.to_string());
                        None
                    }
                }
            } else {
                match stored
                    .secrets
                    .get("webhook_headers")
                    .and_then(StoredSecret::usable)
                {
                    Some(text) => ExtraHeaders::parse(text).ok(),
                    None => Some(ExtraHeaders::none()),
                }
            };
            // The signing secret is the portal's to generate: on first use and on rotation.
            let current = stored
                .secrets
                .get("webhook_secret")
                .and_then(StoredSecret::usable)
                .and_then(|s| SigningSecret::parse(s).ok());
            let rotate = form.get("webhook_rotate").is_some_and(|v| v == "on");
            let now = Utc::now();
            let mut secrets = Vec::new();
            match (&current, rotate) {
                (Some(current), false) => secrets.push(current.clone()),
                (old, _) => {
                    let fresh = SigningSecret::generate();
                    validated.new_secrets.push((
                        "signing_secret",
                        fresh.expose_secret().to_owned(),
                        fresh.last4().to_owned(),
                    ));
                    validated.generated_secret = Some(fresh.expose_secret().to_owned());
                    secrets.push(fresh);
                    if let Some(old) = old {
                        let until = now + chrono::Duration::hours(WEBHOOK_ROTATION_OVERLAP_HOURS);
                        validated.new_secrets.push((
                            "signing_secret_previous",
                            old.expose_secret().to_owned(),
                            old.last4().to_owned(),
                        ));
                        validated
                            .fields
                            .insert("webhook_previous_until".into(), until.to_rfc3339());
                        secrets.push(old.clone());
                    }
                }
            }
            if !rotate {
                let previous_until = stored
                    .fields
                    .get("webhook_previous_until")
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                if let Some(until) = previous_until.filter(|until| *until > now) {
                    if let Some(previous) = stored
                        .secrets
                        .get("webhook_secret_previous")
                        .and_then(StoredSecret::usable)
                        .and_then(|s| SigningSecret::parse(s).ok())
                    {
                        secrets.push(previous);
                        validated
                            .fields
                            .insert("webhook_previous_until".into(), until.to_rfc3339());
                    }
                }
            }
            if let Some(url) = &url {
                let shown = hide_query_values(url.as_url());
                if shown != url.as_str() {
                    if sealed_url.as_deref() != Some(url.as_str()) {
                        validated.new_secrets.push((
                            "url",
                            url.as_str().to_owned(),
                            "query".into(),
                        ));
                    }
                } else if stored.secrets.contains_key("webhook_url_sealed") {
                    validated.removed_secrets.push("url");
                }
                validated.fields.insert("webhook_url".into(), shown);
            }
            if let (Some(url), Some(headers)) = (url, headers) {
                validated.config = Some(ProviderConfig::Webhook(WebhookConfig {
                    url,
                    headers,
                    secrets,
                }));
            }
        }
    }
    keep_secrets_with_their_address(provider, form, stored, &validated, &mut errors);
    if errors.count() > 0 {
        Err(errors)
    } else {
        Ok(validated)
    }
}

/// A URL as the page and the history may show it: every query value replaced by `…`.
pub fn hide_query_values(url: &url::Url) -> String {
    let Some(query) = url.query() else {
        return url.as_str().to_owned();
    };
    let hidden: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) => format!("{key}=…"),
            None => "…".to_owned(),
        })
        .collect();
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    format!("{}?{}", shown.as_str(), hidden.join("&"))
}

/// The fields that decide where a provider's secrets are sent, with their labels.
pub fn address_fields(provider: Provider) -> &'static [(&'static str, &'static str)] {
    match provider {
        Provider::Datadog => &[("datadog_url", "Logs intake URL")],
        Provider::Splunk => &[("splunk_url", "HEC URL")],
        Provider::LogScale => &[("logscale_url", "HEC URL")],
        // The client secret goes to the sign-in URL (per cloud); the bearer token it buys goes
        // to the ingestion endpoint.
        Provider::Sentinel => &[
            ("sentinel_cloud", "Azure cloud"),
            ("sentinel_login_url", "Sign-in URL"),
            ("sentinel_endpoint", "Logs ingestion endpoint"),
        ],
        Provider::Webhook => &[("webhook_url", "Webhook URL")],
    }
}

/// Secrets a person types (a generated webhook signing secret is not one: it only signs).
pub fn typed_secret_fields(provider: Provider) -> &'static [(&'static str, &'static str)] {
    match provider {
        Provider::Datadog => &[("datadog_api_key", "API key")],
        Provider::Splunk => &[("splunk_token", "HEC token")],
        Provider::LogScale => &[("logscale_token", "ingest token")],
        Provider::Sentinel => &[("sentinel_client_secret", "client secret")],
        Provider::Webhook => &[("webhook_headers", "extra headers")],
    }
}

/// A stored secret is only ever sent to the address it was saved with: when an address field
/// changes, every stored secret the form leaves blank must be entered again.
fn keep_secrets_with_their_address(
    provider: Provider,
    form: &FormValues,
    stored: &StoredProvider,
    validated: &Validated,
    errors: &mut FieldErrors,
) {
    let value = |fields: &BTreeMap<String, String>, name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let Some((_, label)) = address_fields(provider)
        .iter()
        .find(|(field, _)| value(&validated.fields, field) != value(&stored.fields, field))
    else {
        return;
    };
    let clearing_headers = form.get("webhook_clear_headers").is_some_and(|v| v == "on");
    for (field, secret) in typed_secret_fields(provider) {
        let typed = form.get(*field).is_some_and(|v| !v.trim().is_empty());
        let cleared = *field == "webhook_headers" && clearing_headers;
        if !typed && !cleared && stored.secrets.contains_key(*field) {
            errors.add(
                field,
                format!("The {label} changed, so enter the {secret} again: a stored secret is only ever sent to the address it was saved with."),
            );
        }
    }
}

/// A required plain field: parsed when present, an error when missing and `complete`.
fn required<T>(
    text: &str,
    complete: bool,
    field: &str,
    missing: &str,
    errors: &mut FieldErrors,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    if text.is_empty() {
        if complete {
            errors.add(field, missing);
        }
        return None;
    }
    parse(text).map_err(|e| errors.add(field, e)).ok()
}

/// An optional plain field: `None` when blank.
fn optional<T>(
    text: &str,
    field: &str,
    errors: &mut FieldErrors,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<T> {
    if text.is_empty() {
        return None;
    }
    parse(text).map_err(|e| errors.add(field, e)).ok()
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
        // The send path never makes up a secret: a signing secret generated here (the stored
        // one could not be read) would sign with a key no receiver has.
        Ok(Validated {
            generated_secret: Some(_),
            ..
        }) => Err(format!(
            "The stored {} signing secret can no longer be read (the master key changed); open Settings, tick \"Rotate the signing secret\" and save, then give the new secret to the receiver.",
            provider.label()
        )),
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
