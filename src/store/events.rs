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

/// A recorded event as the Events page lists it, with what the current destination knows of
/// it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentEvent {
    pub seq: i64,
    pub id: Uuid,
    pub event_id: i32,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: Option<String>,
    /// `parked` or `retry` when the destination has a row for it.
    pub parked_state: Option<String>,
    pub parked_reason: Option<String>,
}

/// The destination facts the states of recent events come from (cursor arithmetic).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DestinationCursor {
    pub cursor: i64,
    pub off_at_seq: Option<i64>,
    pub paused: bool,
    pub send_event_ids: Option<Vec<i32>>,
    /// The latest window recorded while export was off (not owed, not sent).
    pub unsent_from_seq: Option<i64>,
    pub unsent_to_seq: Option<i64>,
}

/// The latest events of a subscription below `$3` (a `seq`; null: the newest), with the parked
/// rows of destination `$2`: a backward index range scan of `audit_events_pkey`.
pub const RECENT_SQL: &str = "
    select e.seq, e.id, e.event_id, e.occurred_at, e.recorded_at, e.actor,
           p.state as parked_state, p.reason as parked_reason
    from audit_events e
    left join delivery_parked p
      on p.subscription_id = e.subscription_id and p.provider = $2 and p.seq = e.seq
    where e.subscription_id = $1 and e.seq < coalesce($3::bigint, 9223372036854775807)
      and ($4::int[] is null)
    order by e.seq desc limit $5";

/// [`RECENT_SQL`] for the Event IDs `$4` only. With `audit_events_event_id_idx` the planner,
/// knowing the wanted IDs, reads a rare Event ID's events by index instead of walking the whole
/// log backwards; a common one is still found fastest by walking the newest events.
pub const RECENT_FILTERED_SQL: &str = "
    select e.seq, e.id, e.event_id, e.occurred_at, e.recorded_at, e.actor,
           p.state as parked_state, p.reason as parked_reason
    from audit_events e
    left join delivery_parked p
      on p.subscription_id = e.subscription_id and p.provider = $2 and p.seq = e.seq
    where e.subscription_id = $1 and e.seq < coalesce($3::bigint, 9223372036854775807)
      and e.event_id = any($4::int[])
    order by e.seq desc limit $5";

/// The latest events of a subscription, newest first: `limit` of them below `before` (a
/// `seq`), only these Event IDs when `event_ids` is given; with the parked rows of
/// `provider`'s destination and that destination's cursor.
pub async fn recent(
    pool: &PgPool,
    subscription_id: Uuid,
    provider: &str,
    before: Option<i64>,
    event_ids: Option<&[i32]>,
    limit: i64,
) -> Result<(Vec<RecentEvent>, Option<DestinationCursor>), Error> {
    let sql = if event_ids.is_some() {
        RECENT_FILTERED_SQL
    } else {
        RECENT_SQL
    };
    let events = sqlx::query_as::<_, RecentEvent>(sql)
        .bind(subscription_id)
        .bind(provider)
        .bind(before)
        .bind(event_ids)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let cursor = sqlx::query_as::<_, DestinationCursor>(
        "select cursor, off_at_seq, paused_reason is not null as paused, send_event_ids,
                unsent_from_seq, unsent_to_seq
         from delivery_destinations where subscription_id = $1 and provider = $2",
    )
    .bind(subscription_id)
    .bind(provider)
    .fetch_optional(pool)
    .await?;
    Ok((events, cursor))
}

/// Records a batch all-or-nothing: the events get the subscription's next `seq` numbers, in
/// request order, under the subscription's counter row lock, so `seq` order is commit order and
/// has no gaps. Ids are idempotency keys within the subscription: an id it already used (or one
/// repeated within the request) is a duplicate and gets no number. Each new event's place in
/// the hash chain (`PrevHash`, `Hash`, see [`crate::chain`]) is computed here, under the lock,
/// and stored with it. The forwarder is notified at commit when an enabled destination will
/// read the new events.
pub async fn record(
    pool: &PgPool,
    subscription_id: Uuid,
    events: &[NewEvent],
) -> Result<Recorded, Error> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let mut tx = pool.begin().await?;
    // The counter lock, in a statement of its own: the statements below then run on snapshots
    // taken after any earlier writer of this subscription committed, so the duplicate check
    // sees every id already stored.
    let (base, last_hash): (i64, Option<Vec<u8>>) = sqlx::query_as(
        "select last_seq, last_hash from subscriptions where id = $1 for no key update",
    )
    .bind(subscription_id)
    .fetch_one(&mut *tx)
    .await?;
    let stored: Vec<Uuid> = sqlx::query_scalar(
        "select id from audit_events where subscription_id = $1 and id = any($2)",
    )
    .bind(subscription_id)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut seen: std::collections::HashSet<Uuid> = stored.into_iter().collect();
    let fresh: Vec<&NewEvent> = events.iter().filter(|e| seen.insert(e.id)).collect();
    let duplicates = (events.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(Recorded {
            accepted: 0,
            duplicates,
            last_seq: base,
        });
    }

    let mut prev = last_hash.map_or_else(|| crate::chain::GENESIS.to_owned(), hex::encode);
    let n = fresh.len();
    let (mut seqs, mut prevs, mut hashes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, e) in fresh.iter().enumerate() {
        let seq = base + 1 + i as i64;
        // The time as every log carries it (milliseconds), from the value the database keeps.
        let occurred = crate::siem::wire::rfc3339(stored_time(e.occurred_at));
        let hash = crate::chain::hash(
            &prev,
            &crate::chain::Link {
                actor: e.actor.as_deref(),
                event_id: e.event_id,
                event_uuid: e.id,
                occurred_at: &occurred,
                sequence: seq,
                subscription_id,
                details: &e.details,
            },
        );
        seqs.push(seq);
        prevs.push(hex::decode(&prev).unwrap_or_default());
        hashes.push(hex::decode(&hash).unwrap_or_default());
        prev = hash;
    }
    let last_seq = base + n as i64;
    sqlx::query(
        "with inserted as (
            insert into audit_events
                (subscription_id, seq, id, event_id, occurred_at, actor, details, prev_hash, hash)
            select $1, t.* from unnest($2::bigint[], $3::uuid[], $4::int[], $5::timestamptz[],
                                       $6::text[], $7::jsonb[], $8::bytea[], $9::bytea[]) as t
            returning 1
         ), bumped as (
            update subscriptions set last_seq = $10, last_hash = $11 where id = $1
         )
         -- delivered to listeners at commit, so the forwarder never wakes before the rows
         select pg_notify($12, $1::text)
         where exists (select 1 from siem_settings s where s.subscription_id = $1 and s.enabled)
           and (select count(*) from inserted) > 0",
    )
    .bind(subscription_id)
    .bind(&seqs)
    .bind(fresh.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(fresh.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(fresh.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(fresh.iter().map(|e| e.actor.clone()).collect::<Vec<_>>())
    .bind(fresh.iter().map(|e| e.details.clone()).collect::<Vec<_>>())
    .bind(&prevs)
    .bind(&hashes)
    .bind(last_seq)
    .bind(hashes.last().cloned())
    .bind(EVENTS_CHANNEL)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Recorded {
        accepted: n as u64,
        // Ids already stored, and ids repeated within this request.
        duplicates,
        last_seq,
    })
}

/// A time as PostgreSQL stores it (`timestamptz`: microseconds), so a hash computed before the
/// insert matches the log built from the row.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}
