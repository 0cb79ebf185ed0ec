//! The database: connection pool, migrations, and the embedded PostgreSQL cluster used when no
//! `DATABASE_URL` is configured.

pub mod embedded;

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use crate::config::Config;

/// Connections per process. Two cores: a handful of connections saturate them.
pub const MAX_CONNECTIONS: u32 = 16;

/// A connected database, and the embedded cluster behind it when there is one.
pub struct Database {
    /// The pool every part of the program shares.
    pub pool: PgPool,
    embedded: Option<embedded::EmbeddedPostgres>,
}

/// Why the database could not be reached or prepared.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The embedded cluster did not start.
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedError),
    /// `DATABASE_URL` could not be used.
    #[error("cannot connect to the database at DATABASE_URL")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("applying database migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the embedded cluster and connects to it.
    pub async fn connect(config: &Config) -> Result<Self, DbError> {
        match &config.database_url {
            Some(url) => {
                let options = PgConnectOptions::from_str(url).map_err(DbError::Connect)?;
                let pool = pool_options()
                    .connect_with(options)
                    .await
                    .map_err(DbError::Connect)?;
                Ok(Self {
                    pool,
                    embedded: None,
                })
            }
            None => {
                let opts = embedded::EmbeddedOptions {
                    data_dir: config.data_dir.clone(),
                    durable: true,
                };
                let cluster =
                    tokio::task::spawn_blocking(move || embedded::EmbeddedPostgres::start(opts))
                        .await
                        .expect("embedded start thread panicked")?;
                let pool = pool_options()
                    .connect_with(cluster.connect_options("cloudpki"))
                    .await
                    .map_err(DbError::Connect)?;
                Ok(Self {
                    pool,
                    embedded: Some(cluster),
                })
            }
        }
    }

    /// Like [`Self::connect`], but when another cloudpki process owns the embedded cluster
    /// (`serve` is running), connects to that cluster instead of refusing: for the admin
    /// commands, which must work beside a running portal.
    pub async fn connect_or_join(config: &Config) -> Result<Self, DbError> {
        match Self::connect(config).await {
            Err(DbError::Embedded(embedded::EmbeddedError::AlreadyInUse { .. }))
                if config.database_url.is_none() =>
            {
                let options =
                    embedded::EmbeddedPostgres::join_options(&config.data_dir, "cloudpki");
                let pool = pool_options()
                    .max_connections(2)
                    .connect_with(options)
                    .await
                    .map_err(DbError::Connect)?;
                tracing::info!("joined the embedded database of the running cloudpki process");
                Ok(Self {
                    pool,
                    embedded: None,
                })
            }
            other => other,
        }
    }

    /// Wraps an existing pool (tests).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            embedded: None,
        }
    }

    /// Whether this process runs its own cluster.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        migrate(&self.pool).await
    }

    /// Closes the pool and stops the embedded cluster, if any.
    pub async fn shutdown(mut self) {
        self.pool.close().await;
        if let Some(mut cluster) = self.embedded.take() {
            let stopped = tokio::task::spawn_blocking(move || cluster.stop()).await;
            match stopped {
                Ok(Ok(())) => tracing::info!("embedded PostgreSQL stopped"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "embedded PostgreSQL did not stop cleanly")
                }
                Err(e) => tracing::warn!(error = %e, "embedded PostgreSQL stop thread failed"),
            }
        }
    }
}

fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(5))
}

/// Applies the migrations in `migrations/`.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}
