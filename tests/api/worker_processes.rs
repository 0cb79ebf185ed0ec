//! `cloudpki worker` processes against one database: sharing a backlog, and surviving SIGKILL.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{
    fake_datadog::{Behavior, FakeDatadog},
    TestApp,
};
use serde_json::{json, Value};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn worker(app: &TestApp, lease_secs: u64) -> Child {
    worker_with(app, lease_secs, &[])
}

fn worker_with(app: &TestApp, lease_secs: u64, env: &[(&str, &str)]) -> Child {
    let data = tempfile::tempdir().unwrap().keep();
    Command::new(env!("CARGO_BIN_EXE_cloudpki"))
        .arg("worker")
        .envs(env.iter().copied())
        .env("DATABASE_URL", app.database_url())
        .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
        .env("CLOUDPKI_EGRESS_ALLOW", "127.0.0.1")
        .env("CLOUDPKI_DATA_DIR", data)
        .env("CLOUDPKI_WORKER_LEASE_SECONDS", lease_secs.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "worker ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_until_drained(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while app.queued().await > 0 {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_worker_processes_share_a_backlog_without_loss_or_duplicates() {
    let app = TestApp::spawn().await;
    let intake = FakeDatadog::start(KEY).await;
    for i in 0..4 {
        let sub = app.create_subscription(&format!("S{i}")).await;
        app.configure_datadog(sub, &intake.base_url(), KEY, true)
            .await;
        let token = app.token(sub).await;
        for _ in 0..3 {
            let body: Vec<Value> = (0..500).map(|_| json!({"event_id": 4888})).collect();
            assert_eq!(
                app.post_events(&token, &Value::Array(body)).await.status(),
                202
            );
        }
    }
    let a = worker(&app, 30);
    let b = worker(&app, 30);
    wait_until_drained(&app).await;
    assert!(terminate(a).success());
    assert!(terminate(b).success());
    let logs = intake.logs();
    let ids: HashSet<&str> = logs
        .iter()
        .map(|l| l["EventUuid"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6000);
    assert_eq!(
        logs.len(),
        6000,
        "no event delivered twice in normal operation"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_batch_is_restarted_and_every_event_arrives() {
    let app = TestApp::spawn().await;
    let intake = FakeDatadog::start(KEY).await;
    let sub = app.create_subscription("S").await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let body: Vec<Value> = (0..300).map(|_| json!({"event_id": 4870})).collect();
    assert_eq!(
        app.post_events(&token, &Value::Array(body)).await.status(),
        202
    );

    // The intake takes the first batch but answers only after the worker is dead.
    intake.script(vec![Behavior::AcceptSlowly(Duration::from_secs(30))]);
    let mut doomed = worker(&app, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while intake.logs().len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the first batch never reached the intake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    assert_eq!(app.queued().await, 300, "nothing was acknowledged");

    let heir = worker(&app, 2);
    wait_until_drained(&app).await;
    assert!(terminate(heir).success());
    let logs = intake.logs();
    let ids: HashSet<&str> = logs
        .iter()
        .map(|l| l["EventUuid"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 300, "every event arrived");
    assert_eq!(logs.len(), 600, "resent once, each with its EventUuid");
    let duplicates: i64 = sqlx::query_scalar(
        "select duplicates_total from delivery_destinations where subscription_id = $1",
    )
    .bind(sub)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 300, "the resend is counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_a_slow_intake_hands_the_sends_back_within_the_grace_period() {
    let app = TestApp::spawn().await;
    let intake = FakeDatadog::start(KEY).await;
    let sub = app.create_subscription("S").await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let body: Vec<Value> = (0..500).map(|_| json!({"event_id": 4870})).collect();
    assert_eq!(
        app.post_events(&token, &Value::Array(body)).await.status(),
        202
    );
    // The intake keeps every request for a minute before it answers.
    intake.always(Behavior::AcceptSlowly(Duration::from_secs(60)));
    let stopping = worker_with(&app, 60, &[("CLOUDPKI_SHUTDOWN_GRACE_SECONDS", "1")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while intake.logs().len() < 500 {
        assert!(
            Instant::now() < deadline,
            "the batch never reached the intake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stops well before the intake answers (terminate() allows 20 s).
    assert!(terminate(stopping).success());
    let (owner, cursor, inflight_to, outcome): (Option<uuid::Uuid>, i64, i64, String) =
        sqlx::query_as(
            "select d.lease_owner, d.cursor, d.inflight_to,
                    (select outcome from delivery_attempts a where a.subscription_id = d.subscription_id
                     order by a.id desc limit 1)
             from delivery_destinations d where d.subscription_id = $1",
        )
        .bind(sub)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(owner, None, "handed back, not left to expire");
    assert_eq!((cursor, inflight_to), (0, 500), "recorded as possibly sent");
    assert_eq!(outcome, "retrying");

    // The next worker starts at once (no lease to wait out) and counts the resend.
    intake.always(Behavior::AcceptSlowly(Duration::ZERO));
    let heir = worker(&app, 60);
    wait_until_drained(&app).await;
    assert!(terminate(heir).success());
    let duplicates: i64 = sqlx::query_scalar(
        "select duplicates_total from delivery_destinations where subscription_id = $1",
    )
    .bind(sub)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(duplicates, 500, "the resend is counted");
    assert_eq!(intake.logs().len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_cloudpki_log_format_json_every_log_line_is_a_json_object() {
    use std::io::BufRead as _;
    let app = TestApp::spawn().await;
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudpki"))
        .arg("worker")
        .env("DATABASE_URL", app.database_url())
        .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
        .env("CLOUDPKI_DATA_DIR", data.path())
        .env("CLOUDPKI_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker logged that it runs");
        let running = line.contains("forwarder running");
        lines.push(line);
        if running {
            break;
        }
    }
    assert!(terminate(child).success());
    // The lines of the shutdown too.
    lines.extend(rx.iter());
    assert!(!lines.is_empty());
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
    }
}
