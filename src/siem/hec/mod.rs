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
mod tests;
