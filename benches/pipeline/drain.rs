//! The drain scenario: a pre-filled backlog delivered by worker processes, beside the wire limit
//! (the same payloads POSTed by a bare client) and the store limit (claim, read, settle, finish;
//! nothing sent).

use super::*;

pub(super) struct Drained {
    pub(super) rate: f64,
    pub(super) secs: f64,
    pub(super) complete: bool,
}

/// Starts `workers` worker processes on a held backlog of `expected` events, releases it and
/// measures events delivered at the intake per second until the queue is empty.
pub(super) async fn drain_with_workers(
    ctx: &Ctx<'_>,
    db: &Db,
    workers: usize,
    expected: u64,
    report: &mut Report,
    label: &str,
) -> anyhow::Result<Drained> {
    ctx.intake.reset(false);
    db.hold().await?;
    let since = db.now().await?;
    let mut procs = Vec::new();
    for i in 0..workers {
        procs.push(Proc::worker(
            db,
            ctx.out_dir,
            &format!("worker-{label}-{i}"),
        )?);
    }
    db.wait_listeners(workers, since).await?;
    db.release().await?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(ctx.sizes.drain_deadline_secs);
    let mut complete = false;
    while Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
        if ctx.intake.events() >= expected && db.queued().await? == 0 {
            complete = true;
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let delivered = ctx.intake.events();
    for p in &procs {
        if let Some(kb) = p.peak_rss_kb() {
            report.worker_peak_kb.push((label.to_owned(), kb));
        }
    }
    drop(procs);
    if !complete {
        report.note(format!(
            "{label}: backlog not drained within {} s ({delivered} of {expected} delivered)",
            ctx.sizes.drain_deadline_secs
        ));
    }
    if delivered > expected {
        report.note(format!(
            "{label}: {} events delivered more than once",
            delivered - expected
        ));
    }
    Ok(Drained {
        rate: delivered.min(expected) as f64 / secs,
        secs,
        complete,
    })
}

/// The same payloads the worker builds, gzipped up front, POSTed by a bare client.
pub(super) async fn wire_limit(
    intake: &Intake,
    subs: &[Uuid],
    n: i64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let mut logs = prefill_logs(subs, n);
    // The forwarder batches per destination.
    logs.sort_by_key(|l| l.subscription_id);
    let mut payloads = Vec::new();
    for chunk in logs.chunk_by(|a, b| a.subscription_id == b.subscription_id) {
        for batch in datadog::build_batches(chunk, HOSTNAME, Utc::now()) {
            payloads.push(Bytes::from(batch.gzip_body()?));
        }
    }
    let sizes: Vec<u64> = logs
        .chunk_by(|a, b| a.subscription_id == b.subscription_id)
        .flat_map(|chunk| {
            chunk
                .chunks(datadog::MAX_BATCH_EVENTS)
                .map(|c| c.len() as u64)
                .collect::<Vec<_>>()
        })
        .collect();
    if sizes.len() != payloads.len() {
        bail!("wire limit: unexpected batching");
    }
    intake.reset(false);
    let payloads = Arc::new(payloads.into_iter().zip(sizes).collect::<Vec<_>>());
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/logs", intake.base_url());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (payloads, next, sent, client, url) = (
            payloads.clone(),
            next.clone(),
            sent.clone(),
            client.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                // At least one pass over every payload, and at least WIRE_MIN_TIME.
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= payloads.len() && t0.elapsed() >= WIRE_MIN_TIME {
                    return Ok::<(), reqwest::Error>(());
                }
                let (body, events) = &payloads[i % payloads.len()];
                let r = client
                    .post(&url)
                    .header("DD-API-KEY", API_KEY)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body.clone())
                    .send()
                    .await?;
                r.error_for_status()?.bytes().await?;
                sent.fetch_add(*events, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    if intake.events() != sent {
        bail!("wire limit: intake counted {} of {sent}", intake.events());
    }
    Ok(sent as f64 / secs)
}

/// Claims through `store::delivery` and reads and settles range after range as the forwarder
/// does (until caught up or the claim budget is spent), then finishes the claim; nothing is
/// sent. What the store alone can do per second.
pub(super) async fn store_limit(db: &Db, expected: u64, loops: usize) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(cloudpki::db::MAX_CONNECTIONS)
        .connect_with(db.pool.connect_options().as_ref().clone())
        .await?;
    db.release().await?;
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (pool, done) = (pool.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let lease = chrono::Duration::seconds(60);
            loop {
                let Some(claimed) =
                    store::delivery::claim_destination(&pool, Utc::now(), lease).await?
                else {
                    if owed(&pool).await? == 0 {
                        return Ok::<(), anyhow::Error>(());
                    }
                    // Another loop holds the only due destination; the real worker would
                    // sleep until woken, so do not hammer the database either.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let n = drain_claim(&pool, &claimed).await?;
                done.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    pool.close().await;
    let n = done.load(Ordering::Relaxed);
    if n != expected {
        bail!("store limit: settled {n} of {expected}");
    }
    Ok(n as f64 / secs)
}

/// Serves one claim without sending: reads ranges of [`BATCH_EVENTS`] after the cursor and
/// settles each as delivered, until caught up or [`DEFAULT_CLAIM_BUDGET`] is spent, then
/// finishes the claim. Returns the events settled.
pub(super) async fn drain_claim(pool: &PgPool, claimed: &Claimed) -> anyhow::Result<u64> {
    let budget_end = Instant::now() + DEFAULT_CLAIM_BUDGET;
    let mut after = claimed.cursor;
    let mut delivered = 0i64;
    while Instant::now() < budget_end {
        let events = match store::delivery::read_range(pool, claimed, after, BATCH_EVENTS).await? {
            Range::Events { events, .. } => events,
            Range::Stop => bail!("store limit: the lease was lost"),
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            break;
        };
        let n = events.len() as i64;
        let settled = Settled {
            cursor_from: after,
            cursor_to: Some(last),
            delivered: n,
            duplicates: events.iter().filter(|e| e.maybe_sent).count() as i64,
            maybe_sent_to: 0,
            ..Settled::default()
        };
        store::delivery::settle(pool, claimed, Utc::now(), &settled).await?;
        after = last;
        delivered += n;
    }
    let finish = Finish {
        delivered,
        ..Finish::default()
    };
    if !store::delivery::finish(pool, claimed, Utc::now(), &finish, after).await? {
        bail!("store limit: the lease was lost before finishing");
    }
    Ok(delivered as u64)
}

pub(super) async fn drain(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    // The drain rows run durable: a cursor the worker moved survives a crash of the machine.
    ctx.pg.set_durable(true).await?;
    let db = ctx.pg.fresh("drain").await?;
    sqlx::query(&format!(
        r#"alter database "{}" set synchronous_commit = on"#,
        db.name
    ))
    .execute(&db.pool)
    .await?;
    let durability = Durability::probe(&db).await?;
    report.note(format!(
        "drain: {} ({}), as the worker processes and the store limit see it",
        durability.label(),
        durability.describe()
    ));
    let mut headline = None;
    let n = ctx.sizes.drain_backlog;
    let intake_url = ctx.intake.base_url();
    let subs = db
        .subscriptions(ctx.sizes.drain_subscriptions, &intake_url)
        .await?;
    for dests in [&subs[..1], &subs[..]] {
        let layout = if dests.len() == 1 {
            "1 destination".to_owned()
        } else {
            format!("{} destinations", dests.len())
        };
        // Baselines first: the bare wire, then the store alone.
        let wire = wire_limit(ctx.intake, dests, n, STORE_LOOPS).await?;
        db.clear().await?;
        db.hold().await?;
        let fill = db.prefill(dests, n).await?;
        // One claim loop per destination, as many as a worker's slots: more loops than
        // destinations would only poll each other's leases.
        let loops = dests.len().min(STORE_LOOPS);
        let store = store_limit(&db, n as u64, loops).await?;
        report.note(format!(
            "drain {layout}: wire limit {} (concurrency {STORE_LOOPS}), store limit {} ({loops} claim loops, 16 connections); prefill of {n} took {:.1} s",
            per_sec(wire),
            per_sec(store),
            fill.as_secs_f64()
        ));
        for workers in [1usize, 2] {
            db.clear().await?;
            db.prefill(dests, n).await?;
            let label = format!("drain-{}d-{workers}w", dests.len());
            let d = drain_with_workers(ctx, &db, workers, n as u64, report, &label).await?;
            let scenario = format!(
                "drain {n} ({layout}, {workers} worker{}, {})",
                if workers > 1 { "s" } else { "" },
                durability.label()
            );
            let measured = format!(
                "{} ({:.2} s{})",
                per_sec(d.rate),
                d.secs,
                if d.complete { "" } else { ", INCOMPLETE" }
            );
            let row = Row::new(&scenario, measured.clone(), Some(d.rate))
                .baseline(format!("wire {}", per_sec(wire)), wire);
            let row = if workers == 1 && dests.len() == 1 {
                headline = Some(d.rate);
                let met = d.rate >= 50_000.0 && d.rate >= 0.5 * wire;
                row.target("≥ 50,000/s and ≥ 0.5 × wire", met)
            } else {
                row
            };
            report.push(row);
            report.push(
                Row::new("  same vs store limit", measured, Some(d.rate))
                    .baseline(format!("store {}", per_sec(store)), store),
            );
        }
    }
    ctx.pg.drop_db(db).await;

    // The headline once more without durability (the embedded cluster's usual settings),
    // labelled, beside the durable one.
    let (Some(durable_rate), true) = (headline, ctx.pg.is_embedded()) else {
        return Ok(());
    };
    ctx.pg.set_durable(false).await?;
    let db = ctx.pg.fresh("drain_nondurable").await?;
    let subs = db.subscriptions(1, &intake_url).await?;
    let durability = Durability::probe(&db).await?;
    db.prefill(&subs, n).await?;
    let d = drain_with_workers(ctx, &db, 1, n as u64, report, "drain-1d-1w-nondurable").await?;
    report.push(
        Row::new(
            &format!(
                "drain {n} (1 destination, 1 worker, {})",
                durability.label()
            ),
            format!(
                "{} ({:.2} s{})",
                per_sec(d.rate),
                d.secs,
                if d.complete { "" } else { ", INCOMPLETE" }
            ),
            Some(d.rate),
        )
        .baseline(format!("durable {}", per_sec(durable_rate)), durable_rate),
    );
    ctx.pg.drop_db(db).await;
    Ok(())
}
