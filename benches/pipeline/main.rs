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

mod drain;
mod ingest;
mod latency;
mod page;
mod scale;

use drain::*;
use ingest::*;
use latency::*;
use page::*;
use scale::*;

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
