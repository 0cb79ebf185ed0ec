//! All SQL lives here. Functions take a pool or a transaction and return domain-shaped rows.
//!
//! Uniqueness is left to named constraints, which are mapped to typed errors.

pub mod accounts;
pub mod delivery;
pub mod events;
pub mod notify;
pub mod siem;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The email address already belongs to a user.
    #[error("a user with this email address already exists")]
    EmailTaken,
    /// The row that the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// Any other database error.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The name of the violated constraint, when the error is one.
pub(crate) fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Runs a trivial query: is the database there?
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), Error> {
    sqlx::query("select 1").execute(pool).await?;
    Ok(())
}
