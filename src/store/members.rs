//! A subscription's members and invitations. Every role change and removal keeps at least one
//! administrator, checked under a lock on the subscription's admin rows.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::accounts::Account;
use super::Error;
use crate::domain::account::Role;

/// A member as the Members page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: Uuid,
    pub email: String,
    pub role: String,
}

/// An open invitation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InviteRow {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub subscription_name: String,
    pub email: String,
    pub role: String,
    pub invited_by_email: String,
    pub expires_at: DateTime<Utc>,
}

/// What a role change or removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    /// Refused: it would leave the subscription without an administrator.
    LastAdmin,
    /// No such member.
    NotMember,
}

/// The members of a subscription, by email.
pub async fn members(pool: &PgPool, subscription_id: Uuid) -> Result<Vec<MemberRow>, Error> {
    Ok(sqlx::query_as!(
        MemberRow,
        "select m.user_id, u.email, m.role from memberships m join users u on u.id = m.user_id
         where m.subscription_id = $1 order by u.email",
        subscription_id
    )
    .fetch_all(pool)
    .await?)
}

/// Locks the subscription's administrators and tells whether `user_id` is the only one.
async fn is_last_admin(
    tx: &mut Transaction<'_, Postgres>,
    subscription_id: Uuid,
    user_id: Uuid,
) -> Result<bool, Error> {
    let admins: Vec<Uuid> = sqlx::query_scalar!(
        "select user_id from memberships where subscription_id = $1 and role = 'admin' for update",
        subscription_id
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(admins == [user_id])
}

/// Gives a member another role.
pub async fn set_role(
    pool: &PgPool,
    subscription_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<Change, Error> {
    let mut tx = pool.begin().await?;
    if role != Role::Admin && is_last_admin(&mut tx, subscription_id, user_id).await? {
        return Ok(Change::LastAdmin);
    }
    let n = sqlx::query!(
        "update memberships set role = $3 where subscription_id = $1 and user_id = $2",
        subscription_id,
        user_id,
        role.as_str()
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if role != Role::Admin {
        revoke_invites_sent_by(&mut tx, subscription_id, user_id).await?;
    }
    tx.commit().await?;
    Ok(if n == 1 {
        Change::Done
    } else {
        Change::NotMember
    })
}

/// Removes a member.
pub async fn remove(pool: &PgPool, subscription_id: Uuid, user_id: Uuid) -> Result<Change, Error> {
    let mut tx = pool.begin().await?;
    if is_last_admin(&mut tx, subscription_id, user_id).await? {
        return Ok(Change::LastAdmin);
    }
    let n = sqlx::query!(
        "delete from memberships where subscription_id = $1 and user_id = $2",
        subscription_id,
        user_id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    revoke_invites_sent_by(&mut tx, subscription_id, user_id).await?;
    tx.commit().await?;
    Ok(if n == 1 {
        Change::Done
    } else {
        Change::NotMember
    })
}

/// Revokes the open invitations an administrator sent for a subscription (they were removed
/// or are no longer an administrator of it).
pub(crate) async fn revoke_invites_sent_by(
    tx: &mut Transaction<'_, Postgres>,
    subscription_id: Uuid,
    user_id: Uuid,
) -> Result<u64, Error> {
    Ok(sqlx::query!(
        "update invites set revoked_at = now()
         where subscription_id = $1 and invited_by = $2
           and accepted_at is null and revoked_at is null",
        subscription_id,
        user_id
    )
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// Revokes one open invitation of a subscription; its email address when it was open.
pub async fn revoke_invite(
    pool: &PgPool,
    subscription_id: Uuid,
    invite_id: Uuid,
) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!(
        "with revoked as (
            update invites set revoked_at = now()
            where id = $2 and subscription_id = $1 and accepted_at is null and revoked_at is null
            returning id, email
         ), unsent as (
            -- Its email, if not sent yet, is not sent at all.
            delete from notifications
            where sent_at is null and dedupe_key = (select 'invite/' || id::text from revoked)
         )
         select email from revoked",
        subscription_id,
        invite_id
    )
    .fetch_optional(pool)
    .await?)
}

/// Stores an invitation.
pub async fn create_invite(
    pool: &PgPool,
    subscription_id: Uuid,
    email: &str,
    role: Role,
    digest: &[u8],
    invited_by: (Uuid, &str),
    expires_at: DateTime<Utc>,
) -> Result<Uuid, Error> {
    let (invited_by, invited_by_email) = invited_by;
    let id = Uuid::new_v4();
    sqlx::query!(
        "insert into invites (id, subscription_id, email, role, token_digest, invited_by_email,
                              expires_at, invited_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
        id,
        subscription_id,
        email,
        role.as_str(),
        digest,
        invited_by_email,
        expires_at,
        invited_by
    )
    .execute(pool)
    .await?;
    Ok(id)
}

/// The open invitations of a subscription.
pub async fn open_invites(
    pool: &PgPool,
    subscription_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<InviteRow>, Error> {
    Ok(sqlx::query_as!(
        InviteRow,
        "select i.id, i.subscription_id, s.name as subscription_name, i.email, i.role,
                i.invited_by_email, i.expires_at
         from invites i join subscriptions s on s.id = i.subscription_id
         where i.subscription_id = $1 and i.accepted_at is null and i.revoked_at is null and i.expires_at > $2
           and exists (select 1 from memberships m
                       where m.subscription_id = i.subscription_id and m.role = 'admin'
                         and m.user_id = i.invited_by)
         order by i.created_at desc",
        subscription_id,
        now
    )
    .fetch_all(pool)
    .await?)
}

/// The open invitation behind a link.
pub async fn invite(
    pool: &PgPool,
    digest: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<InviteRow>, Error> {
    Ok(sqlx::query_as!(
        InviteRow,
        "select i.id, i.subscription_id, s.name as subscription_name, i.email, i.role,
                i.invited_by_email, i.expires_at
         from invites i join subscriptions s on s.id = i.subscription_id
         where i.token_digest = $1 and i.accepted_at is null and i.revoked_at is null and i.expires_at > $2
           and exists (select 1 from memberships m
                       where m.subscription_id = i.subscription_id and m.role = 'admin'
                         and m.user_id = i.invited_by)",
        digest,
        now
    )
    .fetch_optional(pool)
    .await?)
}

/// Accepts an invitation in one transaction: a new account is created only if the invitation
/// still works, so none is left behind when it stopped working meanwhile. The user's id, or
/// `None` when the invitation was used, revoked or expired.
pub async fn accept_invitation(
    pool: &PgPool,
    invite: &InviteRow,
    joining: Account,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, Error> {
    let mut tx = pool.begin().await?;
    let user_id = joining.id_in(&mut tx).await?;
    if !accept(&mut tx, invite, user_id, now).await? {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(user_id))
}

/// Uses an invitation once: the user joins with its role (a member keeps the role they have).
/// `false` when it was used or expired meanwhile.
pub async fn accept(
    tx: &mut Transaction<'_, Postgres>,
    invite: &InviteRow,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let n = sqlx::query!(
        "update invites i set accepted_at = $2 where i.id = $1 and i.accepted_at is null and i.revoked_at is null and i.expires_at > $2
             and exists (select 1 from memberships m
                         where m.subscription_id = i.subscription_id and m.role = 'admin'
                           and m.user_id = i.invited_by)",
        invite.id,
        now
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if n != 1 {
        return Ok(false);
    }
    sqlx::query!(
        "insert into memberships (user_id, subscription_id, role) values ($1, $2, $3)
         on conflict on constraint memberships_pkey do nothing",
        user_id,
        invite.subscription_id,
        &invite.role
    )
    .execute(&mut **tx)
    .await?;
    Ok(true)
}
