//! The request: one Azure Monitor row per event (`TimeGenerated`, the attributes, fields cut to
//! 64 KB) and the batches under the Logs Ingestion API limits.

use super::*;

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
pub(super) fn cut_text(text: &str) -> String {
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
