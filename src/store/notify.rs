//! Incidents, the email outbox and retention expiry, each step exactly-once across workers:
//! opening relies on the one-open-incident index, closing and reminding on row locks of an
//! `update … where`, and every message has a unique dedupe key.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Error;
use crate::domain::destination::DestinationKey;

/// One stage of the notifier as a unit of work: what it finds (incidents to open, events past
/// retention, secrets about to expire) and the messages it queues about them commit together,
/// or not at all. The notifier works through these methods; the transaction stays here.
pub struct Pass(Transaction<'static, Postgres>);

impl Pass {
    pub async fn begin(pool: &PgPool) -> Result<Pass, Error> {
        Ok(Pass(pool.begin().await?))
    }

    pub async fn commit(self) -> Result<(), Error> {
        self.0.commit().await?;
        Ok(())
    }

    /// See [`expire`].
    pub async fn expire(
        &mut self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<GapRow>, Error> {
        expire(&mut self.0, cutoff, now).await
    }

    /// See [`open_incidents`].
    pub async fn open_incidents(&mut self, now: DateTime<Utc>) -> Result<Vec<IncidentRow>, Error> {
        open_incidents(&mut self.0, now).await
    }

    /// See [`close_incidents`].
    pub async fn close_incidents(&mut self, now: DateTime<Utc>) -> Result<Vec<IncidentRow>, Error> {
        close_incidents(&mut self.0, now).await
    }

    /// See [`due_reminders`].
    pub async fn due_reminders(
        &mut self,
        now: DateTime<Utc>,
        every: chrono::Duration,
    ) -> Result<Vec<IncidentRow>, Error> {
        due_reminders(&mut self.0, now, every).await
    }

    /// See [`close_switched_off`].
    pub async fn close_switched_off(&mut self, now: DateTime<Utc>) -> Result<u64, Error> {
        close_switched_off(&mut self.0, now).await
    }

    /// See [`expiring_secrets`].
    pub async fn expiring_secrets(
        &mut self,
        until: chrono::NaiveDate,
    ) -> Result<Vec<ExpiringSecret>, Error> {
        expiring_secrets(&mut self.0, until).await
    }

    /// See [`admin_emails`].
    pub async fn admin_emails(&mut self, subscription_id: Uuid) -> Result<Vec<String>, Error> {
        admin_emails(&mut self.0, subscription_id).await
    }

    /// See [`waiting`].
    pub async fn waiting(
        &mut self,
        dest: DestinationKey,
        provider: &str,
    ) -> Result<(i64, Option<DateTime<Utc>>), Error> {
        waiting(&mut self.0, dest, provider).await
    }

    /// See [`losses_since`].
    pub async fn losses_since(
        &mut self,
        dest: DestinationKey,
        provider: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64), Error> {
        losses_since(&mut self.0, dest, provider, since).await
    }

    /// See [`destination_name`].
    pub async fn destination_name(
        &mut self,
        dest: DestinationKey,
    ) -> Result<Option<String>, Error> {
        destination_name(&mut self.0, dest).await
    }

    /// See [`subscription_name`].
    pub async fn subscription_name(&mut self, id: Uuid) -> Result<Option<String>, Error> {
        subscription_name(&mut self.0, id).await
    }

    /// See [`enqueue`].
    pub async fn enqueue(&mut self, message: &NewMessage, now: DateTime<Utc>) -> Result<(), Error> {
        enqueue(&mut *self.0, message, now).await
    }
}

/// An incident that was just opened, closed or reminded about.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IncidentRow {
    /// Incident id.
    pub id: Uuid,
    /// Subscription.
    pub subscription_id: Uuid,
    /// Destination number.
    pub destination: i16,
    /// Provider id.
    pub provider: String,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// The destination's last error.
    pub reason: String,
    /// Events delivered since it opened (for closing), or the reminder number.
    pub count: i64,
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Subscription.
    pub subscription_id: Uuid,
    /// Unique per intended message.
    pub dedupe_key: String,
    /// `failing`, `reminder`, `recovered` or `expired`.
    pub kind: &'static str,
    /// Address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain text.
    pub text_body: String,
    /// HTML.
    pub html_body: String,
}

/// A queued message claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Row id.
    pub id: i64,
    /// Address.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Plain text.
    pub text_body: String,
    /// HTML.
    pub html_body: String,
    /// Attempts so far (including this one).
    pub attempts: i32,
}

/// Expired events of one destination.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GapRow {
    /// Gap record id.
    pub id: i64,
    /// Subscription.
    pub subscription_id: Uuid,
    /// Destination number.
    pub destination: i16,
    /// Provider.
    pub provider: String,
    /// How many.
    pub expired_events: i64,
    /// Time of the oldest.
    pub oldest_event_at: DateTime<Utc>,
    /// Time of the newest.
    pub newest_event_at: DateTime<Utc>,
}

/// Opens an incident for every enabled destination that is failing and has none open.
pub async fn open_incidents(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
) -> Result<Vec<IncidentRow>, Error> {
    Ok(sqlx::query_as!(
        IncidentRow,
        r#"insert into incidents (id, subscription_id, destination, provider, opened_at, reason, delivered_at_open, last_reminder_at)
         select gen_random_uuid(), d.subscription_id, d.destination, d.provider, $1,
                coalesce(d.last_error, 'Delivery is failing.'), d.delivered_total, $1
         from delivery_destinations d
         join siem_settings s on s.subscription_id = d.subscription_id
              and s.destination = d.destination and s.provider = d.provider and s.enabled
         where d.status = 'failing'
           and not exists (select 1 from incidents i
                           where i.subscription_id = d.subscription_id
                             and i.destination = d.destination and i.provider = d.provider
                             and i.closed_at is null)
         on conflict (subscription_id, destination, provider) where closed_at is null do nothing
         returning id, subscription_id, destination, provider, opened_at, reason,
                   0::bigint as "count!""#,
        now
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Closes the incidents whose destination is healthy again; `count` = events delivered since.
pub async fn close_incidents(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
) -> Result<Vec<IncidentRow>, Error> {
    Ok(sqlx::query_as!(
        IncidentRow,
        r#"update incidents i set closed_at = $1
         from delivery_destinations d
         where i.closed_at is null and d.subscription_id = i.subscription_id
           and d.destination = i.destination and d.provider = i.provider
           and d.status = 'healthy'
         returning i.id, i.subscription_id, i.destination, i.provider, i.opened_at, i.reason,
                   d.delivered_total - i.delivered_at_open as "count!""#,
        now
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Marks the incidents due for a reminder; `count` = the reminder's number.
pub async fn due_reminders(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
    every: chrono::Duration,
) -> Result<Vec<IncidentRow>, Error> {
    Ok(sqlx::query_as!(
        IncidentRow,
        r#"update incidents i set last_reminder_at = $1, reminders = reminders + 1,
                reason = coalesce(d.last_error, i.reason)
         from delivery_destinations d
         where i.closed_at is null and i.last_reminder_at <= $1::timestamptz - $2::interval
           and d.subscription_id = i.subscription_id and d.destination = i.destination
           and d.provider = i.provider
         returning i.id, i.subscription_id, i.destination, i.provider, i.opened_at, i.reason,
                   i.reminders::bigint as "count!""#,
        now,
        // `$2::interval`: described without parameter types, `timestamptz - $2` would read $2
        // as a timestamp; it is an interval when run, as bound. chrono's Duration encodes as an
        // interval, but the macro's check knows only PgInterval.
        every as _
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Closes, without a message, the incidents of destinations an admin switched off (export
/// disabled by a person, not by the destination going away): nobody wants daily reminders
/// about something they turned off on purpose. Returns how many.
pub async fn close_switched_off(
    tx: &mut Transaction<'_, Postgres>,
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    Ok(sqlx::query!(
        "update incidents i set closed_at = $1
         from delivery_destinations d, siem_settings s
         where i.closed_at is null
           and d.subscription_id = i.subscription_id and d.destination = i.destination
           and d.provider = i.provider
           and s.subscription_id = i.subscription_id and s.destination = i.destination
           and (not s.enabled or s.provider <> i.provider)",
        now
    )
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Expires what waited longer than the retention period: each destination's cursor jumps
/// over the events recorded before `cutoff`, up to the first one that is not (never while a
/// worker holds the destination, so nothing in flight is skipped; only the destinations that
/// move are locked), and out-of-order retries that old are dropped. Every jump is
/// a gap record, counted on the destination. The events stay in the audit trail.
pub async fn expire(
    tx: &mut Transaction<'_, Postgres>,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<GapRow>, Error> {
    let mut gaps = sqlx::query_as!(
        GapRow,
        "with cand as (
            select d.subscription_id, d.destination, d.provider, d.cursor as old_cursor,
                   cut.new_cursor
            from delivery_destinations d join subscriptions sub on sub.id = d.subscription_id,
            lateral (
                -- Up to the first event after the cursor that is not old yet. The sequencer
                -- keeps `recorded_at` monotonic in `seq`; events recorded before it was not,
                -- so this never skips a young one either way.
                select coalesce(
                    (select e.seq - 1 from audit_events e
                     where e.subscription_id = d.subscription_id and e.seq > d.cursor
                       and e.seq <= coalesce(d.off_at_seq, sub.last_seq)
                       and e.recorded_at >= $1
                     order by e.seq limit 1),
                    coalesce(d.off_at_seq, sub.last_seq)) as new_cursor
            ) cut
            where (d.leased_until is null or d.leased_until < now())
              and cut.new_cursor > d.cursor
              -- Only the rows that move are locked: claims, pauses and saves of the others
              -- never wait for this pass.
            for no key update of d skip locked
         ), moved as (
            update delivery_destinations d
            set cursor = c.new_cursor, inflight_to = greatest(d.inflight_to, c.new_cursor),
                expired_total = d.expired_total + (c.new_cursor - c.old_cursor)
            from cand c
            where d.subscription_id = c.subscription_id and d.destination = c.destination
              and d.provider = c.provider and c.new_cursor > c.old_cursor
            returning d.subscription_id, d.destination, d.provider, c.old_cursor, c.new_cursor
         )
         insert into delivery_gaps (subscription_id, destination, provider, expired_events,
                                    oldest_event_at, newest_event_at, recorded_at, from_seq, to_seq)
         select m.subscription_id, m.destination, m.provider, m.new_cursor - m.old_cursor,
                (select occurred_at from audit_events e
                 where e.subscription_id = m.subscription_id and e.seq = m.old_cursor + 1),
                (select occurred_at from audit_events e
                 where e.subscription_id = m.subscription_id and e.seq = m.new_cursor),
                $2, m.old_cursor + 1, m.new_cursor
         from moved m
         returning id, subscription_id, destination, provider, expired_events, oldest_event_at,
                   newest_event_at",
        cutoff,
        now
    )
    .fetch_all(&mut **tx)
    .await?;
    gaps.extend(
        sqlx::query_as!(
            GapRow,
            "with free as (
                -- Destinations with old retries that nobody holds, locked without waiting:
                -- this pass never waits on a row a save or a claim holds.
                select d.subscription_id, d.destination, d.provider from delivery_destinations d
                where (d.leased_until is null or d.leased_until < now())
                  and exists (select 1 from delivery_parked p join audit_events e
                                on e.subscription_id = p.subscription_id and e.seq = p.seq
                              where p.subscription_id = d.subscription_id
                                and p.destination = d.destination
                                and p.provider = d.provider and p.state = 'retry'
                                and e.recorded_at < $1)
                for no key update of d skip locked
             ), expired as (
                delete from delivery_parked p using audit_events e, free d
                where p.state = 'retry' and e.subscription_id = p.subscription_id
                  and e.seq = p.seq and e.recorded_at < $1
                  and d.subscription_id = p.subscription_id and d.destination = p.destination
                  and d.provider = p.provider
                returning p.subscription_id, p.destination, p.provider, e.occurred_at
             ), grouped as (
                select subscription_id, destination, provider, count(*) as n,
                       min(occurred_at) as oldest, max(occurred_at) as newest
                from expired group by subscription_id, destination, provider
             ), counted as (
                update delivery_destinations d set expired_total = d.expired_total + g.n
                from grouped g
                where d.subscription_id = g.subscription_id and d.destination = g.destination
                  and d.provider = g.provider
             )
             insert into delivery_gaps (subscription_id, destination, provider, expired_events,
                                        oldest_event_at, newest_event_at, recorded_at)
             select subscription_id, destination, provider, n, oldest, newest, $2 from grouped
             returning id, subscription_id, destination, provider, expired_events,
                       oldest_event_at, newest_event_at",
            cutoff,
            now
        )
        .fetch_all(&mut **tx)
        .await?,
    );
    Ok(gaps)
}

/// The admins' addresses of a subscription.
pub async fn admin_emails(
    tx: &mut Transaction<'_, Postgres>,
    subscription_id: Uuid,
) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar!(
        "select u.email from memberships m join users u on u.id = m.user_id
         where m.subscription_id = $1 and m.role = 'admin' order by u.email",
        subscription_id
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Events a destination still owes and when the oldest was recorded (cursor arithmetic).
pub async fn waiting(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
) -> Result<(i64, Option<DateTime<Utc>>), Error> {
    // The text of OWED_SQL. Its `waiting` is never null, but the file cannot say so without
    // renaming the column that the settings page reads: a null fails as decoding it would.
    let row = sqlx::query_file!(
        "src/store/sql/owed.sql",
        dest.subscription_id,
        provider,
        dest.no()
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((super::not_null(row.waiting, "waiting")?, row.oldest))
}

/// Events expired or parked for a destination since `since`.
pub async fn losses_since(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
    since: DateTime<Utc>,
) -> Result<(i64, i64), Error> {
    let row = sqlx::query!(
        r#"select
            coalesce((select sum(expired_events)::bigint from delivery_gaps
                      where subscription_id = $1 and destination = $4 and provider = $2
                        and recorded_at >= $3), 0)
                as "expired!",
            (select count(*) from delivery_parked
             where subscription_id = $1 and destination = $4 and provider = $2
               and state = 'parked' and parked_at >= $3)
                as "parked!""#,
        dest.subscription_id,
        provider,
        since,
        dest.no()
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.expired, row.parked))
}

/// A sealed secret of a subscription's current, enabled destination that expires soon.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiringSecret {
    pub subscription_id: Uuid,
    pub destination: i16,
    pub provider: String,
    /// The name it is stored under.
    pub name: String,
    pub expires_on: chrono::NaiveDate,
}

/// Secrets of enabled destinations that expire on or before `until`.
pub async fn expiring_secrets(
    tx: &mut Transaction<'_, Postgres>,
    until: chrono::NaiveDate,
) -> Result<Vec<ExpiringSecret>, Error> {
    Ok(sqlx::query_as!(
        ExpiringSecret,
        r#"select x.subscription_id, x.destination, x.provider, x.name,
                  x.expires_on as "expires_on!"
         from siem_secrets x
         join siem_settings s on s.subscription_id = x.subscription_id
                             and s.destination = x.destination
                             and s.provider = x.provider and s.enabled
         where x.expires_on is not null and x.expires_on <= $1
         order by x.subscription_id, x.destination, x.provider, x.name"#,
        until
    )
    .fetch_all(&mut **tx)
    .await?)
}

/// Queues a message unless one with the same dedupe key exists.
pub async fn enqueue<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    message: &NewMessage,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query!(
        "insert into notifications (subscription_id, dedupe_key, kind, recipient, subject, text_body, html_body, created_at, next_attempt_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         on conflict on constraint notifications_dedupe_key do nothing",
        message.subscription_id,
        &message.dedupe_key,
        message.kind,
        &message.recipient,
        &message.subject,
        &message.text_body,
        &message.html_body,
        now
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Claims up to `limit` due messages for `lease`.
pub async fn claim_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease: chrono::Duration,
    limit: i64,
) -> Result<Vec<OutboxRow>, Error> {
    Ok(sqlx::query_as!(
        OutboxRow,
        "update notifications n set sending_until = $1::timestamptz + $2, attempts = n.attempts + 1
         where n.id in (
            select id from notifications
            where sent_at is null and next_attempt_at <= $1
              and (sending_until is null or sending_until < $1)
            order by id limit $3
            for update skip locked)
         returning n.id, n.recipient, n.subject, n.text_body, n.html_body, n.attempts",
        now,
        // chrono's Duration encodes as an interval; the macro's check knows only PgInterval.
        lease as _,
        limit
    )
    .fetch_all(pool)
    .await?)
}

/// Marks a message sent (`via` = `smtp` or `logged`).
/// An invitation's link is a credential: once the message is sent (or recorded without SMTP),
/// its bodies keep no link.
pub async fn mark_sent(pool: &PgPool, id: i64, now: DateTime<Utc>, via: &str) -> Result<(), Error> {
    sqlx::query!(
        "update notifications set sent_at = $2, sent_via = $3, sending_until = null, last_error = null,
            text_body = case when kind = 'invite'
                then regexp_replace(text_body, 'https?://[^[:space:]\"<>]*/invite/[^[:space:]\"<>]+',
                                    '[invitation link removed after sending]', 'g')
                else text_body end,
            html_body = case when kind = 'invite'
                then regexp_replace(html_body, 'https?://[^[:space:]\"<>]*/invite/[^[:space:]\"<>]+',
                                    '[invitation link removed after sending]', 'g')
                else html_body end
         where id = $1",
        id,
        now,
        via
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Schedules another attempt.
pub async fn mark_failed(
    pool: &PgPool,
    id: i64,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "update notifications set next_attempt_at = $2, last_error = $3, sending_until = null where id = $1",
        id,
        next,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Keeps the newest `keep` attempts per destination.
pub async fn prune_attempts(pool: &PgPool, keep: i64) -> Result<(), Error> {
    sqlx::query!(
        "delete from delivery_attempts a using (
            select subscription_id, id,
                   row_number() over (partition by subscription_id, destination, provider
                                      order by at desc, id desc) as n
            from delivery_attempts) r
         where a.subscription_id = r.subscription_id and a.id = r.id and r.n > $1",
        keep
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A subscription's name.
pub async fn subscription_name(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar!("select name from subscriptions where id = $1", id)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// The name an administrator gave a destination, if any.
pub async fn destination_name(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!(
        "select name from siem_settings where subscription_id = $1 and destination = $2",
        dest.subscription_id,
        dest.no()
    )
    .fetch_optional(&mut **tx)
    .await?
    .flatten())
}
