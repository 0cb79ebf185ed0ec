//! The scale scenario: the drain of a large vs a small backlog, the read latency at each, and the
//! worst wait of small subscriptions while one has a large backlog.

use super::*;

/// Claims the destination of `sub` and reads its backlog one range of [`BATCH_EVENTS`] per
/// claim, settling each range and finishing the claim without sending, `ranges` times (read
/// again from the start when caught up). Returns the time of each claim and of each
/// `read_range`, sorted. The cursor goes back to where it was, so the backlog is owed again
/// after.
pub(super) async fn read_latencies(
    db: &Db,
    sub: Uuid,
    ranges: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let rewind = |to: i64| {
        sqlx::query(
            "update delivery_destinations set cursor = $2, inflight_to = $2
             where subscription_id = $1 and provider = $3",
        )
        .bind(sub)
        .bind(to)
        .bind(PROVIDER)
        .execute(&db.pool)
    };
    db.release().await?;
    let lease = chrono::Duration::seconds(60);
    let (mut claims, mut reads) = (Vec::with_capacity(ranges), Vec::with_capacity(ranges));
    let mut start = None;
    while reads.len() < ranges {
        let t = Instant::now();
        let claimed = store::delivery::claim_destination(&db.pool, Utc::now(), lease).await?;
        claims.push(t.elapsed());
        let claimed = match claimed {
            Some(c) if c.subscription_id == sub => c,
            Some(c) => bail!("read latencies: claimed {} instead", c.subscription_id),
            None => bail!("read latencies: nothing to claim"),
        };
        let from = *start.get_or_insert(claimed.cursor);
        let t = Instant::now();
        let range =
            store::delivery::read_range(&db.pool, &claimed, claimed.cursor, BATCH_EVENTS).await?;
        reads.push(t.elapsed());
        let Range::Events { events, .. } = range else {
            bail!("read latencies: the lease was lost");
        };
        let last = events
            .last()
            .map(|e| e.seq)
            .context("read latencies: an empty range")?;
        let settled = Settled {
            cursor_from: claimed.cursor,
            cursor_to: Some(last),
            delivered: events.len() as i64,
            ..Settled::default()
        };
        store::delivery::settle(&db.pool, &claimed, Utc::now(), &settled).await?;
        let finish = Finish {
            delivered: settled.delivered,
            ..Finish::default()
        };
        store::delivery::finish(&db.pool, &claimed, Utc::now(), &finish, last).await?;
        if last >= claimed.last_seq {
            rewind(from).await?;
        }
    }
    if let Some(from) = start {
        rewind(from).await?;
    }
    // `percentile` takes sorted samples.
    claims.sort();
    reads.sort();
    Ok((claims, reads))
}

/// Records one event for each of `subs` (one transaction each, as single API calls would) and
/// returns each one's commit-to-intake wait.
pub(super) async fn one_each(
    db: &Db,
    sequencer: &Sequencer,
    intake: &Intake,
    subs: &[Uuid],
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut commits = Vec::with_capacity(subs.len());
    for sub in subs {
        let events = new_events(1);
        let recorded = store::events::record(&db.pool, *sub, &events)
            .await
            .map_err(|e| anyhow::anyhow!("record: {e}"))?;
        commits.push((events[0].id, Instant::now()));
        sequencer.recorded(&db.pool, *sub, &recorded);
    }
    let ids: Vec<Uuid> = commits.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !intake.arrived_all(&ids) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut missing = 0;
    let mut waits: Vec<Duration> = commits
        .iter()
        .filter_map(|(id, at)| match intake.arrival(id) {
            Some(a) => Some(a.saturating_duration_since(*at)),
            None => {
                missing += 1;
                None
            }
        })
        .collect();
    waits.sort();
    Ok((waits, missing))
}

pub(super) async fn scale(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    let (small, large) = (ctx.sizes.scale_small, ctx.sizes.scale_large);
    let db = ctx.pg.fresh("scale").await?;
    let n_subs = ctx.sizes.fair_subscriptions;
    let subs = db.subscriptions(n_subs, &ctx.intake.base_url()).await?;
    let one = &subs[..1];

    let mut rates = Vec::new();
    let mut reads = Vec::new();
    // As many ranges as the large backlog has, at each size.
    let ranges = usize::try_from(large / BATCH_EVENTS).unwrap_or(1).max(1);
    for n in [small, large] {
        db.clear().await?;
        let fill = db.prefill(one, n).await?;
        reads.push(read_latencies(&db, one[0], ranges).await?);
        let d = drain_with_workers(ctx, &db, 1, n as u64, report, &format!("scale-{n}")).await?;
        report.note(format!(
            "scale: prefill of {n} took {:.1} s; drained in {:.1} s{}",
            fill.as_secs_f64(),
            d.secs,
            if d.complete { "" } else { " (INCOMPLETE)" }
        ));
        rates.push(d.rate);
    }
    let ratio = rates[1] / rates[0];
    report.push(
        Row::new(
            &format!("scale: drain of {large} backlog"),
            per_sec(rates[1]),
            Some(rates[1]),
        )
        .baseline(format!("{small} backlog {}", per_sec(rates[0])), rates[0])
        .target("ratio ≥ 0.8", ratio >= 0.8),
    );
    let read_text = |(claims, reads): &(Vec<Duration>, Vec<Duration>)| {
        format!(
            "read p99 {} · p50 {} · claim p99 {} ({} reads of {BATCH_EVENTS})",
            ms(percentile(reads, 99.0)),
            ms(percentile(reads, 50.0)),
            ms(percentile(claims, 99.0)),
            reads.len()
        )
    };
    let read_p99 = |i: usize| percentile(&reads[i].1, 99.0).as_secs_f64() * 1000.0;
    report.push(
        Row::new(
            &format!("scale: claim/read p99 at {large} backlog"),
            read_text(&reads[1]),
            Some(read_p99(1)),
        )
        .baseline(
            format!("{small} backlog: {}", read_text(&reads[0])),
            read_p99(0),
        ),
    );

    // Fairness: one event for each other subscription, without and then with a large backlog.
    db.clear().await?;
    db.hold().await?;
    let since = db.now().await?;
    let worker = Proc::worker(&db, ctx.out_dir, "worker-fairness")?;
    db.wait_listeners(1, since).await?;
    let (sequencer, _stop_sequencer) = start_sequencer(&db.pool);
    db.release().await?;
    ctx.intake.reset(true);
    let (calm, calm_missing) = one_each(&db, &sequencer, ctx.intake, &subs[1..]).await?;
    db.clear().await?;
    db.hold().await?;
    let backlog = ctx.sizes.fair_backlog;
    db.prefill(one, backlog).await?;
    ctx.intake.reset(true);
    db.release().await?;
    // Let the worker get busy with the large backlog first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (busy, busy_missing) = one_each(&db, &sequencer, ctx.intake, &subs[1..]).await?;
    let still_queued = db.queued().await?;
    if let Some(kb) = worker.peak_rss_kb() {
        report.worker_peak_kb.push(("fairness".into(), kb));
    }
    drop(worker);
    ctx.intake.reset(false);
    let worst = busy.last().copied().unwrap_or_default();
    let calm_worst = calm.last().copied().unwrap_or_default();
    report.push(
        Row::new(
            &format!(
                "scale: worst wait of {} subscriptions, one with {backlog} backlog",
                n_subs - 1
            ),
            format!(
                "max {} · p50 {}{}",
                ms(worst),
                ms(percentile(&busy, 50.0)),
                if busy_missing > 0 {
                    format!(", {busy_missing} NOT DELIVERED")
                } else {
                    String::new()
                }
            ),
            Some(worst.as_secs_f64() * 1000.0),
        )
        .baseline(
            format!(
                "no backlog: max {} · p50 {}{}",
                ms(calm_worst),
                ms(percentile(&calm, 50.0)),
                if calm_missing > 0 {
                    format!(", {calm_missing} NOT DELIVERED")
                } else {
                    String::new()
                }
            ),
            calm_worst.as_secs_f64() * 1000.0,
        ),
    );
    report.note(format!(
        "scale fairness: {} events of the large backlog were still owed when the last small subscription's event had arrived",
        still_queued
    ));
    ctx.pg.drop_db(db).await;
    Ok(())
}
