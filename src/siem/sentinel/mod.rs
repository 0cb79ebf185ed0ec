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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 4, h, m, 0)
            .single()
            .expect("valid time")
    }

    fn config() -> SentinelConfig {
        SentinelConfig {
            cloud: AzureCloud::Public,
            login_base: AzureCloud::Public.default_login_base(),
            tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("tenant"),
            client_id: ClientId::parse("0d3c8e5a-1b2f-4c6d-9e8f-123456789abc").expect("client"),
            client_secret: ClientSecret::parse("abc8Q~topsecretvalue.WXYZ").expect("secret"),
            endpoint: IngestionEndpoint::parse("https://x.eastus-1.ingest.monitor.azure.com")
                .expect("endpoint"),
            dcr_id: DcrImmutableId::parse("dcr-000a00a000a00000a000000aa000a0aa").expect("dcr"),
            stream: StreamName::parse("Custom-EzcaAudit_CL").expect("stream"),
        }
    }

    #[test]
    fn log_object_has_time_generated_and_the_datadog_attributes() {
        let log = audit(4888, at(10, 0), json!({"template": "Web Server"}));
        let value = log_object(&log, "pki.example.com", at(10, 5));
        assert_eq!(
            value,
            json!({
                "TimeGenerated": "2025-03-04T10:00:00.000Z",
                "OccurredAt": "2025-03-04T10:00:00.000Z",
                "Sequence": 0,
                "EventID": 4888,
                "EventSummary": "Certificate request denied due to insufficient permissions",
                "Criticality": "High",
                "SubscriptionId": log.subscription_id.to_string(),
                "EventUuid": log.uuid.to_string(),
                "Actor": "alice@example.com",
                "details": {"template": "Web Server"},
                "message": "Certificate request denied due to insufficient permissions (Event ID 4888) by alice@example.com",
                "Hostname": "pki.example.com",
            })
        );
        let names: Vec<&str> = STREAM_COLUMNS.iter().map(|(name, _)| *name).collect();
        for key in value.as_object().expect("object").keys() {
            assert!(names.contains(&key.as_str()), "{key} is a declared column");
        }
    }

    #[test]
    fn an_event_azure_would_redate_is_sent_now_with_its_original_time() {
        let now = Utc
            .with_ymd_and_hms(2025, 3, 7, 0, 0, 0)
            .single()
            .expect("t");
        let value = log_object(&audit(19, at(0, 0), json!({})), "h", now);
        assert_eq!(value["TimeGenerated"], "2025-03-07T00:00:00.000Z");
        assert_eq!(value["OriginalTime"], "2025-03-04T00:00:00.000Z");
        let recent = log_object(&audit(19, at(0, 0), json!({})), "h", at(20, 0));
        assert_eq!(recent["TimeGenerated"], "2025-03-04T00:00:00.000Z");
        assert!(recent.get("OriginalTime").is_none());
    }

    #[test]
    fn details_over_64_kilobytes_are_cut_and_marked_never_dropped() {
        let log = audit(4887, at(10, 0), json!({ "blob": "x\"".repeat(40_000) }));
        let value = log_object(&log, "h", at(10, 0));
        let details = value["details"].as_str().expect("details became text");
        assert!(details.ends_with(TRUNCATION_MARKER));
        let size = json!(details).to_string().len();
        assert!(size < MAX_FIELD_BYTES, "{size}");
        assert!(size > MAX_FIELD_BYTES - 10, "uses the room it has: {size}");
        assert_eq!(value["Truncated"], true);
        assert_eq!(value["EventUuid"], log.uuid.to_string());
        assert_eq!(value["EventID"], 4887);

        let mut huge_actor = audit(4887, at(10, 0), json!({}));
        huge_actor.actor = Some("a".repeat(100_000));
        let value = log_object(&huge_actor, "h", at(10, 0));
        assert_eq!(value["Truncated"], true);
        for field in ["Actor", "message"] {
            assert!(value[field].to_string().len() < MAX_FIELD_BYTES, "{field}");
        }

        let small = log_object(&audit(4887, at(10, 0), json!({"a": 1})), "h", at(10, 0));
        assert!(small.get("Truncated").is_none());
    }

    #[test]
    fn batches_split_below_one_megabyte_and_at_the_row_count() {
        let logs: Vec<AuditLog> = (0..40)
            .map(|_| audit(4887, at(10, 0), json!({ "blob": "y".repeat(60_000) })))
            .collect();
        let batches = build_batches(&logs, "h", at(10, 0));
        assert!(batches.len() >= 3, "{}", batches.len());
        for batch in &batches {
            assert!(batch.body.len() < MAX_BATCH_BYTES);
            let rows: Vec<Value> = serde_json::from_slice(&batch.body).expect("json array");
            assert_eq!(rows.len(), batch.len());
            assert!(rows.iter().all(|row| row["TimeGenerated"].is_string()));
        }
        let uuids: Vec<Uuid> = batches.iter().flat_map(|b| b.event_uuids.clone()).collect();
        assert_eq!(uuids, logs.iter().map(|l| l.uuid).collect::<Vec<_>>());

        let many: Vec<AuditLog> = (0..2500).map(|_| audit(12, at(10, 0), json!({}))).collect();
        let sizes: Vec<usize> = build_batches(&many, "h", at(10, 0))
            .iter()
            .map(Batch::len)
            .collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert!(build_batches(&[], "h", at(10, 0)).is_empty());
    }

    #[test]
    fn even_the_largest_rows_fit_a_batch_whole() {
        let mut log = audit(4887, at(10, 0), json!({ "blob": "z".repeat(2_000_000) }));
        log.actor = Some("b".repeat(2_000_000));
        let batches = build_batches(&[log], &"h".repeat(100_000), at(10, 0));
        assert_eq!(batches.len(), 1);
        assert!(batches[0].body.len() < MAX_BATCH_BYTES);
    }

    use crate::siem::test_table::{audit, kind, Expect};

    #[test]
    fn classify_maps_every_status_row() {
        use Expect::*;
        let table = [
            (204, None, Delivered),
            (200, None, Delivered),
            (301, None, AuthFailed),
            (307, None, AuthFailed),
            (400, None, Rejected),
            (401, None, AuthFailed),
            (403, None, AuthFailed),
            (404, None, AuthFailed),
            (405, None, AuthFailed),
            (408, None, Retry(None)),
            (413, None, Split),
            (415, None, AuthFailed),
            (429, Some("17"), Retry(Some(17))),
            (429, Some("Tue, 04 Mar 2025 10:00:00 GMT"), Retry(Some(0))),
            (429, Some("soon"), Retry(None)),
            (500, None, Retry(None)),
            (501, None, AuthFailed),
            (502, Some("5"), Unconfirmed(Some(5))),
            (503, Some("120"), Retry(Some(120))),
            (504, None, Unconfirmed(None)),
            (100, None, Retry(None)),
            (600, None, Retry(None)),
        ];
        for (status, retry_after, expected) in table {
            let got = classify(status, retry_after, "");
            assert_eq!(
                kind(&got),
                expected,
                "{status} {retry_after:?} gave {got:?}"
            );
        }
    }

    #[test]
    fn classify_explains_with_azures_own_message_and_the_hints() {
        let Disposition::Rejected { reason } = classify(
            400,
            None,
            r#"{"error":{"code":"InvalidRequest","message":"Unable to parse the payload."}}"#,
        ) else {
            panic!("400 is Rejected");
        };
        assert!(
            reason.contains("InvalidRequest: Unable to parse the payload"),
            "{reason}"
        );
        let Disposition::AuthFailed { reason } = classify(
            403,
            None,
            r#"{"error":{"code":"OperationFailed","message":"The authentication token provided does not have access to ingest data for the data collection rule"}}"#,
        ) else {
            panic!("403 is AuthFailed");
        };
        assert!(reason.contains("grant the app the Monitoring Metrics Publisher role on the DCR (can take 30 minutes)"), "{reason}");
        assert!(reason.contains("OperationFailed"), "{reason}");
        let Disposition::AuthFailed { reason } = classify(404, None, "") else {
            panic!("404 is AuthFailed");
        };
        assert!(
            reason.contains("wrong endpoint, DCR immutable id or stream"),
            "{reason}"
        );
    }

    #[test]
    fn token_errors_become_plain_messages_by_aadsts_code() {
        let cfg = config();
        let body = |code: u64, error: &str, text: &str| {
            json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: 1\r\nCorrelation ID: 2"),
                "error_codes": [code],
            })
            .to_string()
        };
        let table = [
            (
                400,
                body(90002, "invalid_request", "Tenant 'x' not found."),
                TokenRefusal::WrongTenant,
            ),
            (
                400,
                body(
                    700016,
                    "unauthorized_client",
                    "Application with identifier 'y' was not found in the directory.",
                ),
                TokenRefusal::WrongClientId,
            ),
            (
                401,
                body(7000215, "invalid_client", "Invalid client secret provided."),
                TokenRefusal::WrongSecret,
            ),
            (
                401,
                body(
                    7000222,
                    "invalid_client",
                    "The provided client secret keys are expired.",
                ),
                TokenRefusal::ExpiredSecret,
            ),
            (
                400,
                body(
                    500011,
                    "invalid_resource",
                    "The resource principal named https://monitor.azure.com was not found.",
                ),
                TokenRefusal::WrongScope,
            ),
            (404, String::new(), TokenRefusal::WrongLoginUrl),
            (400, "garbage".into(), TokenRefusal::Other),
        ];
        for (status, body, expected) in table {
            match explain_token_error(status, None, &body, &cfg) {
                TokenError::Refused { kind, reason, .. } => {
                    assert_eq!(kind, expected, "{reason}");
                    assert!(!reason.contains("Trace ID"), "{reason}");
                    assert!(!reason.contains("topsecret"), "{reason}");
                }
                other => panic!("{status} {body}: {other:?}"),
            }
        }
        assert!(matches!(
            explain_token_error(503, Some("9"), "", &cfg),
            TokenError::Unavailable { after: Some(d), .. } if d == Duration::from_secs(9)
        ));
    }

    #[test]
    fn token_answers_are_parsed_strictly() {
        let (token, life) = parse_token_answer(
            r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0"}"#,
        )
        .expect("valid answer");
        assert_eq!(token.expose_secret(), "eyJ0");
        assert_eq!(life, Duration::from_secs(3599));
        assert!(parse_token_answer(
            r#"{"token_type":"Bearer","expires_in":"60","access_token":"a"}"#
        )
        .is_some());
        assert!(
            parse_token_answer(r#"{"token_type":"mac","expires_in":60,"access_token":"a"}"#)
                .is_none()
        );
        assert!(
            parse_token_answer(r#"{"token_type":"Bearer","expires_in":60,"access_token":""}"#)
                .is_none()
        );
        assert!(parse_token_answer("<html>").is_none());
    }

    #[test]
    fn secrets_and_tokens_never_show_in_debug_output() {
        let cfg = config();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("topsecret"), "{debug}");
        assert!(debug.contains("****WXYZ"));
        let token = AccessToken::new("eyJ0eXAiOiJKV1Qi.secret-part");
        assert_eq!(format!("{token:?}"), "AccessToken(****)");
        let cache = TokenCache::with_margin(TOKEN_REFRESH_MARGIN);
        let key = cache.key(&cfg);
        assert!(!format!("{key:?}").contains("topsecret"));
        assert_eq!(format!("{cache:?}"), "TokenCache { cached: 0, .. }");
    }

    #[test]
    fn the_cache_key_changes_with_the_secret() {
        let cache = TokenCache::with_margin(TOKEN_REFRESH_MARGIN);
        let cfg = config();
        let mut rotated = cfg.clone();
        rotated.client_secret = ClientSecret::parse("another-secret-value-0000").expect("secret");
        assert_eq!(cache.key(&cfg), cache.key(&cfg.clone()));
        assert_ne!(cache.key(&cfg), cache.key(&rotated));
    }

    #[test]
    fn the_query_names_the_table_of_the_stream() {
        let mut cfg = config();
        assert_eq!(cfg.query_for(4888), "EzcaAudit_CL | where EventID == 4888");
        cfg.stream = StreamName::parse("Custom-EzcaAudit").expect("stream");
        assert_eq!(cfg.query_for(4888), "EzcaAudit_CL | where EventID == 4888");
    }
}
