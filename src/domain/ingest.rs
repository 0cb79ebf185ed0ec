//! The ingestion API's request body (DESIGN.md, "Contract: ingestion API"), parsed and checked.
//!
//! A body is one event object or an array of at most [`MAX_EVENTS_PER_REQUEST`]. Every problem
//! is reported with the field it concerns (`[3].event_id`), all at once, and a request with any
//! problem stores nothing.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::events::EventId;

/// Most events in one request.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;
/// Longest actor, in characters.
pub const MAX_ACTOR_CHARS: usize = 512;
/// Largest `details`, serialized as JSON, in bytes (DESIGN.md: 64 KiB).
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;
/// How far in the future `occurred_at` may be (clock skew).
pub const MAX_FUTURE_SKEW_MINUTES: i64 = 60;

/// A valid event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    /// The idempotency key (generated when absent).
    pub id: Uuid,
    /// A catalog event.
    pub event_id: EventId,
    /// When it happened (now when absent).
    pub occurred_at: DateTime<Utc>,
    /// Who did it.
    pub actor: Option<String>,
    /// Free-form details (an object; `{}` when absent).
    pub details: Value,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldProblem {
    /// Where: `event_id`, or `[3].event_id` in an array.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// More than [`MAX_EVENTS_PER_REQUEST`] events (HTTP 413).
    TooMany(usize),
    /// Field problems (HTTP 400).
    Invalid(Vec<FieldProblem>),
    /// `details` larger than [`MAX_DETAILS_BYTES`] (HTTP 413), naming each event.
    TooLarge(Vec<FieldProblem>),
}

/// Parses a request body.
pub fn parse_body(body: &Value, now: DateTime<Utc>) -> Result<Vec<IncomingEvent>, IngestError> {
    let (items, in_array): (Vec<&Value>, bool) = match body {
        Value::Array(items) => (items.iter().collect(), true),
        Value::Object(_) => (vec![body], false),
        _ => {
            return Err(IngestError::Invalid(vec![FieldProblem {
                field: String::new(),
                message: "The body must be one event object or an array of event objects.".into(),
            }]))
        }
    };
    if items.len() > MAX_EVENTS_PER_REQUEST {
        return Err(IngestError::TooMany(items.len()));
    }
    if items.is_empty() {
        return Err(IngestError::Invalid(vec![FieldProblem {
            field: String::new(),
            message: "The array is empty; send at least one event.".into(),
        }]));
    }
    let mut problems = Vec::new();
    let mut too_large = Vec::new();
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let prefix = if in_array {
            format!("[{index}].")
        } else {
            String::new()
        };
        if let Some(details) = item.get("details") {
            let size = serde_json::to_vec(details).map_or(usize::MAX, |v| v.len());
            if size > MAX_DETAILS_BYTES {
                too_large.push(FieldProblem {
                    field: format!("{prefix}details"),
                    message: format!(
                        "Is {size} bytes as JSON; details may be at most {MAX_DETAILS_BYTES} bytes. Keep large payloads elsewhere and send a reference."
                    ),
                });
                continue;
            }
        }
        match parse_event(item, now) {
            Ok(event) => events.push(event),
            Err(mine) => problems.extend(mine.into_iter().map(|(field, message)| FieldProblem {
                field: format!("{prefix}{field}"),
                message,
            })),
        }
    }
    if !too_large.is_empty() {
        Err(IngestError::TooLarge(too_large))
    } else if problems.is_empty() {
        Ok(events)
    } else {
        Err(IngestError::Invalid(problems))
    }
}

/// Whether a JSON value holds a NUL character in a key or a string (PostgreSQL's jsonb and text
/// cannot store one).
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn parse_event(item: &Value, now: DateTime<Utc>) -> Result<IncomingEvent, Vec<(String, String)>> {
    let mut problems: Vec<(String, String)> = Vec::new();
    let Some(object) = item.as_object() else {
        return Err(vec![(
            String::new(),
            "Each event must be a JSON object.".into(),
        )]);
    };
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "id" | "event_id" | "occurred_at" | "actor" | "details"
        ) {
            problems.push((
                key.clone(),
                "Unknown field; the fields are id, event_id, occurred_at, actor and details."
                    .into(),
            ));
        }
    }
    let id = match object.get("id") {
        None | Some(Value::Null) => Some(Uuid::new_v4()),
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(id) => Some(id),
            Err(_) => {
                problems.push((
                    "id".into(),
                    "Must be a UUID such as 3f2c7a1e-8b4d-4c55-9a0e-5d2b1c3f4e6a.".into(),
                ));
                None
            }
        },
        Some(_) => {
            problems.push(("id".into(), "Must be a UUID string.".into()));
            None
        }
    };
    let event_id = match object.get("event_id") {
        None | Some(Value::Null) => {
            problems.push((
                "event_id".into(),
                "Required: the catalog Event ID, e.g. 4888.".into(),
            ));
            None
        }
        Some(Value::Number(n)) => match n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(EventId::parse)
        {
            Some(Ok(id)) => Some(id),
            _ => {
                problems.push((
                    "event_id".into(),
                    format!(
                        "{n} is not in the event catalog; the Event IDs are {}.",
                        catalog_ids()
                    ),
                ));
                None
            }
        },
        Some(_) => {
            problems.push(("event_id".into(), "Must be a number, e.g. 4888.".into()));
            None
        }
    };
    let occurred_at = match object.get("occurred_at") {
        None | Some(Value::Null) => Some(now),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) if t.with_timezone(&Utc) > now + Duration::minutes(MAX_FUTURE_SKEW_MINUTES) => {
                problems.push((
                    "occurred_at".into(),
                    "Is more than an hour in the future; check the sender's clock.".into(),
                ));
                None
            }
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                problems.push((
                    "occurred_at".into(),
                    "Must be an RFC 3339 time such as 2026-11-26T09:30:00Z.".into(),
                ));
                None
            }
        },
        Some(_) => {
            problems.push((
                "occurred_at".into(),
                "Must be an RFC 3339 time string.".into(),
            ));
            None
        }
    };
    let actor = match object.get("actor") {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) if s.chars().count() > MAX_ACTOR_CHARS => {
            problems.push((
                "actor".into(),
                format!("Is longer than {MAX_ACTOR_CHARS} characters."),
            ));
            None
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            problems.push((
                "actor".into(),
                "Must not contain control characters.".into(),
            ));
            None
        }
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => {
            problems.push(("actor".into(), "Must be a string.".into()));
            None
        }
    };
    let details = match object.get("details") {
        None | Some(Value::Null) => Some(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) if has_nul(v) => {
            problems.push((
                "details".into(),
                "Contains a NUL character (\\u0000), which cannot be stored; remove it.".into(),
            ));
            None
        }
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            problems.push(("details".into(), "Must be a JSON object.".into()));
            None
        }
    };
    match (id, event_id, occurred_at, actor, details) {
        (Some(id), Some(event_id), Some(occurred_at), Some(actor), Some(details))
            if problems.is_empty() =>
        {
            Ok(IncomingEvent {
                id,
                event_id,
                occurred_at,
                actor,
                details,
            })
        }
        _ => Err(problems),
    }
}

fn catalog_ids() -> String {
    super::events::catalog()
        .iter()
        .map(|e| e.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_single_object_and_an_array_are_both_accepted() {
        let now = Utc::now();
        let one = parse_body(&json!({"event_id": 4888}), now).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].occurred_at, now);
        assert_eq!(one[0].details, json!({}));
        let many = parse_body(&json!([{"event_id": 4888, "actor": "a"}, {"event_id": 12, "id": "3f2c7a1e-8b4d-4c55-9a0e-5d2b1c3f4e6a"}]), now).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(
            many[1].id.to_string(),
            "3f2c7a1e-8b4d-4c55-9a0e-5d2b1c3f4e6a"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let now = Utc::now();
        let err = parse_body(
            &json!([{"event_id": 4888}, {"event_id": 7, "id": "x", "occurred_at": "yesterday", "actor": 5, "details": [], "extra": 1}]),
            now,
        )
        .unwrap_err();
        let IngestError::Invalid(problems) = err else {
            panic!("{err:?}")
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "[1].event_id",
            "[1].id",
            "[1].occurred_at",
            "[1].actor",
            "[1].details",
            "[1].extra",
        ] {
            assert!(fields.contains(&f), "{f} in {fields:?}");
        }
        assert!(!fields.iter().any(|f| f.starts_with("[0]")));
    }

    #[test]
    fn limits_are_enforced() {
        let now = Utc::now();
        let many: Vec<Value> = (0..1001).map(|_| json!({"event_id": 12})).collect();
        assert_eq!(
            parse_body(&Value::Array(many), now),
            Err(IngestError::TooMany(1001))
        );
        assert!(parse_body(&json!([]), now).is_err());
        assert!(parse_body(&json!("text"), now).is_err());
        assert!(
            parse_body(&json!({"event_id": 0}), now).is_err(),
            "0 is the connection test, not an event"
        );
        let future = (now + Duration::hours(3)).to_rfc3339();
        assert!(parse_body(&json!({"event_id": 12, "occurred_at": future}), now).is_err());
    }
}
