//! Personal API tokens: a user's credentials for the REST API (stored as SHA-256 digests).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;

/// A token as its owner's list shows it.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// `read` or `write`.
    pub scope: String,
    /// The one subscription it is limited to, by name (`None`: every subscription of its user).
    pub subscription_name: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The user a live token acts as, and what the token lets it do.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub user_id: Uuid,
    pub email: String,
    /// The token may change settings (scope `write`), not only read them.
    pub writes: bool,
    /// The one subscription the token is limited to.
    pub subscription_id: Option<Uuid>,
}

/// What a new token may do.
#[derive(Debug, Clone, Copy)]
pub struct TokenGrant {
    pub writes: bool,
    pub subscription_id: Option<Uuid>,
    /// When it stops working (`None`: when revoked).
    pub expires_at: Option<DateTime<Utc>>,
}

impl TokenGrant {
    /// Everything its user may do, until revoked (what tokens could do before scopes).
    pub fn full() -> TokenGrant {
        TokenGrant {
            writes: true,
            subscription_id: None,
            expires_at: None,
        }
    }
}

/// What a presented token is.
#[derive(Debug, Clone)]
pub enum Presented {
    /// Live: who it acts as.
    Live(TokenUser),
    /// It was valid, until then.
    Expired(DateTime<Utc>),
    /// Unknown or revoked.
    Unknown,
}

/// Stores a new token's digest for `user_id`, with what it may do. A subscription it is
/// limited to must be one of the user's (else [`Error::NotFound`]).
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    name: &str,
    digest: &[u8],
    grant: TokenGrant,
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    let scope = if grant.writes { "write" } else { "read" };
    // The user's row lock orders this after (or before) a revocation of all their tokens.
    let created = sqlx::query!(
        "with owner as (select id from users where id = $2 for no key update)
         insert into personal_tokens (id, user_id, name, token_digest, scope, subscription_id, expires_at)
         select $1, owner.id, $3, $4, $5, $6, $7 from owner
         where $6::uuid is null
            or exists (select 1 from memberships m where m.user_id = owner.id and m.subscription_id = $6)",
        id,
        user_id,
        name,
        digest,
        scope,
        grant.subscription_id,
        grant.expires_at
    )
    .execute(pool)
    .await?
    .rows_affected();
    if created == 0 {
        return Err(Error::NotFound);
    }
    Ok(id)
}

/// The live tokens of a user, newest first (expired ones too, marked by their date).
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<TokenRow>, Error> {
    Ok(sqlx::query_as!(
        TokenRow,
        r#"select t.id, t.name, t.created_at, t.last_used_at, t.scope,
                  s.name as "subscription_name?", t.expires_at
           from personal_tokens t
           left join subscriptions s on s.id = t.subscription_id
           where t.user_id = $1 and t.revoked_at is null
           order by t.created_at desc"#,
        user_id
    )
    .fetch_all(pool)
    .await?)
}

/// Revokes a token; `owner` limits it to that user's tokens (the account page), `None` is the
/// operator's CLI. Whether a live token was revoked.
pub async fn revoke(pool: &PgPool, id: Uuid, owner: Option<Uuid>) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update personal_tokens set revoked_at = now()
         where id = $1 and revoked_at is null and ($2::uuid is null or user_id = $2)",
        id,
        owner
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Revokes every live token of a user (Sign out everywhere, a password change); how many.
pub async fn revoke_all_of(pool: &PgPool, user_id: Uuid) -> Result<u64, Error> {
    // Locked first, in a statement of its own: the update's snapshot then sees a token that a
    // creation holding the lock had just committed.
    let mut tx = pool.begin().await?;
    // Every row is read, as executing it would: an unknown user locks nothing and is no error.
    sqlx::query_scalar!(
        "select 1 from users where id = $1 for no key update",
        user_id
    )
    .fetch_all(&mut *tx)
    .await?;
    let revoked = sqlx::query!(
        "update personal_tokens set revoked_at = now() where user_id = $1 and revoked_at is null",
        user_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(revoked)
}

/// What a presented token is; a live one's use is noted.
pub async fn authenticate(pool: &PgPool, digest: &[u8]) -> Result<Presented, Error> {
    let row = sqlx::query!(
        r#"update personal_tokens t
           set last_used_at = case when t.expires_at is null or t.expires_at > now()
                                   then now() else t.last_used_at end
           from users u
           where t.token_digest = $1 and t.revoked_at is null and u.id = t.user_id
           returning t.user_id, u.email, t.scope, t.subscription_id, t.expires_at,
                     (t.expires_at is not null and t.expires_at <= now()) as "expired!""#,
        digest
    )
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => Presented::Unknown,
        Some(r) if r.expired => Presented::Expired(r.expires_at.unwrap_or_default()),
        Some(r) => Presented::Live(TokenUser {
            user_id: r.user_id,
            email: r.email,
            writes: r.scope == "write",
            subscription_id: r.subscription_id,
        }),
    })
}
