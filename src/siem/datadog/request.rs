//! The request: one Datadog log per event (late and future dates re-timed, oversized details
//! cut), packed into JSON-array batches under the intake limits.

use super::*;

/// One Datadog log (see the module doc for the format), over borrowed fields: the drain
/// serialises it straight to text (no tree of values per event, `details` written once);
/// [`log_object`] makes a value of it, to truncate one that is too large.
#[derive(Serialize)]
pub(super) struct WireLog<'a> {
    service: &'static str,
    ddsource: &'static str,
    hostname: &'a str,
    status: &'static str,
    message: String,
    ddtags: String,
    date: String,
    #[serde(rename = "OriginalDate", skip_serializing_if = "Option::is_none")]
    original_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    late: Option<bool>,
    #[serde(rename = "OccurredAt")]
    occurred_at: String,
    #[serde(rename = "Sequence")]
    sequence: i64,
    #[serde(rename = "EventID")]
    event_id: u32,
    #[serde(rename = "EventSummary")]
    event_summary: &'static str,
    #[serde(rename = "Criticality")]
    criticality: &'static str,
    #[serde(rename = "SubscriptionId")]
    subscription_id: Uuid,
    #[serde(rename = "EventUuid")]
    event_uuid: Uuid,
    #[serde(rename = "Actor")]
    actor: Option<&'a str>,
    details: &'a Value,
    #[serde(rename = "LastSequence", skip_serializing_if = "Option::is_none")]
    last_sequence: Option<&'a Value>,
    #[serde(rename = "PrevHash", skip_serializing_if = "Option::is_none")]
    prev_hash: Option<&'a str>,
    #[serde(rename = "Hash", skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
}

fn wire_log<'a>(log: &'a AuditLog, hostname: &'a str, now: DateTime<Utc>) -> WireLog<'a> {
    let info = log.event_id.info();
    let age = now.signed_duration_since(log.occurred_at);
    let too_old = age.to_std().is_ok_and(|age| age >= LATE_AFTER);
    let too_new = (-age).to_std().is_ok_and(|ahead| ahead > MAX_LOG_FUTURE);
    let mut tags = format!(
        "criticality:{},event_id:{},subscription_id:{}",
        info.criticality.as_str().to_ascii_lowercase(),
        log.event_id,
        log.subscription_id
    );
    if too_old {
        tags.push_str(",late:true");
    }
    if too_new {
        tags.push_str(",future_date:true");
    }
    let date = if too_old || too_new {
        now
    } else {
        log.occurred_at
    };
    WireLog {
        service: SERVICE,
        ddsource: SOURCE,
        hostname,
        status: info.criticality.datadog_status(),
        message: wire::message(log),
        ddtags: tags,
        date: rfc3339(date),
        original_date: (too_old || too_new).then(|| rfc3339(log.occurred_at)),
        late: too_old.then_some(true),
        occurred_at: rfc3339(log.occurred_at),
        sequence: log.sequence,
        event_id: log.event_id.get(),
        event_summary: info.summary,
        criticality: info.criticality.as_str(),
        subscription_id: log.subscription_id,
        event_uuid: log.uuid,
        actor: log.actor.as_deref(),
        details: &log.details,
        last_sequence: (log.event_id == EventId::HEARTBEAT)
            .then(|| log.details.get("LastSequence").unwrap_or(&Value::Null)),
        prev_hash: log.chain.as_ref().map(|c| c.prev_hash.as_str()),
        hash: log.chain.as_ref().map(|c| c.hash.as_str()),
    }
}

/// The JSON text of one log (see [`log_object`]).
pub(super) fn log_text(log: &AuditLog, hostname: &str, now: DateTime<Utc>) -> Vec<u8> {
    match serde_json::to_vec(&wire_log(log, hostname, now)) {
        Ok(text) if text.len() < MAX_LOG_BYTES => text,
        _ => log_object(log, hostname, now).to_string().into_bytes(),
    }
}

/// The Datadog log object of one audit event (see the module doc for the format), its
/// `details` cut when the log would exceed [`MAX_LOG_BYTES`].
pub fn log_object(log: &AuditLog, hostname: &str, now: DateTime<Utc>) -> Value {
    let mut value = serde_json::to_value(wire_log(log, hostname, now)).unwrap_or(Value::Null);
    if value.to_string().len() >= MAX_LOG_BYTES {
        truncate_details(&mut value, &log.details);
    }
    value
}

/// Replaces `details` by a prefix of its JSON text plus [`TRUNCATION_MARKER`] so the log stays
/// under [`MAX_LOG_BYTES`]; identifying fields are untouched.
pub(super) fn truncate_details(value: &mut Value, details: &Value) {
    let Value::Object(object) = value else { return };
    object.insert("Truncated".into(), json!(true));
    if let Some(Value::String(tags)) = object.get_mut("ddtags") {
        tags.push_str(",truncated:true");
    }
    object.insert("details".into(), json!(TRUNCATION_MARKER));
    let mut fixed = Value::Object(object.clone()).to_string().len();
    if fixed >= MAX_LOG_BYTES {
        // Only an absurd actor can do this; cut it so the event is still delivered.
        if let Some(actor) = object.get_mut("Actor") {
            if let Value::String(text) = actor {
                let cut: String = text.chars().take(MAX_ACTOR_CHARS_WHEN_TRUNCATED).collect();
                *actor = json!(cut);
            }
        }
        let message = object.get("EventSummary").cloned().unwrap_or(Value::Null);
        object.insert("message".into(), message);
        fixed = Value::Object(object.clone()).to_string().len();
    }
    let budget = MAX_LOG_BYTES.saturating_sub(fixed + 1);
    let prefix = wire::json_prefix(&details.to_string(), budget, TRUNCATION_MARKER);
    object.insert("details".into(), json!(prefix));
}

/// Packs logs, in order, into JSON-array batches of at most [`MAX_BATCH_EVENTS`] logs and
/// less than [`MAX_PAYLOAD_BYTES`] bytes. Every log lands in exactly one batch (a single log
/// is always below [`MAX_LOG_BYTES`], so it always fits).
pub fn build_batches(logs: &[AuditLog], hostname: &str, now: DateTime<Utc>) -> Vec<Batch> {
    let events = logs
        .iter()
        .map(|log| (log.uuid, log_text(log, hostname, now)));
    wire::pack(
        Framing::JsonArray,
        MAX_BATCH_EVENTS,
        MAX_PAYLOAD_BYTES,
        events,
    )
}
