//! [`TestApp`]: one running portal, its database and a browser-like HTTP client.

use std::{
    collections::HashMap,
    net::SocketAddr,
    str::FromStr,
    sync::{Mutex, OnceLock},
};

use cloudpki::{
    app::{Application, Overrides},
    config::Config,
    crypto::MasterKey,
    db::embedded::{EmbeddedOptions, EmbeddedPostgres},
};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Executor, PgPool,
};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Where the fresh databases of the test binary come from.
enum Server {
    Url(PgConnectOptions),
    /// The cluster is kept for the life of the binary.
    Embedded {
        _cluster: Mutex<EmbeddedPostgres>,
        options: PgConnectOptions,
    },
}

impl Server {
    fn admin_options(&self) -> PgConnectOptions {
        match self {
            Server::Url(o) | Server::Embedded { options: o, .. } => o.clone(),
        }
    }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            Server::Url(PgConnectOptions::from_str(&url).expect("DATABASE_URL parses"))
        }
        _ => {
            let exe = std::env::current_exe().expect("test binary path");
            let name = exe
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("tests")
                .split('-')
                .next()
                .unwrap_or("tests")
                .to_owned();
            // Under the system temp dir (not the checkout): the cluster runs as `postgres` when
            // we are root, and a checkout under a private home directory would be out of its
            // reach. Keyed by the target dir, so checkouts do not share clusters.
            let key = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                env!("CARGO_TARGET_TMPDIR").hash(&mut h);
                h.finish()
            };
            let ours = format!("cloudpki-test-pg-{key:016x}");
            remove_abandoned_clusters(&ours);
            let dir = std::env::temp_dir().join(ours).join(name);
            std::fs::create_dir_all(&dir).expect("create test cluster dir");
            let cluster = EmbeddedPostgres::start(EmbeddedOptions {
                data_dir: dir,
                durable: false,
            })
            .unwrap_or_else(|e| panic!("embedded PostgreSQL for tests: {e}"));
            let options = cluster.connect_options("postgres");
            Server::Embedded {
                _cluster: Mutex::new(cluster),
                options,
            }
        }
    })
}

/// Every checkout (CI clones one per run) has its own clusters under the temp dir; without
/// this they would pile up until the disk is full. A cluster whose lock nobody holds and whose
/// log has been quiet for an hour belongs to a run that is over.
fn remove_abandoned_clusters(ours: &str) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let quiet = std::time::Duration::from_secs(3600);
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if !file_name.starts_with("cloudpki-test-pg-") || file_name == ours {
            continue;
        }
        let root = entry.path();
        let Ok(clusters) = std::fs::read_dir(&root) else {
            continue;
        };
        let abandoned = clusters.flatten().all(|cluster| {
            let dir = cluster.path();
            let idle = std::fs::metadata(dir.join("postgres.log"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age > quiet);
            let unlocked = std::fs::File::open(dir.join("cloudpki.lock"))
                .map(|f| f.try_lock().is_ok())
                .unwrap_or(true);
            idle && unlocked
        });
        if abandoned {
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}

/// A new, empty database, and the options to reach it again.
pub async fn fresh_database() -> (PgPool, PgConnectOptions) {
    let server = tokio::task::spawn_blocking(server)
        .await
        .expect("cluster start");
    let admin = server.admin_options();
    if matches!(server, Server::Embedded { .. }) {
        // The embedded cluster is reused across runs: drop the databases earlier runs left,
        // once, before this run creates any.
        static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        CLEANED
            .get_or_init(|| async {
                let mut conn = admin.connect().await.expect("connect as admin");
                let stale: Vec<String> = sqlx::query_scalar(
                    "select datname from pg_database where datname like 'test\\_%'",
                )
                .fetch_all(&mut conn)
                .await
                .expect("list test databases");
                for name in stale {
                    let _ = conn
                        .execute(
                            format!(r#"drop database if exists "{name}" with (force)"#).as_str(),
                        )
                        .await;
                }
            })
            .await;
    }
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut conn = admin.connect().await.expect("connect as admin");
    conn.execute(format!(r#"create database "{name}""#).as_str())
        .await
        .expect("create test database");
    let options = admin.database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.clone())
        .await
        .expect("connect to the test database");
    (pool, options)
}

/// A new database with the schema as it was up to migration `version` (for upgrade tests).
pub async fn database_at(version: i64) -> PgPool {
    let (pool, _) = fresh_database().await;
    let mut old = sqlx::migrate!("./migrations");
    old.migrations = std::borrow::Cow::Owned(
        old.migrations
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect(),
    );
    old.run(&pool).await.expect("old migrations");
    pool
}

/// A subscription row written straight into `pool` (a database without a running portal).
pub async fn insert_subscription(pool: &PgPool, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("insert into subscriptions (id, name) values ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await
        .expect("subscription");
    id
}

/// Drops a test database, cutting every connection to it (to simulate an outage).
pub async fn drop_database(options: &PgConnectOptions) {
    let name = options
        .get_database()
        .expect("test options name a database")
        .to_owned();
    let mut conn = server().admin_options().connect().await.expect("admin");
    conn.execute(format!(r#"drop database "{name}" with (force)"#).as_str())
        .await
        .expect("drop test database");
}

/// The environment a test app starts with; tests add or override entries.
pub fn test_env() -> HashMap<String, String> {
    HashMap::from([
        ("CLOUDPKI_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("CLOUDPKI_EGRESS_ALLOW".to_owned(), "127.0.0.1".to_owned()),
    ])
}

/// A running portal.
pub struct TestApp {
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    /// The listening address.
    pub addr: SocketAddr,
    /// The test's own database.
    pub pool: PgPool,
    /// Options that reach the test's database.
    pub db_options: PgConnectOptions,
    /// The one-time setup link issued at start-up.
    pub setup_link: Option<String>,
    /// A client with a cookie store that does not follow redirects.
    pub client: reqwest::Client,
    /// The master key the app seals with.
    pub master_key: MasterKey,
    /// The app's shared state (tests build forwarders from it).
    pub state: cloudpki::app::AppState,
    _data_dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl TestApp {
    /// Starts a portal with the default test environment.
    pub async fn spawn() -> Self {
        Self::spawn_with(test_env()).await
    }

    /// Starts a portal with the given environment.
    pub async fn spawn_with(env: HashMap<String, String>) -> Self {
        Self::spawn_with_overrides(env, Overrides::default()).await
    }

    /// Starts a portal with the given environment and replaced parts.
    pub async fn spawn_with_overrides(env: HashMap<String, String>, overrides: Overrides) -> Self {
        Self::start(env, overrides, false).await
    }

    /// Starts a portal that also runs the forwarder loop (LISTEN/NOTIFY and sweeps).
    pub async fn spawn_with_worker(env: HashMap<String, String>, overrides: Overrides) -> Self {
        Self::start(env, overrides, true).await
    }

    async fn start(env: HashMap<String, String>, overrides: Overrides, with_worker: bool) -> Self {
        let (pool, db_options) = fresh_database().await;
        Self::start_on(env, overrides, with_worker, pool, db_options).await
    }

    /// Starts a portal on a database of the test's own (already migrated or not).
    pub async fn spawn_on_pool(pool: PgPool, db_options: PgConnectOptions) -> Self {
        Self::start_on(test_env(), Overrides::default(), false, pool, db_options).await
    }

    async fn start_on(
        mut env: HashMap<String, String>,
        overrides: Overrides,
        with_worker: bool,
        pool: PgPool,
        db_options: PgConnectOptions,
    ) -> Self {
        capture_logs();
        let data_dir = tempfile::tempdir().expect("tempdir");
        env.entry("CLOUDPKI_DATA_DIR".into())
            .or_insert_with(|| data_dir.path().display().to_string());
        let config =
            Config::from_lookup(|k| env.get(k).cloned(), None).expect("test config is valid");
        let master_key = MasterKey::generate();
        let app = Application::build_with_pool(config, pool.clone(), master_key.clone(), overrides)
            .await
            .expect("build app");
        let addr = app.local_addr();
        let setup_link = app.setup_link().map(str::to_owned);
        let (stop, stopped) = oneshot::channel::<()>();
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped(
            async move {
                let _ = stopped.await;
            },
            with_worker,
        ));
        Self {
            base_url: format!("http://{addr}"),
            addr,
            pool,
            db_options,
            setup_link,
            client: new_client(),
            master_key,
            state,
            _data_dir: data_dir,
            _stop: stop,
        }
    }

    /// An absolute URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// GET with the app's client.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// GET and return the body text (asserting 200).
    pub async fn get_page(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.text().await.expect("body")
    }

    /// POST a form with the app's client.
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .expect("POST")
    }

    /// A fresh app (the tests' environment) with the subscription "Contoso PKI" and its
    /// administrator `admin@example.com` signed in; returns the app and the subscription.
    pub async fn signed_in_admin(password: &str) -> (Self, Uuid) {
        let app = TestApp::spawn_with(test_env()).await;
        let sub = app.create_subscription("Contoso PKI").await;
        app.create_user("admin@example.com", password, sub, "admin")
            .await;
        assert_eq!(app.login("admin@example.com", password).await.status(), 303);
        (app, sub)
    }

    /// Creates a subscription directly in the database.
    pub async fn create_subscription(&self, name: &str) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query("insert into subscriptions (id, name) values ($1, $2)")
            .bind(id)
            .bind(name)
            .execute(&self.pool)
            .await
            .expect("insert subscription");
        id
    }

    /// Creates a user with a role in a subscription.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        subscription: Uuid,
        role: &str,
    ) -> Uuid {
        let id = Uuid::new_v4();
        let hash = cloudpki::crypto::hash_password(password);
        // As `cloudpki admin create-user` makes it.
        sqlx::query(
            "insert into users (id, email, password_hash, created_via) values ($1, $2, $3, 'operator')",
        )
            .bind(id)
            .bind(email)
            .bind(hash)
            .execute(&self.pool)
            .await
            .expect("insert user");
        self.add_member(id, subscription, role).await;
        id
    }

    /// Gives an existing user a role in a subscription.
    pub async fn add_member(&self, user: Uuid, subscription: Uuid, role: &str) {
        sqlx::query("insert into memberships (user_id, subscription_id, role) values ($1, $2, $3)")
            .bind(user)
            .bind(subscription)
            .bind(role)
            .execute(&self.pool)
            .await
            .expect("insert membership");
    }

    /// Stores Datadog settings for `subscription` directly (the settings page is tested on its
    /// own): export on or off, the intake URL and a sealed API key.
    pub async fn configure_datadog(&self, subscription: Uuid, url: &str, key: &str, enabled: bool) {
        use cloudpki::{siem::datadog, siem::provider, store};
        let mut tx = self.pool.begin().await.expect("tx");
        let admin = Uuid::new_v4();
        sqlx::query("insert into users (id, email, password_hash) values ($1, $2, 'x') on conflict do nothing")
            .bind(admin)
            .bind(format!("setup-{admin}@example.com"))
            .execute(&mut *tx)
            .await
            .expect("user");
        let dest = cloudpki::domain::destination::DestinationKey::first(subscription);
        store::siem::upsert_settings(
            &mut tx,
            dest,
            enabled,
            "datadog",
            None,
            (admin, "setup@example.com"),
        )
        .await
        .expect("settings");
        store::siem::upsert_provider_fields(
            &mut tx,
            dest,
            "datadog",
            &serde_json::json!({ "url": url }),
        )
        .await
        .expect("fields");
        let context = provider::secret_context(dest, datadog::provider(), "api_key");
        let sealed = self.master_key.seal(key.as_bytes(), &context);
        store::siem::upsert_secret(
            &mut tx,
            dest,
            "datadog",
            "api_key",
            &sealed,
            &key[key.len() - 4..],
        )
        .await
        .expect("secret");
        if enabled {
            store::delivery::ensure_destination(&mut tx, dest, "datadog")
                .await
                .expect("destination");
        }
        tx.commit().await.expect("commit");
    }

    /// A new ingestion token for `subscription`.
    pub async fn token(&self, subscription: Uuid) -> String {
        let token = cloudpki::crypto::random_token();
        cloudpki::store::events::create_token(
            &self.pool,
            subscription,
            &cloudpki::crypto::token_digest(&token),
        )
        .await
        .expect("token");
        token
    }

    /// A personal API token of the user with this email (written to the store directly).
    pub async fn personal_token(&self, email: &str) -> String {
        let user: Uuid = sqlx::query_scalar("select id from users where email = $1")
            .bind(email)
            .fetch_one(&self.pool)
            .await
            .expect("the user exists");
        let token = cloudpki::crypto::random_token();
        cloudpki::store::personal_tokens::create(
            &self.pool,
            user,
            "test",
            &cloudpki::crypto::token_digest(&token),
            cloudpki::store::personal_tokens::TokenGrant::full(),
        )
        .await
        .expect("token");
        token
    }

    /// POSTs an ingestion body with a bearer token.
    pub async fn post_events(&self, token: &str, body: &serde_json::Value) -> reqwest::Response {
        let r = self
            .client
            .post(self.url("/api/v1/events"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST /api/v1/events");
        if r.status() == 202 {
            self.sequenced().await;
        }
        r
    }

    /// Waits until the app's sequencer has moved every ingested event into the log (ingest
    /// answers 202 before that; tests that read the log right after want it there). A database
    /// that cannot answer yet (a test that kills it, then restarts it) is asked again.
    pub async fn sequenced(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let waiting = sqlx::query_scalar("select exists (select 1 from audit_inbox)")
                .fetch_one(&self.pool)
                .await;
            if let Ok(false) = waiting {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the sequencer did not empty the inbox within 60 s: {waiting:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// A `DATABASE_URL` that reaches this test's database (for `cloudpki` child processes).
    pub fn database_url(&self) -> String {
        let o = &self.db_options;
        let db = o.get_database().unwrap_or("postgres");
        match o.get_socket() {
            Some(dir) => format!(
                "postgres://{}@localhost:{}/{db}?host={}",
                o.get_username(),
                o.get_port(),
                dir.display()
            ),
            None => format!(
                "postgres://{}@{}:{}/{db}",
                o.get_username(),
                o.get_host(),
                o.get_port()
            ),
        }
    }

    /// Records `n` events of `event_id` through the ingestion API, 1,000 per request.
    pub async fn post_n(&self, token: &str, n: usize, event_id: u32) {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let body: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| serde_json::json!({"event_id": event_id, "actor": format!("user{i}")}))
                .collect();
            assert_eq!(
                self.post_events(token, &serde_json::Value::Array(body))
                    .await
                    .status(),
                202
            );
        }
    }

    /// A forwarder on this app's database with `options`, reaching loopback intakes.
    pub fn forwarder_with(
        &self,
        options: cloudpki::forwarder::ForwarderOptions,
    ) -> cloudpki::forwarder::Forwarder {
        cloudpki::forwarder::Forwarder::new(
            self.pool.clone(),
            self.master_key.clone(),
            reqwest::Client::new(),
            std::sync::Arc::new(
                cloudpki::siem::egress::EgressPolicy::parse("127.0.0.1").expect("policy"),
            ),
            "pki".into(),
            options,
        )
    }

    /// One number from `sql`, with the subscription as `$1`.
    pub async fn scalar(&self, sql: &str, subscription: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(subscription)
            .fetch_one(&self.pool)
            .await
            .expect("scalar")
    }

    /// Events every destination still owes (cursor arithmetic plus out-of-order retries).
    pub async fn queued(&self) -> i64 {
        sqlx::query_scalar(
            "select (select coalesce(sum(greatest(coalesce(d.off_at_seq, s.last_seq) - d.cursor, 0)), 0)::bigint
                     from delivery_destinations d join subscriptions s on s.id = d.subscription_id)
                  + (select count(*) from delivery_parked where state = 'retry')",
        )
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Signs in with the app's client; returns the response to the sign-in POST.
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        login_with(&self.client, &self.base_url, email, password).await
    }

    /// A REST API call: the status and the JSON answer (`null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("an HTTP answer");
        let status = answer.status().as_u16();
        (
            status,
            answer.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Serves the metrics router on a listener of its own, as `CLOUDPKI_METRICS_LISTEN` does;
    /// returns its `/metrics` URL.
    pub async fn metrics_url(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        let router = cloudpki::web::metrics::router(self.state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }
}

/// A loopback listener that accepts every connection and never says a word (a hung intake or
/// receiver); abort the task to close them.
pub async fn hung_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, holder)
}

/// A browser-like client: cookies kept, redirects not followed.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Signs in with any client.
pub async fn login_with(
    client: &reqwest::Client,
    base_url: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let page = client
        .get(format!("{base_url}/login"))
        .send()
        .await
        .expect("GET /login")
        .text()
        .await
        .expect("body");
    let csrf = csrf_token(&page);
    client
        .post(format!("{base_url}/login"))
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .expect("POST /login")
}

/// The CSRF token of the first form on a page.
pub fn csrf_token(html: &str) -> String {
    input_value(html, "csrf_token").expect("page has a csrf_token field")
}

/// The body of a GET with `client` (its cookies, its session).
pub async fn page_with(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// The value of the first input named `name`.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let doc = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(&format!(r#"input[name="{name}"]"#)).expect("selector");
    doc.select(&selector)
        .next()
        .and_then(|e| e.value().attr("value"))
        .map(str::to_owned)
}

/// Text of every element matching a CSS selector.
pub fn texts(html: &str, css: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(css).expect("selector");
    doc.select(&selector)
        .map(|e| e.text().collect::<String>().trim().to_owned())
        .collect()
}

/// The `Location` header of a redirect.
pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Every log line the portals of this test binary wrote (tests scan it for secrets).
pub fn captured_logs() -> String {
    let buffer = log_buffer().lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&buffer).into_owned()
}

fn log_buffer() -> &'static std::sync::Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<std::sync::Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(Default::default)
}

#[derive(Clone)]
struct BufferWriter;

impl std::io::Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once) a subscriber that records every log line at debug level and above.
fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug,sqlx=info,hyper=info,h2=info,rustls=info,reqwest=info")
            .with_writer(|| BufferWriter)
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}
