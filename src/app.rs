//! The application: shared state, building it from configuration, and running it until a
//! shutdown signal.
//!
//! Tests call [`Application::build_with_pool`] with a listener on `127.0.0.1:0` and drive the real
//! server; `main` calls [`Application::build`] and [`Application::run_until_stopped`] with the
//! SIGTERM/Ctrl-C future. Both share one path.

use std::{future::Future, net::SocketAddr, path::Path};

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::{
    config::Config,
    crypto::{self, MasterKey},
    db::Database,
    store,
};

/// File in the data dir that holds the generated master key (embedded mode).
pub const MASTER_KEY_FILE: &str = "master.key";

pub use crate::state::{AppState, Overrides, TEST_CONNECTION_LIMIT, TEST_CONNECTION_WINDOW};

/// A built application, bound to its listener and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    database: Database,
    setup_link: Option<String>,
}

impl Application {
    /// Connects to (or starts) the database, applies migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = Database::connect(&config).await?;
        let master_key = match &config.master_key {
            Some(key) => key.clone(),
            None => load_or_generate_master_key(&config.data_dir)?,
        };
        Self::assemble(config, database, master_key, Overrides::default()).await
    }

    /// Connects to the database for a forwarder-only process (`cloudpki worker`): no listener.
    pub async fn build_worker(config: Config) -> anyhow::Result<Worker> {
        let database = Database::connect(&config).await?;
        database.migrate().await?;
        let master_key = match &config.master_key {
            Some(key) => key.clone(),
            None => load_or_generate_master_key(&config.data_dir)?,
        };
        let bound = config.listen;
        let state = AppState::new(
            database.pool.clone(),
            config,
            master_key,
            bound,
            &Overrides::default(),
        )?;
        Ok(Worker { state, database })
    }

    /// Builds around an existing pool (tests give each test its own database).
    pub async fn build_with_pool(
        config: Config,
        pool: PgPool,
        master_key: MasterKey,
        overrides: Overrides,
    ) -> anyhow::Result<Self> {
        Self::assemble(config, Database::from_pool(pool), master_key, overrides).await
    }

    async fn assemble(
        config: Config,
        database: Database,
        master_key: MasterKey,
        overrides: Overrides,
    ) -> anyhow::Result<Self> {
        database.migrate().await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (CLOUDPKI_LISTEN)", config.listen))?;
        let bound = listener.local_addr()?;
        let state = AppState::new(database.pool.clone(), config, master_key, bound, &overrides)?;
        let setup_link = issue_setup_link_if_first_run(&state).await?;
        Ok(Self {
            listener,
            state,
            database,
            setup_link,
        })
    }

    /// The address the portal listens on (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The one-time setup link, when the database had no user at start-up.
    pub fn setup_link(&self) -> Option<&str> {
        self.setup_link.as_deref()
    }

    /// The shared state (tests reach the pool through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains connections and stops the database.
    /// With `with_worker`, the forwarder runs in this process too and finishes its batches.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        with_worker: bool,
    ) -> anyhow::Result<()> {
        crate::telemetry::metrics();
        let router = crate::web::router(self.state.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = serve_metrics(&self.state, stop_rx.clone()).await?;
        // Without its listener the cache is never used (CLOUDPKI_PAGE_CACHE=off).
        let page_cache = self.state.config().page_cache.then(|| {
            tokio::spawn(crate::store::page_cache::listen(
                self.state.pool().clone(),
                self.state.page_cache().clone(),
                stop_rx.clone(),
            ))
        });
        // Ingest lands here: this process sequences it, with or without the forwarder.
        let sequencer = self.state.run_sequencer(stop_rx.clone());
        let worker = with_worker.then(|| {
            tokio::spawn(
                self.state
                    .forwarder()
                    .with_notifier(self.state.notifier())
                    .run(stop_rx),
            )
        });
        tracing::info!(addr = %self.local_addr(), "portal listening");
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        let _ = sequencer.await;
        if let Some(page_cache) = page_cache {
            let _ = page_cache.await;
        }
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        self.database.shutdown().await;
        served.context("the HTTP server failed")
    }
}

/// A forwarder-only process.
pub struct Worker {
    state: AppState,
    database: Database,
}

impl Worker {
    /// Forwards until `shutdown` completes, finishing the batches in flight.
    pub async fn run_worker_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        crate::telemetry::metrics();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let metrics = serve_metrics(&self.state, stop_rx.clone()).await?;
        // Sweeps up what ingest processes left unsequenced (a crash between ingest and
        // sequencing, a portal run without its own).
        let sequencer = self.state.run_sequencer(stop_rx.clone());
        let worker = tokio::spawn(
            self.state
                .forwarder()
                .with_notifier(self.state.notifier())
                .run(stop_rx),
        );
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = worker.await;
        let _ = sequencer.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        self.database.shutdown().await;
        Ok(())
    }
}

/// Starts the Prometheus listener on `CLOUDPKI_METRICS_LISTEN`, if set; it stops with `stop`.
async fn serve_metrics(
    state: &AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = state.config().metrics_listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (CLOUDPKI_METRICS_LISTEN)"))?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let router = crate::web::metrics::router(state.clone());
    Ok(Some(tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    })))
}

/// On an empty database, creates a one-time setup token and logs the link that uses it.
async fn issue_setup_link_if_first_run(state: &AppState) -> anyhow::Result<Option<String>> {
    if store::accounts::any_user_exists(state.pool()).await? {
        return Ok(None);
    }
    let token = crypto::random_token();
    store::accounts::replace_setup_token(state.pool(), &crypto::token_digest(&token)).await?;
    let link = state.link(&format!("/setup/{token}"));
    // The token is single-use and dies with the first administrator; logging it is the point.
    tracing::warn!(
        "first run: no administrator yet. Open this one-time setup link (valid 24 hours; `cloudpki admin setup-link` prints a fresh one) to create one: {link}"
    );
    Ok(Some(link))
}

/// Reads the generated master key from the data dir, or creates it (mode 0600) on first run.
pub fn load_or_generate_master_key(data_dir: &Path) -> anyhow::Result<MasterKey> {
    use base64::Engine as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let path = data_dir.join(MASTER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .with_context(|| format!("{} is not valid base64", path.display()))?;
            MasterKey::from_bytes(&bytes)
                .with_context(|| format!("{} does not hold a 32-byte key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
            let key = MasterKey::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(file, "{}", key.to_base64())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), key_id = key.id(), "generated a master key for sealing SIEM credentials");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}
