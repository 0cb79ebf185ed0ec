//! The forwarder: delivers every queued audit event to its SIEM destination, at least once.
//!
//! One pass ([`Forwarder::forward_once_at`]) claims due destinations one at a time, sends a batch
//! each, and writes the outcome; [`Forwarder::run`] repeats passes when PostgreSQL notifies a
//! commit (`LISTEN cloudpki_events`) and on a periodic sweep, so a lost notification only
//! delays. Several loops run in one process and any number of processes may share a database:
//! they coordinate only through destination leases in PostgreSQL (see `store::delivery`).
//!
//! Answers are handled per [`Disposition`]: delivered events leave the queue; 413 splits the
//! batch; 400 splits until the offending event is alone, then parks it with its reason; 408,
//! 429, 5xx and network errors back off exponentially with full jitter (honouring
//! `Retry-After`); 401/403/404 keep every event queued and mark the destination failing.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::Rng as _;
use sqlx::{postgres::PgListener, PgPool};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    crypto::MasterKey,
    domain::{events::EventId, provider::Provider},
    siem::{egress::EgressPolicy, AuditLog, Disposition, SendError, SiemDestination},
    store::{
        self,
        delivery::{BatchResult, Claimed, Health, QueuedEvent},
    },
};

/// Most events read per claim (Datadog's per-request limit; larger batches are split by size).
pub const BATCH_EVENTS: i64 = 1000;
/// How long a claim holds a destination; a worker that dies releases it by letting it expire.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
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
/// Concurrent claim loops per process.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Settings of a forwarder; tests shorten the lease.
#[derive(Debug, Clone)]
pub struct ForwarderOptions {
    /// Lease of a claimed destination.
    pub lease: Duration,
    /// Concurrent claim loops.
    pub concurrency: usize,
    /// Period of the sweep that runs between notifications.
    pub sweep: Duration,
}

impl Default for ForwarderOptions {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            concurrency: DEFAULT_CONCURRENCY,
            sweep: SWEEP_INTERVAL,
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Batches claimed.
    pub batches: u64,
    /// Events the SIEMs accepted.
    pub delivered: u64,
    /// Events parked (refused for good).
    pub parked: u64,
    /// Events resent after a worker died mid-send.
    pub duplicates: u64,
    /// Claims that ended in a retry or a failing destination.
    pub failures: u64,
}

impl PassReport {
    fn add(&mut self, other: PassReport) {
        self.batches += other.batches;
        self.delivered += other.delivered;
        self.parked += other.parked;
        self.duplicates += other.duplicates;
        self.failures += other.failures;
    }
}

/// Delivers queued events to SIEM destinations.
#[derive(Clone)]
pub struct Forwarder {
    pool: PgPool,
    master_key: MasterKey,
    client: reqwest::Client,
    egress: Arc<EgressPolicy>,
    hostname: String,
    owner: Uuid,
    options: ForwarderOptions,
    notifier: Option<crate::notify::Notifier>,
    shared: crate::siem::config::Shared,
}

impl Forwarder {
    /// A forwarder with its own lease-owner id.
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
            owner: Uuid::new_v4(),
            options,
            notifier: None,
            shared: crate::siem::config::Shared::default(),
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

    /// Serves every destination that is due at `now` until none has due work left: each claim
    /// sends one batch, and a served destination goes to the back of the line.
    pub async fn forward_once_at(&self, now: DateTime<Utc>) -> Result<PassReport, store::Error> {
        let mut report = PassReport::default();
        while let Some(one) = self.serve_one(now).await? {
            report.add(one);
        }
        Ok(report)
    }

    /// Claims one due destination and sends one batch to it; `None` when nothing is due.
    pub async fn serve_one(&self, now: DateTime<Utc>) -> Result<Option<PassReport>, store::Error> {
        let lease =
            chrono::Duration::from_std(self.options.lease).unwrap_or(chrono::Duration::seconds(60));
        let Some(claimed) =
            store::delivery::claim_destination(&self.pool, self.owner, now, lease).await?
        else {
            return Ok(None);
        };
        let report = match self.serve_claimed(&claimed, now).await {
            Ok(report) => report,
            Err(e) => {
                // Let another pass retry; the events stay queued.
                let _ = store::delivery::release(&self.pool, &claimed, self.owner).await;
                return Err(e);
            }
        };
        Ok(Some(report))
    }

    async fn serve_claimed(
        &self,
        claimed: &Claimed,
        now: DateTime<Utc>,
    ) -> Result<PassReport, store::Error> {
        let events = store::delivery::take_batch(&self.pool, claimed, BATCH_EVENTS).await?;
        let duplicates = events.iter().filter(|e| e.was_in_flight).count() as i64;
        let mut result = BatchResult {
            duplicates,
            ..BatchResult::default()
        };

        match self.destination(claimed).await? {
            Err(problem) => {
                result.health = self.failing(claimed, now, problem).await?;
            }
            Ok(destination) => {
                let mut logs = Vec::with_capacity(events.len());
                for event in &events {
                    match to_audit_log(event, claimed.subscription_id) {
                        Some(log) => logs.push((event.queue_id, log)),
                        None => result.parked.push((
                            event.queue_id,
                            format!(
                                "Event ID {} is not in the catalog; it cannot be sent.",
                                event.event_id
                            ),
                        )),
                    }
                }
                self.deliver(destination.as_ref(), claimed, logs, now, &mut result)
                    .await?;
            }
        }

        let report = PassReport {
            batches: 1,
            delivered: result.delivered.len() as u64,
            parked: result.parked.len() as u64,
            duplicates: result.duplicates as u64,
            failures: u64::from(!matches!(result.health, Health::Healthy)),
        };
        let provider = claimed.provider.clone();
        metrics::counter!("cloudpki_events_delivered_total", "provider" => provider.clone())
            .increment(report.delivered);
        metrics::counter!("cloudpki_events_parked_total", "provider" => provider.clone())
            .increment(report.parked);
        metrics::counter!("cloudpki_events_duplicated_total", "provider" => provider.clone())
            .increment(report.duplicates);
        if report.failures > 0 {
            metrics::counter!("cloudpki_delivery_failures_total", "provider" => provider)
                .increment(1);
        }
        if !store::delivery::finish_batch(&self.pool, claimed, self.owner, now, &result).await? {
            tracing::warn!(subscription_id = %claimed.subscription_id, "lost the destination lease while sending; another worker took over");
        }
        Ok(report)
    }

    /// The configured destination, or why it cannot be used.
    async fn destination(
        &self,
        claimed: &Claimed,
    ) -> Result<Result<Box<dyn SiemDestination>, String>, store::Error> {
        let Ok(provider) = Provider::parse(&claimed.provider) else {
            return Ok(Err(format!(
                "Unknown SIEM provider `{}`.",
                claimed.provider
            )));
        };
        let config = crate::siem::config::destination_config(
            &self.pool,
            &self.master_key,
            claimed.subscription_id,
            provider,
            &self.egress,
        )
        .await?;
        Ok(config.map(|c| c.destination(&self.hostname, &self.shared)))
    }

    async fn failing(
        &self,
        claimed: &Claimed,
        now: DateTime<Utc>,
        error: String,
    ) -> Result<Health, store::Error> {
        let (failures, _) = store::delivery::failure_state(&self.pool, claimed).await?;
        Ok(Health::Failing {
            next_attempt_at: now + to_chrono(backoff(failures, FAILING_RETRY_CAP)),
            error,
        })
    }

    /// Sends `logs`, splitting on 413 and isolating 400s, and records the outcome in `result`.
    async fn deliver(
        &self,
        destination: &dyn SiemDestination,
        claimed: &Claimed,
        logs: Vec<(i64, AuditLog)>,
        now: DateTime<Utc>,
        result: &mut BatchResult,
    ) -> Result<(), store::Error> {
        let mut groups = std::collections::VecDeque::from([logs]);
        while let Some(group) = groups.pop_front() {
            if group.is_empty() {
                continue;
            }
            let by_uuid: std::collections::HashMap<Uuid, i64> =
                group.iter().map(|(id, log)| (log.uuid, *id)).collect();
            let audit_logs: Vec<AuditLog> = group.iter().map(|(_, log)| log.clone()).collect();
            for batch in destination.build_batches(&audit_logs, now) {
                let ids: Vec<i64> = batch
                    .event_uuids
                    .iter()
                    .filter_map(|u| by_uuid.get(u).copied())
                    .collect();
                metrics::histogram!("cloudpki_batch_events").record(batch.len() as f64);
                let started = std::time::Instant::now();
                let answer = destination.send(&self.client, &self.egress, &batch).await;
                metrics::histogram!("cloudpki_send_seconds", "provider" => claimed.provider.clone())
                    .record(started.elapsed().as_secs_f64());
                let disposition = match answer {
                    Ok(d) => d,
                    Err(SendError::EgressDenied { reason }) => Disposition::AuthFailed {
                        reason: format!(
                            "The call was blocked by this server's outbound policy. {reason}"
                        ),
                    },
                    Err(e) => Disposition::Retry {
                        after: None,
                        reason: e.to_string(),
                    },
                };
                match disposition {
                    Disposition::Delivered => result.delivered.extend(ids),
                    Disposition::SplitBatch | Disposition::Rejected { .. } if ids.len() > 1 => {
                        let members: Vec<(i64, AuditLog)> = group
                            .iter()
                            .filter(|(id, _)| ids.contains(id))
                            .cloned()
                            .collect();
                        let half = members.len() / 2;
                        let (left, right) = members.split_at(half);
                        groups.push_back(left.to_vec());
                        groups.push_back(right.to_vec());
                    }
                    Disposition::SplitBatch => {
                        result.parked.extend(ids.into_iter().map(|id| {
                            (id, "The SIEM refused this event as too large even on its own (HTTP 413).".to_owned())
                        }));
                    }
                    Disposition::Rejected { reason } => {
                        result
                            .parked
                            .extend(ids.into_iter().map(|id| (id, reason.clone())));
                    }
                    Disposition::Retry { after, reason } => {
                        metrics::counter!("cloudpki_delivery_retries_total", "provider" => claimed.provider.clone()).increment(1);
                        let (failures, since) =
                            store::delivery::failure_state(&self.pool, claimed).await?;
                        let delay = match after {
                            Some(after) => after,
                            None => backoff(failures, BACKOFF_CAP),
                        };
                        tracing::info!(subscription_id = %claimed.subscription_id, delay_ms = delay.as_millis() as u64, %reason, "delivery will be retried");
                        let next_attempt_at = now + to_chrono(delay);
                        // A short blip retries quietly; a long outage is an incident.
                        let long_outage = failures + 1 >= FAILING_AFTER_ATTEMPTS
                            || since.is_some_and(|t| now - t >= to_chrono(FAILING_AFTER));
                        result.health = if long_outage {
                            Health::Failing {
                                next_attempt_at,
                                error: reason,
                            }
                        } else {
                            Health::Retry {
                                next_attempt_at,
                                error: reason,
                            }
                        };
                        return Ok(());
                    }
                    Disposition::AuthFailed { reason } => {
                        tracing::warn!(subscription_id = %claimed.subscription_id, %reason, "destination failing; events stay queued");
                        result.health = self.failing(claimed, now, reason).await?;
                        return Ok(());
                    }
                    Disposition::PartialAccept { accepted, reason } => {
                        let accepted = accepted.min(ids.len());
                        result.delivered.extend(&ids[..accepted]);
                        if let Some(bad) = ids.get(accepted) {
                            result.parked.push((*bad, reason));
                        }
                        let rest: Vec<(i64, AuditLog)> = ids
                            .iter()
                            .skip(accepted + 1)
                            .filter_map(|id| group.iter().find(|(g, _)| g == id).cloned())
                            .collect();
                        if !rest.is_empty() {
                            groups.push_front(rest);
                        }
                    }
                    Disposition::Gone { reason } => {
                        tracing::warn!(subscription_id = %claimed.subscription_id, %reason, "destination is gone; export turned off");
                        result.disable = Some(reason.clone());
                        result.health = self.failing(claimed, now, reason).await?;
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs passes on every notification and sweep until `shutdown` turns true. A batch in
    /// flight is finished (or, if its send outlives the grace period, its lease expires).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let (wake_tx, wake_rx) = watch::channel(0u64);
        let listener = tokio::spawn(listen(self.pool.clone(), wake_tx, shutdown.clone()));
        let mut loops = Vec::new();
        for _ in 0..self.options.concurrency.max(1) {
            let me = self.clone();
            let mut wake = wake_rx.clone();
            let mut stop = shutdown.clone();
            loops.push(tokio::spawn(async move {
                loop {
                    if *stop.borrow() {
                        break;
                    }
                    match me.serve_one(Utc::now()).await {
                        Ok(Some(_)) => continue,
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = ?e, "forwarder pass failed; retrying"),
                    }
                    tokio::select! {
                        _ = wake.changed() => {},
                        _ = tokio::time::sleep(me.options.sweep) => {},
                        _ = stop.changed() => {},
                    }
                }
            }));
        }
        if let Some(notifier) = self.notifier.clone() {
            let mut stop = shutdown.clone();
            let sweep = self.options.sweep.min(Duration::from_secs(5));
            loops.push(tokio::spawn(async move {
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
            }));
        }
        tracing::info!(owner = %self.owner, concurrency = self.options.concurrency, "forwarder running");
        let _ = shutdown.wait_for(|stop| *stop).await;
        for handle in loops {
            let _ = handle.await;
        }
        listener.abort();
        tracing::info!("forwarder stopped");
    }
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

fn to_audit_log(event: &QueuedEvent, subscription_id: Uuid) -> Option<AuditLog> {
    let event_id = u32::try_from(event.event_id)
        .ok()
        .and_then(|id| EventId::parse(id).ok())?;
    Some(AuditLog {
        uuid: event.event_uuid,
        subscription_id,
        event_id,
        occurred_at: event.occurred_at,
        recorded_at: event.recorded_at,
        actor: event.actor.clone(),
        details: event.details.clone(),
    })
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
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(300))
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
