//! Delivery of audit logs to SIEMs: one module per provider behind [`SiemDestination`].
//!
//! A provider owns three things and nothing else: a pure request builder (audit logs → request
//! batches, unit-tested on bytes), a response classifier (status → [`Disposition`],
//! table-tested), and the connection test, which sends through the same client and code path
//! as the forwarder so that a green test means the worker gets through too. Retry timing,
//! parking, retention and emails belong to the forwarder, which acts on [`Disposition`] and
//! [`SendError`] alone.
//!
//! Every outbound call goes through the client of [`egress::http_client`] and calls
//! [`egress::EgressPolicy::check_url`] first.

pub mod datadog;
pub mod egress;
pub mod explain;
pub mod hec;
pub mod kafka;
pub mod oauth;
pub mod provider;
pub mod sentinel;
pub mod syslog;
pub mod webhook;
pub mod wire;

use std::error::Error as StdError;
use std::io::{self, Write};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::events::EventId;
use egress::{find_resolve_denied, BoxFuture, EgressError, EgressPolicy};
pub use provider::Provider;

/// Every provider, in the order the settings page offers them. Adding a provider is a module
/// and a line here.
pub static PROVIDERS: &[&provider::ProviderSpec] = &[
    &datadog::SPEC,
    &hec::SPLUNK,
    &sentinel::SPEC,
    &hec::LOGSCALE,
    &webhook::SPEC,
    &kafka::SPEC,
    &syslog::SPEC,
];

/// One recorded audit event, as the forwarder hands it to a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditLog {
    /// Stable id of the event; sent as `EventUuid` so the SIEM side can deduplicate.
    pub uuid: Uuid,
    /// Its number in the subscription's log (`Sequence`; 0 for a connection test).
    pub sequence: i64,
    pub subscription_id: Uuid,
    pub event_id: EventId,
    /// When the PKI core says it happened.
    pub occurred_at: DateTime<Utc>,
    /// When cloudpki committed it.
    pub recorded_at: DateTime<Utc>,
    pub actor: Option<String>,
    pub details: serde_json::Value,
    /// Its place in the subscription's hash chain (`PrevHash`, `Hash`); `None` for events
    /// recorded before the chain, and for the connection test and heartbeat logs.
    pub chain: Option<ChainLink>,
}

/// An event's `PrevHash` and `Hash`, lowercase hex (see [`crate::chain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The previous event's `Hash` (64 zeros for the first).
    pub prev_hash: String,
    /// This event's `Hash`.
    pub hash: String,
}

impl ChainLink {
    /// From the stored digests, when the event has both.
    pub fn from_stored(prev_hash: Option<&[u8]>, hash: Option<&[u8]>) -> Option<Self> {
        Some(Self {
            prev_hash: hex::encode(prev_hash?),
            hash: hex::encode(hash?),
        })
    }
}

/// What the forwarder should do with the events of a batch after the SIEM answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted: mark the events delivered.
    Delivered,
    /// Transient (408, 429, 5xx, …): retry later, not before `after` if the SIEM said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// No verdict, and the SIEM may have stored the batch (a gateway's 502 or 504, an indexer
    /// acknowledgement that never came, a Kafka batch of which some records were acknowledged):
    /// retry like [`Disposition::Retry`], and count the resend as a possible duplicate.
    Unconfirmed {
        after: Option<Duration>,
        reason: String,
    },
    /// Payload too large (413): split the batch and resend the halves.
    SplitBatch,
    /// The payload was refused (400): isolate the offending event by splitting, then park it
    /// with this reason shown in the portal. Never blocks the other events.
    Rejected { reason: String },
    /// The destination is misconfigured (401/403 key, 404 URL, 3xx redirect): keep every event
    /// queued, mark the destination failing (email the admins), retry slowly.
    AuthFailed { reason: String },
    /// The SIEM stored the first `accepted` events of the batch (in [`Batch::event_uuids`]
    /// order), refused the next one for good (park it with `reason`) and did not process the
    /// rest (send them again). Never resend the accepted ones (Splunk HEC code 6).
    PartialAccept { accepted: usize, reason: String },
    /// The SIEM acknowledged the first `acknowledged` events of the batch one by one (in
    /// [`Batch::event_uuids`] order; RELP), then the exchange broke: those are delivered. The
    /// rest may have been stored: retry them like [`Disposition::Unconfirmed`] and count their
    /// resend as possible duplicates.
    PartlyAcknowledged { acknowledged: usize, reason: String },
    /// The destination says it is gone for good (webhook 410): stop sending, turn export off,
    /// keep the events queued, and tell the admins.
    Gone { reason: String },
}

/// A transport failure: the SIEM gave no HTTP answer. All but [`SendError::EgressDenied`] are
/// worth retrying with backoff; that one needs a settings or policy change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("The SIEM host name could not be resolved ({detail}); check the spelling of the URL and that this server can resolve it.")]
    Dns { detail: String },
    #[error("The SIEM host refused the connection ({detail}); check the URL's host and port and that the service is running.")]
    ConnectionRefused { detail: String },
    #[error("The SIEM closed the connection without answering ({detail}); it may be overloaded or a proxy dropped the request. Delivery will be retried.")]
    ConnectionClosed { detail: String },
    #[error("The TLS (https) connection to the SIEM failed ({detail}); check that the URL points at an https endpoint with a valid, publicly trusted certificate.")]
    Tls { detail: String },
    #[error("The SIEM did not answer in time; it may be unreachable from this server (firewall) or overloaded. Delivery will be retried.")]
    Timeout,
    #[error("Refused by the outbound (egress) policy: {reason}")]
    EgressDenied { reason: String },
    #[error("Sending to the SIEM failed ({detail}).")]
    Other { detail: String },
}

impl SendError {
    /// Whether backoff and retry can help (everything except a policy refusal).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SendError::EgressDenied { .. })
    }

    /// Classifies a reqwest failure by inspecting its cause chain.
    pub fn from_reqwest(err: &reqwest::Error) -> SendError {
        if let Some(denied) = find_resolve_denied(err) {
            return SendError::EgressDenied {
                reason: denied.to_string(),
            };
        }
        let chain = cause_chain(err);
        let detail = chain
            .last()
            .map(|e| e.to_string())
            .unwrap_or_else(|| err.to_string());
        if err.is_timeout() || io_kind(&chain, io::ErrorKind::TimedOut) {
            return SendError::Timeout;
        }
        let text = chain
            .iter()
            .map(|e| e.to_string().to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(": ");
        if io_kind(&chain, io::ErrorKind::ConnectionRefused) {
            return SendError::ConnectionRefused { detail };
        }
        if text.contains("dns error")
            || text.contains("lookup address")
            || text.contains("name or service not known")
            || text.contains("no dns record")
        {
            return SendError::Dns { detail };
        }
        // rustls errors arrive wrapped in io::Error(InvalidData) during the handshake.
        if text.contains("certificate")
            || text.contains("tls")
            || text.contains("handshake")
            || text.contains("corrupt message")
            || (err.is_connect() && io_kind(&chain, io::ErrorKind::InvalidData))
        {
            return SendError::Tls { detail };
        }
        if io_kind(&chain, io::ErrorKind::ConnectionReset)
            || io_kind(&chain, io::ErrorKind::ConnectionAborted)
            || io_kind(&chain, io::ErrorKind::BrokenPipe)
            || io_kind(&chain, io::ErrorKind::UnexpectedEof)
            || text.contains("connection closed")
            || text.contains("incomplete message")
        {
            return SendError::ConnectionClosed { detail };
        }
        SendError::Other { detail }
    }
}

impl From<EgressError> for SendError {
    fn from(err: EgressError) -> Self {
        SendError::EgressDenied {
            reason: err.to_string(),
        }
    }
}

fn cause_chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut chain = Vec::new();
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = next {
        chain.push(e);
        next = e.source();
    }
    chain
}

fn io_kind(chain: &[&(dyn StdError + 'static)], kind: io::ErrorKind) -> bool {
    chain
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == kind)
}

/// Serialized events ready to send: a JSON array body and the events it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `AuditLog::uuid` of each event in the body, in order.
    pub event_uuids: Vec<Uuid>,
    /// The uncompressed request body.
    pub body: Vec<u8>,
}

impl Batch {
    /// The body compressed with gzip, as sent with `Content-Encoding: gzip`. The fastest level:
    /// JSON logs still shrink about tenfold, and compression was the worker's largest cost at
    /// the default level (the profile in the README).
    pub fn gzip_body(&self) -> io::Result<Vec<u8>> {
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(self.body.len() / 4),
            flate2::Compression::fast(),
        );
        encoder.write_all(&self.body)?;
        encoder.finish()
    }

    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.event_uuids.len()
    }

    /// Whether the batch carries no event.
    pub fn is_empty(&self) -> bool {
        self.event_uuids.is_empty()
    }
}

/// A green connection test: where to look for the test log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSuccess {
    /// A search that finds the test log, e.g. `service:EZCA @EventID:0`.
    pub query: String,
    /// A link to the SIEM's search page with that query, when the site is known.
    pub explorer_url: Option<String>,
    /// One sentence for the page's status element.
    pub message: String,
}

/// What went wrong in a connection test, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFailureKind {
    InvalidCredentials,
    WrongUrl,
    Dns,
    ConnectionRefused,
    ConnectionClosed,
    Tls,
    Timeout,
    PayloadRejected,
    Unavailable,
    EgressDenied,
    Other,
}

/// A red connection test: a cause and a plain-language message (cause and fix) for the page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TestFailure {
    pub kind: TestFailureKind,
    pub message: String,
}

impl From<SendError> for TestFailure {
    fn from(err: SendError) -> Self {
        let kind = match err {
            SendError::Dns { .. } => TestFailureKind::Dns,
            SendError::ConnectionRefused { .. } => TestFailureKind::ConnectionRefused,
            SendError::ConnectionClosed { .. } => TestFailureKind::ConnectionClosed,
            SendError::Tls { .. } => TestFailureKind::Tls,
            SendError::Timeout => TestFailureKind::Timeout,
            SendError::EgressDenied { .. } => TestFailureKind::EgressDenied,
            SendError::Other { .. } => TestFailureKind::Other,
        };
        TestFailure {
            kind,
            message: err.to_string(),
        }
    }
}

/// One configured SIEM destination of one provider.
///
/// Object-safe so the forwarder can hold `Box<dyn SiemDestination>` built from stored settings.
pub trait SiemDestination: Send + Sync {
    /// The provider's name as the portal shows it, e.g. `Datadog`.
    fn provider(&self) -> &'static str;

    /// Packs logs into request batches within the provider's limits (pure).
    fn build_batches(&self, logs: &[AuditLog], now: DateTime<Utc>) -> Vec<Batch>;

    /// Sends one batch and classifies the answer.
    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Disposition, SendError>>;

    /// Sends one connection-test event (id [`EventId::CONNECTION_TEST`]) the same way.
    fn test_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        subscription_id: Uuid,
    ) -> BoxFuture<'a, Result<TestSuccess, TestFailure>>;
}

/// Most bytes of a SIEM's answer body that are read (for error excerpts and acknowledgements);
/// the rest is never read, so a hostile endpoint cannot make us buffer without bound.
pub const MAX_RESPONSE_BODY_BYTES: usize = 64 * 1024;

/// Reads at most [`MAX_RESPONSE_BODY_BYTES`] of an answer's body as text (lossy UTF-8); a
/// body that fails midway yields what arrived.
pub async fn read_body_capped(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// What a provider says about the answers of its HTTP intake that [`classify_http`] words for
/// it.
pub struct HttpWording<'a> {
    /// Who answered, as a sentence starts with it: "Datadog", "The webhook receiver".
    pub name: &'a str,
    /// Appended to each reason: an excerpt of the body, or the SIEM's own error.
    pub detail: &'a str,
    /// The whole reason for a redirect (it is never followed).
    pub redirect: String,
    /// What a 429 is called after the name: "is rate limiting".
    pub too_many: &'a str,
    /// The reason for a 4xx the provider does not name itself: the destination's fault
    /// (failing); `None`: an unexpected answer, retried.
    pub other_4xx: Option<String>,
}

/// The status → [`Disposition`] skeleton every HTTP provider shares: `specific` answers the
/// statuses the provider words itself (400, 401, 403, 404, 410 …); then 2xx delivered, 3xx a
/// settings problem, 413 split, a gateway's 502/504 maybe stored, 408/429/5xx retried after a
/// clamped `Retry-After`, any other 4xx as `other_4xx` says, anything else retried.
pub fn classify_http(
    status: u16,
    retry_after: Option<&str>,
    wording: HttpWording<'_>,
    specific: impl FnOnce(u16) -> Option<Disposition>,
) -> Disposition {
    let HttpWording {
        name,
        detail,
        redirect,
        too_many,
        other_4xx,
    } = wording;
    let after = || retry_after.and_then(|value| parse_retry_after(value, Utc::now()));
    if let Some(disposition) = specific(status) {
        return disposition;
    }
    match status {
        200..=299 => Disposition::Delivered,
        300..=399 => Disposition::AuthFailed { reason: redirect },
        413 => Disposition::SplitBatch,
        502 | 504 => gateway_gave_up(status, after(), name, detail),
        408 | 429 | 500..=599 => Disposition::Retry {
            after: after(),
            reason: match status {
                408 => format!("{name} timed out reading the request (HTTP 408){detail}."),
                429 => format!("{name} {too_many} (HTTP 429){detail}."),
                _ => format!("{name} is unavailable (HTTP {status}){detail}."),
            },
        },
        400..=499 if other_4xx.is_some() => Disposition::AuthFailed {
            reason: other_4xx.unwrap_or_default(),
        },
        _ => Disposition::Retry {
            after: after(),
            reason: format!("{name} answered an unexpected HTTP {status}{detail}."),
        },
    }
}

/// A gateway's 502 or 504: the gateway gave up on the SIEM behind it, which may still have
/// stored the batch, so the resend is counted as a possible duplicate.
pub fn gateway_gave_up(
    status: u16,
    after: Option<Duration>,
    name: &str,
    detail: &str,
) -> Disposition {
    Disposition::Unconfirmed {
        after,
        reason: format!("A gateway in front of {name} answered HTTP {status}{detail}; {name} may have stored the events, so they are sent again and counted as possible duplicates."),
    }
}

/// Longest `Retry-After` honoured; a larger one is capped so a destination is retried hourly.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` (delay in seconds, or an HTTP date), capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = DateTime::parse_from_rfc2822(value)
            .ok()?
            .with_timezone(&Utc);
        at.signed_duration_since(now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The table tests of every provider's `classify`: the kind of disposition a row expects.
#[cfg(test)]
pub(crate) mod test_table {
    use chrono::{DateTime, Utc};
    use serde_json::Value;
    use uuid::Uuid;

    use super::{AuditLog, Disposition};
    use crate::domain::events::EventId;

    /// An event by alice@example.com with fixed ids, for wire-format tests.
    pub fn audit_with(
        event: u32,
        uuid: Uuid,
        subscription_id: Uuid,
        occurred_at: DateTime<Utc>,
        details: Value,
    ) -> AuditLog {
        AuditLog {
            sequence: 0,
            uuid,
            subscription_id,
            event_id: EventId::parse(event).expect("catalog id"),
            occurred_at,
            recorded_at: occurred_at,
            actor: Some("alice@example.com".into()),
            details,
            chain: None,
        }
    }

    /// [`audit_with`] with fresh ids.
    pub fn audit(event: u32, occurred_at: DateTime<Utc>, details: Value) -> AuditLog {
        audit_with(event, Uuid::new_v4(), Uuid::new_v4(), occurred_at, details)
    }

    #[derive(Debug, PartialEq)]
    pub enum Expect {
        Delivered,
        AuthFailed,
        Rejected,
        Partial(usize),
        Split,
        Gone,
        Retry(Option<u64>),
        Unconfirmed(Option<u64>),
        PartlyAcknowledged(usize),
    }

    /// Checks an HTTP provider's `classify(status, Retry-After, body)` against a table of
    /// statuses, `Retry-After` values and the kinds they must give (empty bodies).
    pub fn assert_classifies(
        classify: impl Fn(u16, Option<&str>, &str) -> Disposition,
        table: &[(u16, Option<&str>, Expect)],
    ) {
        for (status, retry_after, expected) in table {
            let got = classify(*status, *retry_after, "");
            assert_eq!(
                &kind(&got),
                expected,
                "{status} {retry_after:?} gave {got:?}"
            );
        }
    }

    pub fn kind(d: &Disposition) -> Expect {
        match d {
            Disposition::Delivered => Expect::Delivered,
            Disposition::AuthFailed { .. } => Expect::AuthFailed,
            Disposition::Rejected { .. } => Expect::Rejected,
            Disposition::PartialAccept { accepted, .. } => Expect::Partial(*accepted),
            Disposition::SplitBatch => Expect::Split,
            Disposition::Gone { .. } => Expect::Gone,
            Disposition::Retry { after, .. } => Expect::Retry(after.map(|a| a.as_secs())),
            Disposition::Unconfirmed { after, .. } => {
                Expect::Unconfirmed(after.map(|a| a.as_secs()))
            }
            Disposition::PartlyAcknowledged { acknowledged, .. } => {
                Expect::PartlyAcknowledged(*acknowledged)
            }
        }
    }
}
