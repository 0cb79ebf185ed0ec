//! End-to-end throughput, latency and memory of the export pipeline, each beside a baseline
//! measured in the same run (the machine is shared and noisy: ratios travel, absolutes do not).
//!
//! `cargo bench --bench pipeline` (full, a few minutes) or `cargo bench --bench pipeline -- --quick`
//! (under two minutes after compilation). `-- --only drain,page` runs some scenarios only.
//!
//! The bench starts its own PostgreSQL (`DATABASE_URL` when set, else an embedded cluster under
//! `target/bench/pg`), a minimal fake Datadog intake on 127.0.0.1 (gunzips, parses, counts; no
//! artificial delay) and the real `cloudpki worker` / `cloudpki serve --no-worker` binaries (cargo
//! builds them for benches: `CARGO_BIN_EXE_cloudpki`). Each scenario gets a fresh database that is
//! dropped afterwards. Backlogs are pre-filled with set-based SQL: events numbered per
//! subscription (`seq`), owed to each destination by its cursor.
//!
//! The drain and ingest scenarios run durable (fsync and synchronous_commit on: the embedded
//! cluster is restarted so for them); the drain's headline is run once more without durability,
//! labelled. The other scenarios run the embedded cluster with fsync, synchronous_commit and full_page_writes
//! off. With `DATABASE_URL` the server's own settings apply; the rows say what they were.
//!
//! Scenarios and their baselines:
//! - drain: events/s delivered from a backlog by 1 and 2 worker processes (1 destination, then
//!   100); baselines *wire limit* (the same gzipped payloads POSTed by a bare client) and *store
//!   limit* (claim, then read/settle range after range, then finish, with nothing sent).
//! - latency: commit-to-intake delay at a steady offered rate (events recorded in-process through
//!   `store::events::record`, the function the ingestion API calls).
//! - ingest (durable): `POST /api/v1/events` with 8 clients over 8 subscriptions and over 1, 1
//!   client, batches of 1, 100 and 500, vs a plain insert of the same rows with the same clients
//!   over the same subscriptions; the sequencer alone vs the same insert in batches of its size.
//! - page: the signed-in settings page at 32 connections vs `/healthz`; with a backlog; and
//!   with the page cache off (every view reads the database) vs on.
//! - scale: drain of a large vs a small backlog; p99 of claiming and reading one range of 1000
//!   events at the large backlog vs at the small one; worst wait of small subscriptions while one
//!   has a large backlog, vs the same without it.
//! - memory: peak RSS (`VmHWM`) of the worker and server processes.
//!
//! Output: a table on stdout, `target/bench/pipeline.md` and `target/bench/pipeline.json`.
//! Every wait has a deadline; a scenario that overruns is reported as incomplete, not hung.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::Read as _,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use chrono::Utc;
use cloudpki::siem::provider::RANGE_EVENTS as BATCH_EVENTS;
use cloudpki::{
    config::DEFAULT_CLAIM_BUDGET,
    crypto::MasterKey,
    db::embedded::{EmbeddedOptions, EmbeddedPostgres},
    domain::events::EventId,
    sequencer::Sequencer,
    siem::{datadog, provider, AuditLog},
    store::{
        self,
        delivery::{Claimed, Finish, Range, Settled},
        events::NewEvent,
    },
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions as _, Executor as _, PgPool,
};
use uuid::Uuid;

/// API key the fake intake accepts and every destination is configured with.
const API_KEY: &str = "0123456789abcdef0123456789abcdef";
const PROVIDER: &str = "datadog";
/// The catalog's event ids (domain::events); pre-filled events cycle through them.
const CATALOG: [i32; 11] = [4882, 92, 23, 19, 28, 22, 12, 4888, 4870, 4872, 4887];
/// Host name in the wire-limit payloads (the worker uses its own; same length class).
const HOSTNAME: &str = "cloudpki-bench";
/// Connections of the bench's own pools (the processes under test have their own).
const BENCH_POOL: u32 = 16;
/// Concurrent connections for the page scenario.
const PAGE_CONNECTIONS: usize = 32;
/// Claim loops of the store-limit baseline (the worker's `DEFAULT_CONCURRENCY`).
const STORE_LOOPS: usize = cloudpki::config::DEFAULT_CONCURRENCY;
/// The wire-limit client repeats the payloads for at least this long (one pass is too short
/// to time).
const WIRE_MIN_TIME: Duration = Duration::from_secs(1);
/// Poll period while waiting for a backlog to drain.
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Longest wait for a process to come up or stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Sizes of one run.
#[derive(Debug, Clone, Serialize)]
struct Sizes {
    drain_backlog: i64,
    drain_subscriptions: usize,
    scale_large: i64,
    scale_small: i64,
    fair_subscriptions: usize,
    fair_backlog: i64,
    page_backlog: i64,
    latency_secs: u64,
    latency_rates: [u64; 2],
    load_secs: u64,
    /// Events waiting in the inbox for the sequencer-alone figure.
    sequencer_events: usize,
    drain_deadline_secs: u64,
}

impl Sizes {
    fn quick() -> Self {
        Self {
            drain_backlog: 20_000,
            drain_subscriptions: 100,
            scale_large: 100_000,
            scale_small: 10_000,
            fair_subscriptions: 200,
            fair_backlog: 20_000,
            page_backlog: 200_000,
            latency_secs: 3,
            latency_rates: [1_000, 10_000],
            load_secs: 2,
            sequencer_events: 50_000,
            drain_deadline_secs: 30,
        }
    }

    fn full() -> Self {
        Self {
            drain_backlog: 200_000,
            drain_subscriptions: 100,
            scale_large: 1_000_000,
            scale_small: 10_000,
            fair_subscriptions: 1_000,
            fair_backlog: 100_000,
            page_backlog: 1_000_000,
            latency_secs: 10,
            latency_rates: [1_000, 10_000],
            load_secs: 5,
            sequencer_events: 200_000,
            drain_deadline_secs: 150,
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(quick, only)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(quick: bool, only: Option<Vec<String>>) -> anyhow::Result<()> {
    let started = Instant::now();
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == name));
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(out_dir.join("logs"))?;

    // Started durable when the drain scenario (first) will run: one restart fewer.
    let pg = Postgres::start(&out_dir, wanted("drain")).await?;
    let intake = Intake::start().await?;
    let machine = Machine::probe(&pg).await;
    println!(
        "pipeline bench ({}) on {} cores, {}; {}; database: {}",
        if quick { "quick" } else { "full" },
        machine.cores,
        machine.cpu,
        machine.postgres,
        pg.describe()
    );

    let mut report = Report::default();
    let ctx = Ctx {
        pg: &pg,
        intake: &intake,
        sizes: &sizes,
        out_dir: &out_dir,
    };
    for name in ["drain", "latency", "ingest", "page", "scale"] {
        if !wanted(name) {
            continue;
        }
        let t = Instant::now();
        println!("-- {name} …");
        let outcome = match name {
            "drain" => drain(&ctx, &mut report).await,
            "latency" => latency(&ctx, &mut report).await,
            "ingest" => ingest(&ctx, &mut report).await,
            "page" => page(&ctx, &mut report).await,
            _ => scale(&ctx, &mut report).await,
        };
        if let Err(e) = outcome {
            eprintln!("   scenario {name} failed: {e:#}");
            report.push(Row::failed(name, &format!("{e:#}")));
        }
        // Only the drain and ingest scenarios run durable, even when they stopped half way.
        pg.set_durable(false)
            .await
            .context("restart the embedded PostgreSQL without fsync")?;
        println!("   {name} took {:.1} s", t.elapsed().as_secs_f64());
    }
    report.memory_rows();

    let table = report.table();
    println!("\n{table}");
    let md = format!(
        "# cloudpki pipeline bench\n\nMode: {}. Machine: {} cores, {}; {}. Database: {}. Wall time {:.0} s.\n\n{table}\n{}",
        if quick { "quick" } else { "full" },
        machine.cores,
        machine.cpu,
        machine.postgres,
        pg.describe(),
        started.elapsed().as_secs_f64(),
        report.notes()
    );
    std::fs::write(out_dir.join("pipeline.md"), md)?;
    let json = serde_json::json!({
        "mode": if quick { "quick" } else { "full" },
        "machine": machine,
        "database": pg.describe(),
        "sizes": sizes,
        "wall_secs": started.elapsed().as_secs_f64(),
        "rows": report.rows,
        "notes": report.notes,
    });
    std::fs::write(
        out_dir.join("pipeline.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!(
        "wrote {} and {} ({:.0} s)",
        out_dir.join("pipeline.md").display(),
        out_dir.join("pipeline.json").display(),
        started.elapsed().as_secs_f64()
    );
    drop(intake);
    pg.stop().await;
    Ok(())
}

/// What every scenario needs.
struct Ctx<'a> {
    pg: &'a Postgres,
    intake: &'a Intake,
    sizes: &'a Sizes,
    out_dir: &'a Path,
}

/// `target/` of this build (benches get `CARGO_TARGET_TMPDIR` = `target/tmp`).
fn target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(Path::to_path_buf).unwrap_or(tmp)
}

// ---------------------------------------------------------------------------------------------
// Report

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    scenario: String,
    measured: String,
    value: Option<f64>,
    baseline: String,
    baseline_value: Option<f64>,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

impl Row {
    fn new(scenario: &str, measured: String, value: Option<f64>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            measured,
            value,
            baseline: "—".into(),
            baseline_value: None,
            ratio: None,
            target: "—".into(),
            met: None,
        }
    }

    fn baseline(mut self, text: String, value: f64) -> Self {
        self.baseline = text;
        self.baseline_value = Some(value);
        if let Some(v) = self.value {
            if value > 0.0 {
                self.ratio = Some(v / value);
            }
        }
        self
    }

    fn target(mut self, text: &str, met: bool) -> Self {
        self.target = text.to_owned();
        self.met = Some(met);
        self
    }

    fn failed(scenario: &str, why: &str) -> Self {
        Self::new(scenario, format!("FAILED: {why}"), None)
    }
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    worker_peak_kb: Vec<(String, u64)>,
    server_peak_kb: Vec<(String, u64)>,
}

impl Report {
    fn push(&mut self, row: Row) {
        println!(
            "   {} | {} | {} | {} | {} | {}",
            row.scenario,
            row.measured,
            row.baseline,
            row.ratio.map_or("—".into(), |r| format!("{r:.2}")),
            row.target,
            met_text(row.met)
        );
        self.rows.push(row);
    }

    fn note(&mut self, text: String) {
        println!("   note: {text}");
        self.notes.push(text);
    }

    fn memory_rows(&mut self) {
        if let Some((what, kb)) = self
            .worker_peak_kb
            .iter()
            .max_by_key(|(_, kb)| *kb)
            .cloned()
        {
            let mb = kb as f64 / 1024.0;
            let row = Row::new(
                "memory: worker peak RSS",
                format!("{mb:.1} MB ({what})"),
                Some(mb),
            )
            .target("≤ 64 MB", mb <= 64.0);
            self.push(row);
        }
        if let Some((what, kb)) = self
            .server_peak_kb
            .iter()
            .max_by_key(|(_, kb)| *kb)
            .cloned()
        {
            let mb = kb as f64 / 1024.0;
            self.push(Row::new(
                "memory: server peak RSS",
                format!("{mb:.1} MB ({what})"),
                Some(mb),
            ));
        }
    }

    fn table(&self) -> String {
        let header = ["scenario", "measured", "baseline", "ratio", "target", "met"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.scenario.clone(),
                    r.measured.clone(),
                    r.baseline.clone(),
                    r.ratio.map_or("—".into(), |x| format!("{x:.2}")),
                    r.target.clone(),
                    met_text(r.met).to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: &[String]| {
            let mut s = String::from("|");
            for (c, w) in cols.iter().zip(widths) {
                let pad = w - c.chars().count();
                let _ = write!(s, " {c}{} |", " ".repeat(pad));
            }
            s.push('\n');
            s
        };
        let mut out = line(&header.map(str::to_owned));
        out.push('|');
        for w in widths {
            let _ = write!(out, "{}|", "-".repeat(w + 2));
        }
        out.push('\n');
        for row in &cells {
            out.push_str(&line(row));
        }
        out
    }

    fn notes(&self) -> String {
        let mut s = String::new();
        if !self.notes.is_empty() {
            s.push_str("\nNotes:\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "—",
    }
}

fn per_sec(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut grouped = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{}{grouped}/s", if n < 0 { "-" } else { "" })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Machine facts printed with the results.
#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu: String,
    postgres: String,
}

impl Machine {
    async fn probe(pg: &Postgres) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let postgres = async {
            let mut conn = pg.admin.connect().await.ok()?;
            sqlx::query_scalar::<_, String>("show server_version")
                .fetch_one(&mut conn)
                .await
                .ok()
        }
        .await
        .map_or("PostgreSQL ?".into(), |v| format!("PostgreSQL {v}"));
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            postgres,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: embedded or DATABASE_URL, one fresh database per scenario

struct Postgres {
    admin: PgConnectOptions,
    url: Option<url::Url>,
    embedded: Mutex<Option<EmbeddedPostgres>>,
    /// The embedded cluster's data directory.
    data_dir: PathBuf,
    /// The embedded cluster runs with fsync and synchronous_commit on.
    durable: AtomicBool,
    /// The embedded cluster ran durable at some point (the drain scenario).
    ran_durable: AtomicBool,
}

/// Starts the embedded cluster in `data_dir` (blocking work on the blocking pool).
async fn start_embedded(data_dir: PathBuf, durable: bool) -> anyhow::Result<EmbeddedPostgres> {
    tokio::task::spawn_blocking(move || {
        EmbeddedPostgres::start(EmbeddedOptions { data_dir, durable })
    })
    .await?
    .context("embedded PostgreSQL")
}

impl Postgres {
    /// `durable` applies to the embedded cluster only.
    async fn start(out_dir: &Path, durable: bool) -> anyhow::Result<Self> {
        let data_dir = out_dir.join("pg");
        let pg = match std::env::var("DATABASE_URL") {
            Ok(raw) if !raw.trim().is_empty() => Self {
                admin: PgConnectOptions::from_str(raw.trim()).context("DATABASE_URL")?,
                url: Some(url::Url::parse(raw.trim()).context("DATABASE_URL")?),
                embedded: Mutex::new(None),
                data_dir,
                durable: AtomicBool::new(false),
                ran_durable: AtomicBool::new(false),
            },
            _ => {
                let cluster = start_embedded(data_dir.clone(), durable).await?;
                Self {
                    admin: cluster.connect_options("postgres"),
                    url: None,
                    embedded: Mutex::new(Some(cluster)),
                    data_dir,
                    durable: AtomicBool::new(durable),
                    ran_durable: AtomicBool::new(durable),
                }
            }
        };
        // Databases left by an interrupted run.
        let mut conn = pg.admin.connect().await?;
        let stale: Vec<String> =
            sqlx::query_scalar("select datname from pg_database where datname like 'bench\\_%'")
                .fetch_all(&mut conn)
                .await?;
        for name in stale {
            conn.execute(format!(r#"drop database "{name}" with (force)"#).as_str())
                .await?;
        }
        Ok(pg)
    }

    fn describe(&self) -> String {
        match &self.url {
            Some(_) => "DATABASE_URL (its own fsync and synchronous_commit settings; the drain rows say which)".into(),
            None if self.ran_durable.load(Ordering::Relaxed) => {
                "embedded; drain rows durable (fsync, synchronous_commit on) unless labelled, other scenarios fsync off".into()
            }
            None => "embedded (fsync off)".into(),
        }
    }

    /// Restarts the embedded cluster with or without fsync and synchronous commit (every
    /// connection to it breaks). With `DATABASE_URL` nothing changes: the server's settings
    /// apply, and [`Durability`] reports them.
    async fn set_durable(&self, durable: bool) -> anyhow::Result<()> {
        if self.url.is_some() || self.durable.load(Ordering::Relaxed) == durable {
            return Ok(());
        }
        let old = self
            .embedded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut old) = old {
            tokio::task::spawn_blocking(move || old.stop())
                .await?
                .context("stop the embedded PostgreSQL")?;
        }
        let cluster = start_embedded(self.data_dir.clone(), durable).await?;
        *self.embedded.lock().unwrap_or_else(|p| p.into_inner()) = Some(cluster);
        self.durable.store(durable, Ordering::Relaxed);
        if durable {
            self.ran_durable.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn is_embedded(&self) -> bool {
        self.url.is_none()
    }

    /// A new migrated database.
    async fn fresh(&self, scenario: &str) -> anyhow::Result<Db> {
        let name = format!("bench_{scenario}_{}", std::process::id());
        let mut conn = self.admin.connect().await?;
        conn.execute(format!(r#"drop database if exists "{name}" with (force)"#).as_str())
            .await?;
        conn.execute(format!(r#"create database "{name}""#).as_str())
            .await?;
        let options = self.admin.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(BENCH_POOL)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        cloudpki::db::migrate(&pool).await?;
        let url = match &self.url {
            Some(base) => {
                let mut url = base.clone();
                url.set_path(&format!("/{name}"));
                url.to_string()
            }
            None => {
                let socket = self
                    .admin
                    .get_socket()
                    .context("embedded options use a socket")?;
                format!(
                    "postgres://{}@localhost:{}/{name}?host={}",
                    self.admin.get_username(),
                    self.admin.get_port(),
                    socket.display()
                )
            }
        };
        Ok(Db {
            pool,
            name,
            url,
            master_key: MasterKey::generate(),
        })
    }

    async fn drop_db(&self, db: Db) {
        db.pool.close().await;
        if let Ok(mut conn) = self.admin.connect().await {
            let _ = conn
                .execute(format!(r#"drop database if exists "{}" with (force)"#, db.name).as_str())
                .await;
        }
    }

    async fn stop(&self) {
        let cluster = self
            .embedded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut cluster) = cluster {
            let _ = tokio::task::spawn_blocking(move || cluster.stop()).await;
        }
    }
}

/// One scenario's database.
struct Db {
    pool: PgPool,
    name: String,
    /// `DATABASE_URL` for the cloudpki processes.
    url: String,
    master_key: MasterKey,
}

impl Db {
    /// `n` subscriptions, each with an enabled Datadog destination pointing at `intake`.
    async fn subscriptions(&self, n: usize, intake: &str) -> anyhow::Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let names: Vec<String> = (0..n).map(|i| format!("Bench {i}")).collect();
        sqlx::query(
            "insert into subscriptions (id, name) select * from unnest($1::uuid[], $2::text[])",
        )
        .bind(&ids)
        .bind(&names)
        .execute(&self.pool)
        .await?;
        let admin = Uuid::new_v4();
        sqlx::query("insert into users (id, email, password_hash) values ($1, $2, 'x')")
            .bind(admin)
            .bind(format!("setup-{admin}@example.com"))
            .execute(&self.pool)
            .await?;
        for id in &ids {
            self.configure_datadog(*id, admin, intake).await?;
        }
        Ok(ids)
    }

    /// The settings a saved settings page leaves (as tests/support/app.rs does it).
    async fn configure_datadog(
        &self,
        subscription: Uuid,
        admin: Uuid,
        intake: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let dest = cloudpki::domain::destination::DestinationKey::first(subscription);
        store::siem::upsert_settings(
            &mut tx,
            dest,
            true,
            PROVIDER,
            None,
            (admin, "setup@example.com"),
        )
        .await?;
        store::siem::upsert_provider_fields(
            &mut tx,
            dest,
            PROVIDER,
            &serde_json::json!({ "url": intake }),
        )
        .await?;
        let context =
            provider::secret_context(dest, cloudpki::siem::datadog::provider(), "api_key");
        let sealed = self.master_key.seal(API_KEY.as_bytes(), &context);
        store::siem::upsert_secret(
            &mut tx,
            dest,
            PROVIDER,
            "api_key",
            &sealed,
            &API_KEY[API_KEY.len() - 4..],
        )
        .await?;
        store::delivery::ensure_destination(&mut tx, dest, PROVIDER).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Empties the log (between runs): no events, every counter and cursor back to 0.
    async fn clear(&self) -> anyhow::Result<()> {
        // A running worker may hold locks on these tables in another order: the truncation
        // can lose a deadlock to it, and simply goes again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.clear_once().await {
                Err(e) if attempt < 5 && is_deadlock(&e) => continue,
                other => return other,
            }
        }
    }

    async fn clear_once(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("truncate delivery_parked, delivery_attempts, audit_events, audit_inbox")
            .execute(&mut *tx)
            .await?;
        sqlx::query("update subscriptions set last_seq = 0, last_hash = null")
            .execute(&mut *tx)
            .await?;
        sqlx::query("update delivery_destinations set cursor = 0, inflight_to = 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `n` events spread round-robin over `subs`, numbered per subscription after its
    /// `last_seq` (which moves to the last of them); then `vacuum analyze` so the planner sees
    /// the real sizes. Every subscription in `subs` has its destination already, and a cursor
    /// never passes `last_seq`, so every pre-filled event is owed to it.
    async fn prefill(&self, subs: &[Uuid], n: i64) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let mut tx = self.pool.begin().await?;
        // The counter lock the sequencer takes, so a concurrent batch cannot interleave its
        // numbers with these.
        let locked: Vec<(Uuid, bool)> = sqlx::query_as(
            "select s.id, exists (select 1 from delivery_destinations d
                                  where d.subscription_id = s.id and d.provider = $2
                                    and d.off_at_seq is null and d.cursor <= s.last_seq)
             from subscriptions s where s.id = any($1) order by s.id for no key update of s",
        )
        .bind(subs)
        .bind(PROVIDER)
        .fetch_all(&mut *tx)
        .await?;
        if locked.len() != subs.len() || locked.iter().any(|(_, owed)| !owed) {
            bail!("prefill: a subscription has no destination that would owe the events");
        }
        sqlx::query(
            "with picked as (
                select g, ($1::uuid[])[1 + g % array_length($1::uuid[], 1)] as subscription_id
                from generate_series(0, $3 - 1) g
             )
             insert into audit_events
                (subscription_id, seq, id, event_id, occurred_at, recorded_at, actor, details)
             select p.subscription_id,
                    s.last_seq + row_number() over (partition by p.subscription_id order by p.g),
                    gen_random_uuid(),
                    ($2::int[])[1 + p.g % array_length($2::int[], 1)],
                    now() - interval '1 minute', now(),
                    'operator' || (p.g % 50) || '@example.com',
                    jsonb_build_object(
                        'serial', encode(sha256(p.g::text::bytea), 'hex'),
                        'subject', 'CN=device-' || p.g || '.example.com,O=Example',
                        'issuer', 'CN=Example Issuing CA 1,O=Example',
                        'template', 'TLS Server')
             from picked p join subscriptions s on s.id = p.subscription_id",
        )
        .bind(subs)
        .bind(CATALOG.as_slice())
        .bind(n)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "update subscriptions s set last_seq = m.last
             from (select subscription_id, max(seq) as last from audit_events
                   where subscription_id = any($1) group by subscription_id) m
             where s.id = m.subscription_id",
        )
        .bind(subs)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.pool
            .execute(
                "vacuum analyze audit_events, subscriptions, delivery_destinations, delivery_parked",
            )
            .await?;
        Ok(t.elapsed())
    }

    /// Makes every destination not due, so workers can start without touching the backlog.
    async fn hold(&self) -> anyhow::Result<()> {
        sqlx::query(
            "update delivery_destinations set next_attempt_at = now() + interval '1 day',
                leased_until = null, lease_owner = null, consecutive_failures = 0,
                status = 'healthy', failing_since = null",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes every destination due and wakes the workers.
    async fn release(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("update delivery_destinations set next_attempt_at = now()")
            .execute(&mut *tx)
            .await?;
        sqlx::query("select pg_notify($1, 'bench')")
            .bind(store::events::EVENTS_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events owed by every destination (cursor arithmetic, as `store::delivery::backlogs`).
    async fn queued(&self) -> anyhow::Result<i64> {
        owed(&self.pool).await
    }

    /// The database clock (to tell new connections from old ones).
    async fn now(&self) -> anyhow::Result<chrono::DateTime<Utc>> {
        Ok(sqlx::query_scalar("select clock_timestamp()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Waits until `n` connections opened since `since` listen for commits
    /// (`LISTEN cloudpki_events`): that many worker processes are up.
    async fn wait_listeners(&self, n: usize, since: chrono::DateTime<Utc>) -> anyhow::Result<()> {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        loop {
            let listening: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                 where datname = current_database() and query ilike 'listen%'
                   and backend_start >= $1",
            )
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
            if listening >= n as i64 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{n} worker(s) did not start listening within {PROCESS_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Events owed, over every destination: what its cursor has not reached yet (up to where export
/// was switched off), plus the events waiting to be sent out of order.
async fn owed(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select coalesce(sum(greatest(coalesce(d.off_at_seq, s.last_seq) - d.cursor, 0)), 0)::bigint
                + (select count(*) from delivery_parked p where p.state = 'retry')
         from delivery_destinations d join subscriptions s on s.id = d.subscription_id",
    )
    .fetch_one(pool)
    .await?)
}

/// What the server says about durability, asked on a new connection to a scenario's database
/// (database-level settings apply to new connections only).
struct Durability {
    fsync: String,
    synchronous_commit: String,
    full_page_writes: String,
}

impl Durability {
    async fn probe(db: &Db) -> anyhow::Result<Self> {
        let mut conn = db.pool.connect_options().connect().await?;
        let (fsync, synchronous_commit, full_page_writes): (String, String, String) =
            sqlx::query_as(
                "select current_setting('fsync'), current_setting('synchronous_commit'),
                        current_setting('full_page_writes')",
            )
            .fetch_one(&mut conn)
            .await?;
        drop(conn);
        Ok(Self {
            fsync,
            synchronous_commit,
            full_page_writes,
        })
    }

    /// A commit reported to the client survives a crash of the machine.
    fn durable(&self) -> bool {
        self.fsync == "on" && self.synchronous_commit != "off"
    }

    /// For a row's scenario name.
    fn label(&self) -> String {
        if self.durable() {
            "durable".into()
        } else {
            format!(
                "NOT durable: fsync {}, synchronous_commit {}",
                self.fsync, self.synchronous_commit
            )
        }
    }

    fn describe(&self) -> String {
        format!(
            "fsync {}, synchronous_commit {}, full_page_writes {}",
            self.fsync, self.synchronous_commit, self.full_page_writes
        )
    }
}

/// The events `prefill` writes, as the forwarder hands them to the Datadog builder.
fn prefill_logs(subs: &[Uuid], n: i64) -> Vec<AuditLog> {
    let occurred = Utc::now() - chrono::Duration::minutes(1);
    (0..n)
        .map(|g| {
            let serial = hex::encode(sha2::Sha256::digest(g.to_string().as_bytes()));
            AuditLog {
                sequence: 0,
                uuid: Uuid::new_v4(),
                subscription_id: subs[(g as usize) % subs.len()],
                event_id: EventId::parse(CATALOG[(g as usize) % CATALOG.len()] as u32)
                    .expect("catalog id"),
                occurred_at: occurred,
                recorded_at: occurred,
                actor: Some(format!("operator{}@example.com", g % 50)),
                details: serde_json::json!({
                    "serial": serial,
                    "subject": format!("CN=device-{g}.example.com,O=Example"),
                    "issuer": "CN=Example Issuing CA 1,O=Example",
                    "template": "TLS Server",
                }),
                chain: None,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The fake intake

#[derive(Default)]
struct IntakeState {
    events: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    track: AtomicBool,
    arrivals: Mutex<HashMap<Uuid, Instant>>,
}

/// A minimal Datadog logs intake on loopback: checks the key, gunzips, parses, counts.
struct Intake {
    addr: SocketAddr,
    state: Arc<IntakeState>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Deserialize)]
struct LogId {
    #[serde(rename = "EventUuid")]
    uuid: Uuid,
}

impl Intake {
    async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(IntakeState::default());
        let app = Router::new()
            .route("/api/v2/logs", post(intake_logs))
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn events(&self) -> u64 {
        self.state.events.load(Ordering::Relaxed)
    }

    fn reset(&self, track: bool) {
        self.state.events.store(0, Ordering::Relaxed);
        self.state.requests.store(0, Ordering::Relaxed);
        self.state.refused.store(0, Ordering::Relaxed);
        self.state.track.store(track, Ordering::Relaxed);
        self.state
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn arrival(&self, id: &Uuid) -> Option<Instant> {
        self.state
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    fn arrived_all(&self, ids: &[Uuid]) -> bool {
        let arrivals = self
            .state
            .arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ids.iter().all(|id| arrivals.contains_key(id))
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn intake_logs(
    State(state): State<Arc<IntakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let received = Instant::now();
    state.requests.fetch_add(1, Ordering::Relaxed);
    if headers.get("dd-api-key").map(|v| v.as_bytes()) != Some(API_KEY.as_bytes()) {
        state.refused.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::FORBIDDEN, r#"{"errors":["Forbidden"]}"#);
    }
    let mut plain = Vec::with_capacity(body.len() * 8);
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let read = if gzip {
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain)
    } else {
        plain.extend_from_slice(&body);
        Ok(plain.len())
    };
    let logs: Vec<LogId> = match read.ok().and_then(|_| serde_json::from_slice(&plain).ok()) {
        Some(logs) => logs,
        None => {
            state.refused.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::BAD_REQUEST, r#"{"errors":["Malformed"]}"#);
        }
    };
    if state.track.load(Ordering::Relaxed) {
        let mut arrivals = state.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        for log in &logs {
            arrivals.entry(log.uuid).or_insert(received);
        }
    }
    state.events.fetch_add(logs.len() as u64, Ordering::Relaxed);
    (StatusCode::ACCEPTED, "{}")
}

// ---------------------------------------------------------------------------------------------
// cloudpki processes

/// A running `cloudpki` process; stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    child: Option<Child>,
    label: String,
}

impl Proc {
    fn spawn(
        db: &Db,
        out_dir: &Path,
        label: &str,
        args: &[&str],
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(db, out_dir, label, args, listen, &[])
    }

    fn spawn_with_env(
        db: &Db,
        out_dir: &Path,
        label: &str,
        args: &[&str],
        listen: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let data = out_dir.join("data").join(label);
        std::fs::create_dir_all(&data)?;
        let log = std::fs::File::create(out_dir.join("logs").join(format!("{label}.log")))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloudpki"));
        cmd.args(args)
            .env("DATABASE_URL", &db.url)
            .env("CLOUDPKI_MASTER_KEY", db.master_key.to_base64())
            .env("CLOUDPKI_EGRESS_ALLOW", "127.0.0.1")
            .env("CLOUDPKI_DATA_DIR", &data)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(addr) = listen {
            cmd.env("CLOUDPKI_LISTEN", addr.to_string());
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        // SAFETY: one async-signal-safe prctl call. A bench killed from outside (timeout,
        // Ctrl-C) must not leave workers polling a database that is gone.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", env!("CARGO_BIN_EXE_cloudpki")))?;
        Ok(Self {
            child: Some(child),
            label: label.to_owned(),
        })
    }

    fn worker(db: &Db, out_dir: &Path, label: &str) -> anyhow::Result<Self> {
        Self::spawn(db, out_dir, label, &["worker"], None)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Peak resident set (`VmHWM`), in KiB.
    fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("   {} ignored SIGTERM; killing it", self.label);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (bound and released; the server binds it a moment later).
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

// ---------------------------------------------------------------------------------------------
// drain

struct Drained {
    rate: f64,
    secs: f64,
    complete: bool,
}

/// Starts `workers` worker processes on a held backlog of `expected` events, releases it and
/// measures events delivered at the intake per second until the queue is empty.
async fn drain_with_workers(
    ctx: &Ctx<'_>,
    db: &Db,
    workers: usize,
    expected: u64,
    report: &mut Report,
    label: &str,
) -> anyhow::Result<Drained> {
    ctx.intake.reset(false);
    db.hold().await?;
    let since = db.now().await?;
    let mut procs = Vec::new();
    for i in 0..workers {
        procs.push(Proc::worker(
            db,
            ctx.out_dir,
            &format!("worker-{label}-{i}"),
        )?);
    }
    db.wait_listeners(workers, since).await?;
    db.release().await?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(ctx.sizes.drain_deadline_secs);
    let mut complete = false;
    while Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
        if ctx.intake.events() >= expected && db.queued().await? == 0 {
            complete = true;
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let delivered = ctx.intake.events();
    for p in &procs {
        if let Some(kb) = p.peak_rss_kb() {
            report.worker_peak_kb.push((label.to_owned(), kb));
        }
    }
    drop(procs);
    if !complete {
        report.note(format!(
            "{label}: backlog not drained within {} s ({delivered} of {expected} delivered)",
            ctx.sizes.drain_deadline_secs
        ));
    }
    if delivered > expected {
        report.note(format!(
            "{label}: {} events delivered more than once",
            delivered - expected
        ));
    }
    Ok(Drained {
        rate: delivered.min(expected) as f64 / secs,
        secs,
        complete,
    })
}

/// The same payloads the worker builds, gzipped up front, POSTed by a bare client.
async fn wire_limit(
    intake: &Intake,
    subs: &[Uuid],
    n: i64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let mut logs = prefill_logs(subs, n);
    // The forwarder batches per destination.
    logs.sort_by_key(|l| l.subscription_id);
    let mut payloads = Vec::new();
    for chunk in logs.chunk_by(|a, b| a.subscription_id == b.subscription_id) {
        for batch in datadog::build_batches(chunk, HOSTNAME, Utc::now()) {
            payloads.push(Bytes::from(batch.gzip_body()?));
        }
    }
    let sizes: Vec<u64> = logs
        .chunk_by(|a, b| a.subscription_id == b.subscription_id)
        .flat_map(|chunk| {
            chunk
                .chunks(datadog::MAX_BATCH_EVENTS)
                .map(|c| c.len() as u64)
                .collect::<Vec<_>>()
        })
        .collect();
    if sizes.len() != payloads.len() {
        bail!("wire limit: unexpected batching");
    }
    intake.reset(false);
    let payloads = Arc::new(payloads.into_iter().zip(sizes).collect::<Vec<_>>());
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let url = format!("{}/api/v2/logs", intake.base_url());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (payloads, next, sent, client, url) = (
            payloads.clone(),
            next.clone(),
            sent.clone(),
            client.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                // At least one pass over every payload, and at least WIRE_MIN_TIME.
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= payloads.len() && t0.elapsed() >= WIRE_MIN_TIME {
                    return Ok::<(), reqwest::Error>(());
                }
                let (body, events) = &payloads[i % payloads.len()];
                let r = client
                    .post(&url)
                    .header("DD-API-KEY", API_KEY)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body.clone())
                    .send()
                    .await?;
                r.error_for_status()?.bytes().await?;
                sent.fetch_add(*events, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    if intake.events() != sent {
        bail!("wire limit: intake counted {} of {sent}", intake.events());
    }
    Ok(sent as f64 / secs)
}

/// Claims through `store::delivery` and reads and settles range after range as the forwarder
/// does (until caught up or the claim budget is spent), then finishes the claim; nothing is
/// sent. What the store alone can do per second.
async fn store_limit(db: &Db, expected: u64, loops: usize) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(cloudpki::db::MAX_CONNECTIONS)
        .connect_with(db.pool.connect_options().as_ref().clone())
        .await?;
    db.release().await?;
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let (pool, done) = (pool.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let lease = chrono::Duration::seconds(60);
            loop {
                let Some(claimed) =
                    store::delivery::claim_destination(&pool, Utc::now(), lease).await?
                else {
                    if owed(&pool).await? == 0 {
                        return Ok::<(), anyhow::Error>(());
                    }
                    // Another loop holds the only due destination; the real worker would
                    // sleep until woken, so do not hammer the database either.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let n = drain_claim(&pool, &claimed).await?;
                done.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    pool.close().await;
    let n = done.load(Ordering::Relaxed);
    if n != expected {
        bail!("store limit: settled {n} of {expected}");
    }
    Ok(n as f64 / secs)
}

/// Serves one claim without sending: reads ranges of [`BATCH_EVENTS`] after the cursor and
/// settles each as delivered, until caught up or [`DEFAULT_CLAIM_BUDGET`] is spent, then
/// finishes the claim. Returns the events settled.
async fn drain_claim(pool: &PgPool, claimed: &Claimed) -> anyhow::Result<u64> {
    let budget_end = Instant::now() + DEFAULT_CLAIM_BUDGET;
    let mut after = claimed.cursor;
    let mut delivered = 0i64;
    while Instant::now() < budget_end {
        let events = match store::delivery::read_range(pool, claimed, after, BATCH_EVENTS).await? {
            Range::Events { events, .. } => events,
            Range::Stop => bail!("store limit: the lease was lost"),
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            break;
        };
        let n = events.len() as i64;
        let settled = Settled {
            cursor_from: after,
            cursor_to: Some(last),
            delivered: n,
            duplicates: events.iter().filter(|e| e.maybe_sent).count() as i64,
            maybe_sent_to: 0,
            ..Settled::default()
        };
        store::delivery::settle(pool, claimed, Utc::now(), &settled).await?;
        after = last;
        delivered += n;
    }
    let finish = Finish {
        delivered,
        ..Finish::default()
    };
    if !store::delivery::finish(pool, claimed, Utc::now(), &finish, after).await? {
        bail!("store limit: the lease was lost before finishing");
    }
    Ok(delivered as u64)
}

async fn drain(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    // The drain rows run durable: a cursor the worker moved survives a crash of the machine.
    ctx.pg.set_durable(true).await?;
    let db = ctx.pg.fresh("drain").await?;
    sqlx::query(&format!(
        r#"alter database "{}" set synchronous_commit = on"#,
        db.name
    ))
    .execute(&db.pool)
    .await?;
    let durability = Durability::probe(&db).await?;
    report.note(format!(
        "drain: {} ({}), as the worker processes and the store limit see it",
        durability.label(),
        durability.describe()
    ));
    let mut headline = None;
    let n = ctx.sizes.drain_backlog;
    let intake_url = ctx.intake.base_url();
    let subs = db
        .subscriptions(ctx.sizes.drain_subscriptions, &intake_url)
        .await?;
    for dests in [&subs[..1], &subs[..]] {
        let layout = if dests.len() == 1 {
            "1 destination".to_owned()
        } else {
            format!("{} destinations", dests.len())
        };
        // Baselines first: the bare wire, then the store alone.
        let wire = wire_limit(ctx.intake, dests, n, STORE_LOOPS).await?;
        db.clear().await?;
        db.hold().await?;
        let fill = db.prefill(dests, n).await?;
        // One claim loop per destination, as many as a worker's slots: more loops than
        // destinations would only poll each other's leases.
        let loops = dests.len().min(STORE_LOOPS);
        let store = store_limit(&db, n as u64, loops).await?;
        report.note(format!(
            "drain {layout}: wire limit {} (concurrency {STORE_LOOPS}), store limit {} ({loops} claim loops, 16 connections); prefill of {n} took {:.1} s",
            per_sec(wire),
            per_sec(store),
            fill.as_secs_f64()
        ));
        for workers in [1usize, 2] {
            db.clear().await?;
            db.prefill(dests, n).await?;
            let label = format!("drain-{}d-{workers}w", dests.len());
            let d = drain_with_workers(ctx, &db, workers, n as u64, report, &label).await?;
            let scenario = format!(
                "drain {n} ({layout}, {workers} worker{}, {})",
                if workers > 1 { "s" } else { "" },
                durability.label()
            );
            let measured = format!(
                "{} ({:.2} s{})",
                per_sec(d.rate),
                d.secs,
                if d.complete { "" } else { ", INCOMPLETE" }
            );
            let row = Row::new(&scenario, measured.clone(), Some(d.rate))
                .baseline(format!("wire {}", per_sec(wire)), wire);
            let row = if workers == 1 && dests.len() == 1 {
                headline = Some(d.rate);
                let met = d.rate >= 50_000.0 && d.rate >= 0.5 * wire;
                row.target("≥ 50,000/s and ≥ 0.5 × wire", met)
            } else {
                row
            };
            report.push(row);
            report.push(
                Row::new("  same vs store limit", measured, Some(d.rate))
                    .baseline(format!("store {}", per_sec(store)), store),
            );
        }
    }
    ctx.pg.drop_db(db).await;

    // The headline once more without durability (the embedded cluster's usual settings),
    // labelled, beside the durable one.
    let (Some(durable_rate), true) = (headline, ctx.pg.is_embedded()) else {
        return Ok(());
    };
    ctx.pg.set_durable(false).await?;
    let db = ctx.pg.fresh("drain_nondurable").await?;
    let subs = db.subscriptions(1, &intake_url).await?;
    let durability = Durability::probe(&db).await?;
    db.prefill(&subs, n).await?;
    let d = drain_with_workers(ctx, &db, 1, n as u64, report, "drain-1d-1w-nondurable").await?;
    report.push(
        Row::new(
            &format!(
                "drain {n} (1 destination, 1 worker, {})",
                durability.label()
            ),
            format!(
                "{} ({:.2} s{})",
                per_sec(d.rate),
                d.secs,
                if d.complete { "" } else { ", INCOMPLETE" }
            ),
            Some(d.rate),
        )
        .baseline(format!("durable {}", per_sec(durable_rate)), durable_rate),
    );
    ctx.pg.drop_db(db).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// latency

/// Percentile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn new_events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            id: Uuid::new_v4(),
            event_id: CATALOG[i % CATALOG.len()],
            occurred_at: Utc::now(),
            actor: Some(format!("operator{}@example.com", i % 50)),
            details: serde_json::json!({
                "serial": format!("{:032x}", rand_u128()),
                "subject": format!("CN=device-{i}.example.com,O=Example"),
                "issuer": "CN=Example Issuing CA 1,O=Example",
                "template": "TLS Server",
            }),
        })
        .collect()
}

fn rand_u128() -> u128 {
    Uuid::new_v4().as_u128()
}

/// Records events at `rate`/s for `secs` (open loop, one `record` per 10 ms tick) and returns
/// each event's commit-to-intake delay.
async fn steady_load(
    db: &Db,
    sequencer: &Sequencer,
    intake: &Intake,
    subscription: Uuid,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(Vec<Duration>, f64, usize)> {
    const TICK: Duration = Duration::from_millis(10);
    let per_tick = (rate as usize / 100).max(1);
    intake.reset(true);
    let commits: Arc<Mutex<Vec<(Uuid, Instant)>>> = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    let mut offered = 0usize;
    while Instant::now() < end {
        ticker.tick().await;
        let events = new_events(per_tick);
        offered += events.len();
        let permit = in_flight.clone().acquire_owned().await?;
        let (pool, commits, sequencer) = (db.pool.clone(), commits.clone(), sequencer.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let recorded = store::events::record(&pool, subscription, &events)
                .await
                .map_err(|e| anyhow::anyhow!("record: {e}"))?;
            let at = Instant::now();
            // As the API does after commit.
            sequencer.recorded(&pool, subscription, &recorded);
            commits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(events.iter().map(|e| (e.id, at)));
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let offered_rate = offered as f64 / t0.elapsed().as_secs_f64();
    let commits = std::mem::take(&mut *commits.lock().unwrap_or_else(|p| p.into_inner()));
    let ids: Vec<Uuid> = commits.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !intake.arrived_all(&ids) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut missing = 0;
    let mut delays: Vec<Duration> = commits
        .iter()
        .filter_map(|(id, at)| {
            let arrival = intake.arrival(id);
            if arrival.is_none() {
                missing += 1;
            }
            arrival.map(|a| a.saturating_duration_since(*at))
        })
        .collect();
    delays.sort();
    intake.reset(false);
    Ok((delays, offered_rate, missing))
}

async fn latency(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    let db = ctx.pg.fresh("latency").await?;
    // The second subscription only carries the concurrent drain of the last row.
    let subs = db.subscriptions(2, &ctx.intake.base_url()).await?;
    let since = db.now().await?;
    let worker = Proc::worker(&db, ctx.out_dir, "worker-latency")?;
    db.wait_listeners(1, since).await?;
    // Events are recorded in this process, which sequences them as `serve` does.
    let (sequencer, _stop_sequencer) = start_sequencer(&db.pool);
    for rate in ctx.sizes.latency_rates {
        db.clear().await?;
        let (delays, offered, missing) = steady_load(
            &db,
            &sequencer,
            ctx.intake,
            subs[0],
            rate,
            ctx.sizes.latency_secs,
        )
        .await?;
        let p = |q| percentile(&delays, q);
        let measured = format!(
            "p50 {} · p95 {} · p99 {} · max {} (offered {}, {} events{})",
            ms(p(50.0)),
            ms(p(95.0)),
            ms(p(99.0)),
            ms(delays.last().copied().unwrap_or_default()),
            per_sec(offered),
            delays.len(),
            if missing > 0 {
                format!(", {missing} NOT DELIVERED")
            } else {
                String::new()
            }
        );
        let row = Row::new(
            &format!("latency at {}", per_sec(rate as f64)),
            measured,
            Some(p(99.0).as_secs_f64() * 1000.0),
        );
        let row = if rate == 1_000 {
            let met = p(99.0) <= Duration::from_millis(100) && missing == 0;
            row.target("p99 ≤ 100 ms", met)
        } else {
            row
        };
        report.push(row);
    }
    // Commit → intake at 5,000/s for one subscription, alone and then while another drains a
    // large backlog through the same worker.
    let rate = 5_000;
    let secs = ctx.sizes.latency_secs;
    db.clear().await?;
    let (alone, _, alone_missing) =
        steady_load(&db, &sequencer, ctx.intake, subs[0], rate, secs).await?;
    db.clear().await?;
    db.hold().await?;
    let backlog = ctx.sizes.scale_large;
    db.prefill(&subs[1..], backlog).await?;
    db.release().await?;
    // Let the worker get busy with the backlog first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (busy, offered, missing) =
        steady_load(&db, &sequencer, ctx.intake, subs[0], rate, secs).await?;
    let still_owed = db.queued().await?;
    let p99 = percentile(&busy, 99.0);
    report.push(
        Row::new(
            &format!("latency at 5,000/s while another subscription drains {backlog}"),
            format!(
                "p50 {} · p99 {} · max {} (offered {}, {} events{}; {} of the backlog still owed at the end)",
                ms(percentile(&busy, 50.0)),
                ms(p99),
                ms(busy.last().copied().unwrap_or_default()),
                per_sec(offered),
                busy.len(),
                if missing > 0 {
                    format!(", {missing} NOT DELIVERED")
                } else {
                    String::new()
                },
                still_owed
            ),
            Some(p99.as_secs_f64() * 1000.0),
        )
        .baseline(
            format!(
                "alone: p99 {}{}",
                ms(percentile(&alone, 99.0)),
                if alone_missing > 0 { " (some NOT DELIVERED)" } else { "" }
            ),
            percentile(&alone, 99.0).as_secs_f64() * 1000.0,
        )
        .target(
            "p99 ≤ 50 ms",
            p99 <= Duration::from_millis(50) && missing == 0,
        ),
    );
    if let Some(kb) = worker.peak_rss_kb() {
        report.worker_peak_kb.push(("latency".into(), kb));
    }
    drop(worker);
    ctx.pg.drop_db(db).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ingest and page (one `cloudpki serve --no-worker` process)

/// A sequencer in this process (as `serve` runs one), until the returned sender is dropped.
fn start_sequencer(pool: &PgPool) -> (Sequencer, tokio::sync::watch::Sender<bool>) {
    let sequencer = Sequencer::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(
        sequencer
            .clone()
            .run(pool.clone(), Arc::new(|_| {}), stopped),
    );
    (sequencer, stop)
}

/// Whether PostgreSQL chose this statement as a deadlock's victim (SQLSTATE 40P01).
fn is_deadlock(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01")
}

/// Runs `load` on `connections` tasks for `secs`; returns (operations, seconds, latencies).
async fn closed_loop<F, Fut>(
    connections: usize,
    secs: u64,
    load: F,
) -> anyhow::Result<(u64, f64, Vec<Duration>)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let load = Arc::new(load);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                done += load().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>((done, latencies))
        }));
    }
    let mut total = 0;
    let mut all = Vec::new();
    for t in tasks {
        let (done, latencies) = t.await??;
        total += done;
        all.extend(latencies);
    }
    let secs = t0.elapsed().as_secs_f64();
    all.sort();
    Ok((total, secs, all))
}

/// Body of `n` events as the PKI core sends them (no ids: the server assigns them).
fn ingest_body(n: usize) -> Bytes {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "event_id": CATALOG[i % CATALOG.len()],
                "actor": format!("operator{}@example.com", i % 50),
                "details": {
                    "serial": format!("{:032x}", rand_u128()),
                    "subject": format!("CN=device-{i}.example.com,O=Example"),
                    "issuer": "CN=Example Issuing CA 1,O=Example",
                    "template": "TLS Server",
                },
            })
        })
        .collect();
    let value = if n == 1 {
        events.into_iter().next().unwrap_or_default()
    } else {
        serde_json::Value::Array(events)
    };
    Bytes::from(serde_json::to_vec(&value).expect("json"))
}

/// The baseline of ingest: a plain durable insert of the same rows into the log's table, as
/// pgbench would run it. Numbers come from a sequence (no counter row, no lock shared with
/// other writers), with no duplicate check and no notification.
async fn insert_direct(pool: &PgPool, subscription: Uuid, n: usize) -> anyhow::Result<u64> {
    let events = new_events(n);
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let event_ids: Vec<i32> = events.iter().map(|e| e.event_id).collect();
    let occurred: Vec<chrono::DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let actors: Vec<Option<String>> = events.iter().map(|e| e.actor.clone()).collect();
    let details: Vec<serde_json::Value> = events.iter().map(|e| e.details.clone()).collect();
    let (inserted,): (i64,) = sqlx::query_as(
        "with inserted as (
            insert into audit_events (subscription_id, seq, id, event_id, occurred_at, actor, details)
            select $6, nextval('bench_direct_seq'), t.id, t.event_id, t.occurred_at,
                   t.actor, t.details
            from unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::jsonb[])
                as t(id, event_id, occurred_at, actor, details)
            returning 1
         )
         select count(*) from inserted",
    )
    .bind(&ids)
    .bind(&event_ids)
    .bind(&occurred)
    .bind(&actors)
    .bind(&details)
    .bind(subscription)
    .fetch_one(pool)
    .await?;
    Ok(inserted as u64)
}

/// Waits until the inbox is empty (every ingested event sequenced); how long that took.
async fn wait_sequenced(pool: &PgPool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let deadline = t + PROCESS_TIMEOUT;
    loop {
        let waiting: bool = sqlx::query_scalar("select exists (select 1 from audit_inbox)")
            .fetch_one(pool)
            .await?;
        if !waiting {
            return Ok(t.elapsed());
        }
        if Instant::now() > deadline {
            bail!("the sequencer did not empty the inbox within {PROCESS_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Ingest, durable (fsync and synchronous_commit on): `POST /api/v1/events` through a
/// `cloudpki serve --no-worker` process (which sequences what it takes in) against a plain
/// insert of the same rows with the same clients over the same subscriptions; then the
/// sequencer alone, in-process, against the same plain insert in batches of its size.
async fn ingest(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    ctx.pg.set_durable(true).await?;
    let db = ctx.pg.fresh("ingest").await?;
    sqlx::query("create sequence bench_direct_seq")
        .execute(&db.pool)
        .await?;
    let subs = db.subscriptions(8, &ctx.intake.base_url()).await?;
    let mut tokens = Vec::new();
    for sub in &subs {
        let token = cloudpki::crypto::random_token();
        store::events::create_token(&db.pool, *sub, &cloudpki::crypto::token_digest(&token))
            .await?;
        tokens.push(token);
    }
    let addr = free_port()?;
    let server = Proc::spawn(
        &db,
        ctx.out_dir,
        "serve-ingest",
        &["serve", "--no-worker"],
        Some(addr),
    )?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    wait_healthy(&client, &base).await?;
    let secs = ctx.sizes.load_secs;
    // (clients, subscriptions, batch, target ratio)
    let shapes: [(usize, usize, usize, f64); 5] = [
        (8, 8, 1, 0.5),
        (8, 1, 1, 0.4),
        (1, 1, 1, 0.0),
        (8, 8, 100, 0.0),
        (8, 1, 500, 0.8),
    ];
    for (clients, nsubs, batch, target) in shapes {
        db.clear().await?;
        let body = ingest_body(batch);
        let next = Arc::new(AtomicUsize::new(0));
        let (client2, url, tokens2) = (
            client.clone(),
            format!("{base}/api/v1/events"),
            Arc::new(tokens[..nsubs].to_vec()),
        );
        let (events, took, lat) = closed_loop(clients, secs, move || {
            let k = next.fetch_add(1, Ordering::Relaxed) % tokens2.len();
            let (client, url, token, body) = (
                client2.clone(),
                url.clone(),
                tokens2[k].clone(),
                body.clone(),
            );
            async move {
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                if r.status() != StatusCode::ACCEPTED {
                    bail!("ingest answered {}", r.status());
                }
                r.bytes().await?;
                Ok(batch as u64)
            }
        })
        .await?;
        let api = events as f64 / took;
        let lag = wait_sequenced(&db.pool).await?;
        db.clear().await?;
        let pool = db.pool.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let subs2 = Arc::new(subs[..nsubs].to_vec());
        let (direct_events, direct_took, _) = closed_loop(clients, secs, move || {
            let pool = pool.clone();
            let sub = subs2[next.fetch_add(1, Ordering::Relaxed) % subs2.len()];
            async move { insert_direct(&pool, sub, batch).await }
        })
        .await?;
        let direct = direct_events as f64 / direct_took;
        let row = Row::new(
            &format!(
                "ingest durable, {clients} clients × {nsubs} subscriptions, batches of {batch}"
            ),
            format!(
                "{} (p50 {} per request; inbox empty {} after the load)",
                per_sec(api),
                ms(percentile(&lat, 50.0)),
                ms(lag)
            ),
            Some(api),
        )
        .baseline(format!("direct insert {}", per_sec(direct)), direct);
        report.push(if target > 0.0 {
            row.target(&format!("≥ {target} × direct"), api >= target * direct)
        } else {
            row
        });
    }
    if let Some(kb) = server.peak_rss_kb() {
        report.server_peak_kb.push(("ingest".into(), kb));
    }
    drop(server);

    // The sequencer alone: a full inbox of one subscription, sequenced in-process.
    db.clear().await?;
    let n = ctx.sizes.sequencer_events;
    let sub = subs[0];
    for _ in 0..n / 1000 {
        store::events::record_in_inbox(&db.pool, sub, &new_events(1000))
            .await
            .map_err(|e| anyhow::anyhow!("record: {e}"))?;
    }
    let t = Instant::now();
    let sequenced = store::events::sequence_all(&db.pool, sub)
        .await
        .map_err(|e| anyhow::anyhow!("sequence: {e}"))?;
    let rate = sequenced as f64 / t.elapsed().as_secs_f64();
    db.clear().await?;
    let batch = store::events::SEQUENCER_BATCH as usize;
    let t = Instant::now();
    let mut direct_events = 0;
    while direct_events < n {
        direct_events += insert_direct(&db.pool, sub, batch).await? as usize;
    }
    let direct = direct_events as f64 / t.elapsed().as_secs_f64();
    report.push(
        Row::new(
            &format!("sequencer alone, {n} waiting events, durable"),
            per_sec(rate),
            Some(rate),
        )
        .baseline(
            format!("direct insert of {batch} a statement {}", per_sec(direct)),
            direct,
        )
        .target("≥ 100,000/s", rate >= 100_000.0),
    );
    report.note(format!(
        "ingest: durable; API through one `cloudpki serve --no-worker` (uncontended requests number their events themselves, the rest go through the inbox and its sequencer, on the same 2 cores), {secs} s per shape; baseline a plain insert of the same rows into audit_events with the same clients over the same subscriptions (numbers from a sequence, no counter, no duplicate check). Sequencer alone: record_in_inbox() fills the inbox, then sequence_all() moves it into the log in batches of {batch}."
    ));
    ctx.pg.drop_db(db).await;
    Ok(())
}

/// Signs in through the login form; returns the `cloudpki_session` cookie pair.
async fn sign_in(base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client.get(format!("{base}/login")).send().await?;
    let csrf_cookie = set_cookie(page.headers(), "cloudpki_csrf").context("csrf cookie")?;
    let html = page.text().await?;
    let at = html
        .find(r#"name="csrf_token""#)
        .context("csrf_token field")?;
    let rest = &html[at..];
    let start = rest.find(r#"value=""#).context("csrf value")? + 7;
    let csrf = &rest[start..start + rest[start..].find('"').context("csrf end")?];
    let answer = client
        .post(format!("{base}/login"))
        .header("cookie", &csrf_cookie)
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", csrf),
        ])
        .send()
        .await?;
    set_cookie(answer.headers(), "cloudpki_session")
        .with_context(|| format!("sign-in answered {} without a session", answer.status()))
}

fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

async fn wait_healthy(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("cloudpki serve did not answer /healthz within {PROCESS_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn page(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    let db = ctx.pg.fresh("web").await?;
    let subs = db.subscriptions(1, &ctx.intake.base_url()).await?;
    let sub = subs[0];
    let addr = free_port()?;
    let server = Proc::spawn(
        &db,
        ctx.out_dir,
        "serve",
        &["serve", "--no-worker"],
        Some(addr),
    )?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(PAGE_CONNECTIONS)
        .build()?;
    wait_healthy(&client, &base).await?;
    let secs = ctx.sizes.load_secs;

    {
        let email = "bench-admin@example.com";
        let password = "correct horse battery staple";
        let user = Uuid::new_v4();
        sqlx::query("insert into users (id, email, password_hash) values ($1, $2, $3)")
            .bind(user)
            .bind(email)
            .bind(cloudpki::crypto::hash_password(password))
            .execute(&db.pool)
            .await?;
        sqlx::query(
            "insert into memberships (user_id, subscription_id, role) values ($1, $2, 'admin')",
        )
        .bind(user)
        .bind(sub)
        .execute(&db.pool)
        .await?;
        let session = sign_in(&base, email, password).await?;
        let get = |path: String, cookie: Option<String>| {
            let client = client.clone();
            move || {
                let (client, path, cookie) = (client.clone(), path.clone(), cookie.clone());
                async move {
                    let mut req = client.get(&path);
                    if let Some(c) = cookie {
                        req = req.header("cookie", c);
                    }
                    let r = req.send().await?;
                    if r.status() != StatusCode::OK {
                        bail!("GET {path} answered {}", r.status());
                    }
                    r.bytes().await?;
                    Ok(1)
                }
            }
        };
        // The target is for a subscription whose export keeps up (nothing owed); ingest left a
        // backlog behind (no worker runs).
        db.clear().await?;
        // Warm both paths (connections, prepared statements).
        closed_loop(PAGE_CONNECTIONS, 1, get(format!("{base}/healthz"), None)).await?;
        let settings = format!("{base}/subscriptions/{sub}/settings");
        closed_loop(
            PAGE_CONNECTIONS,
            1,
            get(settings.clone(), Some(session.clone())),
        )
        .await?;
        let (hn, hs, hl) =
            closed_loop(PAGE_CONNECTIONS, secs, get(format!("{base}/healthz"), None)).await?;
        let (pn, ps, pl) = closed_loop(
            PAGE_CONNECTIONS,
            secs,
            get(settings.clone(), Some(session.clone())),
        )
        .await?;
        let (health, page) = (hn as f64 / hs, pn as f64 / ps);
        report.push(
            Row::new(
                "page: settings, 32 connections",
                format!(
                    "{} req (p50 {} · p99 {})",
                    per_sec(page),
                    ms(percentile(&pl, 50.0)),
                    ms(percentile(&pl, 99.0))
                ),
                Some(page),
            )
            .baseline(
                format!(
                    "/healthz {} req (p50 {} · p99 {})",
                    per_sec(health),
                    ms(percentile(&hl, 50.0)),
                    ms(percentile(&hl, 99.0))
                ),
                health,
            )
            .target("≥ 5,000 req/s", page >= 5_000.0),
        );
        // The same page while the subscription has a backlog (the delivery health panel
        // counts it).
        let backlog = ctx.sizes.page_backlog;
        db.prefill(&[sub], backlog).await?;
        let (bn, bs, bl) = closed_loop(
            PAGE_CONNECTIONS,
            secs,
            get(settings.clone(), Some(session.clone())),
        )
        .await?;
        let with_backlog = bn as f64 / bs;
        report.push(
            Row::new(
                &format!("page: settings, {backlog} events owed"),
                format!(
                    "{} req (p50 {} · p99 {})",
                    per_sec(with_backlog),
                    ms(percentile(&bl, 50.0)),
                    ms(percentile(&bl, 99.0))
                ),
                Some(with_backlog),
            )
            .baseline(format!("nothing owed {} req", per_sec(page)), page)
            .target("≥ 0.8 × nothing owed", with_backlog >= 0.8 * page),
        );
        // What a view costs when the page cache cannot help (the first view after a change,
        // or CLOUDPKI_PAGE_CACHE=off): a second portal on the same database, same session.
        let uncached_addr = free_port()?;
        let uncached = Proc::spawn_with_env(
            &db,
            ctx.out_dir,
            "serve-page-cache-off",
            &["serve", "--no-worker"],
            Some(uncached_addr),
            &[("CLOUDPKI_PAGE_CACHE", "off")],
        )?;
        let uncached_base = format!("http://{uncached_addr}");
        wait_healthy(&client, &uncached_base).await?;
        let uncached_settings = format!("{uncached_base}/subscriptions/{sub}/settings");
        closed_loop(
            PAGE_CONNECTIONS,
            1,
            get(uncached_settings.clone(), Some(session.clone())),
        )
        .await?;
        let (un, us, ul) = closed_loop(
            PAGE_CONNECTIONS,
            secs,
            get(uncached_settings, Some(session)),
        )
        .await?;
        drop(uncached);
        let without_cache = un as f64 / us;
        report.push(
            Row::new(
                &format!("page: settings, {backlog} events owed, page cache off"),
                format!(
                    "{} req (p50 {} · p99 {})",
                    per_sec(without_cache),
                    ms(percentile(&ul, 50.0)),
                    ms(percentile(&ul, 99.0))
                ),
                Some(without_cache),
            )
            .baseline(
                format!("page cache on {} req", per_sec(with_backlog)),
                with_backlog,
            ),
        );
    }
    if let Some(kb) = server.peak_rss_kb() {
        report.server_peak_kb.push(("page".into(), kb));
    }
    drop(server);
    ctx.pg.drop_db(db).await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// scale

/// Claims the destination of `sub` and reads its backlog one range of [`BATCH_EVENTS`] per
/// claim, settling each range and finishing the claim without sending, `ranges` times (read
/// again from the start when caught up). Returns the time of each claim and of each
/// `read_range`, sorted. The cursor goes back to where it was, so the backlog is owed again
/// after.
async fn read_latencies(
    db: &Db,
    sub: Uuid,
    ranges: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let rewind = |to: i64| {
        sqlx::query(
            "update delivery_destinations set cursor = $2, inflight_to = $2
             where subscription_id = $1 and provider = $3",
        )
        .bind(sub)
        .bind(to)
        .bind(PROVIDER)
        .execute(&db.pool)
    };
    db.release().await?;
    let lease = chrono::Duration::seconds(60);
    let (mut claims, mut reads) = (Vec::with_capacity(ranges), Vec::with_capacity(ranges));
    let mut start = None;
    while reads.len() < ranges {
        let t = Instant::now();
        let claimed = store::delivery::claim_destination(&db.pool, Utc::now(), lease).await?;
        claims.push(t.elapsed());
        let claimed = match claimed {
            Some(c) if c.subscription_id == sub => c,
            Some(c) => bail!("read latencies: claimed {} instead", c.subscription_id),
            None => bail!("read latencies: nothing to claim"),
        };
        let from = *start.get_or_insert(claimed.cursor);
        let t = Instant::now();
        let range =
            store::delivery::read_range(&db.pool, &claimed, claimed.cursor, BATCH_EVENTS).await?;
        reads.push(t.elapsed());
        let Range::Events { events, .. } = range else {
            bail!("read latencies: the lease was lost");
        };
        let last = events
            .last()
            .map(|e| e.seq)
            .context("read latencies: an empty range")?;
        let settled = Settled {
            cursor_from: claimed.cursor,
            cursor_to: Some(last),
            delivered: events.len() as i64,
            ..Settled::default()
        };
        store::delivery::settle(&db.pool, &claimed, Utc::now(), &settled).await?;
        let finish = Finish {
            delivered: settled.delivered,
            ..Finish::default()
        };
        store::delivery::finish(&db.pool, &claimed, Utc::now(), &finish, last).await?;
        if last >= claimed.last_seq {
            rewind(from).await?;
        }
    }
    if let Some(from) = start {
        rewind(from).await?;
    }
    // `percentile` takes sorted samples.
    claims.sort();
    reads.sort();
    Ok((claims, reads))
}

/// Records one event for each of `subs` (one transaction each, as single API calls would) and
/// returns each one's commit-to-intake wait.
async fn one_each(
    db: &Db,
    sequencer: &Sequencer,
    intake: &Intake,
    subs: &[Uuid],
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut commits = Vec::with_capacity(subs.len());
    for sub in subs {
        let events = new_events(1);
        let recorded = store::events::record(&db.pool, *sub, &events)
            .await
            .map_err(|e| anyhow::anyhow!("record: {e}"))?;
        commits.push((events[0].id, Instant::now()));
        sequencer.recorded(&db.pool, *sub, &recorded);
    }
    let ids: Vec<Uuid> = commits.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !intake.arrived_all(&ids) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut missing = 0;
    let mut waits: Vec<Duration> = commits
        .iter()
        .filter_map(|(id, at)| match intake.arrival(id) {
            Some(a) => Some(a.saturating_duration_since(*at)),
            None => {
                missing += 1;
                None
            }
        })
        .collect();
    waits.sort();
    Ok((waits, missing))
}

async fn scale(ctx: &Ctx<'_>, report: &mut Report) -> anyhow::Result<()> {
    let (small, large) = (ctx.sizes.scale_small, ctx.sizes.scale_large);
    let db = ctx.pg.fresh("scale").await?;
    let n_subs = ctx.sizes.fair_subscriptions;
    let subs = db.subscriptions(n_subs, &ctx.intake.base_url()).await?;
    let one = &subs[..1];

    let mut rates = Vec::new();
    let mut reads = Vec::new();
    // As many ranges as the large backlog has, at each size.
    let ranges = usize::try_from(large / BATCH_EVENTS).unwrap_or(1).max(1);
    for n in [small, large] {
        db.clear().await?;
        let fill = db.prefill(one, n).await?;
        reads.push(read_latencies(&db, one[0], ranges).await?);
        let d = drain_with_workers(ctx, &db, 1, n as u64, report, &format!("scale-{n}")).await?;
        report.note(format!(
            "scale: prefill of {n} took {:.1} s; drained in {:.1} s{}",
            fill.as_secs_f64(),
            d.secs,
            if d.complete { "" } else { " (INCOMPLETE)" }
        ));
        rates.push(d.rate);
    }
    let ratio = rates[1] / rates[0];
    report.push(
        Row::new(
            &format!("scale: drain of {large} backlog"),
            per_sec(rates[1]),
            Some(rates[1]),
        )
        .baseline(format!("{small} backlog {}", per_sec(rates[0])), rates[0])
        .target("ratio ≥ 0.8", ratio >= 0.8),
    );
    let read_text = |(claims, reads): &(Vec<Duration>, Vec<Duration>)| {
        format!(
            "read p99 {} · p50 {} · claim p99 {} ({} reads of {BATCH_EVENTS})",
            ms(percentile(reads, 99.0)),
            ms(percentile(reads, 50.0)),
            ms(percentile(claims, 99.0)),
            reads.len()
        )
    };
    let read_p99 = |i: usize| percentile(&reads[i].1, 99.0).as_secs_f64() * 1000.0;
    report.push(
        Row::new(
            &format!("scale: claim/read p99 at {large} backlog"),
            read_text(&reads[1]),
            Some(read_p99(1)),
        )
        .baseline(
            format!("{small} backlog: {}", read_text(&reads[0])),
            read_p99(0),
        ),
    );

    // Fairness: one event for each other subscription, without and then with a large backlog.
    db.clear().await?;
    db.hold().await?;
    let since = db.now().await?;
    let worker = Proc::worker(&db, ctx.out_dir, "worker-fairness")?;
    db.wait_listeners(1, since).await?;
    let (sequencer, _stop_sequencer) = start_sequencer(&db.pool);
    db.release().await?;
    ctx.intake.reset(true);
    let (calm, calm_missing) = one_each(&db, &sequencer, ctx.intake, &subs[1..]).await?;
    db.clear().await?;
    db.hold().await?;
    let backlog = ctx.sizes.fair_backlog;
    db.prefill(one, backlog).await?;
    ctx.intake.reset(true);
    db.release().await?;
    // Let the worker get busy with the large backlog first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (busy, busy_missing) = one_each(&db, &sequencer, ctx.intake, &subs[1..]).await?;
    let still_queued = db.queued().await?;
    if let Some(kb) = worker.peak_rss_kb() {
        report.worker_peak_kb.push(("fairness".into(), kb));
    }
    drop(worker);
    ctx.intake.reset(false);
    let worst = busy.last().copied().unwrap_or_default();
    let calm_worst = calm.last().copied().unwrap_or_default();
    report.push(
        Row::new(
            &format!(
                "scale: worst wait of {} subscriptions, one with {backlog} backlog",
                n_subs - 1
            ),
            format!(
                "max {} · p50 {}{}",
                ms(worst),
                ms(percentile(&busy, 50.0)),
                if busy_missing > 0 {
                    format!(", {busy_missing} NOT DELIVERED")
                } else {
                    String::new()
                }
            ),
            Some(worst.as_secs_f64() * 1000.0),
        )
        .baseline(
            format!(
                "no backlog: max {} · p50 {}{}",
                ms(calm_worst),
                ms(percentile(&calm, 50.0)),
                if calm_missing > 0 {
                    format!(", {calm_missing} NOT DELIVERED")
                } else {
                    String::new()
                }
            ),
            calm_worst.as_secs_f64() * 1000.0,
        ),
    );
    report.note(format!(
        "scale fairness: {} events of the large backlog were still owed when the last small subscription's event had arrived",
        still_queued
    ));
    ctx.pg.drop_db(db).await;
    Ok(())
}
