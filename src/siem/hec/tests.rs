//! Unit tests of Splunk HEC: request bytes, answers classified, settings parsed.

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
    let Disposition::AuthFailed { reason } = classify(HecFlavor::LogScale, 403, None, "") else {
        panic!("403 is AuthFailed");
    };
    assert!(reason.starts_with("LogScale refused the token"), "{reason}");
}
