//! Subscriptions, users, memberships, sessions, login throttling and the first-run setup token.

use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{violated_constraint, Error};
use crate::domain::account::{Email, Role, SubscriptionName};

/// A user as sign-in needs it.
#[derive(Debug, sqlx::FromRow)]
pub struct UserRow {
    /// User id.
    pub id: Uuid,
    /// Lower-cased email.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A live session and its user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    /// User id.
    pub user_id: Uuid,
    /// User email.
    pub email: String,
    /// CSRF token bound to this session.
    pub csrf_token: String,
    /// When the session ends.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// One of a user's subscriptions.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    /// Subscription id.
    pub subscription_id: Uuid,
    /// Subscription name.
    pub name: String,
    /// `admin` or `reader`.
    pub role: String,
}

impl MembershipRow {
    /// The role, parsed.
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Reader)
    }
}

/// Creates a subscription and returns its id.
pub async fn create_subscription<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    name: &SubscriptionName,
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "insert into subscriptions (id, name) values ($1, $2)",
        id,
        name.as_str()
    )
    .execute(executor)
    .await?;
    Ok(id)
}

/// Whether a subscription exists.
pub async fn subscription_exists(pool: &PgPool, id: Uuid) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"select exists (select 1 from subscriptions where id = $1) as "exists!""#,
        id
    )
    .fetch_one(pool)
    .await?)
}

/// Creates a user, or returns `EmailTaken`.
pub async fn create_user(
    tx: &mut Transaction<'_, Postgres>,
    email: &Email,
    password_hash: &str,
    via: CreatedVia,
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    sqlx::query!(
        "insert into users (id, email, password_hash, created_via) values ($1, $2, $3, $4)",
        id,
        email.as_str(),
        password_hash,
        via.as_str()
    )
    .execute(&mut **tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("users_email_key") => Error::EmailTaken,
        _ => Error::Database(e),
    })?;
    Ok(id)
}

/// How an account was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatedVia {
    /// `cloudpki admin create-user`.
    Operator,
    /// The first-run setup link.
    Setup,
    /// Accepting an invitation (nothing proves who controls the mailbox).
    Invitation,
}

impl CreatedVia {
    fn as_str(self) -> &'static str {
        match self {
            CreatedVia::Operator => "operator",
            CreatedVia::Setup => "setup",
            CreatedVia::Invitation => "invitation",
        }
    }
}

/// The account a membership is given to.
pub enum Account {
    /// One that exists.
    Existing(Uuid),
    /// A new one, created in the same transaction as the membership.
    New {
        email: Email,
        hash: String,
        via: CreatedVia,
    },
}

impl Account {
    /// Its id, creating it first when it is new.
    pub async fn id_in(&self, tx: &mut Transaction<'_, Postgres>) -> Result<Uuid, Error> {
        match self {
            Account::Existing(id) => Ok(*id),
            Account::New { email, hash, via } => create_user(tx, email, hash, *via).await,
        }
    }
}

/// Gives an account (created now if new) a role in a subscription, in one transaction.
pub async fn add_to_subscription(
    pool: &PgPool,
    account: &Account,
    subscription_id: Uuid,
    role: Role,
) -> Result<Uuid, Error> {
    let mut tx = pool.begin().await?;
    let user_id = account.id_in(&mut tx).await?;
    upsert_membership(&mut tx, user_id, subscription_id, role).await?;
    tx.commit().await?;
    Ok(user_id)
}

/// An existing account by email, and whether an admin command (or the first-run setup) made it.
pub async fn user_by_email_for_operator(
    pool: &PgPool,
    email: &Email,
) -> Result<Option<(Uuid, bool)>, Error> {
    let row = sqlx::query!(
        r#"select id, created_via in ('operator', 'setup') as "by_operator!" from users
           where email = $1"#,
        email.as_str()
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.id, r.by_operator)))
}

/// Adds (or changes) a user's role in a subscription.
pub async fn upsert_membership(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    subscription_id: Uuid,
    role: Role,
) -> Result<(), Error> {
    sqlx::query!(
        "insert into memberships (user_id, subscription_id, role) values ($1, $2, $3)
         on conflict on constraint memberships_pkey do update set role = excluded.role",
        user_id,
        subscription_id,
        role.as_str()
    )
    .execute(&mut **tx)
    .await?;
    if role != Role::Admin {
        // No longer an administrator: the invitations they sent stop working.
        super::members::revoke_invites_sent_by(tx, subscription_id, user_id).await?;
    }
    Ok(())
}

/// Finds a user by (normalised) email.
pub async fn find_user_by_email(pool: &PgPool, email: &str) -> Result<Option<UserRow>, Error> {
    Ok(sqlx::query_as!(
        UserRow,
        "select id, email, password_hash from users where email = $1",
        email
    )
    .fetch_optional(pool)
    .await?)
}

/// Finds a user id by email, for the command line.
pub async fn user_id_by_email(
    tx: &mut Transaction<'_, Postgres>,
    email: &Email,
) -> Result<Option<Uuid>, Error> {
    Ok(
        sqlx::query_scalar!("select id from users where email = $1", email.as_str())
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Whether any user exists (first run has none).
pub async fn any_user_exists(pool: &PgPool) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar!(r#"select exists (select 1 from users) as "exists!""#)
            .fetch_one(pool)
            .await?,
    )
}

/// The subscriptions a user belongs to, by name.
pub async fn memberships(pool: &PgPool, user_id: Uuid) -> Result<Vec<MembershipRow>, Error> {
    Ok(sqlx::query_as!(
        MembershipRow,
        "select m.subscription_id, s.name, m.role
         from memberships m join subscriptions s on s.id = m.subscription_id
         where m.user_id = $1
         order by s.name, s.id",
        user_id
    )
    .fetch_all(pool)
    .await?)
}

/// The user's membership of one subscription; `None` when they do not belong to it.
pub async fn membership(
    pool: &PgPool,
    user_id: Uuid,
    subscription_id: Uuid,
) -> Result<Option<MembershipRow>, Error> {
    Ok(sqlx::query_as!(
        MembershipRow,
        "select m.subscription_id, s.name, m.role
         from memberships m join subscriptions s on s.id = m.subscription_id
         where m.user_id = $1 and m.subscription_id = $2",
        user_id,
        subscription_id
    )
    .fetch_optional(pool)
    .await?)
}

/// Stores a new session.
pub async fn create_session(
    pool: &PgPool,
    token_digest: &[u8],
    user_id: Uuid,
    csrf_token: &str,
    lifetime: Duration,
) -> Result<(), Error> {
    sqlx::query!(
        "insert into sessions (token_digest, user_id, csrf_token, expires_at)
         values ($1, $2, $3, now() + $4)",
        token_digest,
        user_id,
        csrf_token,
        // chrono's Duration encodes as an interval; the macro's check knows only PgInterval.
        lifetime as _
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The live session with this token digest, if any.
pub async fn find_session(pool: &PgPool, token_digest: &[u8]) -> Result<Option<SessionRow>, Error> {
    Ok(sqlx::query_as!(
        SessionRow,
        "select s.user_id, u.email, s.csrf_token, s.expires_at
         from sessions s join users u on u.id = s.user_id
         where s.token_digest = $1 and s.expires_at > now()",
        token_digest
    )
    .fetch_optional(pool)
    .await?)
}

/// Replaces a user's password hash.
pub async fn update_password(
    pool: &PgPool,
    user_id: Uuid,
    password_hash: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "update users set password_hash = $2 where id = $1",
        user_id,
        password_hash
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends every session of a user but the one with `keep` (if given); returns how many ended.
pub async fn end_sessions_of(
    pool: &PgPool,
    user_id: Uuid,
    keep: Option<&[u8]>,
) -> Result<u64, Error> {
    Ok(sqlx::query!(
        "delete from sessions where user_id = $1 and ($2::bytea is null or token_digest <> $2)",
        user_id,
        keep
    )
    .execute(pool)
    .await?
    .rows_affected())
}

/// A user's live sessions.
pub async fn count_sessions(pool: &PgPool, user_id: Uuid) -> Result<i64, Error> {
    Ok(sqlx::query_scalar!(
        r#"select count(*) as "count!" from sessions where user_id = $1 and expires_at > now()"#,
        user_id
    )
    .fetch_one(pool)
    .await?)
}

/// Ends a session.
pub async fn delete_session(pool: &PgPool, token_digest: &[u8]) -> Result<(), Error> {
    sqlx::query!("delete from sessions where token_digest = $1", token_digest)
        .execute(pool)
        .await?;
    Ok(())
}

/// Removes expired sessions and old login failures.
pub async fn purge_expired(pool: &PgPool) -> Result<(), Error> {
    sqlx::query!("delete from sessions where expires_at <= now()")
        .execute(pool)
        .await?;
    sqlx::query!("delete from login_failures where failed_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(())
}

/// Takes a sign-in attempt's slot before the password is checked: counted as a failure until
/// it succeeds. Under per-account and per-address advisory locks (always in that order), so
/// parallel attempts cannot all see room. `None`: the allowance is used up.
pub async fn reserve_login_attempt(
    pool: &PgPool,
    email: &str,
    client_ip: &str,
    since: DateTime<Utc>,
    max_per_account: i64,
    max_per_address: i64,
) -> Result<Option<i64>, Error> {
    let mut tx = pool.begin().await?;
    // The macro names every column, so the two locks carry aliases; the one row is read whole.
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended('login-account:' || $1, 0)) as account,
                pg_advisory_xact_lock(hashtextextended('login-address:' || $2, 0)) as address",
        email,
        client_ip
    )
    .fetch_all(&mut *tx)
    .await?;
    let id: Option<i64> = sqlx::query_scalar!(
        "insert into login_failures (email, client_ip)
         select $1, $2
         where (select count(*) from login_failures where email = $1 and failed_at > $3) < $4
           and (select count(*) from login_failures where client_ip = $2 and failed_at > $3) < $5
         returning id",
        email,
        client_ip,
        since,
        max_per_account,
        max_per_address
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Gives back a reserved attempt that was never evaluated.
pub async fn release_login_attempt(pool: &PgPool, attempt: i64) -> Result<(), Error> {
    sqlx::query!("delete from login_failures where id = $1", attempt)
        .execute(pool)
        .await?;
    Ok(())
}

/// Forgets an account's failures after a successful sign-in.
pub async fn clear_login_failures(pool: &PgPool, email: &str) -> Result<(), Error> {
    sqlx::query!("delete from login_failures where email = $1", email)
        .execute(pool)
        .await?;
    Ok(())
}

/// Replaces any unused setup token with a new one (only the digest is stored).
pub async fn replace_setup_token(pool: &PgPool, token_digest: &[u8]) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("delete from setup_tokens where used_at is null")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "insert into setup_tokens (token_digest) values ($1)",
        token_digest
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// How long a setup link works (`cloudpki admin setup-link` prints a fresh one).
pub const SETUP_TOKEN_HOURS: i32 = 24;

/// Whether this setup token is still valid: unused, younger than [`SETUP_TOKEN_HOURS`], and no
/// user exists yet.
pub async fn setup_token_is_valid(pool: &PgPool, token_digest: &[u8]) -> Result<bool, Error> {
    Ok(sqlx::query_scalar!(
        r#"select exists (select 1 from setup_tokens where token_digest = $1 and used_at is null
                          and created_at > now() - make_interval(hours => $2))
              and not exists (select 1 from users) as "valid!""#,
        token_digest,
        SETUP_TOKEN_HOURS
    )
    .fetch_one(pool)
    .await?)
}

/// The first administrator, through the setup link, in one transaction: the link is spent and
/// the subscription, the account and its admin membership exist, or nothing does. `None` when
/// the link was spent meanwhile (two visitors at once).
pub async fn complete_setup(
    pool: &PgPool,
    token_digest: &[u8],
    subscription: &SubscriptionName,
    email: &Email,
    password_hash: &str,
) -> Result<Option<(Uuid, Uuid)>, Error> {
    let mut tx = pool.begin().await?;
    if !consume_setup_token(&mut tx, token_digest).await? {
        return Ok(None);
    }
    let subscription_id = create_subscription(&mut *tx, subscription).await?;
    let user_id = create_user(&mut tx, email, password_hash, CreatedVia::Setup).await?;
    upsert_membership(&mut tx, user_id, subscription_id, Role::Admin).await?;
    tx.commit().await?;
    Ok(Some((subscription_id, user_id)))
}

/// Marks the setup token used inside the transaction that creates the first administrator.
/// Returns `false` when it was already used (a race between two visitors): roll back then.
pub async fn consume_setup_token(
    tx: &mut Transaction<'_, Postgres>,
    token_digest: &[u8],
) -> Result<bool, Error> {
    let updated = sqlx::query!(
        "update setup_tokens set used_at = now() where token_digest = $1 and used_at is null
         and created_at > now() - make_interval(hours => $2)",
        token_digest,
        SETUP_TOKEN_HOURS
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(updated == 1)
}
