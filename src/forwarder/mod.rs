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
//! Files: `claim.rs` serves one claim, `range.rs` delivers one range (batches, answers,
//! bisection, proof), `destinations.rs` keeps built destinations per settings version,
//! `heartbeat.rs` sends the heartbeat log; this file holds the dispatcher and the options.
//! Each claim and heartbeat runs in a tracing span naming its subscription and provider.
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
    config::{
        BACKOFF_BASE, BACKOFF_CAP, DEFAULT_CLAIM_BUDGET, DEFAULT_CONCURRENCY, DEFAULT_HEARTBEAT,
        DEFAULT_LEASE, DEFAULT_SHUTDOWN_GRACE, FAILING_AFTER, FAILING_AFTER_ATTEMPTS,
        FAILING_RETRY_CAP, MAX_WINDOW, SWEEP_INTERVAL,
    },
    crypto::MasterKey,
    domain::events::EventId,
    siem::Provider,
    siem::{egress::EgressPolicy, AuditLog, Disposition, SendError, SiemDestination},
    store::{
        self,
        delivery::{Claimed, Finish, Health, LogEvent, Range, Settled},
    },
};

mod claim;
mod destinations;
mod heartbeat;
mod range;

use destinations::DestinationCache;
use range::{crash_reason, deliver_range, range_outcome};

/// Events read per range for this claim's provider ([`crate::siem::provider::ProviderSpec::range_events`]).
fn range_events(claimed: &store::delivery::Claimed) -> i64 {
    crate::siem::Provider::parse(&claimed.provider)
        .map_or(crate::siem::provider::RANGE_EVENTS, |p| {
            p.spec().range_events
        })
}

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
    /// Ranges (batches of up to the provider's `range_events`) served.
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
    shared: crate::siem::provider::Shared,
    destinations: Arc<DestinationCache>,
    on_pass: Option<store::OnPass>,
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
            shared: crate::siem::provider::Shared::default(),
            destinations: Arc::default(),
            on_pass: None,
        }
    }

    /// Called after each one-shot pass (the process's page cache is dropped, so that a page
    /// read right after it shows its outcome; the running loop relies on NOTIFY).
    pub fn with_on_pass(mut self, hook: store::OnPass) -> Self {
        self.on_pass = Some(hook);
        self
    }

    fn one_shot_done(&self) {
        if let Some(hook) = &self.on_pass {
            hook();
        }
    }

    /// Shares the process's provider state (Sentinel token cache) with the portal.
    pub fn with_shared(mut self, shared: crate::siem::provider::Shared) -> Self {
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
            loops.push(tokio::spawn(supervise_every(
                "notifier",
                stop,
                sweep,
                move || {
                    let notifier = notifier.clone();
                    async move { notifier.run_once_at(Utc::now()).await.map(drop) }
                },
            )));
        }
        if let Some(period) = self.options.heartbeat {
            let me = self.clone();
            let stop = shutdown.clone();
            // Checked often enough that a heartbeat is at most a few seconds late.
            let tick = (period / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
            loops.push(tokio::spawn(supervise_every(
                "heartbeat",
                stop,
                tick,
                move || {
                    let me = me.clone();
                    async move { me.heartbeat_once_at(Utc::now()).await.map(drop) }
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

/// A supervised loop that runs `pass` every `period` until `stop`; a failed pass is logged
/// and the next one comes at its time.
async fn supervise_every<F, Fut>(
    name: &'static str,
    stop: watch::Receiver<bool>,
    period: Duration,
    pass: F,
) where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), store::Error>> + Send + 'static,
{
    supervise(name, stop.clone(), move || {
        let pass = pass.clone();
        let mut stop = stop.clone();
        async move {
            loop {
                if let Err(e) = pass().await {
                    tracing::error!(loop_name = name, error = ?e, "a pass failed; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {},
                    _ = stop.changed() => {},
                }
                if *stop.borrow() {
                    break;
                }
            }
        }
    })
    .await
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
}
