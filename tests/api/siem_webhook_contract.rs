//! The signed webhook client against a strict Standard Webhooks receiver: format, signatures,
//! rotation, retries and every failure mode.

use std::sync::Arc;
use std::time::Duration;

use crate::support::fake_webhook::{Behavior, FakeWebhook, ReceiverOptions};
use chrono::Utc;
use cloudpki::domain::events::{catalog, EventId};
use cloudpki::domain::webhook::{ExtraHeaders, SigningSecret, WebhookUrl};
use cloudpki::siem::egress::{http_client_with_timeouts, EgressPolicy, HttpTimeouts, StaticLookup};
use cloudpki::siem::webhook::{
    build_batches, event_object, send_batch, test_connection, webhook_id, WebhookConfig,
    WebhookDestination,
};
use cloudpki::siem::{AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailureKind};
use serde_json::{json, Value};
use uuid::Uuid;

fn loopback_egress() -> EgressPolicy {
    EgressPolicy::parse("127.0.0.1").expect("valid policy")
}

fn client_with(egress: EgressPolicy, lookup: StaticLookup, request: Duration) -> reqwest::Client {
    http_client_with_timeouts(
        Arc::new(egress),
        Arc::new(lookup),
        HttpTimeouts {
            connect: Duration::from_secs(2),
            request,
        },
    )
    .expect("client builds")
}

fn client() -> reqwest::Client {
    client_with(
        loopback_egress(),
        StaticLookup::default(),
        Duration::from_secs(10),
    )
}

fn config(url: &str, secrets: &[SigningSecret]) -> WebhookConfig {
    WebhookConfig {
        url: WebhookUrl::parse(url).expect("valid url"),
        headers: ExtraHeaders::none(),
        secrets: secrets.to_vec(),
    }
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

fn one_batch() -> Batch {
    let log = audit(EventId::parse(4887).expect("catalog id"), json!({}));
    build_batches(&[log], Utc::now()).remove(0)
}

async fn send(cfg: &WebhookConfig, batch: &Batch) -> Disposition {
    send_batch(&client(), &loopback_egress(), cfg, batch, Utc::now())
        .await
        .expect("an HTTP answer")
}

#[tokio::test]
async fn the_eleven_catalog_events_arrive_signed_and_verified() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let cfg = config(&fake.url(), std::slice::from_ref(&secret));
    let logs: Vec<AuditLog> = catalog()
        .iter()
        .map(|info| audit(info.id, json!({ "ca": "Issuing CA 1" })))
        .collect();
    let batches = build_batches(&logs, Utc::now());
    assert_eq!(batches.len(), 1);

    assert_eq!(send(&cfg, &batches[0]).await, Disposition::Delivered);

    assert_eq!(fake.refusals(), Vec::<String>::new());
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(delivery.webhook_id, webhook_id(&batches[0].event_uuids));
    assert!((Utc::now().timestamp() - delivery.timestamp).abs() < 60);
    assert!(delivery.signature.starts_with("v1,"));
    assert_eq!(delivery.payload["type"], "ezca.audit_events");
    let received = fake.events();
    assert_eq!(received.len(), 11);
    for (log, got) in logs.iter().zip(&received) {
        let info = log.event_id.info();
        assert_eq!(got, &event_object(log));
        assert_eq!(got["EventID"], json!(log.event_id.get()));
        assert_eq!(got["EventSummary"], info.summary);
        assert_eq!(got["Criticality"], info.criticality.as_str());
        assert_eq!(got["SubscriptionId"], log.subscription_id.to_string());
        assert_eq!(got["EventUuid"], log.uuid.to_string());
        assert_eq!(got["Actor"], "alice@example.com");
        assert_eq!(got["details"], json!({ "ca": "Issuing CA 1" }));
        let date = got["date"].as_str().expect("date is text");
        chrono::DateTime::parse_from_rfc3339(date).expect("date is RFC 3339");
    }
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("content-encoding").is_none());
    assert!(headers["user-agent"]
        .to_str()
        .expect("ascii")
        .starts_with("cloudpki/"));
}

#[tokio::test]
async fn during_rotation_receivers_knowing_either_secret_verify() {
    let old = SigningSecret::generate();
    let new = SigningSecret::generate();
    let cfg_for = |fake: &FakeWebhook| config(&fake.url(), &[new.clone(), old.clone()]);

    let knows_old = FakeWebhook::start(std::slice::from_ref(&old)).await;
    assert_eq!(
        send(&cfg_for(&knows_old), &one_batch()).await,
        Disposition::Delivered
    );
    assert_eq!(knows_old.deliveries().len(), 1);
    let signature = &knows_old.deliveries()[0].signature;
    assert_eq!(signature.split(' ').count(), 2, "{signature}");

    let knows_new = FakeWebhook::start(std::slice::from_ref(&new)).await;
    assert_eq!(
        send(&cfg_for(&knows_new), &one_batch()).await,
        Disposition::Delivered
    );
    assert_eq!(knows_new.deliveries().len(), 1);

    // Once the old secret leaves the overlap window, a receiver still on it refuses.
    let only_new = config(&knows_old.url(), std::slice::from_ref(&new));
    let outcome = send(&only_new, &one_batch()).await;
    assert!(
        matches!(outcome, Disposition::AuthFailed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_retry_of_the_same_batch_carries_the_same_webhook_id() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let cfg = config(&fake.url(), std::slice::from_ref(&secret));
    let logs: Vec<AuditLog> = (0..3)
        .map(|_| audit(EventId::parse(12).expect("catalog id"), json!({})))
        .collect();
    fake.script(vec![Behavior::Status(503)]);

    let first = send(&cfg, &build_batches(&logs, Utc::now())[0]).await;
    assert!(matches!(first, Disposition::Retry { .. }), "{first:?}");
    // The forwarder rebuilds the batch from the same events later.
    let rebuilt = build_batches(&logs, Utc::now() + chrono::Duration::minutes(5));
    assert_eq!(send(&cfg, &rebuilt[0]).await, Disposition::Delivered);
    // A lost acknowledgement makes it send once more: the receiver dedupes on the id.
    assert_eq!(send(&cfg, &rebuilt[0]).await, Disposition::Delivered);

    let ids = fake.webhook_ids();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(ids[0], webhook_id(&rebuilt[0].event_uuids));
    assert_eq!(fake.events().len(), 3);
    assert_eq!(fake.duplicates(), 1);
}

#[tokio::test]
async fn gone_410_tells_the_forwarder_to_stop() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    fake.script(vec![Behavior::Gone]);

    let outcome = send(
        &config(&fake.url(), std::slice::from_ref(&secret)),
        &one_batch(),
    )
    .await;

    let Disposition::Gone { reason } = outcome else {
        panic!("expected Gone, got {outcome:?}");
    };
    assert!(reason.contains("410"), "{reason}");
}

#[tokio::test]
async fn retries_after_429_honouring_retry_after() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    fake.script(vec![Behavior::StatusWithRetryAfter(429, 42)]);

    let outcome = send(
        &config(&fake.url(), std::slice::from_ref(&secret)),
        &one_batch(),
    )
    .await;

    let Disposition::Retry { after, reason } = outcome else {
        panic!("expected Retry, got {outcome:?}");
    };
    assert_eq!(after, Some(Duration::from_secs(42)));
    assert!(reason.contains("429"), "{reason}");
}

#[tokio::test]
async fn server_errors_are_retried_and_the_next_attempt_delivers() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let cfg = config(&fake.url(), std::slice::from_ref(&secret));
    let batch = one_batch();
    for status in [500, 502, 503, 504] {
        fake.script(vec![Behavior::Status(status)]);
        let outcome = send(&cfg, &batch).await;
        // A gateway's 502/504: the receiver may have the events, the resend is counted.
        let unconfirmed = matches!(status, 502 | 504);
        assert!(
            matches!(outcome, Disposition::Retry { after: None, .. } if !unconfirmed)
                || matches!(outcome, Disposition::Unconfirmed { after: None, .. } if unconfirmed),
            "{status}: {outcome:?}"
        );
    }
    assert_eq!(send(&cfg, &batch).await, Disposition::Delivered);
    assert_eq!(fake.events().len(), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_auth_failed() {
    let fake = FakeWebhook::start(&[SigningSecret::generate()]).await;
    let cfg = config(&fake.url(), &[SigningSecret::generate()]);

    let outcome = send(&cfg, &one_batch()).await;

    let Disposition::AuthFailed { reason } = outcome else {
        panic!("expected AuthFailed, got {outcome:?}");
    };
    assert!(reason.contains("401"), "{reason}");
    assert!(fake.events().is_empty());
    assert!(
        fake.refusals()[0].contains("signature"),
        "{:?}",
        fake.refusals()
    );
}

#[tokio::test]
async fn a_stale_timestamp_is_refused_by_the_receiver() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let cfg = config(&fake.url(), std::slice::from_ref(&secret));
    let ten_minutes_ago = Utc::now() - chrono::Duration::minutes(10);

    let outcome = send_batch(
        &client(),
        &loopback_egress(),
        &cfg,
        &one_batch(),
        ten_minutes_ago,
    )
    .await
    .expect("an HTTP answer");

    assert!(
        matches!(outcome, Disposition::AuthFailed { .. }),
        "{outcome:?}"
    );
    assert!(
        fake.refusals()[0].contains("tolerance"),
        "{:?}",
        fake.refusals()
    );
}

#[tokio::test]
async fn extra_headers_are_sent_and_a_receiver_needing_one_refuses_without_it() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start_with(ReceiverOptions {
        secrets: vec![secret.clone()],
        required_header: Some(("authorization".into(), "Bearer x".into())),
    })
    .await;
    let mut cfg = config(&fake.url(), std::slice::from_ref(&secret));

    let without = send(&cfg, &one_batch()).await;
    assert!(
        matches!(without, Disposition::AuthFailed { .. }),
        "{without:?}"
    );

    cfg.headers = ExtraHeaders::parse("Authorization: Bearer x\nX-Team: soc-eu").expect("valid");
    assert_eq!(send(&cfg, &one_batch()).await, Disposition::Delivered);
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["authorization"], "Bearer x");
    assert_eq!(headers["x-team"], "soc-eu");
}

#[tokio::test]
async fn no_signing_secret_sends_nothing() {
    let fake = FakeWebhook::start(&[SigningSecret::generate()]).await;
    let cfg = config(&fake.url(), &[]);

    let outcome = send(&cfg, &one_batch()).await;

    assert!(
        matches!(outcome, Disposition::AuthFailed { .. }),
        "{outcome:?}"
    );
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn a_dropped_connection_is_a_retryable_send_error() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    fake.script(vec![Behavior::DropConnection]);
    let cfg = config(&fake.url(), std::slice::from_ref(&secret));

    let err = send_batch(
        &client(),
        &loopback_egress(),
        &cfg,
        &one_batch(),
        Utc::now(),
    )
    .await
    .expect_err("no answer");

    assert!(matches!(err, SendError::ConnectionClosed { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn egress_refusal_sends_nothing() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let cfg = config(&fake.url(), std::slice::from_ref(&secret));
    let public_only = EgressPolicy::default();
    let client = client_with(
        public_only.clone(),
        StaticLookup::default(),
        Duration::from_secs(10),
    );

    let err = send_batch(&client, &public_only, &cfg, &one_batch(), Utc::now())
        .await
        .expect_err("refused");
    assert!(matches!(err, SendError::EgressDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());

    let failure = test_connection(&client, &public_only, &cfg, Uuid::new_v4())
        .await
        .expect_err("refused");
    assert_eq!(failure.kind, TestFailureKind::EgressDenied);
    assert!(failure.message.contains("nothing was sent"), "{failure}");
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn test_connection_sends_one_signed_ezca_test_event() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let destination = WebhookDestination {
        config: config(&fake.url(), std::slice::from_ref(&secret)),
    };
    let subscription = Uuid::new_v4();

    let success = destination
        .test_connection(&client(), &loopback_egress(), subscription)
        .await
        .expect("test passes");

    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        success.query,
        format!("webhook-id {}", deliveries[0].webhook_id)
    );
    assert_eq!(success.explorer_url, None);
    assert!(success.message.contains(&deliveries[0].webhook_id));
    assert_eq!(deliveries[0].payload["type"], "ezca.test");
    let events = fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["EventID"], 0);
    assert_eq!(events[0]["EventSummary"], "SIEM connection test");
    assert_eq!(events[0]["SubscriptionId"], subscription.to_string());
}

#[tokio::test]
async fn test_connection_explains_each_refusal() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let subscription = Uuid::new_v4();
    let run = |cfg: WebhookConfig| async move {
        test_connection(&client(), &loopback_egress(), &cfg, subscription)
            .await
            .expect_err("test fails")
    };

    let wrong_secret = run(config(&fake.url(), &[SigningSecret::generate()])).await;
    assert_eq!(wrong_secret.kind, TestFailureKind::InvalidCredentials);
    assert!(
        wrong_secret
            .message
            .contains("refused the request (HTTP 401)"),
        "{wrong_secret}"
    );

    let wrong_path = run(config(
        &format!("{}/nope", fake.base_url()),
        std::slice::from_ref(&secret),
    ))
    .await;
    assert_eq!(wrong_path.kind, TestFailureKind::WrongUrl);
    assert!(wrong_path.message.contains("404"), "{wrong_path}");

    let right = config(&fake.url(), std::slice::from_ref(&secret));
    fake.script(vec![Behavior::Gone]);
    let gone = run(right.clone()).await;
    assert_eq!(gone.kind, TestFailureKind::WrongUrl);
    assert!(gone.message.contains("410 Gone"), "{gone}");

    fake.script(vec![Behavior::Status(302)]);
    let redirect = run(right.clone()).await;
    assert_eq!(redirect.kind, TestFailureKind::WrongUrl);
    assert!(redirect.message.contains("redirect"), "{redirect}");

    fake.script(vec![Behavior::Status(503)]);
    let busy = run(right.clone()).await;
    assert_eq!(busy.kind, TestFailureKind::Unavailable);

    let no_secret = run(config(&fake.url(), &[])).await;
    assert_eq!(no_secret.kind, TestFailureKind::InvalidCredentials);

    let refused = run(config(
        &format!(
            "http://127.0.0.1:{}/hooks",
            crate::support::ports::outside_the_ephemeral_range()
        ),
        std::slice::from_ref(&secret),
    ))
    .await;
    assert_eq!(refused.kind, TestFailureKind::ConnectionRefused);
    assert!(refused.message.contains("127.0.0.1"), "{refused}");

    assert!(fake.events().is_empty());
}

#[tokio::test]
async fn test_connection_explains_dns_tls_and_timeout() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    let subscription = Uuid::new_v4();

    // A name the resolver does not know (allowed by the policy, so DNS is asked).
    let policy = EgressPolicy::parse("127.0.0.1,no-such-host.test").expect("valid policy");
    let client = client_with(
        policy.clone(),
        StaticLookup::default(),
        Duration::from_secs(10),
    );
    let dns = test_connection(
        &client,
        &policy,
        &config(
            "http://no-such-host.test:9/hooks",
            std::slice::from_ref(&secret),
        ),
        subscription,
    )
    .await
    .expect_err("no such host");
    assert_eq!(dns.kind, TestFailureKind::Dns);
    assert!(dns.message.contains("no-such-host.test"), "{dns}");

    // https to a plain-http server: the TLS handshake fails.
    let tls_url = fake.url().replace("http://", "https://");
    let tls = test_connection(
        &client,
        &policy,
        &config(&tls_url, std::slice::from_ref(&secret)),
        subscription,
    )
    .await
    .expect_err("not TLS");
    assert_eq!(tls.kind, TestFailureKind::Tls, "{tls}");

    // A receiver slower than the client's timeout.
    fake.script(vec![Behavior::Stall(Duration::from_secs(3))]);
    let impatient = client_with(
        loopback_egress(),
        StaticLookup::default(),
        Duration::from_millis(500),
    );
    let timeout = test_connection(
        &impatient,
        &loopback_egress(),
        &config(&fake.url(), std::slice::from_ref(&secret)),
        subscription,
    )
    .await
    .expect_err("too slow");
    assert_eq!(timeout.kind, TestFailureKind::Timeout);
}

#[tokio::test]
async fn an_oversized_request_is_split() {
    let secret = SigningSecret::generate();
    let fake = FakeWebhook::start(std::slice::from_ref(&secret)).await;
    fake.script(vec![Behavior::Status(413)]);

    let outcome = send(
        &config(&fake.url(), std::slice::from_ref(&secret)),
        &one_batch(),
    )
    .await;

    assert_eq!(outcome, Disposition::SplitBatch);
}
