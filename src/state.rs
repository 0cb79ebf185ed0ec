//! The state every request handler and background loop shares. It lives apart from `app`
//! (which builds and runs the whole) so that `web` depends on it without depending on `app`.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{
    config::Config,
    crypto::MasterKey,
    siem::egress::{self, EgressPolicy, HttpTimeouts, Lookup, SystemLookup},
};

/// Connection tests one user may run per [`TEST_CONNECTION_WINDOW`]: enough to fix a typo,
/// too few to use the button against a third party.
pub const TEST_CONNECTION_LIMIT: usize = 5;
/// The window of [`TEST_CONNECTION_LIMIT`].
pub const TEST_CONNECTION_WINDOW: Duration = Duration::from_secs(60);

/// Parts a test may replace; production uses the defaults.
#[derive(Clone, Default)]
pub struct Overrides {
    /// DNS for SIEM calls (tests answer names with chosen addresses).
    pub lookup: Option<Arc<dyn Lookup>>,
    /// Timeouts of SIEM calls.
    pub siem_timeouts: Option<HttpTimeouts>,
    /// Period of the forwarder's sweep (a test that proves NOTIFY wake-ups makes it long).
    pub forwarder_sweep: Option<Duration>,
}

/// State shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    config: Config,
    master_key: MasterKey,
    public_url: url::Url,
    egress: Arc<EgressPolicy>,
    siem_client: reqwest::Client,
    hostname: String,
    forwarder_sweep: Duration,
    mailer: Option<crate::notify::Mailer>,
    shared: crate::siem::provider::Shared,
    test_attempts: Mutex<HashMap<uuid::Uuid, VecDeque<Instant>>>,
    page_cache: Arc<crate::store::page_cache::PageCache>,
    sequencer: crate::sequencer::Sequencer,
}

impl AppState {
    /// Builds the state.
    pub fn new(
        pool: PgPool,
        config: Config,
        master_key: MasterKey,
        bound: SocketAddr,
        overrides: &Overrides,
    ) -> anyhow::Result<Self> {
        let public_url = config.effective_public_url(bound);
        let egress = Arc::new(EgressPolicy::parse(&config.egress_allow)?);
        let lookup = overrides
            .lookup
            .clone()
            .unwrap_or_else(|| Arc::new(SystemLookup));
        let siem_client = egress::http_client_with_timeouts(
            egress.clone(),
            lookup.clone(),
            overrides.siem_timeouts.unwrap_or_default(),
        )?;
        let mailer = match &config.smtp_url {
            Some(url) => Some(crate::notify::Mailer::new(url, &config.mail_from)?),
            None => None,
        };
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "cloudpki".to_owned());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                master_key,
                public_url,
                egress,
                siem_client,
                hostname,
                mailer,
                shared: crate::siem::provider::Shared {
                    lookup,
                    ..crate::siem::provider::Shared::default()
                },
                forwarder_sweep: overrides
                    .forwarder_sweep
                    .unwrap_or(crate::config::SWEEP_INTERVAL),
                test_attempts: Mutex::new(HashMap::new()),
                page_cache: Arc::default(),
                sequencer: crate::sequencer::Sequencer::default(),
            }),
        })
    }

    /// What the settings page shows, kept between requests (used while its listener runs).
    /// A hook that drops this process's page cache (after a background pass).
    fn flush_pages(&self) -> crate::store::OnPass {
        let cache = self.inner.page_cache.clone();
        Arc::new(move || cache.flush())
    }

    pub fn page_cache(&self) -> &Arc<crate::store::page_cache::PageCache> {
        &self.inner.page_cache
    }

    /// This process's sequencer: ingest wakes it after commit.
    pub fn sequencer(&self) -> &crate::sequencer::Sequencer {
        &self.inner.sequencer
    }

    /// Runs this process's sequencer until `stop`; each batch drops the subscription's pages
    /// from this process's cache.
    pub fn run_sequencer(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.inner.page_cache.clone();
        tokio::spawn(self.inner.sequencer.clone().run(
            self.inner.pool.clone(),
            Arc::new(move |sub| cache.subscription_changed(sub)),
            stop,
        ))
    }

    /// The outbound rules for SIEM calls.
    pub fn egress(&self) -> &EgressPolicy {
        &self.inner.egress
    }

    /// The one HTTP client for SIEM calls (Test Connection and the forwarder).
    pub fn siem_client(&self) -> &reqwest::Client {
        &self.inner.siem_client
    }

    /// The notifier: incidents, retention and the email outbox.
    pub fn notifier(&self) -> crate::notify::Notifier {
        crate::notify::Notifier::new(
            self.inner.pool.clone(),
            self.inner.mailer.clone(),
            self.inner.public_url.to_string(),
            self.inner.config.retention_days,
        )
        .with_on_pass(self.flush_pages())
    }

    /// Provider state shared by every destination of this process.
    pub fn shared(&self) -> &crate::siem::provider::Shared {
        &self.inner.shared
    }

    /// Whether emails are really sent (an SMTP server is configured).
    pub fn sends_email(&self) -> bool {
        self.inner.mailer.is_some()
    }

    /// A forwarder sharing this state's pool, key and SIEM client.
    pub fn forwarder(&self) -> crate::forwarder::Forwarder {
        crate::forwarder::Forwarder::new(
            self.inner.pool.clone(),
            self.inner.master_key.clone(),
            self.inner.siem_client.clone(),
            self.inner.egress.clone(),
            self.inner.hostname.clone(),
            crate::forwarder::ForwarderOptions {
                lease: self.inner.config.worker_lease,
                sweep: self.inner.forwarder_sweep,
                shutdown_grace: self.inner.config.shutdown_grace,
                heartbeat: self.inner.config.heartbeat,
                ..crate::forwarder::ForwarderOptions::default()
            },
        )
        .with_shared(self.inner.shared.clone())
        .with_on_pass(self.flush_pages())
    }

    /// The host name put into every log.
    pub fn hostname(&self) -> &str {
        &self.inner.hostname
    }

    /// Counts a Test Connection by `user`; `false` when they used up the window's allowance.
    pub fn allow_test_connection(&self, user: uuid::Uuid) -> bool {
        let now = Instant::now();
        let mut attempts = self
            .inner
            .test_attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mine = attempts.entry(user).or_default();
        while mine
            .front()
            .is_some_and(|t| now.duration_since(*t) > TEST_CONNECTION_WINDOW)
        {
            mine.pop_front();
        }
        if mine.len() >= TEST_CONNECTION_LIMIT {
            return false;
        }
        mine.push_back(now);
        true
    }

    /// An absolute link to `path` (which starts with `/`) under the public URL.
    pub fn link(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.inner.public_url.as_str().trim_end_matches('/'),
            path
        )
    }

    /// Whether cookies must carry the `Secure` flag (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.inner.public_url.scheme() == "https"
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The key that seals credentials.
    /// The settings service over this process's pool, key, client and egress policy.
    pub fn settings(&self) -> crate::settings::Service<'_> {
        crate::settings::Service {
            pool: &self.inner.pool,
            master_key: &self.inner.master_key,
            client: &self.inner.siem_client,
            egress: &self.inner.egress,
        }
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.inner.master_key
    }
}
