//! Ingest never waits on another writer; the sequencer numbers and chains what was ingested.
//!
//! A test "holds the sequencer" by taking the subscription's counter row lock from its own
//! connection, the lock every sequencer batch needs: ingest must still answer 202, and what it
//! stored must wait, whole, until the lock is released, through a SIGKILL of the process that
//! took it in.

use crate::support;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestApp;
use serde_json::{json, Value};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Holds the subscription's counter row lock until the transaction is dropped.
async fn hold_counter(pool: &PgPool, sub: Uuid) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("select 1 from subscriptions where id = $1 for no key update")
        .bind(sub)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// POSTs without waiting for the sequencer (the helper `post_events` waits for it).
async fn ingest(base: &str, token: &str, body: &Value) -> reqwest::Response {
    let post = reqwest::Client::new()
        .post(format!("{base}/api/v1/events"))
        .bearer_auth(token)
        .json(body)
        .send();
    tokio::time::timeout(Duration::from_secs(10), post)
        .await
        .expect("ingest answered without waiting for the sequencer's lock")
        .expect("POST /api/v1/events")
}

async fn scalar(pool: &PgPool, sql: &str, sub: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(sub)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The subscription's log is numbered 1..=n without a gap and every link of its hash chain
/// recomputes; `subscriptions.last_seq`/`last_hash` name its end. Returns n.
async fn assert_log(pool: &PgPool, sub: Uuid) -> i64 {
    type Row = (
        i64,
        Uuid,
        i32,
        chrono::DateTime<chrono::Utc>,
        Option<String>,
        Value,
        Vec<u8>,
        Vec<u8>,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select seq, id, event_id, occurred_at, actor, details, prev_hash, hash, recorded_at
         from audit_events where subscription_id = $1 order by seq",
    )
    .bind(sub)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut prev = cloudpki::chain::GENESIS.to_owned();
    let mut recorded = None;
    for (i, (seq, id, event_id, occurred, actor, details, prev_hash, hash, at)) in
        rows.iter().enumerate()
    {
        assert_eq!(*seq, i as i64 + 1, "gap-free");
        assert_eq!(
            hex::encode(prev_hash),
            prev,
            "seq {seq} links to the one before"
        );
        let occurred = cloudpki::siem::wire::rfc3339(*occurred);
        let expected = cloudpki::chain::hash(
            &prev,
            &cloudpki::chain::Link {
                actor: actor.as_deref(),
                event_id: *event_id,
                event_uuid: *id,
                occurred_at: &occurred,
                sequence: *seq,
                subscription_id: sub,
                details,
            },
        );
        assert_eq!(hex::encode(hash), expected, "seq {seq} hashes");
        assert!(
            recorded.is_none_or(|r| r <= *at),
            "recorded_at never goes back"
        );
        recorded = Some(*at);
        prev = expected;
    }
    let (last_seq, last_hash): (i64, Option<Vec<u8>>) =
        sqlx::query_as("select last_seq, last_hash from subscriptions where id = $1")
            .bind(sub)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(last_seq, rows.len() as i64);
    if !rows.is_empty() {
        assert_eq!(hex::encode(last_hash.unwrap_or_default()), prev);
    }
    last_seq
}

#[tokio::test]
async fn ingest_answers_while_the_sequencer_is_held_and_the_events_are_sequenced_after() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let held = hold_counter(&app.pool, sub).await;
    for n in 0..3 {
        let r = ingest(
            &app.base_url,
            &token,
            &json!([{"event_id": 4888, "details": {"n": n}}, {"event_id": 12}]),
        )
        .await;
        assert_eq!(r.status(), 202);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"accepted": 2, "duplicates": 0})
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = "select count(*) from audit_events where subscription_id = $1";
    let waiting = "select count(*) from audit_inbox where subscription_id = $1";
    assert_eq!(scalar(&app.pool, logged, sub).await, 0, "not numbered yet");
    assert_eq!(scalar(&app.pool, waiting, sub).await, 6, "stored, waiting");
    drop(held);
    app.sequenced().await;
    assert_eq!(assert_log(&app.pool, sub).await, 6);
    let details: Vec<Value> = sqlx::query_scalar(
        "select details from audit_events where subscription_id = $1 and event_id = 4888 order by seq",
    )
    .bind(sub)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        details,
        [json!({"n": 0}), json!({"n": 1}), json!({"n": 2})],
        "in ingest order"
    );
}

#[tokio::test]
async fn an_id_still_waiting_to_be_sequenced_is_a_duplicate() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let id = Uuid::new_v4();
    let event = json!({"id": id, "event_id": 4888});
    let held = hold_counter(&app.pool, sub).await;
    let first = ingest(&app.base_url, &token, &event).await;
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0})
    );
    let again = ingest(&app.base_url, &token, &json!([event, event])).await;
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 2})
    );
    drop(held);
    app.sequenced().await;
    // And once sequenced, still a duplicate.
    let later = ingest(&app.base_url, &token, &event).await;
    assert_eq!(
        later.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 1})
    );
    app.sequenced().await;
    assert_eq!(assert_log(&app.pool, sub).await, 1);
}

#[tokio::test]
async fn a_copy_that_slipped_past_the_ingest_check_is_dropped_by_the_sequencer() {
    // The race `record` leaves to the sequencer: an id sequenced while a retry of it was
    // being inserted. Put the copy in the inbox as that retry would.
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let id = Uuid::new_v4();
    app.post_events(&token, &json!({"id": id, "event_id": 4888}))
        .await;
    let held = hold_counter(&app.pool, sub).await;
    sqlx::query(
        "insert into audit_inbox (subscription_id, id, event_id, occurred_at, details)
         values ($1, $2, 4888, now(), '{}')",
    )
    .bind(sub)
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    ingest(&app.base_url, &token, &json!({"event_id": 12})).await;
    drop(held);
    app.sequenced().await;
    assert_eq!(
        assert_log(&app.pool, sub).await,
        2,
        "the copy got no number"
    );
}

/// `cloudpki serve --no-worker` on this test's database, listening on a free port.
fn serve(app: &TestApp) -> (Child, String) {
    let port = crate::support::ports::outside_the_ephemeral_range();
    let data = tempfile::tempdir().unwrap().keep();
    let child = Command::new(env!("CARGO_BIN_EXE_cloudpki"))
        .args([
            "serve",
            "--no-worker",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("DATABASE_URL", app.database_url())
        .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
        .env("CLOUDPKI_EGRESS_ALLOW", "127.0.0.1")
        .env("CLOUDPKI_DATA_DIR", data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{port}"))
}

async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "serve did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_killed_between_ingest_and_sequencing_loses_nothing() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    app.post_n(&token, 3, 12).await;
    let (mut child, base) = serve(&app);
    wait_healthy(&base).await;
    let held = hold_counter(&app.pool, sub).await;
    for n in 0..5 {
        let r = ingest(
            &base,
            &token,
            &json!({"event_id": 4888, "details": {"n": n}}),
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    child.kill().unwrap(); // SIGKILL: the 202s were answered, nothing was sequenced
    child.wait().unwrap();
    let waiting = "select count(*) from audit_inbox where subscription_id = $1";
    assert_eq!(scalar(&app.pool, waiting, sub).await, 5);
    drop(held);
    // Another process's sequencer sweeps the inbox: nothing announced it.
    app.sequenced().await;
    assert_eq!(assert_log(&app.pool, sub).await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_ingest_into_many_subscriptions_gives_each_a_gap_free_verified_chain() {
    let app = TestApp::spawn().await;
    let mut subs = Vec::new();
    for i in 0..4 {
        let sub = app.create_subscription(&format!("S{i}")).await;
        subs.push((sub, app.token(sub).await));
    }
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let (base, token) = (app.base_url.clone(), subs[c % subs.len()].1.clone());
        clients.spawn(async move {
            for n in 0..15 {
                let body =
                    json!([{"event_id": 4888, "details": {"c": c, "n": n}}, {"event_id": 12}]);
                assert_eq!(ingest(&base, &token, &body).await.status(), 202);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    app.sequenced().await;
    for (sub, _) in &subs {
        assert_eq!(assert_log(&app.pool, *sub).await, 60);
    }
}

#[tokio::test]
async fn the_upgrade_carries_existing_events_cursors_and_chains_over() {
    // A database as today's schema left it: three chained events, a destination at cursor 2.
    let pool = support::database_at(20261206000008).await;
    let sub = support::insert_subscription(&pool, "Old").await;
    let mut prev = cloudpki::chain::GENESIS.to_owned();
    for seq in 1..=3i64 {
        let id = Uuid::new_v4();
        let occurred: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("select date_trunc('milliseconds', now()) - interval '1 hour'")
                .fetch_one(&pool)
                .await
                .unwrap();
        let details = json!({"n": seq});
        let hash = cloudpki::chain::hash(
            &prev,
            &cloudpki::chain::Link {
                actor: None,
                event_id: 12,
                event_uuid: id,
                occurred_at: &cloudpki::siem::wire::rfc3339(occurred),
                sequence: seq,
                subscription_id: sub,
                details: &details,
            },
        );
        sqlx::query(
            "insert into audit_events (subscription_id, seq, id, event_id, occurred_at, details,
                                       prev_hash, hash)
             values ($1, $2, $3, 12, $4, $5, $6, $7)",
        )
        .bind(sub)
        .bind(seq)
        .bind(id)
        .bind(occurred)
        .bind(&details)
        .bind(hex::decode(&prev).unwrap())
        .bind(hex::decode(&hash).unwrap())
        .execute(&pool)
        .await
        .unwrap();
        prev = hash;
    }
    sqlx::query("update subscriptions set last_seq = 3, last_hash = $2 where id = $1")
        .bind(sub)
        .bind(hex::decode(&prev).unwrap())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("insert into delivery_destinations (subscription_id, provider, cursor, inflight_to) values ($1, 'datadog', 2, 2)")
        .bind(sub)
        .execute(&pool)
        .await
        .unwrap();

    cloudpki::db::migrate(&pool).await.unwrap();
    let new: Vec<cloudpki::store::events::NewEvent> = (0..2)
        .map(|n| cloudpki::store::events::NewEvent {
            id: Uuid::new_v4(),
            event_id: 4888,
            occurred_at: chrono::Utc::now(),
            actor: Some("alice@example.com".into()),
            details: json!({"after": n}),
        })
        .collect();
    let recorded = cloudpki::store::events::record(&pool, sub, &new)
        .await
        .unwrap();
    assert_eq!(recorded.accepted, 2);
    cloudpki::store::events::sequence_all(&pool, sub)
        .await
        .unwrap();
    assert_eq!(
        assert_log(&pool, sub).await,
        5,
        "the chain continues from seq 3"
    );
    let cursor = scalar(
        &pool,
        "select cursor from delivery_destinations where subscription_id = $1",
        sub,
    )
    .await;
    assert_eq!(cursor, 2, "the cursor is untouched: 3, 4 and 5 are owed");
}

#[tokio::test]
async fn an_event_accepted_before_export_is_switched_off_is_still_owed_by_the_old_destination() {
    // No sequencer runs here: the event waits in the inbox when the switch comes.
    let pool = support::database_at(i64::MAX).await;
    let sub = support::insert_subscription(&pool, "S").await;
    let mut tx = pool.begin().await.unwrap();
    cloudpki::store::delivery::ensure_destination(
        &mut tx,
        cloudpki::domain::destination::DestinationKey::first(sub),
        "datadog",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let event = cloudpki::store::events::NewEvent {
        id: Uuid::new_v4(),
        event_id: 4888,
        occurred_at: chrono::Utc::now(),
        actor: None,
        details: json!({}),
    };
    // As ingest stores it while the counter is held by someone else.
    cloudpki::store::events::record_in_inbox(&pool, sub, &[event])
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    cloudpki::store::delivery::apply_switch(
        &mut tx,
        cloudpki::domain::destination::DestinationKey::first(sub),
        None,
        false,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let off_at = scalar(
        &pool,
        "select off_at_seq from delivery_destinations where subscription_id = $1",
        sub,
    )
    .await;
    assert_eq!(assert_log(&pool, sub).await, 1, "numbered by the switch");
    assert_eq!(off_at, 1, "owed by the destination switched off after it");
}

#[tokio::test]
async fn an_uncontended_ingest_is_in_the_log_at_its_202_and_wakes_the_forwarder_after_commit() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    app.configure_datadog(
        sub,
        "https://http-intake.logs.datadoghq.com",
        "0123456789abcdef0123456789abcdef",
        true,
    )
    .await;
    let token = app.token(sub).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener
        .listen(cloudpki::store::events::EVENTS_CHANNEL)
        .await
        .unwrap();
    let r = ingest(
        &app.base_url,
        &token,
        &json!([{"event_id": 4888}, {"event_id": 12}]),
    )
    .await;
    assert_eq!(r.status(), 202);
    // No sequencer involved: numbered and chained by the request itself.
    let waiting = "select count(*) from audit_inbox where subscription_id = $1";
    assert_eq!(scalar(&app.pool, waiting, sub).await, 0);
    assert_eq!(assert_log(&app.pool, sub).await, 2);
    let woken = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the forwarder is woken")
        .unwrap();
    assert_eq!(woken.payload(), sub.to_string());
}
