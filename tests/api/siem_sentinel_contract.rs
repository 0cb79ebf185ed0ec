//! The Sentinel (Logs Ingestion API) client against the strict fake Entra ID + Azure Monitor:
//! format, limits, token caching and refresh, and every failure mode.

use std::sync::Arc;
use std::time::Duration;

use crate::support::fake_sentinel::{
    Behavior, FakeSentinel, CLIENT_ID, CLIENT_SECRET, DCR_ID, STREAM, TENANT,
};
use chrono::Utc;
use cloudpki::domain::events::{catalog, EventId};
use cloudpki::domain::sentinel::{
    AzureCloud, ClientId, ClientSecret, DcrImmutableId, IngestionEndpoint, LoginBaseUrl,
    StreamName, TenantId,
};
use cloudpki::siem::egress::{http_client_with_timeouts, EgressPolicy, HttpTimeouts, StaticLookup};
use cloudpki::siem::oauth::TokenCache;
use cloudpki::siem::sentinel::{
    build_batches, log_object, send_batch, test_connection, SentinelConfig, SentinelDestination,
    MAX_BATCH_BYTES,
};
use cloudpki::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
};
use serde_json::{json, Value};
use uuid::Uuid;

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

fn config(fake: &FakeSentinel) -> SentinelConfig {
    SentinelConfig {
        cloud: AzureCloud::Public,
        login_base: LoginBaseUrl::parse(&fake.base_url()).expect("login base"),
        tenant_id: TenantId::parse(TENANT).expect("tenant"),
        client_id: ClientId::parse(CLIENT_ID).expect("client id"),
        client_secret: ClientSecret::parse(CLIENT_SECRET).expect("secret"),
        endpoint: IngestionEndpoint::parse(&fake.base_url()).expect("endpoint"),
        dcr_id: DcrImmutableId::parse(DCR_ID).expect("dcr"),
        stream: StreamName::parse(STREAM).expect("stream"),
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

fn one_batch() -> Batch {
    build_batches(&[any_event(json!({}))], HOSTNAME, Utc::now()).remove(0)
}

async fn send(tokens: &TokenCache, cfg: &SentinelConfig, batch: &Batch) -> Disposition {
    send_batch(&client(), &loopback_egress(), tokens, cfg, batch)
        .await
        .expect("an HTTP answer")
}

async fn test_fails(tokens: &TokenCache, cfg: &SentinelConfig) -> TestFailure {
    test_connection(
        &client(),
        &loopback_egress(),
        tokens,
        cfg,
        Uuid::new_v4(),
        "h",
    )
    .await
    .expect_err("the test fails")
}

#[tokio::test]
async fn the_eleven_catalog_events_arrive_with_time_generated_and_the_fields() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    let logs: Vec<AuditLog> = catalog()
        .iter()
        .map(|info| audit(info.id, json!({ "ca": "Issuing CA 1" })))
        .collect();
    let now = Utc::now();
    let batches = build_batches(&logs, HOSTNAME, now);
    assert_eq!(batches.len(), 1);

    assert_eq!(
        send(&tokens, &cfg, &batches[0]).await,
        Disposition::Delivered
    );

    let rows = fake.rows();
    assert_eq!(rows.len(), 11);
    for (log, row) in logs.iter().zip(&rows) {
        let info = log.event_id.info();
        assert_eq!(row, &log_object(log, HOSTNAME, now));
        let time = row["TimeGenerated"]
            .as_str()
            .expect("TimeGenerated is text");
        let time = chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
        assert_eq!(time.timestamp_millis(), log.occurred_at.timestamp_millis());
        assert_eq!(row["EventID"], json!(log.event_id.get()));
        assert_eq!(row["EventSummary"], info.summary);
        assert_eq!(row["Criticality"], info.criticality.as_str());
        assert_eq!(row["SubscriptionId"], log.subscription_id.to_string());
        assert_eq!(row["EventUuid"], log.uuid.to_string());
        assert_eq!(row["Actor"], "alice@example.com");
        assert_eq!(row["details"], json!({ "ca": "Issuing CA 1" }));
        assert_eq!(row["Hostname"], HOSTNAME);
        assert_eq!(
            row["message"],
            format!(
                "{} (Event ID {}) by alice@example.com",
                info.summary, log.event_id
            )
        );
    }
    let headers = fake.last_headers().expect("a request");
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], "application/json");
    let request_id = headers["x-ms-client-request-id"].to_str().expect("ascii");
    Uuid::try_parse(request_id).expect("request id is a GUID");
    assert!(headers["authorization"]
        .to_str()
        .expect("ascii")
        .starts_with("Bearer fake-token-"));
    assert!(headers["user-agent"]
        .to_str()
        .expect("ascii")
        .starts_with("cloudpki/"));
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn a_large_backlog_splits_below_one_megabyte_and_reuses_one_token() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    let logs: Vec<AuditLog> = (0..45)
        .map(|i| any_event(json!({ "i": i, "blob": "y".repeat(60_000) })))
        .collect();
    let batches = build_batches(&logs, HOSTNAME, Utc::now());
    assert!(batches.len() >= 3, "{} batches", batches.len());

    for batch in &batches {
        assert!(batch.body.len() < MAX_BATCH_BYTES);
        assert_eq!(send(&tokens, &cfg, batch).await, Disposition::Delivered);
    }

    assert_eq!(
        fake.token_requests(),
        1,
        "the token is cached across batches"
    );
    assert_eq!(fake.ingestion_requests(), batches.len());
    assert!(fake
        .accepted_sizes()
        .iter()
        .all(|size| *size < MAX_BATCH_BYTES));
    let uuids: Vec<String> = fake
        .rows()
        .iter()
        .map(|row| row["EventUuid"].as_str().expect("uuid").to_owned())
        .collect();
    let sent: Vec<String> = logs.iter().map(|log| log.uuid.to_string()).collect();
    assert_eq!(uuids, sent);
}

#[tokio::test]
async fn the_token_cache_is_shared_between_destinations() {
    let fake = FakeSentinel::start().await;
    let tokens = Arc::new(TokenCache::default());
    let first = SentinelDestination {
        config: config(&fake),
        hostname: HOSTNAME.into(),
        tokens: Arc::clone(&tokens),
    };
    let second = SentinelDestination {
        config: config(&fake),
        hostname: "other.test".into(),
        tokens: Arc::clone(&tokens),
    };
    for destination in [&first, &second] {
        let batches = destination.build_batches(&[any_event(json!({}))], Utc::now());
        let outcome = destination
            .send(&client(), &loopback_egress(), &batches[0])
            .await
            .expect("an HTTP answer");
        assert_eq!(outcome, Disposition::Delivered);
    }
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(first.provider(), "Microsoft Sentinel");
}

#[tokio::test]
async fn an_expiring_token_is_renewed_before_it_is_used() {
    let fake = FakeSentinel::start().await;
    fake.issue_tokens_for(Duration::from_secs(1));
    let tokens = TokenCache::default();
    let cfg = config(&fake);

    assert_eq!(
        send(&tokens, &cfg, &one_batch()).await,
        Disposition::Delivered
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        send(&tokens, &cfg, &one_batch()).await,
        Disposition::Delivered
    );

    assert_eq!(fake.token_requests(), 2);
    assert_eq!(
        fake.ingestion_requests(),
        2,
        "no request was spent on a 401"
    );
}

#[tokio::test]
async fn a_revoked_token_is_renewed_once_and_the_batch_delivered() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    assert_eq!(
        send(&tokens, &cfg, &one_batch()).await,
        Disposition::Delivered
    );

    fake.revoke_tokens();
    assert_eq!(
        send(&tokens, &cfg, &one_batch()).await,
        Disposition::Delivered
    );

    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.ingestion_requests(), 3, "one 401, then the resend");
    assert_eq!(fake.rows().len(), 2);
}

#[tokio::test]
async fn a_second_401_after_renewal_is_auth_failed() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    fake.script(vec![Behavior::Status(401), Behavior::Status(401)]);

    let outcome = send(&tokens, &cfg, &one_batch()).await;

    let Disposition::AuthFailed { reason } = outcome else {
        panic!("expected AuthFailed, got {outcome:?}");
    };
    assert!(
        reason.contains("401") && reason.contains("after renewing"),
        "{reason}"
    );
    assert_eq!(fake.token_requests(), 2, "renewed exactly once");
    assert_eq!(fake.ingestion_requests(), 2);
}

#[tokio::test]
async fn retries_after_429_honouring_retry_after() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    fake.script(vec![Behavior::StatusWithRetryAfter(429, 17)]);

    let outcome = send(&tokens, &config(&fake), &one_batch()).await;

    let Disposition::Retry { after, reason } = outcome else {
        panic!("expected Retry, got {outcome:?}");
    };
    assert_eq!(after, Some(Duration::from_secs(17)));
    assert!(reason.contains("429"), "{reason}");
}

#[tokio::test]
async fn server_errors_are_retried_and_a_stall_or_drop_is_a_transport_error() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    fake.script(vec![Behavior::Status(500), Behavior::Status(503)]);
    for _ in 0..2 {
        let outcome = send(&tokens, &cfg, &one_batch()).await;
        assert!(matches!(outcome, Disposition::Retry { .. }), "{outcome:?}");
    }

    fake.script(vec![Behavior::Stall(Duration::from_secs(3))]);
    let err = send_batch(
        &client_with_timeout(Duration::from_secs(1)),
        &loopback_egress(),
        &tokens,
        &cfg,
        &one_batch(),
    )
    .await
    .expect_err("no answer in time");
    assert_eq!(err, SendError::Timeout);

    fake.script(vec![Behavior::DropConnection]);
    let err = send_batch(&client(), &loopback_egress(), &tokens, &cfg, &one_batch())
        .await
        .expect_err("connection dropped");
    assert!(matches!(err, SendError::ConnectionClosed { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_oversized_batch_gets_413_and_split_batch() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    // Hand-built, as the builder never makes one: two rows of 600 KB, 1.2 MB in all.
    let rows: Vec<Value> = (0..2)
        .map(|_| json!({ "TimeGenerated": Utc::now().to_rfc3339(), "blob": "z".repeat(600_000) }))
        .collect();
    let batch = Batch {
        event_uuids: vec![Uuid::new_v4(), Uuid::new_v4()],
        body: serde_json::to_vec(&rows).expect("json"),
    };

    assert_eq!(
        send(&tokens, &config(&fake), &batch).await,
        Disposition::SplitBatch
    );
    assert!(fake.rows().is_empty());
}

#[tokio::test]
async fn a_missing_role_is_explained_with_the_role_hint() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    fake.script(vec![Behavior::Forbidden, Behavior::Forbidden]);

    let outcome = send(&tokens, &cfg, &one_batch()).await;
    let Disposition::AuthFailed { reason } = outcome else {
        panic!("expected AuthFailed, got {outcome:?}");
    };
    assert!(
        reason.contains(
            "grant the app the Monitoring Metrics Publisher role on the DCR (can take 30 minutes)"
        ),
        "{reason}"
    );

    let failure = test_fails(&tokens, &cfg).await;
    assert_eq!(failure.kind, TestFailureKind::InvalidCredentials);
    assert!(
        failure.message.contains("Monitoring Metrics Publisher"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("30 minutes"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_wrong_dcr_or_stream_is_404_with_a_hint() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let mut cfg = config(&fake);
    cfg.dcr_id = DcrImmutableId::parse("dcr-ffffffffffffffffffffffffffffffff").expect("dcr");

    let outcome = send(&tokens, &cfg, &one_batch()).await;
    let Disposition::AuthFailed { reason } = outcome else {
        panic!("expected AuthFailed, got {outcome:?}");
    };
    assert!(
        reason.contains("wrong endpoint, DCR immutable id or stream"),
        "{reason}"
    );
    let failure = test_fails(&tokens, &cfg).await;
    assert_eq!(failure.kind, TestFailureKind::WrongUrl);
    assert!(
        failure.message.contains("DCR immutable ID"),
        "{}",
        failure.message
    );

    let mut cfg = config(&fake);
    cfg.stream = StreamName::parse("Custom-Other_CL").expect("stream");
    let failure = test_fails(&tokens, &cfg).await;
    assert_eq!(failure.kind, TestFailureKind::WrongUrl);
    assert!(
        failure.message.contains("Custom-Other_CL"),
        "{}",
        failure.message
    );
    assert!(fake.rows().is_empty());
}

#[tokio::test]
async fn test_connection_gets_a_fresh_token_and_lands_a_findable_test_row() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    // A cached token does not let the test skip proving the secret.
    assert_eq!(
        send(&tokens, &cfg, &one_batch()).await,
        Disposition::Delivered
    );
    let before = fake.rows().len();
    let subscription = Uuid::new_v4();

    let success = test_connection(
        &client(),
        &loopback_egress(),
        &tokens,
        &cfg,
        subscription,
        "pki.example",
    )
    .await
    .expect("test passes");

    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.ingestion_requests(), 2);
    let rows = fake.rows();
    assert_eq!(rows.len(), before + 1, "one test row lands in the table");
    let row = rows.last().expect("the test row");
    assert_eq!(row["EventID"], 0);
    assert_eq!(row["EventSummary"], "SIEM connection test");
    assert_eq!(row["SubscriptionId"], subscription.to_string());
    assert_eq!(row["Hostname"], "pki.example");
    assert_eq!(success.query, "EzcaAudit_CL | where EventID == 0");
    assert_eq!(success.explorer_url, None);
    assert!(
        success.message.contains("accepted the test row"),
        "{}",
        success.message
    );
}

#[tokio::test]
async fn test_connection_explains_each_credential_failure() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();

    let mut wrong_tenant = config(&fake);
    wrong_tenant.tenant_id = TenantId::parse("11111111-2222-3333-4444-555555555555").expect("t");
    let mut wrong_client = config(&fake);
    wrong_client.client_id = ClientId::parse("99999999-2222-3333-4444-555555555555").expect("c");
    let mut wrong_secret = config(&fake);
    wrong_secret.client_secret = ClientSecret::parse("not-the-secret-value-abcd").expect("s");
    let mut wrong_cloud = config(&fake);
    wrong_cloud.cloud = AzureCloud::UsGovernment;

    let table = [
        (
            wrong_tenant,
            "does not know the tenant 11111111-2222-3333-4444-555555555555",
        ),
        (
            wrong_client,
            "No application with client ID 99999999-2222-3333-4444-555555555555",
        ),
        (wrong_secret, "refused the client secret"),
        (wrong_cloud, "Azure cloud setting"),
    ];
    for (cfg, expected) in table {
        let failure = test_fails(&tokens, &cfg).await;
        assert_eq!(
            failure.kind,
            TestFailureKind::InvalidCredentials,
            "{}",
            failure.message
        );
        assert!(failure.message.contains(expected), "{}", failure.message);
        assert!(!failure.message.contains("Trace ID"), "{}", failure.message);
        assert!(!failure.message.contains(CLIENT_SECRET));
    }
    assert_eq!(fake.ingestion_requests(), 0, "no token, no ingestion call");

    fake.expire_secret();
    let failure = test_fails(&tokens, &config(&fake)).await;
    assert!(
        failure.message.contains("has expired"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_refused_secret_while_forwarding_is_auth_failed_and_sends_no_rows() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let mut cfg = config(&fake);
    cfg.client_secret = ClientSecret::parse("not-the-secret-value-abcd").expect("secret");

    let outcome = send(&tokens, &cfg, &one_batch()).await;

    let Disposition::AuthFailed { reason } = outcome else {
        panic!("expected AuthFailed, got {outcome:?}");
    };
    assert!(reason.contains("client secret"), "{reason}");
    assert_eq!(fake.ingestion_requests(), 0);
}

#[tokio::test]
async fn an_unavailable_sign_in_service_is_retried_later() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);
    fake.script_token(vec![
        Behavior::StatusWithRetryAfter(503, 30),
        Behavior::Status(500),
    ]);

    let outcome = send(&tokens, &cfg, &one_batch()).await;
    assert!(
        matches!(outcome, Disposition::Retry { after: Some(d), .. } if d == Duration::from_secs(30)),
        "{outcome:?}"
    );
    let failure = test_fails(&tokens, &cfg).await;
    assert_eq!(failure.kind, TestFailureKind::Unavailable);
    assert_eq!(fake.ingestion_requests(), 0);
}

#[tokio::test]
async fn the_egress_policy_refuses_before_anything_is_sent() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let cfg = config(&fake);

    // Nothing allowed: loopback over http is refused for both legs.
    let err = send_batch(
        &client(),
        &EgressPolicy::default(),
        &tokens,
        &cfg,
        &one_batch(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, SendError::EgressDenied { .. }), "{err:?}");
    assert!(!err.is_retryable());

    // The sign-in URL is allowed but the ingestion endpoint is not: still nothing is sent.
    let mut split = config(&fake);
    split.endpoint =
        IngestionEndpoint::parse(&format!("http://localhost:{}", fake.port())).expect("endpoint");
    let err = send_batch(&client(), &loopback_egress(), &tokens, &split, &one_batch())
        .await
        .expect_err("refused");
    assert!(matches!(err, SendError::EgressDenied { .. }), "{err:?}");

    let failure = test_connection(
        &client(),
        &EgressPolicy::default(),
        &tokens,
        &cfg,
        Uuid::new_v4(),
        "h",
    )
    .await
    .expect_err("refused");
    assert_eq!(failure.kind, TestFailureKind::EgressDenied);
    assert!(
        failure.message.contains("nothing was sent"),
        "{}",
        failure.message
    );

    assert_eq!(fake.token_requests(), 0);
    assert_eq!(fake.ingestion_requests(), 0);
}

#[tokio::test]
async fn a_port_nobody_listens_on_reports_connection_refused() {
    let fake = FakeSentinel::start().await;
    let tokens = TokenCache::default();
    let mut cfg = config(&fake);
    cfg.endpoint = IngestionEndpoint::parse(&format!(
        "http://127.0.0.1:{}",
        crate::support::ports::outside_the_ephemeral_range()
    ))
    .expect("endpoint");

    let err = send_batch(&client(), &loopback_egress(), &tokens, &cfg, &one_batch())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, SendError::ConnectionRefused { .. }),
        "{err:?}"
    );

    let failure = test_fails(&tokens, &cfg).await;
    assert_eq!(failure.kind, TestFailureKind::ConnectionRefused);
    assert!(
        failure.message.contains("ingestion endpoint"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn the_fake_is_strict_about_the_contract() {
    let fake = FakeSentinel::start().await;
    let http = reqwest::Client::new();
    let token_url = format!("{}/{TENANT}/oauth2/v2.0/token", fake.base_url());

    // An extra form field is refused.
    let answer = http
        .post(&token_url)
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", "https://monitor.azure.com/.default"),
            ("resource", "https://monitor.azure.com"),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 400);

    let answer: Value = http
        .post(&token_url)
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "client_credentials"),
            ("scope", "https://monitor.azure.com/.default"),
        ])
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let token = answer["access_token"].as_str().expect("token").to_owned();
    assert_eq!(answer["token_type"], "Bearer");

    let ingest = |version: &str, body: &'static str, content_type: &'static str| {
        http.post(format!(
            "{}/dataCollectionRules/{DCR_ID}/streams/{STREAM}?api-version={version}",
            fake.base_url()
        ))
        .bearer_auth(&token)
        .header("content-type", content_type)
        .body(body)
        .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            ingest("2021-01-01", "[]", "application/json")
                .await
                .expect("a")
        ),
        400
    );
    assert_eq!(
        status(ingest("2023-01-01", "[]", "text/plain").await.expect("a")),
        400
    );
    assert_eq!(
        status(
            ingest("2023-01-01", "{}", "application/json")
                .await
                .expect("a")
        ),
        400
    );
    assert_eq!(
        status(
            ingest("2023-01-01", r#"[{"EventID":1}]"#, "application/json")
                .await
                .expect("a")
        ),
        400
    );
    assert_eq!(
        status(
            ingest(
                "2023-01-01",
                r#"[{"TimeGenerated":"2025-03-04T10:00:00Z"}]"#,
                "application/json"
            )
            .await
            .expect("a")
        ),
        204
    );
    let unauthenticated = http
        .post(format!(
            "{}/dataCollectionRules/{DCR_ID}/streams/{STREAM}?api-version=2023-01-01",
            fake.base_url()
        ))
        .header("content-type", "application/json")
        .body("[]")
        .send()
        .await
        .expect("answer");
    assert_eq!(unauthenticated.status().as_u16(), 401);
}
