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
    /// The subscription's last `seq` after this batch.
    pub last_seq: i64,
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

/// The subscription of a live token. Notes its use, at most once a minute (one round trip; no
/// write on the hot path otherwise).
pub async fn token_subscription(pool: &PgPool, digest: &[u8]) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "with token as (
             select id, subscription_id, last_used_at from api_tokens
             where token_digest = $1 and revoked_at is null
         ), used as (
             update api_tokens set last_used_at = now()
             where id = (select id from token)
               and (last_used_at is null or last_used_at < now() - interval '1 minute')
         )
         select subscription_id from token",
    )
    .bind(digest)
    .fetch_optional(pool)
    .await?)
}

/// An ingestion token as the Tokens page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by_email: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Stores a named token created on the Tokens page.
pub async fn create_named_token(
    pool: &PgPool,
    subscription_id: Uuid,
    digest: &[u8],
    name: &str,
    created_by_email: &str,
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into api_tokens (id, subscription_id, token_digest, name, created_by_email)
         values ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(subscription_id)
    .bind(digest)
    .bind(name)
    .bind(created_by_email)
    .execute(pool)
    .await?;
    Ok(id)
}

/// The live tokens of a subscription, newest first.
pub async fn tokens(pool: &PgPool, subscription_id: Uuid) -> Result<Vec<TokenRow>, Error> {
    Ok(sqlx::query_as(
        "select id, name, created_at, created_by_email, last_used_at from api_tokens
         where subscription_id = $1 and revoked_at is null order by created_at desc",
    )
    .bind(subscription_id)
    .fetch_all(pool)
    .await?)
}

/// Revokes a token of this subscription; whether a live one was revoked.
pub async fn revoke_subscription_token(
    pool: &PgPool,
    subscription_id: Uuid,
    token_id: Uuid,
) -> Result<bool, Error> {
    let n = sqlx::query(
        "update api_tokens set revoked_at = now()
         where id = $1 and subscription_id = $2 and revoked_at is null",
    )
    .bind(token_id)
    .bind(subscription_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Records a batch all-or-nothing: the events get the subscription's next `seq` numbers, in
/// request order, under the subscription's counter row lock, so `seq` order is commit order and
/// has no gaps. Ids are idempotency keys within the subscription: an id it already used (or one
/// repeated within the request) is a duplicate and gets no number. The forwarder is notified at
/// commit when an enabled destination will read the new events.
pub async fn record(
    pool: &PgPool,
    subscription_id: Uuid,
    events: &[NewEvent],
) -> Result<Recorded, Error> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let event_ids: Vec<i32> = events.iter().map(|e| e.event_id).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let actors: Vec<Option<String>> = events.iter().map(|e| e.actor.clone()).collect();
    let details: Vec<Value> = events.iter().map(|e| e.details.clone()).collect();

    let mut tx = pool.begin().await?;
    // The counter lock, in a statement of its own: the insert below then runs on a snapshot
    // taken after any earlier writer of this subscription committed, so its duplicate check
    // sees every id already stored.
    let base: i64 =
        sqlx::query_scalar("select last_seq from subscriptions where id = $1 for no key update")
            .bind(subscription_id)
            .fetch_one(&mut *tx)
            .await?;
    let (accepted, last_seq): (i64, i64) = sqlx::query_as(
        "with input as (
            select * from unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::jsonb[])
                with ordinality as t(id, event_id, occurred_at, actor, details, ord)
         ), fresh as (
            select distinct on (i.id) i.* from input i
            where not exists (
                select 1 from audit_events e where e.subscription_id = $6 and e.id = i.id)
            order by i.id, i.ord
         ), numbered as (
            select f.*, $7::bigint + row_number() over (order by f.ord) as seq from fresh f
         ), inserted as (
            insert into audit_events (subscription_id, seq, id, event_id, occurred_at, actor, details)
            select $6, seq, id, event_id, occurred_at, actor, details from numbered
            returning seq
         ), counted as (
            select count(*) as n, coalesce(max(seq), $7::bigint) as last from inserted
         ), bumped as (
            update subscriptions set last_seq = (select last from counted)
            where id = $6 and (select n from counted) > 0
         ), notified as (
            -- delivered to listeners at commit, so the forwarder never wakes before the rows
            select pg_notify($8, $6::text) where (select n from counted) > 0
              and exists (select 1 from siem_settings s where s.subscription_id = $6 and s.enabled)
         )
         select n, last from counted, (select count(*) from notified) as x",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&occurred)
    .bind(&actors)
    .bind(&details)
    .bind(subscription_id)
    .bind(base)
    .bind(EVENTS_CHANNEL)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let accepted = u64::try_from(accepted).unwrap_or_default();
    Ok(Recorded {
        accepted,
        // Ids already stored, and ids repeated within this request.
        duplicates: (ids.len() as u64).saturating_sub(accepted),
        last_seq,
    })
}
