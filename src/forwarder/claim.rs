//! Serving one claim: building the destination, then retries, a replay and the log after the
//! cursor (ranges read ahead, several in flight, settled in order), the lease kept all along
//! ([`Keeper`]), and the claim's end.

use tracing::Instrument as _;

use super::*;
use crate::settings::DestinationError;

impl Forwarder {
    /// Serves a claim in a task of its own: a panic anywhere in it marks that destination
    /// failing, with the reason, and is never more than that.
    pub(super) async fn serve_isolated(
        &self,
        claimed: Claimed,
        clock: Clock,
        stop: watch::Receiver<bool>,
    ) -> Result<PassReport, store::Error> {
        let me = self.clone();
        // Every line a claim logs, down to the provider's, names its destination.
        let span = tracing::info_span!(
            "claim",
            subscription_id = %claimed.subscription_id,
            destination = claimed.destination,
            provider = %claimed.provider
        );
        let task = tokio::spawn(
            {
                let claimed = claimed.clone();
                async move { me.serve_claimed(claimed, clock, stop).await }
            }
            .instrument(span),
        );
        match task.await {
            Ok(result) => result,
            Err(e) => {
                let reason = crash_reason(&claimed.provider, e);
                tracing::error!(subscription_id = %claimed.subscription_id, provider = %claimed.provider, %reason, "a claim failed unexpectedly; the destination is marked failing");
                self.fail_claim(&claimed, clock, reason).await
            }
        }
    }

    pub(super) async fn serve_claimed(
        self,
        claimed: Claimed,
        clock: Clock,
        stop: watch::Receiver<bool>,
    ) -> Result<PassReport, store::Error> {
        let mut report = PassReport::default();
        let mut keeper = Keeper::new(&self, &claimed, &stop);
        // Building may take a while (unsealing, a Kafka client): the lease is kept meanwhile.
        let mut building = tokio::spawn({
            let me = self.clone();
            let (dest, provider) = (claimed.key(), claimed.provider.clone());
            async move { me.destination(dest, &provider).await }
        });
        let built = keeper.wait(&mut building, || {}).await?;
        let destination = match built {
            Ok(Ok(d)) => d,
            Ok(Err(DestinationError::Unusable(problem))) => {
                return self.fail_claim(&claimed, clock, problem.to_string()).await
            }
            Ok(Err(DestinationError::Store(e))) => return Err(e),
            Err(e) if e.is_cancelled() => {
                return self
                    .fail_claim(
                        &claimed,
                        clock,
                        "A worker stopped while preparing to send; nothing was sent.".into(),
                    )
                    .await
            }
            Err(e) => {
                let reason = crash_reason(&claimed.provider, e);
                return self.fail_claim(&claimed, clock, reason).await;
            }
        };
        let mut claim = ClaimState {
            probe_first: claimed.status == "failing",
            maybe_sent_to: claimed.inflight_to,
            ..ClaimState::default()
        };

        if claimed.has_retries && keeper.may_read() {
            self.serve_retries(
                &claimed,
                &destination,
                clock,
                &mut keeper,
                &mut claim,
                &mut report,
            )
            .await?;
        }
        if claim.trouble.is_none() && keeper.may_read() {
            self.serve_log(
                &claimed,
                &destination,
                clock,
                &mut keeper,
                &mut claim,
                &mut report,
            )
            .await?;
        }
        if claim.trouble.is_none() && keeper.may_read() {
            if let Some(left) = claimed.replay_left() {
                self.serve_replay(
                    &claimed,
                    &destination,
                    clock,
                    &mut keeper,
                    left,
                    &mut claim,
                    &mut report,
                )
                .await?;
            }
        }
        if keeper.handed_back && claim.trouble.is_none() {
            claim.trouble = Some(Trouble::Interrupted);
        }

        let refused = matches!(claim.trouble, Some(Trouble::Refused { .. }));
        let health = match claim.trouble.take() {
            None => Health::Healthy,
            Some(t) => {
                report.failures = 1;
                self.health_after(&claimed, clock.now(), t)
            }
        };
        let provider = claimed.provider.clone();
        metrics::counter!("cloudpki_events_delivered_total", "provider" => provider.clone())
            .increment(report.delivered);
        metrics::counter!("cloudpki_events_parked_total", "provider" => provider.clone())
            .increment(report.parked);
        metrics::counter!("cloudpki_events_duplicated_total", "provider" => provider.clone())
            .increment(report.duplicates);
        if refused {
            metrics::counter!("cloudpki_delivery_refusals_total", "provider" => provider.clone())
                .increment(1);
        }
        if report.failures > 0 {
            metrics::counter!("cloudpki_delivery_failures_total", "provider" => provider)
                .increment(1);
        }
        let finish = Finish {
            health,
            delivered: i64::try_from(report.delivered).unwrap_or(i64::MAX),
            parked: i64::try_from(report.parked).unwrap_or(i64::MAX),
            park_reason: claim.park_reason,
            refused,
        };
        if !store::delivery::finish(
            &self.pool,
            &claimed,
            clock.now(),
            &finish,
            claim.maybe_sent_to,
        )
        .await?
        {
            tracing::warn!(subscription_id = %claimed.subscription_id, provider = %claimed.provider, "the lease ran out while sending; what was accepted is recorded, another worker carries on");
        }
        Ok(report)
    }

    /// Ends a claim that could not send anything: the destination is failing with `reason`.
    pub(super) async fn fail_claim(
        &self,
        claimed: &Claimed,
        clock: Clock,
        reason: String,
    ) -> Result<PassReport, store::Error> {
        let finish = Finish {
            health: self.health_after(claimed, clock.now(), Trouble::Failing { reason }),
            ..Finish::default()
        };
        store::delivery::finish(
            &self.pool,
            claimed,
            clock.now(),
            &finish,
            claimed.inflight_to,
        )
        .await?;
        Ok(PassReport {
            failures: 1,
            ..PassReport::default()
        })
    }

    /// Resends a replay's events in order, a range at a time, within the claim's budget; the
    /// progress is recorded after each range. Replayed events keep their Sequence, Hash and
    /// EventUuid; the filter (as of each range) and late handling apply as to any send. An event
    /// the SIEM refuses now is passed over (it was delivered before).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve_replay(
        &self,
        claimed: &Claimed,
        destination: &Arc<dyn SiemDestination>,
        clock: Clock,
        keeper: &mut Keeper<'_>,
        (mut next, to): (i64, i64),
        claim: &mut ClaimState,
        report: &mut PassReport,
    ) -> Result<(), store::Error> {
        let budget_end = Instant::now() + self.options.claim_budget;
        while next <= to && keeper.may_read() && Instant::now() < budget_end {
            let Some(filter) = store::delivery::live(&self.pool, claimed).await? else {
                break;
            };
            let events = store::delivery::read_replay(
                &self.pool,
                claimed.subscription_id,
                next,
                to,
                range_events(claimed),
            )
            .await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                // Expired meanwhile (retention): nothing left to resend.
                store::delivery::advance_replay(&self.pool, claimed, to + 1, 0).await?;
                break;
            };
            let (metas, mut handle) = self.spawn_range(
                claimed,
                destination,
                events,
                filter.as_deref(),
                clock,
                false,
            );
            let outcome = range_outcome(
                keeper.wait(&mut handle, || {}).await?,
                metas.len(),
                &claimed.provider,
            );
            let prefix = outcome
                .fates
                .iter()
                .take_while(|f| matches!(f, Fate::Delivered | Fate::Parked(_) | Fate::Filtered))
                .count();
            let sent = outcome.fates[..prefix]
                .iter()
                .filter(|f| matches!(f, Fate::Delivered))
                .count();
            let through = match prefix {
                p if p == metas.len() => last,
                0 => next - 1,
                p => metas[p - 1].seq,
            };
            report.batches += 1;
            report.replayed += sent as u64;
            store::delivery::advance_replay(&self.pool, claimed, through + 1, sent as i64).await?;
            next = through + 1;
            if let Some(trouble) = outcome.trouble {
                claim.trouble = Some(trouble);
                break;
            }
        }
        Ok(())
    }

    /// Sends the events waiting out of order (a retry of parked events).
    pub(super) async fn serve_retries(
        &self,
        claimed: &Claimed,
        destination: &Arc<dyn SiemDestination>,
        clock: Clock,
        keeper: &mut Keeper<'_>,
        claim: &mut ClaimState,
        report: &mut PassReport,
    ) -> Result<(), store::Error> {
        let Some(filter) = store::delivery::live(&self.pool, claimed).await? else {
            return Ok(());
        };
        let events =
            store::delivery::read_retries(&self.pool, claimed, range_events(claimed)).await?;
        if events.is_empty() {
            return Ok(());
        }
        let (events, mut handle) = self.spawn_range(
            claimed,
            destination,
            events,
            filter.as_deref(),
            clock,
            claim.probe_first,
        );
        claim.probe_first = false;
        let outcome = range_outcome(
            keeper.wait(&mut handle, || {}).await?,
            events.len(),
            &claimed.provider,
        );
        let mut settled = Settled::default();
        for (event, fate) in events.iter().zip(&outcome.fates) {
            match fate {
                Fate::Delivered => {
                    settled.retried.push(event.seq);
                    settled.delivered += 1;
                    settled.duplicates += i64::from(event.maybe_sent);
                }
                Fate::Parked(reason) => settled.parked.push((event.seq, reason.clone())),
                // Stays marked in flight: a resend is counted as a possible duplicate.
                Fate::MaybeSent => {}
                Fate::Unsent => settled.unsent_retries.push(event.seq),
                Fate::Filtered => {
                    settled.retried.push(event.seq);
                    settled.filtered += 1;
                }
            }
        }
        report.batches += 1;
        claim.record(&settled, report);
        store::delivery::settle(&self.pool, claimed, clock.now(), &settled).await?;
        claim.trouble = outcome.trouble;
        Ok(())
    }

    /// Reads and sends the log after the cursor, several ranges in flight, settling in order.
    ///
    /// The next range is read ahead in a task of its own while the sends and the settling of
    /// earlier ranges go on: reading (which marks the range in flight and commits) and settling
    /// (which moves the cursor and commits) overlap instead of adding up. A range read ahead
    /// that is never sent (trouble, budget, lease) is only marked in flight: the claim's finish
    /// sets `inflight_to` back to what was really handed to the SIEM.
    pub(super) async fn serve_log(
        &self,
        claimed: &Claimed,
        destination: &Arc<dyn SiemDestination>,
        clock: Clock,
        keeper: &mut Keeper<'_>,
        claim: &mut ClaimState,
        report: &mut PassReport,
    ) -> Result<(), store::Error> {
        let budget_end = Instant::now() + self.options.claim_budget;
        let mut read_after = claimed.cursor;
        let mut window = 1usize;
        let mut reading = true;
        let mut contiguous = true;
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut ahead: Option<JoinHandle<Result<Range, store::Error>>> = None;
        let range_size = range_events(claimed);
        let result = loop {
            reading &= keeper.may_read() && Instant::now() < budget_end;
            if reading && ahead.is_none() {
                let (pool, claimed) = (self.pool.clone(), claimed.clone());
                ahead = Some(tokio::spawn(async move {
                    store::delivery::read_range(&pool, &claimed, read_after, range_size).await
                }));
            }
            if inflight.len() < window {
                if let Some(mut read) = ahead.take() {
                    let range = match keeper.wait(&mut read, || abort_all(&inflight)).await {
                        Ok(Ok(Ok(range))) => range,
                        Ok(Ok(Err(e))) => break Err(e),
                        // Aborted when the grace after a stop ran out: nothing more is sent.
                        Ok(Err(joined)) if joined.is_cancelled() => {
                            reading = false;
                            continue;
                        }
                        Ok(Err(joined)) => {
                            break Err(store::Error::Internal(format!(
                                "reading the log stopped: {joined}"
                            )))
                        }
                        Err(e) => break Err(e),
                    };
                    match range {
                        Range::Stop => reading = false,
                        Range::Events { events, .. } if events.is_empty() => reading = false,
                        Range::Events { events, .. } => {
                            read_after = events.last().map_or(read_after, |e| e.seq);
                            // Read ahead, maybe before a pause, a switch-off or a new filter:
                            // the settings as they are now decide (one read-only query).
                            let live = if reading && keeper.may_read() {
                                match store::delivery::live(&self.pool, claimed).await {
                                    Ok(live) => live,
                                    Err(e) => break Err(e),
                                }
                            } else {
                                None
                            };
                            if let Some(send_event_ids) = live {
                                let (events, handle) = self.spawn_range(
                                    claimed,
                                    destination,
                                    events,
                                    send_event_ids.as_deref(),
                                    clock,
                                    claim.probe_first,
                                );
                                claim.probe_first = false;
                                inflight.push_back(InFlight { events, handle });
                            } else {
                                reading = false;
                            }
                        }
                    }
                    continue;
                }
            }
            let Some(mut front) = inflight.pop_front() else {
                break Ok(());
            };
            let joined = match keeper
                .wait(&mut front.handle, || abort_all(&inflight))
                .await
            {
                Ok(joined) => joined,
                Err(e) => break Err(e),
            };
            reading &= keeper.may_read();
            let outcome = range_outcome(joined, front.events.len(), &claimed.provider);
            let settled = settle_range(&front.events, &outcome.fates, contiguous);
            contiguous &= settled.cursor_to == front.events.last().map(|e| e.seq);
            report.batches += 1;
            claim.record(&settled, report);
            if let Err(e) =
                store::delivery::settle(&self.pool, claimed, clock.now(), &settled).await
            {
                break Err(e);
            }
            match outcome.trouble {
                Some(trouble) => {
                    reading = false;
                    claim.trouble.get_or_insert(trouble);
                }
                None if !contiguous && claim.trouble.is_none() => {
                    reading = false;
                    claim.trouble = Some(Trouble::Failing {
                        reason: "Some events of a batch were neither accepted nor refused by the SIEM; they are kept and sent again.".into(),
                    });
                }
                None => window = (window + 1).min(self.options.max_window.max(1)),
            }
        };
        // A read ahead that was not used: let it finish (it only marks events in flight), so
        // no statement is cut off half way.
        if let Some(read) = ahead {
            let _ = read.await;
        }
        for other in &inflight {
            other.handle.abort();
        }
        result
    }

    /// Starts sending one range in a task of its own.
    pub(super) fn spawn_range(
        &self,
        claimed: &Claimed,
        destination: &Arc<dyn SiemDestination>,
        events: Vec<LogEvent>,
        send_event_ids: Option<&[i32]>,
        clock: Clock,
        probe_first: bool,
    ) -> (Vec<Meta>, JoinHandle<RangeOutcome>) {
        let mut fates = vec![Fate::Unsent; events.len()];
        let mut logs = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        let mut metas = Vec::with_capacity(events.len());
        for (k, event) in events.into_iter().enumerate() {
            metas.push(Meta {
                seq: event.seq,
                maybe_sent: event.maybe_sent,
            });
            let event_id = event.event_id;
            if send_event_ids.is_some_and(|ids| !ids.contains(&event_id)) {
                fates[k] = Fate::Filtered;
                continue;
            }
            match to_audit_log(event, claimed.subscription_id) {
                Some(log) => {
                    logs.push(log);
                    positions.push(k);
                }
                None => {
                    fates[k] = Fate::Parked(format!(
                        "Event ID {event_id} is not in the catalog; it cannot be sent."
                    ))
                }
            }
        }
        let destination = destination.clone();
        let client = self.client.clone();
        let egress = self.egress.clone();
        let provider = claimed.provider.clone();
        let handle = tokio::spawn(async move {
            let outcome = deliver_range(
                &*destination,
                &client,
                &egress,
                &provider,
                &logs,
                clock,
                probe_first,
            )
            .await;
            for (fate, k) in outcome.fates.into_iter().zip(positions) {
                fates[k] = fate;
            }
            RangeOutcome {
                fates,
                trouble: outcome.trouble,
            }
        });
        (metas, handle)
    }
}

/// A range on its way: its events and the task sending them.
pub(super) struct InFlight {
    events: Vec<Meta>,
    handle: JoinHandle<RangeOutcome>,
}

/// Keeps a claim's lease while it waits for a send (renewed every third of the lease, from
/// the database's clock), and turns a stop into a grace period, after which the send is
/// handed back. Every path that waits on a SIEM waits through it.
pub(super) struct Keeper<'a> {
    pool: &'a PgPool,
    claimed: &'a Claimed,
    stop: &'a watch::Receiver<bool>,
    lease: chrono::Duration,
    beat: Duration,
    next_beat: Instant,
    grace: Duration,
    grace_end: Option<Instant>,
    /// The lease was lost: another worker holds the destination now.
    lost: bool,
    /// The grace ran out and sends were aborted.
    handed_back: bool,
}

impl<'a> Keeper<'a> {
    fn new(
        forwarder: &'a Forwarder,
        claimed: &'a Claimed,
        stop: &'a watch::Receiver<bool>,
    ) -> Self {
        let beat = (forwarder.options.lease / 3).max(Duration::from_millis(50));
        Self {
            pool: &forwarder.pool,
            claimed,
            stop,
            lease: to_chrono(forwarder.options.lease),
            beat,
            next_beat: Instant::now() + beat,
            grace: forwarder.options.shutdown_grace,
            grace_end: None,
            lost: false,
            handed_back: false,
        }
    }

    /// Whether the claim may start another send: it holds the lease and no stop was asked.
    fn may_read(&self) -> bool {
        !self.lost && self.grace_end.is_none() && !*self.stop.borrow()
    }

    /// Waits for `handle` while keeping the lease. When the grace after a stop runs out,
    /// aborts it and calls `give_up` (to abort other sends of the claim).
    async fn wait<T>(
        &mut self,
        handle: &mut JoinHandle<T>,
        mut give_up: impl FnMut(),
    ) -> Result<Result<T, tokio::task::JoinError>, store::Error> {
        loop {
            tokio::select! {
                joined = &mut *handle => return Ok(joined),
                _ = tokio::time::sleep_until(self.next_beat) => {
                    self.next_beat = Instant::now() + self.beat;
                    if !store::delivery::renew(self.pool, self.claimed, self.lease).await? {
                        self.lost = true;
                    }
                }
                _ = stopped(self.stop), if self.grace_end.is_none() => {
                    self.grace_end = Some(Instant::now() + self.grace);
                }
                _ = sleep_until_opt(self.grace_end), if !self.handed_back => {
                    self.handed_back = true;
                    handle.abort();
                    give_up();
                }
            }
        }
    }
}

/// What a claim has done so far.
#[derive(Debug, Default)]
pub(super) struct ClaimState {
    /// The destination is failing: send one event alone first.
    probe_first: bool,
    /// Up to here the SIEM may have events beyond the cursor.
    maybe_sent_to: i64,
    park_reason: Option<String>,
    trouble: Option<Trouble>,
}

impl ClaimState {
    fn record(&mut self, settled: &Settled, report: &mut PassReport) {
        report.delivered += u64::try_from(settled.delivered).unwrap_or_default();
        report.duplicates += u64::try_from(settled.duplicates).unwrap_or_default();
        report.parked += settled.parked.len() as u64;
        report.filtered += u64::try_from(settled.filtered).unwrap_or_default();
        self.maybe_sent_to = self.maybe_sent_to.max(settled.maybe_sent_to);
        if self.park_reason.is_none() {
            self.park_reason = settled.parked.first().map(|(_, r)| r.clone());
        }
    }
}

/// The settlement of a log range: the cursor moves over the prefix of delivered or parked
/// events (only if every earlier range moved it to its end); what the SIEM may hold beyond it
/// marks possible duplicates.
pub(super) fn settle_range(events: &[Meta], fates: &[Fate], contiguous: bool) -> Settled {
    let prefix = if contiguous {
        fates
            .iter()
            .take_while(|f| matches!(f, Fate::Delivered | Fate::Parked(_) | Fate::Filtered))
            .count()
    } else {
        0
    };
    let mut settled = Settled {
        cursor_from: events.first().map_or(0, |e| e.seq - 1),
        cursor_to: prefix.checked_sub(1).map(|k| events[k].seq),
        ..Settled::default()
    };
    for (k, (event, fate)) in events.iter().zip(fates).enumerate() {
        match fate {
            Fate::Delivered => {
                settled.delivered += 1;
                settled.duplicates += i64::from(event.maybe_sent);
                if k >= prefix {
                    settled.maybe_sent_to = settled.maybe_sent_to.max(event.seq);
                }
            }
            Fate::Parked(reason) if k < prefix => settled.parked.push((event.seq, reason.clone())),
            Fate::MaybeSent => settled.maybe_sent_to = settled.maybe_sent_to.max(event.seq),
            Fate::Filtered if k < prefix => settled.filtered += 1,
            Fate::Parked(_) | Fate::Unsent | Fate::Filtered => {}
        }
    }
    settled
}

/// Resolves when `stop` turns true; never, if its sender is gone.
/// Out of time: hand the sends back; their events count as maybe sent.
pub(super) fn abort_all(inflight: &VecDeque<InFlight>) {
    for other in inflight {
        other.handle.abort();
    }
}

pub(super) async fn stopped(stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending::<()>().await,
    }
}

pub(super) fn to_audit_log(event: LogEvent, subscription_id: Uuid) -> Option<AuditLog> {
    let event_id = u32::try_from(event.event_id)
        .ok()
        .and_then(|id| EventId::parse(id).ok())?;
    Some(AuditLog {
        uuid: event.event_uuid,
        sequence: event.seq,
        subscription_id,
        event_id,
        occurred_at: event.occurred_at,
        recorded_at: event.recorded_at,
        chain: crate::siem::ChainLink::from_stored(
            event.prev_hash.as_deref(),
            event.hash.as_deref(),
        ),
        actor: event.actor,
        details: event.details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, maybe_sent: bool) -> Meta {
        Meta { seq, maybe_sent }
    }

    #[test]
    fn the_cursor_moves_over_the_settled_prefix_only() {
        let events: Vec<Meta> = (11..=14).map(|s| event(s, s == 11)).collect();
        let fates = [
            Fate::Delivered,
            Fate::Parked("bad".into()),
            Fate::Unsent,
            Fate::Delivered,
        ];
        let settled = settle_range(&events, &fates, true);
        assert_eq!(settled.cursor_from, 10);
        assert_eq!(settled.cursor_to, Some(12));
        assert_eq!(settled.parked, vec![(12, "bad".to_owned())]);
        assert_eq!(settled.delivered, 2);
        assert_eq!(
            settled.duplicates, 1,
            "11 was in flight with a previous holder"
        );
        assert_eq!(
            settled.maybe_sent_to, 14,
            "14 reached the SIEM beyond the cursor"
        );

        let after_a_gap = settle_range(
            &events,
            &[
                Fate::Delivered,
                Fate::Delivered,
                Fate::Delivered,
                Fate::Delivered,
            ],
            false,
        );
        assert_eq!(
            after_a_gap.cursor_to, None,
            "an earlier range is not settled"
        );
        assert_eq!(after_a_gap.maybe_sent_to, 14);
    }
}
