//! Microsoft Sentinel provider: audit logs → Azure Monitor **Logs Ingestion API** (the
//! DCR-based API that Sentinel reads from). The legacy SharedKey HTTP Data Collector API
//! stops working on 14 September 2026 and is deliberately not spoken here.
//!
//! Contract (Microsoft Learn, "Logs Ingestion API in Azure Monitor", its limits include, and
//! "Standard columns"):
//!
//! - **Token**: OAuth2 client credentials, `POST {login}/{tenant}/oauth2/v2.0/token` with the
//!   form `client_id`, `client_secret`, `grant_type=client_credentials` and
//!   `scope=https://monitor.azure.<com|us|cn>/.default`; the answer is
//!   `{"token_type":"Bearer","expires_in":N,"access_token":"…"}`. Tokens are cached by
//!   [`TokenCache`] (`siem::oauth`, shared by the process) until [`TOKEN_REFRESH_MARGIN`] before they expire.
//! - **Ingestion**: `POST {endpoint}/dataCollectionRules/{dcr}/streams/{stream}?api-version=`
//!   [`API_VERSION`] with `Authorization: Bearer`, `Content-Type: application/json`,
//!   `Content-Encoding: gzip` and `x-ms-client-request-id` (a fresh GUID per request). The body
//!   is a JSON array of objects; success is `204` with no body.
//! - **Limits**, enforced before sending:
//!   - at most 1 MB ([`AZURE_MAX_REQUEST_BYTES`]) per call, compressed or not (else 413
//!     `ContentLengthLimitExceeded`): batches stay below [`MAX_BATCH_BYTES`] **uncompressed**,
//!     so they fit whichever size Azure measures;
//!   - Azure sets no count per call; we cap at [`MAX_BATCH_EVENTS`] so that a rejected batch
//!     (400) is bisected in few steps, as with the other providers;
//!   - field values over 64 KB are truncated by Azure: a serialised `details` of
//!     [`MAX_FIELD_BYTES`] or more is cut by us instead, ending with [`TRUNCATION_MARKER`],
//!     with `Truncated: true`; identifying fields are never dropped;
//!   - `TimeGenerated` older than 2 days or more than 1 day ahead is replaced by Azure with the
//!     receive time; such an event is sent with `TimeGenerated` = now and its own time in
//!     `OriginalTime` (margins: [`MAX_TIME_GENERATED_AGE`], [`MAX_TIME_GENERATED_FUTURE`]).
//! - **Row format** ([`log_object`]): `TimeGenerated` (RFC 3339) plus the Datadog attributes
//!   `EventID` (number), `EventSummary`, `Criticality`, `SubscriptionId`, `EventUuid`, `Actor`,
//!   `details` (an object), `message` and `Hostname`, so the DCR's stream declaration needs the
//!   columns of [`STREAM_COLUMNS`]. None is a reserved column name (`TenantId`, `Type`, …).
//! - **Statuses** ([`classify`]): 2xx delivered; 400 rejected (isolate, park); 401 refresh the
//!   token once, then destination failing; 403 role missing; 404 wrong endpoint/DCR/stream;
//!   3xx and other 4xx failing (configuration); 413 split; 408, 429 and 5xx retried, honouring
//!   `Retry-After`; 501 failing (the URL is not an ingestion endpoint).
//! - **Test Connection** gets a *fresh* token (proves tenant, client id and secret now, not an
//!   hour ago) and then posts `[]` (as the issue asks and as Vector's healthcheck does), which
//!   Azure answers 204 when endpoint, DCR, stream and role are right. Nothing is added to the
//!   table, and the success message says so.
//!
//! Token errors are explained from the OAuth2 `error` field and the AADSTS number in
//! `error_codes`/`error_description`. Microsoft warns that those numbers may change, so an
//! unknown code falls back to the HTTP status and an excerpt of Entra's own description.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{json, Map, Value};
use url::Url;
use uuid::Uuid;

use crate::domain::events::EventId;
use crate::domain::sentinel::{
    AzureCloud, ClientId, ClientSecret, DcrImmutableId, IngestionEndpoint, LoginBaseUrl,
    StreamName, TenantId,
};
use crate::siem::egress::{BoxFuture, EgressPolicy, REQUEST_TIMEOUT};
use crate::siem::explain::{self, failure, Hints};
use crate::siem::oauth::{
    AccessToken, ClientCredentials, Identity, TokenCache, TokenError, TokenRefusal,
};
use crate::siem::parse_retry_after;
use crate::siem::provider::{
    needed, settings_of, stored, BuildError, Choice, Context, Field, FieldKind, FormCheck,
    FormValues, ProviderSpec, Secrets, RANGE_EVENTS,
};
use crate::siem::wire::{self, rfc3339, Framing};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};
use serde::{Deserialize, Serialize};

mod health;
mod request;
mod service;

pub use health::*;
pub use request::*;
pub use service::*;

/// Longest token lifetime believed, whatever `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The Logs Ingestion API version spoken here.
pub const API_VERSION: &str = "2023-01-01";

/// Largest request Azure accepts, compressed or not, in bytes.
pub const AZURE_MAX_REQUEST_BYTES: usize = 1_048_576;

/// Largest uncompressed body we send, in bytes; below [`AZURE_MAX_REQUEST_BYTES`].
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// Most rows per request (our cap; Azure sets none).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// A serialised field value must stay below this many bytes (Azure truncates at 64 KB; we
/// keep a margin below both 64,000 and 65,536).
pub const MAX_FIELD_BYTES: usize = 64_000;

/// Azure replaces an older `TimeGenerated` (2 days, minus a margin for queueing).
pub const MAX_TIME_GENERATED_AGE: Duration = Duration::from_secs(47 * 3600);

/// Azure replaces a `TimeGenerated` further ahead (1 day, minus a margin).
pub const MAX_TIME_GENERATED_FUTURE: Duration = Duration::from_secs(23 * 3600);

/// A cached token is renewed this long before it expires.
pub const TOKEN_REFRESH_MARGIN: Duration = crate::siem::oauth::DEFAULT_REFRESH_MARGIN;

/// Ends a `details` (or other text field) that had to be cut below [`MAX_FIELD_BYTES`].
pub const TRUNCATION_MARKER: &str = "…[truncated by cloudpki: field exceeded 64 KB]";

/// The columns (name, KQL type) the DCR's stream declaration and the table need.
pub const STREAM_COLUMNS: [(&str, &str); 14] = [
    ("TimeGenerated", "datetime"),
    ("EventID", "int"),
    ("EventSummary", "string"),
    ("Criticality", "string"),
    ("SubscriptionId", "string"),
    ("EventUuid", "string"),
    ("Sequence", "long"),
    ("OccurredAt", "datetime"),
    ("Actor", "string"),
    ("details", "dynamic"),
    ("message", "string"),
    ("Hostname", "string"),
    ("Truncated", "boolean"),
    ("OriginalTime", "datetime"),
];
/// The event the query shown after a green Test Connection looks for (a high-criticality one).
const EXAMPLE_QUERY_EVENT: u32 = 4888;
/// Longest excerpt of an error body kept in a reason, in chars.
const MAX_REASON_BODY_CHARS: usize = 300;

/// A validated Sentinel destination: it cannot lack any of the seven settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub cloud: AzureCloud,
    /// Sign-in base URL; normally `cloud.default_login_base()`.
    pub login_base: LoginBaseUrl,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub client_secret: ClientSecret,
    pub endpoint: IngestionEndpoint,
    pub dcr_id: DcrImmutableId,
    pub stream: StreamName,
}

impl SentinelConfig {
    /// `{login}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> Url {
        self.login_base.token_url(&self.tenant_id)
    }

    /// `{endpoint}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`.
    pub fn ingestion_url(&self) -> Url {
        self.endpoint
            .stream_url(&self.dcr_id, &self.stream, API_VERSION)
    }

    /// The OAuth2 scope of the cloud.
    pub fn scope(&self) -> &'static str {
        self.cloud.monitor_scope()
    }

    /// A KQL query that finds events of `event` in the destination table.
    pub fn query_for(&self, event: u32) -> String {
        format!("{} | where EventID == {event}", self.stream.likely_table())
    }
}

/// Microsoft Sentinel's entry in the registry.
pub static SPEC: ProviderSpec = ProviderSpec {
    id: "sentinel",
    label: "Microsoft Sentinel",
    fields: &[
        Field::plain("sentinel_cloud", "Azure cloud", FieldKind::Select(cloud_choices), "Where your tenant lives; it decides the sign-in and ingestion audiences.").addressing().with_default("public"),
        Field::plain("sentinel_tenant_id", "Tenant ID", FieldKind::Text, "Directory (tenant) ID of the Entra ID app registration (a GUID)."),
        Field::plain("sentinel_client_id", "Client ID", FieldKind::Text, "Application (client) ID of the app registration (a GUID)."),
        Field::secret("sentinel_client_secret", "Client secret", "client_secret", "A client secret of the app registration; note its expiry date. The app needs the Monitoring Metrics Publisher role on the data collection rule."),
        Field::address("sentinel_endpoint", "Ingestion endpoint", "The logs ingestion endpoint of the data collection rule, or its data collection endpoint, e.g. https://my-dce.eastus-1.ingest.monitor.azure.com."),
        Field::plain("sentinel_dcr_id", "DCR immutable ID", FieldKind::Text, "The immutable ID of the data collection rule (dcr-…, on its JSON view)."),
        Field::plain("sentinel_stream", "Stream name", FieldKind::Text, "The stream declared in the rule, e.g. Custom-EzcaAudit_CL."),
        Field::address("sentinel_login_url", "Sign-in URL (advanced)", "Leave blank to use the cloud's Entra ID sign-in address."),
    ],
    parse,
    build,
    form,
    generated: None,
    range_events: RANGE_EVENTS,
    explorer: None,
    actions: &[],
};

fn cloud_choices() -> Vec<Choice> {
    AzureCloud::ALL
        .iter()
        .map(|cloud| Choice::new(cloud.code(), cloud.label()))
        .collect()
}

/// What is stored: the cloud, the sign-in URL when it is not the cloud's, and the rule.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub cloud: Option<AzureCloud>,
    pub login_url: Option<LoginBaseUrl>,
    pub tenant_id: Option<TenantId>,
    pub client_id: Option<ClientId>,
    pub endpoint: Option<IngestionEndpoint>,
    pub dcr_id: Option<DcrImmutableId>,
    pub stream: Option<StreamName>,
}

fn parse(check: &mut FormCheck<'_>) -> Value {
    let cloud_text = check.get("sentinel_cloud");
    let cloud = if cloud_text.is_empty() {
        Some(AzureCloud::Public)
    } else {
        AzureCloud::parse(&cloud_text)
            .map_err(|e| check.error("sentinel_cloud", e.to_string()))
            .ok()
    };
    let login_url = check.optional("sentinel_login_url", |t| {
        LoginBaseUrl::parse(t).map_err(|e| e.to_string())
    });
    let settings = Settings {
        cloud,
        login_url,
        tenant_id: check.required(
            "sentinel_tenant_id",
            "Enter the Directory (tenant) ID of your Entra ID app registration.",
            |t| TenantId::parse(t).map_err(|e| e.to_string()),
        ),
        client_id: check.required(
            "sentinel_client_id",
            "Enter the Application (client) ID of the app registration.",
            |t| ClientId::parse(t).map_err(|e| e.to_string()),
        ),
        endpoint: check.required(
            "sentinel_endpoint",
            "Enter the logs ingestion endpoint of the data collection rule (or its DCE).",
            |t| IngestionEndpoint::parse(t).map_err(|e| e.to_string()),
        ),
        dcr_id: check.required(
            "sentinel_dcr_id",
            "Enter the immutable ID of the data collection rule (dcr-…).",
            |t| DcrImmutableId::parse(t).map_err(|e| e.to_string()),
        ),
        stream: check.required(
            "sentinel_stream",
            "Enter the stream name declared in the data collection rule, e.g. Custom-EzcaAudit.",
            |t| StreamName::parse(t).map_err(|e| e.to_string()),
        ),
    };
    check.secret(
        "sentinel_client_secret",
        "Enter a client secret of the app registration (Certificates & secrets).",
        |raw| {
            let secret = ClientSecret::parse(raw).map_err(|e| e.to_string())?;
            let (text, hint) = (secret.expose_secret().to_owned(), secret.last4().to_owned());
            Ok((secret, text, hint))
        },
    );
    // Both calls must be allowed: the client secret goes to the sign-in URL, the bearer token
    // to the ingestion endpoint.
    let egress = check.egress;
    if let Some(cloud) = settings.cloud {
        let login = settings
            .login_url
            .clone()
            .unwrap_or_else(|| cloud.default_login_base());
        if let Some(Err(e)) = Url::parse(login.as_str())
            .ok()
            .map(|u| egress.check_url(&u))
        {
            check.error("sentinel_login_url", e.to_string());
        }
    }
    if let Some(endpoint) = &settings.endpoint {
        if let Some(Err(e)) = Url::parse(endpoint.as_str())
            .ok()
            .map(|u| egress.check_url(&u))
        {
            check.error("sentinel_endpoint", e.to_string());
        }
    }
    stored(&settings)
}

fn build(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, BuildError> {
    let settings: Settings = settings_of(settings)?;
    let cloud = settings.cloud.unwrap_or(AzureCloud::Public);
    let secret = needed(secrets.get("client_secret"), "the client secret")?;
    Ok(Box::new(SentinelDestination {
        config: SentinelConfig {
            cloud,
            login_base: settings
                .login_url
                .unwrap_or_else(|| cloud.default_login_base()),
            tenant_id: needed(settings.tenant_id, "the tenant ID")?,
            client_id: needed(settings.client_id, "the client ID")?,
            client_secret: ClientSecret::parse(secret).map_err(BuildError::invalid)?,
            endpoint: needed(settings.endpoint, "the ingestion endpoint")?,
            dcr_id: needed(settings.dcr_id, "the DCR immutable ID")?,
            stream: needed(settings.stream, "the stream name")?,
        },
        hostname: context.hostname.to_owned(),
        tokens: context.shared.tokens.clone(),
    }))
}

fn form(settings: &Value) -> FormValues {
    let settings: Settings = settings_of(settings).unwrap_or_default();
    let mut form = FormValues::new();
    let mut put = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            form.insert(name.to_owned(), value.to_owned());
        }
    };
    put("sentinel_cloud", settings.cloud.map(AzureCloud::code));
    put(
        "sentinel_login_url",
        settings.login_url.as_ref().map(LoginBaseUrl::as_str),
    );
    put(
        "sentinel_tenant_id",
        settings.tenant_id.as_ref().map(TenantId::as_str),
    );
    put(
        "sentinel_client_id",
        settings.client_id.as_ref().map(ClientId::as_str),
    );
    put(
        "sentinel_endpoint",
        settings.endpoint.as_ref().map(IngestionEndpoint::as_str),
    );
    put(
        "sentinel_dcr_id",
        settings.dcr_id.as_ref().map(DcrImmutableId::as_str),
    );
    put(
        "sentinel_stream",
        settings.stream.as_ref().map(StreamName::as_str),
    );
    form
}

/// A configured Sentinel destination, as the forwarder holds it.
#[derive(Debug, Clone)]
pub struct SentinelDestination {
    pub config: SentinelConfig,
    /// The `Hostname` of every row: the name of this cloudpki deployment.
    pub hostname: String,
    /// The process-wide token cache.
    pub tokens: Arc<TokenCache>,
}

impl SiemDestination for SentinelDestination {
    fn provider(&self) -> &'static str {
        "Microsoft Sentinel"
    }

    fn build_batches(&self, logs: &[AuditLog], now: DateTime<Utc>) -> Vec<Batch> {
        build_batches(logs, &self.hostname, now)
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Disposition, SendError>> {
        Box::pin(send_batch(
            client,
            egress,
            &self.tokens,
            &self.config,
            batch,
        ))
    }

    fn test_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        subscription_id: Uuid,
    ) -> BoxFuture<'a, Result<TestSuccess, TestFailure>> {
        Box::pin(test_connection(
            client,
            egress,
            &self.tokens,
            &self.config,
            subscription_id,
            &self.hostname,
        ))
    }
}

#[cfg(test)]
mod tests;
