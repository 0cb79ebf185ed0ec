//! The sequencer: moves ingested events from the inbox into the log.
//!
//! Ingest ([`crate::store::events::record`]) numbers events itself when nobody else holds the
//! subscription; otherwise it is one plain insert into the inbox and wakes this process's
//! sequencer after commit ([`Sequencer::recorded`], memory only). The sequencer takes each woken
//! subscription's waiting events in batches ([`crate::store::events::sequence_batch`]), each
//! batch one transaction fenced by the subscription's counter row lock, which also notifies
//! the forwarders once per batch.
//!
//! Every `serve` and `worker` process runs one. Processes coordinate only through the row
//! lock: a sequencer that finds a subscription held by another waits up to 100 ms, then
//! tries again shortly. A sweep finds what no wake-up announced (events ingested by another process, or
//! left by a crash between ingest and sequencing) every [`SWEEP`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::store::events::{
    announce, sequence_batch, waiting_subscriptions, Recorded, Sequenced, SEQUENCER_BATCH,
};

/// How often the inbox is swept for subscriptions no wake-up announced.
pub const SWEEP: Duration = Duration::from_millis(500);
/// Subscriptions sequenced at once (each its own transactions).
pub const CONCURRENCY: usize = 4;
/// The wait before a subscription held by another sequencer is tried again.
const RETRY_BUSY: Duration = Duration::from_millis(25);
/// The wait before a subscription whose sequencing failed (database error) is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(1);

/// Called after each batch that moved events (this process's page cache drops the
/// subscription's pages).
pub type OnBatch = Arc<dyn Fn(Uuid) + Send + Sync>;

/// The handle ingest wakes; cheap to clone.
#[derive(Clone, Default)]
pub struct Sequencer {
    inner: Arc<Wakes>,
}

#[derive(Default)]
struct Wakes {
    due: Mutex<HashSet<Uuid>>,
    notify: Notify,
    /// Subscriptions with an announcement in flight, and whether another is owed after it.
    announcing: Mutex<HashMap<Uuid, bool>>,
}

impl Sequencer {
    /// Asks for the subscription's waiting events to be sequenced (after its ingest committed).
    pub fn wake(&self, subscription_id: Uuid) {
        self.inner
            .due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(subscription_id);
        self.inner.notify.notify_one();
    }

    /// What ingest does after its commit: announces events already in the log (outside the
    /// write, in the background), or wakes the sequencer for events left in the inbox.
    pub fn recorded(&self, pool: &PgPool, subscription_id: Uuid, recorded: &Recorded) {
        if recorded.in_log {
            // One announcement in flight per subscription: requests committed meanwhile are
            // covered by one more after it (NOTIFY serialises on a cluster-wide lock).
            {
                let mut announcing = self
                    .inner
                    .announcing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(again) = announcing.get_mut(&subscription_id) {
                    *again = true;
                    return;
                }
                announcing.insert(subscription_id, false);
            }
            let (pool, me) = (pool.clone(), self.clone());
            tokio::spawn(async move {
                loop {
                    if let Err(err) = announce(&pool, subscription_id).await {
                        // The forwarders' sweep and the pages' next change catch up.
                        tracing::warn!(subscription = %subscription_id, error = %err, "new events could not be announced");
                    }
                    let mut announcing = me
                        .inner
                        .announcing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    match announcing.get_mut(&subscription_id) {
                        Some(again) if *again => *again = false,
                        _ => {
                            announcing.remove(&subscription_id);
                            return;
                        }
                    }
                }
            });
        } else if recorded.accepted > 0 {
            self.wake(subscription_id);
        }
    }

    fn take_due(&self, running: &HashSet<Uuid>, room: usize) -> Vec<Uuid> {
        let mut due = self.inner.due.lock().unwrap_or_else(|p| p.into_inner());
        let picked: Vec<Uuid> = due
            .iter()
            .filter(|s| !running.contains(s))
            .take(room)
            .copied()
            .collect();
        for s in &picked {
            due.remove(s);
        }
        picked
    }

    /// Sequences until `stop` turns true; finishes the batches in flight.
    pub async fn run(self, pool: PgPool, on_batch: OnBatch, mut stop: watch::Receiver<bool>) {
        let mut running: HashSet<Uuid> = HashSet::new();
        let mut tasks: JoinSet<(Uuid, Option<Duration>)> = JoinSet::new();
        if *stop.borrow() {
            return;
        }
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            for sub in self.take_due(&running, CONCURRENCY.saturating_sub(tasks.len())) {
                running.insert(sub);
                let (pool, on_batch, stop) = (pool.clone(), on_batch.clone(), stop.clone());
                tasks.spawn(async move { (sub, drain(&pool, sub, &on_batch, &stop).await) });
            }
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok((sub, again)) = done {
                        running.remove(&sub);
                        if let Some(after) = again {
                            let me = self.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                me.wake(sub);
                            });
                        }
                    } else {
                        // A panicked task: forget what ran; the sweep finds its work again.
                        running.clear();
                    }
                }
                () = self.inner.notify.notified() => {}
                _ = sweep.tick() => {
                    match waiting_subscriptions(&pool).await {
                        Ok(subs) => {
                            for sub in subs {
                                self.wake(sub);
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "the sequencer could not sweep the inbox"),
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        // What was accepted while stopping: numbered now rather than at the next start (or by
        // another process's sweep). Bounded: one batch per subscription.
        if let Ok(subs) = waiting_subscriptions(&pool).await {
            for sub in subs {
                if let Ok(done) = sequence_batch(&pool, sub, SEQUENCER_BATCH).await {
                    if done.sequenced > 0 {
                        on_batch(sub);
                    }
                }
            }
        }
    }
}

/// Sequences one subscription's waiting events until none is left; when it must be tried
/// again (held by another sequencer, or a database error), after how long.
async fn drain(
    pool: &PgPool,
    subscription_id: Uuid,
    on_batch: &OnBatch,
    stop: &watch::Receiver<bool>,
) -> Option<Duration> {
    loop {
        if *stop.borrow() {
            return None;
        }
        match sequence_batch(pool, subscription_id, SEQUENCER_BATCH).await {
            Ok(Sequenced { busy: true, .. }) => return Some(RETRY_BUSY),
            Ok(done) => {
                if done.sequenced > 0 {
                    metrics::counter!("cloudpki_events_sequenced_total").increment(done.sequenced);
                    on_batch(subscription_id);
                }
                if done.duplicates > 0 {
                    metrics::counter!("cloudpki_events_duplicates_dropped_total")
                        .increment(done.duplicates);
                }
                if !done.more {
                    return None;
                }
            }
            Err(err) => {
                // Ingest goes on answering 202; the events wait in the inbox, and the
                // metric below is what to alert on.
                metrics::counter!("cloudpki_sequencer_failures_total").increment(1);
                tracing::error!(subscription = %subscription_id, error = %err, "sequencing failed; retrying in 1 s");
                return Some(RETRY_FAILED);
            }
        }
    }
}
