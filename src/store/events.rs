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
    /// Events whose id was already stored or waiting for this subscription (retries).
    pub duplicates: u64,
    /// The events are in the log already (the uncontended path): the caller announces them
    /// with [`announce`] after commit. Otherwise they wait in the inbox for the sequencer.
    pub in_log: bool,
}

/// Stores a new ingestion token (its digest) and returns the token's id.
pub async fn create_token(
    pool: &PgPool,
    subscription_id: Uuid,
    digest: &[u8],
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "insert into api_tokens (id, subscription_id, token_digest) values ($1, $2, $3)",
        id,
        subscription_id,
        digest
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// Revokes a token; `false` when no live token has this id.
pub async fn revoke_token(pool: &PgPool, token_id: Uuid) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update api_tokens set revoked_at = now() where id = $1 and revoked_at is null",
        token_id
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The subscription of a live token. Notes its use, at most once a minute (one round trip; no
/// write on the hot path otherwise).
pub async fn token_subscription(pool: &PgPool, digest: &[u8]) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        "with token as (
             select id, subscription_id, last_used_at from api_tokens
             where token_digest = $1 and revoked_at is null
         ), used as (
             update api_tokens set last_used_at = now()
             where id = (select id from token)
               and (last_used_at is null or last_used_at < now() - interval '1 minute')
         )
         select subscription_id from token",
        digest
    )
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
    sqlx::query!(
        "insert into api_tokens (id, subscription_id, token_digest, name, created_by_email)
         values ($1, $2, $3, $4, $5)",
        id,
        subscription_id,
        digest,
        name,
        created_by_email
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// The live tokens of a subscription, newest first.
pub async fn tokens(pool: &PgPool, subscription_id: Uuid) -> Result<Vec<TokenRow>, Error> {
    Ok(sqlx::query_as!(
        TokenRow,
        "select id, name, created_at, created_by_email, last_used_at from api_tokens
         where subscription_id = $1 and revoked_at is null order by created_at desc",
        subscription_id
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes a token of this subscription; whether a live one was revoked.
pub async fn revoke_subscription_token(
    pool: &PgPool,
    subscription_id: Uuid,
    token_id: Uuid,
) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update api_tokens set revoked_at = now()
         where id = $1 and subscription_id = $2 and revoked_at is null",
        token_id,
        subscription_id
    )
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
/// rows of destination `$2`: a backward index range scan of `audit_events_pkey`. In a file so
/// that `recent` runs it checked at compile time and the plan tests read the same text.
pub const RECENT_SQL: &str = include_str!("sql/recent.sql");

/// [`RECENT_SQL`] for the Event IDs `$4` only. With `audit_events_event_id_idx` the planner,
/// knowing the wanted IDs, reads a rare Event ID's events by index instead of walking the whole
/// log backwards; a common one is still found fastest by walking the newest events.
pub const RECENT_FILTERED_SQL: &str = include_str!("sql/recent_filtered.sql");

/// The latest events of a subscription, newest first: `limit` of them below `before` (a
/// `seq`), only these Event IDs when `event_ids` is given; with the parked rows of
/// `provider`'s destination and that destination's cursor.
pub async fn recent(
    pool: &PgPool,
    dest: crate::domain::destination::DestinationKey,
    provider: &str,
    before: Option<i64>,
    event_ids: Option<&[i32]>,
    limit: i64,
) -> Result<(Vec<RecentEvent>, Option<DestinationCursor>), Error> {
    let subscription_id = dest.subscription_id;
    // The same files as RECENT_FILTERED_SQL and RECENT_SQL. `"parked_state?"` there: the
    // macros cannot see that the left join makes the column nullable.
    let events = if event_ids.is_some() {
        sqlx::query_file_as!(
            RecentEvent,
            "src/store/sql/recent_filtered.sql",
            subscription_id,
            provider,
            before,
            event_ids,
            limit,
            dest.no()
        )
        .fetch_all(pool)
        .await?
    } else {
        sqlx::query_file_as!(
            RecentEvent,
            "src/store/sql/recent.sql",
            subscription_id,
            provider,
            before,
            event_ids,
            limit,
            dest.no()
        )
        .fetch_all(pool)
        .await?
    };
    let cursor = sqlx::query_as!(
        DestinationCursor,
        r#"select cursor, off_at_seq, paused_reason is not null as "paused!", send_event_ids,
                  unsent_from_seq, unsent_to_seq
           from delivery_destinations
           where subscription_id = $1 and destination = $3 and provider = $2"#,
        subscription_id,
        provider,
        dest.no()
    )
    .fetch_optional(pool)
    .await?;
    Ok((events, cursor))
}

/// Records a batch all-or-nothing; never waits on another writer and sends no NOTIFY.
///
/// Uncontended (nobody holds the subscription's counter row and nothing waits in its inbox),
/// the events are numbered, chained and stored in the log in this one transaction: one write
/// per event ([`record_in_place`]). Otherwise they go into the inbox in one plain insert and
/// the sequencer ([`sequence_batch`]) numbers them; the caller wakes it after commit.
///
/// Ids are idempotency keys within the subscription: an id already sequenced, one still in
/// the inbox, or one repeated within the request is a duplicate. The uncontended path gives
/// way to the inbox's when an id turns out stored after all. One race is left to the
/// sequencer: an id stored by a transaction that commits while the inbox insert runs is not
/// seen there, so it is counted as accepted; the sequencer then finds it stored and drops the
/// second copy (nothing is stored twice, nothing is lost). The inbox insert waits only for a
/// concurrent request inserting the same id (a client retrying in parallel).
pub async fn record(
    pool: &PgPool,
    subscription_id: Uuid,
    events: &[NewEvent],
) -> Result<Recorded, Error> {
    if let Some(done) = record_in_place(pool, subscription_id, events).await? {
        return Ok(done);
    }
    record_in_inbox(pool, subscription_id, events).await
}

/// The inbox path of [`record`]: one plain insert, no lock shared with other writers.
pub async fn record_in_inbox(
    pool: &PgPool,
    subscription_id: Uuid,
    events: &[NewEvent],
) -> Result<Recorded, Error> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let event_ids: Vec<i32> = events.iter().map(|e| e.event_id).collect();
    let occurred: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let actors: Vec<Option<String>> = events.iter().map(|e| e.actor.clone()).collect();
    let details: Vec<Value> = events.iter().map(|e| e.details.clone()).collect();
    let inserted: i64 = sqlx::query_scalar!(
        r#"with inserted as (
            insert into audit_inbox (subscription_id, id, event_id, occurred_at, actor, details)
            select $1, t.id, t.event_id, t.occurred_at, t.actor, t.details
            from unnest($2::uuid[], $3::int[], $4::timestamptz[], $5::text[], $6::jsonb[])
                with ordinality as t(id, event_id, occurred_at, actor, details, ord)
            where not exists (
                select 1 from audit_events e where e.subscription_id = $1 and e.id = t.id
            )
            order by t.ord
            on conflict (subscription_id, id) do nothing
            returning 1
         )
         select count(*) as "count!" from inserted"#,
        subscription_id,
        &ids,
        &event_ids,
        &occurred,
        // The macro's check knows text[] only as non-null strings; an actor may be null.
        &actors as _,
        &details
    )
    .fetch_one(pool)
    .await?;
    let accepted = u64::try_from(inserted).unwrap_or_default();
    Ok(Recorded {
        accepted,
        // Ids already stored or waiting, and ids repeated within this request.
        duplicates: events.len() as u64 - accepted.min(events.len() as u64),
        in_log: false,
    })
}

/// The uncontended path of [`record`]: `None` (nothing written) when another transaction holds
/// the subscription's counter row (`skip locked`: never waits) or events wait in its inbox
/// (they go first). Otherwise the events get their `seq`, hash links and `recorded_at` here
/// and go straight into the log. The page trigger stays quiet in this transaction
/// (`cloudpki.quiet_page`): no NOTIFY inside an ingest transaction; the caller announces the
/// change after commit ([`announce`]).
async fn record_in_place(
    pool: &PgPool,
    subscription_id: Uuid,
    events: &[NewEvent],
) -> Result<Option<Recorded>, Error> {
    let mut tx = pool.begin().await?;
    // The counter as locked (only when nothing waits in the inbox: a row the condition
    // refuses is never locked, so the sequencer is not kept out), the quieted page trigger, and
    // which of the ids the log holds. The subqueries see the statement's snapshot, which may
    // predate a batch committed just before the lock was taken: the insert below skips any id
    // the log holds after all, and then this path gives way to the inbox's.
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let counter = sqlx::query!(
        r#"select s.last_seq, s.last_hash, greatest(now(), s.last_recorded_at) as "recorded_at!",
                  set_config('cloudpki.quiet_page', 'on', true) as "quiet_page!",
                  array(select e.id from audit_events e
                        where e.subscription_id = s.id and e.id = any($2)) as "stored!"
           from subscriptions s
           where s.id = $1
             and not exists (select 1 from audit_inbox i where i.subscription_id = $1)
           for no key update skip locked"#,
        subscription_id,
        &ids
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(counter) = counter else {
        tx.rollback().await?;
        return Ok(None);
    };
    let (last_seq, last_hash, recorded_at, stored) = (
        counter.last_seq,
        counter.last_hash,
        counter.recorded_at,
        counter.stored,
    );
    let mut seen: std::collections::HashSet<Uuid> = stored.into_iter().collect();
    let fresh: Vec<Waiting> = events
        .iter()
        .filter(|e| seen.insert(e.id))
        .map(|e| Waiting {
            id: e.id,
            event_id: e.event_id,
            occurred_at: stored_time(e.occurred_at),
            actor: e.actor.clone(),
            details: e.details.clone(),
            stored: false,
        })
        .collect();
    let duplicates = (events.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(Some(Recorded {
            accepted: 0,
            duplicates,
            in_log: false,
        }));
    }
    let counter = counter_of((last_seq, last_hash, recorded_at));
    let n = fresh.len();
    let (fresh, chained) = if n > 64 {
        // Hashing a big batch takes milliseconds: off the async workers.
        let (base, prev) = (counter.last_seq, counter.last_hash);
        tokio::task::spawn_blocking(move || {
            let chained = chain_batch(subscription_id, base, prev, &fresh);
            (fresh, chained)
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing a batch failed: {e}")))?
    } else {
        let chained = chain_batch(subscription_id, counter.last_seq, counter.last_hash, &fresh);
        (fresh, chained)
    };
    let new_last = counter.last_seq + n as i64;
    let event_ids: Vec<i32> = fresh.iter().map(|w| w.event_id).collect();
    let occurred: Vec<DateTime<Utc>> = fresh.iter().map(|w| w.occurred_at).collect();
    let actors: Vec<Option<String>> = fresh.iter().map(|w| w.actor.clone()).collect();
    let details: Vec<Value> = fresh.iter().map(|w| w.details.clone()).collect();
    let inserted: i64 = sqlx::query_scalar!(
        r#"with inserted as (
            insert into audit_events (subscription_id, seq, id, event_id, occurred_at, actor,
                                      details, prev_hash, hash, recorded_at)
            select $1, t.seq, t.id, t.event_id, t.occurred_at, t.actor, t.details, t.prev,
                   t.hash, $10
            from unnest($2::bigint[], $3::uuid[], $4::int[], $5::timestamptz[], $6::text[],
                        $7::jsonb[], $8::bytea[], $9::bytea[])
                as t(seq, id, event_id, occurred_at, actor, details, prev, hash)
            on conflict (subscription_id, id) do nothing
            returning 1
         ), bumped as (
            update subscriptions set last_seq = $11, last_hash = $12, last_recorded_at = $10
            where id = $1
         )
         select count(*) as "count!" from inserted"#,
        subscription_id,
        &chained.seqs,
        &chained.ids,
        &event_ids,
        &occurred,
        // The macro's check knows text[] only as non-null strings; an actor may be null.
        &actors as _,
        &details,
        &chained.prevs,
        &chained.hashes,
        counter.recorded_at,
        new_last,
        chained.hashes.last().cloned()
    )
    .fetch_one(&mut *tx)
    .await?;
    if inserted != n as i64 {
        // An id was stored meanwhile: numbering around it would leave a gap. Roll back (the
        // lock goes with it) and take the inbox's path, whose check sees it.
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(Recorded {
        accepted: n as u64,
        duplicates,
        in_log: true,
    }))
}

/// Announces events stored by [`record`]'s uncontended path, after its commit and outside
/// it: wakes the forwarders when an enabled destination will read them, and tells every
/// portal's page cache that the subscription's counts moved.
pub async fn announce(pool: &PgPool, subscription_id: Uuid) -> Result<(), Error> {
    // `$1::uuid::text`: the macro describes the statement without parameter types, and `$1`
    // alone would read as text there; it is a uuid when run, as bound. Every row is read, so
    // both notifications are sent.
    sqlx::query!(
        "select pg_notify($2, $1::uuid::text)
         where exists (select 1 from siem_settings s where s.subscription_id = $1 and s.enabled)
         union all
         select pg_notify('cloudpki_page', $1::uuid::text)",
        subscription_id,
        EVENTS_CHANNEL
    )
    .fetch_all(pool)
    .await?;
    Ok(())
}

/// A time as PostgreSQL stores it (`timestamptz`: microseconds), so a hash computed before the
/// insert matches the log built from the row.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    at.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(at)
}

/// What one sequencer batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sequenced {
    /// Events moved from the inbox into the log.
    pub sequenced: u64,
    /// Inbox rows dropped as copies of events already in the log.
    pub duplicates: u64,
    /// Another sequencer holds the subscription (its counter row lock): try again shortly.
    pub busy: bool,
    /// The batch was full: more may be waiting.
    pub more: bool,
}

/// An inbox row as the sequencer reads it.
#[derive(sqlx::FromRow)]
struct Waiting {
    id: Uuid,
    event_id: i32,
    occurred_at: DateTime<Utc>,
    actor: Option<String>,
    details: Value,
    stored: bool,
}

/// Where a subscription's log ends, read under its counter row lock.
struct Counter {
    last_seq: i64,
    /// Hex `Hash` of the last event (the genesis value before the first).
    last_hash: String,
    /// The `recorded_at` of the next events: the transaction's time, never before the last.
    recorded_at: DateTime<Utc>,
}

/// Most bytes of `details` one sequencer transaction takes (at least one event).
const SEQUENCER_BATCH_BYTES: i64 = 8 << 20;

/// Sequences up to `limit` of the subscription's waiting events, in ingest order, in one
/// transaction fenced by the subscription's counter row lock (`for no key update`, waiting at
/// most 100 ms for another holder, then answering `busy`). Each event gets
/// the next `seq`, its `PrevHash`/`Hash` (see [`crate::chain`]) and `recorded_at` (the
/// transaction's time, never before the subscription's previous one). The forwarder is
/// notified at commit when an enabled destination will read the new events.
pub async fn sequence_batch(
    pool: &PgPool,
    subscription_id: Uuid,
    limit: i64,
) -> Result<Sequenced, Error> {
    let mut tx = pool.begin().await?;
    // Waits a moment for a holder (an uncontended ingest commits within milliseconds, and the
    // wait ends the instant it does), then gives up as busy. Ingest never waits for this
    // waiter: it takes the row with `skip locked`.
    sqlx::query!("set local lock_timeout = '100ms'")
        .execute(&mut *tx)
        .await?;
    let counter: Result<Option<CounterRow>, sqlx::Error> = sqlx::query!(
        r#"select last_seq, last_hash, greatest(now(), last_recorded_at) as "recorded_at!"
             from subscriptions where id = $1 for no key update"#,
        subscription_id
    )
    .fetch_optional(&mut *tx)
    .await
    .map(|row| row.map(|r| (r.last_seq, r.last_hash, r.recorded_at)));
    let counter = match counter {
        Err(err) if is_lock_timeout(&err) => {
            return Ok(Sequenced {
                busy: true,
                ..Sequenced::default()
            })
        }
        other => other?,
    };
    let Some(counter) = counter else {
        // The subscription was deleted: its waiting events go with it.
        let dropped = sqlx::query!(
            "delete from audit_inbox where subscription_id = $1",
            subscription_id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        return Ok(Sequenced {
            duplicates: dropped,
            ..Sequenced::default()
        });
    };
    let mut counter = counter_of(counter);
    let done = move_waiting(&mut tx, subscription_id, &mut counter, limit).await?;
    tx.commit().await?;
    Ok(done)
}

/// `last_seq`, `last_hash` and the next `recorded_at`, as read under the counter row lock.
type CounterRow = (i64, Option<Vec<u8>>, DateTime<Utc>);

/// PostgreSQL's `lock_not_available` (SQLSTATE 55P03): `lock_timeout` expired.
fn is_lock_timeout(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "55P03")
}

fn counter_of((last_seq, last_hash, recorded_at): CounterRow) -> Counter {
    Counter {
        last_seq,
        last_hash: last_hash.map_or_else(|| crate::chain::GENESIS.to_owned(), hex::encode),
        recorded_at,
    }
}

/// Sequences everything waiting for a subscription whose counter row `tx` already holds
/// locked (switching provider: no event accepted before the switch may be numbered after
/// it). Returns the subscription's `last_seq`.
pub async fn sequence_under_lock(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    subscription_id: Uuid,
) -> Result<i64, Error> {
    let row = sqlx::query!(
        r#"select last_seq, last_hash, greatest(now(), last_recorded_at) as "recorded_at!"
           from subscriptions where id = $1"#,
        subscription_id
    )
    .fetch_one(&mut **tx)
    .await?;
    let mut counter = counter_of((row.last_seq, row.last_hash, row.recorded_at));
    while move_waiting(tx, subscription_id, &mut counter, SEQUENCER_BATCH)
        .await?
        .more
    {}
    Ok(counter.last_seq)
}

/// One batch of [`sequence_batch`] inside `tx`, which holds the counter row lock; moves
/// `counter` to the new end of the log.
async fn move_waiting(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    subscription_id: Uuid,
    counter: &mut Counter,
    limit: i64,
) -> Result<Sequenced, Error> {
    // Read after the lock, so the `stored` check sees every event sequenced before. At most
    // `limit` rows and about SEQUENCER_BATCH_BYTES of details (the first row always).
    let waiting: Vec<Waiting> = sqlx::query_as!(
        Waiting,
        r#"select w.id, w.event_id, w.occurred_at, w.actor, w.details,
                  exists (select 1 from audit_events e
                          where e.subscription_id = $1 and e.id = w.id) as "stored!"
           from (select i.*, sum(pg_column_size(i.details)) over (order by i.ingest_no) as upto
                 from audit_inbox i where i.subscription_id = $1
                 order by i.ingest_no limit $2) w
           where w.upto - pg_column_size(w.details) < $3
           order by w.ingest_no"#,
        subscription_id,
        limit,
        SEQUENCER_BATCH_BYTES
    )
    .fetch_all(&mut **tx)
    .await?;
    if waiting.is_empty() {
        return Ok(Sequenced::default());
    }
    let taken: Vec<Uuid> = waiting.iter().map(|w| w.id).collect();
    let total = waiting.len();
    let more = total as i64 >= limit;
    // Hashing a batch takes milliseconds: off the async workers.
    let (base, prev) = (counter.last_seq, std::mem::take(&mut counter.last_hash));
    let chained =
        tokio::task::spawn_blocking(move || chain_batch(subscription_id, base, prev, &waiting))
            .await
            .map_err(|e| Error::Internal(format!("hashing a batch failed: {e}")))?;
    let n = chained.ids.len();
    counter.last_hash = chained.last_hash;
    let last_seq = base + n as i64;
    // `$1::uuid::text`: the macro describes the statement without parameter types, and would
    // read `$1` as text there; it is a uuid when run, as bound.
    let inserted: i64 = sqlx::query_scalar!(
        r#"with moved as (
            delete from audit_inbox where subscription_id = $1 and id = any($2)
            returning id, event_id, occurred_at, actor, details
         ), inserted as (
            insert into audit_events (subscription_id, seq, id, event_id, occurred_at, actor,
                                      details, prev_hash, hash, recorded_at)
            select $1, t.seq, m.id, m.event_id, m.occurred_at, m.actor, m.details,
                   t.prev, t.hash, $7
            from unnest($3::uuid[], $4::bigint[], $5::bytea[], $6::bytea[])
                as t(id, seq, prev, hash)
            join moved m on m.id = t.id
            returning 1
         ), bumped as (
            update subscriptions set last_seq = $8, last_hash = coalesce($9, last_hash),
                                     last_recorded_at = $7
            where id = $1 and $10
         ), notified as (
            -- delivered to listeners at commit, so the forwarder never wakes before the rows
            select pg_notify($11, $1::uuid::text)
            where $10
              and exists (select 1 from siem_settings s
                          where s.subscription_id = $1 and s.enabled)
         )
         select (select count(*) from inserted) + 0 * (select count(*) from notified)
             as "count!""#,
        subscription_id,
        &taken,
        &chained.ids,
        &chained.seqs,
        &chained.prevs,
        &chained.hashes,
        counter.recorded_at,
        last_seq,
        chained.hashes.last().cloned(),
        n > 0,
        EVENTS_CHANNEL
    )
    .fetch_one(&mut **tx)
    .await?;
    if inserted != n as i64 {
        // Never expected: every numbered event must be in the log, or the numbers would have a
        // gap. The caller's transaction rolls back.
        return Err(Error::Internal(format!(
            "the sequencer numbered {n} events but moved {inserted}"
        )));
    }
    counter.last_seq = last_seq;
    Ok(Sequenced {
        sequenced: n as u64,
        duplicates: (total - n) as u64,
        busy: false,
        more,
    })
}

/// A batch's numbers and hash links.
struct Chained {
    ids: Vec<Uuid>,
    seqs: Vec<i64>,
    prevs: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
    last_hash: String,
}

/// Numbers the events not already stored after `base` and chains them after `prev`.
fn chain_batch(subscription_id: Uuid, base: i64, mut prev: String, waiting: &[Waiting]) -> Chained {
    let fresh: Vec<&Waiting> = waiting.iter().filter(|w| !w.stored).collect();
    let n = fresh.len();
    let mut out = Chained {
        ids: Vec::with_capacity(n),
        seqs: Vec::with_capacity(n),
        prevs: Vec::with_capacity(n),
        hashes: Vec::with_capacity(n),
        last_hash: String::new(),
    };
    for (i, w) in fresh.iter().enumerate() {
        let seq = base + 1 + i as i64;
        // The time as every log carries it (milliseconds), from the value the database keeps.
        let occurred = crate::siem::wire::rfc3339(w.occurred_at);
        let hash = crate::chain::hash(
            &prev,
            &crate::chain::Link {
                actor: w.actor.as_deref(),
                event_id: w.event_id,
                event_uuid: w.id,
                occurred_at: &occurred,
                sequence: seq,
                subscription_id,
                details: &w.details,
            },
        );
        out.ids.push(w.id);
        out.seqs.push(seq);
        out.prevs.push(hex::decode(&prev).unwrap_or_default());
        out.hashes.push(hex::decode(&hash).unwrap_or_default());
        prev = hash;
    }
    out.last_hash = prev;
    out
}

/// The subscriptions with events waiting in the inbox (a skip scan of its order index: one
/// probe per subscription, however long the inbox).
pub async fn waiting_subscriptions(pool: &PgPool) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar!(
        r#"with recursive subs as (
            (select subscription_id from audit_inbox order by subscription_id limit 1)
            union all
            select (select i.subscription_id from audit_inbox i
                    where i.subscription_id > s.subscription_id
                    order by i.subscription_id limit 1)
            from subs s where s.subscription_id is not null
         )
         select subscription_id as "subscription_id!" from subs
         where subscription_id is not null"#
    )
    .fetch_all(pool)
    .await?)
}

/// Sequences everything waiting for one subscription (a one-shot caller: the CLI). Waits while
/// another sequencer holds the subscription.
pub async fn sequence_all(pool: &PgPool, subscription_id: Uuid) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let done = sequence_batch(pool, subscription_id, SEQUENCER_BATCH).await?;
        total += done.sequenced;
        if done.busy {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        }
        if !done.more {
            return Ok(total);
        }
    }
}

/// Sequences what is waiting for every subscription, skipping one another sequencer holds
/// (the one-shot forwarder pass, before it reads the log).
pub async fn sequence_waiting(pool: &PgPool) -> Result<u64, Error> {
    let mut total = 0;
    for subscription_id in waiting_subscriptions(pool).await? {
        loop {
            let done = sequence_batch(pool, subscription_id, SEQUENCER_BATCH).await?;
            total += done.sequenced;
            if done.busy || !done.more {
                break;
            }
        }
    }
    Ok(total)
}

/// Most events one sequencer transaction takes.
pub const SEQUENCER_BATCH: i64 = 5_000;
