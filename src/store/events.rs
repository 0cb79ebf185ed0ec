//! Ingestion tokens and recorded audit events.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;

/// Channel the forwarder listens on; the payload is the subscription id.
pub const EVENTS_CHANNEL: &str = "cloudpki_events";

/// An event to record, already validated.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Idempotency key and `EventUuid`.
    pub id: Uuid,
    /// A catalog event id.
    pub event_id: i32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who did it.
    pub actor: Option<String>,
    /// Free-form details (a JSON object).
    pub details: Value,
}

/// What recording a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Newly stored events.
    pub accepted: u64,
    /// Events whose id was already stored for this subscription (retries).
    pub duplicates: u64,
    /// Delivery entries queued (events × enabled destinations).
    pub queued: u64,
}

/// Recording failed because of the request, not the database.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Some ids already belong to events of another subscription.
    #[error("event id {0} is already used by another event; use a new UUID")]
    IdTaken(Uuid),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(Error::Database(e))
    }
}

/// Stores a new ingestion token (its digest) and returns the token's id.
pub async fn create_token(
    pool: &PgPool,
    subscription_id: Uuid,
    digest: &[u8],
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    sqlx::query("insert into api_tokens (id, subscription_id, token_digest) values ($1, $2, $3)")
        .bind(id)
        .bind(subscription_id)
        .bind(digest)
        .execute(pool)
        .await?;
    Ok(id)
}

/// Revokes a token; `false` when no live token has this id.
pub async fn revoke_token(pool: &PgPool, token_id: Uuid) -> Result<bool, Error> {
    let n = sqlx::query(
        "update api_tokens set revoked_at = now() where id = $1 and revoked_at is null",
    )
    .bind(token_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The subscription of a live token.
pub async fn token_subscription(pool: &PgPool, digest: &[u8]) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "select subscription_id from api_tokens where token_digest = $1 and revoked_at is null",
    )
    .bind(digest)
    .fetch_optional(pool)
    .await?)
}

/// Records a batch all-or-nothing: the events, one delivery entry per destination enabled right
/// now, and a notification for the forwarder, in one transaction.
pub async fn record(
    pool: &PgPool,
    subscription_id: Uuid,
    events: &[NewEvent],
) -> Result<Recorded, RecordError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let event_ids: Vec<i32> = events.iter().map(|e| e.event_id).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let actors: Vec<Option<String>> = events.iter().map(|e| e.actor.clone()).collect();
    let details: Vec<Value> = events.iter().map(|e| e.details.clone()).collect();

    let mut tx = pool.begin().await?;
    let taken: Option<Uuid> = sqlx::query_scalar(
        "select id from audit_events where id = any($1) and subscription_id <> $2 limit 1",
    )
    .bind(&ids)
    .bind(subscription_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = taken {
        return Err(RecordError::IdTaken(id));
    }
    let (accepted, queued): (i64, i64) = sqlx::query_as(
        "with input as (
            select * from unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::jsonb[])
                as t(id, event_id, occurred_at, actor, details)
         ), inserted as (
            insert into audit_events (id, subscription_id, event_id, occurred_at, actor, details)
            select id, $6, event_id, occurred_at, actor, details from input
            on conflict (id) do nothing
            returning id
         ), queued as (
            insert into delivery_queue (event_uuid, subscription_id, provider)
            select i.id, d.subscription_id, d.provider
            from inserted i
            cross join delivery_destinations d
            join siem_settings s
              on s.subscription_id = d.subscription_id and s.provider = d.provider and s.enabled
            where d.subscription_id = $6
            returning 1
         )
         select (select count(*) from inserted), (select count(*) from queued)",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&occurred)
    .bind(&actors)
    .bind(&details)
    .bind(subscription_id)
    .fetch_one(&mut *tx)
    .await?;
    if queued > 0 {
        // Delivered to listeners at commit, so the forwarder never wakes before the rows exist.
        sqlx::query("select pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(subscription_id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    let accepted = u64::try_from(accepted).unwrap_or_default();
    Ok(Recorded {
        accepted,
        // Ids already stored, and ids repeated within this request.
        duplicates: (ids.len() as u64).saturating_sub(accepted),
        queued: u64::try_from(queued).unwrap_or_default(),
    })
}
