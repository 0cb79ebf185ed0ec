//! Unit tests of the signed webhook: request bytes, answers classified, settings parsed.

use super::*;
use chrono::TimeZone;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 4, h, m, 0)
        .single()
        .expect("valid time")
}

fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn audit(event: u32, n: u128, occurred_at: DateTime<Utc>, details: Value) -> AuditLog {
    audit_with(event, uuid(n), uuid(0xabc), occurred_at, details)
}

fn secret(text: &str) -> SigningSecret {
    SigningSecret::parse(text).expect("valid secret")
}

fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in [
        (HEADER_ID, id),
        (HEADER_TIMESTAMP, timestamp),
        (HEADER_SIGNATURE, signature),
    ] {
        map.insert(name, HeaderValue::from_str(value).expect("ascii"));
    }
    map
}

#[test]
fn a_batch_body_is_the_documented_envelope_byte_for_byte() {
    let log = audit(4888, 1, at(10, 0), json!({"template": "Web Server"}));
    let batches = build_batches(std::slice::from_ref(&log), at(12, 0));
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].event_uuids, [uuid(1)]);
    let expected = concat!(
        r#"{"type":"ezca.audit_events","timestamp":"2025-03-04T10:00:00.000Z","data":{"events":[{"#,
        r#""Actor":"alice@example.com","Criticality":"High","EventID":4888,"#,
        r#""EventSummary":"Certificate request denied due to insufficient permissions","#,
        r#""EventUuid":"00000000-0000-0000-0000-000000000001","#,
        r#""OccurredAt":"2025-03-04T10:00:00.000Z","Sequence":0,"#,
        r#""SubscriptionId":"00000000-0000-0000-0000-000000000abc","#,
        r#""date":"2025-03-04T10:00:00.000Z","details":{"template":"Web Server"},"#,
        r#""message":"Certificate request denied due to insufficient permissions (Event ID 4888) by alice@example.com"}]}}"#,
    );
    assert_eq!(
        String::from_utf8(batches[0].body.clone()).expect("utf-8"),
        expected
    );
}

#[test]
fn the_body_does_not_depend_on_now_and_keeps_event_order() {
    let logs = [
        audit(4870, 3, at(10, 5), json!({})),
        audit(19, 1, at(10, 9), json!({})),
        audit(12, 2, at(10, 1), json!({})),
    ];
    let first = build_batches(&logs, at(11, 0));
    let again = build_batches(&logs, at(23, 59));
    assert_eq!(first, again);
    assert_eq!(first[0].event_uuids, [uuid(3), uuid(1), uuid(2)]);
    let body: Value = serde_json::from_slice(&first[0].body).expect("json");
    assert_eq!(
        body["timestamp"], "2025-03-04T10:09:00.000Z",
        "latest event"
    );
    let ids: Vec<&Value> = body["data"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["EventID"])
        .collect();
    assert_eq!(ids, [&json!(4870), &json!(19), &json!(12)]);
    assert_eq!(body["data"]["events"][0]["Criticality"], "Medium");
    assert!(build_batches(&[], at(10, 0)).is_empty());
}

#[test]
fn a_missing_actor_is_null_and_left_out_of_the_message() {
    let mut log = audit(4872, 1, at(10, 0), json!({}));
    log.actor = None;
    let value = event_object(&log);
    assert_eq!(value["Actor"], Value::Null);
    assert_eq!(value["message"], "Publish CRL (Event ID 4872)");
}

#[test]
fn batches_split_at_the_event_count_and_the_byte_limit() {
    let logs: Vec<AuditLog> = (0..250)
        .map(|n| audit(4887, n, at(10, 0), json!({})))
        .collect();
    let batches = build_batches(&logs, at(10, 0));
    let sizes: Vec<usize> = batches.iter().map(Batch::len).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let uuids: Vec<Uuid> = batches.iter().flat_map(|b| b.event_uuids.clone()).collect();
    assert_eq!(uuids, logs.iter().map(|l| l.uuid).collect::<Vec<_>>());

    let big: Vec<AuditLog> = (0..30)
        .map(|n| audit(4887, n, at(10, 0), json!({ "blob": "y".repeat(90_000) })))
        .collect();
    let batches = build_batches(&big, at(10, 0));
    assert!(batches.len() >= 3, "{}", batches.len());
    for batch in &batches {
        assert!(batch.body.len() <= MAX_BATCH_BYTES, "{}", batch.body.len());
        let parsed: Value = serde_json::from_slice(&batch.body).expect("json");
        assert_eq!(
            parsed["data"]["events"].as_array().map(Vec::len),
            Some(batch.len())
        );
    }
    assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 30);
}

#[test]
fn an_oversized_event_is_truncated_but_keeps_its_identity() {
    let mut log = audit(4887, 7, at(10, 0), json!({ "blob": "x\"".repeat(200_000) }));
    log.actor = Some("a".repeat(5000));
    let value = event_object(&log);
    let size = value.to_string().len();
    assert!(size <= MAX_EVENT_BYTES, "{size}");
    assert!(size > MAX_EVENT_BYTES - 100, "uses the room it has: {size}");
    assert_eq!(value["Truncated"], true);
    assert_eq!(value["EventUuid"], uuid(7).to_string());
    assert_eq!(value["EventID"], 4887);
    assert_eq!(value["Actor"].as_str().map(str::len), Some(1024));
    assert!(value["details"]
        .as_str()
        .expect("details became text")
        .ends_with(TRUNCATION_MARKER));
    let batches = build_batches(&[log], at(10, 0));
    assert!(batches[0].body.len() <= MAX_BATCH_BYTES);
}

#[test]
fn the_webhook_id_is_stable_and_depends_on_the_ordered_uuids() {
    let id = webhook_id(&[uuid(1), uuid(2)]);
    assert_eq!(id, webhook_id(&[uuid(1), uuid(2)]));
    assert_ne!(id, webhook_id(&[uuid(2), uuid(1)]));
    assert_ne!(id, webhook_id(&[uuid(1)]));
    assert!(id.starts_with("msg_"));
    assert_eq!(id.len(), 4 + 32);
    assert!(id[4..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    // SHA-256 of the 16 bytes of UUID 1, first 16 bytes in hex (checked with sha256sum).
    assert_eq!(
        webhook_id(&[uuid(1)]),
        "msg_7c3ccd10bb7ec37b46d37926ae627426"
    );
}

#[test]
fn sign_matches_the_standard_webhooks_reference_vector() {
    // The example of the Standard Webhooks reference libraries.
    let key = secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let signature = sign(
        std::slice::from_ref(&key),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

#[test]
fn sign_lists_one_signature_per_secret_current_first() {
    let current = SigningSecret::generate();
    let previous = SigningSecret::generate();
    let both = sign(
        &[current.clone(), previous.clone()],
        "msg_1",
        1700000000,
        b"{}",
    );
    let only_current = sign(std::slice::from_ref(&current), "msg_1", 1700000000, b"{}");
    let only_previous = sign(std::slice::from_ref(&previous), "msg_1", 1700000000, b"{}");
    assert_eq!(both, format!("{only_current} {only_previous}"));
    assert_eq!(sign(&[], "msg_1", 1700000000, b"{}"), "");
}

#[test]
fn verify_accepts_a_good_request_and_refuses_each_kind_of_bad_one() {
    let key = SigningSecret::generate();
    let other = SigningSecret::generate();
    let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("time");
    let body = br#"{"type":"ezca.test"}"#;
    let ts = now.timestamp();
    let good = sign(std::slice::from_ref(&key), "msg_1", ts, body);
    let tolerance = DEFAULT_TOLERANCE;
    let ok = |h: &HeaderMap, b: &[u8]| verify(&key, h, b, now, tolerance);

    assert_eq!(ok(&headers("msg_1", &ts.to_string(), &good), body), Ok(()));
    // Rotation: the matching signature may come second, other versions are skipped.
    let rotated = format!(
        "v1a,AAAA {} {good}",
        sign(std::slice::from_ref(&other), "msg_1", ts, body)
    );
    assert_eq!(
        ok(&headers("msg_1", &ts.to_string(), &rotated), body),
        Ok(())
    );
    // At the edge of the tolerance, both ways.
    for edge in [ts - 300, ts + 300] {
        let sig = sign(std::slice::from_ref(&key), "msg_1", edge, body);
        assert_eq!(ok(&headers("msg_1", &edge.to_string(), &sig), body), Ok(()));
    }

    let stale = ts - 301;
    let sig = sign(std::slice::from_ref(&key), "msg_1", stale, body);
    assert_eq!(
        ok(&headers("msg_1", &stale.to_string(), &sig), body),
        Err(VerifyError::OutsideTolerance { skew_secs: 301 })
    );
    assert_eq!(
        ok(
            &headers("msg_1", &ts.to_string(), &good),
            b"{\"type\":\"ezca.tesT\"}"
        ),
        Err(VerifyError::NoMatchingSignature),
        "tampered body"
    );
    assert_eq!(
        ok(&headers("msg_2", &ts.to_string(), &good), body),
        Err(VerifyError::NoMatchingSignature),
        "other id"
    );
    assert_eq!(
        verify(
            &other,
            &headers("msg_1", &ts.to_string(), &good),
            body,
            now,
            tolerance
        ),
        Err(VerifyError::NoMatchingSignature),
        "other secret"
    );
    assert_eq!(
        ok(&headers("msg_1", "soon", &good), body),
        Err(VerifyError::InvalidTimestamp)
    );
    assert_eq!(
        ok(&headers("msg_1", &ts.to_string(), "v1,!!notbase64"), body),
        Err(VerifyError::NoMatchingSignature)
    );
    let mut missing = headers("msg_1", &ts.to_string(), &good);
    missing.remove(HEADER_ID);
    assert_eq!(
        ok(&missing, body),
        Err(VerifyError::MissingHeader(HEADER_ID))
    );
}

/// The worked example of the README ("Verifying cloudpki webhooks"): keep both in step.
#[test]
fn the_documented_worked_example_is_true() {
    let key = secret(DOC_SECRET);
    assert_eq!(key.hmac_key(), b"cloudpki-webhook-example-key-32b");
    let event = AuditLog {
        sequence: 1,
        uuid: Uuid::parse_str("6f9619ff-8b86-4011-b42d-00c04fc964ff").expect("uuid"),
        subscription_id: Uuid::parse_str("2b4e6c8a-1d3f-4a5b-9c7d-0e1f2a3b4c5d").expect("uuid"),
        event_id: EventId::parse(4870).expect("catalog id"),
        occurred_at: at(10, 0),
        recorded_at: at(10, 0),
        actor: Some("bob@example.com".into()),
        details: json!({ "serial": "4f:1a" }),
        chain: None,
    };
    let batches = build_batches(std::slice::from_ref(&event), at(10, 0));
    assert_eq!(
        String::from_utf8(batches[0].body.clone()).expect("utf-8"),
        DOC_BODY
    );
    assert_eq!(webhook_id(&batches[0].event_uuids), DOC_ID);
    let signature = sign(
        std::slice::from_ref(&key),
        DOC_ID,
        DOC_TIMESTAMP,
        DOC_BODY.as_bytes(),
    );
    assert_eq!(signature, DOC_SIGNATURE);
    let now = Utc
        .timestamp_opt(DOC_TIMESTAMP + 10, 0)
        .single()
        .expect("time");
    let request = headers(DOC_ID, &DOC_TIMESTAMP.to_string(), DOC_SIGNATURE);
    assert_eq!(
        verify(&key, &request, DOC_BODY.as_bytes(), now, DEFAULT_TOLERANCE),
        Ok(())
    );
    let readme = include_str!("../../../README.md");
    for fact in [DOC_SECRET, DOC_ID, DOC_BODY, &DOC_SIGNATURE[3..]] {
        assert!(readme.contains(fact), "the README shows {fact}");
    }
}

const DOC_SECRET: &str = "whsec_Y2xvdWRwa2ktd2ViaG9vay1leGFtcGxlLWtleS0zMmI=";
const DOC_ID: &str = "msg_10978922e20ef32b4f4bda2389b52520";
const DOC_TIMESTAMP: i64 = 1_741_082_405;
const DOC_BODY: &str = r#"{"type":"ezca.audit_events","timestamp":"2025-03-04T10:00:00.000Z","data":{"events":[{"Actor":"bob@example.com","Criticality":"Medium","EventID":4870,"EventSummary":"A certificate has been revoked","EventUuid":"6f9619ff-8b86-4011-b42d-00c04fc964ff","OccurredAt":"2025-03-04T10:00:00.000Z","Sequence":1,"SubscriptionId":"2b4e6c8a-1d3f-4a5b-9c7d-0e1f2a3b4c5d","date":"2025-03-04T10:00:00.000Z","details":{"serial":"4f:1a"},"message":"A certificate has been revoked (Event ID 4870) by bob@example.com"}]}}"#;
const DOC_SIGNATURE: &str = "v1,KahOzSmKjdJEVf8iAeCsI11JjzVx96ROpY4f1wbg3LI=";

use crate::domain::events::EventId;
use crate::siem::test_table::{assert_classifies, audit_with, Expect};

#[test]
fn classify_maps_every_status_row() {
    use Expect::*;
    let table = [
        (200, None, Delivered),
        (202, None, Delivered),
        (204, None, Delivered),
        (299, None, Delivered),
        (301, None, AuthFailed),
        (302, None, AuthFailed),
        (307, None, AuthFailed),
        (308, None, AuthFailed),
        (400, None, Rejected),
        (401, None, AuthFailed),
        (403, None, AuthFailed),
        (404, None, AuthFailed),
        (405, None, AuthFailed),
        (408, None, Retry(None)),
        (409, None, AuthFailed),
        (410, None, Gone),
        (413, None, Split),
        (415, None, AuthFailed),
        (422, None, Rejected),
        (429, Some("30"), Retry(Some(30))),
        (429, Some("86400"), Retry(Some(3600))),
        (429, Some("soon"), Retry(None)),
        (429, None, Retry(None)),
        (500, None, Retry(None)),
        (501, None, Retry(None)),
        (502, Some("5"), Unconfirmed(Some(5))),
        (503, Some("120"), Retry(Some(120))),
        (504, None, Unconfirmed(None)),
        (100, None, Retry(None)),
        (600, None, Retry(None)),
    ];
    assert_classifies(classify, &table);
    let Disposition::AuthFailed { reason } = classify(418, None, "teapot\nhere") else {
        panic!("418 is AuthFailed");
    };
    assert!(
        reason.contains("HTTP 418") && reason.contains("teapot here"),
        "{reason}"
    );
    let Disposition::Gone { reason } = classify(410, None, "") else {
        panic!("410 is Gone");
    };
    assert!(reason.contains("410 Gone"), "{reason}");
}

#[test]
fn config_debug_shows_no_secret() {
    let key = SigningSecret::generate();
    let cfg = WebhookConfig {
        url: WebhookUrl::parse("https://siem.example.com/in?token=q1w2e3").expect("url"),
        headers: ExtraHeaders::parse("Authorization: Bearer zxcvbn").expect("headers"),
        secrets: vec![key.clone()],
    };
    let printed = format!("{cfg:?}");
    for hidden in [key.expose_secret(), "q1w2e3", "zxcvbn"] {
        assert!(!printed.contains(hidden), "{printed}");
    }
}
