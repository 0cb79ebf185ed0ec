//! The ingest scenario: `POST /api/v1/events` through `cloudpki serve --no-worker`, beside a plain
//! durable insert of the same rows with the same clients; then the sequencer alone.

use super::*;

/// A sequencer in this process (as `serve` runs one), until the returned sender is dropped.
pub(super) fn start_sequencer(pool: &PgPool) -> (Sequencer, tokio::sync::watch::Sender<bool>) {
    let sequencer = Sequencer::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(
        sequencer
            .clone()
            .run(pool.clone(), Arc::new(|_| {}), stopped),
    );
    (sequencer, stop)
}

/// Whether PostgreSQL chose this statement as a deadlock's victim (SQLSTATE 40P01).
pub(super) fn is_deadlock(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01")
}

/// Runs `load` on `connections` tasks for `secs`; returns (operations, seconds, latencies).
pub(super) async fn closed_loop<F, Fut>(
    connections: usize,
    secs: u64,
    load: F,
) -> anyhow::Result<(u64, f64, Vec<Duration>)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let load = Arc::new(load);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                done += load().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>((done, latencies))
        }));
    }
    let mut total = 0;
    let mut all = Vec::new();
    for t in tasks {
        let (done, latencies) = t.await??;
        total += done;
        all.extend(latencies);
    }
    let secs = t0.elapsed().as_secs_f64();
    all.sort();
    Ok((total, secs, all))
}

/// Body of `n` events as the PKI core sends them (no ids: the server assigns them).
pub(super) fn ingest_body(n: usize) -> Bytes {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "event_id": CATALOG[i % CATALOG.len()],
                "actor": format!("operator{}@example.com", i % 50),
                "details": {
                    "serial": format!("{:032x}", rand_u128()),
                    "subject": format!("CN=device-{i}.example.com,O=Example"),
                    "issuer": "CN=Example Issuing CA 1,O=Example",
                    "template": "TLS Server",
                },
            })
        })
        .collect();
    let value = if n == 1 {
        events.into_iter().next().unwrap_or_default()
    } else {
        serde_json::Value::Array(events)
    };
    Bytes::from(serde_json::to_vec(&value).expect("json"))
}

/// The baseline of ingest: a plain durable insert of the same rows into the log's table, as
/// pgbench would run it. Numbers come from a sequence (no counter row, no lock shared with
/// other writers), with no duplicate check and no notification.
pub(super) async fn insert_direct(
    pool: &PgPool,
    subscription: Uuid,
    n: usize,
) -> anyhow::Result<u64> {
    let events = new_events(n);
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let event_ids: Vec<i32> = events.iter().map(|e| e.event_id).collect();
    let occurred: Vec<chrono::DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let actors: Vec<Option<String>> = events.iter().map(|e| e.actor.clone()).collect();
    let details: Vec<serde_json::Value> = events.iter().map(|e| e.details.clone()).collect();
    let (inserted,): (i64,) = sqlx::query_as(
        "with inserted as (
            insert into audit_events (subscription_id, seq, id, event_id, occurred_at, actor, details)
            select $6, nextval('bench_direct_seq'), t.id, t.event_id, t.occurred_at,
                   t.actor, t.details
            from unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::jsonb[])
                as t(id, event_id, occurred_at, actor, details)
            returning 1
         )
         select count(*) from inserted",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&occurred)
    .bind(&actors)
    .bind(&details)
    .bind(subscription)
    .fetch_one(pool)
    .await?;
    Ok(inserted as u64)
}

/// Waits until the inbox is empty (every ingested event sequenced); how long that took.
pub(super) async fn wait_sequenced(pool: &PgPool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let deadline = t + PROCESS_TIMEOUT;
    loop {
        let waiting: bool = sqlx::query_scalar("select exists (select 1 from audit_inbox)")
            .fetch_one(pool)
            .await?;
        if !waiting {
            return Ok(t.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the sequencer did not empty the inbox within {PROCESS_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Ingest, durable (fsync and synchronous_commit on): `POST /api/v1/events` through a
/// `cloudpki serve --no-worker` process (which sequences what it takes in) against a plain
/// insert of the same rows with the same clients over the same subscriptions; then the
/// sequencer alone, in-process, against the same plain insert in batches of its size.
pub(super) async fn ingest(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    ctx.pg.set_durable(true).await?;
    let db = ctx.pg.fresh("ingest").await?;
    sqlx::query("create sequence bench_direct_seq")
        .execute(&db.pool)
        .await?;
    let subs = db.subscriptions(8, &ctx.intake.base_url()).await?;
    let mut tokens = Vec::new();
    for sub in &subs {
        let token = cloudpki::crypto::random_token();
        store::events::create_token(&db.pool, *sub, &cloudpki::crypto::token_digest(&token))
            .await?;
        tokens.push(token);
    }
    let addr = free_port()?;
    let server = Proc::spawn(
        &db,
        ctx.out_dir,
        "serve-ingest",
        &["serve", "--no-worker"],
        Some(addr),
    )?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    wait_healthy(&client, &base).await?;
    let secs = ctx.sizes.load_secs;
    // (clients, subscriptions, batch, target ratio)
    let shapes: [(usize, usize, usize, f64); 5] = [
        (8, 8, 1, 0.5),
        (8, 1, 1, 0.4),
        (1, 1, 1, 0.0),
        (8, 8, 100, 0.0),
        (8, 1, 500, 0.8),
    ];
    for (clients, nsubs, batch, target) in shapes {
        db.clear().await?;
        let body = ingest_body(batch);
        let next = Arc::new(AtomicUsize::new(0));
        let (client2, url, tokens2) = (
            client.clone(),
            format!("{base}/api/v1/events"),
            Arc::new(tokens[..nsubs].to_vec()),
        );
        let (events, took, lat) = closed_loop(clients, secs, move || {
            let k = next.fetch_add(1, Ordering::Relaxed) % tokens2.len();
            let (client, url, token, body) = (
                client2.clone(),
                url.clone(),
                tokens2[k].clone(),
                body.clone(),
            );
            async move {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if r.status() != StatusCode::ACCEPTED {
                    bail!("ingest answered {}", r.status());
                }
                r.bytes().await?;
                Ok(batch as u64)
            }
        })
        .await?;
        let api = events as f64 / took;
        let lag = wait_sequenced(&db.pool).await?;
        db.clear().await?;
        let pool = db.pool.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let subs2 = Arc::new(subs[..nsubs].to_vec());
        let (direct_events, direct_took, _) = closed_loop(clients, secs, move || {
            let pool = pool.clone();
            let sub = subs2[next.fetch_add(1, Ordering::Relaxed) % subs2.len()];
            async move { insert_direct(&pool, sub, batch).await }
        })
        .await?;
        let direct = direct_events as f64 / direct_took;
        let row = Row::new(
            &format!(
                "ingest durable, {clients} clients × {nsubs} subscriptions, batches of {batch}"
            ),
            format!(
                "{} (p50 {} per request; inbox empty {} after the load)",
                per_sec(api),
                ms(percentile(&lat, 50.0)),
                ms(lag)
            ),
            Some(api),
        )
        .baseline(format!("direct insert {}", per_sec(direct)), direct);
        report.push(if target > 0.0 {
            row.target(&format!("≥ {target} × direct"), api >= target * direct)
        } else {
            row
        });
    }
    if let Some(kb) = server.peak_rss_kb() {
        report.server_peak_kb.push(("ingest".into(), kb));
    }
    drop(server);

    // The sequencer alone: a full inbox of one subscription, sequenced in-process.
    db.clear().await?;
    let n = ctx.sizes.sequencer_events;
    let sub = subs[0];
    for _ in 0..n / 1000 {
        store::events::record_in_inbox(&db.pool, sub, &new_events(1000))
            .await
            .map_err(|e| anyhow::anyhow!("record: {e}"))?;
    }
    let t = Instant::now();
    let sequenced = store::events::sequence_all(&db.pool, sub)
        .await
        .map_err(|e| anyhow::anyhow!("sequence: {e}"))?;
    let rate = sequenced as f64 / t.elapsed().as_secs_f64();
    db.clear().await?;
    let batch = store::events::SEQUENCER_BATCH as usize;
    let t = Instant::now();
    let mut direct_events = 0;
    while direct_events < n {
        direct_events += insert_direct(&db.pool, sub, batch).await? as usize;
    }
    let direct = direct_events as f64 / t.elapsed().as_secs_f64();
    report.push(
        Row::new(
            &format!("sequencer alone, {n} waiting events, durable"),
            per_sec(rate),
            Some(rate),
        )
        .baseline(
            format!("direct insert of {batch} a statement {}", per_sec(direct)),
            direct,
        )
        .target("≥ 100,000/s", rate >= 100_000.0),
    );
    report.note(format!(
        "ingest: durable; API through one `cloudpki serve --no-worker` (uncontended requests number their events themselves, the rest go through the inbox and its sequencer, on the same 2 cores), {secs} s per shape; baseline a plain insert of the same rows into audit_events with the same clients over the same subscriptions (numbers from a sequence, no counter, no duplicate check). Sequencer alone: record_in_inbox() fills the inbox, then sequence_all() moves it into the log in batches of {batch}."
    ));
    ctx.pg.drop_db(db).await;
    Ok(())
}
