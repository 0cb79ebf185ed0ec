//! The delivery queue and each destination's delivery state.
//!
//! A worker *claims a destination* (a lease on its `delivery_destinations` row, taken with
//! `for update skip locked` in a statement of its own), reads up to a batch of its pending
//! events, commits, and only then calls the SIEM. The outcome is written in one transaction
//! guarded by the lease owner, so a worker that lost its lease cannot overwrite another's work.
//! Because a destination is held by one worker at a time and every pending row is read (not
//! "rows after a cursor"), events that commit out of id order are never skipped. Destinations
//! are claimed by `next_attempt_at`, and a served destination goes to the back of that order, so
//! a large backlog or a dead destination does not delay the others. Every timestamp comes from
//! the caller, so tests can drive time.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Error;

/// A destination a worker holds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    /// Subscription.
    pub subscription_id: Uuid,
    /// Provider id.
    pub provider: String,
    /// Queue rows a previous holder had in flight and never finished (it died mid-send).
    pub inflight_ids: Vec<i64>,
}

/// A queued event with its delivery row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedEvent {
    /// Queue row id.
    pub queue_id: i64,
    /// `EventUuid`.
    pub event_uuid: Uuid,
    /// Catalog id.
    pub event_id: i32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who.
    pub actor: Option<String>,
    /// Details.
    pub details: Value,
    /// A previous worker died while sending it.
    pub was_in_flight: bool,
}

/// Makes sure a destination row exists, and makes it due now (a saved change may fix it).
pub async fn ensure_destination(
    tx: &mut Transaction<'_, Postgres>,
    subscription_id: Uuid,
    provider: &str,
) -> Result<(), Error> {
    sqlx::query(
        "insert into delivery_destinations (subscription_id, provider) values ($1, $2)
         on conflict on constraint delivery_destinations_pkey
         do update set next_attempt_at = now(), consecutive_failures = 0, disabled_reason = null",
    )
    .bind(subscription_id)
    .bind(provider)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Leases the destination that has waited longest among those with due pending work.
pub async fn claim_destination(
    pool: &PgPool,
    owner: Uuid,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> Result<Option<Claimed>, Error> {
    Ok(sqlx::query_as::<_, Claimed>(
        "update delivery_destinations d
         set leased_until = $2::timestamptz + $3, lease_owner = $1
         where (d.subscription_id, d.provider) = (
            select c.subscription_id, c.provider
            from delivery_destinations c
            join siem_settings s
              on s.subscription_id = c.subscription_id and s.provider = c.provider and s.enabled
            where c.next_attempt_at <= $2
              and (c.leased_until is null or c.leased_until < $2)
              and exists (
                select 1 from delivery_queue q
                where q.subscription_id = c.subscription_id and q.provider = c.provider
                  and q.state = 'pending')
            order by c.next_attempt_at, c.subscription_id
            limit 1
            -- `no key update`: producers' foreign-key checks hold `key share` locks on this
            -- row while they commit; a plain `for update` would skip busy destinations.
            for no key update of c skip locked)
         returning d.subscription_id, d.provider, d.inflight_ids",
    )
    .bind(owner)
    .bind(now)
    .bind(lease)
    .fetch_optional(pool)
    .await?)
}

/// Reads up to `limit` pending events of a claimed destination, oldest first, and records them
/// as the destination's batch in flight. Reports which ones a dead holder had in flight
/// (possible duplicates).
pub async fn take_batch(
    pool: &PgPool,
    claimed: &Claimed,
    limit: i64,
) -> Result<Vec<QueuedEvent>, Error> {
    Ok(sqlx::query_as::<_, QueuedEvent>(
        "with batch as materialized (
            select q.id, q.event_uuid
            from delivery_queue q
            where q.subscription_id = $1 and q.provider = $2 and q.state = 'pending'
            order by q.id
            limit $3
         ), marked as (
            update delivery_destinations d
            set inflight_ids = coalesce((select array_agg(id) from batch), '{}')
            where d.subscription_id = $1 and d.provider = $2
         )
         select b.id as queue_id, b.event_uuid, e.event_id, e.occurred_at, e.recorded_at,
                e.actor, e.details, b.id = any($4) as was_in_flight
         from batch b join audit_events e on e.id = b.event_uuid
         order by b.id",
    )
    .bind(claimed.subscription_id)
    .bind(&claimed.provider)
    .bind(limit)
    .bind(&claimed.inflight_ids)
    .fetch_all(pool)
    .await?)
}

/// What happened to a batch, to be written back.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Accepted by the SIEM.
    pub delivered: Vec<i64>,
    /// Refused for good, with the reason shown in the portal.
    pub parked: Vec<(i64, String)>,
    /// Resent although a dead worker may have sent them already.
    pub duplicates: i64,
    /// How the destination fares.
    pub health: Health,
    /// The destination said it is gone for good: turn export off with this reason.
    pub disable: Option<String>,
}

/// The destination's state after a batch.
#[derive(Debug, Default)]
pub enum Health {
    /// The SIEM answered; go on.
    #[default]
    Healthy,
    /// Transient trouble: not before `next_attempt_at`.
    Retry {
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
        /// Plain-language cause.
        error: String,
    },
    /// The destination is misconfigured (key, URL): failing until a delivery succeeds.
    Failing {
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
        /// Plain-language cause.
        error: String,
    },
}

/// Writes a batch's outcome and releases the destination, if this worker still holds it.
/// Returns `false` when the lease was lost (another worker took over; nothing was written).
pub async fn finish_batch(
    pool: &PgPool,
    claimed: &Claimed,
    owner: Uuid,
    now: DateTime<Utc>,
    result: &BatchResult,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let held: Option<i32> = sqlx::query_scalar(
        "select consecutive_failures from delivery_destinations
         where subscription_id = $1 and provider = $2 and lease_owner = $3
         for no key update",
    )
    .bind(claimed.subscription_id)
    .bind(&claimed.provider)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await?;
    if held.is_none() {
        return Ok(false);
    }
    if !result.delivered.is_empty() {
        sqlx::query("delete from delivery_queue where id = any($1)")
            .bind(&result.delivered)
            .execute(&mut *tx)
            .await?;
    }
    if !result.parked.is_empty() {
        let ids: Vec<i64> = result.parked.iter().map(|(id, _)| *id).collect();
        let reasons: Vec<String> = result.parked.iter().map(|(_, r)| r.clone()).collect();
        sqlx::query(
            "update delivery_queue q set state = 'parked',
                parked_reason = p.reason, parked_at = $3
             from unnest($1::bigint[], $2::text[]) as p(id, reason)
             where q.id = p.id",
        )
        .bind(&ids)
        .bind(&reasons)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }

    let delivered = result.delivered.len() as i64;
    let (outcome, detail) = match &result.health {
        Health::Healthy if result.parked.is_empty() => ("delivered", None),
        Health::Healthy => (
            "delivered",
            Some(format!(
                "{} event(s) parked: {}",
                result.parked.len(),
                result.parked[0].1
            )),
        ),
        Health::Retry { error, .. } => ("retrying", Some(error.clone())),
        Health::Failing { error, .. } => ("failing", Some(error.clone())),
    };
    sqlx::query(
        "insert into delivery_attempts (subscription_id, provider, at, outcome, events, detail)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(claimed.subscription_id)
    .bind(&claimed.provider)
    .bind(now)
    .bind(outcome)
    .bind(i32::try_from(delivered).unwrap_or(i32::MAX))
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    match &result.health {
        Health::Healthy => {
            sqlx::query(
                "update delivery_destinations set
                    leased_until = null, lease_owner = null, next_attempt_at = $3,
                    inflight_ids = '{}', status = 'healthy', consecutive_failures = 0, failing_since = null,
                    last_success_at = case when $4 > 0 then $3 else last_success_at end,
                    delivered_total = delivered_total + $4,
                    duplicates_total = duplicates_total + $5
                 where subscription_id = $1 and provider = $2",
            )
            .bind(claimed.subscription_id)
            .bind(&claimed.provider)
            .bind(now)
            .bind(delivered)
            .bind(result.duplicates)
            .execute(&mut *tx)
            .await?;
        }
        Health::Retry {
            next_attempt_at,
            error,
        }
        | Health::Failing {
            next_attempt_at,
            error,
        } => {
            let failing = matches!(result.health, Health::Failing { .. });
            sqlx::query(
                "update delivery_destinations set
                    leased_until = null, lease_owner = null, next_attempt_at = $3,
                    inflight_ids = '{}', consecutive_failures = consecutive_failures + 1,
                    last_error = $4, last_error_at = $5,
                    status = case when $6 then 'failing' else status end,
                    failing_since = coalesce(failing_since, $5),
                    last_success_at = case when $7 > 0 then $5 else last_success_at end,
                    delivered_total = delivered_total + $7,
                    duplicates_total = duplicates_total + $8
                 where subscription_id = $1 and provider = $2",
            )
            .bind(claimed.subscription_id)
            .bind(&claimed.provider)
            .bind(next_attempt_at)
            .bind(error)
            .bind(now)
            .bind(failing)
            .bind(delivered)
            .bind(result.duplicates)
            .execute(&mut *tx)
            .await?;
        }
    }
    if let Some(reason) = &result.disable {
        sqlx::query(
            "update delivery_destinations set disabled_reason = $3
             where subscription_id = $1 and provider = $2",
        )
        .bind(claimed.subscription_id)
        .bind(&claimed.provider)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update siem_settings set enabled = false where subscription_id = $1 and provider = $2",
        )
        .bind(claimed.subscription_id)
        .bind(&claimed.provider)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into siem_settings_history (subscription_id, user_id, user_email, outcome, changes)
             values ($1, null, 'cloudpki', 'saved', $2)",
        )
        .bind(claimed.subscription_id)
        .bind(serde_json::json!([format!("Send Audit Logs to SIEM turned off: {reason}")]))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Releases a destination without touching its events (shutdown before sending).
pub async fn release(pool: &PgPool, claimed: &Claimed, owner: Uuid) -> Result<(), Error> {
    // The batch in flight stays recorded: it may have reached the SIEM.
    sqlx::query(
        "update delivery_destinations set leased_until = null, lease_owner = null
         where subscription_id = $1 and provider = $2 and lease_owner = $3",
    )
    .bind(claimed.subscription_id)
    .bind(&claimed.provider)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// How long a destination has been failing: consecutive failures, and since when.
pub async fn failure_state(
    pool: &PgPool,
    claimed: &Claimed,
) -> Result<(i32, Option<DateTime<Utc>>), Error> {
    Ok(sqlx::query_as(
        "select consecutive_failures, failing_since from delivery_destinations
         where subscription_id = $1 and provider = $2",
    )
    .bind(claimed.subscription_id)
    .bind(&claimed.provider)
    .fetch_one(pool)
    .await?)
}

/// Backlog figures of one destination.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Backlog {
    /// Subscription.
    pub subscription_id: Uuid,
    /// Provider.
    pub provider: String,
    /// Pending events.
    pub pending: i64,
    /// Parked events.
    pub parked: i64,
    /// When the oldest pending event was queued.
    pub oldest_pending: Option<DateTime<Utc>>,
}

/// Backlog of every destination (metrics).
pub async fn backlogs(pool: &PgPool) -> Result<Vec<Backlog>, Error> {
    Ok(sqlx::query_as::<_, Backlog>(
        "select d.subscription_id, d.provider,
            count(q.id) filter (where q.state = 'pending') as pending,
            count(q.id) filter (where q.state = 'parked') as parked,
            min(q.enqueued_at) filter (where q.state = 'pending') as oldest_pending
         from delivery_destinations d
         left join delivery_queue q on q.subscription_id = d.subscription_id and q.provider = d.provider
         group by d.subscription_id, d.provider",
    )
    .fetch_all(pool)
    .await?)
}

/// The panel counts waiting events exactly up to this many ("more than" beyond).
pub const PENDING_COUNT_CAP: i64 = 10_000;

/// Everything the delivery health panel shows about one destination.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DestinationHealth {
    /// `healthy` or `failing`.
    pub status: String,
    /// Last accepted batch.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last error, in plain words.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Start of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    /// Events delivered, ever.
    pub delivered_total: i64,
    /// Possible duplicates sent after a worker died.
    pub duplicates_total: i64,
    /// Events that expired undelivered.
    pub expired_total: i64,
    /// Events waiting.
    pub pending: i64,
    /// When the oldest waiting event was queued.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Events refused by the SIEM.
    pub parked: i64,
    /// Next attempt (backoff).
    pub next_attempt_at: DateTime<Utc>,
}

/// The health of a subscription's destination for `provider`, if it was ever enabled.
pub async fn health(
    pool: &PgPool,
    subscription_id: Uuid,
    provider: &str,
) -> Result<Option<DestinationHealth>, Error> {
    Ok(sqlx::query_as::<_, DestinationHealth>(
        "select d.status, d.last_success_at, d.last_error, d.last_error_at, d.failing_since,
                d.delivered_total, d.duplicates_total, d.expired_total, d.next_attempt_at,
                -- counted up to a cap, so the page costs the same whatever the backlog
                (select count(*) from (select 1 from delivery_queue q
                    where q.subscription_id = d.subscription_id and q.provider = d.provider
                      and q.state = 'pending' limit $3) capped) as pending,
                -- queue ids grow with time: the first pending row is the oldest
                (select q.enqueued_at from delivery_queue q where q.subscription_id = d.subscription_id
                    and q.provider = d.provider and q.state = 'pending'
                    order by q.id limit 1) as oldest_pending,
                (select count(*) from delivery_queue q where q.subscription_id = d.subscription_id
                    and q.provider = d.provider and q.state = 'parked') as parked
         from delivery_destinations d where d.subscription_id = $1 and d.provider = $2",
    )
    .bind(subscription_id)
    .bind(provider)
    .bind(PENDING_COUNT_CAP + 1)
    .fetch_optional(pool)
    .await?)
}

/// A parked event, for the panel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParkedRow {
    /// `EventUuid`.
    pub event_uuid: Uuid,
    /// Catalog id.
    pub event_id: i32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Why the SIEM refused it.
    pub reason: String,
}

/// The most recently parked events.
pub async fn parked(
    pool: &PgPool,
    subscription_id: Uuid,
    provider: &str,
    limit: i64,
) -> Result<Vec<ParkedRow>, Error> {
    Ok(sqlx::query_as::<_, ParkedRow>(
        "select q.event_uuid, e.event_id, e.occurred_at, coalesce(q.parked_reason, '') as reason
         from delivery_queue q join audit_events e on e.id = q.event_uuid
         where q.subscription_id = $1 and q.provider = $2 and q.state = 'parked'
         order by q.parked_at desc, q.id desc limit $3",
    )
    .bind(subscription_id)
    .bind(provider)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// One delivery attempt, for the panel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    /// When.
    pub at: DateTime<Utc>,
    /// `delivered`, `retrying` or `failing`.
    pub outcome: String,
    /// Events delivered by it.
    pub events: i32,
    /// Error or note.
    pub detail: Option<String>,
}

/// The latest delivery attempts.
pub async fn attempts(
    pool: &PgPool,
    subscription_id: Uuid,
    provider: &str,
    limit: i64,
) -> Result<Vec<AttemptRow>, Error> {
    Ok(sqlx::query_as::<_, AttemptRow>(
        "select at, outcome, events, detail from delivery_attempts
         where subscription_id = $1 and provider = $2 order by at desc, id desc limit $3",
    )
    .bind(subscription_id)
    .bind(provider)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// A gap record, for the panel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GapSummary {
    /// How many events expired.
    pub expired_events: i64,
    /// Oldest event time.
    pub oldest_event_at: DateTime<Utc>,
    /// Newest event time.
    pub newest_event_at: DateTime<Utc>,
    /// When they expired.
    pub recorded_at: DateTime<Utc>,
}

/// The latest gap records.
pub async fn gaps(
    pool: &PgPool,
    subscription_id: Uuid,
    provider: &str,
    limit: i64,
) -> Result<Vec<GapSummary>, Error> {
    Ok(sqlx::query_as::<_, GapSummary>(
        "select expired_events, oldest_event_at, newest_event_at, recorded_at from delivery_gaps
         where subscription_id = $1 and provider = $2 order by recorded_at desc, id desc limit $3",
    )
    .bind(subscription_id)
    .bind(provider)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Puts every parked event of a destination back in the queue, due now; returns how many.
pub async fn retry_parked(
    pool: &PgPool,
    subscription_id: Uuid,
    provider: &str,
) -> Result<u64, Error> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "update delivery_queue set state = 'pending', parked_reason = null, parked_at = null
         where subscription_id = $1 and provider = $2 and state = 'parked'",
    )
    .bind(subscription_id)
    .bind(provider)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("update delivery_destinations set next_attempt_at = now() where subscription_id = $1 and provider = $2")
        .bind(subscription_id)
        .bind(provider)
        .execute(&mut *tx)
        .await?;
    sqlx::query("select pg_notify($1, $2)")
        .bind(super::events::EVENTS_CHANNEL)
        .bind(subscription_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// A recent email of a subscription, for the panel.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationSummary {
    /// Kind.
    pub kind: String,
    /// Address.
    pub recipient: String,
    /// Queued at.
    pub created_at: DateTime<Utc>,
    /// `smtp`, `logged`, or none yet.
    pub sent_via: Option<String>,
    /// Last sending error.
    pub last_error: Option<String>,
}

/// The latest emails about a subscription.
pub async fn notifications(
    pool: &PgPool,
    subscription_id: Uuid,
    limit: i64,
) -> Result<Vec<NotificationSummary>, Error> {
    Ok(sqlx::query_as::<_, NotificationSummary>(
        "select kind, recipient, created_at, sent_via, last_error from notifications
         where subscription_id = $1 order by created_at desc, id desc limit $2",
    )
    .bind(subscription_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Pending events of a subscription's other destinations (a provider it no longer uses).
pub async fn stranded(
    pool: &PgPool,
    subscription_id: Uuid,
    current_provider: &str,
) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(
        "select provider, count(*) from delivery_queue
         where subscription_id = $1 and provider <> $2 and state = 'pending'
         group by provider order by provider",
    )
    .bind(subscription_id)
    .bind(current_provider)
    .fetch_all(pool)
    .await?)
}
