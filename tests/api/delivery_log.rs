//! The delivery log under adversarial conditions: a proxy that refuses everything, sends that
//! outlive the lease, the 18 h edge with a slow intake, hung neighbours, retention racing a
//! send, an upgrade from the old queue, and the query plans at a million events.

use crate::support;
use std::time::Duration;

use crate::support::{
    fake_datadog::{Behavior, FakeDatadog},
    TestApp,
};
use chrono::Utc;
use cloudpki::{app::Overrides, forwarder::ForwarderOptions, siem::egress::HttpTimeouts};
use serde_json::{json, Value};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple";

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            let logs = support::captured_logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            panic!(
                "{what}; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_proxy_that_refuses_everything_makes_the_destination_fail_with_one_email_and_keeps_the_events(
) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let intake = FakeDatadog::start(KEY).await;
    intake.always(Behavior::Status(400));
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    app.post_n(&app.token(sub).await, 100, 4888).await;

    let f = app.state.forwarder();
    let t0 = Utc::now();
    let r = f.forward_once_at(t0).await.unwrap();
    assert_eq!((r.delivered, r.parked, r.failures), (0, 0, 1));
    // Later attempts, once the backoff has passed, probe with one event.
    f.forward_once_at(t0 + chrono::Duration::minutes(11))
        .await
        .unwrap();
    f.forward_once_at(t0 + chrono::Duration::minutes(30))
        .await
        .unwrap();
    assert!(
        intake.requests() < 40,
        "bisection is bounded: {} requests",
        intake.requests()
    );
    let (status, last_error): (String, String) = sqlx::query_as(
        "select status, last_error from delivery_destinations where subscription_id = $1",
    )
    .bind(sub)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "failing");
    assert!(
        last_error.contains("the fault is the destination's"),
        "{last_error}"
    );
    assert_eq!(app.queued().await, 100, "every event is kept");
    assert_eq!(
        app.scalar(
            "select count(*) from delivery_parked where subscription_id = $1",
            sub
        )
        .await,
        0,
        "nothing is parked: the events are not at fault"
    );
    assert!(
        app.scalar(
            "select refusals_total from delivery_destinations where subscription_id = $1",
            sub
        )
        .await
            >= 1
    );
    let report = app.state.notifier().run_once_at(Utc::now()).await.unwrap();
    assert_eq!(report.opened, 1);
    assert_eq!(
        app.scalar(
            "select count(*) from notifications where subscription_id = $1 and kind = 'failing'",
            sub
        )
        .await,
        1,
        "one email to the one admin"
    );
    let page_text = {
        app.login("admin@example.com", PASSWORD).await;
        app.get_page(&format!("/subscriptions/{sub}/settings"))
            .await
    };
    assert!(page_text.contains("Failing"));
}

#[tokio::test]
async fn one_bad_event_among_good_ones_is_still_parked_alone() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    intake.reject_logs_with_detail("poison", json!(true));
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let body: Vec<Value> = (0..200)
        .map(|i| {
            if i == 0 || i == 1 {
                json!({"event_id": 12, "details": {"poison": true}})
            } else {
                json!({"event_id": 12})
            }
        })
        .collect();
    assert_eq!(
        app.post_events(&token, &Value::Array(body)).await.status(),
        202
    );
    let r = app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(
        (r.delivered, r.parked),
        (198, 2),
        "two bad events up front do not look like a bad destination"
    );
    assert_eq!(app.queued().await, 0);
}

#[tokio::test]
async fn sends_that_outlive_the_lease_are_renewed_not_taken_over_and_resends_are_counted() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    intake.always(Behavior::AcceptSlowly(Duration::from_secs(3)));
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    app.post_n(&app.token(sub).await, 3000, 4870).await;
    let options = ForwarderOptions {
        // Each send outlives the lease; only the heartbeat keeps it.
        lease: Duration::from_secs(2),
        sweep: Duration::from_millis(100),
        ..ForwarderOptions::default()
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(app.forwarder_with(options.clone()).run(stop.clone()));
    let b = tokio::spawn(app.forwarder_with(options).run(stop));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.queued().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let logs = intake.logs();
    let unique: std::collections::HashSet<&str> = logs
        .iter()
        .map(|l| l["EventUuid"].as_str().unwrap())
        .collect();
    assert_eq!(unique.len(), 3000, "every event arrived");
    let (takeovers, dups): (i64, i64) = sqlx::query_as("select takeovers_total, duplicates_total from delivery_destinations where subscription_id = $1").bind(sub).fetch_one(&app.pool).await.unwrap();
    assert!(
        logs.len() <= 3300,
        "resends stay under 10%: {} (takeovers {takeovers}, counted {dups})",
        logs.len()
    );
    let counted = app
        .scalar(
            "select duplicates_total from delivery_destinations where subscription_id = $1",
            sub,
        )
        .await;
    assert!(
        counted >= (logs.len() - 3000) as i64,
        "every resend is counted: {counted} counted, {} sent twice",
        logs.len() - 3000
    );
}

#[tokio::test]
async fn an_event_near_datadogs_18_hour_limit_is_re_timed_even_when_the_intake_is_slow() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    intake.always(Behavior::AcceptSlowly(Duration::from_secs(4)));
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let occurred = Utc::now() - chrono::Duration::hours(18) + chrono::Duration::seconds(2);
    let r = app
        .post_events(
            &app.token(sub).await,
            &json!({"event_id": 4888, "occurred_at": occurred.to_rfc3339()}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.state.forwarder().forward_once().await.unwrap();
    let log = &intake.logs()[0];
    assert_eq!(log["late"], true, "{log}");
    assert!(log["ddtags"].as_str().unwrap().contains("late:true"));
    let date = chrono::DateTime::parse_from_rfc3339(log["date"].as_str().unwrap()).unwrap();
    assert!(Utc::now() - date.with_timezone(&Utc) < chrono::Duration::hours(1));
    assert_eq!(
        log["OccurredAt"],
        occurred.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    assert!(log["OriginalDate"].is_string());
}

#[tokio::test]
async fn four_hung_destinations_do_not_hold_up_a_healthy_fifth() {
    let overrides = Overrides {
        siem_timeouts: Some(HttpTimeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(30),
        }),
        forwarder_sweep: Some(Duration::from_millis(100)),
        ..Overrides::default()
    };
    let app = TestApp::spawn_with_overrides(support::test_env(), overrides).await;
    // Four intakes that accept the connection and never answer.
    let mut hung = Vec::new();
    for i in 0..4 {
        let (address, holder) = support::hung_listener().await;
        let url = format!("http://{address}");
        hung.push(holder);
        let sub = app.create_subscription(&format!("Hung {i}")).await;
        app.configure_datadog(sub, &url, KEY, true).await;
        app.post_n(&app.token(sub).await, 10, 12).await;
    }
    let intake = FakeDatadog::start(KEY).await;
    let healthy = app.create_subscription("Healthy").await;
    app.configure_datadog(healthy, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(healthy).await;

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(app.state.forwarder().run(stop));
    // Let the four hang first, then the healthy subscription records its events.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.post_n(&token, 50, 4888).await;
    eventually(
        "the healthy destination waited for the hung ones",
        Duration::from_secs(10),
        || intake.logs().len() == 50,
    )
    .await;
    stop_tx.send(true).unwrap();
    running.abort();
    for h in hung {
        h.abort();
    }
}

#[tokio::test]
async fn retention_never_jumps_over_events_a_worker_is_sending() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    app.post_n(&app.token(sub).await, 20, 12).await;
    // The events were recorded 15 days ago (retention is 14).
    sqlx::query("update audit_events set recorded_at = now() - interval '15 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    // A worker holds the destination and is sending.
    let claimed = cloudpki::store::delivery::claim_destination(
        &app.pool,
        Utc::now(),
        chrono::Duration::minutes(5),
    )
    .await
    .unwrap()
    .expect("due");
    let notifier = app.state.notifier();
    let report = notifier.run_once_at(Utc::now()).await.unwrap();
    assert_eq!(report.expired, 0, "nothing in flight expires");
    assert_eq!(app.queued().await, 20);
    // Once the worker lets go, the old events expire as one counted gap.
    let finish = cloudpki::store::delivery::Finish::default();
    cloudpki::store::delivery::finish(&app.pool, &claimed, Utc::now(), &finish, 0)
        .await
        .unwrap();
    let report = notifier.run_once_at(Utc::now()).await.unwrap();
    assert_eq!(report.expired, 20);
    assert_eq!(app.queued().await, 0);
    let (from, to): (i64, i64) =
        sqlx::query_as("select from_seq, to_seq from delivery_gaps where subscription_id = $1")
            .bind(sub)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((from, to), (1, 20), "the gap names the range of the log");
    assert_eq!(
        app.scalar(
            "select expired_total from delivery_destinations where subscription_id = $1",
            sub
        )
        .await,
        20
    );
}

#[tokio::test]
async fn upgrading_from_the_old_queue_keeps_every_pending_event_and_resends_nothing_delivered() {
    let pool = support::database_at(20261126000006).await;
    let sub = support::insert_subscription(&pool, "Old").await;
    sqlx::query("insert into siem_settings (subscription_id, enabled, provider, updated_by_email) values ($1, true, 'datadog', 'x@example.com')")
        .bind(sub)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into delivery_destinations (subscription_id, provider) values ($1, 'datadog')",
    )
    .bind(sub)
    .execute(&pool)
    .await
    .unwrap();
    // Ten events: 1–4 delivered (no queue row), 5–9 pending, 10 parked.
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = Uuid::new_v4();
        ids.push(id);
        sqlx::query("insert into audit_events (id, subscription_id, event_id, occurred_at, recorded_at) values ($1, $2, 12, now(), now() + $3 * interval '1 ms')")
            .bind(id)
            .bind(sub)
            .bind(f64::from(i))
            .execute(&pool)
            .await
            .unwrap();
    }
    for (i, id) in ids.iter().enumerate().skip(4) {
        let parked = i == 9;
        sqlx::query("insert into delivery_queue (event_uuid, subscription_id, provider, state, parked_reason, parked_at) values ($1, $2, 'datadog', $3, $4, case when $5 then now() end)")
            .bind(id)
            .bind(sub)
            .bind(if parked { "parked" } else { "pending" })
            .bind(parked.then_some("HTTP 400: bad"))
            .bind(parked)
            .execute(&pool)
            .await
            .unwrap();
    }
    // Upgrade.
    cloudpki::db::migrate(&pool).await.unwrap();
    let seqs: Vec<i64> = sqlx::query_scalar("select seq from audit_events order by recorded_at")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<i64>>(),
        "numbered in recording order"
    );
    let retry: Vec<i64> =
        sqlx::query_scalar("select seq from delivery_parked where state = 'retry' order by seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(retry, [5, 6, 7, 8, 9], "every pending event is still owed");
    let parked: Vec<i64> =
        sqlx::query_scalar("select seq from delivery_parked where state = 'parked'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(parked, [10]);
    let cursor: i64 = sqlx::query_scalar("select cursor from delivery_destinations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cursor, 10, "what was delivered is not owed again");
}

#[tokio::test]
async fn upgraded_retries_are_delivered_first_and_exactly_once() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    app.post_n(&app.token(sub).await, 6, 12).await;
    // As the upgrade leaves them: 1–6 settled by the cursor, 2 and 4 owed out of order.
    sqlx::query("update delivery_destinations set cursor = 6, inflight_to = 6")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("insert into delivery_parked (subscription_id, destination, provider, seq, state) values ($1, 1, 'datadog', 2, 'retry'), ($1, 1, 'datadog', 4, 'retry')")
        .bind(sub)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.queued().await, 2);
    let r = app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(r.delivered, 2);
    let sequences: Vec<i64> = intake
        .logs()
        .iter()
        .map(|l| l["Sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(sequences, [2, 4]);
    assert_eq!(app.queued().await, 0);
}

/// Every hot query of the delivery log, with its parameters, as the product runs it.

#[tokio::test]
async fn hot_queries_use_an_index_at_a_million_events() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Big").await;
    let other = app.create_subscription("Other").await;
    sqlx::query(
        "insert into audit_events (subscription_id, seq, id, event_id, occurred_at, recorded_at)
         select case when g % 10 = 0 then $2 else $1 end, g, gen_random_uuid(), 12, now(),
                now() - (1000000 - g) * interval '1 second'
         from generate_series(1, 1000000) g",
    )
    .bind(sub)
    .bind(other)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("analyze audit_events")
        .execute(&app.pool)
        .await
        .unwrap();
    for (what, sql) in support::hot_queries::HOT_QUERIES {
        let plan: Vec<String> = sqlx::query_scalar(&format!("explain {sql}"))
            .bind(sub)
            .fetch_all(&app.pool)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan on audit_events"),
            "{what} scans the events:\n{plan}"
        );
    }
    // The panel's figures and the claim, as the product runs them.
    app.configure_datadog(sub, "https://http-intake.logs.datadoghq.com", KEY, true)
        .await;
    let owed: Vec<String> =
        sqlx::query_scalar(&format!("explain {}", cloudpki::store::delivery::OWED_SQL))
            .bind(sub)
            .bind("datadog")
            .bind(1i16)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        !owed.join("\n").contains("Seq Scan on audit_events"),
        "{}",
        owed.join("\n")
    );
    // Give the disk back now rather than at the next run (a million rows are ~250 MB).
    sqlx::query("truncate audit_events cascade")
        .execute(&app.pool)
        .await
        .unwrap();
}
