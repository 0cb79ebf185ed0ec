//! The embedded PostgreSQL heals itself: its postmaster killed with SIGKILL while events are
//! being recorded, it is started again (crash recovery) with no manual step; meanwhile the API
//! answers 503 with `Retry-After`, never 500, and every event it accepted is delivered.

use std::{collections::BTreeSet, os::unix::fs::PermissionsExt as _, time::Duration};

use crate::support::{fake_datadog::FakeDatadog, TestApp};
use cloudpki::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_embedded_postmaster_is_restarted_and_every_accepted_event_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data_dir = dir.path().join("data");
    let cluster = tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start(EmbeddedOptions {
            data_dir,
            durable: true,
        })
    })
    .await
    .unwrap()
    .expect("embedded cluster");
    let options = cluster.connect_options("cloudpki");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.clone())
        .await
        .unwrap();
    cloudpki::db::migrate(&pool).await.unwrap();
    let app = TestApp::spawn_on_pool(pool, options).await;
    let sub = app.create_subscription("Contoso PKI").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let first_pid = cluster.postmaster_pid().unwrap();

    let mut accepted = BTreeSet::new();
    let mut answers = Vec::new();
    for round in 0..120 {
        if round == 30 {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(first_pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
        let body: Value = ids
            .iter()
            .map(|id| json!({"id": id, "event_id": 4888}))
            .collect();
        let answer = app.post_events(&token, &body).await;
        let status = answer.status().as_u16();
        if status == 503 {
            assert!(answer.headers().contains_key("retry-after"));
        }
        answers.push(status);
        if status == 202 {
            accepted.extend(ids);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        answers.iter().all(|s| *s == 202 || *s == 503),
        "only 202 or 503: {answers:?}"
    );
    // Recovered with no manual step: the API accepts events again (however long the restart
    // takes on a busy machine; the deadline only bounds a hang).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let id = Uuid::new_v4();
        let answer = app
            .post_events(&token, &json!({"id": id, "event_id": 4888}))
            .await
            .status()
            .as_u16();
        assert!(answer == 202 || answer == 503, "{answer}");
        if answer == 202 {
            accepted.insert(id);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(
        cluster.postmaster_pid(),
        Some(first_pid),
        "a new postmaster"
    );

    for _ in 0..50 {
        sqlx::query("update delivery_destinations set next_attempt_at = now()")
            .execute(&app.pool)
            .await
            .unwrap();
        app.state.forwarder().forward_once().await.unwrap();
        if app.queued().await == 0 {
            break;
        }
    }
    let delivered: BTreeSet<Uuid> = intake
        .logs()
        .iter()
        .filter_map(|l| {
            l["EventUuid"]
                .as_str()
                .and_then(|u| Uuid::parse_str(u).ok())
        })
        .collect();
    let missing: Vec<&Uuid> = accepted.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} accepted events not delivered",
        missing.len()
    );
    drop(cluster);
}
