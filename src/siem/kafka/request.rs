//! The request: one record per event, keyed by subscription.

use super::*;

/// One record value per line (JSON text never holds a raw newline).
pub fn build_batches(logs: &[AuditLog]) -> Vec<Batch> {
    let records = logs.iter().map(|log| {
        let value = wire::event_object(log, MAX_RECORD_BYTES, TRUNCATION_MARKER);
        (log.uuid, value.to_string().into_bytes())
    });
    wire::pack(Framing::Lines, MAX_BATCH_EVENTS, MAX_BATCH_BYTES, records)
}
