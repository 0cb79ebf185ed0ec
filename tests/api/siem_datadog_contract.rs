//! The Datadog client against the strict fake intake: format, limits and every failure mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fake_datadog::{Behavior, FakeDatadog};
use chrono::Utc;
use cloudpki::domain::datadog::{DatadogApiKey, DatadogIntakeUrl, DatadogSite};
use cloudpki::domain::events::{catalog, EventId};
use cloudpki::siem::datadog::{
    build_batches, log_object, send_batch, test_connection, DatadogConfig, MAX_PAYLOAD_BYTES,
};
use cloudpki::siem::egress::{http_client_with_timeouts, EgressPolicy, HttpTimeouts, StaticLookup};
use cloudpki::siem::{AuditLog, Batch, Disposition, SendError, TestFailureKind};
use serde_json::{json, Value};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "ffffffffffffffffffffffffffffffff";
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

fn config(base: &str, key: &str) -> DatadogConfig {
    DatadogConfig {
        site: None,
        url: DatadogIntakeUrl::parse(base).expect("valid intake url"),
        api_key: DatadogApiKey::parse(key).expect("valid key"),
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

fn any_event(details: Value) -> AuditLog {
    audit(EventId::parse(4887).expect("catalog id"), details)
}

async fn send_all(fake: &FakeDatadog, batches: &[Batch]) -> Vec<Disposition> {
    let cfg = config(&fake.base_url(), KEY);
    let mut outcomes = Vec::new();
    for batch in batches {
        outcomes.push(
            send_batch(&client(), &loopback_egress(), &cfg, batch)
                .await
                .expect("an HTTP answer"),
        );
    }
    outcomes
}

#[tokio::test]
async fn the_eleven_catalog_events_arrive_in_the_documented_format() {
    let fake = FakeDatadog::start(KEY).await;
    let logs: Vec<AuditLog> = catalog()
        .iter()
        .map(|info| audit(info.id, json!({ "ca": "Issuing CA 1" })))
        .collect();
    let now = Utc::now();
    let batches = build_batches(&logs, HOSTNAME, now);
    assert_eq!(batches.len(), 1);

    assert_eq!(send_all(&fake, &batches).await, [Disposition::Delivered]);

    let received = fake.logs();
    assert_eq!(received.len(), 11);
    for (log, got) in logs.iter().zip(&received) {
        let info = log.event_id.info();
        assert_eq!(got, &log_object(log, HOSTNAME, now));
        assert_eq!(got["service"], "EZCA");
        assert_eq!(got["ddsource"], "ezca");
        assert_eq!(got["hostname"], HOSTNAME);
        assert_eq!(got["status"], info.criticality.datadog_status());
        assert_eq!(got["EventID"], json!(log.event_id.get()));
        assert_eq!(got["EventSummary"], info.summary);
        assert_eq!(got["Criticality"], info.criticality.as_str());
        assert_eq!(got["SubscriptionId"], log.subscription_id.to_string());
        assert_eq!(got["EventUuid"], log.uuid.to_string());
        assert_eq!(got["Actor"], "alice@example.com");
        assert_eq!(got["details"], json!({ "ca": "Issuing CA 1" }));
        assert_eq!(
            got["message"],
            format!(
                "{} (Event ID {}) by alice@example.com",
                info.summary, log.event_id
            )
        );
        assert_eq!(
            got["ddtags"],
            format!(
                "criticality:{},event_id:{},subscription_id:{}",
                info.criticality.as_str().to_lowercase(),
                log.event_id,
                log.subscription_id
            )
        );
        let date = got["date"].as_str().expect("date is text");
        chrono::DateTime::parse_from_rfc3339(date).expect("date is RFC 3339");
    }
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["dd-api-key"], KEY);
    assert!(headers["user-agent"]
        .to_str()
        .expect("ascii")
        .starts_with("cloudpki/"));
}

#[tokio::test]
async fn test_connection_sends_event_zero_and_links_the_log_explorer() {
    let fake = FakeDatadog::start(KEY).await;
    let mut cfg = config(&fake.base_url(), KEY);
    cfg.site = Some(DatadogSite::Eu1);
    let subscription = Uuid::new_v4();

    let success = test_connection(&client(), &loopback_egress(), &cfg, subscription, HOSTNAME)
        .await
        .expect("test passes");

    assert_eq!(success.query, "service:EZCA @EventID:0");
    assert_eq!(
        success.explorer_url.as_deref(),
        Some("https://app.datadoghq.eu/logs?query=service%3AEZCA%20%40EventID%3A0")
    );
    let logs = fake.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["EventID"], 0);
    assert_eq!(logs[0]["EventSummary"], "SIEM connection test");
    assert_eq!(logs[0]["status"], "info");
    assert_eq!(logs[0]["service"], "EZCA");
    assert_eq!(logs[0]["SubscriptionId"], subscription.to_string());

    // A custom URL without a chosen site has no link to offer.
    cfg.site = None;
    let success = test_connection(&client(), &loopback_egress(), &cfg, subscription, HOSTNAME)
        .await
        .expect("test passes");
    assert_eq!(success.explorer_url, None);
}

#[tokio::test]
async fn a_wrong_api_key_is_auth_failed_and_explained() {
    let fake = FakeDatadog::start(KEY).await;
    let cfg = config(&fake.base_url(), OTHER_KEY);
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());

    let outcome = send_batch(&client(), &loopback_egress(), &cfg, &batches[0])
        .await
        .expect("an HTTP answer");
    let Disposition::AuthFailed { reason } = outcome else {
        panic!("expected AuthFailed, got {outcome:?}");
    };
    assert!(
        reason.contains("403") && reason.contains("Forbidden"),
        "{reason}"
    );

    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("test fails");
    assert_eq!(failure.kind, TestFailureKind::InvalidCredentials);
    assert!(failure.message.contains("refused the API key"), "{failure}");
    assert!(
        failure.message.contains("another Datadog site"),
        "{failure}"
    );
    assert!(fake.logs().is_empty());
}

#[tokio::test]
async fn a_wrong_path_is_explained_as_a_wrong_url() {
    let fake = FakeDatadog::start(KEY).await;
    let cfg = config(&format!("{}/not-the-intake", fake.base_url()), KEY);

    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("test fails");
    assert_eq!(failure.kind, TestFailureKind::WrongUrl);
    assert!(
        failure.message.contains("was not found (HTTP 404)"),
        "{failure}"
    );

    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());
    let outcome = send_batch(&client(), &loopback_egress(), &cfg, &batches[0])
        .await
        .expect("an HTTP answer");
    assert!(
        matches!(outcome, Disposition::AuthFailed { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_reported_as_unavailable() {
    let fake = FakeDatadog::start(KEY).await;
    fake.script(vec![
        Behavior::Status(500),
        Behavior::Status(503),
        Behavior::Status(503),
    ]);
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());

    for expected_status in ["500", "503"] {
        let outcome = send_all(&fake, &batches).await.remove(0);
        let Disposition::Retry {
            after: None,
            reason,
        } = outcome
        else {
            panic!("expected Retry, got {outcome:?}");
        };
        assert!(reason.contains(expected_status), "{reason}");
    }
    let cfg = config(&fake.base_url(), KEY);
    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("test fails");
    assert_eq!(failure.kind, TestFailureKind::Unavailable);
    assert!(
        failure.message.contains("temporarily unavailable"),
        "{failure}"
    );

    // Back to normal once the script is used up.
    assert_eq!(send_all(&fake, &batches).await, [Disposition::Delivered]);
    assert_eq!(fake.requests(), 4);
}

#[tokio::test]
async fn retries_after_429_honouring_retry_after() {
    let fake = FakeDatadog::start(KEY).await;
    fake.script(vec![Behavior::StatusWithRetryAfter(429, 17)]);
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());

    let outcome = send_all(&fake, &batches).await.remove(0);

    assert!(
        matches!(outcome, Disposition::Retry { after: Some(after), .. } if after == Duration::from_secs(17)),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_stalled_intake_times_out_with_a_plain_message() {
    let fake = FakeDatadog::start(KEY).await;
    fake.script(vec![
        Behavior::Stall(Duration::from_secs(3)),
        Behavior::Stall(Duration::from_secs(3)),
    ]);
    let cfg = config(&fake.base_url(), KEY);
    let client = client_with_timeout(Duration::from_millis(800));
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());

    let started = Instant::now();
    let err = send_batch(&client, &loopback_egress(), &cfg, &batches[0])
        .await
        .expect_err("times out");
    assert_eq!(err, SendError::Timeout);
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3));

    let failure = test_connection(&client, &loopback_egress(), &cfg, Uuid::new_v4(), HOSTNAME)
        .await
        .expect_err("times out");
    assert_eq!(failure.kind, TestFailureKind::Timeout);
    assert!(
        failure.message.contains("did not answer within"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_a_retryable_connection_error() {
    let fake = FakeDatadog::start(KEY).await;
    fake.script(vec![Behavior::DropConnection, Behavior::DropConnection]);
    let cfg = config(&fake.base_url(), KEY);
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());

    let err = send_batch(&client(), &loopback_egress(), &cfg, &batches[0])
        .await
        .expect_err("no answer");
    assert!(matches!(err, SendError::ConnectionClosed { .. }), "{err:?}");
    assert!(err.is_retryable());

    let failure = test_connection(
        &client(),
        &loopback_egress(),
        &cfg,
        Uuid::new_v4(),
        HOSTNAME,
    )
    .await
    .expect_err("no answer");
    assert_eq!(failure.kind, TestFailureKind::ConnectionClosed);
    assert!(fake.logs().is_empty());
}

#[tokio::test]
async fn a_port_nobody_listens_on_reports_connection_refused() {
    let cfg = config(
        &format!(
            "http://127.0.0.1:{}",
            crate::support::ports::outside_the_ephemeral_range()
        ),
        KEY,
    );
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());

    let err = send_batch(&client(), &loopback_egress(), &cfg, &batches[0])
        .await
        .expect_err("refused");
    assert!(
        matches!(err, SendError::ConnectionRefused { .. }),
        "{err:?}"
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
}

#[tokio::test]
async fn an_unknown_host_name_reports_a_dns_failure() {
    let egress = EgressPolicy::parse("intake.invalid").expect("valid policy");
    let client = http_client_with_timeouts(
        Arc::new(egress.clone()),
        Arc::new(StaticLookup::default()),
        HttpTimeouts::default(),
    )
    .expect("client builds");
    let cfg = config("http://intake.invalid:9", KEY);

    let failure = test_connection(&client, &egress, &cfg, Uuid::new_v4(), HOSTNAME)
        .await
        .expect_err("no such host");

    assert_eq!(failure.kind, TestFailureKind::Dns);
    assert!(failure.message.contains("could not be found"), "{failure}");
}

#[tokio::test]
async fn https_to_a_plain_http_server_reports_a_tls_failure() {
    let fake = FakeDatadog::start(KEY).await;
    let https = fake.base_url().replace("http://", "https://");
    let cfg = config(&https, KEY);

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
}

#[tokio::test]
async fn the_egress_policy_refuses_before_anything_is_sent() {
    let fake = FakeDatadog::start(KEY).await;
    let cfg = config(&fake.base_url(), KEY);
    let closed = EgressPolicy::default();

    let failure = test_connection(&client(), &closed, &cfg, Uuid::new_v4(), HOSTNAME)
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
async fn an_oversized_batch_gets_413_and_split_batch() {
    let fake = FakeDatadog::start(KEY).await;
    let logs: Vec<AuditLog> = (0..6)
        .map(|_| any_event(json!({ "blob": "z".repeat(900_000) })))
        .collect();
    let now = Utc::now();
    // Hand-packed past the limit, as a batch built under older limits might be.
    let objects: Vec<String> = logs
        .iter()
        .map(|log| log_object(log, HOSTNAME, now).to_string())
        .collect();
    let oversized = Batch {
        event_uuids: logs.iter().map(|log| log.uuid).collect(),
        body: format!("[{}]", objects.join(",")).into_bytes(),
    };
    assert!(oversized.body.len() > MAX_PAYLOAD_BYTES);

    assert_eq!(
        send_all(&fake, &[oversized]).await,
        [Disposition::SplitBatch]
    );
    assert!(fake.logs().is_empty());

    let outcomes = send_all(&fake, &build_batches(&logs, HOSTNAME, now)).await;
    assert!(
        outcomes.iter().all(|o| *o == Disposition::Delivered),
        "{outcomes:?}"
    );
    assert_eq!(fake.logs().len(), 6);
}

#[tokio::test]
async fn a_two_megabyte_event_is_truncated_and_delivered() {
    let fake = FakeDatadog::start(KEY).await;
    let log = any_event(json!({ "blob": "w".repeat(2_000_000) }));

    let batches = build_batches(std::slice::from_ref(&log), HOSTNAME, Utc::now());
    assert_eq!(send_all(&fake, &batches).await, [Disposition::Delivered]);

    let received = fake.logs();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["Truncated"], true);
    assert_eq!(received[0]["EventUuid"], log.uuid.to_string());
    assert_eq!(received[0]["EventID"], 4887);
    assert_eq!(
        fake.truncated_logs(),
        0,
        "we truncate before Datadog has to"
    );
}

#[tokio::test]
async fn batches_split_at_1000_logs_and_at_5_megabytes_and_all_arrive() {
    let fake = FakeDatadog::start(KEY).await;
    let now = Utc::now();
    let small: Vec<AuditLog> = (0..2001).map(|_| any_event(json!({}))).collect();
    let batches = build_batches(&small, HOSTNAME, now);
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        [1000, 1000, 1]
    );
    let outcomes = send_all(&fake, &batches).await;
    assert!(
        outcomes.iter().all(|o| *o == Disposition::Delivered),
        "{outcomes:?}"
    );
    assert_eq!(fake.logs().len(), 2001);

    let large: Vec<AuditLog> = (0..12)
        .map(|_| any_event(json!({ "blob": "v".repeat(950_000) })))
        .collect();
    let batches = build_batches(&large, HOSTNAME, now);
    assert!(batches.len() >= 3, "{}", batches.len());
    assert!(batches.iter().all(|b| b.body.len() < MAX_PAYLOAD_BYTES));
    let outcomes = send_all(&fake, &batches).await;
    assert!(
        outcomes.iter().all(|o| *o == Disposition::Delivered),
        "{outcomes:?}"
    );
    assert_eq!(fake.logs().len(), 2013);
    assert_eq!(fake.requests(), 3 + batches.len());
}

#[tokio::test]
async fn the_fake_is_strict_about_the_intake_contract() {
    let fake = FakeDatadog::start(KEY).await;
    let http = reqwest::Client::new();
    let endpoint = format!("{}/api/v2/logs", fake.base_url());
    let post_as = |content_type: &'static str, body: Vec<u8>| {
        http.post(&endpoint)
            .header("DD-API-KEY", KEY)
            .header("Content-Type", content_type)
            .body(body)
    };
    let post = |body: Vec<u8>| post_as("application/json", body);
    let status = |r: reqwest::Response| r.status().as_u16();

    let missing_key = http
        .post(&endpoint)
        .header("Content-Type", "application/json")
        .body("[]");
    assert_eq!(status(missing_key.send().await.expect("answer")), 401);
    let wrong_key = http
        .post(&endpoint)
        .header("DD-API-KEY", OTHER_KEY)
        .header("Content-Type", "application/json")
        .body("[]");
    let forbidden = wrong_key.send().await.expect("answer");
    assert_eq!(forbidden.status().as_u16(), 403);
    assert_eq!(
        forbidden.text().await.expect("body"),
        r#"{"errors":["Forbidden"]}"#
    );

    let text_plain = post_as("text/plain", b"[]".to_vec());
    assert_eq!(status(text_plain.send().await.expect("answer")), 400);
    let not_json = post(b"[{".to_vec());
    assert_eq!(status(not_json.send().await.expect("answer")), 400);
    let too_many = serde_json::to_vec(&vec![json!({"message": "x"}); 1001]).expect("json");
    assert_eq!(status(post(too_many).send().await.expect("answer")), 400);

    let single = post(br#"{"message":"one"}"#.to_vec())
        .send()
        .await
        .expect("answer");
    assert_eq!(single.status().as_u16(), 202);
    assert_eq!(single.text().await.expect("body"), "{}");

    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut zlib, br#"[{"message":"two"}]"#).expect("compress");
    let deflated = post(zlib.finish().expect("compress")).header("Content-Encoding", "deflate");
    assert_eq!(status(deflated.send().await.expect("answer")), 202);

    let other_path = http
        .post(format!("{}/v1/input", fake.base_url()))
        .body("[]");
    assert_eq!(status(other_path.send().await.expect("answer")), 404);

    assert_eq!(fake.logs().len(), 2);
    assert_eq!(fake.requests(), 8);
}

#[tokio::test]
async fn an_endless_error_body_is_read_only_up_to_its_cap() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // A hostile intake: 400 with a body of a gigabyte, streamed for as long as we read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 64 * 1024];
        let _ = socket.read(&mut request).await;
        let _ = socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 1000000000\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        // Bounded: stops when the client hangs up, or after 1 GB.
        while sent < 1_000_000_000 {
            if socket.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let cfg = config(&base, KEY);
    let batches = build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now());
    let outcome = send_batch(&client(), &loopback_egress(), &cfg, &batches[0])
        .await
        .expect("an HTTP answer");
    match outcome {
        Disposition::Rejected { reason } => assert!(reason.len() < 2_000, "{}", reason.len()),
        other => panic!("{other:?}"),
    }
    let sent = served.await.unwrap();
    assert!(
        sent < 100 * 1024 * 1024,
        "we hung up after the cap, not after {sent} bytes"
    );
}
