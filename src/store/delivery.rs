//! The delivery log's cursors: what each destination has settled, what is in flight, and what
//! it refused.
//!
//! Every audit event of a subscription has a gap-free `seq` (see `store::events::sequence_batch`). A
//! destination keeps a `cursor`: every event with `seq <= cursor` is settled (delivered, parked
//! or expired). A worker *claims* a destination with a lease that carries a fresh token per
//! claim (`lease_owner`), reads `seq > cursor` by index range, marks how far it has handed
//! events to the SIEM (`inflight_to`), commits, and only then sends. Settling a range moves the
//! cursor forward with `greatest`, guarded by contiguity, and needs no lease: a holder whose
//! lease expired mid-send still records what the SIEM accepted. Events between the cursor and
//! `inflight_to` at claim time may have reached the SIEM already (the previous holder died or
//! lost its lease): resending them is counted as duplicates. Delivering writes nothing per
//! event; refused events go to `delivery_parked` (as do events to resend out of order). Every
//! timestamp comes from the caller, so tests can drive time.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Error;
use crate::domain::destination::DestinationKey;

/// A destination a worker holds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    /// Subscription.
    pub subscription_id: Uuid,
    /// Destination number within the subscription.
    pub destination: i16,
    /// Provider id.
    pub provider: String,
    /// This claim's lease token: renewals and the release must present it.
    pub token: Uuid,
    /// Every event up to here is settled.
    pub cursor: i64,
    /// A previous holder handed events up to here to the SIEM.
    pub inflight_to: i64,
    /// The subscription's latest event when claimed.
    pub last_seq: i64,
    /// Some events wait to be sent out of order (a retry of parked events).
    pub has_retries: bool,
    /// `healthy` or `failing`.
    pub status: String,
    /// Failed claims in a row.
    pub consecutive_failures: i32,
    /// Start of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    /// A replay in progress: the next `seq` to resend…
    pub replay_next: Option<i64>,
    /// …up to this one.
    pub replay_to: Option<i64>,
    /// Which replay that is.
    pub replay_id: Option<Uuid>,
}

impl Claimed {
    /// The destination held.
    pub fn key(&self) -> DestinationKey {
        DestinationKey::stored(self.subscription_id, self.destination)
    }

    /// The part of a replay still to send, if any.
    pub fn replay_left(&self) -> Option<(i64, i64)> {
        self.replay_next
            .zip(self.replay_to)
            .filter(|(next, to)| next <= to)
    }

    /// Whether a previous holder may already have sent the event `seq`.
    pub fn maybe_sent(&self, seq: i64) -> bool {
        seq > self.cursor && seq <= self.inflight_to
    }
}

/// An event of the log, as the forwarder reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogEvent {
    /// Its number in the subscription's log.
    pub seq: i64,
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
    /// Its predecessor's hash in the chain (none for events recorded before the chain).
    pub prev_hash: Option<Vec<u8>>,
    /// Its own hash in the chain.
    pub hash: Option<Vec<u8>>,
    /// A previous holder may have sent it already (a resend is a possible duplicate).
    pub maybe_sent: bool,
}

/// What switching export found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switched {
    /// Events the previous destination still owed that the new one was given.
    pub carried: i64,
    /// Events recorded while export to the (re-enabled) destination was off: not owed.
    pub not_owed: i64,
}

/// Points export at `to` (`None`: export off) in the save's transaction, under the
/// subscription's counter lock, so no event can be recorded between switching one destination
/// off and the next on: one `last_seq` bounds both.
///
/// * Every other destination still on is switched off at that `last_seq` and keeps owing what
///   it owed (shown as not sent), unless `carry`: then what it owed goes to `to` (its cursor
///   starts where the old one stood, its waiting retries move over) and it owes nothing.
/// * A new destination owes what is recorded from now on.
/// * One switched on again owes what it still owed when it was switched off (as out-of-order
///   retries) and what is recorded from now on, never what was recorded while it was off: that
///   window is remembered, for the panel's Replay.
/// * Saving makes it due now and lifts a pause by the destination (a webhook's 410: the admin
///   has seen to it), not one an administrator asked for (that takes **Resume export**).
pub async fn apply_switch(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    to: Option<&str>,
    carry: bool,
) -> Result<Switched, Error> {
    let (subscription_id, number) = (dest.subscription_id, dest.no());
    // The counter row lock: the sequencer waits for this transaction, so `last_seq` holds
    // still. `no key update`, as the sequencer takes it: foreign-key checks (a notification, a
    // history row written while a destination row is held) still pass, so no cycle with the
    // notifier. What was accepted before the switch is numbered now, before it, so it is owed
    // by the destinations as they stood.
    sqlx::query_scalar!(
        "select 1 from subscriptions where id = $1 for no key update",
        subscription_id
    )
    .fetch_one(&mut **tx)
    .await?;
    let last_seq = super::events::sequence_under_lock(tx, subscription_id).await?;
    // What the destinations switched off now still owe: (provider, cursor, waiting retries).
    let off: Vec<(String, i64, i64)> = sqlx::query!(
        r#"update delivery_destinations d set off_at_seq = $3,
            -- A running claim stops at its next range, and records nothing under its lease.
            lease_owner = null, leased_until = null
         where d.subscription_id = $1 and d.destination = $4 and d.provider is distinct from $2
           and d.off_at_seq is null
         returning d.provider, d.cursor,
                   (select count(*) from delivery_parked p
                    where p.subscription_id = d.subscription_id and p.destination = d.destination
                      and p.provider = d.provider and p.state = 'retry') as "retries!""#,
        subscription_id,
        to,
        last_seq,
        number
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|r| (r.provider, r.cursor, r.retries))
    .collect();
    let mut switched = Switched::default();
    let Some(to) = to else {
        return Ok(switched);
    };
    // The backlog to carry: the one destination that owed the most.
    let from = off
        .iter()
        .filter(|_| carry)
        .max_by_key(|(_, cursor, retries)| (last_seq - cursor).max(0) + retries)
        .filter(|(_, cursor, retries)| *cursor < last_seq || *retries > 0);
    let start = from.map_or(last_seq, |(_, cursor, _)| *cursor);
    // A destination switched on again: what it still owed becomes retries, and the window
    // recorded while it was off is not owed.
    let reenabled: Option<(i64, i64)> = sqlx::query!(
        r#"select cursor, off_at_seq as "off_at_seq!" from delivery_destinations
         where subscription_id = $1 and destination = $3 and provider = $2
           and off_at_seq is not null for update"#,
        subscription_id,
        to,
        number
    )
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| (r.cursor, r.off_at_seq));
    // What it had settled before it stays settled.
    let begin = reenabled.map_or(start, |(cursor, _)| start.max(cursor));
    if let Some((cursor, off_at)) = reenabled {
        // `::bigint`: described without parameter types, `$3 + 1` would read as an integer;
        // both are bigints when run, as bound.
        sqlx::query!(
            "insert into delivery_parked (subscription_id, destination, provider, seq, state, in_flight)
             select $1, $5, $2, g.seq, 'retry', g.seq <= d.inflight_to
             from delivery_destinations d, generate_series($3::bigint + 1, $4::bigint) as g(seq)
             where d.subscription_id = $1 and d.destination = $5 and d.provider = $2
             on conflict on constraint delivery_parked_pkey do nothing",
            subscription_id,
            to,
            cursor,
            off_at.min(start),
            number
        )
        .execute(&mut **tx)
        .await?;
        switched.not_owed = (begin - off_at).max(0);
    }
    sqlx::query!(
        "insert into delivery_destinations as d (subscription_id, provider, cursor, inflight_to, destination)
         values ($1, $2, $3, $3, $4)
         on conflict on constraint delivery_destinations_pkey
         do update set next_attempt_at = now(), consecutive_failures = 0,
            paused_reason = case when d.paused_by_email is null then null else d.paused_reason end,
            paused_at = case when d.paused_by_email is null then null else d.paused_at end,
            cursor = case when d.off_at_seq is null then d.cursor else $3 end,
            inflight_to = case when d.off_at_seq is null then d.inflight_to
                               else greatest(d.inflight_to, $3) end,
            unsent_from_seq = case when d.off_at_seq is not null and $3 > d.off_at_seq
                                   then d.off_at_seq + 1 else d.unsent_from_seq end,
            unsent_to_seq = case when d.off_at_seq is not null and $3 > d.off_at_seq
                                 then $3 else d.unsent_to_seq end,
            lease_owner = case when d.off_at_seq is null then d.lease_owner end,
            leased_until = case when d.off_at_seq is null then d.leased_until end,
            off_at_seq = null",
        subscription_id,
        to,
        begin,
        number
    )
    .execute(&mut **tx)
    .await?;
    if let Some((old, cursor, retries)) = from {
        // The old destination owes nothing any more; its waiting retries move over.
        sqlx::query!(
            "with moved as (
                delete from delivery_parked
                where subscription_id = $1 and destination = $4 and provider = $2
                  and state = 'retry'
                returning seq
             ), added as (
                insert into delivery_parked (subscription_id, destination, provider, seq, state)
                select $1, $4, $3, seq, 'retry' from moved
                on conflict on constraint delivery_parked_pkey do update set state = 'retry'
             )
             update delivery_destinations set cursor = greatest(cursor, off_at_seq),
                    inflight_to = greatest(inflight_to, off_at_seq)
             where subscription_id = $1 and destination = $4 and provider = $2",
            subscription_id,
            old,
            to,
            number
        )
        .execute(&mut **tx)
        .await?;
        switched.carried = (last_seq - cursor).max(0) + retries;
    }
    Ok(switched)
}

/// Makes sure export goes to `provider` (see [`apply_switch`]), leaving any other
/// destination's backlog where it is.
pub async fn ensure_destination(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
) -> Result<(), Error> {
    apply_switch(tx, dest, Some(provider), false).await?;
    Ok(())
}

/// Leases the destination that has waited longest among those with due work, under a fresh
/// token. Taking over an expired lease is counted.
pub async fn claim_destination(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> Result<Option<Claimed>, Error> {
    Ok(sqlx::query_as!(
        Claimed,
        r#"update delivery_destinations d
         set leased_until = now() + $2, lease_owner = gen_random_uuid(),
             takeovers_total = d.takeovers_total + (d.lease_owner is not null)::int
         from (
            select c.subscription_id, c.destination, c.provider, sub.last_seq,
                   exists (select 1 from delivery_parked p
                           where p.subscription_id = c.subscription_id
                             and p.destination = c.destination
                             and p.provider = c.provider and p.state = 'retry') as has_retries
            from delivery_destinations c
            join siem_settings s
              on s.subscription_id = c.subscription_id and s.destination = c.destination
             and s.provider = c.provider and s.enabled
            join subscriptions sub on sub.id = c.subscription_id
            where c.next_attempt_at <= $1
              -- Leases are judged by the database's clock: a worker whose clock runs ahead
              -- cannot take a live one.
              and (c.leased_until is null or c.leased_until < now())
              and c.paused_reason is null
              and (c.cursor < sub.last_seq or c.replay_next <= c.replay_to
                   or exists (select 1 from delivery_parked p
                              where p.subscription_id = c.subscription_id
                                and p.destination = c.destination
                                and p.provider = c.provider and p.state = 'retry'))
            order by c.next_attempt_at, c.subscription_id
            limit 1
            -- `no key update`: producers' foreign-key checks hold `key share` locks on this
            -- row while they commit; a plain `for update` would skip busy destinations.
            for no key update of c skip locked
         ) picked
         where (d.subscription_id, d.destination, d.provider)
             = (picked.subscription_id, picked.destination, picked.provider)
         returning d.subscription_id, d.destination, d.provider, d.lease_owner as "token!", d.cursor,
                   d.inflight_to, picked.last_seq, picked.has_retries as "has_retries!", d.status,
                   d.consecutive_failures, d.failing_since,
                   d.replay_next, d.replay_to, d.replay_id"#,
        now,
        // chrono's Duration encodes as an interval; the macro's check knows only PgInterval.
        lease as _
    )
    .fetch_optional(pool)
    .await?)
}

/// Extends a claim's lease from the database's clock; `false` when the claim lost it
/// (another worker took over).
pub async fn renew(
    pool: &PgPool,
    claimed: &Claimed,
    lease: chrono::Duration,
) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update delivery_destinations set leased_until = now() + $4
         where subscription_id = $1 and provider = $2 and lease_owner = $3 and destination = $5",
        claimed.subscription_id,
        &claimed.provider,
        claimed.token,
        // chrono's Duration encodes as an interval; the macro's check knows only PgInterval.
        lease as _,
        claimed.destination
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Destinations whose heartbeat is due at `now`: (subscription, provider, the subscription's
/// latest `seq`). Their next heartbeat moves a `period` on in the same statement, so of two
/// workers only one sends it. A destination without a schedule gets its first one a period
/// from now. Only enabled, current destinations that are neither paused nor failing are due.
pub async fn due_heartbeats(
    pool: &PgPool,
    now: DateTime<Utc>,
    period: chrono::Duration,
) -> Result<Vec<(DestinationKey, String, i64)>, Error> {
    let rows = sqlx::query!(
        "with scheduled as (
            update delivery_destinations set heartbeat_at = $1::timestamptz + $2
            where heartbeat_at is null
         )
         update delivery_destinations d set heartbeat_at = $1::timestamptz + $2
         from subscriptions s, siem_settings st
         where s.id = d.subscription_id and st.subscription_id = d.subscription_id
           and st.destination = d.destination
           and st.enabled and st.provider = d.provider and d.off_at_seq is null
           and d.paused_reason is null and d.status <> 'failing'
           and d.heartbeat_at <= $1
         returning d.subscription_id, d.destination, d.provider, s.last_seq",
        now,
        // chrono's Duration encodes as an interval; the macro's check knows only PgInterval.
        period as _
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                DestinationKey::stored(r.subscription_id, r.destination),
                r.provider,
                r.last_seq,
            )
        })
        .collect())
}

/// Sets the Event IDs a destination is sent (`None`: every event), in the save's transaction;
/// returns the filter it had (`None` when there is no destination yet).
pub async fn set_filter(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    dest: DestinationKey,
    provider: &str,
    send_event_ids: Option<&[i32]>,
) -> Result<Option<crate::domain::events::EventFilter>, Error> {
    let before: Option<Option<Vec<i32>>> = sqlx::query_scalar!(
        "update delivery_destinations d set send_event_ids = $3
         from (select send_event_ids from delivery_destinations
               where subscription_id = $1 and destination = $4 and provider = $2 for update) old
         where d.subscription_id = $1 and d.destination = $4 and d.provider = $2
         returning old.send_event_ids",
        dest.subscription_id,
        provider,
        send_event_ids,
        dest.no()
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(before.map(crate::domain::events::EventFilter::from_stored))
}

/// The Event IDs a destination is sent (`None` inside: every event); `None` without a
/// destination.
pub async fn filter_of(
    pool: &PgPool,
    dest: DestinationKey,
    provider: &str,
) -> Result<Option<crate::domain::events::EventFilter>, Error> {
    let row: Option<Option<Vec<i32>>> = sqlx::query_scalar!(
        "select send_event_ids from delivery_destinations
         where subscription_id = $1 and destination = $3 and provider = $2",
        dest.subscription_id,
        provider,
        dest.no()
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(crate::domain::events::EventFilter::from_stored))
}

/// Pauses export to a destination at an administrator's request: events are recorded and
/// kept (retention still applies), nothing is sent. `false` when there is no such destination
/// or it was paused already.
pub async fn pause(
    pool: &PgPool,
    dest: DestinationKey,
    provider: &str,
    by_email: &str,
) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update delivery_destinations
         set paused_reason = 'an administrator (' || $3 || ') paused export.',
             paused_at = now(), paused_by_email = $3
         where subscription_id = $1 and destination = $4 and provider = $2
           and paused_reason is null",
        dest.subscription_id,
        provider,
        by_email,
        dest.no()
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Resumes a paused destination (whoever or whatever paused it): it is due at once and sends
/// everything kept meanwhile. `false` when it was not paused.
pub async fn resume(pool: &PgPool, dest: DestinationKey, provider: &str) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update delivery_destinations
         set paused_reason = null, paused_at = null, paused_by_email = null,
             next_attempt_at = now()
         where subscription_id = $1 and destination = $3 and provider = $2
           and paused_reason is not null",
        dest.subscription_id,
        provider,
        dest.no()
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// What asking for a replay found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayPlan {
    /// The replay of these `seq`s is under way.
    Started { from: i64, to: i64, events: i64 },
    /// No event of the window had been sent to the destination.
    Empty,
    /// The window holds more events than one replay may resend.
    TooMany { events: i64 },
    /// The subscription has no enabled destination.
    NoDestination,
}

/// Starts resending the events recorded in `[from, to)` that the destination had already
/// been sent (what it still owes goes out with the log anyway), at most `cap` of them. A new
/// replay replaces one in progress.
pub async fn start_replay(
    pool: &PgPool,
    dest: DestinationKey,
    provider: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
    cap: i64,
) -> Result<ReplayPlan, Error> {
    let found: Option<(Option<i64>, Option<i64>)> = sqlx::query!(
        r#"select (select min(e.seq) from audit_events e
                 where e.subscription_id = d.subscription_id
                   and e.recorded_at >= $3 and e.recorded_at < $4 and e.seq <= d.cursor)
                    as "first?",
                (select max(e.seq) from audit_events e
                 where e.subscription_id = d.subscription_id
                   and e.recorded_at >= $3 and e.recorded_at < $4 and e.seq <= d.cursor)
                    as "last?"
         from delivery_destinations d
         join siem_settings s on s.subscription_id = d.subscription_id
                             and s.destination = d.destination
                             and s.provider = d.provider and s.enabled
         where d.subscription_id = $1 and d.destination = $5 and d.provider = $2"#,
        dest.subscription_id,
        provider,
        window.0,
        window.1,
        dest.no()
    )
    .fetch_optional(pool)
    .await?
    .map(|r| (r.first, r.last));
    let Some(found) = found else {
        return Ok(ReplayPlan::NoDestination);
    };
    let (Some(from), Some(to)) = found else {
        return Ok(ReplayPlan::Empty);
    };
    // `seq` has no gaps: the range's length is its number of events.
    let events = to - from + 1;
    if events > cap {
        return Ok(ReplayPlan::TooMany { events });
    }
    sqlx::query!(
        "update delivery_destinations
         set replay_from = $3, replay_next = $3, replay_to = $4, next_attempt_at = now(),
             replay_id = gen_random_uuid()
         where subscription_id = $1 and destination = $5 and provider = $2",
        dest.subscription_id,
        provider,
        from,
        to,
        dest.no()
    )
    .execute(pool)
    .await?;
    Ok(ReplayPlan::Started { from, to, events })
}

/// Reads up to `limit` events of a replay, from `seq` `from` to `to`.
pub async fn read_replay(
    pool: &PgPool,
    subscription_id: Uuid,
    from: i64,
    to: i64,
    limit: i64,
) -> Result<Vec<LogEvent>, Error> {
    Ok(sqlx::query_as!(
        LogEvent,
        r#"select seq, id as event_uuid, event_id, occurred_at, recorded_at, actor, details,
                  prev_hash, hash, false as "maybe_sent!"
           from audit_events
           where subscription_id = $1 and seq >= $2 and seq <= $3
           order by seq limit $4"#,
        subscription_id,
        from,
        to,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Records a replay's progress: resent up to `next - 1`, `sent` more events accepted. Only
/// while the claim holds the lease and the replay is the same one (by its id: a newer replay
/// with the same end is another replay).
pub async fn advance_replay(
    pool: &PgPool,
    claimed: &Claimed,
    next: i64,
    sent: i64,
) -> Result<(), Error> {
    sqlx::query!(
        "update delivery_destinations
         set replay_next = greatest(replay_next, $4), replayed_total = replayed_total + $5
         where subscription_id = $1 and provider = $2 and lease_owner = $3
           and replay_id is not distinct from $6",
        claimed.subscription_id,
        &claimed.provider,
        claimed.token,
        next,
        sent,
        claimed.replay_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What reading a range found.
#[derive(Debug)]
pub enum Range {
    /// The events after `after`, in `seq` order (empty when caught up, or when the claim must
    /// stop: nothing more to send either way). The filter they are sent with is read right
    /// before sending ([`live`]): a range may be read ahead of a settings change.
    Events { events: Vec<LogEvent> },
    /// Send nothing more: the claim's lease is gone, or since the claim began the destination
    /// was paused or export to it switched off.
    Stop,
}

/// Reads up to `limit` events after `after` and records, under the claim's lease, that they
/// are about to be sent. The settings are read with every range, so a pause, a switch-off or
/// a new filter takes effect at the next range, and a switched-off destination is never read
/// past `off_at_seq`. One round trip; an index range scan of `audit_events_pkey`.
pub async fn read_range(
    pool: &PgPool,
    claimed: &Claimed,
    after: i64,
    limit: i64,
) -> Result<Range, Error> {
    let rows = sqlx::query!(
        r#"with dest as materialized (
            select 1
            from delivery_destinations d
            join siem_settings s on s.subscription_id = d.subscription_id
                                and s.destination = d.destination
                                and s.provider = d.provider and s.enabled
            where d.subscription_id = $1 and d.provider = $2 and d.lease_owner = $5
              and d.paused_reason is null and d.off_at_seq is null
         ), r as materialized (
            select seq, id, event_id, occurred_at, recorded_at, actor, details, prev_hash, hash
            from audit_events
            where subscription_id = $1 and seq > $3 and exists (select 1 from dest)
            order by seq
            limit $4
         ), m as (
            update delivery_destinations
            set inflight_to = greatest(inflight_to, (select max(seq) from r))
            where subscription_id = $1 and provider = $2 and lease_owner = $5
              and exists (select 1 from r)
            returning 1
         )
         select r.seq, r.id as event_uuid, r.event_id, r.occurred_at, r.recorded_at, r.actor,
                r.details, r.prev_hash, r.hash, false as "maybe_sent!",
                exists (select 1 from m) as "held!"
         from r order by r.seq"#,
        claimed.subscription_id,
        &claimed.provider,
        after,
        limit,
        claimed.token
    )
    .fetch_all(pool)
    .await?;
    if rows.first().is_some_and(|r| !r.held) {
        return Ok(Range::Stop);
    }
    Ok(Range::Events {
        events: rows
            .into_iter()
            .map(|r| LogEvent {
                seq: r.seq,
                event_uuid: r.event_uuid,
                event_id: r.event_id,
                occurred_at: r.occurred_at,
                recorded_at: r.recorded_at,
                actor: r.actor,
                details: r.details,
                prev_hash: r.prev_hash,
                hash: r.hash,
                // Not the query's `false`: what the claim knows.
                maybe_sent: claimed.maybe_sent(r.seq),
            })
            .collect(),
    })
}

/// Whether the claim may still send, and what: `Some(filter)` while it holds its lease and
/// the destination is neither paused nor switched off (`filter`: the Event IDs it is sent,
/// `None` for every event); `None` once it must stop.
pub async fn live(pool: &PgPool, claimed: &Claimed) -> Result<Option<Option<Vec<i32>>>, Error> {
    Ok(sqlx::query_scalar!(
        "select d.send_event_ids
         from delivery_destinations d
         join siem_settings s on s.subscription_id = d.subscription_id
                             and s.destination = d.destination
                             and s.provider = d.provider and s.enabled
         where d.subscription_id = $1 and d.provider = $2 and d.lease_owner = $3
           and d.paused_reason is null and d.off_at_seq is null",
        claimed.subscription_id,
        &claimed.provider,
        claimed.token
    )
    .fetch_optional(pool)
    .await?)
}

/// Reads up to `limit` events waiting to be sent out of order and marks them in flight. An
/// event already marked was in flight with a holder that died: it may have reached the SIEM.
pub async fn read_retries(
    pool: &PgPool,
    claimed: &Claimed,
    limit: i64,
) -> Result<Vec<LogEvent>, Error> {
    Ok(sqlx::query_as!(
        LogEvent,
        r#"with picked as materialized (
            select seq, in_flight from delivery_parked
            where subscription_id = $1 and destination = $4 and provider = $2 and state = 'retry'
            order by seq limit $3
         ), marked as (
            update delivery_parked p set in_flight = true from picked
            where p.subscription_id = $1 and p.destination = $4 and p.provider = $2
              and p.seq = picked.seq
         )
         select e.seq, e.id as event_uuid, e.event_id, e.occurred_at, e.recorded_at, e.actor,
                e.details, e.prev_hash, e.hash, picked.in_flight as "maybe_sent!"
         from picked join audit_events e on e.subscription_id = $1 and e.seq = picked.seq
         order by e.seq"#,
        claimed.subscription_id,
        &claimed.provider,
        limit,
        claimed.destination
    )
    .fetch_all(pool)
    .await?)
}

/// What became of some events of a claim, to be written back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// For a log range: the cursor moves to here (the end of the settled prefix).
    pub cursor_to: Option<i64>,
    /// …provided the cursor is at least here (the range's first `seq` − 1).
    pub cursor_from: i64,
    /// Out-of-order events the SIEM accepted (their `delivery_parked` rows go).
    pub retried: Vec<i64>,
    /// Out-of-order events that go back to waiting (not sent, or not accepted yet).
    pub unsent_retries: Vec<i64>,
    /// Events accepted by the SIEM.
    pub delivered: i64,
    /// Of those, resends of events a previous holder may have sent.
    pub duplicates: i64,
    /// Events refused for good, with the reason shown in the portal.
    pub parked: Vec<(i64, String)>,
    /// The SIEM may have events beyond the settled prefix (sent in parallel, or a failure
    /// after a send): up to here, a later resend is a possible duplicate.
    pub maybe_sent_to: i64,
    /// Events the destination's filter passed over (not sent, not delivered).
    pub filtered: i64,
}

/// Writes what a claim settled, in one statement. Needs no lease: what the SIEM accepted is
/// recorded even when the lease expired meanwhile.
pub async fn settle(
    pool: &PgPool,
    claimed: &Claimed,
    now: DateTime<Utc>,
    settled: &Settled,
) -> Result<(), Error> {
    let parked_seqs: Vec<i64> = settled.parked.iter().map(|(s, _)| *s).collect();
    let reasons: Vec<String> = settled.parked.iter().map(|(_, r)| r.clone()).collect();
    sqlx::query!(
        "with parked as (
            insert into delivery_parked (subscription_id, destination, provider, seq, state, reason, parked_at)
            select $1, $15, $2, p.seq, 'parked', p.reason, $3
            from unnest($4::bigint[], $5::text[]) as p(seq, reason)
            -- Nothing to park for a destination removed while its claim was sending.
            where exists (select 1 from delivery_destinations
                          where subscription_id = $1 and destination = $15 and provider = $2)
            on conflict on constraint delivery_parked_pkey do update
               set state = 'parked', reason = excluded.reason, parked_at = excluded.parked_at,
                   in_flight = false
         ), retried as (
            delete from delivery_parked
            where subscription_id = $1 and destination = $15 and provider = $2
              and seq = any($6) and state = 'retry'
         ), unsent as (
            -- Only the holder clears its marks: a holder that lost its lease must not clear
            -- the marks of the one that took over.
            update delivery_parked set in_flight = false
            where subscription_id = $1 and destination = $15 and provider = $2 and seq = any($7)
              and exists (select 1 from delivery_destinations
                          where subscription_id = $1 and destination = $15 and provider = $2
                            and lease_owner = $14)
         )
         update delivery_destinations set
            cursor = case when $8::bigint is not null and cursor >= $9
                          then greatest(cursor, $8) else cursor end,
            inflight_to = greatest(inflight_to, $8, $10),
            delivered_total = delivered_total + $11,
            duplicates_total = duplicates_total + $12,
            filtered_total = filtered_total + $13,
            last_success_at = case when $11 > 0 then $3 else last_success_at end
         where subscription_id = $1 and destination = $15 and provider = $2",
        claimed.subscription_id,
        &claimed.provider,
        now,
        &parked_seqs,
        &reasons,
        &settled.retried,
        &settled.unsent_retries,
        settled.cursor_to,
        settled.cursor_from,
        settled.maybe_sent_to,
        settled.delivered,
        settled.duplicates,
        settled.filtered,
        claimed.token,
        claimed.destination
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The destination's state after a claim.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
    /// The destination is misconfigured (key, URL) or refuses everything: failing (an
    /// incident, emails) until a delivery succeeds.
    Failing {
        /// When to try again.
        next_attempt_at: DateTime<Utc>,
        /// Plain-language cause.
        error: String,
    },
    /// The destination asked to stop (webhook 410): paused with this reason until an admin
    /// saves the settings again. Failing meanwhile, so the admins are told.
    Paused {
        /// Plain-language cause.
        error: String,
    },
}

/// How a claim ended, to be written back.
#[derive(Debug, Default, Clone)]
pub struct Finish {
    /// How the destination fares.
    pub health: Health,
    /// Events delivered during the claim (for the attempts list).
    pub delivered: i64,
    /// Events parked during the claim.
    pub parked: i64,
    /// First park reason, for the attempts list.
    pub park_reason: Option<String>,
    /// The destination refused everything the same way (counted).
    pub refused: bool,
}

/// Records how a claim ended and releases the destination, if this claim still holds it.
/// `maybe_sent_to` is how far the SIEM may hold events beyond the cursor (what the next holder
/// counts as duplicates when it resends them). Returns `false` when the lease was lost
/// (another worker took over; only the attempt row was written, the new holder owns the
/// destination's state).
pub async fn finish(
    pool: &PgPool,
    claimed: &Claimed,
    now: DateTime<Utc>,
    finish: &Finish,
    maybe_sent_to: i64,
) -> Result<bool, Error> {
    let (outcome, detail, next_attempt_at, error, failing, paused) = match &finish.health {
        Health::Healthy => (
            "delivered",
            finish
                .park_reason
                .as_ref()
                .map(|r| format!("{} event(s) parked: {r}", finish.parked)),
            now,
            None,
            false,
            None,
        ),
        Health::Retry {
            next_attempt_at,
            error,
        } => (
            "retrying",
            Some(error.clone()),
            *next_attempt_at,
            Some(error),
            false,
            None,
        ),
        Health::Failing {
            next_attempt_at,
            error,
        } => (
            "failing",
            Some(error.clone()),
            *next_attempt_at,
            Some(error),
            true,
            None,
        ),
        Health::Paused { error } => (
            "failing",
            Some(error.clone()),
            now,
            Some(error),
            true,
            Some(error),
        ),
    };
    let healthy = matches!(finish.health, Health::Healthy);
    let held = sqlx::query_scalar!(
        "with attempt as (
            insert into delivery_attempts (subscription_id, destination, provider, at, outcome, events, detail)
            select $1, $15, $2, $4, $5, $6, $7
            -- Nothing to record for a destination removed while its claim was sending.
            where exists (select 1 from delivery_destinations
                          where subscription_id = $1 and destination = $15 and provider = $2)
         ), history as (
            insert into siem_settings_history (subscription_id, destination, user_id, user_email, outcome, changes)
            select $1, $15, null, 'cloudpki', 'saved',
                   jsonb_build_array('Export paused by the destination: ' || $12::text)
            where $12::text is not null
         )
         update delivery_destinations set
            leased_until = null, lease_owner = null, next_attempt_at = $8,
            status = case when $9 then 'healthy' when $10 then 'failing' else status end,
            consecutive_failures = case when $9 then 0 else consecutive_failures + 1 end,
            failing_since = case when $9 then null else coalesce(failing_since, $4) end,
            last_error = coalesce($11, last_error),
            last_error_at = case when $11 is null then last_error_at else $4 end,
            paused_reason = coalesce($12, paused_reason),
            paused_at = case when $12::text is null then paused_at else coalesce(paused_at, $4) end,
            refusals_total = refusals_total + $13,
            inflight_to = greatest(cursor, $14)
         where subscription_id = $1 and provider = $2 and lease_owner = $3
         returning 1",
        claimed.subscription_id,
        &claimed.provider,
        claimed.token,
        now,
        outcome,
        i32::try_from(finish.delivered).unwrap_or(i32::MAX),
        detail,
        next_attempt_at,
        healthy,
        failing,
        error,
        paused,
        i64::from(finish.refused),
        maybe_sent_to,
        claimed.destination
    )
    .fetch_optional(pool)
    .await?;
    Ok(held.is_some())
}

/// `(waiting, oldest recorded_at)` of destination ($1, $2), by cursor arithmetic (no row
/// counts). A destination switched off owes only what was recorded before. In a file so that
/// `store::notify::waiting` runs it checked at compile time, and the settings page and the
/// plan tests read the same text.
pub const OWED_SQL: &str = include_str!("sql/owed.sql");

/// Backlog figures of one destination.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Backlog {
    /// Subscription.
    pub subscription_id: Uuid,
    /// Destination number.
    pub destination: i16,
    /// Provider.
    pub provider: String,
    /// Events waiting.
    pub pending: i64,
    /// Parked events.
    pub parked: i64,
    /// When the oldest waiting event was recorded.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Resends counted as possible duplicates.
    pub duplicates: i64,
    /// Leases taken over from a holder that died or stalled.
    pub takeovers: i64,
    /// Claims that found the destination refusing everything.
    pub refusals: i64,
}

/// Backlog of every destination (metrics), by cursor arithmetic.
pub async fn backlogs(pool: &PgPool) -> Result<Vec<Backlog>, Error> {
    Ok(sqlx::query_as!(
        Backlog,
        r#"select d.subscription_id, d.destination, d.provider,
            greatest(coalesce(d.off_at_seq, sub.last_seq) - d.cursor, 0)
              + (select count(*) from delivery_parked p where p.subscription_id = d.subscription_id
                 and p.destination = d.destination and p.provider = d.provider
                 and p.state = 'retry') as "pending!",
            (select count(*) from delivery_parked p where p.subscription_id = d.subscription_id
                 and p.destination = d.destination and p.provider = d.provider
                 and p.state = 'parked') as "parked!",
            (select e.recorded_at from audit_events e where e.subscription_id = d.subscription_id
                 and e.seq = d.cursor + 1) as oldest_pending,
            d.duplicates_total as duplicates, d.takeovers_total as takeovers,
            d.refusals_total as refusals
         from delivery_destinations d join subscriptions sub on sub.id = d.subscription_id"#
    )
    .fetch_all(pool)
    .await?)
}

/// Everything the delivery health panel shows about one destination.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
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
    /// Possible duplicates: resends after a holder died or lost its lease.
    pub duplicates_total: i64,
    /// Leases taken over from a holder that died or stalled.
    pub takeovers_total: i64,
    /// Events that expired undelivered.
    pub expired_total: i64,
    /// Events waiting.
    pub pending: i64,
    /// When the oldest waiting event was recorded.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Events refused by the SIEM.
    pub parked: i64,
    /// Next attempt (backoff).
    pub next_attempt_at: DateTime<Utc>,
    /// Why the destination is paused, if it is.
    pub paused_reason: Option<String>,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Events its filter passed over, ever.
    pub filtered_total: i64,
    /// The Event IDs it is sent; `None`: every event.
    pub send_event_ids: Option<Vec<i32>>,
    /// The latest window recorded while export was off (not owed): first and last `seq`, and
    /// when they were recorded.
    #[serde(default)]
    pub unsent_from_seq: Option<i64>,
    #[serde(default)]
    pub unsent_to_seq: Option<i64>,
    #[serde(default)]
    pub unsent_from_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub unsent_to_at: Option<DateTime<Utc>>,
    /// The latest replay: first, next and last `seq`.
    pub replay_from: Option<i64>,
    pub replay_next: Option<i64>,
    pub replay_to: Option<i64>,
}

/// A parked event, for the panel.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct ParkedRow {
    /// `EventUuid`.
    pub event_uuid: Uuid,
    /// Its number in the log.
    pub seq: i64,
    /// Catalog id.
    pub event_id: i32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Why the SIEM refused it.
    pub reason: String,
}

/// Sends every parked event of a destination again, out of order, due now; returns how many.
pub async fn retry_parked(
    pool: &PgPool,
    dest: DestinationKey,
    provider: &str,
) -> Result<u64, Error> {
    // `$1::uuid::text`: the macro describes the statement without parameter types, and would
    // read `$1` as text there; it is a uuid when run, as bound.
    let n: i64 = sqlx::query_scalar!(
        r#"with moved as (
            update delivery_parked set state = 'retry', in_flight = false
            where subscription_id = $1 and destination = $4 and provider = $2
              and state = 'parked'
            returning 1
         ), due as (
            update delivery_destinations set next_attempt_at = now()
            where subscription_id = $1 and destination = $4 and provider = $2
         ), woken as (
            select pg_notify($3, $1::uuid::text)
         )
         select count(*) as "count!" from moved, (select count(*) from woken) as w"#,
        dest.subscription_id,
        provider,
        super::events::EVENTS_CHANNEL,
        dest.no()
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// One delivery attempt, for the panel.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
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

/// A gap record, for the panel.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
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

/// A recent email of a subscription, for the panel.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
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
