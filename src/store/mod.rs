//! All SQL lives here. Functions take a pool or a transaction and return domain-shaped rows.
//!
//! Uniqueness is left to named constraints, which are mapped to typed errors.

pub mod accounts;
pub mod delivery;
pub mod events;
pub mod members;
pub mod notify;
pub mod page;
pub mod page_cache;
pub mod personal_tokens;
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
    /// The row changed since the caller read it (optimistic concurrency): who changed it
    /// last, and when. Nothing was written.
    #[error("changed by {by} at {at} since it was read")]
    Stale {
        by: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A subscription already has as many destinations as it may ([`MAX_DESTINATIONS`]).
    ///
    /// [`MAX_DESTINATIONS`]: crate::domain::destination::MAX_DESTINATIONS
    #[error(
        "this subscription already has {} destinations, the most it may have",
        crate::domain::destination::MAX_DESTINATIONS
    )]
    TooManyDestinations,
    /// A broken invariant the statement's caller detected (its transaction is rolled back).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The database could not be reached (no connection, a connection lost, the pool closed or
    /// exhausted, or the server shutting down or starting up): worth a retry later, not a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => true,
            // 57P01–57P03: admin shutdown, crash shutdown, cannot connect now; 08xxx:
            // connection exceptions.
            Error::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
            _ => false,
        }
    }
}

/// The name of the violated constraint, when the error is one.
pub(crate) fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// A column the query macros cannot prove non-null, read as a non-null value: a null is the
/// same error that decoding it into `T` would give.
pub(crate) fn not_null<T>(value: Option<T>, column: &str) -> Result<T, Error> {
    value.ok_or_else(|| {
        Error::Database(sqlx::Error::ColumnDecode {
            index: format!("{column:?}"),
            source: Box::new(sqlx::error::UnexpectedNullError),
        })
    })
}

/// Runs a trivial query: is the database there?
pub async fn ping(pool: &sqlx::PgPool) -> Result<(), Error> {
    sqlx::query_scalar!("select 1").fetch_one(pool).await?;
    Ok(())
}

/// Called after a pass of a background loop (the forwarder's one-shot passes, the notifier's
/// passes): the process drops what it keeps in memory of the pages, so a page read right after
/// shows the pass's outcome.
pub type OnPass = std::sync::Arc<dyn Fn() + Send + Sync>;
