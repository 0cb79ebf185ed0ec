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
use crate::siem::egress::{BoxFuture, EgressPolicy, REQUEST_TIMEOUT};
use crate::siem::explain::{self, failure, Hints};
use crate::siem::provider::{
    needed, settings_of, stored, BuildError, Context, Field, FieldKind, FormCheck, FormValues,
    ProviderSpec, Secrets, RANGE_EVENTS,
};
use crate::siem::wire::{self, Framing};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};

mod health;
mod request;
mod service;

pub use health::*;
pub use request::*;
pub use service::*;

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
    generated: None,
    range_events: RANGE_EVENTS,
    explorer: None,
    actions: &[],
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
    generated: None,
    range_events: RANGE_EVENTS,
    explorer: None,
    actions: &[],
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
) -> Result<Box<dyn SiemDestination>, BuildError> {
    build_hec(HecFlavor::Splunk, settings, secrets, context)
}

fn build_logscale(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, BuildError> {
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
) -> Result<Box<dyn SiemDestination>, BuildError> {
    let settings: Settings = settings_of(settings)?;
    let token = parse_token(flavor, needed(secrets.get("token"), "the token")?)
        .map_err(BuildError::Invalid)?;
    let mut config = HecConfig::new(flavor, needed(settings.url, "the HEC URL")?, token);
    config.index = settings.index;
    config.sourcetype = settings.sourcetype.unwrap_or_default();
    config.source = settings.source;
    config.host = settings.host;
    config.ack = settings.ack;
    config.validate().map_err(BuildError::invalid)?;
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
