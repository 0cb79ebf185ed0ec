//! The latency scenario: commit-to-intake delay at a steady offered rate, the events recorded
//! in-process through the ingestion API's code path.

use super::*;

/// Percentile of sorted durations (nearest rank).
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) fn new_events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            id: Uuid::new_v4(),
            event_id: CATALOG[i % CATALOG.len()],
            occurred_at: Utc::now(),
            actor: Some(format!("operator{}@example.com", i % 50)),
            details: serde_json::json!({
                "serial": format!("{:032x}", rand_u128()),
                "subject": format!("CN=device-{i}.example.com,O=Example"),
                "issuer": "CN=Example Issuing CA 1,O=Example",
                "template": "TLS Server",
            }),
        })
        .collect()
}

pub(super) fn rand_u128() -> u128 {
    Uuid::new_v4().as_u128()
}

/// Records events at `rate`/s for `secs` (open loop, one `record` per 10 ms tick) and returns
/// each event's commit-to-intake delay.
pub(super) async fn steady_load(
    db: &Db,
    sequencer: &Sequencer,
    intake: &Intake,
    subscription: Uuid,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(Vec<Duration>, f64, usize)> {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate as usize / 100).max(1);
    intake.reset(true);
    let commits: Arc<Mutex<Vec<(Uuid, Instant)>>> = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    let mut offered = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        let events = new_events(per_tick);
        offered += events.len();
        let permit = in_flight.clone().acquire_owned().await?;
        let (pool, commits, sequencer) = (db.pool.clone(), commits.clone(), sequencer.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let recorded = store::events::record(&pool, subscription, &events)
                .await
                .map_err(|e| anyhow::anyhow!("record: {e}"))?;
            let at = Instant::now();
            // As the API does after commit.
            sequencer.recorded(&pool, subscription, &recorded);
            commits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(events.iter().map(|e| (e.id, at)));
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let offered_rate = offered as f64 / t0.elapsed().as_secs_f64();
    let commits = std::mem::take(&mut *commits.lock().unwrap_or_else(|p| p.into_inner()));
    let ids: Vec<Uuid> = commits.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !intake.arrived_all(&ids) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut missing = 0;
    let mut delays: Vec<Duration> = commits
        .iter()
        .filter_map(|(id, at)| {
            let arrival = intake.arrival(id);
            if arrival.is_none() {
                missing += 1;
            }
            arrival.map(|a| a.saturating_duration_since(*at))
        })
        .collect();
    delays.sort();
    intake.reset(false);
    Ok((delays, offered_rate, missing))
}

pub(super) async fn latency(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    let db = ctx.pg.fresh("latency").await?;
    // The second subscription only carries the concurrent drain of the last row.
    let subs = db.subscriptions(2, &ctx.intake.base_url()).await?;
    let since = db.now().await?;
    let worker = Proc::worker(&db, ctx.out_dir, "worker-latency")?;
    db.wait_listeners(1, since).await?;
    // Events are recorded in this process, which sequences them as `serve` does.
    let (sequencer, _stop_sequencer) = start_sequencer(&db.pool);
    for rate in ctx.sizes.latency_rates {
        db.clear().await?;
        let (delays, offered, missing) = steady_load(
            &db,
            &sequencer,
            ctx.intake,
            subs[0],
            rate,
            ctx.sizes.latency_secs,
        )
        .await?;
        let p = |q| percentile(&delays, q);
        let measured = format!(
            "p50 {} · p95 {} · p99 {} · max {} (offered {}, {} events{})",
            ms(p(50.0)),
            ms(p(95.0)),
            ms(p(99.0)),
            ms(delays.last().copied().unwrap_or_default()),
            per_sec(offered),
            delays.len(),
            if missing > 0 {
                format!(", {missing} NOT DELIVERED")
            } else {
                String::new()
            }
        );
        let row = Row::new(
            &format!("latency at {}", per_sec(rate as f64)),
            measured,
            Some(p(99.0).as_secs_f64() * 1000.0),
        );
        let row = if rate == 1_000 {
            let met = p(99.0) <= Duration::from_millis(100) && missing == 0;
            row.target("p99 ≤ 100 ms", met)
        } else {
            row
        };
        report.push(row);
    }
    // Commit → intake at 5,000/s for one subscription, alone and then while another drains a
    // large backlog through the same worker.
    let rate = 5_000;
    let secs = ctx.sizes.latency_secs;
    db.clear().await?;
    let (alone, _, alone_missing) =
        steady_load(&db, &sequencer, ctx.intake, subs[0], rate, secs).await?;
    db.clear().await?;
    db.hold().await?;
    let backlog = ctx.sizes.scale_large;
    db.prefill(&subs[1..], backlog).await?;
    db.release().await?;
    // Let the worker get busy with the backlog first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (busy, offered, missing) =
        steady_load(&db, &sequencer, ctx.intake, subs[0], rate, secs).await?;
    let still_owed = db.queued().await?;
    let p99 = percentile(&busy, 99.0);
    report.push(
        Row::new(
            &format!("latency at 5,000/s while another subscription drains {backlog}"),
            format!(
                "p50 {} · p99 {} · max {} (offered {}, {} events{}; {} of the backlog still owed at the end)",
                ms(percentile(&busy, 50.0)),
                ms(p99),
                ms(busy.last().copied().unwrap_or_default()),
                per_sec(offered),
                busy.len(),
                if missing > 0 {
                    format!(", {missing} NOT DELIVERED")
                } else {
                    String::new()
                },
                still_owed
            ),
            Some(p99.as_secs_f64() * 1000.0),
        )
        .baseline(
            format!(
                "alone: p99 {}{}",
                ms(percentile(&alone, 99.0)),
                if alone_missing > 0 { " (some NOT DELIVERED)" } else { "" }
            ),
            percentile(&alone, 99.0).as_secs_f64() * 1000.0,
        )
        .target(
            "p99 ≤ 50 ms",
            p99 <= Duration::from_millis(50) && missing == 0,
        ),
    );
    if let Some(kb) = worker.peak_rss_kb() {
        report.worker_peak_kb.push(("latency".into(), kb));
    }
    drop(worker);
    ctx.pg.drop_db(db).await;
    Ok(())
}
