//! The heartbeat log: one record per enabled destination and period.

use tracing::Instrument as _;

use super::*;
use crate::settings::DestinationError;

impl Forwarder {
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
        for (dest, provider, last_sequence) in due {
            let (me, permits) = (self.clone(), permits.clone());
            let span = tracing::info_span!(
                "heartbeat",
                subscription_id = %dest.subscription_id,
                destination = %dest.number,
                %provider
            );
            sends.spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    me.send_heartbeat(dest, &provider, last_sequence, now).await
                }
                .instrument(span),
            );
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

    pub(super) async fn send_heartbeat(
        &self,
        dest: crate::domain::destination::DestinationKey,
        provider: &str,
        last_sequence: i64,
        now: DateTime<Utc>,
    ) -> bool {
        let subscription_id = dest.subscription_id;
        let destination = match self.destination(dest, provider).await {
            Ok(d) => d,
            Err(DestinationError::Unusable(reason)) => {
                tracing::warn!(%subscription_id, %provider, %reason, "heartbeat not sent: the destination cannot be built");
                return false;
            }
            Err(DestinationError::Store(e)) => {
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
}

/// Heartbeats sent at once per process.
pub(super) const HEARTBEAT_CONCURRENCY: usize = 16;
