//! The forwarder against the strict fake Datadog intake: format, retries, failing keys, splits,
//! parking, fairness, concurrency, and the real loop's NOTIFY wake-up.
//!
//! Most tests drive one pass at a time (`forward_once_at`) with an explicit clock instead of
//! sleeping.

use crate::support;
use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::support::{
    fake_datadog::{Behavior, FakeDatadog},
    TestApp,
};
use chrono::{Timelike as _, Utc};
use cloudpki::{
    app::Overrides,
    forwarder::{Forwarder, ForwarderOptions},
};
use serde_json::{json, Value};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WRONG_KEY: &str = "ffffffffffffffffffffffffffffffff";
const PASSWORD: &str = "correct horse battery staple";

struct Setup {
    app: TestApp,
    sub: Uuid,
    token: String,
    intake: FakeDatadog,
}

async fn setup_with_key(key: &str) -> Setup {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), key, true)
        .await;
    let token = app.token(sub).await;
    Setup {
        app,
        sub,
        token,
        intake,
    }
}

async fn setup() -> Setup {
    setup_with_key(KEY).await
}

fn uuids(logs: &[Value]) -> Vec<String> {
    logs.iter()
        .map(|l| l["EventUuid"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_n(s: &Setup, n: usize, event_id: u32) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"event_id": event_id, "actor": format!("user{i}")}))
            .collect();
        assert_eq!(
            s.app
                .post_events(&s.token, &Value::Array(body))
                .await
                .status(),
            202
        );
    }
}

async fn destination(app: &TestApp, sub: Uuid) -> (String, Option<String>, i64, i64) {
    sqlx::query_as("select status, last_error, delivered_total, duplicates_total from delivery_destinations where subscription_id = $1")
        .bind(sub)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn all_eleven_events_arrive_with_the_exact_design_fields() {
    let s = setup().await;
    let catalog = [4882, 92, 23, 19, 28, 22, 12, 4888, 4870, 4872, 4887];
    // An hour ago, whole seconds: recent enough never to be re-timed as late.
    let occurred = (Utc::now() - chrono::Duration::hours(1))
        .with_nanosecond(0)
        .unwrap();
    let body: Vec<Value> = catalog
        .iter()
        .map(|id| json!({"event_id": id, "actor": "alice@example.com", "occurred_at": occurred.to_rfc3339(), "details": {"ca": "Issuing CA"}}))
        .collect();
    assert_eq!(
        s.app
            .post_events(&s.token, &Value::Array(body))
            .await
            .status(),
        202
    );
    let report = s.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 11);
    assert_eq!(s.app.queued().await, 0);
    let logs = s.intake.logs();
    assert_eq!(logs.len(), 11);
    let expected_status = |crit: &str| match crit {
        "High" => "error",
        "Medium" => "warning",
        _ => "info",
    };
    for (log, id) in logs.iter().zip(catalog) {
        assert_eq!(log["service"], "EZCA");
        assert_eq!(log["ddsource"], "ezca");
        assert_eq!(log["EventID"], id, "EventID is a number");
        assert!(log["hostname"].as_str().is_some_and(|h| !h.is_empty()));
        let crit = log["Criticality"].as_str().unwrap();
        assert_eq!(log["status"], expected_status(crit));
        let tags = log["ddtags"].as_str().unwrap();
        assert!(
            tags.contains(&format!("criticality:{}", crit.to_lowercase())),
            "{tags}"
        );
        assert!(tags.contains(&format!("event_id:{id}")), "{tags}");
        assert_eq!(log["SubscriptionId"], s.sub.to_string());
        assert_eq!(log["Actor"], "alice@example.com");
        assert_eq!(log["details"], json!({"ca": "Issuing CA"}));
        let date = chrono::DateTime::parse_from_rfc3339(log["date"].as_str().unwrap()).unwrap();
        assert_eq!(date, occurred);
        assert!(log["EventSummary"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(log["message"]
            .as_str()
            .unwrap()
            .contains(&format!("Event ID {id}")));
        Uuid::parse_str(log["EventUuid"].as_str().unwrap()).unwrap();
    }
    assert_eq!(
        logs[7]["EventSummary"],
        "Certificate request denied due to insufficient permissions"
    );
    assert_eq!(logs[7]["Criticality"], "High");
    let headers = s.intake.last_headers().unwrap();
    assert_eq!(headers["content-encoding"], "gzip");
}

#[tokio::test]
async fn an_outage_of_503s_then_a_429_with_retry_after_then_recovery_delivers_everything() {
    let s = setup().await;
    post_n(&s, 25, 4888).await;
    let f = s.app.state.forwarder();
    let t0 = Utc::now();
    s.intake.script(vec![
        Behavior::Status(503),
        Behavior::Status(503),
        Behavior::StatusWithRetryAfter(429, 120),
    ]);

    let r = f.forward_once_at(t0).await.unwrap();
    assert_eq!((r.delivered, r.failures), (0, 1));
    assert_eq!(
        f.forward_once_at(t0).await.unwrap().batches,
        0,
        "backing off: nothing is due"
    );
    let r = f
        .forward_once_at(t0 + chrono::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!((r.delivered, r.failures), (0, 1));
    let t1 = t0 + chrono::Duration::minutes(20);
    let r = f.forward_once_at(t1).await.unwrap();
    assert_eq!((r.delivered, r.failures), (0, 1), "429");
    assert_eq!(
        f.forward_once_at(t1 + chrono::Duration::seconds(119))
            .await
            .unwrap()
            .batches,
        0,
        "Retry-After is honoured"
    );
    let r = f
        .forward_once_at(t1 + chrono::Duration::seconds(121))
        .await
        .unwrap();
    assert_eq!(r.delivered, 25);
    assert_eq!(s.app.queued().await, 0);
    assert_eq!(s.intake.logs().len(), 25);
    // 503, 503, 429, then the destination (failing by then) is probed with one event before
    // the other 24 go.
    assert_eq!(s.intake.requests(), 5);
    let (status, _, delivered, _) = destination(&s.app, s.sub).await;
    assert_eq!((status.as_str(), delivered), ("healthy", 25));
}

#[tokio::test]
async fn a_wrong_key_keeps_everything_queued_until_the_key_is_fixed_in_the_settings_page() {
    let s = setup_with_key(WRONG_KEY).await;
    post_n(&s, 30, 92).await;
    let f = s.app.state.forwarder();
    let r = f.forward_once().await.unwrap();
    assert_eq!((r.delivered, r.failures), (0, 1));
    assert_eq!(s.app.queued().await, 30);
    let (status, error, _, _) = destination(&s.app, s.sub).await;
    assert_eq!(status, "failing");
    assert!(error.unwrap().contains("API key"));
    assert!(s.intake.logs().is_empty());

    // An admin fixes the key on the settings page.
    s.app
        .create_user("admin@example.com", PASSWORD, s.sub, "admin")
        .await;
    s.app.login("admin@example.com", PASSWORD).await;
    let path = format!("/subscriptions/{}/settings", s.sub);
    let csrf = support::csrf_token(&s.app.get_page(&path).await);
    let url = s.intake.base_url();
    let r = s
        .app
        .post_form(
            &path,
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "custom"),
                ("datadog_url", &url),
                ("datadog_api_key", KEY),
                ("csrf_token", &csrf),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = f.forward_once().await.unwrap();
    assert_eq!(r.delivered, 30, "the fixed key drains the queue at once");
    assert_eq!(s.app.queued().await, 0);
    assert_eq!(destination(&s.app, s.sub).await.0, "healthy");
}

#[tokio::test]
async fn the_largest_event_ingest_accepts_is_delivered_whole() {
    let s = setup().await;
    let big = "x".repeat(60 * 1024);
    let r = s
        .app
        .post_events(
            &s.token,
            &json!([{"event_id": 4887, "details": {"blob": big}}, {"event_id": 12}]),
        )
        .await;
    assert_eq!(r.status(), 202);
    let report = s.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 2);
    let logs = s.intake.logs();
    let whole = logs.iter().find(|l| l["EventID"] == 4887).unwrap();
    assert_eq!(whole["details"]["blob"].as_str().unwrap().len(), 60 * 1024);
    assert!(whole.get("Truncated").is_none());
}

#[tokio::test]
async fn a_413_splits_the_batch_and_everything_arrives_once() {
    let s = setup().await;
    post_n(&s, 40, 4870).await;
    s.intake.script(vec![Behavior::Status(413)]);
    let report = s.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 40);
    assert_eq!(
        s.intake.requests(),
        3,
        "one refused request, then two halves"
    );
    let ids = uuids(&s.intake.logs());
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 40);
}

#[tokio::test]
async fn a_400_parks_only_the_offending_event_with_its_reason() {
    let s = setup().await;
    s.intake.reject_logs_with_detail("poison", json!(true));
    let mut body: Vec<Value> = (0..15).map(|_| json!({"event_id": 4872})).collect();
    body.insert(6, json!({"event_id": 4888, "details": {"poison": true}}));
    assert_eq!(
        s.app
            .post_events(&s.token, &Value::Array(body))
            .await
            .status(),
        202
    );
    let report = s.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!((report.delivered, report.parked), (15, 1));
    assert_eq!(s.intake.logs().len(), 15);
    let (event_id, reason): (i32, String) = sqlx::query_as(
        "select e.event_id, p.reason from delivery_parked p join audit_events e on e.subscription_id = p.subscription_id and e.seq = p.seq where p.state = 'parked'",
    )
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(event_id, 4888);
    assert!(reason.contains("400"), "{reason}");
    assert_eq!(
        destination(&s.app, s.sub).await.0,
        "healthy",
        "one bad event does not fail the destination"
    );
}

#[tokio::test]
async fn events_that_waited_longer_than_18_hours_are_sent_late_not_dropped() {
    let s = setup().await;
    let old = (Utc::now() - chrono::Duration::hours(30)).to_rfc3339();
    assert_eq!(
        s.app
            .post_events(&s.token, &json!({"event_id": 19, "occurred_at": old}))
            .await
            .status(),
        202
    );
    s.app.state.forwarder().forward_once().await.unwrap();
    let log = &s.intake.logs()[0];
    assert!(log["ddtags"].as_str().unwrap().contains("late:true"));
    assert!(log["OriginalDate"].as_str().is_some());
    assert_ne!(log["date"].as_str(), log["OriginalDate"].as_str());
}

#[tokio::test]
async fn a_producer_that_commits_late_holds_back_the_next_number_so_nothing_is_skipped() {
    let s = setup().await;
    // Producer A takes the subscription's next number, then takes its time to commit.
    let mut slow = s.app.pool.begin().await.unwrap();
    let base: i64 =
        sqlx::query_scalar("select last_seq from subscriptions where id = $1 for no key update")
            .bind(s.sub)
            .fetch_one(&mut *slow)
            .await
            .unwrap();
    let slow_id = Uuid::new_v4();
    sqlx::query("insert into audit_events (subscription_id, seq, id, event_id, occurred_at) values ($1, $2, $3, 4888, now())")
        .bind(s.sub)
        .bind(base + 1)
        .bind(slow_id)
        .execute(&mut *slow)
        .await
        .unwrap();
    sqlx::query("update subscriptions set last_seq = $2 where id = $1")
        .bind(s.sub)
        .bind(base + 1)
        .execute(&mut *slow)
        .await
        .unwrap();
    // Producer B waits for A's number to be settled: `seq` order is commit order.
    let (token, base_url) = (s.token.clone(), s.app.base_url.clone());
    let producer_b = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base_url}/api/v1/events"))
            .bearer_auth(token)
            .json(&json!([{"event_id": 12}, {"event_id": 12}, {"event_id": 12}]))
            .send()
            .await
            .unwrap()
            .status()
    });
    let f = s.app.state.forwarder();
    assert_eq!(
        f.forward_once().await.unwrap().delivered,
        0,
        "nothing after the cursor has committed yet"
    );
    slow.commit().await.unwrap();
    assert_eq!(producer_b.await.unwrap(), 202);
    assert_eq!(f.forward_once().await.unwrap().delivered, 4);
    let logs = s.intake.logs();
    assert_eq!(logs[0]["EventUuid"], slow_id.to_string());
    let sequences: Vec<i64> = logs
        .iter()
        .map(|l| l["Sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
}

#[tokio::test]
async fn two_forwarders_share_the_load_without_loss_or_duplicates() {
    let app = TestApp::spawn().await;
    let intake = FakeDatadog::start(KEY).await;
    let mut subs = Vec::new();
    for i in 0..4 {
        let sub = app.create_subscription(&format!("S{i}")).await;
        app.configure_datadog(sub, &intake.base_url(), KEY, true)
            .await;
        let token = app.token(sub).await;
        for _ in 0..3 {
            let body: Vec<Value> = (0..500).map(|_| json!({"event_id": 4887})).collect();
            assert_eq!(
                app.post_events(&token, &Value::Array(body)).await.status(),
                202
            );
        }
        subs.push(sub);
    }
    let a = app.state.forwarder();
    let b = app.state.forwarder();
    let (ra, rb) = tokio::join!(a.forward_once(), b.forward_once());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.delivered + rb.delivered, 6000);
    assert!(
        ra.batches > 0 && rb.batches > 0,
        "both took part: {ra:?} {rb:?}"
    );
    let ids = uuids(&intake.logs());
    assert_eq!(ids.len(), 6000);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        6000,
        "no event delivered twice"
    );
}

#[tokio::test]
async fn a_dead_destination_or_a_big_backlog_does_not_delay_other_subscriptions() {
    let app = TestApp::spawn().await;
    let intake = FakeDatadog::start(KEY).await;
    let dead = app.create_subscription("Dead").await;
    let busy = app.create_subscription("Busy").await;
    let quiet = app.create_subscription("Quiet").await;
    app.configure_datadog(dead, &intake.base_url(), WRONG_KEY, true)
        .await;
    app.configure_datadog(busy, &intake.base_url(), KEY, true)
        .await;
    app.configure_datadog(quiet, &intake.base_url(), KEY, true)
        .await;
    for (sub, n) in [(dead, 10), (busy, 5000), (quiet, 1)] {
        let token = app.token(sub).await;
        for chunk in 0..(n + 999) / 1000 {
            let size = (n - chunk * 1000).min(1000);
            let body: Vec<Value> = (0..size).map(|_| json!({"event_id": 4872})).collect();
            assert_eq!(
                app.post_events(&token, &Value::Array(body)).await.status(),
                202
            );
        }
    }
    let f = app.state.forwarder();
    let now = Utc::now();
    // Three claims serve the three destinations once each, whatever the backlogs.
    for _ in 0..3 {
        f.serve_one(now)
            .await
            .unwrap()
            .expect("a destination is due");
    }
    let logs = intake.logs();
    assert!(
        logs.iter()
            .any(|l| l["SubscriptionId"] == quiet.to_string()),
        "the quiet subscription was served within the first round"
    );
    let (status, ..) = destination(&app, dead).await;
    assert_eq!(status, "failing");
    // The busy one drains (within its claim budget or in later rounds); the dead one waits for
    // its backoff.
    f.forward_once_at(now).await.unwrap();
    let busy_logs = intake
        .logs()
        .iter()
        .filter(|l| l["SubscriptionId"] == busy.to_string())
        .count();
    assert_eq!(busy_logs, 5000);
    assert_eq!(
        app.queued().await,
        10,
        "the dead destination's events are kept"
    );
}

#[tokio::test]
async fn a_forwarder_that_dies_mid_send_is_replaced_and_the_resend_is_counted() {
    let s = setup().await;
    post_n(&s, 50, 4888).await;
    let lease = Duration::from_millis(300);
    let options = ForwarderOptions {
        lease,
        ..ForwarderOptions::default()
    };
    let client = reqwest::Client::new();
    let egress = Arc::new(cloudpki::siem::egress::EgressPolicy::parse("127.0.0.1").unwrap());
    // The intake takes the logs but answers slowly; the sender dies before it hears back. It
    // runs on a runtime of its own, with its own connections, so that dropping the runtime
    // ends every task of it, as the death of its process would.
    s.intake
        .script(vec![Behavior::AcceptSlowly(Duration::from_secs(5))]);
    let doomed_runtime = tokio::runtime::Runtime::new().unwrap();
    let connect = (*s.app.pool.connect_options()).clone();
    let (master_key, doomed_options) = (s.app.master_key.clone(), options.clone());
    doomed_runtime.spawn(async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(connect)
            .await
            .unwrap();
        let egress = Arc::new(cloudpki::siem::egress::EgressPolicy::parse("127.0.0.1").unwrap());
        let doomed = Forwarder::new(
            pool,
            master_key,
            reqwest::Client::new(),
            egress,
            "pki".into(),
            doomed_options,
        );
        let _ = doomed.forward_once().await;
    });
    while s.intake.logs().len() < 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed_runtime.shutdown_background();
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let heir = Forwarder::new(
        s.app.pool.clone(),
        s.app.master_key.clone(),
        client,
        egress,
        "pki".into(),
        options,
    );
    let report = heir.forward_once().await.unwrap();
    assert_eq!((report.delivered, report.duplicates), (50, 50));
    let logs = s.intake.logs();
    assert_eq!(logs.len(), 100, "each event twice, each with its EventUuid");
    assert_eq!(uuids(&logs).iter().collect::<HashSet<_>>().len(), 50);
    let (.., duplicates) = destination(&s.app, s.sub).await;
    assert_eq!(duplicates, 50);
    assert_eq!(s.app.queued().await, 0);
}

#[tokio::test]
async fn the_running_worker_wakes_on_notify_and_delivers_within_moments() {
    let mut env = support::test_env();
    env.insert("CLOUDPKI_WORKER_LEASE_SECONDS".into(), "5".into());
    // A sweep of an hour: only the notification can explain a prompt delivery.
    let app = TestApp::spawn_with_worker(
        env,
        Overrides {
            forwarder_sweep: Some(Duration::from_secs(3600)),
            ..Overrides::default()
        },
    )
    .await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    // Wait until the worker's LISTEN is in place (its backend's last statement), then give the
    // claim loops time to finish their first pass and wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and query ilike 'listen%'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never started listening"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.post_events(&token, &json!({"event_id": 4882}))
            .await
            .status(),
        202
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while intake.logs().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the notification did not wake the worker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(intake.logs()[0]["EventID"], 4882);
}

#[tokio::test]
async fn metrics_report_recorded_delivered_and_backlog_on_their_own_listener_only() {
    let s = setup().await;
    post_n(&s, 5, 4888).await;
    assert_eq!(
        s.app.get("/metrics").await.status(),
        404,
        "the portal's port never serves metrics"
    );
    let url = s.app.metrics_url().await;
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    assert!(before.contains("cloudpki_backlog_events"), "{before}");
    assert!(before.contains(&format!("subscription_id=\"{}\"", s.sub)));
    s.app.state.forwarder().forward_once().await.unwrap();
    let after = scrape().await;
    for counted in [
        "cloudpki_duplicates_sent",
        "cloudpki_lease_takeovers",
        "cloudpki_destination_refusals",
        "cloudpki_parked_events",
    ] {
        assert!(after.contains(counted), "{counted}");
    }
    assert!(after.contains("cloudpki_events_delivered_total"), "{after}");
    assert!(after.contains("cloudpki_events_recorded_total"));
    assert!(after.contains("cloudpki_send_seconds"));
}

#[tokio::test]
async fn stored_settings_are_read_once_per_save_not_per_claim() {
    // Settings stored with a wrong key: the first claim reads them and fails.
    let s = setup_with_key(WRONG_KEY).await;
    post_n(&s, 1, 4888).await;
    let forwarder = s.app.state.forwarder();
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 0);
    let version: chrono::DateTime<Utc> =
        sqlx::query_scalar("select updated_at from siem_settings where subscription_id = $1")
            .bind(s.sub)
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    let due_now = || async {
        sqlx::query("update delivery_destinations set next_attempt_at = now()")
            .execute(&s.app.pool)
            .await
            .unwrap();
    };

    // The right key lands in storage behind the portal's back, under the same version: the
    // forwarder keeps the destination it built for that version.
    s.app
        .configure_datadog(s.sub, &s.intake.base_url(), KEY, true)
        .await;
    sqlx::query("update siem_settings set updated_at = $2 where subscription_id = $1")
        .bind(s.sub)
        .bind(version)
        .execute(&s.app.pool)
        .await
        .unwrap();
    due_now().await;
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 0);

    // A save (a new version) makes it read them again.
    sqlx::query("update siem_settings set updated_at = now() where subscription_id = $1")
        .bind(s.sub)
        .execute(&s.app.pool)
        .await
        .unwrap();
    due_now().await;
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 1);
}
