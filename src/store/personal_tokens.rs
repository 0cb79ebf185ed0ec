//! Personal API tokens: a user's credentials for the REST API (stored as SHA-256 digests).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;

/// A token as its owner's list shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The user a live token acts as.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenUser {
    pub user_id: Uuid,
    pub email: String,
}

/// Stores a new token's digest for `user_id`.
pub async fn create(
    pool: &PgPool,
    user_id: Uuid,
    name: &str,
    digest: &[u8],
) -> Result<Uuid, Error> {
    let id = Uuid::new_v4();
    // The user's row lock orders this after (or before) a revocation of all their tokens.
    sqlx::query!(
        "with owner as (select id from users where id = $2 for no key update)
         insert into personal_tokens (id, user_id, name, token_digest)
         select $1, owner.id, $3, $4 from owner",
        id,
        user_id,
        name,
        digest
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// The live tokens of a user, newest first.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<TokenRow>, Error> {
    Ok(sqlx::query_as!(
        TokenRow,
        "select id, name, created_at, last_used_at from personal_tokens
         where user_id = $1 and revoked_at is null order by created_at desc",
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

/// The user of a live token, noting its use.
pub async fn authenticate(pool: &PgPool, digest: &[u8]) -> Result<Option<TokenUser>, Error> {
    Ok(sqlx::query_as!(
        TokenUser,
        "update personal_tokens t set last_used_at = now()
         from users u
         where t.token_digest = $1 and t.revoked_at is null and u.id = t.user_id
         returning t.user_id, u.email",
        digest
    )
    .fetch_optional(pool)
    .await?)
}
