//! Unit tests of Kafka: request bytes, answers classified, settings parsed.

use super::*;
use crate::siem::egress::EgressPolicy;

#[test]
fn a_batch_partly_acknowledged_is_never_resent_as_new() {
    let refused = || {
        Err(Disposition::Rejected {
            reason: "too large".into(),
        })
    };
    let timed_out = || {
        Err(Disposition::Retry {
            after: None,
            reason: "timed out".into(),
        })
    };
    assert_eq!(batch_outcome(vec![Ok(()), Ok(())]), Disposition::Delivered);
    // Acknowledged, then refused, nothing after: the refused one is isolated.
    assert!(matches!(
        batch_outcome(vec![Ok(()), Ok(()), refused(), timed_out()]),
        Disposition::PartialAccept { accepted: 2, .. }
    ));
    // Refused with nothing acknowledged: as it was.
    assert!(matches!(
        batch_outcome(vec![refused(), timed_out()]),
        Disposition::Rejected { .. }
    ));
    // Some acknowledged, the rest not: maybe stored, the resend is counted.
    for results in [
        vec![Ok(()), timed_out(), timed_out()],
        vec![timed_out(), Ok(())],
        vec![refused(), Ok(())],
    ] {
        assert!(
            matches!(batch_outcome(results), Disposition::Unconfirmed { .. }),
            "a partly acknowledged batch is unconfirmed"
        );
    }
    // Nothing acknowledged and a transient failure: a plain retry.
    assert!(matches!(
        batch_outcome(vec![timed_out(), timed_out()]),
        Disposition::Retry { .. }
    ));
}

#[test]
fn brokers_outside_the_policy_or_in_plaintext_are_refused_without_a_packet() {
    let none = EgressPolicy::parse("").unwrap();
    let local = EgressPolicy::parse("127.0.0.1").unwrap();
    let private = KafkaBrokers::parse("127.0.0.2:9092").unwrap();
    assert!(check_brokers(&none, &private, true).is_err());
    assert!(check_brokers(&local, &private, true).is_err());
    let allowed = KafkaBrokers::parse("127.0.0.1:9092").unwrap();
    assert!(check_brokers(&local, &allowed, false).is_ok());
    let public = KafkaBrokers::parse("kafka.example.com:9093").unwrap();
    assert!(check_brokers(&none, &public, true).is_ok());
    let refused = check_brokers(&none, &public, false).unwrap_err();
    assert!(refused.contains("TLS"), "{refused}");
}

#[test]
fn records_are_one_json_object_per_line_and_big_events_are_cut() {
    let mut log = wire::test_log(Uuid::new_v4(), Utc::now());
    log.details = serde_json::json!({ "blob": "x".repeat(MAX_RECORD_BYTES * 2) });
    let batches = build_batches(&[log.clone(), wire::test_log(log.subscription_id, Utc::now())]);
    assert_eq!(batches.len(), 1);
    let lines: Vec<&[u8]> = batches[0].body.split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 2);
    let first: Value = serde_json::from_slice(lines[0]).unwrap();
    assert!(lines[0].len() <= MAX_RECORD_BYTES);
    assert_eq!(first["Truncated"], true);
    assert_eq!(first["EventUuid"], log.uuid.to_string());
}
