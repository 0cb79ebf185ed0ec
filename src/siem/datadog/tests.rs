//! Unit tests of Datadog: request bytes, answers classified, settings parsed.

use super::*;
use crate::siem::parse_retry_after;
use chrono::TimeZone;
use std::io::Read;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 4, h, m, 0)
        .single()
        .expect("valid time")
}

#[test]
fn the_drains_log_text_is_the_log_object_in_every_branch() {
    let now = Utc::now();
    let ago = |minutes: i64| now - chrono::Duration::minutes(minutes);
    let mut chained = audit(4888, ago(60), json!({"a": [1, {"b": null}], "c": "é"}));
    chained.chain = Some(crate::siem::ChainLink {
        prev_hash: "00".repeat(32),
        hash: "ab".repeat(32),
    });
    chained.sequence = 42;
    let mut anonymous = audit(4870, ago(30), json!({}));
    anonymous.actor = None;
    let late = audit(4872, ago(19 * 60), json!({"x": 1}));
    let future = audit(4872, now + chrono::Duration::hours(3), json!({"x": 1}));
    let mut heartbeat = audit(4872, ago(60), json!({"LastSequence": 7}));
    heartbeat.event_id = EventId::HEARTBEAT;
    let mut heartbeat_without = heartbeat.clone();
    heartbeat_without.details = json!({});
    let huge = audit(4888, ago(60), json!({"blob": "x".repeat(MAX_LOG_BYTES)}));
    for log in [
        chained,
        anonymous,
        late,
        future,
        heartbeat,
        heartbeat_without,
        huge,
    ] {
        let text = log_text(&log, "pki.example.com", now);
        let parsed: Value = serde_json::from_slice(&text).expect("JSON");
        assert_eq!(parsed, log_object(&log, "pki.example.com", now));
        assert!(text.len() < MAX_LOG_BYTES);
    }
}

#[test]
fn log_object_has_the_documented_fields() {
    let log = audit(4888, at(10, 0), json!({"template": "Web Server"}));
    let value = log_object(&log, "pki.example.com", at(10, 5));
    assert_eq!(
        value,
        json!({
            "service": "EZCA",
            "ddsource": "ezca",
            "hostname": "pki.example.com",
            "status": "error",
            "message": "Certificate request denied due to insufficient permissions (Event ID 4888) by alice@example.com",
            "ddtags": format!("criticality:high,event_id:4888,subscription_id:{}", log.subscription_id),
            "date": "2025-03-04T10:00:00.000Z",
            "OccurredAt": "2025-03-04T10:00:00.000Z",
            "Sequence": 0,
            "EventID": 4888,
            "EventSummary": "Certificate request denied due to insufficient permissions",
            "Criticality": "High",
            "SubscriptionId": log.subscription_id.to_string(),
            "EventUuid": log.uuid.to_string(),
            "Actor": "alice@example.com",
            "details": {"template": "Web Server"},
        })
    );
}

#[test]
fn status_follows_criticality_and_missing_actor_is_null() {
    let mut log = audit(4870, at(10, 0), json!({}));
    log.actor = None;
    let value = log_object(&log, "h", at(10, 0));
    assert_eq!(value["status"], "warning");
    assert_eq!(value["Actor"], Value::Null);
    assert_eq!(
        value["message"],
        "A certificate has been revoked (Event ID 4870)"
    );
    let low = log_object(&audit(4887, at(10, 0), json!({})), "h", at(10, 0));
    assert_eq!(low["status"], "info");
    assert!(low["ddtags"]
        .as_str()
        .expect("tags")
        .starts_with("criticality:low,event_id:4887,"));
}

#[test]
fn a_late_event_is_dated_now_and_keeps_its_original_date() {
    let now = at(23, 0);
    let old = Utc
        .with_ymd_and_hms(2025, 3, 4, 4, 59, 0)
        .single()
        .expect("time");
    let value = log_object(&audit(19, old, json!({})), "h", now);
    assert_eq!(value["date"], "2025-03-04T23:00:00.000Z");
    assert_eq!(value["OriginalDate"], "2025-03-04T04:59:00.000Z");
    assert!(value["ddtags"]
        .as_str()
        .expect("tags")
        .ends_with(",late:true"));

    // At 17 h the log is re-timed already: an hour's margin for time in flight.
    let edge = log_object(&audit(19, at(6, 0), json!({})), "h", now);
    assert_eq!(edge["date"], "2025-03-04T23:00:00.000Z");
    assert_eq!(edge["late"], true);
    assert_eq!(edge["OccurredAt"], "2025-03-04T06:00:00.000Z");

    let recent = log_object(&audit(19, at(6, 1), json!({})), "h", now);
    assert_eq!(recent["date"], "2025-03-04T06:01:00.000Z");
    assert!(recent.get("OriginalDate").is_none());
    assert!(!recent["ddtags"].as_str().expect("tags").contains("late"));
}

#[test]
fn a_log_over_one_megabyte_is_truncated_but_keeps_its_identity() {
    let big = "x\"".repeat(1_000_000);
    let log = audit(4887, at(10, 0), json!({ "blob": big }));
    let value = log_object(&log, "h", at(10, 0));
    let size = value.to_string().len();
    assert!(size < MAX_LOG_BYTES, "{size}");
    assert!(size > MAX_LOG_BYTES - 1000, "uses the room it has: {size}");
    assert_eq!(value["Truncated"], true);
    assert_eq!(value["EventID"], 4887);
    assert_eq!(value["EventUuid"], log.uuid.to_string());
    assert!(value["details"]
        .as_str()
        .expect("details became text")
        .ends_with(TRUNCATION_MARKER));
    assert!(value["ddtags"]
        .as_str()
        .expect("tags")
        .contains("truncated:true"));
}

#[test]
fn a_huge_actor_is_cut_so_the_log_still_fits() {
    let mut log = audit(4887, at(10, 0), json!({}));
    log.actor = Some("a".repeat(2_000_000));
    let value = log_object(&log, "h", at(10, 0));
    assert!(value.to_string().len() < MAX_LOG_BYTES);
    assert_eq!(value["Truncated"], true);
}

#[test]
fn batches_split_at_the_event_count() {
    let logs: Vec<AuditLog> = (0..2500)
        .map(|_| audit(4887, at(10, 0), json!({})))
        .collect();
    let batches = build_batches(&logs, "h", at(10, 0));
    let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    let uuids: Vec<Uuid> = batches.iter().flat_map(|b| b.event_uuids.clone()).collect();
    assert_eq!(uuids, logs.iter().map(|l| l.uuid).collect::<Vec<_>>());
    for batch in &batches {
        let parsed: Vec<Value> = serde_json::from_slice(&batch.body).expect("json array");
        assert_eq!(parsed.len(), batch.len());
    }
}

#[test]
fn batches_split_below_the_payload_limit() {
    let logs: Vec<AuditLog> = (0..12)
        .map(|_| audit(4887, at(10, 0), json!({ "blob": "y".repeat(900_000) })))
        .collect();
    let batches = build_batches(&logs, "h", at(10, 0));
    assert!(batches.len() >= 3);
    for batch in &batches {
        assert!(batch.body.len() < MAX_PAYLOAD_BYTES);
        let parsed: Vec<Value> = serde_json::from_slice(&batch.body).expect("json array");
        assert_eq!(parsed.len(), batch.len());
    }
    assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 12);
    assert!(build_batches(&[], "h", at(10, 0)).is_empty());
}

#[test]
fn gzip_body_round_trips() {
    let batches = build_batches(&[audit(12, at(10, 0), json!({}))], "h", at(10, 0));
    let batch = &batches[0];
    let zipped = batch.gzip_body().expect("gzip");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(plain, batch.body);
}

use crate::siem::test_table::{assert_classifies, audit, Expect};

#[test]
fn classify_maps_every_status_row() {
    use Expect::*;
    let table = [
        (200, None, Delivered),
        (202, None, Delivered),
        (204, None, Delivered),
        (301, None, AuthFailed),
        (307, None, AuthFailed),
        (400, None, Rejected),
        (401, None, AuthFailed),
        (403, None, AuthFailed),
        (404, None, AuthFailed),
        (405, None, Retry(None)),
        (408, None, Retry(None)),
        (413, None, Split),
        (422, None, Retry(None)),
        (429, Some("30"), Retry(Some(30))),
        (429, Some("86400"), Retry(Some(3600))),
        (429, Some("soon"), Retry(None)),
        (500, None, Retry(None)),
        (502, Some("5"), Unconfirmed(Some(5))),
        (503, Some("120"), Retry(Some(120))),
        (504, None, Unconfirmed(None)),
        (100, None, Retry(None)),
        (600, None, Retry(None)),
    ];
    assert_classifies(classify, &table);
    let Disposition::AuthFailed { reason } = classify(403, None, r#"{"errors":["Forbidden"]}"#)
    else {
        panic!("403 is AuthFailed");
    };
    assert!(reason.contains("Forbidden") && reason.contains("another Datadog site"));
}

#[test]
fn retry_after_accepts_seconds_and_http_dates() {
    let now = at(10, 0);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Tue, 04 Mar 2025 10:02:00 GMT", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Tue, 04 Mar 2025 09:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        parse_retry_after("Wed, 05 Mar 2025 10:00:00 GMT", now),
        Some(crate::siem::MAX_RETRY_AFTER)
    );
    assert_eq!(parse_retry_after("later", now), None);
}
