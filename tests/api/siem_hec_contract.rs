//! The HEC client (Splunk and LogScale) against the strict fake collector: format, limits,
//! partial acceptance, acknowledgements and every failure mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fake_hec::{Behavior, FakeHec, HecMode, TokenAck};
use chrono::Utc;
use cloudpki::domain::events::{catalog, EventId};
use cloudpki::domain::hec::{HecToken, HecUrl, SourceType, SplunkIndex};
use cloudpki::siem::egress::{http_client_with_timeouts, EgressPolicy, HttpTimeouts, StaticLookup};
use cloudpki::siem::hec::{
    build_batches, event_object, send_batch, test_connection, AckTiming, HecConfig, HecDestination,
    HecFlavor, MAX_BATCH_BYTES,
};
use cloudpki::siem::{AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailureKind};
use serde_json::{json, Value};
use uuid::Uuid;

const TOKEN: &str = "12345678-9abc-def0-1234-56789abcdef0";
const OTHER_TOKEN: &str = "ffffffff-ffff-ffff-ffff-ffffffffffff";
const LOGSCALE_TOKEN: &str = "ls-ingest-0123456789abcdefghij";
const HOSTNAME: &str = "pki.test";

fn loopback_egress() -> EgressPolicy {
    EgressPolicy::parse("127.0.0.1").expect("valid policy")
}

fn client_with_timeout(request: Duration) -> reqwest::Client {
    http_client_with_timeouts(
        Arc::new(loopback_egress()),
        Arc::new(StaticLookup::default()),
        HttpTimeouts {
            connect: Duration::from_secs(2),
            request,
        },
    )
    .expect("client builds")
}

fn client() -> reqwest::Client {
    client_with_timeout(Duration::from_secs(10))
}

fn splunk(base: &str, token: &str) -> HecConfig {
    let mut cfg = HecConfig::new(
        HecFlavor::Splunk,
        HecUrl::parse(base).expect("valid url"),
        HecToken::parse_splunk(token).expect("valid token"),
    );
    cfg.ack_timing = AckTiming {
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
    };
    cfg
}

fn logscale(base: &str, token: &str) -> HecConfig {
    HecConfig::new(
        HecFlavor::LogScale,
        HecUrl::parse(base).expect("valid url"),
        HecToken::parse_logscale(token).expect("valid token"),
    )
}

fn audit(event_id: EventId, details: Value) -> AuditLog {
    let now = Utc::now();
    AuditLog {
        sequence: 0,
        uuid: Uuid::new_v4(),
        subscription_id: Uuid::new_v4(),
        event_id,
        occurred_at: now,
        recorded_at: now,
        actor: Some("alice@example.com".into()),
        details,
        chain: None,
    }
}

fn any_event(details: Value) -> AuditLog {
    audit(EventId::parse(4887).expect("catalog id"), details)
}

fn one_batch(cfg: &HecConfig) -> Batch {
    build_batches(cfg, &[any_event(json!({}))], HOSTNAME, Utc::now()).remove(0)
}

async fn send(cfg: &HecConfig, batch: &Batch) -> Disposition {
    send_batch(&client(), &loopback_egress(), cfg, batch)
        .await
        .expect("an HTTP answer")
}

#[tokio::test]
async fn the_eleven_catalog_events_arrive_with_the_documented_envelope() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let mut cfg = splunk(&fake.base_url(), TOKEN);
    cfg.index = Some(SplunkIndex::parse("pki").expect("index"));
    let logs: Vec<AuditLog> = catalog()
        .iter()
        .map(|info| audit(info.id, json!({ "ca": "Issuing CA 1" })))
        .collect();
    let batches = build_batches(&cfg, &logs, HOSTNAME, Utc::now());
    assert_eq!(batches.len(), 1);

    assert_eq!(send(&cfg, &batches[0]).await, Disposition::Delivered);

    let received = fake.events();
    assert_eq!(received.len(), 11);
    for (log, got) in logs.iter().zip(&received) {
        let info = log.event_id.info();
        assert_eq!(got["host"], HOSTNAME);
        assert_eq!(got["source"], "cloudpki");
        assert_eq!(got["sourcetype"], "ezca:audit");
        assert_eq!(got["index"], "pki");
        let time = got["time"].as_f64().expect("time is a number");
        let expected = log.occurred_at.timestamp_millis() as f64 / 1000.0;
        assert!((time - expected).abs() < 0.0005, "{time} vs {expected}");
        let event = &got["event"];
        assert_eq!(event, &event_object(log));
        assert_eq!(event["EventID"], json!(log.event_id.get()));
        assert_eq!(event["EventSummary"], info.summary);
        assert_eq!(event["Criticality"], info.criticality.as_str());
        assert_eq!(event["SubscriptionId"], log.subscription_id.to_string());
        assert_eq!(event["EventUuid"], log.uuid.to_string());
        assert_eq!(event["Actor"], "alice@example.com");
        assert_eq!(event["details"], json!({ "ca": "Issuing CA 1" }));
        assert_eq!(
            event["message"],
            format!(
                "{} (Event ID {}) by alice@example.com",
                info.summary, log.event_id
            )
        );
    }
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["authorization"], format!("Splunk {TOKEN}"));
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.get("content-encoding").is_none(),
        "sent uncompressed"
    );
    assert!(
        headers.get("x-splunk-request-channel").is_none(),
        "no ack asked"
    );
    assert!(headers["user-agent"]
        .to_str()
        .expect("ascii")
        .starts_with("cloudpki/"));
}

#[tokio::test]
async fn batches_stay_under_one_megabyte_and_all_arrive() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let cfg = splunk(&fake.base_url(), TOKEN);
    let mut logs: Vec<AuditLog> = (0..9)
        .map(|_| any_event(json!({ "blob": "v".repeat(400_000) })))
        .collect();
    logs.push(any_event(json!({ "blob": "w".repeat(2_000_000) })));
    logs.extend((0..1500).map(|_| any_event(json!({}))));

    let batches = build_batches(&cfg, &logs, HOSTNAME, Utc::now());
    assert!(batches
        .iter()
        .all(|b| b.body.len() < MAX_BATCH_BYTES && b.len() <= 1000));
    for batch in &batches {
        assert_eq!(send(&cfg, batch).await, Disposition::Delivered);
    }

    let uuids: Vec<String> = logs.iter().map(|l| l.uuid.to_string()).collect();
    assert_eq!(fake.event_uuids(), uuids);
    let truncated = &fake.events()[9]["event"];
    assert_eq!(truncated["Truncated"], true);
    assert_eq!(fake.event_requests(), batches.len());
}

#[tokio::test]
async fn an_oversized_body_gets_413_and_split_batch() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let cfg = splunk(&fake.base_url(), TOKEN);
    let logs: Vec<AuditLog> = (0..3)
        .map(|_| any_event(json!({ "blob": "z".repeat(600_000) })))
        .collect();
    let parts = build_batches(&cfg, &logs, HOSTNAME, Utc::now());
    // Hand-packed past the limit, as a batch built under other limits might be.
    let oversized = Batch {
        event_uuids: parts.iter().flat_map(|b| b.event_uuids.clone()).collect(),
        body: parts
            .iter()
            .map(|b| b.body.clone())
            .collect::<Vec<_>>()
            .join(&b'\n'),
    };

    assert_eq!(send(&cfg, &oversized).await, Disposition::SplitBatch);
    assert!(fake.events().is_empty());
}

/// Acts like the forwarder for one destination: sends the pending events batch by batch;
/// `Delivered` marks them done, `PartialAccept` marks the prefix done, parks the refused event
/// and keeps the rest pending. Returns (delivered, parked) uuids.
async fn forward_until_done(cfg: &HecConfig, logs: Vec<AuditLog>) -> (Vec<Uuid>, Vec<Uuid>) {
    let mut pending = logs;
    let mut delivered = Vec::new();
    let mut parked = Vec::new();
    for _round in 0..10 {
        if pending.is_empty() {
            break;
        }
        let batch = build_batches(cfg, &pending, HOSTNAME, Utc::now()).remove(0);
        match send(cfg, &batch).await {
            Disposition::Delivered => {
                delivered.extend(batch.event_uuids.iter().copied());
                pending.retain(|l| !batch.event_uuids.contains(&l.uuid));
            }
            Disposition::PartialAccept { accepted, reason } => {
                assert!(reason.contains("malformed"), "{reason}");
                delivered.extend(batch.event_uuids[..accepted].iter().copied());
                parked.push(batch.event_uuids[accepted]);
                let done = &batch.event_uuids[..=accepted];
                pending.retain(|l| !done.contains(&l.uuid));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pending.is_empty(), "forwarding did not finish");
    (delivered, parked)
}

#[tokio::test]
async fn code_6_at_event_k_parks_it_and_never_resends_the_indexed_prefix() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let cfg = splunk(&fake.base_url(), TOKEN);
    let logs: Vec<AuditLog> = (0..10).map(|i| any_event(json!({ "n": i }))).collect();
    let uuids: Vec<Uuid> = logs.iter().map(|l| l.uuid).collect();
    fake.script(vec![Behavior::RejectEventAt(4)]);

    let first = send(&cfg, &build_batches(&cfg, &logs, HOSTNAME, Utc::now())[0]).await;
    assert!(
        matches!(first, Disposition::PartialAccept { accepted: 4, .. }),
        "{first:?}"
    );
    assert_eq!(fake.events().len(), 4);

    // Replay as the forwarder would, from the same state the first answer left.
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let cfg = splunk(&fake.base_url(), TOKEN);
    fake.script(vec![Behavior::RejectEventAt(4), Behavior::RejectEventAt(2)]);
    let (delivered, parked) = forward_until_done(&cfg, logs).await;

    assert_eq!(parked, [uuids[4], uuids[7]]);
    let received = fake.event_uuids();
    let mut unique = received.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        received.len(),
        "an indexed event was sent twice"
    );
    assert_eq!(received.len(), 8);
    let expected: Vec<String> = uuids
        .iter()
        .filter(|u| !parked.contains(u))
        .map(Uuid::to_string)
        .collect();
    assert_eq!(received, expected);
    assert_eq!(delivered.len(), 8);
    assert_eq!(fake.event_requests(), 3);
}

#[tokio::test]
async fn auth_url_and_availability_answers_are_classified_through_the_real_client() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let batch = one_batch(&splunk(&fake.base_url(), TOKEN));

    // 401 (code 2, token missing), as a proxy that strips the header would cause.
    let cfg = splunk(&fake.base_url(), TOKEN);
    fake.script(vec![Behavior::Status(401, 2)]);
    let outcome = send(&cfg, &batch).await;
    let Disposition::AuthFailed { reason } = outcome else {
        panic!("401 is AuthFailed, got {outcome:?}");
    };
    assert!(
        reason.contains("401") && reason.contains("code 2"),
        "{reason}"
    );

    // 403: wrong token (code 4).
    let outcome = send(&splunk(&fake.base_url(), OTHER_TOKEN), &batch).await;
    let Disposition::AuthFailed { reason } = outcome else {
        panic!("403 is AuthFailed, got {outcome:?}");
    };
    assert!(
        reason.contains("403") && reason.contains("Invalid token"),
        "{reason}"
    );

    // 404: a path prefix that is not the collector.
    let wrong = splunk(&format!("{}/not-hec", fake.base_url()), TOKEN);
    let outcome = send(&wrong, &batch).await;
    assert!(
        matches!(&outcome, Disposition::AuthFailed { reason } if reason.contains("404")),
        "{outcome:?}"
    );

    fake.script(vec![
        Behavior::Status(503, 9),
        Behavior::StatusWithRetryAfter(429, 9, 17),
        Behavior::Status(500, 8),
    ]);
    let outcome = send(&cfg, &batch).await;
    assert!(
        matches!(&outcome, Disposition::Retry { after: None, reason } if reason.contains("503") && reason.contains("busy")),
        "{outcome:?}"
    );
    let outcome = send(&cfg, &batch).await;
    assert!(
        matches!(outcome, Disposition::Retry { after: Some(after), .. } if after == Duration::from_secs(17)),
        "{outcome:?}"
    );
    let outcome = send(&cfg, &batch).await;
    assert!(matches!(outcome, Disposition::Retry { .. }), "{outcome:?}");

    // Back to normal once the script is used up; nothing before was indexed.
    assert_eq!(send(&cfg, &batch).await, Disposition::Delivered);
    assert_eq!(fake.events().len(), 1);
}

#[tokio::test]
async fn an_index_outside_the_tokens_list_is_a_configuration_error() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    fake.allow_indexes(&["main"]);
    let mut cfg = splunk(&fake.base_url(), TOKEN);
    cfg.index = Some(SplunkIndex::parse("security").expect("index"));

    let outcome = send(&cfg, &one_batch(&cfg)).await;
    assert!(
        matches!(&outcome, Disposition::AuthFailed { reason } if reason.contains("allowed indexes")),
        "{outcome:?}"
    );

    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("index refused");
    assert_eq!(failure.kind, TestFailureKind::InvalidCredentials);
    assert!(
        failure.message.contains("refused the index security"),
        "{failure}"
    );
    assert!(fake.events().is_empty());
}

#[tokio::test]
async fn with_acknowledgement_a_batch_is_delivered_only_once_acknowledged() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let mut cfg = splunk(&fake.base_url(), TOKEN);
    cfg.ack = true;
    let batch = one_batch(&cfg);

    assert_eq!(send(&cfg, &batch).await, Disposition::Delivered);
    assert!(fake.ack_polls() >= 1);
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["x-splunk-request-channel"], cfg.channel.to_string());

    // The same channel on every request of this destination.
    assert_eq!(send(&cfg, &batch).await, Disposition::Delivered);
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["x-splunk-request-channel"], cfg.channel.to_string());
}

#[tokio::test]
async fn an_acknowledgement_that_never_comes_is_retried_with_a_plain_reason() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let mut cfg = splunk(&fake.base_url(), TOKEN);
    cfg.ack = true;
    fake.script(vec![Behavior::NeverAck, Behavior::NeverAck]);
    let batch = one_batch(&cfg);

    let started = Instant::now();
    let outcome = send(&cfg, &batch).await;
    // Splunk may hold the events: the resend is counted as a possible duplicate.
    let Disposition::Unconfirmed {
        after: None,
        reason,
    } = outcome
    else {
        panic!("expected Unconfirmed, got {outcome:?}");
    };
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        reason.contains("did not confirm") && reason.contains("sent again"),
        "{reason}"
    );
    assert!(fake.ack_polls() >= 10, "{}", fake.ack_polls());

    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("never acknowledged");
    assert_eq!(failure.kind, TestFailureKind::Unavailable, "{failure}");
    assert!(failure.message.contains("did not confirm"), "{failure}");
}

#[tokio::test]
async fn acknowledgement_settings_that_disagree_with_the_token_are_explained() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let mut cfg = splunk(&fake.base_url(), TOKEN);

    // The token requires a channel but acknowledgement is off here: code 10.
    fake.set_token_ack(TokenAck::Required);
    let outcome = send(&cfg, &one_batch(&cfg)).await;
    assert!(
        matches!(&outcome, Disposition::AuthFailed { reason } if reason.contains("requires indexer acknowledgement")),
        "{outcome:?}"
    );
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("channel missing");
    assert!(
        failure.message.contains("Turn on indexer acknowledgement"),
        "{failure}"
    );

    // Acknowledgement on here but off on the token: the 200 is trusted, the test explains.
    fake.set_token_ack(TokenAck::Disabled);
    cfg.ack = true;
    assert_eq!(send(&cfg, &one_batch(&cfg)).await, Disposition::Delivered);
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("ack off on the token");
    assert_eq!(failure.kind, TestFailureKind::Other);
    assert!(
        failure.message.contains("indexer acknowledgement is off"),
        "{failure}"
    );
}

#[tokio::test]
async fn test_connection_sends_one_labelled_event_and_names_the_search() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let mut cfg = splunk(&fake.base_url(), TOKEN);
    cfg.sourcetype = SourceType::parse("ezca:json").expect("sourcetype");
    cfg.ack = true;
    let subscription = Uuid::new_v4();

    let success = test_connection(&client(), &loopback_egress(), &cfg, subscription, HOSTNAME)
        .await
        .expect("test passes");

    assert_eq!(success.query, "index=main sourcetype=ezca:json EventID=0");
    assert_eq!(success.explorer_url, None);
    assert!(
        success.message.contains("confirmed it was indexed"),
        "{}",
        success.message
    );
    let events = fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["sourcetype"], "ezca:json");
    assert_eq!(events[0]["event"]["EventID"], 0);
    assert_eq!(events[0]["event"]["EventSummary"], "SIEM connection test");
    assert_eq!(events[0]["event"]["details"]["ConnectionTest"], true);
    assert_eq!(
        events[0]["event"]["SubscriptionId"],
        subscription.to_string()
    );
}

#[tokio::test]
async fn test_connection_explains_token_url_and_availability_failures() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let run = |cfg: HecConfig| async move {
        test_connection(
            &client(),
            &loopback_egress(),
            &cfg,
            Uuid::new_v4(),
            HOSTNAME,
        )
        .await
        .expect_err("test fails")
    };

    let failure = run(splunk(&fake.base_url(), OTHER_TOKEN)).await;
    assert_eq!(failure.kind, TestFailureKind::InvalidCredentials);
    assert!(
        failure.message.contains("refused the HEC token (HTTP 403"),
        "{failure}"
    );

    let failure = run(splunk(&format!("{}/splunk", fake.base_url()), TOKEN)).await;
    assert_eq!(failure.kind, TestFailureKind::WrongUrl);
    assert!(
        failure.message.contains("was not found (HTTP 404)"),
        "{failure}"
    );

    fake.script(vec![Behavior::Status(503, 9)]);
    let failure = run(splunk(&fake.base_url(), TOKEN)).await;
    assert_eq!(failure.kind, TestFailureKind::Unavailable);
    assert!(
        failure
            .message
            .contains("temporarily unavailable (HTTP 503, code 9"),
        "{failure}"
    );

    fake.script(vec![Behavior::DropConnection]);
    let failure = run(splunk(&fake.base_url(), TOKEN)).await;
    assert_eq!(failure.kind, TestFailureKind::ConnectionClosed);

    assert!(fake.events().is_empty());
}

#[tokio::test]
async fn test_connection_explains_transport_failures() {
    // Refused: nobody listens.
    let cfg = splunk(
        &format!(
            "http://127.0.0.1:{}",
            crate::support::ports::outside_the_ephemeral_range()
        ),
        TOKEN,
    );
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("refused");
    assert_eq!(failure.kind, TestFailureKind::ConnectionRefused);
    assert!(
        failure.message.contains("refused the connection"),
        "{failure}"
    );

    // TLS: https to a plain-http collector.
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let cfg = splunk(&fake.base_url().replace("http://", "https://"), TOKEN);
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("not TLS");
    assert_eq!(failure.kind, TestFailureKind::Tls, "{failure}");
    assert!(
        failure.message.contains("publicly trusted certificate"),
        "{failure}"
    );

    // Timeout.
    fake.script(vec![Behavior::Stall(Duration::from_secs(3))]);
    let cfg = splunk(&fake.base_url(), TOKEN);
    let started = Instant::now();
    let failure = test_connection(
        &client_with_timeout(Duration::from_millis(800)),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("times out");
    assert_eq!(failure.kind, TestFailureKind::Timeout);
    assert!(
        failure.message.contains("did not answer within"),
        "{failure}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // DNS.
    let egress = EgressPolicy::parse("splunk.invalid").expect("valid policy");
    let client = http_client_with_timeouts(
        Arc::new(egress.clone()),
        Arc::new(StaticLookup::default()),
        HttpTimeouts::default(),
    )
    .expect("client builds");
    let cfg = splunk("http://splunk.invalid:8088", TOKEN);
    let failure = test_connection(&client, &egress, &cfg, Uuid::new_v4(), HOSTNAME)
        .await
        .expect_err("no such host");
    assert_eq!(failure.kind, TestFailureKind::Dns);
    assert!(failure.message.contains("could not be found"), "{failure}");
}

#[tokio::test]
async fn the_egress_policy_refuses_before_anything_is_sent() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let cfg = splunk(&format!("http://127.0.0.2:{}", fake.port()), TOKEN);

    let err = send_batch(&client(), &loopback_egress(), &cfg, &one_batch(&cfg))
        .await
        .expect_err("refused by policy");
    assert!(matches!(err, SendError::EgressDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());

    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("refused by policy");
    assert_eq!(failure.kind, TestFailureKind::EgressDenied);
    assert!(
        failure.message.contains("CLOUDPKI_EGRESS_ALLOW"),
        "{failure}"
    );
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn logscale_gets_bearer_auth_on_its_hec_path() {
    let fake = FakeHec::start(HecMode::LogScale, LOGSCALE_TOKEN).await;
    let destination = HecDestination {
        config: logscale(&fake.base_url(), LOGSCALE_TOKEN),
        hostname: HOSTNAME.into(),
    };
    assert_eq!(destination.provider(), "CrowdStrike Falcon LogScale");
    let logs: Vec<AuditLog> = catalog()
        .iter()
        .map(|info| audit(info.id, json!({})))
        .collect();
    let batches = destination.build_batches(&logs, Utc::now());

    let outcome = destination
        .send(&client(), &loopback_egress(), &batches[0])
        .await
        .expect("an HTTP answer");

    assert_eq!(outcome, Disposition::Delivered);
    assert_eq!(fake.events().len(), 11);
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["authorization"], format!("Bearer {LOGSCALE_TOKEN}"));

    let success = destination
        .test_connection(&client(), &loopback_egress(), Uuid::new_v4())
        .await
        .expect("test passes");
    assert_eq!(success.query, "EventID=0");
    assert!(
        success.message.starts_with("LogScale accepted"),
        "{}",
        success.message
    );
    assert_eq!(fake.events().len(), 12);
}

#[tokio::test]
async fn logscale_refuses_a_wrong_token_and_acknowledgement_is_refused_up_front() {
    let fake = FakeHec::start(HecMode::LogScale, LOGSCALE_TOKEN).await;
    let cfg = logscale(&fake.base_url(), "ls-ingest-not-the-right-token-0000");

    let outcome = send(&cfg, &one_batch(&cfg)).await;
    assert!(
        matches!(&outcome, Disposition::AuthFailed { reason } if reason.contains("401")),
        "{outcome:?}"
    );
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("wrong token");
    assert_eq!(failure.kind, TestFailureKind::InvalidCredentials);
    assert!(failure.message.contains("Ingest tokens"), "{failure}");

    let mut with_ack = logscale(&fake.base_url(), LOGSCALE_TOKEN);
    with_ack.ack = true;
    let requests = fake.requests();
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &with_ack,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("ack refused");
    assert!(
        failure
            .message
            .contains("does not offer indexer acknowledgement"),
        "{failure}"
    );
    assert_eq!(fake.requests(), requests, "nothing sent");
    // Sending ignores the flag: no channel header, no ack polling.
    assert_eq!(
        send(&with_ack, &one_batch(&with_ack)).await,
        Disposition::Delivered
    );
    assert!(fake
        .last_headers()
        .expect("a request")
        .get("x-splunk-request-channel")
        .is_none());
}

#[tokio::test]
async fn the_fake_is_strict_about_the_collector_contract() {
    let fake = FakeHec::start(HecMode::Splunk, TOKEN).await;
    let http = reqwest::Client::new();
    let endpoint = format!("{}/services/collector/event", fake.base_url());
    let post = |body: &'static str| {
        http.post(&endpoint)
            .header("Authorization", format!("Splunk {TOKEN}"))
            .body(body)
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        (status, body)
    };

    let (status, body) = answer(
        http.post(&endpoint)
            .body("{}")
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (401, json!(2)));
    let wrong = http
        .post(&endpoint)
        .header("Authorization", format!("Splunk {OTHER_TOKEN}"))
        .body("{}");
    let (status, body) = answer(wrong.send().await.expect("answer")).await;
    assert_eq!(
        (status, body),
        (403, json!({"text": "Invalid token", "code": 4}))
    );

    let (status, body) = answer(post("  ").send().await.expect("answer")).await;
    assert_eq!((status, body["code"].clone()), (400, json!(5)));

    let two_then_bad = r#"{"time":1,"event":{"a":1}} {"time":2,"event":"b"}
{"time":3,"event":""} {"time":4,"event":{"d":1}}"#;
    let (status, body) = answer(post(two_then_bad).send().await.expect("answer")).await;
    assert_eq!((status, body["code"].clone()), (400, json!(6)));
    assert_eq!(body["invalid-event-number"], 2);
    assert_eq!(fake.events().len(), 2, "the two before it were indexed");

    let no_time = r#"{"event":{"a":1}}"#;
    let (status, _) = answer(post(no_time).send().await.expect("answer")).await;
    assert_eq!(status, 400);
    let bad_index = r#"{"time":1,"index":"secret","event":{"a":1}}"#;
    let (status, body) = answer(post(bad_index).send().await.expect("answer")).await;
    assert_eq!((status, body["code"].clone()), (400, json!(7)));

    let (status, body) = answer(
        http.get(format!("{}/services/collector/health", fake.base_url()))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (200, json!(17)));
    let other = http
        .post(format!("{}/api/v2/logs", fake.base_url()))
        .body("{}");
    assert_eq!(other.send().await.expect("answer").status().as_u16(), 404);

    assert_eq!(fake.events().len(), 2);
}
