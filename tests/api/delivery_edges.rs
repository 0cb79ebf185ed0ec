//! The delivery log at its edges: nothing passes the cursor unaccepted. Parking needs proof;
//! provider switches, re-enabling, pauses and filters act at once and lose nothing; replays,
//! leases, retention and the notifier never step on a claim.

use crate::support;
use cloudpki::domain::destination::DestinationKey;
use std::time::Duration;

use crate::support::{
    fake_datadog::{Behavior, FakeDatadog},
    TestApp,
};
use chrono::Utc;
use cloudpki::{forwarder::ForwarderOptions, store};
use serde_json::json;
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple";

async fn cursor(app: &TestApp, sub: Uuid, provider: &str) -> (i64, Option<i64>) {
    sqlx::query_as(
        "select cursor, off_at_seq from delivery_destinations
         where subscription_id = $1 and provider = $2",
    )
    .bind(sub)
    .bind(provider)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// Export on to `to` (or off), as a save does: the settings row and the switch in one
/// transaction.
async fn switch(
    app: &TestApp,
    sub: Uuid,
    to: Option<&str>,
    carry: bool,
) -> store::delivery::Switched {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("update siem_settings set enabled = $2, provider = coalesce($3, provider) where subscription_id = $1")
        .bind(sub)
        .bind(to.is_some())
        .bind(to)
        .execute(&mut *tx)
        .await
        .unwrap();
    let switched = store::delivery::apply_switch(&mut tx, DestinationKey::first(sub), to, carry)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    switched
}

/// An app with one subscription exporting to a fake Datadog intake.
async fn datadog_app() -> (TestApp, Uuid, FakeDatadog) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    (app, sub, intake)
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_sparse_tenant_whose_intake_refuses_everything_fails_mails_once_and_gets_every_event_after_the_fix(
) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    for admin in ["ann@example.com", "bob@example.com"] {
        app.create_user(admin, PASSWORD, sub, "admin").await;
    }
    let intake = FakeDatadog::start(KEY).await;
    intake.always(Behavior::Status(400));
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let f = app.state.forwarder();
    let notifier = app.state.notifier();
    let t0 = Utc::now();
    // Six events, one at a time, 3 s apart, each picked up on its own.
    for i in 0..6 {
        app.post_n(&token, 1, 4888).await;
        let at = t0 + chrono::Duration::seconds(3 * i);
        f.forward_once_at(at).await.unwrap();
        notifier.run_once_at(at).await.unwrap();
    }
    assert_eq!(
        app.scalar(
            "select count(*) from delivery_parked where subscription_id = $1",
            sub
        )
        .await,
        0,
        "nothing is parked without proof"
    );
    assert_eq!(app.queued().await, 6, "the cursor did not move");
    let (status, error): (String, String) = sqlx::query_as(
        "select status, last_error from delivery_destinations where subscription_id = $1",
    )
    .bind(sub)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "failing");
    assert!(error.contains("the fault is the destination's"), "{error}");
    assert_eq!(
        app.scalar(
            "select count(*) from notifications where subscription_id = $1 and kind = 'failing'",
            sub
        )
        .await,
        2,
        "one email per administrator"
    );
    app.login("ann@example.com", PASSWORD).await;
    let page = app
        .get_page(&format!("/subscriptions/{sub}/settings"))
        .await;
    assert!(page.contains("Failing"), "the panel says so");

    // The intake is fixed: the events flow by themselves, nobody presses Retry.
    intake.heal();
    let later = t0 + chrono::Duration::minutes(30);
    let report = f.forward_once_at(later).await.unwrap();
    assert_eq!(report.delivered, 6, "{report:?}");
    assert_eq!(app.queued().await, 0);
    let sequences: Vec<i64> = intake
        .logs()
        .iter()
        .filter(|l| l["EventID"] == 4888)
        .filter_map(|l| l["Sequence"].as_i64())
        .collect();
    assert_eq!(sequences, vec![1, 2, 3, 4, 5, 6]);
    notifier.run_once_at(later).await.unwrap();
    assert_eq!(
        app.scalar(
            "select count(*) from notifications where subscription_id = $1 and kind = 'recovered'",
            sub
        )
        .await,
        2
    );
}

#[tokio::test]
async fn refusals_that_name_their_request_single_413s_park_nothing_either() {
    for behavior in [Behavior::StatusWithRequestId(400), Behavior::Status(413)] {
        let app = TestApp::spawn().await;
        let sub = app.create_subscription("S").await;
        let intake = FakeDatadog::start(KEY).await;
        intake.always(behavior);
        app.configure_datadog(sub, &intake.base_url(), KEY, true)
            .await;
        let token = app.token(sub).await;
        for n in [1, 1, 5] {
            app.post_n(&token, n, 12).await;
            app.state
                .forwarder()
                .forward_once_at(Utc::now() + chrono::Duration::hours(1))
                .await
                .unwrap();
        }
        assert_eq!(
            app.scalar(
                "select count(*) from delivery_parked where subscription_id = $1",
                sub
            )
            .await,
            0
        );
        assert_eq!(app.queued().await, 7);
        intake.heal();
        app.state
            .forwarder()
            .forward_once_at(Utc::now() + chrono::Duration::hours(2))
            .await
            .unwrap();
        assert_eq!(app.queued().await, 0);
    }
}

#[tokio::test]
async fn a_provider_switch_under_concurrent_ingest_leaves_no_event_owed_by_nobody() {
    let (app, sub, _intake) = datadog_app().await;
    let token = app.token(sub).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let ingest = {
        let client = reqwest::Client::new();
        let url = app.url("/api/v1/events");
        let token = token.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !*stop.borrow() && n < 5000 {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"event_id": 12}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                n += 1;
            }
        })
    };
    let mut providers = ["webhook", "datadog"].into_iter().cycle();
    let mut from = "datadog";
    for _ in 0..60 {
        let to = providers.next().unwrap();
        switch(&app, sub, Some(to), false).await;
        let (_, off_at) = cursor(&app, sub, from).await;
        let (start, _) = cursor(&app, sub, to).await;
        assert_eq!(
            off_at,
            Some(start),
            "what {from} stopped owing, {to} owes from the same event on"
        );
        from = to;
    }
    stop_tx.send(true).unwrap();
    ingest.await.unwrap();
}

#[tokio::test]
async fn switching_provider_carries_the_backlog_unless_unticked() {
    let p = support::portal::portal().await;
    let intake = FakeDatadog::start(KEY).await;
    intake.always(Behavior::Status(503));
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "custom"),
                ("datadog_url", &intake.base_url()),
                ("datadog_api_key", KEY),
            ],
        )
        .await;
    assert_eq!(code, 303);
    p.app.post_n(&p.token, 5, 4888).await;
    p.app.state.forwarder().forward_once().await.unwrap();
    let page = p.app.get_page(&p.path).await;
    assert!(
        page.contains("Send the 5 events not yet delivered to Datadog to"),
        "the checkbox names the backlog"
    );
    assert!(page.contains(r#"name="carry_backlog""#));

    let hook = support::fake_webhook::FakeWebhook::start(&[]).await;
    let url = hook.url();
    let (code, page) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", url.as_str()),
                ("carry_backlog_offered", "1"),
                ("carry_backlog", "on"),
            ],
        )
        .await;
    assert_eq!(code, 200, "the signing secret is shown once");
    let secret = support::texts(&page, "#new-signing-secret").pop().unwrap();
    hook.trust(&[cloudpki::domain::webhook::SigningSecret::parse(&secret).unwrap()]);
    let report = p.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 5, "the webhook got Datadog's backlog");
    assert_eq!(p.app.queued().await, 0, "Datadog owes nothing any more");

    // Back to Datadog, unticked: what the webhook owes stays with it, shown as not sent.
    hook.script(vec![support::fake_webhook::Behavior::Status(503); 20]);
    p.app.post_n(&p.token, 3, 12).await;
    p.app.state.forwarder().forward_once().await.unwrap();
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "custom"),
                ("datadog_url", &intake.base_url()),
                ("datadog_api_key", KEY),
                ("carry_backlog_offered", "1"),
            ],
        )
        .await;
    assert_eq!(code, 303);
    let page = p.app.get_page(&p.path).await;
    assert!(
        page.contains("3 event(s) still wait for Signed webhook")
            || page.contains("3 event(s) still wait for"),
        "the webhook's backlog is shown as not sent"
    );
    intake.heal();
    let report = p.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(
        report.delivered, 0,
        "Datadog was not given the webhook's backlog"
    );
}

#[tokio::test]
async fn re_enabling_export_sends_what_was_owed_but_nothing_recorded_while_it_was_off() {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    app.post_n(&token, 3, 12).await;
    app.state.forwarder().forward_once().await.unwrap();
    // Two more are owed when export is switched off (the intake is down).
    intake.always(Behavior::Status(503));
    app.post_n(&token, 2, 19).await;
    app.state.forwarder().forward_once().await.unwrap();
    switch(&app, sub, None, false).await;
    app.post_n(&token, 4, 4888).await;
    let switched = switch(&app, sub, Some("datadog"), false).await;
    assert_eq!(switched.not_owed, 4);
    app.post_n(&token, 1, 4870).await;
    intake.heal();
    let report = app
        .state
        .forwarder()
        .forward_once_at(Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(report.delivered, 3, "{report:?}");
    let mut ids: Vec<i64> = intake
        .logs()
        .iter()
        .filter_map(|l| l["EventID"].as_i64())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![12, 12, 12, 19, 19, 4870],
        "nothing of the off window"
    );
    assert_eq!(app.queued().await, 0);
    let page = app
        .get_page(&format!("/subscriptions/{sub}/settings"))
        .await;
    assert!(
        page.contains("4 events recorded while export was off were not sent"),
        "the panel names the window"
    );
    assert!(
        page.contains(r#"id="replay-unsent""#),
        "and offers Replay for it"
    );
}

#[tokio::test]
async fn a_gateway_timeout_counts_the_resend_as_a_possible_duplicate() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    intake.script(vec![Behavior::Status(504)]);
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    app.post_n(&app.token(sub).await, 5, 12).await;
    let f = app.state.forwarder();
    let first = f.forward_once().await.unwrap();
    assert_eq!(first.delivered, 0);
    let second = f
        .forward_once_at(Utc::now() + chrono::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!((second.delivered, second.duplicates), (5, 5));
    assert_eq!(
        app.scalar(
            "select duplicates_total from delivery_destinations where subscription_id = $1",
            sub
        )
        .await,
        5
    );
}

#[tokio::test]
async fn the_notifier_locks_only_the_destinations_whose_events_expire() {
    let (app, sub, _intake) = datadog_app().await;
    app.post_n(&app.token(sub).await, 3, 12).await;
    // A retention pass in progress, with nothing old enough to expire.
    let mut pass = app.pool.begin().await.unwrap();
    let now = Utc::now();
    let gaps = store::notify::expire(&mut pass, now - chrono::Duration::days(14), now)
        .await
        .unwrap();
    assert!(gaps.is_empty());
    // A claim, a pause: neither waits for nor skips the pass.
    let claimed = store::delivery::claim_destination(&app.pool, now, chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert!(claimed.is_some(), "the claim skipped a row the pass locked");
    let paused = tokio::time::timeout(
        Duration::from_secs(5),
        store::delivery::pause(
            &app.pool,
            DestinationKey::first(sub),
            "datadog",
            "admin@example.com",
        ),
    )
    .await;
    assert!(matches!(paused, Ok(Ok(true))), "pause waited for the pass");
    pass.rollback().await.unwrap();
}

#[tokio::test]
async fn a_newer_replay_with_the_same_end_is_not_skipped_by_an_older_claim() {
    let (app, sub, _intake) = datadog_app().await;
    app.post_n(&app.token(sub).await, 30, 12).await;
    app.state.forwarder().forward_once().await.unwrap();
    // One event per second of recording time, so windows select by seq.
    sqlx::query(
        "update audit_events set recorded_at = now() - interval '1 hour' + seq * interval '1 second'
         where subscription_id = $1",
    )
    .bind(sub)
    .execute(&app.pool)
    .await
    .unwrap();
    let at = |seq: i64| Utc::now() - chrono::Duration::hours(1) + chrono::Duration::seconds(seq);
    let window = |from: i64| {
        (
            at(from) - chrono::Duration::milliseconds(500),
            at(30) + chrono::Duration::seconds(1),
        )
    };
    let first = store::delivery::start_replay(
        &app.pool,
        DestinationKey::first(sub),
        "datadog",
        window(20),
        1000,
    )
    .await
    .unwrap();
    assert!(
        matches!(
            first,
            store::delivery::ReplayPlan::Started {
                from: 20,
                to: 30,
                ..
            }
        ),
        "{first:?}"
    );
    let claimed =
        store::delivery::claim_destination(&app.pool, Utc::now(), chrono::Duration::seconds(60))
            .await
            .unwrap()
            .unwrap();
    // An administrator starts a wider replay with the same end while the claim replays.
    let second = store::delivery::start_replay(
        &app.pool,
        DestinationKey::first(sub),
        "datadog",
        window(5),
        1000,
    )
    .await
    .unwrap();
    assert!(matches!(
        second,
        store::delivery::ReplayPlan::Started {
            from: 5,
            to: 30,
            ..
        }
    ));
    store::delivery::advance_replay(&app.pool, &claimed, 31, 11)
        .await
        .unwrap();
    let next: i64 = app
        .scalar(
            "select replay_next from delivery_destinations where subscription_id = $1",
            sub,
        )
        .await;
    assert_eq!(next, 5, "the newer replay starts from its own beginning");
}

#[tokio::test]
async fn pausing_or_switching_off_mid_claim_stops_the_next_range_and_a_widened_filter_applies_at_once(
) {
    for change in ["pause", "off", "filter"] {
        let app = TestApp::spawn().await;
        let sub = app.create_subscription("S").await;
        let intake = FakeDatadog::start(KEY).await;
        // Slow enough that the change lands while the first range is on its way.
        intake.always(Behavior::AcceptSlowly(Duration::from_secs(2)));
        app.configure_datadog(sub, &intake.base_url(), KEY, true)
            .await;
        if change == "filter" {
            let mut tx = app.pool.begin().await.unwrap();
            store::delivery::set_filter(
                &mut tx,
                DestinationKey::first(sub),
                "datadog",
                Some(&[12]),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        let token = app.token(sub).await;
        app.post_n(&token, 1000, 12).await;
        app.post_n(&token, 1000, 4888).await;
        let f = app.forwarder_with(ForwarderOptions {
            claim_budget: Duration::from_secs(30),
            ..ForwarderOptions::default()
        });
        let pass = tokio::spawn(async move { f.forward_once().await });
        eventually(
            "the first range is on its way",
            Duration::from_secs(10),
            || intake.requests() >= 1,
        )
        .await;
        match change {
            "pause" => {
                store::delivery::pause(
                    &app.pool,
                    DestinationKey::first(sub),
                    "datadog",
                    "admin@example.com",
                )
                .await
                .unwrap();
            }
            "off" => {
                switch(&app, sub, None, false).await;
            }
            _ => {
                let mut tx = app.pool.begin().await.unwrap();
                store::delivery::set_filter(&mut tx, DestinationKey::first(sub), "datadog", None)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
        let report = tokio::time::timeout(Duration::from_secs(60), pass)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match change {
            "filter" => {
                assert_eq!(report.filtered, 0, "{change}: {report:?}");
                assert_eq!(intake.logs().len(), 2000, "{change}");
            }
            _ => {
                assert_eq!(report.delivered, 1000, "{change}: {report:?}");
                assert_eq!(intake.logs().len(), 1000, "{change}: nothing sent after it");
            }
        }
    }
}

#[tokio::test]
async fn retention_never_skips_an_event_that_is_not_old_yet() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let intake = FakeDatadog::start(KEY).await;
    intake.always(Behavior::Status(503));
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    app.post_n(&app.token(sub).await, 3, 12).await;
    // `recorded_at` is a transaction's start: a later event can be the older one.
    sqlx::query(
        "update audit_events set recorded_at = case when seq = 2 then now()
                                                   else now() - interval '15 days' end
         where subscription_id = $1",
    )
    .bind(sub)
    .execute(&app.pool)
    .await
    .unwrap();
    let report = app.state.notifier().run_once_at(Utc::now()).await.unwrap();
    assert_eq!(report.expired, 1, "only the event before the young one");
    assert_eq!(cursor(&app, sub, "datadog").await.0, 1);
    assert_eq!(app.queued().await, 2);
}

#[tokio::test]
async fn retries_and_replays_outliving_the_lease_keep_it() {
    let (app, sub, intake) = datadog_app().await;
    app.post_n(&app.token(sub).await, 20, 12).await;
    app.state.forwarder().forward_once().await.unwrap();
    // Every event waits to be resent out of order, and a replay is asked for.
    sqlx::query(
        "insert into delivery_parked (subscription_id, destination, provider, seq, state)
         select $1, 1, 'datadog', seq, 'retry' from audit_events where subscription_id = $1 and seq <= 10",
    )
    .bind(sub)
    .execute(&app.pool)
    .await
    .unwrap();
    let plan = store::delivery::start_replay(
        &app.pool,
        DestinationKey::first(sub),
        "datadog",
        (
            Utc::now() - chrono::Duration::hours(1),
            Utc::now() + chrono::Duration::hours(1),
        ),
        1000,
    )
    .await
    .unwrap();
    assert!(matches!(plan, store::delivery::ReplayPlan::Started { .. }));
    // Each send outlives the lease more than twice; only renewals keep it.
    intake.always(Behavior::AcceptSlowly(Duration::from_secs(5)));
    let f = app.forwarder_with(ForwarderOptions {
        lease: Duration::from_secs(2),
        ..ForwarderOptions::default()
    });
    let pass = tokio::spawn(async move { f.forward_once().await });
    // While the slow sends go on, another worker finds the destination held.
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let other =
            store::delivery::claim_destination(&app.pool, Utc::now(), chrono::Duration::seconds(2))
                .await
                .unwrap();
        assert!(other.is_none(), "the lease ran out while sending");
    }
    let report = pass.await.unwrap().unwrap();
    assert_eq!((report.delivered, report.replayed), (10, 20), "{report:?}");
    assert_eq!(
        app.scalar(
            "select takeovers_total from delivery_destinations where subscription_id = $1",
            sub
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_worker_whose_clock_runs_ahead_takes_no_live_lease() {
    let (app, sub, _intake) = datadog_app().await;
    app.post_n(&app.token(sub).await, 3, 12).await;
    let lease = chrono::Duration::seconds(60);
    let held = store::delivery::claim_destination(&app.pool, Utc::now(), lease)
        .await
        .unwrap();
    assert!(held.is_some());
    let ahead = Utc::now() + chrono::Duration::hours(1);
    let taken = store::delivery::claim_destination(&app.pool, ahead, lease)
        .await
        .unwrap();
    assert!(taken.is_none(), "a fast clock took a live lease");
}
