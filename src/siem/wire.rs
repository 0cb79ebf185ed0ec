//! What every provider puts on the wire the same way: the event's attributes and message, the
//! connection-test log, JSON string budgets for truncation, the byte-budget batch packer and
//! excerpts of an answer for error messages. A provider module keeps only what its SIEM does
//! differently.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{AuditLog, Batch, SendError};
use crate::domain::events::EventId;

/// Time as every provider writes it: RFC 3339, milliseconds, `Z`.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The human line of an event: `Summary (Event ID n)`, plus ` by actor` when there is one.
pub fn message(log: &AuditLog) -> String {
    message_by(log, log.actor.as_deref())
}

/// [`message`] with another actor text (a cut one, when the event is truncated).
pub fn message_by(log: &AuditLog, actor: Option<&str>) -> String {
    let summary = log.event_id.info().summary;
    match actor {
        Some(actor) => format!("{summary} (Event ID {}) by {actor}", log.event_id),
        None => format!("{summary} (Event ID {})", log.event_id),
    }
}

/// The attributes every provider sends for an event, in DESIGN.md's order: `OccurredAt`,
/// `Sequence`, `EventID`, `EventSummary`, `Criticality`, `SubscriptionId`, `EventUuid`,
/// `Actor`, `details`. Providers add their own envelope fields around them.
pub fn insert_attributes(object: &mut Map<String, Value>, log: &AuditLog) {
    let info = log.event_id.info();
    object.insert("OccurredAt".into(), json!(rfc3339(log.occurred_at)));
    object.insert("Sequence".into(), json!(log.sequence));
    object.insert("EventID".into(), json!(log.event_id.get()));
    object.insert("EventSummary".into(), json!(info.summary));
    object.insert("Criticality".into(), json!(info.criticality.as_str()));
    object.insert("SubscriptionId".into(), json!(log.subscription_id));
    object.insert("EventUuid".into(), json!(log.uuid));
    object.insert("Actor".into(), json!(log.actor));
    object.insert("details".into(), log.details.clone());
    insert_chain(object, log);
}

/// `PrevHash` and `Hash`, when the event has its place in the chain; `LastSequence` on a
/// heartbeat.
fn insert_chain(object: &mut Map<String, Value>, log: &AuditLog) {
    if log.event_id == EventId::HEARTBEAT {
        object.insert("LastSequence".into(), log.details["LastSequence"].clone());
    }
    if let Some(chain) = &log.chain {
        object.insert("PrevHash".into(), json!(chain.prev_hash));
        object.insert("Hash".into(), json!(chain.hash));
    }
}

/// Longest actor kept when an event has to be truncated.
const MAX_ACTOR_CHARS_WHEN_TRUNCATED: usize = 1024;

/// The plain JSON object of one event (the webhook's and Kafka's record): the attributes,
/// `date` and `message`, at most `max_bytes` long. A longer event keeps every identifying
/// field; its `details` becomes a prefix of their JSON text plus `marker`, and it carries
/// `Truncated: true`.
pub fn event_object(log: &AuditLog, max_bytes: usize, marker: &str) -> Value {
    let value = plain_object(log, log.actor.as_deref(), log.details.clone());
    if value.to_string().len() <= max_bytes {
        return value;
    }
    let actor: Option<String> = log
        .actor
        .as_ref()
        .map(|a| a.chars().take(MAX_ACTOR_CHARS_WHEN_TRUNCATED).collect());
    let mut value = plain_object(log, actor.as_deref(), json!(marker));
    value["Truncated"] = json!(true);
    let fixed = value.to_string().len();
    let budget = max_bytes.saturating_sub(fixed);
    value["details"] = json!(json_prefix(&log.details.to_string(), budget, marker));
    value
}

fn plain_object(log: &AuditLog, actor: Option<&str>, details: Value) -> Value {
    let info = log.event_id.info();
    let mut value = json!({
        "EventID": log.event_id.get(),
        "EventSummary": info.summary,
        "Criticality": info.criticality.as_str(),
        "SubscriptionId": log.subscription_id,
        "EventUuid": log.uuid,
        "Sequence": log.sequence,
        "OccurredAt": rfc3339(log.occurred_at),
        "Actor": actor,
        "details": details,
        "date": rfc3339(log.occurred_at),
        "message": message_by(log, actor),
    });
    if let Some(object) = value.as_object_mut() {
        insert_chain(object, log);
    }
    value
}

/// The log Test Connection sends: `EventID` 0, "SIEM connection test", numbered 0 (it is not
/// part of the subscription's log), with a note saying where it came from.
pub fn test_log(subscription_id: Uuid, now: DateTime<Utc>) -> AuditLog {
    AuditLog {
        sequence: 0,
        uuid: Uuid::new_v4(),
        subscription_id,
        event_id: EventId::CONNECTION_TEST,
        occurred_at: now,
        recorded_at: now,
        actor: None,
        details: json!({ "note": "Sent by Test Connection on the cloudpki settings page" }),
        chain: None,
    }
}

/// The heartbeat log (`EventID` 1, "Export heartbeat"): not part of the subscription's log
/// (numbered 0, no chain), it carries `LastSequence`, the subscription's latest `Sequence`, so
/// the SIEM can alert on silence and notice a gap even when no event follows it.
pub fn heartbeat_log(subscription_id: Uuid, last_sequence: i64, now: DateTime<Utc>) -> AuditLog {
    AuditLog {
        sequence: 0,
        uuid: Uuid::new_v4(),
        subscription_id,
        event_id: EventId::HEARTBEAT,
        occurred_at: now,
        recorded_at: now,
        actor: None,
        details: json!({ "LastSequence": last_sequence }),
        chain: None,
    }
}

/// Bytes a char takes inside a JSON string as serde_json writes it.
pub fn json_escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The longest prefix of `text` whose JSON string content takes at most `budget` bytes,
/// followed by `marker` (which the caller has already counted).
pub fn json_prefix(text: &str, mut budget: usize, marker: &str) -> String {
    let mut prefix = String::new();
    for c in text.chars() {
        let cost = json_escaped_len(c);
        if cost > budget {
            break;
        }
        budget -= cost;
        prefix.push(c);
    }
    prefix.push_str(marker);
    prefix
}

/// How a batch body frames its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `[a,b,c]` (Datadog, Sentinel).
    JsonArray,
    /// `a\nb\nc` (HEC).
    Lines,
}

impl Framing {
    fn open(self) -> Vec<u8> {
        match self {
            Framing::JsonArray => vec![b'['],
            Framing::Lines => Vec::new(),
        }
    }

    fn separator(self) -> u8 {
        match self {
            Framing::JsonArray => b',',
            Framing::Lines => b'\n',
        }
    }

    /// Bytes the closing adds.
    fn closing_len(self) -> usize {
        match self {
            Framing::JsonArray => 1,
            Framing::Lines => 0,
        }
    }

    fn close(self, body: &mut Vec<u8>) {
        if self == Framing::JsonArray {
            body.push(b']');
        }
    }
}

/// Packs serialized events, in order, into batches of at most `max_events` events and less
/// than `max_bytes` bytes. Every event lands in exactly one batch; one that alone is too big
/// still gets a batch of its own (providers keep a single event below the limit).
pub fn pack(
    framing: Framing,
    max_events: usize,
    max_bytes: usize,
    events: impl IntoIterator<Item = (Uuid, Vec<u8>)>,
) -> Vec<Batch> {
    let empty = || Batch {
        event_uuids: Vec::new(),
        body: framing.open(),
    };
    let mut batches = Vec::new();
    let mut current = empty();
    for (uuid, text) in events {
        let grown = current.body.len() + 1 + text.len() + framing.closing_len();
        if !current.is_empty() && (current.len() >= max_events || grown >= max_bytes) {
            let mut full = std::mem::replace(&mut current, empty());
            framing.close(&mut full.body);
            batches.push(full);
        }
        if !current.is_empty() {
            current.body.push(framing.separator());
        }
        current.body.extend_from_slice(&text);
        current.event_uuids.push(uuid);
    }
    if !current.is_empty() {
        framing.close(&mut current.body);
        batches.push(current);
    }
    batches
}

/// A SIEM's HTTP answer, as far as any provider reads it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The `Retry-After` header, as text.
    pub retry_after: Option<String>,
    /// At most [`super::MAX_RESPONSE_BODY_BYTES`] of the body (lossy UTF-8).
    pub body: String,
}

/// Sends a request and reads its answer (the body capped). The status decides what happens
/// next; a body cut off mid-read only loses detail for the reason text.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, SendError> {
    let response = request
        .send()
        .await
        .map_err(|err| SendError::from_reqwest(&err))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = super::read_body_capped(response).await;
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// At most `max_chars` of an answer body for an error message, control characters blanked,
/// prefixed with `": "`; empty for an empty body or `{}`.
pub fn body_excerpt(body: &str, max_chars: usize) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() || trimmed == "{}" {
        return String::new();
    }
    format!(": {}", clean_excerpt(trimmed, max_chars))
}

/// At most `max_chars` of `text`, control characters blanked.
pub fn clean_excerpt(text: &str, max_chars: usize) -> String {
    text.chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(sizes: &[usize]) -> Vec<(Uuid, Vec<u8>)> {
        sizes
            .iter()
            .map(|n| (Uuid::new_v4(), vec![b'x'; *n]))
            .collect()
    }

    #[test]
    fn packing_keeps_order_and_every_event_within_both_limits() {
        for framing in [Framing::JsonArray, Framing::Lines] {
            let input = events(&[10, 10, 10, 50, 10, 200, 10]);
            let batches = pack(framing, 3, 64, input.clone());
            let uuids: Vec<Uuid> = batches.iter().flat_map(|b| b.event_uuids.clone()).collect();
            assert_eq!(uuids, input.iter().map(|(u, _)| *u).collect::<Vec<_>>());
            for batch in &batches {
                assert!(batch.len() <= 3);
                // A lone oversized event still gets its own batch.
                assert!(batch.body.len() < 64 || batch.len() == 1, "{framing:?}");
            }
            assert!(pack(framing, 3, 64, Vec::new()).is_empty());
        }
        let batches = pack(Framing::JsonArray, 10, 100, events(&[1, 1]));
        assert_eq!(batches[0].body, b"[x,x]");
        let batches = pack(Framing::Lines, 10, 100, events(&[1, 1]));
        assert_eq!(batches[0].body, b"x\nx");
    }

    #[test]
    fn prefixes_respect_json_escaping() {
        assert_eq!(json_prefix("a\"bc", 3, "…"), "a\"…");
        assert_eq!(json_prefix("\u{1}x", 5, ""), "");
        assert_eq!(body_excerpt(" {} ", 10), "");
        assert_eq!(body_excerpt("bad\nthing", 5), ": bad t");
    }
}
