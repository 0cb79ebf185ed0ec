//! The settings page's reads, one statement each: the page itself (session, membership,
//! settings, every provider's fields and secrets, history and the health panel) and the panel
//! alone (after a form post). Lists come back as JSON aggregates, so a page costs one round
//! trip whatever it shows, and the panel's counts are cursor arithmetic, so it costs the same
//! with a million events owed as with none.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::{types::Json, PgPool};
use uuid::Uuid;

use super::{
    accounts::{MembershipRow, SessionRow},
    delivery::{
        AttemptRow, DestinationHealth, GapSummary, NotificationSummary, ParkedRow, OWED_SQL,
    },
    siem::{HistoryRow, SecretRow, SettingsRow},
    Error,
};
use crate::{crypto::Sealed, domain::destination::DestinationKey};

/// What the delivery health panel lists about a subscription's current destination.
#[derive(Debug, Clone, Default)]
pub struct PanelRows {
    /// The destination, if it was ever enabled.
    pub health: Option<DestinationHealth>,
    /// Events still owed by destinations of other providers: (provider, count).
    pub stranded: Vec<(String, i64)>,
    /// Latest emails about the subscription.
    pub notifications: Vec<NotificationSummary>,
    /// Latest parked events.
    pub parked: Vec<ParkedRow>,
    /// Latest attempts.
    pub attempts: Vec<AttemptRow>,
    /// Latest gap records.
    pub gaps: Vec<GapSummary>,
}

/// Everything the settings page shows, read in one statement.
#[derive(Debug, Clone)]
pub struct SettingsSnapshot {
    /// The signed-in user.
    pub session: SessionRow,
    /// The user's membership of the subscription; `None` for a stranger.
    pub membership: Option<MembershipRow>,
    /// The subscription's part (the same for every member).
    pub page: SubscriptionPage,
}

/// What the settings page shows of a subscription, whoever looks.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPage {
    /// The switch and the chosen provider.
    pub settings: Option<SettingsRow>,
    /// Typed settings per provider: (provider, settings).
    pub fields: Vec<(String, Value)>,
    /// Sealed secrets: (provider, name, secret).
    pub secrets: Vec<(String, String, SecretRow)>,
    /// Latest settings history.
    pub history: Vec<HistoryRow>,
    /// The health panel of the current destination.
    pub panel: PanelRows,
    /// Every destination of the subscription, by number.
    pub destinations: Vec<super::siem::DestinationRow>,
}

/// The panel's columns over `sub` (a subscription id expression), `dest` (a destination
/// number expression), `provider` and `rows`.
fn panel_columns(sub: &str, dest: &str, provider: &str, rows: &str) -> String {
    // Owed events and the oldest of them: cursor arithmetic, as the metrics count them.
    let owed = OWED_SQL
        .replace("$1", sub)
        .replace("$2", provider)
        .replace("$3", dest);
    format!(
        "(select row_to_json(h) from (
             with owed as ({owed})
             select d.status, d.last_success_at, d.last_error, d.last_error_at, d.failing_since,
                    d.delivered_total, d.duplicates_total, d.takeovers_total, d.expired_total,
                    d.next_attempt_at, d.paused_reason, d.paused_at, d.filtered_total,
                    d.send_event_ids, d.replay_from, d.replay_next, d.replay_to,
                    d.unsent_from_seq, d.unsent_to_seq,
                    (select e.recorded_at from audit_events e
                     where e.subscription_id = d.subscription_id and e.seq = d.unsent_from_seq)
                        as unsent_from_at,
                    (select e.recorded_at from audit_events e
                     where e.subscription_id = d.subscription_id and e.seq = d.unsent_to_seq)
                        as unsent_to_at,
                    owed.waiting as pending, owed.oldest as oldest_pending,
                    (select count(*) from delivery_parked p
                     where p.subscription_id = d.subscription_id
                       and p.destination = d.destination and p.provider = d.provider
                       and p.state = 'parked') as parked
             from delivery_destinations d, owed
             where d.subscription_id = {sub} and d.destination = {dest}
               and d.provider = {provider}) h) as health,
         (select json_agg(json_build_array(x.provider, x.n)) from (
             select d.provider,
                    greatest(coalesce(d.off_at_seq, s.last_seq) - d.cursor, 0)
                    + (select count(*) from delivery_parked p where p.subscription_id = d.subscription_id
                       and p.destination = d.destination
                       and p.provider = d.provider and p.state = 'retry') as n
             from delivery_destinations d join subscriptions s on s.id = d.subscription_id
             where d.subscription_id = {sub} and d.destination = {dest}
               and d.provider <> {provider}
             order by d.provider) x where x.n > 0) as stranded,
         (select json_agg(x) from (
             select kind, recipient, created_at, sent_via, last_error from notifications
             where subscription_id = {sub} order by created_at desc, id desc limit {rows}) x)
             as notifications,
         (select json_agg(x) from (
             select e.id as event_uuid, p.seq, e.event_id, e.occurred_at,
                    coalesce(p.reason, '') as reason
             from delivery_parked p
             join audit_events e on e.subscription_id = p.subscription_id and e.seq = p.seq
             where p.subscription_id = {sub} and p.destination = {dest}
               and p.provider = {provider} and p.state = 'parked'
             order by p.parked_at desc, p.seq desc limit {rows}) x) as parked,
         (select json_agg(x) from (
             select at, outcome, events, detail from delivery_attempts
             where subscription_id = {sub} and destination = {dest} and provider = {provider}
             order by at desc, id desc limit {rows}) x) as attempts,
         (select json_agg(x) from (
             select expired_events, oldest_event_at, newest_event_at, recorded_at
             from delivery_gaps
             where subscription_id = {sub} and destination = {dest} and provider = {provider}
             order by recorded_at desc, id desc limit {rows}) x) as gaps"
    )
}

#[derive(sqlx::FromRow)]
struct PanelJson {
    health: Option<Json<DestinationHealth>>,
    stranded: Option<Json<Vec<(String, i64)>>>,
    notifications: Option<Json<Vec<NotificationSummary>>>,
    parked: Option<Json<Vec<ParkedRow>>>,
    attempts: Option<Json<Vec<AttemptRow>>>,
    gaps: Option<Json<Vec<GapSummary>>>,
}

impl PanelJson {
    fn rows(self) -> PanelRows {
        fn list<T>(v: Option<Json<Vec<T>>>) -> Vec<T> {
            v.map(|Json(v)| v).unwrap_or_default()
        }
        PanelRows {
            health: self.health.map(|Json(h)| h),
            stranded: list(self.stranded),
            notifications: list(self.notifications),
            parked: list(self.parked),
            attempts: list(self.attempts),
            gaps: list(self.gaps),
        }
    }
}

/// The health panel of a destination, for its provider `provider`.
pub async fn panel(
    pool: &PgPool,
    dest: DestinationKey,
    provider: &str,
    rows: i64,
) -> Result<PanelRows, Error> {
    let sql = format!("select {}", panel_columns("$1", "$4", "$2", "$3"));
    // Dynamic: the panel's columns are spliced in with format!, shared with settings_page.
    let row: PanelJson = sqlx::query_as(&sql)
        .bind(dest.subscription_id)
        .bind(provider)
        .bind(rows)
        .bind(dest.no())
        .fetch_one(pool)
        .await?;
    Ok(row.rows())
}

#[derive(Deserialize)]
struct FieldsJson {
    provider: String,
    fields: Value,
}

#[derive(Deserialize)]
struct SecretJson {
    provider: String,
    name: String,
    key_id: String,
    nonce: String,
    ciphertext: String,
    hint: String,
    expires_on: Option<chrono::NaiveDate>,
}

#[derive(sqlx::FromRow)]
struct PageRow {
    user_id: Uuid,
    email: String,
    csrf_token: String,
    expires_at: DateTime<Utc>,
    subscription_id: Option<Uuid>,
    name: Option<String>,
    role: Option<String>,
    destination_name: Option<String>,
    enabled: Option<bool>,
    provider: Option<String>,
    updated_at: Option<DateTime<Utc>>,
    updated_by_email: Option<String>,
    fields: Option<Json<Vec<FieldsJson>>>,
    secrets: Option<Json<Vec<SecretJson>>>,
    history: Option<Json<Vec<HistoryRow>>>,
    destinations: Option<Json<Vec<super::siem::DestinationRow>>>,
    #[sqlx(flatten)]
    panel: PanelJson,
}

/// The settings page of destination `dest` for the session whose token digest is
/// `token_digest`: `None` without a live session. `default_provider` is the provider shown
/// before any was saved.
pub async fn settings_page(
    pool: &PgPool,
    token_digest: &[u8],
    dest: DestinationKey,
    default_provider: &str,
    panel_rows: i64,
    history_rows: i64,
) -> Result<Option<SettingsSnapshot>, Error> {
    let sql = format!(
        "with se as (
             select s.user_id, u.email, s.csrf_token, s.expires_at
             from sessions s join users u on u.id = s.user_id
             where s.token_digest = $1 and s.expires_at > now()
         ), m as (
             select m.subscription_id, sub.name, m.role
             from memberships m join subscriptions sub on sub.id = m.subscription_id
             where m.user_id = (select user_id from se) and m.subscription_id = $2
         ), st as (
             select name, enabled, provider, updated_at, updated_by_email
             from siem_settings
             where subscription_id = (select subscription_id from m) and destination = $6
         ), cur as (
             select (select subscription_id from m) as sub,
                    coalesce((select provider from st), $3) as provider
         )
         select se.user_id, se.email, se.csrf_token, se.expires_at, m.subscription_id, m.name, m.role,
                st.name as destination_name, st.enabled, st.provider, st.updated_at,
                st.updated_by_email,
                (select json_agg(json_build_object('provider', f.provider, 'fields', f.fields))
                 from siem_provider_fields f
                 where f.subscription_id = cur.sub and f.destination = $6) as fields,
                (select json_agg(json_build_object(
                     'provider', x.provider, 'name', x.name, 'key_id', x.key_id,
                     'nonce', encode(x.nonce, 'hex'), 'ciphertext', encode(x.ciphertext, 'hex'),
                     'hint', x.hint, 'expires_on', x.expires_on))
                 from siem_secrets x
                 where x.subscription_id = cur.sub and x.destination = $6) as secrets,
                (select json_agg(h) from (
                     select user_email, outcome, case when repeats > 1
                                then changes || jsonb_build_array(repeats || ' times within the minute')
                                else changes end as changes, at
                     from siem_settings_history
                     where subscription_id = cur.sub
                       and (destination = $6 or ($6 = 1 and outcome in ('added', 'removed')))
                     order by at desc, id desc limit $5) h) as history,
                (select json_agg(json_build_object(
                     'destination', x.destination, 'name', x.name, 'provider', x.provider,
                     'enabled', x.enabled, 'updated_at', x.updated_at, 'status', x.\"status?\",
                     'paused', x.\"paused!\", 'owed', x.\"owed!\") order by x.destination)
                 from ({destinations}) x) as destinations,
                {}
         from se cross join cur left join m on true left join st on true",
        panel_columns("cur.sub", "$6::smallint", "cur.provider", "$4"),
        destinations = super::siem::DESTINATIONS_SQL.replace("$1", "cur.sub")
    );
    // Dynamic: built with format! around the panel's columns, which the panel alone shares.
    let row: Option<PageRow> = sqlx::query_as(&sql)
        .bind(token_digest)
        .bind(dest.subscription_id)
        .bind(default_provider)
        .bind(panel_rows)
        .bind(history_rows)
        .bind(dest.no())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let membership = match (row.subscription_id, row.name, row.role) {
        (Some(subscription_id), Some(name), Some(role)) => Some(MembershipRow {
            subscription_id,
            name,
            role,
        }),
        _ => None,
    };
    let settings = match (
        row.enabled,
        row.provider,
        row.updated_at,
        row.updated_by_email,
    ) {
        (Some(enabled), Some(provider), Some(updated_at), Some(updated_by_email)) => {
            Some(SettingsRow {
                name: row.destination_name,
                enabled,
                provider,
                updated_at,
                updated_by_email,
            })
        }
        _ => None,
    };
    let secrets = row
        .secrets
        .map(|Json(v)| v)
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            // Hex from the database itself; a value that does not decode reads as unreadable.
            let sealed = Sealed {
                key_id: s.key_id,
                nonce: hex::decode(&s.nonce).unwrap_or_default(),
                ciphertext: hex::decode(&s.ciphertext).unwrap_or_default(),
            };
            (
                s.provider,
                s.name,
                SecretRow {
                    sealed,
                    hint: s.hint,
                    expires_on: s.expires_on,
                },
            )
        })
        .collect();
    Ok(Some(SettingsSnapshot {
        session: SessionRow {
            user_id: row.user_id,
            email: row.email,
            csrf_token: row.csrf_token,
            expires_at: row.expires_at,
        },
        membership,
        page: SubscriptionPage {
            settings,
            fields: row
                .fields
                .map(|Json(v)| v)
                .unwrap_or_default()
                .into_iter()
                .map(|f| (f.provider, f.fields))
                .collect(),
            secrets,
            history: row.history.map(|Json(v)| v).unwrap_or_default(),
            destinations: row.destinations.map(|Json(v)| v).unwrap_or_default(),
            panel: row.panel.rows(),
        },
    }))
}
