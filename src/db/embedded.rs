//! Embedded PostgreSQL: a private cluster that cloudpki creates, starts and stops itself.
//!
//! What this module owns, all under `data_dir` (`$CLOUDPKI_DATA_DIR`):
//! - `cloudpki.lock`: an exclusive advisory lock held for the whole life of an
//!   [`EmbeddedPostgres`]; it holds the owner's pid. One cloudpki process per data dir.
//! - `postgres/`: the cluster (created by `initdb` on first run, reused afterwards).
//! - `postgres.log`: the server's stdout and stderr, appended across runs.
//!
//! Invariants:
//! - At most one postmaster runs on the cluster; one left over by a crashed run is stopped first.
//! - The server listens only on a Unix socket inside the cluster dir (`listen_addresses=''`).
//! - The postmaster is a direct child of a dedicated thread that lives as long as the
//!   [`EmbeddedPostgres`]; `PR_SET_PDEATHSIG` makes it shut down if this process dies.
//! - When running as root, `initdb` and `postgres` run as the system user `postgres`.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, getegid, geteuid, getgroups, Gid, Pid, Uid, User};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::Connection;

const PORT: u16 = 5432;
const SOCKET_PATH_MAX: usize = 100;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(10);
const APP_DATABASE: &str = "cloudpki";
const SUPERUSER: &str = "postgres";

/// How to run the embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// cloudpki's data directory (`$CLOUDPKI_DATA_DIR`); the cluster lives in `data_dir/postgres`.
    pub data_dir: PathBuf,
    /// `false` trades crash safety for speed (tests): no fsync, no synchronous commit.
    pub durable: bool,
}

/// Why the embedded cluster could not be started or stopped. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// Neither PATH nor /usr/lib/postgresql/*/bin has `initdb` and `postgres`.
    #[error("PostgreSQL server binaries not found (looked in PATH and /usr/lib/postgresql/*/bin): install them with `apt-get install postgresql`")]
    BinariesNotFound,
    /// Running as root, but there is no `postgres` user to drop privileges to.
    #[error("running as root, but the system user `postgres` the PostgreSQL server must run as does not exist: install the `postgresql` package or create it with `adduser --system --group postgres`")]
    NoPostgresUser,
    /// A directory on the way to the cluster cannot be entered by the server's user.
    #[error("the PostgreSQL server runs as user `{user}`, which cannot enter {} (mode {mode:04o}): choose a CLOUDPKI_DATA_DIR outside it, or run `chmod {class}+x {}`", dir.display(), dir.display())]
    NotTraversable {
        user: String,
        dir: PathBuf,
        mode: u32,
        class: char,
    },
    /// The Unix socket path would exceed the kernel's limit.
    #[error("the PostgreSQL socket path {} is {len} bytes, over the limit of {SOCKET_PATH_MAX}: choose a shorter CLOUDPKI_DATA_DIR", path.display())]
    SocketPathTooLong { path: PathBuf, len: usize },
    /// Another process holds `cloudpki.lock`.
    #[error("the data directory {} is already in use by another cloudpki process (pid {pid}): stop that process or choose another CLOUDPKI_DATA_DIR", path.display())]
    AlreadyInUse { path: PathBuf, pid: String },
    /// A server left over by a crashed run would not stop.
    #[error("a PostgreSQL server left over from a previous run (pid {pid}) still runs on {} and did not stop on SIGINT: stop it with `kill -QUIT {pid}` and retry", dir.display())]
    LeftoverServer { pid: i32, dir: PathBuf },
    /// `initdb` failed; its stderr is included and the half-made cluster removed.
    /// `initdb` failed: (cluster dir, exit status, its stderr); the half-made cluster is removed.
    #[error("initdb failed to create the cluster in {dir} ({1}): {2} -- fix the cause and retry; the partial cluster was removed", dir = .0.display())]
    InitdbFailed(PathBuf, ExitStatus, String),
    /// The server exited or did not accept connections in time: (what, log path, log tail).
    #[error("the PostgreSQL server {0}; see {log} -- last lines: {2}", log = .1.display())]
    StartFailed(&'static str, PathBuf, String),
    /// A filesystem or process operation failed: (what we tried, on which path, why).
    #[error("could not {0} {path}: {2} -- check that the path exists and cloudpki may write to it", path = .1.display())]
    Io(&'static str, PathBuf, #[source] io::Error),
    /// An SQL statement against the fresh server failed: (what we tried, why).
    #[error("PostgreSQL refused to {0}: {1} -- see postgres.log in the data directory")]
    Sql(&'static str, #[source] sqlx::Error),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |e| EmbeddedError::Io(action, path, e)
}

fn sql_err(action: &'static str) -> impl FnOnce(sqlx::Error) -> EmbeddedError {
    move |e| EmbeddedError::Sql(action, e)
}

/// Creates `dir` (and, if `parents`, its parents) with exactly `mode`, whatever the umask.
fn make_dir(dir: &Path, mode: u32, parents: bool) -> Result<(), EmbeddedError> {
    DirBuilder::new()
        .recursive(parents)
        .mode(mode)
        .create(dir)
        .map_err(io_err("create", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", dir))
}

/// A running embedded PostgreSQL cluster; stopped on [`EmbeddedPostgres::stop`] or drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    server: Option<Server>,
    // Held, never read: dropping it (after the server stopped) releases the single-owner lock.
    _lock: OwnerLock,
}

#[derive(Debug)]
struct Server {
    /// The current postmaster (it changes when a dead one is restarted).
    pid: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Set once the server accepted connections: from then on a dead one is restarted (a
    /// server that dies during startup is a startup error).
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop_tx: mpsc::Sender<()>,
    thread: JoinHandle<io::Result<ExitStatus>>,
}

/// The OS user that runs `initdb`/`postgres`, and whether we must switch to it.
#[derive(Clone)]
struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    home: PathBuf,
    switch: bool,
}

impl EmbeddedPostgres {
    /// Blocking; call it from `spawn_blocking`. Creates (first run: initdb) or reuses the
    /// cluster in `data_dir/postgres`, starts it, waits until it accepts connections and
    /// creates the database `cloudpki` if missing.
    pub fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin_dir =
            find_bin_dir(&["initdb", "postgres"]).ok_or(EmbeddedError::BinariesNotFound)?;
        let run_as = run_as()?;
        if !opts.data_dir.exists() {
            // Traversable by the server's user, but not listable: it also holds root-only keys.
            make_dir(&opts.data_dir, 0o711, true)?;
        }
        let data_dir =
            fs::canonicalize(&opts.data_dir).map_err(io_err("resolve", &opts.data_dir))?;
        let lock = take_lock(&data_dir)?;
        let cluster_dir = data_dir.join("postgres");
        let socket = cluster_dir.join(format!(".s.PGSQL.{PORT}"));
        let len = socket.as_os_str().len();
        if len >= SOCKET_PATH_MAX {
            return Err(EmbeddedError::SocketPathTooLong { path: socket, len });
        }
        check_traversable(&data_dir, &run_as)?;
        stop_leftover(&cluster_dir)?;
        if !cluster_dir.join("PG_VERSION").exists() {
            init_cluster(&bin_dir, &cluster_dir, &run_as, opts.durable)?;
        }

        let log_path = data_dir.join("postgres.log");
        // Startup errors quote only this run's lines; the log accumulates across runs.
        let log_start = fs::metadata(&log_path).map_or(0, |m| m.len());
        let make = {
            let (bin_dir, cluster_dir, log_path) =
                (bin_dir.clone(), cluster_dir.clone(), log_path.clone());
            let durable = opts.durable;
            move || server_command(&bin_dir, &cluster_dir, &run_as, &log_path, durable)
        };
        let server =
            spawn_server(Box::new(make)).map_err(io_err("run", &bin_dir.join("postgres")))?;
        tracing::info!(pid = server.pid.load(std::sync::atomic::Ordering::Relaxed), dir = %cluster_dir.display(), "embedded PostgreSQL started");
        let pg = EmbeddedPostgres {
            cluster_dir,
            server: Some(server),
            _lock: lock,
        };
        // On error `pg` is dropped here, which stops the server.
        pg.wait_ready_and_create_db(&log_path, log_start)?;
        if let Some(server) = &pg.server {
            server
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(pg)
    }

    /// sqlx options to connect over the Unix socket as superuser `postgres` to `database`.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .socket(&self.cluster_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
            .application_name("cloudpki")
    }

    /// sqlx options that reach the cluster another cloudpki process runs in `data_dir` (its
    /// owner), over the Unix socket, as `connect_options` does.
    pub fn join_options(data_dir: &Path, database: &str) -> PgConnectOptions {
        let data_dir = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        PgConnectOptions::new_without_pgpass()
            .socket(data_dir.join("postgres"))
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
            .ssl_mode(PgSslMode::Disable)
            .application_name("cloudpki-admin")
    }

    /// Directory holding the cluster and its Unix socket (`data_dir/postgres`).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Pid of the running postmaster, `None` once stopped.
    pub fn postmaster_pid(&self) -> Option<u32> {
        self.server
            .as_ref()
            .map(|s| s.pid.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Fast shutdown (SIGINT to the postmaster), waits for it to exit. Idempotent.
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        // A send error means the thread already saw the server exit; joining is still right.
        let _ = server.stop_tx.send(());
        let status = (server.thread.join())
            .unwrap_or_else(|_| Err(io::Error::other("server thread panicked")))
            .map_err(io_err("stop the PostgreSQL server in", &self.cluster_dir))?;
        tracing::info!(%status, "embedded PostgreSQL stopped");
        Ok(())
    }

    fn wait_ready_and_create_db(
        &self,
        log_path: &Path,
        log_start: u64,
    ) -> Result<(), EmbeddedError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("create a runtime for", &self.cluster_dir))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut conn = loop {
            if self.server.as_ref().is_none_or(|s| s.thread.is_finished()) {
                return Err(start_failed("exited during startup", log_path, log_start));
            }
            let attempt = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    PgConnection::connect_with(&self.connect_options("postgres")),
                )
                .await
            });
            match attempt {
                Ok(Ok(conn)) => break conn,
                Ok(Err(e)) => tracing::debug!(error = %e, "embedded PostgreSQL not ready yet"),
                Err(_) => tracing::debug!("embedded PostgreSQL connection attempt timed out"),
            }
            if Instant::now() >= deadline {
                let reason = "did not accept connections within 30 s";
                return Err(start_failed(reason, log_path, log_start));
            }
            thread::sleep(Duration::from_millis(100));
        };
        rt.block_on(async {
            // Checked against the catalog, which every PostgreSQL database has.
            let exists: Option<i32> = sqlx::query_scalar!(
                r#"SELECT 1 AS "found!" FROM pg_database WHERE datname = $1"#,
                APP_DATABASE
            )
            .fetch_optional(&mut conn)
            .await
            .map_err(sql_err("list databases"))?;
            if exists.is_none() {
                // Dynamic: CREATE DATABASE takes no parameters and cannot be prepared.
                sqlx::raw_sql(&format!("CREATE DATABASE {APP_DATABASE}"))
                    .execute(&mut conn)
                    .await
                    .map_err(sql_err("create database cloudpki"))?;
            }
            // Closing politely only avoids a log line; a failure here changes nothing.
            let _ = conn.close().await;
            Ok(())
        })
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "embedded PostgreSQL did not stop cleanly");
        }
    }
}

fn setting(name: &str, path: &Path) -> OsString {
    let mut s = OsString::from(name);
    s.push(path);
    s
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// First directory on PATH holding all `names`, else the highest /usr/lib/postgresql/<major>/bin.
fn find_bin_dir(names: &[&str]) -> Option<PathBuf> {
    let has_all = |dir: &Path| names.iter().all(|n| is_executable(&dir.join(n)));
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.is_absolute() && has_all(d)));
    let found = on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let major = e.file_name().to_str()?.parse().ok()?;
                Some((major, e.path().join("bin")))
            })
            .filter(|(_, d)| has_all(d))
            .collect();
        versions.sort();
        versions.pop().map(|(_, d)| d)
    })?;
    // Resolve symlinks so initdb finds its sibling `postgres` in the real install directory.
    let first = fs::canonicalize(found.join(names[0])).ok()?;
    let real = first.parent()?.to_path_buf();
    Some(if has_all(&real) { real } else { found })
}

fn run_as() -> Result<RunAs, EmbeddedError> {
    let euid = geteuid();
    let switch = euid.is_root();
    let user = if switch {
        let user = User::from_name(SUPERUSER).ok().flatten();
        Some(user.ok_or(EmbeddedError::NoPostgresUser)?)
    } else {
        User::from_uid(euid).ok().flatten()
    };
    let (uid, gid) = match &user {
        Some(u) if switch => (u.uid, u.gid),
        _ => (euid, getegid()),
    };
    // Switching user drops supplementary groups, so then only the primary group counts.
    let mut groups = if switch {
        Vec::new()
    } else {
        getgroups().unwrap_or_default()
    };
    groups.push(gid);
    let name = user
        .as_ref()
        .map_or_else(|| uid.to_string(), |u| u.name.clone());
    let home = user.map_or_else(|| PathBuf::from("/"), |u| u.dir);
    Ok(RunAs {
        name,
        uid,
        gid,
        groups,
        home,
        switch,
    })
}

/// The lock on `cloudpki.lock` that makes one process the owner of a data directory.
#[derive(Debug)]
struct OwnerLock(File);

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Closing our descriptor is not enough: a process another thread is spawning holds a
        // copy of it until its exec, and the lock lives as long as any copy does. Unlocking
        // releases it for every copy; should that fail, the close still releases ours.
        let _ = self.0.unlock();
    }
}

fn take_lock(data_dir: &Path) -> Result<OwnerLock, EmbeddedError> {
    let path = data_dir.join("cloudpki.lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = Some(pid.trim())
                .filter(|p| !p.is_empty())
                .unwrap_or("unknown");
            let (path, pid) = (data_dir.to_path_buf(), pid.to_string());
            return Err(EmbeddedError::AlreadyInUse { path, pid });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    let mut lock = OwnerLock(file);
    lock.0
        .set_len(0)
        .and_then(|()| write!(lock.0, "{}", std::process::id()))
        .map_err(io_err("write", &path))?;
    Ok(lock)
}

fn check_traversable(data_dir: &Path, who: &RunAs) -> Result<(), EmbeddedError> {
    if who.uid.is_root() {
        return Ok(());
    }
    for dir in data_dir.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
        let (bit, class) = if meta.uid() == who.uid.as_raw() {
            (0o100, 'u')
        } else if who.groups.contains(&Gid::from_raw(meta.gid())) {
            (0o010, 'g')
        } else {
            (0o001, 'o')
        };
        if meta.mode() & bit == 0 {
            return Err(EmbeddedError::NotTraversable {
                user: who.name.clone(),
                dir: dir.to_path_buf(),
                mode: meta.mode() & 0o7777,
                class,
            });
        }
    }
    Ok(())
}

/// True if `pid` is a live process whose cwd is `cluster_dir`, as a postmaster's always is.
/// Checking the cwd guards against a recycled pid; zombies have no resolvable cwd.
fn is_postmaster_of(pid: i32, cluster_dir: &Path) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
        && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == cluster_dir)
}

/// Stops a server a crashed run of ours left behind (we hold the lock, so it is not live).
fn stop_leftover(cluster_dir: &Path) -> Result<(), EmbeddedError> {
    // The first line of postmaster.pid is the postmaster's pid.
    let contents = fs::read_to_string(cluster_dir.join("postmaster.pid")).unwrap_or_default();
    let pid = contents.lines().next().and_then(|l| l.trim().parse().ok());
    let Some(pid) = pid.filter(|&p| p > 0 && is_postmaster_of(p, cluster_dir)) else {
        return Ok(());
    };
    tracing::warn!(
        pid,
        "stopping a PostgreSQL server left over by a previous run"
    );
    let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
    let deadline = Instant::now() + LEFTOVER_TIMEOUT;
    while is_postmaster_of(pid, cluster_dir) {
        if Instant::now() >= deadline {
            let dir = cluster_dir.to_path_buf();
            return Err(EmbeddedError::LeftoverServer { pid, dir });
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn init_cluster(
    bin_dir: &Path,
    cluster_dir: &Path,
    who: &RunAs,
    durable: bool,
) -> Result<(), EmbeddedError> {
    if cluster_dir.exists() {
        // No PG_VERSION: an earlier initdb died half way; initdb needs an empty directory.
        fs::remove_dir_all(cluster_dir)
            .map_err(io_err("remove the incomplete cluster", cluster_dir))?;
    }
    make_dir(cluster_dir, 0o700, false)?;
    if who.switch {
        chown(cluster_dir, Some(who.uid), Some(who.gid))
            .map_err(|e| io_err("chown", cluster_dir)(e.into()))?;
    }
    let started = Instant::now();
    let mut cmd = child_command(&bin_dir.join("initdb"), cluster_dir, who, bin_dir);
    let args = ["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"];
    cmd.arg("-D").arg(cluster_dir).args(args);
    if !durable {
        cmd.arg("--no-sync");
    }
    let result = cmd.stdin(Stdio::null()).output();
    let failure = match result {
        Ok(out) if out.status.success() => {
            tracing::info!(elapsed = ?started.elapsed(), "initdb created the embedded cluster");
            return Ok(());
        }
        Ok(out) => {
            let stderr = one_line(&String::from_utf8_lossy(&out.stderr));
            EmbeddedError::InitdbFailed(cluster_dir.to_path_buf(), out.status, stderr)
        }
        Err(e) => io_err("run", &bin_dir.join("initdb"))(e),
    };
    // Remove the half-made cluster so the next start retries initdb from scratch.
    if let Err(e) = fs::remove_dir_all(cluster_dir) {
        tracing::warn!(error = %e, "could not remove the incomplete cluster");
    }
    Err(failure)
}

/// A command for `program` running as `who`, with a minimal environment and cwd `cwd`.
fn child_command(program: &Path, cwd: &Path, who: &RunAs, bin_dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    let mut path = OsString::from(bin_dir);
    path.push(":/usr/bin:/bin");
    // A clean environment keeps the caller's PG* variables and locale out of the server.
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", &who.home)
        .env("USER", &who.name)
        .env("LOGNAME", &who.name)
        .env("LC_ALL", "C")
        .current_dir(cwd);
    if who.switch {
        cmd.uid(who.uid.as_raw()).gid(who.gid.as_raw());
    }
    cmd
}

/// The postmaster's command line, its output appended to `log_path`.
fn server_command(
    bin_dir: &Path,
    cluster_dir: &Path,
    run_as: &RunAs,
    log_path: &Path,
    durable: bool,
) -> io::Result<Command> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path)?;
    let log_err = log.try_clone()?;
    let mut cmd = child_command(&bin_dir.join("postgres"), cluster_dir, run_as, bin_dir);
    cmd.arg("-D")
        .arg(cluster_dir)
        .args(["-c", "listen_addresses="])
        .arg("-c")
        .arg(setting("unix_socket_directories=", cluster_dir))
        .args(["-p", &PORT.to_string()]);
    if !durable {
        for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
            cmd.arg("-c").arg(format!("{setting}=off"));
        }
        // Keep the disk footprint small too: no WAL for replicas, and WAL recycled early
        // (checkpoints cost little without fsync).
        for setting in [
            "wal_level=minimal",
            "max_wal_senders=0",
            "max_wal_size=64MB",
            "min_wal_size=32MB",
        ] {
            cmd.arg("-c").arg(setting);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    // SAFETY: set_pdeathsig is one async-signal-safe prctl syscall. It runs after std has
    // switched uid/gid, which matters because a credential change clears PDEATHSIG.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(io::Error::from));
    }
    Ok(cmd)
}

/// Builds the postmaster's command, again for each restart.
type MakeCommand = Box<dyn Fn() -> io::Result<Command> + Send>;

/// Runs the postmaster from a dedicated thread: PDEATHSIG fires when the forking thread exits,
/// so restarts happen from this same thread.
fn spawn_server(make: MakeCommand) -> io::Result<Server> {
    let (started_tx, started_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let current = pid.clone();
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heal = ready.clone();
    let thread = thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match make().and_then(|mut cmd| cmd.spawn()) {
            Ok(child) => {
                current.store(child.id(), std::sync::atomic::Ordering::Relaxed);
                let _ = started_tx.send(Ok(()));
                supervise(child, &stop_rx, &make, &current, &heal)
            }
            Err(e) => {
                let _ = started_tx.send(Err(e));
                Err(io::Error::other("postgres did not start"))
            }
        })?;
    (started_rx.recv()).map_err(|_| io::Error::other("server thread died"))??;
    Ok(Server {
        pid,
        ready,
        stop_tx,
        thread,
    })
}

/// Restarts in a row (each within [`HEALTHY_AFTER`] of the last) before giving up.
pub const MAX_RESTARTS: u32 = 8;
/// A server that ran this long counts as recovered: the count starts again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Exit code when the embedded database cannot be kept running (EX_SOFTWARE).
pub const EXIT_DATABASE_LOST: i32 = 70;

/// When a dead postmaster is started again, and when to give up.
#[derive(Debug)]
pub struct RestartPolicy {
    failures: u32,
    last_start: Instant,
}

impl RestartPolicy {
    pub fn new(started: Instant) -> RestartPolicy {
        RestartPolicy {
            failures: 0,
            last_start: started,
        }
    }

    /// The server died at `now`: wait this long and start it again, or `None`: give up.
    pub fn on_death(&mut self, now: Instant) -> Option<Duration> {
        if now.saturating_duration_since(self.last_start) >= HEALTHY_AFTER {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures > MAX_RESTARTS {
            return None;
        }
        let backoff = Duration::from_millis(200) * 2u32.saturating_pow(self.failures - 1);
        Some(backoff.min(Duration::from_secs(5)))
    }

    /// A new server was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.last_start = now;
    }
}

/// Waits for a stop request, or the owner vanishing without one, then fast-shuts the server
/// down. A server that dies on its own is started again (PostgreSQL's crash recovery replays
/// the WAL); after [`MAX_RESTARTS`] failed restarts in a row the whole process exits with
/// [`EXIT_DATABASE_LOST`], so that its supervisor (systemd, the container runtime) restarts it.
fn supervise(
    mut child: Child,
    stop_rx: &mpsc::Receiver<()>,
    make: &MakeCommand,
    current: &std::sync::atomic::AtomicU32,
    heal: &std::sync::atomic::AtomicBool,
) -> io::Result<ExitStatus> {
    let tick = Duration::from_millis(100);
    let mut policy = RestartPolicy::new(Instant::now());
    // Until asked to stop, or the owner is gone.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(tick) {
        let Some(status) = child.try_wait()? else {
            continue;
        };
        if !heal.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(status);
        }
        tracing::error!(%status, "embedded PostgreSQL died; restarting it");
        loop {
            let Some(delay) = policy.on_death(Instant::now()) else {
                tracing::error!(
                    "embedded PostgreSQL could not be restarted {MAX_RESTARTS} times in a row; exiting so that the service supervisor restarts cloudpki"
                );
                std::process::exit(EXIT_DATABASE_LOST);
            };
            if !matches!(
                stop_rx.recv_timeout(delay),
                Err(mpsc::RecvTimeoutError::Timeout)
            ) {
                return Ok(status);
            }
            match make().and_then(|mut cmd| cmd.spawn()) {
                Ok(next) => {
                    policy.started(Instant::now());
                    current.store(next.id(), std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        pid = next.id(),
                        "embedded PostgreSQL restarted (crash recovery)"
                    );
                    child = next;
                    break;
                }
                Err(e) => tracing::error!(error = %e, "embedded PostgreSQL could not be started"),
            }
        }
    }
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(io::Error::other)?);
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!("embedded PostgreSQL ignored fast shutdown; sending SIGQUIT");
    let _ = kill(pid, Signal::SIGQUIT);
    child.wait()
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The error for a failed startup, quoting the last lines the server logged since `from`.
fn start_failed(reason: &'static str, log: &Path, from: u64) -> EmbeddedError {
    let mut bytes = Vec::new();
    // The log is only a diagnostic aid here; an unreadable log must not mask the real error.
    let _ = File::open(log).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_end(&mut bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let tail = one_line(&lines[lines.len().saturating_sub(10)..].join("\n"));
    EmbeddedError::StartFailed(reason, log.to_path_buf(), tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_server_is_restarted_with_backoff_until_it_gives_up() {
        let start = Instant::now();
        let mut policy = RestartPolicy::new(start);
        let mut delays = Vec::new();
        let mut now = start;
        while let Some(delay) = policy.on_death(now) {
            delays.push(delay);
            now += delay;
            policy.started(now);
        }
        assert_eq!(delays.len(), MAX_RESTARTS as usize);
        assert_eq!(delays[0], Duration::from_millis(200));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        // A server that then ran long enough starts the count again.
        let mut policy = RestartPolicy::new(start);
        for _ in 0..MAX_RESTARTS {
            policy.on_death(start);
        }
        policy.started(start);
        assert!(policy.on_death(start + HEALTHY_AFTER).is_some());
    }
}
