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
use crate::siem::config::{Context, FormCheck, FormValues, Secrets};
use crate::siem::egress::{BoxFuture, EgressPolicy, REQUEST_TIMEOUT};
use crate::siem::explain::{self, failure, Hints};
use crate::siem::oauth::{
    AccessToken, ClientCredentials, Identity, TokenCache, TokenError, TokenRefusal,
};
use crate::siem::parse_retry_after;
use crate::siem::registry::{needed, settings_of, stored, Choice, Field, FieldKind, ProviderSpec};
use crate::siem::wire::{self, rfc3339, Framing};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};
use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------------
// Rows and batches (pure)
// ---------------------------------------------------------------------------------------------

/// The row of one audit event (see the module doc for the format).
pub fn log_object(log: &AuditLog, hostname: &str, now: DateTime<Utc>) -> Value {
    let age = now.signed_duration_since(log.occurred_at);
    let too_old = age.to_std().is_ok_and(|age| age > MAX_TIME_GENERATED_AGE);
    let too_new = (-age)
        .to_std()
        .is_ok_and(|ahead| ahead > MAX_TIME_GENERATED_FUTURE);
    let message = wire::message(log);

    let mut row = Map::new();
    let time = if too_old || too_new {
        now
    } else {
        log.occurred_at
    };
    row.insert("TimeGenerated".into(), json!(rfc3339(time)));
    if too_old || too_new {
        row.insert("OriginalTime".into(), json!(rfc3339(log.occurred_at)));
    }
    wire::insert_attributes(&mut row, log);
    row.insert("message".into(), json!(message));
    row.insert("Hostname".into(), json!(hostname));

    let mut truncated = false;
    if log.details.to_string().len() >= MAX_FIELD_BYTES {
        let cut = cut_text(&log.details.to_string());
        row.insert("details".into(), json!(cut));
        truncated = true;
    }
    for field in ["Actor", "message", "Hostname"] {
        if let Some(Value::String(text)) = row.get(field) {
            if json!(text).to_string().len() >= MAX_FIELD_BYTES {
                let cut = cut_text(text);
                row.insert(field.into(), json!(cut));
                truncated = true;
            }
        }
    }
    if truncated {
        row.insert("Truncated".into(), json!(true));
    }
    Value::Object(row)
}

/// A prefix of `text` plus [`TRUNCATION_MARKER`] whose JSON string form (quotes and escapes
/// included) is below [`MAX_FIELD_BYTES`].
fn cut_text(text: &str) -> String {
    let marker = json!(TRUNCATION_MARKER).to_string().len() - 2;
    // 2 for the quotes, 1 to stay strictly below the limit.
    wire::json_prefix(text, MAX_FIELD_BYTES - marker - 3, TRUNCATION_MARKER)
}

/// Packs logs, in order, into JSON-array batches of at most [`MAX_BATCH_EVENTS`] rows and
/// less than [`MAX_BATCH_BYTES`] bytes. Every log lands in exactly one batch: a row is at most
/// a few [`MAX_FIELD_BYTES`] long, far below the batch limit.
pub fn build_batches(logs: &[AuditLog], hostname: &str, now: DateTime<Utc>) -> Vec<Batch> {
    let events = logs.iter().map(|log| {
        (
            log.uuid,
            log_object(log, hostname, now).to_string().into_bytes(),
        )
    });
    wire::pack(
        Framing::JsonArray,
        MAX_BATCH_EVENTS,
        MAX_BATCH_BYTES,
        events,
    )
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

impl ClientCredentials for SentinelConfig {
    fn identity(&self) -> Identity<'_> {
        Identity {
            issuer: self.login_base.as_str(),
            tenant: self.tenant_id.as_str(),
            client_id: self.client_id.as_str(),
            scope: self.scope(),
            secret: self.client_secret.expose_secret(),
        }
    }

    fn request<'a>(
        &'a self,
        client: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<(AccessToken, Duration), TokenError>> {
        Box::pin(request_token(client, self))
    }
}

/// One client-credentials request. Never logs the secret or the token.
async fn request_token(
    client: &reqwest::Client,
    cfg: &SentinelConfig,
) -> Result<(AccessToken, Duration), TokenError> {
    let form = serde_urlencoded::to_string([
        ("client_id", cfg.client_id.as_str()),
        ("client_secret", cfg.client_secret.expose_secret()),
        ("grant_type", "client_credentials"),
        ("scope", cfg.scope()),
    ])
    .map_err(|err| SendError::Other {
        detail: format!("could not encode the token request: {err}"),
    })?;
    let response = client
        .post(cfg.token_url())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form);
    let wire::Reply {
        status,
        retry_after,
        body,
    } = wire::send(response).await.map_err(TokenError::Transport)?;
    if status == 200 {
        return parse_token_answer(&body).ok_or_else(|| TokenError::Unavailable {
            after: None,
            reason: "Microsoft Entra ID answered the token request without a usable access token; this is usually temporary. Delivery will be retried.".into(),
        });
    }
    Err(explain_token_error(
        status,
        retry_after.as_deref(),
        &body,
        cfg,
    ))
}

fn parse_token_answer(body: &str) -> Option<(AccessToken, Duration)> {
    let answer: Value = serde_json::from_str(body).ok()?;
    if !answer["token_type"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return None;
    }
    let token = answer["access_token"].as_str().filter(|t| !t.is_empty())?;
    // v2.0 sends a number; older endpoints sent a string.
    let expires_in = match &answer["expires_in"] {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    // Entra ID issues tokens for about an hour; an absurd lifetime from a hostile or broken
    // endpoint is clamped, so it can neither overflow a clock nor pin a token for years.
    Some((
        AccessToken::new(token),
        Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME.as_secs())),
    ))
}

/// Maps a refused token request to a plain message, by AADSTS code, then OAuth2 error, then
/// HTTP status.
fn explain_token_error(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    cfg: &SentinelConfig,
) -> TokenError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = parsed["error"].as_str().unwrap_or_default();
    let description = parsed["error_description"].as_str().unwrap_or_default();
    let mut codes: Vec<u64> = parsed["error_codes"]
        .as_array()
        .map(|codes| codes.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if let Some(code) = aadsts_code(description) {
        codes.push(code);
    }
    let summary = description_summary(description);
    let detail = if summary.is_empty() {
        body_excerpt(body)
    } else {
        format!(": {summary}")
    };
    let tenant = cfg.tenant_id.as_str();
    let client_id = cfg.client_id.as_str();
    let refused = |kind: TokenRefusal, reason: String| TokenError::Refused {
        kind,
        status,
        reason,
    };
    let has = |code: u64| codes.contains(&code);

    if matches!(status, 408 | 429) || (500..=599).contains(&status) {
        return TokenError::Unavailable {
            after: retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
            reason: format!("The Microsoft Entra sign-in service is unavailable (HTTP {status}); delivery will be retried."),
        };
    }
    if has(90002) || has(900023) || has(90072) || has(50128) || has(50059) {
        return refused(
            TokenRefusal::WrongTenant,
            format!("Microsoft Entra ID does not know the tenant {tenant} (HTTP {status}){detail}. Copy the Directory (tenant) ID from the app registration's Overview page and check that the Azure cloud setting is the tenant's cloud."),
        );
    }
    if has(700016) || error == "unauthorized_client" {
        return refused(
            TokenRefusal::WrongClientId,
            format!("No application with client ID {client_id} exists in tenant {tenant} (HTTP {status}){detail}. Copy the Application (client) ID from the Overview page of the app registration in that same tenant."),
        );
    }
    if has(7000222) {
        return refused(
            TokenRefusal::ExpiredSecret,
            format!("The client secret has expired (HTTP {status}){detail}. Create a new secret under the app registration's Certificates & secrets and paste its Value here."),
        );
    }
    if has(7000215) || error == "invalid_client" {
        return refused(
            TokenRefusal::WrongSecret,
            format!("Microsoft Entra ID refused the client secret (HTTP {status}){detail}. Paste the secret's Value (not its Secret ID) from the app registration's Certificates & secrets, or create a new secret."),
        );
    }
    if has(500011)
        || has(70011)
        || has(1002012)
        || error == "invalid_scope"
        || error == "invalid_resource"
    {
        return refused(
            TokenRefusal::WrongScope,
            format!("Microsoft Entra ID does not offer the Azure Monitor audience {} in this tenant (HTTP {status}){detail}. Check that the Azure cloud setting matches the cloud of the tenant and workspace.", cfg.scope()),
        );
    }
    let url = cfg.token_url();
    match status {
        300..=399 | 404 | 405 => refused(
            TokenRefusal::WrongLoginUrl,
            format!("The sign-in URL {url} is not a Microsoft Entra token endpoint (HTTP {status}); use the default sign-in URL of the chosen Azure cloud."),
        ),
        400 | 401 | 403 => refused(
            TokenRefusal::Other,
            format!("Microsoft Entra ID refused the token request (HTTP {status}){detail}. Check the tenant ID, client ID and client secret."),
        ),
        _ => TokenError::Unavailable {
            after: None,
            reason: format!("The Microsoft Entra sign-in service gave an unexpected answer (HTTP {status}){detail}; delivery will be retried."),
        },
    }
}

/// The number of the first `AADSTS<n>` in an error description.
fn aadsts_code(description: &str) -> Option<u64> {
    let start = description.find("AADSTS")? + "AADSTS".len();
    let digits: String = description[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The first line of an Entra error description (trace and correlation ids dropped).
fn description_summary(description: &str) -> String {
    let line = description
        .split(['\r', '\n'])
        .next()
        .unwrap_or_default()
        .trim();
    line.chars()
        .take(MAX_REASON_BODY_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

/// Which leg of a delivery failed to get an HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Token,
    Ingestion,
}

/// The outcome of one delivery attempt, with what Test Connection needs to explain it.
enum Outcome {
    /// Azure Monitor answered (after at most one token refresh).
    Answer { status: u16, body: String },
    /// No token could be had.
    Token(TokenError),
}

struct Failure {
    leg: Leg,
    error: SendError,
}

async fn deliver(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    tokens: &TokenCache,
    cfg: &SentinelConfig,
    batch: &Batch,
    fresh_token: bool,
) -> Result<(Outcome, Option<String>), Failure> {
    let token_url = cfg.token_url();
    let ingestion_url = cfg.ingestion_url();
    // Both legs are checked before either is called, so a refusal sends nothing at all.
    egress.check_url(&token_url).map_err(|err| Failure {
        leg: Leg::Token,
        error: err.into(),
    })?;
    egress.check_url(&ingestion_url).map_err(|err| Failure {
        leg: Leg::Ingestion,
        error: err.into(),
    })?;
    let body = batch.gzip_body().map_err(|err| Failure {
        leg: Leg::Ingestion,
        error: SendError::Other {
            detail: format!("could not compress the batch: {err}"),
        },
    })?;
    let key = tokens.key(cfg);
    let mut refreshed = false;
    let mut token = if fresh_token {
        tokens.refresh(client, cfg).await
    } else {
        tokens.get(client, cfg).await
    };
    loop {
        let access = match token {
            Ok(access) => access,
            Err(TokenError::Transport(error)) => {
                return Err(Failure {
                    leg: Leg::Token,
                    error,
                })
            }
            Err(other) => return Ok((Outcome::Token(other), None)),
        };
        let (status, retry_after, answer) =
            post_rows(client, &ingestion_url, &access, body.clone())
                .await
                .map_err(|error| Failure {
                    leg: Leg::Ingestion,
                    error,
                })?;
        if status == 401 && !refreshed {
            // The token may have been revoked or rotated early: renew once, then believe Azure.
            tracing::info!(dcr = %cfg.dcr_id, "Azure Monitor refused the token (401); renewing it once");
            tokens.invalidate_if_current(&key, &access);
            refreshed = true;
            token = tokens.get(client, cfg).await;
            continue;
        }
        return Ok((
            Outcome::Answer {
                status,
                body: answer,
            },
            retry_after,
        ));
    }
}

async fn post_rows(
    client: &reqwest::Client,
    url: &Url,
    token: &AccessToken,
    gzipped: Vec<u8>,
) -> Result<(u16, Option<String>, String), SendError> {
    let mut bearer =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            SendError::Other {
                detail: "the access token is not a valid header value".into(),
            }
        })?;
    bearer.set_sensitive(true);
    let response = client
        .post(url.clone())
        .header(AUTHORIZATION, bearer)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .header("x-ms-client-request-id", Uuid::new_v4().to_string())
        .body(gzipped);
    let reply = wire::send(response).await?;
    Ok((reply.status, reply.retry_after, reply.body))
}

/// Sends one batch and classifies the answer. Checks the token URL and the ingestion URL
/// against the egress policy first; on 401 renews the token once and resends.
pub async fn send_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    tokens: &TokenCache,
    cfg: &SentinelConfig,
    batch: &Batch,
) -> Result<Disposition, SendError> {
    match deliver(client, egress, tokens, cfg, batch, false).await {
        Err(failure) => Err(failure.error),
        Ok((Outcome::Token(err), _)) => Ok(token_disposition(err)),
        Ok((Outcome::Answer { status, body }, retry_after)) => {
            Ok(classify(status, retry_after.as_deref(), &body))
        }
    }
}

fn token_disposition(err: TokenError) -> Disposition {
    match err {
        TokenError::Refused { reason, .. } => Disposition::AuthFailed { reason },
        TokenError::Unavailable { after, reason } => Disposition::Retry { after, reason },
        // Transport errors are returned as `SendError` before this point.
        TokenError::Transport(err) => Disposition::Retry {
            after: None,
            reason: err.to_string(),
        },
    }
}

/// Maps an Azure Monitor answer to what the forwarder does with the batch. A 401 reaching this
/// function has already survived one token renewal.
///
/// | status | disposition |
/// |---|---|
/// | 2xx (204, 200) | `Delivered` |
/// | 3xx | `AuthFailed` (redirects are not followed: fix the endpoint) |
/// | 400 | `Rejected` with Azure's error message |
/// | 401 | `AuthFailed` (token refused after one renewal: cloud/audience or app) |
/// | 403 | `AuthFailed`: grant Monitoring Metrics Publisher on the DCR |
/// | 404 | `AuthFailed`: wrong endpoint, DCR immutable id or stream |
/// | 413 | `SplitBatch` |
/// | 408, 429, 5xx except 501 | `Retry`, honouring `Retry-After` (seconds or HTTP date) |
/// | 501, other 4xx | `AuthFailed` (configuration error, shown to the user) |
/// | 1xx, ≥ 600 | `Retry` (unknown answers must not lose events) |
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Disposition {
    let detail = azure_error(body);
    match status {
        200..=299 => Disposition::Delivered,
        300..=399 => Disposition::AuthFailed {
            reason: format!("The ingestion endpoint answered with a redirect (HTTP {status}), which is not followed; enter the DCR's logs ingestion endpoint or the DCE URL itself."),
        },
        400 => Disposition::Rejected {
            reason: format!("Azure Monitor rejected the rows (HTTP 400){detail}."),
        },
        401 => Disposition::AuthFailed {
            reason: format!("Azure Monitor refused the access token even after renewing it (HTTP 401){detail}; check that the Azure cloud setting matches the ingestion endpoint's cloud."),
        },
        403 => Disposition::AuthFailed {
            reason: format!("Azure Monitor refused the app (HTTP 403){detail}; grant the app the Monitoring Metrics Publisher role on the DCR (can take 30 minutes)."),
        },
        404 => Disposition::AuthFailed {
            reason: format!("Azure Monitor did not find the target (HTTP 404){detail}; wrong endpoint, DCR immutable id or stream."),
        },
        413 => Disposition::SplitBatch,
        502 | 504 => crate::siem::gateway_gave_up(
            status,
            retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
            "Azure Monitor",
            &detail,
        ),
        408 | 429 | 500 | 502..=599 => Disposition::Retry {
            after: retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
            reason: match status {
                408 => format!("Azure Monitor timed out reading the request (HTTP 408){detail}."),
                429 => format!("Azure Monitor is throttling this DCR (HTTP 429){detail}."),
                _ => format!("Azure Monitor is unavailable (HTTP {status}){detail}."),
            },
        },
        402 | 405..=407 | 409..=412 | 414..=428 | 430..=499 | 501 => Disposition::AuthFailed {
            reason: format!("The ingestion endpoint refused the request (HTTP {status}){detail}; check the endpoint URL, DCR immutable id and stream."),
        },
        _ => Disposition::Retry {
            after: retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
            reason: format!("Azure Monitor answered an unexpected HTTP {status}{detail}."),
        },
    }
}

/// `: <code>: <message>` from Azure's `{"error":{"code","message"}}`, else a body excerpt.
fn azure_error(body: &str) -> String {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    let text = match (code.is_empty(), message.is_empty()) {
        (true, true) => return body_excerpt(body),
        (false, true) => code.to_owned(),
        (true, false) => message.to_owned(),
        (false, false) => format!("{code}: {message}"),
    };
    let text: String = text
        .chars()
        .take(MAX_REASON_BODY_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(": {}", text.trim_end_matches('.'))
}

fn body_excerpt(body: &str) -> String {
    wire::body_excerpt(body, MAX_REASON_BODY_CHARS)
}

// ---------------------------------------------------------------------------------------------
// Test Connection
// ---------------------------------------------------------------------------------------------

/// Gets a fresh token, then posts the test row (`EventID` 0, "SIEM connection test") through
/// the same builder, client and request as the forwarder, and explains the outcome for the
/// page. The row lands in the table, where the query of the answer finds it.
pub async fn test_connection(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    tokens: &TokenCache,
    cfg: &SentinelConfig,
    subscription_id: Uuid,
    hostname: &str,
) -> Result<TestSuccess, TestFailure> {
    let now = Utc::now();
    let probe = wire::test_log(subscription_id, now);
    let batches = build_batches(std::slice::from_ref(&probe), hostname, now);
    let Some(batch) = batches.first() else {
        return Err(failure(
            TestFailureKind::Other,
            "The test row could not be built.".into(),
        ));
    };
    let (outcome, _) = match deliver(client, egress, tokens, cfg, batch, true).await {
        Ok(answer) => answer,
        Err(Failure { leg, error }) => {
            let host = match leg {
                Leg::Token => cfg.login_base.host(),
                Leg::Ingestion => cfg.endpoint.host().to_owned(),
            };
            return Err(explain_send_error(error, &host, leg));
        }
    };
    match outcome {
        Outcome::Token(err) => Err(explain_token_failure(err)),
        Outcome::Answer { status, .. } if (200..=299).contains(&status) => {
            let query = cfg.query_for(EventId::CONNECTION_TEST.get());
            Ok(TestSuccess {
                message: format!(
                    "Azure Monitor accepted the test row: the app signed in and may write to stream {} of {}. Ingestion takes a few minutes; then find the row with {query}, and alert on events such as {}.",
                    cfg.stream, cfg.dcr_id, cfg.query_for(EXAMPLE_QUERY_EVENT)
                ),
                query,
                explorer_url: None,
            })
        }
        Outcome::Answer { status, body } => Err(explain_status(status, &body, cfg)),
    }
}

fn explain_token_failure(err: TokenError) -> TestFailure {
    match err {
        TokenError::Refused {
            kind: TokenRefusal::WrongLoginUrl,
            reason,
            ..
        } => failure(TestFailureKind::WrongUrl, reason),
        TokenError::Refused { reason, .. } => failure(TestFailureKind::InvalidCredentials, reason),
        TokenError::Unavailable { reason, .. } => failure(
            TestFailureKind::Unavailable,
            format!("{reason} The settings may well be right; try again in a few minutes."),
        ),
        TokenError::Transport(err) => TestFailure::from(err),
    }
}

fn explain_status(status: u16, body: &str, cfg: &SentinelConfig) -> TestFailure {
    let detail = azure_error(body);
    let endpoint = cfg.endpoint.as_str();
    match status {
        401 => failure(
            TestFailureKind::InvalidCredentials,
            format!("The app signed in, but Azure Monitor refused its token (HTTP 401){detail}. Check that the Azure cloud setting ({}) is the cloud of the ingestion endpoint {endpoint}.", cfg.cloud),
        ),
        403 => failure(
            TestFailureKind::InvalidCredentials,
            format!("The app signed in, but may not write to the data collection rule (HTTP 403){detail}. In the Azure portal open the DCR, Access control (IAM), and grant the app the Monitoring Metrics Publisher role; the role can take up to 30 minutes to apply."),
        ),
        404 => failure(
            TestFailureKind::WrongUrl,
            format!("Azure Monitor did not find stream {} of {} at {endpoint} (HTTP 404){detail}. Check the ingestion endpoint (the DCR's logs ingestion endpoint or its DCE), the DCR immutable ID (dcr-…) and the stream name from the rule's streamDeclarations.", cfg.stream, cfg.dcr_id),
        ),
        300..=399 => failure(
            TestFailureKind::WrongUrl,
            format!("The ingestion endpoint {endpoint} answered with a redirect (HTTP {status}), which is not followed. Enter the final https:// endpoint."),
        ),
        400 | 413 => failure(
            TestFailureKind::PayloadRejected,
            format!("Azure Monitor rejected the test row (HTTP {status}){detail}. Check that the endpoint is a logs ingestion endpoint, that the stream belongs to that DCR, and that the stream declares the columns in the README's DCR template."),
        ),
        408 | 429 | 500 | 502..=599 => failure(
            TestFailureKind::Unavailable,
            format!("Azure Monitor is temporarily unavailable (HTTP {status}). The settings may well be right; try again in a few minutes. Events are kept and retried meanwhile."),
        ),
        _ => failure(
            TestFailureKind::Other,
            format!("The ingestion endpoint {endpoint} gave an unexpected answer (HTTP {status}){detail}. Check the endpoint URL."),
        ),
    }
}

fn explain_send_error(err: SendError, host: &str, leg: Leg) -> TestFailure {
    let address = match leg {
        Leg::Token => "the sign-in URL (Azure cloud setting)",
        Leg::Ingestion => "the ingestion endpoint",
    };
    explain::send_error(
        err,
        host,
        &Hints {
            sent: "test row",
            address,
            tls: &format!("Check that {address} starts with https:// and that no TLS-inspecting proxy is in the way."),
            timeout: REQUEST_TIMEOUT,
            ..Hints::default()
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The destination
// ---------------------------------------------------------------------------------------------

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
) -> Result<Box<dyn SiemDestination>, String> {
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
            client_secret: ClientSecret::parse(secret).map_err(|e| e.to_string())?,
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
