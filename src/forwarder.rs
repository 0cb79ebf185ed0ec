//! The forwarder: delivers every subscription's audit log to its SIEM destination, at least
//! once, reading each destination's log from its cursor (see `store::delivery`).
//!
//! A dispatcher claims due destinations while it has free slots and serves each claim in a
//! task of its own, so a destination that hangs for the whole HTTP timeout holds one slot, not
//! the process. A claim reads ranges of `seq > cursor`, sends them with several ranges in
//! flight when the SIEM keeps up (a window that widens by one per settled range, starting at
//! one), settles them in order, renews its lease while it waits, and gives the destination
//! back after [`ForwarderOptions::claim_budget`]. [`Forwarder::forward_once_at`] serves every
//! due destination one claim at a time; tests drive it with an injected clock.
//!
//! Answers are handled per [`Disposition`]: delivered events move the cursor; 413 splits the
//! batch; 400 splits (depth first) until the offending event is alone. **Parking needs proof**:
//! an event refused on its own is parked only when the same destination accepts a different
//! event after that refusal, in the same claim (an event from the far end of the range, tried
//! at once, or the connection-test record, Event ID 0, as a probe when none is left). Without proof (everything
//! refused, bodies alike or not, a lone 413, a partial accept of zero) or once bisection exceeds
//! `2·log2(n) + 8` requests, the fault is the destination's: it is marked failing, nothing is
//! parked, the cursor stays, and the events go out by themselves once it accepts again. 408,
//! 429, 5xx and network errors back off exponentially with full jitter (honouring a clamped
//! `Retry-After`); a gateway's 502/504, an indexer acknowledgement that never came and a Kafka
//! batch partly acknowledged leave the events maybe sent (their resend is counted as a possible
//! duplicate); 401/403/404 keep every event and mark the destination failing; 410 pauses it.
//! Every wait on a SIEM (the log, retries, replays, building the destination) renews the lease
//! from the database's clock and honours SIGTERM's grace; each range reads the destination's
//! settings again, so a pause, a switch-off or a new filter applies from the next range. A panic
//! in provider code marks that destination failing with the reason; it never ends
//! a loop, and the loops themselves are supervised.

use std::{
    collections::{HashMap, VecDeque},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sqlx::{postgres::PgListener, PgPool};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    domain::events::EventId,
    siem::Provider,
    siem::{egress::EgressPolicy, AuditLog, Disposition, SendError, SiemDestination},
    store::{
        self,
        delivery::{Claimed, Finish, Health, LogEvent, Range, Settled},
    },
};

/// Most events read per range (Datadog's per-request limit; larger batches split by size).
pub const BATCH_EVENTS: i64 = 1000;
/// How long a claim holds a destination without a renewal; a worker that dies releases it by
/// letting it expire. Renewed every third of it while sending.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How long one claim may go on reading new ranges before it gives the destination back.
pub const DEFAULT_CLAIM_BUDGET: Duration = Duration::from_secs(5);
/// First retry delay; doubles with each consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay for transient trouble.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Longest retry delay while the destination is misconfigured (bad key or URL).
pub const FAILING_RETRY_CAP: Duration = Duration::from_secs(600);
/// Transient failures turn a destination *failing* (and email its admins) once they have
/// lasted this long…
pub const FAILING_AFTER: Duration = Duration::from_secs(300);
/// …or after this many attempts in a row, whichever comes first.
pub const FAILING_AFTER_ATTEMPTS: i32 = 5;
/// Periodic sweep: retries that came due, and anything a lost notification left behind.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Destinations served at once per process.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Ranges of one destination in flight at once, at most.
pub const MAX_WINDOW: usize = 8;
/// Default period of the heartbeat log (`CLOUDPKI_HEARTBEAT_SECONDS`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);
/// Heartbeats sent at once per process.
const HEARTBEAT_CONCURRENCY: usize = 16;
/// How long SIGTERM waits for sends in flight before handing them back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings of a forwarder; tests shorten the lease.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Lease of a claimed destination.
    pub lease: Duration,
    /// Destinations served at once.
    pub concurrency: usize,
    /// Period of the sweep that runs between notifications.
    pub sweep: Duration,
    /// How long a claim goes on reading new ranges.
    pub claim_budget: Duration,
    /// How long a stop waits for sends in flight.
    pub shutdown_grace: Duration,
    /// Ranges in flight per destination, at most.
    pub max_window: usize,
    /// Period of the heartbeat log per enabled destination; `None`: no heartbeat.
    pub heartbeat: Option<Duration>,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            concurrency: DEFAULT_CONCURRENCY,
            sweep: SWEEP_INTERVAL,
            claim_budget: DEFAULT_CLAIM_BUDGET,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_window: MAX_WINDOW,
            heartbeat: Some(DEFAULT_HEARTBEAT),
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Ranges (batches of up to [`BATCH_EVENTS`]) served.
    pub batches: u64,
    /// Events the SIEMs accepted.
    pub delivered: u64,
    /// Events parked (refused for good).
    pub parked: u64,
    /// Events resent after a holder died or lost its lease mid-send.
    pub duplicates: u64,
    /// Claims that ended in a retry or a failing destination.
    pub failures: u64,
    /// Events a destination's filter passed over.
    pub filtered: u64,
    /// Events resent by a replay.
    pub replayed: u64,
}

impl PassReport {
    fn add(&mut self, other: PassReport) {
        self.batches += other.batches;
        self.delivered += other.delivered;
        self.parked += other.parked;
        self.duplicates += other.duplicates;
        self.failures += other.failures;
        self.filtered += other.filtered;
        self.replayed += other.replayed;
    }
}

/// A claim's clock: the (injectable) time the claim started plus the real time since.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: DateTime<Utc>,
    started: Instant,
}

impl Clock {
    fn at(base: DateTime<Utc>) -> Self {
        Self {
            base,
            started: Instant::now(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        later(self.base, self.started.elapsed())
    }
}

/// What became of one event of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Not sent, or refused in a way that says nothing about the event.
    Unsent,
    /// Sent without an answer: the SIEM may have it.
    MaybeSent,
    Delivered,
    Parked(String),
    /// Passed over by the destination's event filter: never sent, never delivered.
    Filtered,
}

/// Why a range stopped short.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trouble {
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    Failing {
        reason: String,
    },
    /// The destination refuses everything the same way.
    Refused {
        reason: String,
    },
    Gone {
        reason: String,
    },
    /// The worker stopped while sending (shutdown).
    Interrupted,
}

#[derive(Debug)]
struct RangeOutcome {
    fates: Vec<Fate>,
    trouble: Option<Trouble>,
}

impl RangeOutcome {
    fn all(n: usize, fate: Fate, trouble: Trouble) -> Self {
        Self {
            fates: vec![fate; n],
            trouble: Some(trouble),
        }
    }
}

/// What settling needs to know of an event once its body went to the sending task.
#[derive(Debug, Clone, Copy)]
struct Meta {
    seq: i64,
    /// A previous holder may have sent it already.
    maybe_sent: bool,
}

/// A range on its way: its events and the task sending them.
struct InFlight {
    events: Vec<Meta>,
    handle: JoinHandle<RangeOutcome>,
}

/// Delivers the audit log to SIEM destinations.
#[derive(Clone)]
pub struct Forwarder {
    pool: PgPool,
    master_key: MasterKey,
    client: reqwest::Client,
    egress: Arc<EgressPolicy>,
    hostname: String,
    options: ForwarderOptions,
    notifier: Option<crate::notify::Notifier>,
    shared: crate::siem::config::Shared,
    destinations: Arc<DestinationCache>,
    page_cache: Option<Arc<crate::web::page_cache::PageCache>>,
}

/// Destinations built from stored settings, kept per settings version: the settings are read,
/// unsealed and parsed once per save, not per claim, and a destination's connections (a Kafka
/// producer, a Sentinel token) live as long as its settings.
#[derive(Default)]
struct DestinationCache {
    entries: std::sync::Mutex<HashMap<(Uuid, String), CachedDestination>>,
}

struct CachedDestination {
    version: DateTime<Utc>,
    destination: Arc<dyn SiemDestination>,
    built: std::time::Instant,
    used: std::time::Instant,
}

/// A cached destination is built again after this long, so that time-bound parts of its
/// settings (a rotated-out webhook secret's overlap window) take effect without a save.
const DESTINATION_MAX_AGE: Duration = Duration::from_secs(300);

/// A cached destination unused for this long is dropped (its subscription stopped exporting).
const DESTINATION_IDLE: Duration = Duration::from_secs(3600);

impl DestinationCache {
    fn get(
        &self,
        key: &(Uuid, String),
        version: DateTime<Utc>,
    ) -> Option<Arc<dyn SiemDestination>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries
            .get_mut(key)
            .filter(|e| e.version == version && e.built.elapsed() < DESTINATION_MAX_AGE)?;
        entry.used = std::time::Instant::now();
        Some(entry.destination.clone())
    }

    fn put(
        &self,
        key: (Uuid, String),
        version: DateTime<Utc>,
        destination: Arc<dyn SiemDestination>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.used.elapsed() < DESTINATION_IDLE);
        entries.insert(
            key,
            CachedDestination {
                version,
                destination,
                built: std::time::Instant::now(),
                used: std::time::Instant::now(),
            },
        );
    }
}

impl Forwarder {
    /// A forwarder; each claim gets its own lease token.
    pub fn new(
        pool: PgPool,
        master_key: MasterKey,
        client: reqwest::Client,
        egress: Arc<EgressPolicy>,
        hostname: String,
        options: ForwarderOptions,
    ) -> Self {
        Self {
            pool,
            master_key,
            client,
            egress,
            hostname,
            options,
            notifier: None,
            shared: crate::siem::config::Shared::default(),
            destinations: Arc::default(),
            page_cache: None,
        }
    }

    /// The portal's page cache in this process, dropped after each one-shot pass so that a
    /// page read right after it shows its outcome (the running loop relies on NOTIFY).
    pub fn with_page_cache(mut self, cache: Arc<crate::web::page_cache::PageCache>) -> Self {
        self.page_cache = Some(cache);
        self
    }

    fn one_shot_done(&self) {
        if let Some(cache) = &self.page_cache {
            cache.flush();
        }
    }

    /// Shares the process's provider state (Sentinel token cache) with the portal.
    pub fn with_shared(mut self, shared: crate::siem::config::Shared) -> Self {
        self.shared = shared;
        self
    }

    /// Also runs incident, retention and email passes in [`Self::run`].
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// One pass at the current time: see [`Self::forward_once_at`].
    pub async fn forward_once(&self) -> Result<PassReport, store::Error> {
        self.forward_once_at(Utc::now()).await
    }

    /// Serves every destination that is due at `now`, one claim at a time, until none has due
    /// work left. A served destination goes to the back of the line.
    pub async fn forward_once_at(&self, now: DateTime<Utc>) -> Result<PassReport, store::Error> {
        // A one-shot pass forwards what was ingested before it: sequence it first.
        store::events::sequence_waiting(&self.pool).await?;
        let mut report = PassReport::default();
        let served = async {
            while let Some(one) = self.serve_one(now).await? {
                report.add(one);
            }
            Ok::<_, store::Error>(())
        }
        .await;
        self.one_shot_done();
        served.map(|()| report)
    }

    /// Claims one due destination and serves it; `None` when nothing is due.
    pub async fn serve_one(&self, now: DateTime<Utc>) -> Result<Option<PassReport>, store::Error> {
        let (_keep, stop) = watch::channel(false);
        let Some(claimed) =
            store::delivery::claim_destination(&self.pool, now, to_chrono(self.options.lease))
                .await?
        else {
            return Ok(None);
        };
        Ok(Some(
            self.serve_isolated(claimed, Clock::at(now), stop).await?,
        ))
    }

    /// Serves a claim in a task of its own: a panic anywhere in it marks that destination
    /// failing, with the reason, and is never more than that.
    async fn serve_isolated(
        &self,
        claimed: Claimed,
        clock: Clock,
        stop: watch::Receiver<bool>,
    ) -> Result<PassReport, store::Error> {
        let me = self.clone();
        let task = tokio::spawn({
            let claimed = claimed.clone();
            async move { me.serve_claimed(claimed, clock, stop).await }
        });
        match task.await {
            Ok(result) => result,
            Err(e) => {
                let reason = crash_reason(&claimed.provider, e);
                tracing::error!(subscription_id = %claimed.subscription_id, provider = %claimed.provider, %reason, "a claim failed unexpectedly; the destination is marked failing");
                self.fail_claim(&claimed, clock, reason).await
            }
        }
    }

    async fn serve_claimed(
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
            let (subscription_id, provider) = (claimed.subscription_id, claimed.provider.clone());
            async move { me.destination(subscription_id, &provider).await }
        });
        let built = keeper.wait(&mut building, || {}).await?;
        let destination = match built {
            Ok(Ok(Ok(d))) => d,
            Ok(Ok(Err(problem))) => return self.fail_claim(&claimed, clock, problem).await,
            Ok(Err(e)) => return Err(e),
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
    async fn fail_claim(
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
    async fn serve_replay(
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
                BATCH_EVENTS,
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
    async fn serve_retries(
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
        let events = store::delivery::read_retries(&self.pool, claimed, BATCH_EVENTS).await?;
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
    async fn serve_log(
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
        let result = loop {
            reading &= keeper.may_read() && Instant::now() < budget_end;
            if reading && ahead.is_none() {
                let (pool, claimed) = (self.pool.clone(), claimed.clone());
                ahead = Some(tokio::spawn(async move {
                    store::delivery::read_range(&pool, &claimed, read_after, BATCH_EVENTS).await
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
    fn spawn_range(
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

    /// The configured destination, or why it cannot be used.
    async fn destination(
        &self,
        subscription_id: Uuid,
        provider_id: &str,
    ) -> Result<Result<Arc<dyn SiemDestination>, String>, store::Error> {
        let Ok(provider) = Provider::parse(provider_id) else {
            return Ok(Err(format!("Unknown SIEM provider `{provider_id}`.")));
        };
        let version = store::siem::settings(&self.pool, subscription_id)
            .await?
            .map(|s| s.updated_at);
        let key = (subscription_id, provider_id.to_owned());
        if let Some(cached) = version.and_then(|v| self.destinations.get(&key, v)) {
            return Ok(Ok(cached));
        }
        let destination = crate::settings::destination(
            &self.pool,
            &self.master_key,
            subscription_id,
            provider,
            crate::siem::config::Context {
                hostname: &self.hostname,
                shared: &self.shared,
            },
        )
        .await?
        .map(Arc::<dyn SiemDestination>::from);
        if let (Ok(destination), Some(version)) = (&destination, version) {
            self.destinations.put(key, version, destination.clone());
        }
        Ok(destination)
    }

    /// Sends the heartbeat log (`EventID` 1 with `LastSequence`) to every enabled destination
    /// whose heartbeat is due at `now` and schedules its next one a period later; returns how
    /// many the SIEMs accepted. A destination that is failing, paused or switched off gets
    /// none (its state already shows); one that refuses a heartbeat is only logged: its
    /// events' delivery decides its health. Workers share the schedule through the database,
    /// so each destination gets one heartbeat per period whatever the number of workers.
    pub async fn heartbeat_once_at(&self, now: DateTime<Utc>) -> Result<u64, store::Error> {
        let Some(period) = self.options.heartbeat else {
            return Ok(0);
        };
        let due = store::delivery::due_heartbeats(&self.pool, now, to_chrono(period)).await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(HEARTBEAT_CONCURRENCY));
        let mut sends = tokio::task::JoinSet::new();
        for (subscription_id, provider, last_sequence) in due {
            let (me, permits) = (self.clone(), permits.clone());
            sends.spawn(async move {
                let _permit = permits.acquire_owned().await;
                me.send_heartbeat(subscription_id, &provider, last_sequence, now)
                    .await
            });
        }
        let mut sent = 0;
        while let Some(joined) = sends.join_next().await {
            if matches!(joined, Ok(true)) {
                sent += 1;
            }
        }
        self.one_shot_done();
        Ok(sent)
    }

    async fn send_heartbeat(
        &self,
        subscription_id: Uuid,
        provider: &str,
        last_sequence: i64,
        now: DateTime<Utc>,
    ) -> bool {
        let destination = match self.destination(subscription_id, provider).await {
            Ok(Ok(d)) => d,
            Ok(Err(reason)) => {
                tracing::warn!(%subscription_id, %provider, %reason, "heartbeat not sent: the destination cannot be built");
                return false;
            }
            Err(e) => {
                tracing::warn!(%subscription_id, %provider, error = ?e, "heartbeat not sent");
                return false;
            }
        };
        let log = crate::siem::wire::heartbeat_log(subscription_id, last_sequence, now);
        for batch in destination.build_batches(&[log], now) {
            match destination.send(&self.client, &self.egress, &batch).await {
                Ok(Disposition::Delivered) => {}
                Ok(other) => {
                    tracing::warn!(%subscription_id, %provider, answer = ?other, "the SIEM did not accept the heartbeat");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(%subscription_id, %provider, error = %e, "heartbeat not delivered");
                    return false;
                }
            }
        }
        metrics::counter!("cloudpki_heartbeats_total", "provider" => provider.to_owned())
            .increment(1);
        true
    }

    /// The destination's state after a claim that stopped short.
    fn health_after(&self, claimed: &Claimed, now: DateTime<Utc>, trouble: Trouble) -> Health {
        let failures = claimed.consecutive_failures;
        match trouble {
            Trouble::Retry { after, reason } => {
                metrics::counter!("cloudpki_delivery_retries_total", "provider" => claimed.provider.clone()).increment(1);
                let delay = after
                    .map(|d| d.min(crate::siem::MAX_RETRY_AFTER))
                    .unwrap_or_else(|| backoff(failures, BACKOFF_CAP));
                tracing::info!(subscription_id = %claimed.subscription_id, delay_ms = delay.as_millis() as u64, %reason, "delivery will be retried");
                let next_attempt_at = later(now, delay);
                // A short blip retries quietly; a long outage is an incident.
                let long_outage = failures.saturating_add(1) >= FAILING_AFTER_ATTEMPTS
                    || claimed
                        .failing_since
                        .is_some_and(|t| now - t >= to_chrono(FAILING_AFTER));
                if long_outage {
                    Health::Failing {
                        next_attempt_at,
                        error: reason,
                    }
                } else {
                    Health::Retry {
                        next_attempt_at,
                        error: reason,
                    }
                }
            }
            Trouble::Failing { reason } => {
                tracing::warn!(subscription_id = %claimed.subscription_id, %reason, "destination failing; events are kept");
                Health::Failing {
                    next_attempt_at: later(now, backoff(failures, FAILING_RETRY_CAP)),
                    error: reason,
                }
            }
            Trouble::Refused { reason } => {
                tracing::warn!(subscription_id = %claimed.subscription_id, %reason, "destination refuses every event; failing, events are kept");
                Health::Failing {
                    next_attempt_at: later(now, backoff(failures, FAILING_RETRY_CAP)),
                    error: format!(
                        "The SIEM refused the events and accepted nothing else after refusing them (not even a connection-test record), so the fault is the destination's (a proxy, a pipeline or its settings), not the events'. The events are kept and sent again once it accepts them. It said: {reason}"
                    ),
                }
            }
            Trouble::Gone { reason } => {
                tracing::warn!(subscription_id = %claimed.subscription_id, %reason, "destination is gone; export paused, events are kept");
                Health::Paused {
                    error: format!("{reason} Export to it is paused and the events are kept; save the settings again to resume."),
                }
            }
            Trouble::Interrupted => Health::Retry {
                next_attempt_at: now,
                error:
                    "A worker stopped while sending; the events it had in flight are sent again."
                        .into(),
            },
        }
    }

    /// Serves destinations on every notification and sweep until `shutdown` turns true: stops
    /// claiming at once, lets claims finish their sends for up to the shutdown grace, records
    /// what happened, and hands back the rest. The dispatcher and the notification loop are
    /// supervised: if one ever dies it is logged and started again.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let listener = tokio::spawn(listen(self.pool.clone(), wake_tx, shutdown.clone()));
        let mut loops = Vec::new();
        {
            let me = self.clone();
            let stop = shutdown.clone();
            loops.push(tokio::spawn(supervise(
                "forwarder",
                stop.clone(),
                move || {
                    let me = me.clone();
                    let wake = wake_rx.clone();
                    let stop = stop.clone();
                    async move { me.dispatch(wake, stop).await }
                },
            )));
        }
        if let Some(notifier) = self.notifier.clone() {
            let stop = shutdown.clone();
            let sweep = self.options.sweep.min(Duration::from_secs(5));
            loops.push(tokio::spawn(supervise(
                "notifier",
                stop.clone(),
                move || {
                    let notifier = notifier.clone();
                    let mut stop = stop.clone();
                    async move {
                        loop {
                            if let Err(e) = notifier.run_once_at(Utc::now()).await {
                                tracing::error!(error = ?e, "notification pass failed; retrying");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(sweep) => {},
                                _ = stop.changed() => {},
                            }
                            if *stop.borrow() {
                                break;
                            }
                        }
                    }
                },
            )));
        }
        if let Some(period) = self.options.heartbeat {
            let me = self.clone();
            let stop = shutdown.clone();
            // Checked often enough that a heartbeat is at most a few seconds late.
            let tick = (period / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
            loops.push(tokio::spawn(supervise(
                "heartbeat",
                stop.clone(),
                move || {
                    let me = me.clone();
                    let mut stop = stop.clone();
                    async move {
                        loop {
                            if let Err(e) = me.heartbeat_once_at(Utc::now()).await {
                                tracing::error!(error = ?e, "heartbeat pass failed; retrying");
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(tick) => {},
                                _ = stop.changed() => {},
                            }
                            if *stop.borrow() {
                                break;
                            }
                        }
                    }
                },
            )));
        }
        tracing::info!(concurrency = self.options.concurrency, "forwarder running");
        for handle in loops {
            let _ = handle.await;
        }
        listener.abort();
        tracing::info!("forwarder stopped");
    }

    /// Claims due destinations while slots are free and serves each in a task of its own.
    async fn dispatch(self, mut wake: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
        let slots = self.options.concurrency.max(1);
        let mut claims = tokio::task::JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            while claims.len() < slots {
                let now = Utc::now();
                match store::delivery::claim_destination(
                    &self.pool,
                    now,
                    to_chrono(self.options.lease),
                )
                .await
                {
                    Ok(Some(claimed)) => {
                        let me = self.clone();
                        let stop = stop.clone();
                        claims.spawn(async move {
                            let (subscription_id, provider) = (claimed.subscription_id, claimed.provider.clone());
                            if let Err(e) = me.serve_isolated(claimed, Clock::at(now), stop).await {
                                tracing::error!(%subscription_id, %provider, error = ?e, "serving a destination failed; its lease runs out and it is tried again");
                            }
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = ?e, "claiming a destination failed; retrying");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = wake.changed() => {},
                _ = tokio::time::sleep(self.options.sweep) => {},
                Some(_) = claims.join_next(), if !claims.is_empty() => {},
                _ = stop.changed() => {},
            }
        }
        // Claims see the stop themselves and finish within the grace period.
        while claims.join_next().await.is_some() {}
    }
}

/// Runs `make()` again whenever it panics, until it returns or `stop` turns true.
async fn supervise<F, Fut>(name: &'static str, stop: watch::Receiver<bool>, make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(loop_name = name, error = %e, "a loop died; starting it again");
                if *stop.borrow() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Keeps a claim's lease while it waits for a send (renewed every third of the lease, from
/// the database's clock), and turns a stop into a grace period, after which the send is
/// handed back. Every path that waits on a SIEM waits through it.
struct Keeper<'a> {
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
struct ClaimState {
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
fn settle_range(events: &[Meta], fates: &[Fate], contiguous: bool) -> Settled {
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

/// The outcome of a range task; a panic or an abort still accounts for every event.
fn range_outcome(
    joined: Result<RangeOutcome, tokio::task::JoinError>,
    n: usize,
    provider: &str,
) -> RangeOutcome {
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_cancelled() => RangeOutcome::all(n, Fate::MaybeSent, Trouble::Interrupted),
        Err(e) => RangeOutcome::all(
            n,
            Fate::MaybeSent,
            Trouble::Failing {
                reason: crash_reason(provider, e),
            },
        ),
    }
}

/// Plain words for a task that panicked.
fn crash_reason(provider: &str, e: tokio::task::JoinError) -> String {
    let detail = match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into()),
        Err(e) => e.to_string(),
    };
    let provider = Provider::parse(provider).map_or("the provider", |p| p.label());
    format!("cloudpki's code for {provider} failed unexpectedly ({detail}). The events are kept; this was logged for the cloudpki team and delivery is retried.")
}

/// Resolves when `stop` turns true; never, if its sender is gone.
/// Out of time: hand the sends back; their events count as maybe sent.
fn abort_all(inflight: &VecDeque<InFlight>) {
    for other in inflight {
        other.handle.abort();
    }
}

async fn stopped(stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending::<()>().await,
    }
}

/// The most requests one range may take while isolating refused events: `2·log2(n) + 8`.
fn bisection_cap(n: usize) -> usize {
    let log2 = usize::BITS - n.max(1).next_power_of_two().leading_zeros() - 1;
    2 * log2 as usize + 8
}

/// Sends `logs` (one range), splitting on 413 and isolating 400s depth first. Every event
/// gets a fate; the trouble says why the range stopped short.
///
/// Parking needs proof: an event the SIEM refused on its own is parked only when the same
/// destination accepted a different event *after* that refusal, within this range (another
/// event of it, tried at once from the far end, or, when none is left, one probe record: the
/// connection-test record, Event ID 0). Without that proof the refusal is the destination's failure: the events
/// stay unsent, the cursor stays, and the destination fails until it accepts again. Two
/// refusals alike with nothing accepted between them, or more requests than
/// [`bisection_cap`], end the search the same way.
async fn deliver_range(
    destination: &dyn SiemDestination,
    client: &reqwest::Client,
    egress: &EgressPolicy,
    provider: &str,
    logs: &[AuditLog],
    clock: Clock,
    probe_first: bool,
) -> RangeOutcome {
    let n = logs.len();
    let mut fates = vec![Fate::Unsent; n];
    let index: HashMap<Uuid, usize> = logs.iter().enumerate().map(|(i, l)| (l.uuid, i)).collect();
    let mut groups: VecDeque<Vec<usize>> = VecDeque::new();
    if probe_first && n > 1 {
        groups.push_back(vec![0]);
        groups.push_back((1..n).collect());
    } else if n > 0 {
        groups.push_back((0..n).collect());
    }
    let cap = bisection_cap(n);
    let mut requests = 0usize;
    // The number of the latest request that had an event accepted, and the events refused
    // alone: (event, number of the refusing request, reason). A refusal is proven by an
    // acceptance in a later request.
    let mut accepted_at: Option<usize> = None;
    let mut refusals: Vec<(usize, usize, String)> = Vec::new();
    let mut trouble = None;
    'groups: while let Some(group) = groups.pop_front() {
        // Groups are contiguous runs but for a probe: borrow them instead of copying logs.
        let contiguous = group.windows(2).all(|w| w[1] == w[0] + 1);
        let copied: Vec<AuditLog>;
        let group_logs: &[AuditLog] = match (contiguous, group.first(), group.last()) {
            (true, Some(&first), Some(&last)) => &logs[first..=last],
            _ => {
                copied = group.iter().map(|&i| logs[i].clone()).collect();
                &copied
            }
        };
        // Late events are re-timed here, right before sending (Datadog's age limit).
        let mut batches = match build_batches(destination, group_logs, clock) {
            Ok(batches) => VecDeque::from(batches),
            Err(reason) => {
                trouble = Some(Trouble::Failing { reason });
                break;
            }
        };
        while let Some(batch) = batches.pop_front() {
            let ids: Vec<usize> = batch
                .event_uuids
                .iter()
                .filter_map(|u| index.get(u).copied())
                .collect();
            if requests >= cap {
                trouble = Some(Trouble::Refused {
                    reason: format!("more than {cap} requests were refused while looking for the events at fault."),
                });
                break 'groups;
            }
            requests += 1;
            let disposition = match send_batch(destination, client, egress, provider, &batch).await
            {
                Ok(d) => d,
                Err(e) => {
                    // No answer: the SIEM may have stored the batch.
                    for &i in &ids {
                        fates[i] = Fate::MaybeSent;
                    }
                    trouble = Some(Trouble::Retry {
                        after: None,
                        reason: e.to_string(),
                    });
                    break 'groups;
                }
            };
            // An event refused on its own: its fault, or the destination's.
            let (refused, reason) = match disposition {
                Disposition::Delivered => {
                    for &i in &ids {
                        fates[i] = Fate::Delivered;
                    }
                    if !ids.is_empty() {
                        accepted_at = Some(requests);
                    }
                    continue;
                }
                Disposition::SplitBatch | Disposition::Rejected { .. } if ids.len() > 1 => {
                    requeue(&mut groups, std::mem::take(&mut batches), &index);
                    let half = ids.len() / 2;
                    groups.push_front(ids[half..].to_vec());
                    groups.push_front(ids[..half].to_vec());
                    continue 'groups;
                }
                Disposition::SplitBatch => (
                    ids.first().copied(),
                    "The SIEM refused this event as too large even on its own (HTTP 413)."
                        .to_owned(),
                ),
                Disposition::Rejected { reason } => (ids.first().copied(), reason),
                Disposition::PartialAccept { accepted, reason } => {
                    // The events before the refused one were stored by the same request: they
                    // prove earlier refusals, not this one.
                    let accepted = accepted.min(ids.len());
                    for &i in &ids[..accepted] {
                        fates[i] = Fate::Delivered;
                    }
                    if accepted > 0 {
                        accepted_at = Some(requests);
                    }
                    requeue(&mut groups, std::mem::take(&mut batches), &index);
                    let rest: Vec<usize> = ids.iter().skip(accepted + 1).copied().collect();
                    if !rest.is_empty() {
                        groups.push_front(rest);
                    }
                    (ids.get(accepted).copied(), reason)
                }
                Disposition::Unconfirmed { after, reason } => {
                    // A gateway gave up waiting, or the SIEM stored part of the batch.
                    for &i in &ids {
                        fates[i] = Fate::MaybeSent;
                    }
                    trouble = Some(Trouble::Retry { after, reason });
                    break 'groups;
                }
                Disposition::Retry { after, reason } => {
                    trouble = Some(Trouble::Retry { after, reason });
                    break 'groups;
                }
                Disposition::AuthFailed { reason } => {
                    trouble = Some(Trouble::Failing { reason });
                    break 'groups;
                }
                Disposition::Gone { reason } => {
                    trouble = Some(Trouble::Gone { reason });
                    break 'groups;
                }
            };
            let Some(i) = refused else { continue };
            let alike = refusals
                .iter()
                .any(|(_, at, r)| *r == reason && accepted_at.is_none_or(|a| a < *at));
            if alike {
                // Refused alike twice with nothing accepted between: the destination's fault.
                trouble = Some(Trouble::Refused { reason });
                break 'groups;
            }
            refusals.push((i, requests, reason));
            // Proof, or its absence, at once: one event from the far end of the range, alone.
            requeue(&mut groups, std::mem::take(&mut batches), &index);
            if let Some(probe) = take_last(&mut groups) {
                groups.push_front(vec![probe]);
            }
            continue 'groups;
        }
    }
    let (proven, unproven): (Vec<_>, Vec<_>) = refusals
        .into_iter()
        .partition(|(_, at, _)| accepted_at.is_some_and(|a| a > *at));
    for (i, _, reason) in proven {
        fates[i] = Fate::Parked(reason);
    }
    if trouble.is_none() && !unproven.is_empty() {
        // Nothing of the range is left to prove them with: the connection-test record (Event ID
        // 0) as a probe; it carries no Sequence a SIEM's gap monitor would read, and goes out
        // whether or not heartbeats are on.
        let probe = crate::siem::wire::test_log(logs[0].subscription_id, clock.now());
        metrics::counter!("cloudpki_probes_total", "provider" => provider.to_owned()).increment(1);
        match send_probe(destination, client, egress, provider, probe, clock).await {
            Ok(()) => {
                for (i, _, reason) in unproven {
                    fates[i] = Fate::Parked(reason);
                }
            }
            Err(Some(t)) => trouble = Some(t),
            Err(None) => {
                let reason = unproven
                    .last()
                    .map(|(_, _, r)| r.clone())
                    .unwrap_or_default();
                trouble = Some(Trouble::Refused { reason });
            }
        }
    }
    RangeOutcome { fates, trouble }
}

/// Builds a group's requests; a panic in provider code becomes the destination's failure.
fn build_batches(
    destination: &dyn SiemDestination,
    logs: &[AuditLog],
    clock: Clock,
) -> Result<Vec<crate::siem::Batch>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        destination.build_batches(logs, clock.now())
    }))
    .map_err(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("cloudpki could not build a request for {} ({detail}). The events are kept; delivery is retried.", destination.provider())
    })
}

/// Sends one request, timed; a call the egress policy blocks is a settings problem.
async fn send_batch(
    destination: &dyn SiemDestination,
    client: &reqwest::Client,
    egress: &EgressPolicy,
    provider: &str,
    batch: &crate::siem::Batch,
) -> Result<Disposition, SendError> {
    metrics::histogram!("cloudpki_batch_events").record(batch.len() as f64);
    let started = std::time::Instant::now();
    let answer = destination.send(client, egress, batch).await;
    metrics::histogram!("cloudpki_send_seconds", "provider" => provider.to_owned())
        .record(started.elapsed().as_secs_f64());
    match answer {
        Err(SendError::EgressDenied { reason }) => Ok(Disposition::AuthFailed {
            reason: format!("The call was blocked by this server's outbound policy. {reason}"),
        }),
        other => other,
    }
}

/// Sends a probe record. `Ok` when the SIEM accepted it; `Err(None)` when it refused it as
/// it refused the events; `Err(Some(trouble))` when it answered some other way.
async fn send_probe(
    destination: &dyn SiemDestination,
    client: &reqwest::Client,
    egress: &EgressPolicy,
    provider: &str,
    probe: AuditLog,
    clock: Clock,
) -> Result<(), Option<Trouble>> {
    let batches = build_batches(destination, &[probe], clock)
        .map_err(|reason| Some(Trouble::Failing { reason }))?;
    for batch in batches {
        match send_batch(destination, client, egress, provider, &batch).await {
            Ok(Disposition::Delivered) => {}
            Ok(
                Disposition::Rejected { .. }
                | Disposition::SplitBatch
                | Disposition::PartialAccept { .. },
            ) => return Err(None),
            Ok(
                Disposition::Retry { after, reason } | Disposition::Unconfirmed { after, reason },
            ) => return Err(Some(Trouble::Retry { after, reason })),
            Ok(Disposition::AuthFailed { reason }) => {
                return Err(Some(Trouble::Failing { reason }))
            }
            Ok(Disposition::Gone { reason }) => return Err(Some(Trouble::Gone { reason })),
            Err(e) => {
                return Err(Some(Trouble::Retry {
                    after: None,
                    reason: e.to_string(),
                }))
            }
        }
    }
    Ok(())
}

/// Puts the batches not sent yet back at the front of the work, in order.
fn requeue(
    groups: &mut VecDeque<Vec<usize>>,
    mut batches: VecDeque<crate::siem::Batch>,
    index: &HashMap<Uuid, usize>,
) {
    while let Some(batch) = batches.pop_back() {
        groups.push_front(
            batch
                .event_uuids
                .iter()
                .filter_map(|u| index.get(u).copied())
                .collect(),
        );
    }
}

/// Takes the last event of the remaining work (the far end of the range).
fn take_last(groups: &mut VecDeque<Vec<usize>>) -> Option<usize> {
    let last = groups.back_mut()?.pop();
    if groups.back().is_some_and(Vec::is_empty) {
        groups.pop_back();
    }
    last
}

/// Forwards `NOTIFY cloudpki_events` to the claim loops; reconnects after errors.
async fn listen(pool: PgPool, wake: watch::Sender<u64>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN; relying on the sweep");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(store::events::EVENTS_CHANNEL).await {
            tracing::warn!(error = %e, "cannot LISTEN; relying on the sweep");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(_) => { wake.send_modify(|v| *v = v.wrapping_add(1)); }
                    Err(e) => { tracing::warn!(error = %e, "LISTEN connection lost"); break; }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Capped exponential backoff with full jitter: uniform in `[0, min(cap, base·2^failures)]`,
/// at least 100 ms.
pub fn backoff(consecutive_failures: i32, cap: Duration) -> Duration {
    let exp = u32::try_from(consecutive_failures.clamp(0, 20)).unwrap_or(20);
    let ceiling = BACKOFF_BASE.saturating_mul(1u32 << exp).min(cap);
    let jittered = rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(jittered.max(100))
}

fn to_chrono(d: Duration) -> chrono::Duration {
    // Durations here are capped far below chrono's range; saturate all the same.
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn to_audit_log(event: LogEvent, subscription_id: Uuid) -> Option<AuditLog> {
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

/// `at + d`, saturating far in the future instead of overflowing.
fn later(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    at.checked_add_signed(to_chrono(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_exponential_ceiling_and_cap() {
        for failures in 0..30 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1u32 << failures.min(20))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                let d = backoff(failures, BACKOFF_CAP);
                assert!(
                    d <= ceiling.max(Duration::from_millis(100)),
                    "{failures}: {d:?}"
                );
                assert!(d >= Duration::from_millis(100));
            }
        }
    }

    #[test]
    fn bisection_is_capped_at_twice_log2_plus_eight() {
        assert_eq!(bisection_cap(1), 8);
        assert_eq!(bisection_cap(100), 22);
        assert_eq!(bisection_cap(1000), 28);
    }

    #[tokio::test]
    async fn a_panic_in_provider_code_becomes_that_destinations_failure_with_the_reason() {
        let handle = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("boom in the provider");
            }
            RangeOutcome {
                fates: Vec::new(),
                trouble: None,
            }
        });
        let outcome = range_outcome(handle.await, 3, "datadog");
        assert_eq!(outcome.fates, vec![Fate::MaybeSent; 3]);
        match outcome.trouble {
            Some(Trouble::Failing { reason }) => {
                assert!(reason.contains("boom in the provider"), "{reason}");
                assert!(reason.contains("Datadog"), "{reason}");
                assert!(reason.contains("The events are kept"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A SIEM in memory that answers each request with `answer(request number, event ids in
    /// it)`; the probe has Event ID 0. Records what it was sent.
    type Answer = Box<dyn Fn(usize, &[u32]) -> Disposition + Send + Sync>;

    struct Scripted {
        answer: Answer,
        sent: std::sync::Mutex<Vec<Vec<u32>>>,
    }

    impl Scripted {
        fn new(answer: impl Fn(usize, &[u32]) -> Disposition + Send + Sync + 'static) -> Self {
            Self {
                answer: Box::new(answer),
                sent: std::sync::Mutex::default(),
            }
        }

        fn requests(&self) -> usize {
            self.sent.lock().map(|s| s.len()).unwrap_or_default()
        }
    }

    impl SiemDestination for Scripted {
        fn provider(&self) -> &'static str {
            "Scripted"
        }

        fn build_batches(&self, logs: &[AuditLog], _now: DateTime<Utc>) -> Vec<crate::siem::Batch> {
            let ids: Vec<u32> = logs.iter().map(|l| l.event_id.get()).collect();
            vec![crate::siem::Batch {
                event_uuids: logs.iter().map(|l| l.uuid).collect(),
                body: serde_json::to_vec(&ids).unwrap_or_default(),
            }]
        }

        fn send<'a>(
            &'a self,
            _client: &'a reqwest::Client,
            _egress: &'a EgressPolicy,
            batch: &'a crate::siem::Batch,
        ) -> crate::siem::egress::BoxFuture<'a, Result<Disposition, SendError>> {
            let ids: Vec<u32> = serde_json::from_slice(&batch.body).unwrap_or_default();
            let n = {
                let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
                sent.push(ids.clone());
                sent.len()
            };
            let answer = (self.answer)(n, &ids);
            Box::pin(async move { Ok(answer) })
        }

        fn test_connection<'a>(
            &'a self,
            _client: &'a reqwest::Client,
            _egress: &'a EgressPolicy,
            _subscription_id: Uuid,
        ) -> crate::siem::egress::BoxFuture<
            'a,
            Result<crate::siem::TestSuccess, crate::siem::TestFailure>,
        > {
            // The forwarder never tests a connection; a call here is a test's mistake.
            Box::pin(async {
                Err(crate::siem::TestFailure {
                    kind: crate::siem::TestFailureKind::Other,
                    message: "the scripted SIEM has no connection test".into(),
                })
            })
        }
    }

    /// `n` events with Event ID 12, but those at `poison` have 4888.
    fn logs(n: usize, poison: &[usize]) -> Vec<AuditLog> {
        let sub = Uuid::new_v4();
        (0..n)
            .map(|i| {
                let id = if poison.contains(&i) { 4888 } else { 12 };
                let mut log = crate::siem::test_table::audit_with(
                    id,
                    Uuid::new_v4(),
                    sub,
                    Utc::now(),
                    serde_json::json!({}),
                );
                log.sequence = i as i64 + 1;
                log
            })
            .collect()
    }

    async fn deliver(siem: &Scripted, logs: &[AuditLog]) -> RangeOutcome {
        let egress = EgressPolicy::parse("127.0.0.1").expect("policy");
        deliver_range(
            siem,
            &reqwest::Client::new(),
            &egress,
            "datadog",
            logs,
            Clock::at(Utc::now()),
            false,
        )
        .await
    }

    fn refused(reason: String) -> Disposition {
        Disposition::Rejected { reason }
    }

    #[tokio::test]
    async fn a_lone_event_refused_is_not_parked_when_the_probe_is_refused_too() {
        // A sparse tenant: one event per range, a proxy that answers 400 to everything.
        let siem = Scripted::new(|_, _| refused("HTTP 400".into()));
        let outcome = deliver(&siem, &logs(1, &[])).await;
        assert_eq!(outcome.fates, vec![Fate::Unsent]);
        assert!(
            matches!(outcome.trouble, Some(Trouble::Refused { .. })),
            "{:?}",
            outcome.trouble
        );
        let sent = siem.sent.lock().expect("sent").clone();
        assert_eq!(
            sent,
            vec![vec![12], vec![0]],
            "the event, then the connection-test record as a probe"
        );
    }

    #[tokio::test]
    async fn a_lone_event_refused_is_parked_once_the_probe_is_accepted() {
        let siem = Scripted::new(|_, ids| {
            if ids.contains(&4888) {
                refused("bad event".into())
            } else {
                Disposition::Delivered
            }
        });
        let outcome = deliver(&siem, &logs(1, &[0])).await;
        assert_eq!(outcome.fates, vec![Fate::Parked("bad event".into())]);
        assert_eq!(outcome.trouble, None);
    }

    #[tokio::test]
    async fn refusals_whose_bodies_differ_park_nothing() {
        // A proxy that puts a request id in every answer.
        let siem = Scripted::new(|n, _| refused(format!("HTTP 400 (request id {n})")));
        for n in [1, 2, 7, 100] {
            let outcome = deliver(&siem, &logs(n, &[])).await;
            assert!(
                outcome.fates.iter().all(|f| *f == Fate::Unsent),
                "{n}: {:?}",
                outcome.fates
            );
            assert!(
                matches!(outcome.trouble, Some(Trouble::Refused { .. })),
                "{n}"
            );
        }
    }

    #[tokio::test]
    async fn a_single_event_413_or_a_partial_accept_of_zero_needs_proof() {
        for answer in [
            Disposition::SplitBatch,
            Disposition::PartialAccept {
                accepted: 0,
                reason: "code 6".into(),
            },
        ] {
            let siem = Scripted::new(move |_, _| answer.clone());
            for n in [1, 3] {
                let outcome = deliver(&siem, &logs(n, &[])).await;
                assert!(
                    outcome.fates.iter().all(|f| *f == Fate::Unsent),
                    "{n}: {:?}",
                    outcome.fates
                );
                assert!(outcome.trouble.is_some());
            }
        }
    }

    #[tokio::test]
    async fn an_acceptance_before_a_refusal_proves_nothing() {
        // The destination accepts the first request, then refuses everything (an outage that
        // starts mid-range): nothing refused after the last acceptance is parked.
        let siem = Scripted::new(|n, _| {
            if n == 2 {
                Disposition::Delivered
            } else {
                refused(format!("HTTP 400 #{n}"))
            }
        });
        let outcome = deliver(&siem, &logs(8, &[])).await;
        assert!(
            !outcome.fates.iter().any(|f| matches!(f, Fate::Parked(_))),
            "{:?}",
            outcome.fates
        );
        assert!(outcome.fates.contains(&Fate::Delivered));
        assert!(outcome.trouble.is_some());
    }

    #[tokio::test]
    async fn a_poison_event_at_the_end_of_a_range_is_parked_with_the_probes_proof() {
        let siem = Scripted::new(|_, ids| {
            if ids.contains(&4888) {
                refused("bad event".into())
            } else {
                Disposition::Delivered
            }
        });
        let outcome = deliver(&siem, &logs(10, &[9])).await;
        assert_eq!(outcome.trouble, None);
        assert_eq!(outcome.fates[9], Fate::Parked("bad event".into()));
        assert!(outcome.fates[..9].iter().all(|f| *f == Fate::Delivered));
        assert!(siem.requests() <= bisection_cap(10) + 1);
    }

    #[tokio::test]
    async fn a_gateway_timeout_leaves_the_batch_maybe_sent() {
        let siem = Scripted::new(|_, _| crate::siem::gateway_gave_up(504, None, "Datadog", ""));
        let outcome = deliver(&siem, &logs(3, &[])).await;
        assert_eq!(outcome.fates, vec![Fate::MaybeSent; 3]);
        assert!(matches!(outcome.trouble, Some(Trouble::Retry { .. })));
    }

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
