//! SIEM settings: the switch, each provider's fields, sealed secrets, and the change history.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Error;
use crate::{
    crypto::Sealed,
    domain::destination::{DestinationKey, DestinationNo, MAX_DESTINATIONS},
};

/// The switch and provider of a destination, with who changed them last.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingsRow {
    /// The name an administrator gave it, if any.
    pub name: Option<String>,
    /// Send Audit Logs to SIEM.
    pub enabled: bool,
    /// Provider id, e.g. `datadog`.
    pub provider: String,
    /// When the settings last changed.
    pub updated_at: DateTime<Utc>,
    /// Who changed them.
    pub updated_by_email: String,
}

/// A sealed secret with its hint.
#[derive(Debug, Clone)]
pub struct SecretRow {
    /// The sealed value.
    pub sealed: Sealed,
    /// Its last 4 characters.
    pub hint: String,
    /// When it expires, if an administrator said.
    pub expires_on: Option<chrono::NaiveDate>,
}

/// One history entry.
#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct HistoryRow {
    /// Who.
    pub user_email: String,
    /// `saved` or `denied`.
    pub outcome: String,
    /// What changed: a JSON array of sentences.
    pub changes: Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// A destination's settings, if ever saved.
pub async fn settings(pool: &PgPool, dest: DestinationKey) -> Result<Option<SettingsRow>, Error> {
    Ok(sqlx::query_as!(
        SettingsRow,
        "select name, enabled, provider, updated_at, updated_by_email
         from siem_settings where subscription_id = $1 and destination = $2",
        dest.subscription_id,
        dest.no()
    )
    .fetch_optional(pool)
    .await?)
}

/// Writes the switch, provider and name (`None` keeps the stored name).
pub async fn upsert_settings(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    enabled: bool,
    provider: &str,
    name: Option<Option<&str>>,
    user: (Uuid, &str),
) -> Result<(), Error> {
    sqlx::query!(
        "insert into siem_settings (subscription_id, destination, enabled, provider, name,
                                    updated_at, updated_by, updated_by_email)
         values ($1, $2, $3, $4, $5, now(), $6, $7)
         on conflict (subscription_id, destination) do update set
            enabled = excluded.enabled, provider = excluded.provider,
            name = case when $8 then excluded.name else siem_settings.name end,
            updated_at = now(),
            updated_by = excluded.updated_by, updated_by_email = excluded.updated_by_email",
        dest.subscription_id,
        dest.no(),
        enabled,
        provider,
        name.flatten(),
        user.0,
        user.1,
        name.is_some()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a provider's plain fields.
pub async fn upsert_provider_fields(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
    fields: &Value,
) -> Result<(), Error> {
    sqlx::query!(
        "insert into siem_provider_fields (subscription_id, destination, provider, fields)
         values ($1, $4, $2, $3)
         on conflict on constraint siem_provider_fields_pkey do update set fields = excluded.fields",
        dest.subscription_id,
        provider,
        fields,
        dest.no()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a sealed secret.
pub async fn upsert_secret(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
    name: &str,
    sealed: &Sealed,
    hint: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "insert into siem_secrets (subscription_id, provider, name, key_id, nonce, ciphertext, hint, destination)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict on constraint siem_secrets_pkey do update set
            key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext,
            hint = excluded.hint, updated_at = now(), expires_on = null",
        dest.subscription_id,
        provider,
        name,
        &sealed.key_id,
        &sealed.nonce,
        &sealed.ciphertext,
        hint,
        dest.no()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored secret sealed with a key other than the current one (for a key rotation).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedSecretRow {
    /// Subscription.
    pub subscription_id: Uuid,
    /// Destination number.
    pub destination: i16,
    /// Provider id.
    pub provider: String,
    /// Secret name.
    pub name: String,
    /// Id of the key that sealed it.
    pub key_id: String,
    /// Nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl SealedSecretRow {
    /// The seal, to open.
    pub fn sealed(&self) -> Sealed {
        Sealed {
            key_id: self.key_id.clone(),
            nonce: self.nonce.clone(),
            ciphertext: self.ciphertext.clone(),
        }
    }
}

/// Every stored secret not sealed with `key_id`.
pub async fn secrets_not_sealed_with(
    pool: &PgPool,
    key_id: &str,
) -> Result<Vec<SealedSecretRow>, Error> {
    Ok(sqlx::query_as!(
        SealedSecretRow,
        "select subscription_id, destination, provider, name, key_id, nonce, ciphertext from siem_secrets
         where key_id <> $1",
        key_id
    )
    .fetch_all(pool)
    .await?)
}

/// Replaces a stored secret's seal, leaving its hint and expiry as they are.
pub async fn reseal_secret(
    tx: &mut Transaction<'_, Postgres>,
    row: &SealedSecretRow,
    fresh: &Sealed,
) -> Result<(), Error> {
    sqlx::query!(
        "update siem_secrets set key_id = $4, nonce = $5, ciphertext = $6
         where subscription_id = $1 and provider = $2 and name = $3 and destination = $7",
        row.subscription_id,
        &row.provider,
        &row.name,
        &fresh.key_id,
        &fresh.nonce,
        &fresh.ciphertext,
        row.destination
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A key rotation's writes in one transaction: every secret re-sealed, test secrets sealed with
/// another key dropped, then `before_commit` (writing the new key file): when anything fails,
/// nothing changed.
pub async fn reseal_all<E: From<Error>>(
    pool: &PgPool,
    fresh: &[(SealedSecretRow, Sealed)],
    key_id: &str,
    before_commit: impl FnOnce() -> Result<(), E>,
) -> Result<(), E> {
    let mut tx = pool.begin().await.map_err(Error::from)?;
    for (row, sealed) in fresh {
        reseal_secret(&mut tx, row, sealed).await?;
    }
    drop_tested_secrets_not_sealed_with(&mut tx, key_id).await?;
    before_commit()?;
    tx.commit().await.map_err(Error::from)?;
    Ok(())
}

/// Drops the secrets held for Save-after-Test that are not sealed with `key_id` (they live
/// minutes; a rotation does not re-seal them).
pub async fn drop_tested_secrets_not_sealed_with(
    tx: &mut Transaction<'_, Postgres>,
    key_id: &str,
) -> Result<(), Error> {
    sqlx::query!("delete from tested_secrets where key_id <> $1", key_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Appends a history entry.
pub async fn record_history(
    executor: impl sqlx::PgExecutor<'_>,
    dest: DestinationKey,
    user_id: Uuid,
    user_email: &str,
    outcome: &str,
    changes: &[String],
) -> Result<(), Error> {
    // Refused attempts coalesce: one row per actor, attempt and minute, counted. A
    // destination removed meanwhile (a button pressed on its page as it went) gets no row: its
    // number is never used again, and its removal is the last word of its history.
    sqlx::query!(
        "insert into siem_settings_history
            (subscription_id, destination, user_id, user_email, outcome, changes, denied_minute)
         select $1, $6::smallint, $2, $3, $4, $5,
                case when $4 = 'denied' then date_trunc('minute', now()) end
         where $6::smallint = 1 or $4 = 'removed'
            or exists (select 1 from siem_settings
                       where subscription_id = $1 and destination = $6::smallint)
         on conflict (subscription_id, destination, user_id, denied_minute, changes)
            where outcome = 'denied'
         do update set repeats = siem_settings_history.repeats + 1, at = excluded.at",
        dest.subscription_id,
        user_id,
        user_email,
        outcome,
        serde_json::json!(changes),
        dest.no()
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// A destination's latest history entries, newest first (the first destination's include
/// every destination added or removed).
pub async fn history(
    pool: &PgPool,
    dest: DestinationKey,
    limit: i64,
) -> Result<Vec<HistoryRow>, Error> {
    Ok(sqlx::query_as!(
        HistoryRow,
        r#"select user_email, outcome, case when repeats > 1
                    then changes || jsonb_build_array(repeats || ' times within the minute')
                    else changes end as "changes!", at
         from siem_settings_history
         where subscription_id = $1
           -- The first destination's history also says which others were added and removed.
           and (destination = $3 or ($3 = 1 and outcome in ('added', 'removed')))
         order by at desc, id desc limit $2"#,
        dest.subscription_id,
        limit,
        dest.no()
    )
    .fetch_all(pool)
    .await?)
}

/// Sets (or clears) when a sealed secret expires.
pub async fn set_secret_expiry(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
    name: &str,
    expires_on: Option<chrono::NaiveDate>,
) -> Result<(), Error> {
    sqlx::query!(
        "update siem_secrets set expires_on = $4
         where subscription_id = $1 and provider = $2 and name = $3 and destination = $5",
        dest.subscription_id,
        provider,
        name,
        expires_on,
        dest.no()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a sealed secret.
pub async fn delete_secret(
    tx: &mut Transaction<'_, Postgres>,
    dest: DestinationKey,
    provider: &str,
    name: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "delete from siem_secrets
         where subscription_id = $1 and provider = $2 and name = $3 and destination = $4",
        dest.subscription_id,
        provider,
        name,
        dest.no()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every provider's plain fields of a destination: (provider, fields).
pub async fn all_provider_fields(
    pool: &PgPool,
    dest: DestinationKey,
) -> Result<Vec<(String, Value)>, Error> {
    let rows = sqlx::query!(
        "select provider, fields from siem_provider_fields
         where subscription_id = $1 and destination = $2",
        dest.subscription_id,
        dest.no()
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.provider, r.fields)).collect())
}

#[derive(sqlx::FromRow)]
struct SecretListRow {
    provider: String,
    name: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    hint: String,
    expires_on: Option<chrono::NaiveDate>,
}

/// Every sealed secret of a destination: (provider, name, secret).
pub async fn all_secrets(
    pool: &PgPool,
    dest: DestinationKey,
) -> Result<Vec<(String, String, SecretRow)>, Error> {
    let rows: Vec<SecretListRow> = sqlx::query_as!(
        SecretListRow,
        "select provider, name, key_id, nonce, ciphertext, hint, expires_on from siem_secrets
         where subscription_id = $1 and destination = $2",
        dest.subscription_id,
        dest.no()
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let sealed = Sealed {
                key_id: r.key_id,
                nonce: r.nonce,
                ciphertext: r.ciphertext,
            };
            (
                r.provider,
                r.name,
                SecretRow {
                    sealed,
                    hint: r.hint,
                    expires_on: r.expires_on,
                },
            )
        })
        .collect())
}

/// Secrets held after a green Test Connection (see the migration `tested_secrets`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TestedSecrets {
    /// Address field → value, as tested.
    pub addresses: serde_json::Value,
    /// Master key id.
    pub key_id: String,
    /// Nonce.
    pub nonce: Vec<u8>,
    /// Sealed JSON object of field → secret.
    pub ciphertext: Vec<u8>,
}

/// Holds the secrets a session just tested, until `expires_at`.
pub async fn hold_tested_secrets(
    pool: &PgPool,
    dest: DestinationKey,
    session_digest: &[u8],
    provider: &str,
    addresses: &serde_json::Value,
    sealed: &Sealed,
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query!(
        "insert into tested_secrets (subscription_id, session_digest, provider, addresses, key_id, nonce, ciphertext, expires_at, destination)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict on constraint tested_secrets_pkey do update set
            addresses = excluded.addresses, key_id = excluded.key_id, nonce = excluded.nonce,
            ciphertext = excluded.ciphertext, expires_at = excluded.expires_at",
        dest.subscription_id,
        session_digest,
        provider,
        addresses,
        &sealed.key_id,
        &sealed.nonce,
        &sealed.ciphertext,
        expires_at,
        dest.no()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The secrets this session tested for `provider`, if still held.
pub async fn tested_secrets(
    pool: &PgPool,
    dest: DestinationKey,
    session_digest: &[u8],
    provider: &str,
    now: DateTime<Utc>,
) -> Result<Option<TestedSecrets>, Error> {
    Ok(sqlx::query_as!(
        TestedSecrets,
        "select addresses, key_id, nonce, ciphertext from tested_secrets
         where subscription_id = $1 and session_digest = $2 and provider = $3 and expires_at > $4
           and destination = $5",
        dest.subscription_id,
        session_digest,
        provider,
        now,
        dest.no()
    )
    .fetch_optional(pool)
    .await?)
}

/// Forgets what a session tested for a destination (after a save) and every expired hold.
pub async fn drop_tested_secrets(
    pool: &PgPool,
    dest: DestinationKey,
    session_digest: &[u8],
) -> Result<(), Error> {
    sqlx::query!(
        "delete from tested_secrets
         where (subscription_id = $1 and session_digest = $2 and destination = $3)
            or expires_at < now()",
        dest.subscription_id,
        session_digest,
        dest.no()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Which save of a subscription's settings a reader saw: the time of that save (`None` before
/// the first). Every save moves it, so a writer that presents it learns whether someone saved
/// in between (the REST API's `ETag`, the page's hidden `settings_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsVersion(pub Option<DateTime<Utc>>);

impl SettingsVersion {
    /// The version of what is stored (`None`: never saved).
    pub fn of(row: Option<&SettingsRow>) -> SettingsVersion {
        SettingsVersion(row.map(|r| r.updated_at))
    }

    /// As text: the save's time in microseconds since the epoch, `0` before the first.
    pub fn token(self) -> String {
        self.0.map_or(0, |t| t.timestamp_micros()).to_string()
    }

    /// Reads [`SettingsVersion::token`] back.
    pub fn parse(token: &str) -> Option<SettingsVersion> {
        let micros: i64 = token.trim().parse().ok()?;
        if micros == 0 {
            return Some(SettingsVersion(None));
        }
        DateTime::from_timestamp_micros(micros).map(|t| SettingsVersion(Some(t)))
    }
}

/// One save of a destination's SIEM settings, checked and sealed: what [`save_settings`]
/// writes.
pub struct SettingsSave<'a> {
    /// The version the writer read (`None`: save whatever is stored now).
    pub expected: Option<SettingsVersion>,
    pub subscription_id: Uuid,
    /// The destination saved, or the one added.
    pub slot: Slot,
    /// The destination's name (`None` keeps the stored one; `Some(None)` clears it).
    pub name: Option<Option<&'a str>>,
    /// Who saves: (user id, email).
    pub user: (Uuid, &'a str),
    pub enabled: bool,
    pub provider: &'a str,
    /// The provider's typed settings.
    pub settings: &'a serde_json::Value,
    /// Secrets to delete, by storage name.
    pub removed_secrets: &'a [&'static str],
    /// Secrets to store: (storage name, sealed value, hint), sealed for the destination that
    /// [`SettingsSave::slot`] names (an added one's number is known before sealing:
    /// see [`next_destination`]).
    pub new_secrets: Vec<(&'a str, Sealed, &'a str)>,
    /// "Expires on" dates to set, by storage name (`None` removes a date).
    pub expiries: Vec<(&'a str, Option<chrono::NaiveDate>)>,
    /// The events to send (`None` keeps the stored filter; `Some(None)` sends all).
    pub filter: Option<Option<&'a [i32]>>,
    /// On a provider switch: the events the previous destination owes go to the new one.
    pub carry_backlog: bool,
}

/// Which destination a save writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// An existing destination (the first exists before its first save).
    Existing(DestinationNo),
    /// A new one, under the number [`next_destination`] gave (its secrets are sealed for that
    /// number); at most [`MAX_DESTINATIONS`] live. Another add that took the number first makes
    /// this save stale.
    Added(DestinationNo),
}

/// What a save did beyond storing what it was given: the history entry is written from it.
pub struct SavedSettings {
    pub switched: super::delivery::Switched,
    /// The filter before, when a new one was given.
    pub filter_before: Option<crate::domain::events::EventFilter>,
}

/// The number the next added destination of a subscription will get (its secrets are sealed
/// for that number before the save). [`save_settings`] checks it under the subscription's lock:
/// when another add took it first, the save is refused as stale.
pub async fn next_destination(
    pool: &PgPool,
    subscription_id: Uuid,
) -> Result<DestinationNo, Error> {
    let made = sqlx::query_scalar!(
        "select destinations_made from subscriptions where id = $1",
        subscription_id
    )
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound)?;
    DestinationNo::new(made.saturating_add(1)).ok_or(Error::NotFound)
}

/// Hands out number `expected` to a destination being added, under the subscription's lock
/// (`made`: the numbers handed out so far): refused past [`MAX_DESTINATIONS`] live, and stale
/// when another add took the number meanwhile (the secrets were sealed for it).
async fn take_number(
    tx: &mut Transaction<'_, Postgres>,
    sub: Uuid,
    expected: DestinationNo,
    made: i16,
) -> Result<DestinationKey, Error> {
    // Counted after the lock (a statement of its own, so it sees what committed while this
    // one waited); destination 1 counts even before its first save.
    let others = sqlx::query_scalar!(
        r#"select count(*) as "n!" from siem_settings
           where subscription_id = $1 and destination <> 1"#,
        sub
    )
    .fetch_one(&mut **tx)
    .await?;
    let live = usize::try_from(others)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if live >= MAX_DESTINATIONS {
        return Err(Error::TooManyDestinations);
    }
    if Some(expected.get()) != made.checked_add(1) {
        return Err(Error::Stale {
            by: "another administrator (who added a destination)".to_owned(),
            at: Utc::now(),
        });
    }
    sqlx::query!(
        "update subscriptions set destinations_made = $2 where id = $1",
        sub,
        expected.get()
    )
    .execute(&mut **tx)
    .await?;
    Ok(DestinationKey::new(sub, expected))
}

/// Stores a save in one transaction: settings, secrets, expiry dates, the delivery switch, the
/// event filter and the history entry (`changes`, worded from what the switch and the filter
/// did) commit together or not at all.
pub async fn save_settings(
    pool: &PgPool,
    save: &SettingsSave<'_>,
    changes: impl FnOnce(&SavedSettings) -> Vec<String>,
) -> Result<SavedSettings, Error> {
    let sub = save.subscription_id;
    let mut tx = pool.begin().await?;
    // The subscription's row, as the switch below takes it anyway (same lock mode, same order):
    // two saves of one subscription take turns here, so the second sees the first's version.
    let locked = sqlx::query!(
        "select destinations_made from subscriptions where id = $1 for no key update",
        sub
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let dest = match save.slot {
        Slot::Existing(number) => DestinationKey::new(sub, number),
        Slot::Added(expected) => {
            take_number(&mut tx, sub, expected, locked.destinations_made).await?
        }
    };
    let current = sqlx::query!(
        "select updated_at, updated_by_email from siem_settings
         where subscription_id = $1 and destination = $2",
        sub,
        dest.no()
    )
    .fetch_optional(&mut *tx)
    .await?;
    if current.is_none() && !dest.number.is_first() && matches!(save.slot, Slot::Existing(_)) {
        // Destinations after the first exist once added; a removed one stays removed.
        return Err(Error::NotFound);
    }
    if let Some(expected) = save.expected {
        let (at, by) = current
            .as_ref()
            .map(|c| (Some(c.updated_at), c.updated_by_email.clone()))
            .unwrap_or_default();
        if expected.0 != at {
            return Err(Error::Stale {
                by,
                at: at.unwrap_or_default(),
            });
        }
    }
    upsert_settings(
        &mut tx,
        dest,
        save.enabled,
        save.provider,
        save.name,
        save.user,
    )
    .await?;
    upsert_provider_fields(&mut tx, dest, save.provider, save.settings).await?;
    for name in save.removed_secrets {
        delete_secret(&mut tx, dest, save.provider, name).await?;
    }
    for (name, sealed, hint) in &save.new_secrets {
        upsert_secret(&mut tx, dest, save.provider, name, sealed, hint).await?;
    }
    let switched = super::delivery::apply_switch(
        &mut tx,
        dest,
        save.enabled.then_some(save.provider),
        save.carry_backlog,
    )
    .await?;
    for (name, date) in &save.expiries {
        set_secret_expiry(&mut tx, dest, save.provider, name, *date).await?;
    }
    let filter_before = match save.filter {
        Some(ids) => super::delivery::set_filter(&mut tx, dest, save.provider, ids).await?,
        None => None,
    };
    let saved = SavedSettings {
        switched,
        filter_before,
    };
    let changes = changes(&saved);
    let outcome = match save.slot {
        Slot::Added(_) => "added",
        Slot::Existing(_) => "saved",
    };
    record_history(&mut *tx, dest, save.user.0, save.user.1, outcome, &changes).await?;
    tx.commit().await?;
    Ok(saved)
}

/// One destination of a subscription, as the page's list and the API's collection show it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DestinationRow {
    /// Its number (see [`DestinationRow::number`]).
    pub destination: i16,
    pub name: Option<String>,
    pub provider: String,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
    /// Delivery's state, when it ever sent: `healthy` or `failing`.
    pub status: Option<String>,
    /// Paused by an administrator or by the destination.
    pub paused: bool,
    /// Events recorded and not yet sent.
    pub owed: i64,
}

impl DestinationRow {
    /// Its number.
    pub fn number(&self) -> DestinationNo {
        DestinationNo::stored(self.destination)
    }

    /// Its state in a word, as the API says it: `off`, `paused`, `failing` or `on`.
    pub fn state(&self) -> &'static str {
        if !self.enabled {
            "off"
        } else if self.paused {
            "paused"
        } else if self.status.as_deref() == Some("failing") {
            "failing"
        } else {
            "on"
        }
    }
}

/// A subscription's (`$1`) destinations that were ever saved, by number: shared by
/// [`destinations`] and the settings page's single statement. Owed events by cursor
/// arithmetic, as the panel counts them.
pub const DESTINATIONS_SQL: &str = include_str!("sql/destinations.sql");

/// A subscription's destinations that were ever saved, by number.
pub async fn destinations(
    pool: &PgPool,
    subscription_id: Uuid,
) -> Result<Vec<DestinationRow>, Error> {
    Ok(sqlx::query_file_as!(
        DestinationRow,
        "src/store/sql/destinations.sql",
        subscription_id
    )
    .fetch_all(pool)
    .await?)
}

/// What removing a destination found.
#[derive(Debug, Clone)]
pub struct Removed {
    /// Its name or provider id, for the history.
    pub name: Option<String>,
    pub provider: String,
    /// Events it still owed: recorded, never sent, now never will be.
    pub unsent: i64,
}

/// Removes a destination that is not the first: its settings, secrets and delivery state go
/// (its incidents with them), what it still owed is counted, and the history says who removed
/// it. `None` when there is no such destination.
pub async fn remove_destination(
    pool: &PgPool,
    dest: DestinationKey,
    user: (Uuid, &str),
    changes: impl FnOnce(&Removed) -> Vec<String>,
) -> Result<Option<Removed>, Error> {
    let mut tx = pool.begin().await?;
    let last_seq = sqlx::query_scalar!(
        "select last_seq from subscriptions where id = $1 for no key update",
        dest.subscription_id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound)?;
    let Some(row) = sqlx::query!(
        "delete from siem_settings where subscription_id = $1 and destination = $2
         returning name, provider",
        dest.subscription_id,
        dest.no()
    )
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    // What every delivery row of the destination still owed (a provider switched away from
    // may still owe events too).
    let unsent = sqlx::query_scalar!(
        r#"select coalesce(sum(greatest(coalesce(d.off_at_seq, $3) - d.cursor, 0)
                 + (select count(*) from delivery_parked p
                    where p.subscription_id = d.subscription_id and p.destination = d.destination
                      and p.provider = d.provider and p.state = 'retry')), 0)::bigint as "unsent!"
           from delivery_destinations d where d.subscription_id = $1 and d.destination = $2"#,
        dest.subscription_id,
        dest.no(),
        last_seq
    )
    .fetch_one(&mut *tx)
    .await?;
    for statement in [
        sqlx::query!(
            "delete from delivery_destinations where subscription_id = $1 and destination = $2",
            dest.subscription_id,
            dest.no()
        ),
        sqlx::query!(
            "delete from siem_provider_fields where subscription_id = $1 and destination = $2",
            dest.subscription_id,
            dest.no()
        ),
        sqlx::query!(
            "delete from siem_secrets where subscription_id = $1 and destination = $2",
            dest.subscription_id,
            dest.no()
        ),
        sqlx::query!(
            "delete from tested_secrets where subscription_id = $1 and destination = $2",
            dest.subscription_id,
            dest.no()
        ),
    ] {
        statement.execute(&mut *tx).await?;
    }
    let removed = Removed {
        name: row.name,
        provider: row.provider,
        unsent,
    };
    record_history(
        &mut *tx,
        dest,
        user.0,
        user.1,
        "removed",
        &changes(&removed),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(removed))
}
