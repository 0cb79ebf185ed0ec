//! HTTP Event Collector providers: **Splunk HEC** and **CrowdStrike Falcon LogScale** (through
//! its HEC-compatible ingest endpoint). One implementation, parameterised by [`HecFlavor`].
//!
//! # Contract
//!
//! | | Splunk | LogScale |
//! |---|---|---|
//! | endpoint | `POST <base>/services/collector/event` | `POST <base>/api/v1/ingest/hec` |
//! | auth | `Authorization: Splunk <GUID token>` | `Authorization: Bearer <ingest token>` |
//! | indexer acknowledgement | optional ([`HecConfig::ack`]) | not offered: refused by [`HecConfig::validate`] and ignored when sending |
//! | label | `Splunk` | `CrowdStrike Falcon LogScale` |
//!
//! Sources: Splunk "Format events for HTTP Event Collector" and "HEC REST API endpoints"
//! (reference/siem-providers.md §1). LogScale: "Ingesting with HTTP Event Collector (HEC)"
//! (library.humio.com/logscale-api/log-shippers-hec.html) documents the endpoints
//! `/api/v1/ingest/hec` and `/services/collector`, the ingest token "in the HTTP Authorization
//! header", and shows only `Authorization: Bearer $INGEST_TOKEN` in its examples; LogScale's API
//! authentication page also specifies the Bearer scheme. Nothing found says LogScale takes the
//! `Splunk` scheme, so the safe reading is the documented path and `Bearer`.
//!
//! Body: one JSON envelope per event, concatenated with `\n` (no array, no commas):
//! `{"time":<epoch seconds.millis>,"host":…,"source":…,"sourcetype":…,"index":…,"event":{…}}`
//! where `index` is present only when configured, `host` is the configured host or this
//! deployment's host name, `source` the configured source or [`DEFAULT_SOURCE`], and `event`
//! holds the attributes of the Datadog log (`EventID` number, `EventSummary`, `Criticality`,
//! `SubscriptionId`, `EventUuid`, `Actor`, `message`, `details`), so `EventID=4888` finds an
//! event in both SIEMs. The body is sent **uncompressed** with `Content-Type:
//! application/json`: gzip on HEC is only "reported to work" (no primary source found), and an
//! HEC that does not inflate would refuse every batch as malformed.
//!
//! Limits, enforced before sending:
//! - less than [`MAX_BATCH_BYTES`] per request body (Splunk Enterprise before 7.x and, reportedly,
//!   Splunk Cloud cap requests at 1 MB; Vector's default) and at most [`MAX_BATCH_EVENTS`] events;
//! - a single envelope that would not fit alone has its `details` cut to a prefix of their JSON
//!   text plus [`TRUNCATION_MARKER`] and gets `Truncated: true`; it is never dropped.
//!
//! Answers are classified by [`classify`] from the status and the `{"text","code"}` reply:
//! 400 code 6 with `invalid-event-number: k` means the first k events were indexed and event k
//! is malformed ([`Disposition::PartialAccept`]: never resend the first k). With indexer
//! acknowledgement, a 200 carries an `ackId` that is polled at `<base>/services/collector/ack`
//! every [`AckTiming::poll_interval`] up to [`AckTiming::timeout`] on the same channel
//! (`X-Splunk-Request-Channel`, one per [`HecConfig`]); only a `true` is `Delivered`, a timeout is
//! `Retry` (the events are sent again: at least once, deduplicate on `EventUuid`). When the ack
//! API turns out to be disabled on the token (code 14 while polling), the 200 is trusted, as
//! Vector does, and the connection test reports the mismatch.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::hec::{
    HecHost, HecSource, HecToken, HecUrl, SourceType, SplunkIndex, LOGSCALE_HEC_PATH,
    SPLUNK_ACK_PATH, SPLUNK_EVENT_PATH,
};
use crate::siem::config::{Context, FormCheck, FormValues, Secrets};
use crate::siem::egress::{BoxFuture, EgressPolicy, REQUEST_TIMEOUT};
use crate::siem::explain::{self, failure, Hints};
use crate::siem::parse_retry_after;
use crate::siem::registry::{needed, settings_of, stored, Field, FieldKind, ProviderSpec};
use crate::siem::wire::{self, Framing};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};

/// Every request body is smaller than this, uncompressed, in bytes.
pub const MAX_BATCH_BYTES: usize = 1_000_000;
/// Most events per request.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Default wait between two indexer-acknowledgement polls.
pub const ACK_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Default time an acknowledgement may take before the batch is retried.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// `source` of every event when none is configured.
pub const DEFAULT_SOURCE: &str = "cloudpki";
/// Appended to `details` when an event had to be cut to fit [`MAX_BATCH_BYTES`].
pub const TRUNCATION_MARKER: &str = "…[truncated by cloudpki: event exceeded 1 MB]";
/// The header that names the data channel (indexer acknowledgement).
pub const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";
/// Longest `Actor` kept when even the truncated `details` do not make an event fit, in chars.
const MAX_ACTOR_CHARS_WHEN_TRUNCATED: usize = 1024;
/// Longest excerpt of a collector's reply kept in a reason, in chars.
const MAX_REASON_BODY_CHARS: usize = 200;

/// Which HEC dialect a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HecFlavor {
    Splunk,
    LogScale,
}

impl HecFlavor {
    /// The provider's name as the portal shows it.
    pub fn label(self) -> &'static str {
        match self {
            HecFlavor::Splunk => "Splunk",
            HecFlavor::LogScale => "CrowdStrike Falcon LogScale",
        }
    }

    /// Short name used inside sentences.
    fn short(self) -> &'static str {
        match self {
            HecFlavor::Splunk => "Splunk",
            HecFlavor::LogScale => "LogScale",
        }
    }

    /// The event endpoint under the base URL.
    pub fn event_path(self) -> &'static str {
        match self {
            HecFlavor::Splunk => SPLUNK_EVENT_PATH,
            HecFlavor::LogScale => LOGSCALE_HEC_PATH,
        }
    }

    /// The `Authorization` header value for `token`.
    pub fn authorization(self, token: &HecToken) -> String {
        match self {
            HecFlavor::Splunk => format!("Splunk {}", token.expose_secret()),
            HecFlavor::LogScale => format!("Bearer {}", token.expose_secret()),
        }
    }

    /// Whether the flavour offers indexer acknowledgement.
    pub fn supports_ack(self) -> bool {
        matches!(self, HecFlavor::Splunk)
    }
}

/// How indexer acknowledgements are polled; tests shorten both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTiming {
    pub poll_interval: Duration,
    pub timeout: Duration,
}

impl Default for AckTiming {
    fn default() -> Self {
        AckTiming {
            poll_interval: ACK_POLL_INTERVAL,
            timeout: ACK_TIMEOUT,
        }
    }
}

/// A validated HEC destination: it cannot lack a URL or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecConfig {
    pub flavor: HecFlavor,
    pub url: HecUrl,
    pub token: HecToken,
    /// Splunk index (LogScale: repository); `None` uses the token's default.
    pub index: Option<SplunkIndex>,
    pub sourcetype: SourceType,
    /// `None` sends [`DEFAULT_SOURCE`].
    pub source: Option<HecSource>,
    /// `None` sends the deployment's host name.
    pub host: Option<HecHost>,
    /// Splunk indexer acknowledgement.
    pub ack: bool,
    pub ack_timing: AckTiming,
    /// The data channel of this destination instance (sent only with `ack`).
    pub channel: Uuid,
}

/// A combination of settings the flavour cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HecConfigError {
    #[error("CrowdStrike Falcon LogScale does not offer indexer acknowledgement; turn the indexer acknowledgement option off.")]
    AckNotSupported,
}

impl HecConfig {
    /// A destination with the defaults: no index, sourcetype `ezca:audit`, default source and
    /// host, no acknowledgement, default ack timing and a fresh channel.
    pub fn new(flavor: HecFlavor, url: HecUrl, token: HecToken) -> HecConfig {
        HecConfig {
            flavor,
            url,
            token,
            index: None,
            sourcetype: SourceType::default(),
            source: None,
            host: None,
            ack: false,
            ack_timing: AckTiming::default(),
            channel: Uuid::new_v4(),
        }
    }

    /// Refuses settings the flavour cannot honour (acknowledgement on LogScale).
    pub fn validate(&self) -> Result<(), HecConfigError> {
        if self.ack && !self.flavor.supports_ack() {
            return Err(HecConfigError::AckNotSupported);
        }
        Ok(())
    }

    /// Whether acknowledgements are requested and possible.
    fn uses_ack(&self) -> bool {
        self.ack && self.flavor.supports_ack()
    }
}

/// The `event` object of one audit event, in a stable field order.
#[derive(Debug, Clone, Serialize)]
struct EventFields<'a> {
    #[serde(rename = "EventID")]
    event_id: u32,
    #[serde(rename = "EventSummary")]
    summary: &'static str,
    #[serde(rename = "Criticality")]
    criticality: &'static str,
    #[serde(rename = "SubscriptionId")]
    subscription_id: Uuid,
    #[serde(rename = "EventUuid")]
    event_uuid: Uuid,
    #[serde(rename = "Sequence")]
    sequence: i64,
    #[serde(rename = "OccurredAt")]
    occurred_at: String,
    #[serde(rename = "Actor")]
    actor: Option<Cow<'a, str>>,
    message: Cow<'a, str>,
    details: Cow<'a, Value>,
    #[serde(rename = "Truncated", skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Envelope<'a> {
    time: f64,
    host: &'a str,
    source: &'a str,
    sourcetype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
    event: EventFields<'a>,
}

fn event_fields(log: &AuditLog) -> EventFields<'_> {
    let info = log.event_id.info();
    let message = wire::message(log);
    EventFields {
        event_id: log.event_id.get(),
        summary: info.summary,
        criticality: info.criticality.as_str(),
        subscription_id: log.subscription_id,
        event_uuid: log.uuid,
        sequence: log.sequence,
        occurred_at: wire::rfc3339(log.occurred_at),
        actor: log.actor.as_deref().map(Cow::Borrowed),
        message: Cow::Owned(message),
        details: Cow::Borrowed(&log.details),
        truncated: None,
    }
}

/// The `event` object of one audit event, untruncated (see the module doc for its fields).
pub fn event_object(log: &AuditLog) -> Value {
    serde_json::to_value(event_fields(log)).unwrap_or(Value::Null)
}

/// Epoch seconds with a millisecond fraction, as HEC's `time` expects.
fn epoch_seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// The JSON text of one event's envelope, always shorter than [`MAX_BATCH_BYTES`].
pub fn envelope(cfg: &HecConfig, log: &AuditLog, hostname: &str) -> Vec<u8> {
    let mut envelope = Envelope {
        time: epoch_seconds(log.occurred_at),
        host: cfg.host.as_ref().map_or(hostname, HecHost::as_str),
        source: cfg
            .source
            .as_ref()
            .map_or(DEFAULT_SOURCE, HecSource::as_str),
        sourcetype: cfg.sourcetype.as_str(),
        index: cfg.index.as_ref().map(SplunkIndex::as_str),
        event: event_fields(log),
    };
    let text = to_json(&envelope);
    if text.len() < MAX_BATCH_BYTES {
        return text;
    }
    truncate_details(&mut envelope, &log.details);
    to_json(&envelope)
}

fn to_json(envelope: &Envelope<'_>) -> Vec<u8> {
    // Serialising plain structs, strings and a `Value` into memory cannot fail.
    serde_json::to_vec(envelope).unwrap_or_default()
}

/// Replaces `details` by a prefix of its JSON text plus [`TRUNCATION_MARKER`] so that the
/// envelope stays below [`MAX_BATCH_BYTES`]; identifying fields are untouched.
fn truncate_details(envelope: &mut Envelope<'_>, details: &Value) {
    envelope.event.truncated = Some(true);
    envelope.event.details = Cow::Owned(json!(TRUNCATION_MARKER));
    let mut fixed = to_json(envelope).len();
    if fixed >= MAX_BATCH_BYTES {
        // Only an absurd actor can do this; cut it so the event is still delivered.
        if let Some(actor) = &envelope.event.actor {
            let cut: String = actor.chars().take(MAX_ACTOR_CHARS_WHEN_TRUNCATED).collect();
            envelope.event.actor = Some(Cow::Owned(cut));
        }
        envelope.event.message = Cow::Borrowed(envelope.event.summary);
        fixed = to_json(envelope).len();
    }
    let budget = MAX_BATCH_BYTES.saturating_sub(fixed + 1);
    let prefix = wire::json_prefix(&details.to_string(), budget, TRUNCATION_MARKER);
    envelope.event.details = Cow::Owned(Value::String(prefix));
}

/// Packs logs, in order, into batches of newline-separated envelopes: at most
/// [`MAX_BATCH_EVENTS`] events and less than [`MAX_BATCH_BYTES`] bytes each. Every log lands
/// in exactly one batch. `now` is unused: HEC keeps each event's own time (no age limit is
/// documented for an explicit `time`); it is taken for the shape of [`SiemDestination`].
pub fn build_batches(
    cfg: &HecConfig,
    logs: &[AuditLog],
    hostname: &str,
    _now: DateTime<Utc>,
) -> Vec<Batch> {
    let events = logs
        .iter()
        .map(|log| (log.uuid, envelope(cfg, log, hostname)));
    wire::pack(Framing::Lines, MAX_BATCH_EVENTS, MAX_BATCH_BYTES, events)
}

/// What a collector said in its `{"text","code"}` reply (all optional: proxies say other
/// things).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HecReply {
    /// Whether the body was a JSON object at all.
    pub is_json: bool,
    pub text: Option<String>,
    pub code: Option<i64>,
    /// `ackId` of a 200 when a channel was sent.
    pub ack_id: Option<u64>,
    /// `invalid-event-number` of a code 6, from its own field or from `text`.
    pub invalid_event_number: Option<usize>,
}

impl HecReply {
    /// Parses a reply body leniently.
    pub fn parse(body: &str) -> HecReply {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body.trim()) else {
            return HecReply::default();
        };
        let text = object
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let number = |value: &Value| match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let invalid_event_number = object
            .get("invalid-event-number")
            .and_then(number)
            .or_else(|| text.as_deref().and_then(invalid_event_number_in_text))
            .and_then(|k| usize::try_from(k).ok());
        HecReply {
            is_json: true,
            code: object.get("code").and_then(Value::as_i64),
            ack_id: object.get("ackId").and_then(number),
            invalid_event_number,
            text,
        }
    }
}

/// `k` from a text like `Invalid data format; invalid-event-number: 3`.
fn invalid_event_number_in_text(text: &str) -> Option<u64> {
    let (_, after) = text.split_once("invalid-event-number")?;
    let digits: String = after
        .trim_start_matches([':', '=', ' ', '"'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn reply_excerpt(reply: &HecReply, body: &str) -> String {
    let source = match (&reply.text, reply.code) {
        (Some(text), Some(code)) => format!("code {code}, \"{text}\""),
        (Some(text), None) => format!("\"{text}\""),
        (None, Some(code)) => format!("code {code}"),
        (None, None) => body.trim().to_owned(),
    };
    if source.is_empty() {
        return String::new();
    }
    format!(", {}", wire::clean_excerpt(&source, MAX_REASON_BODY_CHARS))
}

/// Maps a collector's answer to what the forwarder does with the batch.
///
/// | status | reply code | disposition |
/// |---|---|---|
/// | 2xx | 0, none, or empty body | `Delivered` |
/// | 2xx | other code, or a body that is not JSON | `AuthFailed` (not an event endpoint) |
/// | 3xx | – | `AuthFailed` (redirects are not followed) |
/// | 400 | 6 with `invalid-event-number` k | `PartialAccept { accepted: k }` |
/// | 400 | 6 without a number, none, unknown | `Rejected` (isolate, park) |
/// | 400 | 5, 7, 10, 11, 12, 13, 14, 15, 16, 21, 22 | `AuthFailed` (configuration; events stay queued) |
/// | 401, 403 | 1–4 | `AuthFailed` (token missing, malformed, disabled, invalid) |
/// | 404 | – | `AuthFailed` (wrong URL) |
/// | 413 | – | `SplitBatch` |
/// | 408, 429, 5xx except 501 | 8, 9, 18–20 | `Retry`, honouring `Retry-After` |
/// | 501, other 4xx | – | `AuthFailed` (not an HEC endpoint / configuration) |
/// | 1xx, ≥ 600 | – | `Retry` (unknown answers must not lose events) |
pub fn classify(
    flavor: HecFlavor,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> Disposition {
    let name = flavor.short();
    let reply = HecReply::parse(body);
    let detail = reply_excerpt(&reply, body);
    let config = |reason: String| Disposition::AuthFailed { reason };
    let retry = |reason: String| Disposition::Retry {
        after: retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
        reason,
    };
    match status {
        200..=299 => match (reply.is_json, reply.code) {
            (true, Some(0) | None) => Disposition::Delivered,
            (false, _) if body.trim().is_empty() => Disposition::Delivered,
            (true, Some(code)) => config(format!("The collector URL answered HTTP {status} with code {code}{detail} instead of accepting the events; check that the URL is the HTTP Event Collector itself.")),
            (false, _) => config(format!("The collector URL answered HTTP {status} with something that is not an HTTP Event Collector reply; check the URL (it may point at a proxy or login page).")),
        },
        300..=399 => config(format!("The collector URL answered with a redirect (HTTP {status}); enter the final https:// URL of the HTTP Event Collector.")),
        400 => match reply.code {
            Some(6) => match reply.invalid_event_number {
                Some(accepted) => Disposition::PartialAccept {
                    accepted,
                    reason: format!("{name} refused this event as malformed (HTTP 400{detail}) after indexing the events before it."),
                },
                None => Disposition::Rejected {
                    reason: format!("{name} refused the events as malformed (HTTP 400{detail})."),
                },
            },
            Some(5) => config(format!("{name} received no data (HTTP 400{detail}); something between cloudpki and {name}, such as a proxy, may be dropping request bodies.")),
            Some(7) => config(format!("{name} refused the index (HTTP 400{detail}); add the index to the token's allowed indexes, or change or clear the Index field.")),
            Some(10) => config(format!("The token requires indexer acknowledgement (HTTP 400{detail}); turn on indexer acknowledgement in the settings, or turn it off for the token in {name}.")),
            Some(11) => config(format!("{name} refused the data channel (HTTP 400{detail}); check that nothing between cloudpki and {name} changes the X-Splunk-Request-Channel header.")),
            Some(12 | 13) => config(format!("{name} says the event field is missing or blank (HTTP 400{detail}); check that the URL points at the event endpoint and not at a proxy that rewrites requests.")),
            Some(14) => config(format!("Indexer acknowledgement is disabled on this token (HTTP 400{detail}); turn it on for the token in {name}, or turn it off in the settings.")),
            Some(15) => config(format!("{name} refused the indexed fields of the events (HTTP 400{detail}); check the token's settings in {name}.")),
            Some(16) => config(format!("{name} refused query-string authorization (HTTP 400{detail}); check that nothing between cloudpki and {name} moves the token into the URL.")),
            Some(21 | 22) => config(format!("{name} refused the token as invalid or disabled (HTTP 400{detail}); check the token and enable it.")),
            _ => Disposition::Rejected {
                reason: format!("{name} refused the events as malformed (HTTP 400{detail})."),
            },
        },
        401 => config(format!("{name} refused the request: the token is missing or not sent in the expected form (HTTP 401{detail}); check the token.")),
        403 => config(format!("{name} refused the token: it is invalid or disabled (HTTP 403{detail}); copy the token again and check that it and HEC are enabled.")),
        404 => config(format!("The collector URL was not found (HTTP 404{detail}); check the URL and port.")),
        413 => Disposition::SplitBatch,
        501 => config(format!("The collector URL does not implement event ingestion (HTTP 501{detail}); check that the URL points at the HTTP Event Collector.")),
        408 => retry(format!("{name} timed out reading the request (HTTP 408{detail}).")),
        429 => retry(format!("{name} is rate limiting (HTTP 429{detail}).")),
        502 | 504 => crate::siem::gateway_gave_up(
            status,
            retry_after.and_then(|value| parse_retry_after(value, Utc::now())),
            name,
            &detail,
        ),
        500..=599 => retry(format!("{name} is unavailable (HTTP {status}{detail}).")),
        402..=499 => config(format!("{name} refused the request (HTTP {status}{detail}); check the collector URL and the token.")),
        _ => retry(format!("{name} answered an unexpected HTTP {status}{detail}.")),
    }
}

/// How the acknowledgement of an accepted batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AckOutcome {
    /// No acknowledgement was asked for (or the answer was not a 200).
    NotRequested,
    /// The collector confirmed the events are indexed.
    Acknowledged,
    /// A channel was sent but the 200 carried no `ackId`: acknowledgement is off on the token.
    NoAckId,
    /// The ack endpoint refused to answer (e.g. code 14); the 200 was trusted.
    Unavailable { reason: String },
    /// Still unconfirmed when the timeout ran out.
    TimedOut { last_problem: Option<String> },
}

/// The HTTP answer of the collector, classified, plus the acknowledgement.
struct Answer {
    status: u16,
    reply: HecReply,
    body: String,
    disposition: Disposition,
    ack: AckOutcome,
}

fn header_value(value: &str, what: &str) -> Result<HeaderValue, SendError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| SendError::Other {
        detail: format!("the {what} is not a valid header value"),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

async fn post_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    batch: &Batch,
) -> Result<Answer, SendError> {
    let endpoint = cfg.url.endpoint(cfg.flavor.event_path());
    egress.check_url(&endpoint)?;
    let auth = header_value(&cfg.flavor.authorization(&cfg.token), "token")?;
    let mut request = client
        .post(endpoint)
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .body(batch.body.clone());
    if cfg.uses_ack() {
        request = request.header(CHANNEL_HEADER, cfg.channel.to_string());
    }
    let wire::Reply {
        status,
        retry_after,
        body,
    } = wire::send(request).await?;
    let mut disposition = classify(cfg.flavor, status, retry_after.as_deref(), &body);
    let reply = HecReply::parse(&body);
    if let Disposition::PartialAccept { accepted, .. } = disposition {
        if accepted >= batch.len() {
            disposition = Disposition::Rejected {
                reason: format!("{} refused the events as malformed (HTTP 400) and named event {accepted}, which the request did not hold.", cfg.flavor.short()),
            };
        }
    }
    let mut ack = AckOutcome::NotRequested;
    if cfg.uses_ack() && disposition == Disposition::Delivered {
        ack = match reply.ack_id {
            Some(id) => await_ack(client, egress, cfg, id).await,
            None => AckOutcome::NoAckId,
        };
        match &ack {
            AckOutcome::TimedOut { last_problem } => {
                let extra = last_problem
                    .as_deref()
                    .map(|p| format!(" Last problem: {p}"))
                    .unwrap_or_default();
                disposition = Disposition::Unconfirmed {
                    after: None,
                    reason: format!("Splunk accepted the events but did not confirm within {} seconds that they were indexed (indexer acknowledgement); they will be sent again, so Splunk may hold duplicates with the same EventUuid.{extra}", cfg.ack_timing.timeout.as_secs_f32()),
                };
            }
            AckOutcome::NoAckId => tracing::warn!(
                destination = cfg.url.as_str(),
                "indexer acknowledgement is on but the collector returned no ackId; trusting the 200"
            ),
            AckOutcome::Unavailable { reason } => tracing::warn!(
                destination = cfg.url.as_str(),
                reason = reason.as_str(),
                "the acknowledgement endpoint is unusable; trusting the 200"
            ),
            AckOutcome::NotRequested | AckOutcome::Acknowledged => {}
        }
    }
    Ok(Answer {
        status,
        reply,
        body,
        disposition,
        ack,
    })
}

/// One poll of the ack endpoint.
enum AckPoll {
    Acked,
    Pending,
    /// The endpoint says acknowledgement cannot work (4xx): stop polling.
    Unusable(String),
    /// A transient problem (5xx, transport error): keep polling.
    Problem(String),
}

async fn await_ack(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    ack_id: u64,
) -> AckOutcome {
    let started = tokio::time::Instant::now();
    let mut last_problem = None;
    loop {
        tokio::time::sleep(cfg.ack_timing.poll_interval).await;
        match poll_ack(client, egress, cfg, ack_id).await {
            AckPoll::Acked => return AckOutcome::Acknowledged,
            AckPoll::Pending => {}
            AckPoll::Unusable(reason) => return AckOutcome::Unavailable { reason },
            AckPoll::Problem(reason) => last_problem = Some(reason),
        }
        if started.elapsed() >= cfg.ack_timing.timeout {
            return AckOutcome::TimedOut { last_problem };
        }
    }
}

async fn poll_ack(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    ack_id: u64,
) -> AckPoll {
    let endpoint = cfg.url.endpoint(SPLUNK_ACK_PATH);
    if let Err(err) = egress.check_url(&endpoint) {
        return AckPoll::Unusable(err.to_string());
    }
    let auth = match header_value(&cfg.flavor.authorization(&cfg.token), "token") {
        Ok(auth) => auth,
        Err(err) => return AckPoll::Unusable(err.to_string()),
    };
    let sent = client
        .post(endpoint)
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .header(CHANNEL_HEADER, cfg.channel.to_string())
        .body(json!({ "acks": [ack_id] }).to_string());
    let (status, body) = match wire::send(sent).await {
        Ok(reply) => (reply.status, reply.body),
        Err(err) => return AckPoll::Problem(err.to_string()),
    };
    match status {
        200 => {
            let acked = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["acks"][ack_id.to_string()].as_bool());
            match acked {
                Some(true) => AckPoll::Acked,
                Some(false) => AckPoll::Pending,
                None => AckPoll::Problem(format!(
                    "the acknowledgement reply did not mention ackId {ack_id}"
                )),
            }
        }
        400..=499 if status != 408 && status != 429 => {
            let reply = HecReply::parse(&body);
            AckPoll::Unusable(format!(
                "the acknowledgement endpoint answered HTTP {status}{}",
                reply_excerpt(&reply, &body)
            ))
        }
        _ => AckPoll::Problem(format!(
            "the acknowledgement endpoint answered HTTP {status}"
        )),
    }
}

/// Sends one batch to the collector, waits for the indexer acknowledgement when configured,
/// and classifies the outcome. Calls [`EgressPolicy::check_url`] before anything leaves the
/// host.
pub async fn send_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    batch: &Batch,
) -> Result<Disposition, SendError> {
    post_batch(client, egress, cfg, batch)
        .await
        .map(|answer| answer.disposition)
}

/// The search that finds the connection-test event.
pub fn test_query(cfg: &HecConfig) -> String {
    match cfg.flavor {
        HecFlavor::Splunk => format!(
            "index={} sourcetype={} EventID=0",
            cfg.index.as_ref().map_or("main", SplunkIndex::as_str),
            cfg.sourcetype
        ),
        HecFlavor::LogScale => "EventID=0".to_owned(),
    }
}

/// Sends one connection-test event (`EventID` 0, "SIEM connection test") through the same
/// builder, client and request as the forwarder, and explains the outcome for the page.
///
/// The event keeps the configured sourcetype (in LogScale the sourcetype picks the parser, and
/// in Splunk it may route the event; a special test sourcetype would prove a path the real
/// events never take) and is marked by `EventID` 0, its summary and
/// `details.ConnectionTest: true`. It passes only on HTTP 200 with HEC code 0 (LogScale: or
/// a 200 without a code, as its reply body is not documented), and, with acknowledgement on,
/// only once the event is acknowledged.
pub async fn test_connection(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    subscription_id: Uuid,
    hostname: &str,
) -> Result<TestSuccess, TestFailure> {
    let name = cfg.flavor.short();
    if let Err(err) = cfg.validate() {
        return Err(failure(TestFailureKind::Other, err.to_string()));
    }
    let now = Utc::now();
    let mut probe = wire::test_log(subscription_id, now);
    probe.details["ConnectionTest"] = json!(true);
    let batches = build_batches(cfg, std::slice::from_ref(&probe), hostname, now);
    let Some(batch) = batches.first() else {
        return Err(failure(
            TestFailureKind::Other,
            "The test event could not be built.".into(),
        ));
    };
    let host = cfg.url.host().to_owned();
    let answer = match post_batch(client, egress, cfg, batch).await {
        Ok(answer) => answer,
        Err(err) => return Err(explain_send_error(err, &host, cfg)),
    };
    let success_code = answer.reply.code == Some(0)
        || (cfg.flavor == HecFlavor::LogScale && answer.reply.code.is_none());
    // An unconfirmed acknowledgement turns the 200 into a `Retry`: explain it as such below.
    let acked_or_not = answer.disposition == Disposition::Delivered
        || matches!(answer.ack, AckOutcome::TimedOut { .. });
    if answer.status != 200 || !acked_or_not {
        return Err(explain_status(&answer, cfg));
    }
    if !success_code {
        return Err(failure(
            TestFailureKind::WrongUrl,
            format!("{} answered HTTP 200 without the HTTP Event Collector's success code (code 0). The URL may point at a proxy or at something other than the collector; check the URL.", cfg.url),
        ));
    }
    match answer.ack {
        AckOutcome::NotRequested | AckOutcome::Acknowledged => {}
        AckOutcome::NoAckId => return Err(failure(
            TestFailureKind::Other,
            "Splunk accepted the test event but returned no acknowledgement id: indexer acknowledgement is off on this token. Turn it on for the token in Splunk (Settings → Data inputs → HTTP Event Collector → Edit), or turn it off in these settings.".into(),
        )),
        AckOutcome::Unavailable { reason } => return Err(failure(
            TestFailureKind::Other,
            format!("Splunk accepted the test event but its acknowledgement endpoint cannot be used ({reason}). Turn indexer acknowledgement on for the token in Splunk, or turn it off in these settings."),
        )),
        AckOutcome::TimedOut { .. } => return Err(failure(
            TestFailureKind::Unavailable,
            format!("Splunk accepted the test event but did not confirm within {} seconds that it was indexed. Splunk may be busy; try again in a few minutes, or turn indexer acknowledgement off.", cfg.ack_timing.timeout.as_secs_f32()),
        )),
    }
    let query = test_query(cfg);
    let acked = if answer.ack == AckOutcome::Acknowledged {
        " and confirmed it was indexed"
    } else {
        ""
    };
    Ok(TestSuccess {
        message: format!(
            "{name} accepted the test event{acked}. It can take a minute to appear; search for {query}."
        ),
        query,
        explorer_url: None,
    })
}

fn explain_status(answer: &Answer, cfg: &HecConfig) -> TestFailure {
    let status = answer.status;
    let url = cfg.url.as_str();
    let name = cfg.flavor.short();
    let detail = reply_excerpt(&answer.reply, &answer.body);
    let splunk = cfg.flavor == HecFlavor::Splunk;
    match (status, answer.reply.code) {
        (401 | 403, _) | (400, Some(21 | 22)) => failure(
            TestFailureKind::InvalidCredentials,
            if splunk {
                format!("Splunk refused the HEC token (HTTP {status}{detail}). Copy the Token Value from Settings → Data inputs → HTTP Event Collector, and check that the token is enabled and that HEC is enabled under Global Settings.")
            } else {
                format!("LogScale refused the ingest token (HTTP {status}{detail}). Copy the ingest token from the repository's Settings → Ingest tokens (a personal API token is not an ingest token).")
            },
        ),
        (404, _) => failure(
            TestFailureKind::WrongUrl,
            if splunk {
                format!("The collector URL {url} was not found (HTTP 404). Enter the HEC base URL, for example https://splunk.example.com:8088 (Splunk Enterprise listens on port 8088), or its …/services/collector/event URL.")
            } else {
                format!("The LogScale URL {url} was not found (HTTP 404). Enter the base URL of your LogScale (the ingest URL shown at the top of the Ingest tokens page), or its …/api/v1/ingest/hec URL.")
            },
        ),
        (300..=399, _) => failure(
            TestFailureKind::WrongUrl,
            format!("The collector URL {url} answered with a redirect (HTTP {status}), which is not followed. Enter the final https:// URL."),
        ),
        (400, Some(7)) => failure(
            TestFailureKind::InvalidCredentials,
            format!("{name} refused the index {} for this token (HTTP 400{detail}). Add it to the token's allowed indexes in {name}, or change the Index field (blank uses the token's default index).", cfg.index.as_ref().map_or("(default)", SplunkIndex::as_str)),
        ),
        (400, Some(10)) => failure(
            TestFailureKind::Other,
            format!("This token has indexer acknowledgement turned on, so Splunk requires a data channel (HTTP 400{detail}). Turn on indexer acknowledgement in these settings, or turn it off for the token in Splunk."),
        ),
        (400, Some(11)) => failure(
            TestFailureKind::Other,
            format!("Splunk refused the data channel (HTTP 400{detail}). Check that no proxy between cloudpki and Splunk changes the X-Splunk-Request-Channel header, or turn indexer acknowledgement off."),
        ),
        (400, Some(14)) => failure(
            TestFailureKind::Other,
            format!("Indexer acknowledgement is disabled on this token (HTTP 400{detail}). Turn it on for the token in Splunk, or turn it off in these settings."),
        ),
        (400 | 413, _) => failure(
            TestFailureKind::PayloadRejected,
            format!("{name} rejected the test event (HTTP {status}{detail}). The URL may point at something other than an HTTP Event Collector; check the URL."),
        ),
        (408 | 429 | 500..=599, _) if status != 501 => failure(
            TestFailureKind::Unavailable,
            format!("{name} is temporarily unavailable (HTTP {status}{detail}). The settings may well be right; try again in a few minutes. Events are kept and retried meanwhile."),
        ),
        _ => failure(
            TestFailureKind::Other,
            format!("The collector URL {url} gave an unexpected answer (HTTP {status}{detail}). Check the URL."),
        ),
    }
}

fn explain_send_error(err: SendError, host: &str, cfg: &HecConfig) -> TestFailure {
    let splunk = cfg.flavor == HecFlavor::Splunk;
    explain::send_error(
        err,
        host,
        &Hints {
            address: "the collector URL",
            port: if splunk {
                "the collector's port: 8088 on Splunk Enterprise, 443 on Splunk Cloud"
            } else {
                "port 443"
            },
            refused: "Check that HTTP Event Collector is enabled.",
            closed: "If the URL uses http:// while the collector expects https:// (or the reverse), fix the scheme; otherwise try again in a few minutes.",
            tls: if splunk {
                "Self-signed certificates are refused, including Splunk's default certificate on port 8088: give the collector a publicly trusted certificate, or put it behind a proxy that has one."
            } else {
                "Check that the URL starts with https:// and that LogScale's certificate is publicly trusted."
            },
            timeout: REQUEST_TIMEOUT,
            ..Hints::default()
        },
    )
}

/// Splunk's entry in the registry.
pub static SPLUNK: ProviderSpec = ProviderSpec {
    id: "splunk",
    label: "Splunk",
    fields: &[
        Field::address("splunk_url", "HEC URL", "The HTTP Event Collector address, e.g. https://splunk.example.com:8088 (the …/services/collector URL works too). Its certificate must be publicly trusted."),
        Field::secret("splunk_token", "HEC token", "token", "The token of an HTTP Event Collector input (a GUID)."),
        Field::plain("splunk_index", "Index", FieldKind::Text, "Optional; it must be allowed for the token. Blank uses the token's default index."),
        Field::plain("splunk_sourcetype", "Source type", FieldKind::Text, "Defaults to ezca:audit.").with_default("ezca:audit"),
        Field::plain("splunk_source", "Source", FieldKind::Text, "Optional; defaults to cloudpki."),
        Field::plain("splunk_host", "Host", FieldKind::Text, "Optional; defaults to this server's name."),
        Field::plain("splunk_ack", "Use indexer acknowledgement", FieldKind::Check, "Turn on only if the token has indexer acknowledgement enabled: events then count as delivered once Splunk confirms they are indexed."),
    ],
    parse: parse_splunk,
    build: build_splunk,
    form: form_splunk,
};

/// LogScale's entry in the registry (its HEC-compatible endpoint).
pub static LOGSCALE: ProviderSpec = ProviderSpec {
    id: "logscale",
    label: "CrowdStrike Falcon LogScale",
    fields: &[
        Field::address("logscale_url", "Ingest URL", "The address of your LogScale cluster, e.g. https://cloud.community.humio.com (events go to its HEC-compatible endpoint /api/v1/ingest/hec)."),
        Field::secret("logscale_token", "Ingest token", "token", "An ingest token of the repository that receives the events."),
    ],
    parse: parse_logscale,
    build: build_logscale,
    form: form_logscale,
};

/// What is stored for Splunk or LogScale (LogScale uses the URL only).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub url: Option<HecUrl>,
    pub index: Option<SplunkIndex>,
    pub sourcetype: Option<SourceType>,
    pub source: Option<HecSource>,
    pub host: Option<HecHost>,
    pub ack: bool,
}

fn parse_splunk(check: &mut FormCheck<'_>) -> Value {
    parse_hec(check, HecFlavor::Splunk)
}

fn parse_logscale(check: &mut FormCheck<'_>) -> Value {
    parse_hec(check, HecFlavor::LogScale)
}

fn build_splunk(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, String> {
    build_hec(HecFlavor::Splunk, settings, secrets, context)
}

fn build_logscale(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, String> {
    build_hec(HecFlavor::LogScale, settings, secrets, context)
}

fn form_splunk(settings: &Value) -> FormValues {
    form_hec("splunk", settings)
}

fn form_logscale(settings: &Value) -> FormValues {
    form_hec("logscale", settings)
}

fn parse_hec(check: &mut FormCheck<'_>, flavor: HecFlavor) -> Value {
    let prefix = check.provider().id();
    let url_field = format!("{prefix}_url");
    let token_field = format!("{prefix}_token");
    let egress = check.egress;
    let url = check.required(&url_field, "Enter the HEC URL.", |text| {
        let url = HecUrl::parse(text).map_err(|e| e.to_string())?;
        egress
            .check_url(&url.endpoint(flavor.event_path()))
            .map_err(|e| e.to_string())?;
        Ok(url)
    });
    let missing = if flavor == HecFlavor::Splunk {
        "Enter the HEC token (Settings → Data inputs → HTTP Event Collector in Splunk)."
    } else {
        "Enter the ingest token of the LogScale repository."
    };
    check.secret(&token_field, missing, |raw| {
        let token = parse_token(flavor, raw)?;
        let (text, hint) = (token.expose_secret().to_owned(), token.last4().to_owned());
        Ok((token, text, hint))
    });
    let mut settings = Settings {
        url,
        ..Settings::default()
    };
    if flavor == HecFlavor::Splunk {
        settings.index = check
            .optional("splunk_index", |t| {
                SplunkIndex::parse_optional(t).map_err(|e| e.to_string())
            })
            .flatten();
        settings.sourcetype = Some(
            SourceType::parse_or_default(&check.get("splunk_sourcetype"))
                .map_err(|e| check.error("splunk_sourcetype", e.to_string()))
                .unwrap_or_default(),
        );
        settings.source = check.optional("splunk_source", |t| {
            HecSource::parse(t).map_err(|e| e.to_string())
        });
        settings.host = check.optional("splunk_host", |t| {
            HecHost::parse(t).map_err(|e| e.to_string())
        });
        settings.ack = check.ticked("splunk_ack");
    }
    stored(&settings)
}

fn parse_token(flavor: HecFlavor, raw: &str) -> Result<HecToken, String> {
    if flavor == HecFlavor::Splunk {
        HecToken::parse_splunk(raw)
    } else {
        HecToken::parse_logscale(raw)
    }
    .map_err(|e| e.to_string())
}

fn build_hec(
    flavor: HecFlavor,
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, String> {
    let settings: Settings = settings_of(settings)?;
    let token = parse_token(flavor, needed(secrets.get("token"), "the token")?)?;
    let mut config = HecConfig::new(flavor, needed(settings.url, "the HEC URL")?, token);
    config.index = settings.index;
    config.sourcetype = settings.sourcetype.unwrap_or_default();
    config.source = settings.source;
    config.host = settings.host;
    config.ack = settings.ack;
    config.validate().map_err(|e| e.to_string())?;
    Ok(Box::new(HecDestination {
        config,
        hostname: context.hostname.to_owned(),
    }))
}

fn form_hec(prefix: &str, settings: &Value) -> FormValues {
    let settings: Settings = settings_of(settings).unwrap_or_default();
    let mut form = FormValues::new();
    let mut put = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            form.insert(format!("{prefix}_{name}"), value.to_owned());
        }
    };
    put("url", settings.url.as_ref().map(HecUrl::as_str));
    put("index", settings.index.as_ref().map(SplunkIndex::as_str));
    put(
        "sourcetype",
        settings.sourcetype.as_ref().map(SourceType::as_str),
    );
    put("source", settings.source.as_ref().map(HecSource::as_str));
    put("host", settings.host.as_ref().map(HecHost::as_str));
    put("ack", settings.ack.then_some("on"));
    form
}

/// A configured HEC destination (Splunk or LogScale), as the forwarder holds it.
#[derive(Debug, Clone)]
pub struct HecDestination {
    pub config: HecConfig,
    /// The `host` of every event unless the config sets one: this deployment's name.
    pub hostname: String,
}

impl SiemDestination for HecDestination {
    fn provider(&self) -> &'static str {
        self.config.flavor.label()
    }

    fn build_batches(&self, logs: &[AuditLog], now: DateTime<Utc>) -> Vec<Batch> {
        build_batches(&self.config, logs, &self.hostname, now)
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Disposition, SendError>> {
        Box::pin(send_batch(client, egress, &self.config, batch))
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

    const GUID: &str = "12345678-9abc-def0-1234-56789abcdef0";

    fn at(h: u32, m: u32, s: u32, ms: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 4, h, m, s)
            .single()
            .expect("valid time")
            + chrono::Duration::milliseconds(i64::from(ms))
    }

    fn config(flavor: HecFlavor) -> HecConfig {
        HecConfig::new(
            flavor,
            HecUrl::parse("https://splunk.example.com:8088").expect("url"),
            HecToken::parse_splunk(GUID).expect("token"),
        )
    }

    fn audit(event: u32, details: Value) -> AuditLog {
        let mut log = audit_with(
            event,
            Uuid::parse_str("11111111-2222-4333-8444-555555555555").expect("uuid"),
            Uuid::parse_str("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee").expect("uuid"),
            at(10, 0, 0, 123),
            details,
        );
        log.recorded_at = at(10, 0, 1, 0);
        log
    }

    #[test]
    fn one_event_becomes_exactly_this_envelope() {
        let mut cfg = config(HecFlavor::Splunk);
        cfg.index = Some(SplunkIndex::parse("pki").expect("index"));
        let log = audit(4888, json!({"template": "Web Server"}));
        let batches = build_batches(
            &cfg,
            std::slice::from_ref(&log),
            "pki.example.com",
            at(11, 0, 0, 0),
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].event_uuids, [log.uuid]);
        let expected = concat!(
            r#"{"time":1741082400.123,"host":"pki.example.com","source":"cloudpki","#,
            r#""sourcetype":"ezca:audit","index":"pki","event":{"EventID":4888,"#,
            r#""EventSummary":"Certificate request denied due to insufficient permissions","#,
            r#""Criticality":"High","SubscriptionId":"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee","#,
            r#""EventUuid":"11111111-2222-4333-8444-555555555555","Sequence":0,"#,
            r#""OccurredAt":"2025-03-04T10:00:00.123Z","Actor":"alice@example.com","#,
            r#""message":"Certificate request denied due to insufficient permissions (Event ID 4888) by alice@example.com","#,
            r#""details":{"template":"Web Server"}}}"#
        );
        assert_eq!(String::from_utf8_lossy(&batches[0].body), expected);
    }

    #[test]
    fn configured_host_and_source_win_and_index_is_omitted_when_unset() {
        let mut cfg = config(HecFlavor::Splunk);
        cfg.host = Some(HecHost::parse("pki-prod").expect("host"));
        cfg.source = Some(HecSource::parse("ezca").expect("source"));
        let mut log = audit(4870, json!({}));
        log.actor = None;
        let value: Value = serde_json::from_slice(&envelope(&cfg, &log, "ignored")).expect("json");
        assert_eq!(value["host"], "pki-prod");
        assert_eq!(value["source"], "ezca");
        assert!(value.get("index").is_none());
        assert_eq!(value["event"]["Actor"], Value::Null);
        assert_eq!(value["event"]["Criticality"], "Medium");
        assert_eq!(
            value["event"]["message"],
            "A certificate has been revoked (Event ID 4870)"
        );
        assert_eq!(value["event"], event_object(&log));
    }

    #[test]
    fn whole_seconds_are_still_a_number() {
        let mut log = audit(12, json!({}));
        log.occurred_at = at(10, 0, 0, 0);
        let value: Value =
            serde_json::from_slice(&envelope(&config(HecFlavor::Splunk), &log, "h")).expect("json");
        assert_eq!(value["time"].as_f64(), Some(1_741_082_400.0));
    }

    #[test]
    fn envelopes_are_newline_separated_and_split_at_the_event_count() {
        let cfg = config(HecFlavor::Splunk);
        let logs: Vec<AuditLog> = (0..2500)
            .map(|_| {
                let mut log = audit(4887, json!({}));
                log.uuid = Uuid::new_v4();
                log
            })
            .collect();
        let batches = build_batches(&cfg, &logs, "h", at(10, 0, 0, 0));
        let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let uuids: Vec<Uuid> = batches.iter().flat_map(|b| b.event_uuids.clone()).collect();
        assert_eq!(uuids, logs.iter().map(|l| l.uuid).collect::<Vec<_>>());
        for batch in &batches {
            assert!(!batch.body.starts_with(b"["));
            let lines: Vec<Value> = batch
                .body
                .split(|b| *b == b'\n')
                .map(|line| serde_json::from_slice(line).expect("one envelope per line"))
                .collect();
            assert_eq!(lines.len(), batch.len());
            for (line, uuid) in lines.iter().zip(&batch.event_uuids) {
                assert_eq!(line["event"]["EventUuid"], uuid.to_string());
            }
        }
        assert!(build_batches(&cfg, &[], "h", at(10, 0, 0, 0)).is_empty());
    }

    #[test]
    fn batches_stay_under_one_megabyte() {
        let cfg = config(HecFlavor::Splunk);
        let logs: Vec<AuditLog> = (0..7)
            .map(|_| audit(4887, json!({ "blob": "y".repeat(300_000) })))
            .collect();
        let batches = build_batches(&cfg, &logs, "h", at(10, 0, 0, 0));
        assert_eq!(
            batches.iter().map(Batch::len).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        for batch in &batches {
            assert!(batch.body.len() < MAX_BATCH_BYTES, "{}", batch.body.len());
        }
    }

    #[test]
    fn an_event_over_the_limit_is_truncated_never_dropped() {
        let cfg = config(HecFlavor::Splunk);
        let log = audit(4887, json!({ "blob": "x\"".repeat(600_000) }));
        let batches = build_batches(&cfg, std::slice::from_ref(&log), "h", at(10, 0, 0, 0));
        assert_eq!(batches.len(), 1);
        let size = batches[0].body.len();
        assert!(size < MAX_BATCH_BYTES, "{size}");
        assert!(
            size > MAX_BATCH_BYTES - 1000,
            "uses the room it has: {size}"
        );
        let value: Value = serde_json::from_slice(&batches[0].body).expect("json");
        assert_eq!(value["event"]["Truncated"], true);
        assert_eq!(value["event"]["EventUuid"], log.uuid.to_string());
        assert!(value["event"]["details"]
            .as_str()
            .expect("details became text")
            .ends_with(TRUNCATION_MARKER));

        let mut huge_actor = audit(4887, json!({}));
        huge_actor.actor = Some("a".repeat(2_000_000));
        let text = envelope(&cfg, &huge_actor, "h");
        assert!(text.len() < MAX_BATCH_BYTES);
        let value: Value = serde_json::from_slice(&text).expect("json");
        assert_eq!(value["event"]["Truncated"], true);
    }

    #[test]
    fn flavours_differ_in_path_auth_label_and_ack() {
        let token = HecToken::parse_splunk(GUID).expect("token");
        assert_eq!(
            HecFlavor::Splunk.authorization(&token),
            format!("Splunk {GUID}")
        );
        assert_eq!(
            HecFlavor::LogScale.authorization(&token),
            format!("Bearer {GUID}")
        );
        assert_eq!(HecFlavor::Splunk.event_path(), "/services/collector/event");
        assert_eq!(HecFlavor::LogScale.event_path(), "/api/v1/ingest/hec");
        assert_eq!(HecFlavor::LogScale.label(), "CrowdStrike Falcon LogScale");
        let mut cfg = config(HecFlavor::LogScale);
        cfg.ack = true;
        assert_eq!(cfg.validate(), Err(HecConfigError::AckNotSupported));
        cfg.flavor = HecFlavor::Splunk;
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn test_queries_find_event_zero() {
        let mut cfg = config(HecFlavor::Splunk);
        assert_eq!(
            test_query(&cfg),
            "index=main sourcetype=ezca:audit EventID=0"
        );
        cfg.index = Some(SplunkIndex::parse("pki").expect("index"));
        assert_eq!(
            test_query(&cfg),
            "index=pki sourcetype=ezca:audit EventID=0"
        );
        cfg.flavor = HecFlavor::LogScale;
        assert_eq!(test_query(&cfg), "EventID=0");
    }

    #[test]
    fn replies_are_parsed_leniently() {
        let reply = HecReply::parse(r#"{"text":"Success","code":0,"ackId":7}"#);
        assert_eq!((reply.code, reply.ack_id), (Some(0), Some(7)));
        let reply =
            HecReply::parse(r#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#);
        assert_eq!(reply.invalid_event_number, Some(3));
        let reply =
            HecReply::parse(r#"{"text":"Invalid data format; invalid-event-number: 12","code":6}"#);
        assert_eq!(reply.invalid_event_number, Some(12));
        let reply = HecReply::parse(r#"{"code":6,"invalid-event-number":"4"}"#);
        assert_eq!(reply.invalid_event_number, Some(4));
        assert_eq!(HecReply::parse("<html>"), HecReply::default());
    }

    use crate::siem::test_table::{audit_with, kind, Expect};

    fn reply(code: i64, text: &str) -> String {
        json!({ "text": text, "code": code }).to_string()
    }

    #[test]
    fn classify_maps_every_row_of_the_reference_table() {
        use Expect::*;
        let code6_field = r#"{"text":"Invalid data format","code":6,"invalid-event-number":2}"#;
        let code6_text = r#"{"text":"Invalid data format; invalid-event-number: 0","code":6}"#;
        let table: Vec<(u16, Option<&str>, String, Expect)> = vec![
            (200, None, reply(0, "Success"), Delivered),
            (
                200,
                None,
                r#"{"text":"Success","code":0,"ackId":1}"#.into(),
                Delivered,
            ),
            (200, None, String::new(), Delivered),
            (200, None, r#"{"ackId":3}"#.into(), Delivered),
            (204, None, String::new(), Delivered),
            (200, None, reply(17, "HEC is healthy"), AuthFailed),
            (200, None, "<html>login</html>".into(), AuthFailed),
            (301, None, String::new(), AuthFailed),
            (307, None, String::new(), AuthFailed),
            (400, None, reply(5, "No data"), AuthFailed),
            (400, None, code6_field.into(), Partial(2)),
            (400, None, code6_text.into(), Partial(0)),
            (400, None, reply(6, "Invalid data format"), Rejected),
            (400, None, reply(7, "Incorrect index"), AuthFailed),
            (400, None, reply(10, "Data channel is missing"), AuthFailed),
            (400, None, reply(11, "Invalid data channel"), AuthFailed),
            (400, None, reply(12, "Event field is required"), AuthFailed),
            (
                400,
                None,
                reply(13, "Event field cannot be blank"),
                AuthFailed,
            ),
            (400, None, reply(14, "ACK is disabled"), AuthFailed),
            (
                400,
                None,
                reply(15, "Error in handling indexed fields"),
                AuthFailed,
            ),
            (
                400,
                None,
                reply(16, "Query string authorization is not enabled"),
                AuthFailed,
            ),
            (400, None, reply(21, "Invalid token"), AuthFailed),
            (400, None, reply(22, "Token disabled"), AuthFailed),
            (400, None, "bad".into(), Rejected),
            (401, None, reply(2, "Token is required"), AuthFailed),
            (401, None, reply(3, "Invalid authorization"), AuthFailed),
            (403, None, reply(1, "Token disabled"), AuthFailed),
            (403, None, reply(4, "Invalid token"), AuthFailed),
            (404, None, String::new(), AuthFailed),
            (405, None, String::new(), AuthFailed),
            (408, None, String::new(), Retry(None)),
            (413, None, String::new(), Split),
            (429, Some("30"), String::new(), Retry(Some(30))),
            (429, Some("soon"), String::new(), Retry(None)),
            (500, None, reply(8, "Internal server error"), Retry(None)),
            (501, None, String::new(), AuthFailed),
            (502, Some("5"), String::new(), Unconfirmed(Some(5))),
            (
                503,
                Some("120"),
                reply(9, "Server is busy"),
                Retry(Some(120)),
            ),
            (
                503,
                None,
                reply(18, "HEC is unhealthy, queues are full"),
                Retry(None),
            ),
            (
                503,
                None,
                reply(19, "HEC is unhealthy, ack service unavailable"),
                Retry(None),
            ),
            (
                503,
                None,
                reply(20, "HEC is unhealthy, queues are full"),
                Retry(None),
            ),
            (504, None, String::new(), Unconfirmed(None)),
            (100, None, String::new(), Retry(None)),
            (600, None, String::new(), Retry(None)),
        ];
        for flavor in [HecFlavor::Splunk, HecFlavor::LogScale] {
            for (status, retry_after, body, expected) in &table {
                let got = classify(flavor, *status, *retry_after, body);
                assert_eq!(
                    &kind(&got),
                    expected,
                    "{flavor:?} {status} {body} gave {got:?}"
                );
            }
        }
        let Disposition::AuthFailed { reason } =
            classify(HecFlavor::Splunk, 400, None, &reply(7, "Incorrect index"))
        else {
            panic!("code 7 is a configuration error");
        };
        assert!(
            reason.contains("allowed indexes") && reason.contains("Incorrect index"),
            "{reason}"
        );
        let Disposition::AuthFailed { reason } = classify(HecFlavor::LogScale, 403, None, "")
        else {
            panic!("403 is AuthFailed");
        };
        assert!(reason.starts_with("LogScale refused the token"), "{reason}");
    }
}
