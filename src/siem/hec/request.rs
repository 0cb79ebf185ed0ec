//! The request: HEC envelopes (`time`, `host`, `source`, `sourcetype`, `index`, `event`), cut to
//! fit, packed into batches under the collector limits.

use super::*;

/// The `event` object of one audit event, in a stable field order.
#[derive(Debug, Clone, Serialize)]
pub(super) struct EventFields<'a> {
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
pub(super) struct Envelope<'a> {
    time: f64,
    host: &'a str,
    source: &'a str,
    sourcetype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
    event: EventFields<'a>,
}

pub(super) fn event_fields(log: &AuditLog) -> EventFields<'_> {
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
pub(super) fn epoch_seconds(at: DateTime<Utc>) -> f64 {
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

pub(super) fn to_json(envelope: &Envelope<'_>) -> Vec<u8> {
    // Serialising plain structs, strings and a `Value` into memory cannot fail.
    serde_json::to_vec(envelope).unwrap_or_default()
}

/// Replaces `details` by a prefix of its JSON text plus [`TRUNCATION_MARKER`] so that the
/// envelope stays below [`MAX_BATCH_BYTES`]; identifying fields are untouched.
pub(super) fn truncate_details(envelope: &mut Envelope<'_>, details: &Value) {
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
