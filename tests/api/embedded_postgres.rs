use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudpki::db::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, Pid, User};
use sqlx::{Connection, PgConnection};

const CHILD_ENV: &str = "CLOUDPKI_TEST_PDEATHSIG_DIR";

/// A temp dir the `postgres` user can traverse (tempfile may make 0700 dirs), and a data dir in it.
fn traversable_tempdir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    (tmp, data)
}

fn opts(data_dir: &Path) -> EmbeddedOptions {
    EmbeddedOptions {
        data_dir: data_dir.to_path_buf(),
        durable: false,
    }
}

/// Alive and not a zombie (a reaped-late zombie no longer serves anything).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_a_fresh_cluster_connects_and_stops() {
    let (_tmp, data) = traversable_tempdir();
    let started = Instant::now();
    let d = data.clone();
    let mut pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(opts(&d)))
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "fresh start (initdb + start + create db) took {:?}",
        started.elapsed()
    );

    let mut conn = PgConnection::connect_with(&pg.connect_options("cloudpki"))
        .await
        .unwrap();
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let user: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user, "postgres");
    conn.close().await.unwrap();

    let cluster = data.join("postgres");
    let meta = std::fs::metadata(&cluster).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    if geteuid().is_root() {
        let postgres = User::from_name("postgres").unwrap().unwrap();
        assert_eq!(meta.uid(), postgres.uid.as_raw());
    }

    let pid = pg.postmaster_pid().unwrap();
    assert!(process_alive(pid));
    tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg.stop().unwrap(); // idempotent
    })
    .await
    .unwrap();
    assert!(
        !process_alive(pid),
        "postmaster {pid} still running after stop"
    );
    assert!(
        !cluster.join(".s.PGSQL.5432").exists(),
        "socket file left behind"
    );
}

#[test]
fn reuses_an_existing_cluster_on_second_start() {
    let (_tmp, data) = traversable_tempdir();
    let pg = EmbeddedPostgres::start(opts(&data)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = PgConnection::connect_with(&pg.connect_options("cloudpki"))
            .await
            .unwrap();
        sqlx::raw_sql("create table survivor (x int); insert into survivor values (42)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
    drop(pg); // Drop stops the server and releases the lock

    let started = Instant::now();
    let pg = EmbeddedPostgres::start(opts(&data)).unwrap();
    eprintln!("second start (no initdb) took {:?}", started.elapsed());
    rt.block_on(async {
        let mut conn = PgConnection::connect_with(&pg.connect_options("cloudpki"))
            .await
            .unwrap();
        let x: i32 = sqlx::query_scalar("select x from survivor")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(x, 42);
        conn.close().await.unwrap();
    });
}

#[test]
fn second_start_on_same_data_dir_is_refused_as_already_in_use() {
    let (_tmp, data) = traversable_tempdir();
    let first = EmbeddedPostgres::start(opts(&data)).unwrap();
    let err = EmbeddedPostgres::start(opts(&data)).unwrap_err();
    assert!(matches!(err, EmbeddedError::AlreadyInUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("already in use by another cloudpki process"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("(pid {})", std::process::id())),
        "{msg}"
    );
    assert!(
        first.postmaster_pid().is_some_and(process_alive),
        "the first server must be untouched"
    );
}

/// Seen in CI: a process another thread was spawning held a copy of the lock's descriptor
/// between its fork and its exec, so the lock outlived the stop and the next start was refused.
#[test]
fn a_lock_copied_into_a_process_being_spawned_does_not_outlive_the_stop() {
    let (_tmp, data) = traversable_tempdir();
    let first = EmbeddedPostgres::start(opts(&data)).unwrap();
    let (mut forked, fork_writes) = std::io::pipe().unwrap();
    let (released, mut release) = std::io::pipe().unwrap();
    let fork_says = std::os::fd::AsRawFd::as_raw_fd(&fork_writes);
    let wait_for_release = std::os::fd::AsRawFd::as_raw_fd(&released);
    let mut spawning = Command::new("true");
    // SAFETY: write and read are async-signal-safe. The child says it exists, then waits before
    // its exec until this test releases it, holding a copy of every descriptor this process has
    // open (close-on-exec ones included) all the while.
    unsafe {
        spawning.pre_exec(move || {
            libc::write(fork_says, b"f".as_ptr().cast(), 1);
            libc::read(wait_for_release, [0u8; 1].as_mut_ptr().cast(), 1);
            Ok(())
        });
    }
    let spawner = std::thread::spawn(move || spawning.status());
    std::io::Read::read_exact(&mut forked, &mut [0u8; 1]).unwrap();
    drop(fork_writes);
    drop(first);
    let second = EmbeddedPostgres::start(opts(&data));
    std::io::Write::write_all(&mut release, b"r").unwrap();
    drop(released);
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(spawner.join().unwrap().unwrap().success());
}

#[test]
fn untraversable_parent_directory_gives_a_clear_error() {
    if !geteuid().is_root() {
        eprintln!("skipped: only meaningful as root (the server then runs as `postgres`)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Not every tempfile version makes 0700 directories; force the case under test.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = EmbeddedPostgres::start(opts(&tmp.path().join("data"))).unwrap_err();
    let msg = err.to_string();
    let dir = tmp.path().display().to_string();
    assert!(matches!(err, EmbeddedError::NotTraversable { .. }), "{msg}");
    assert!(
        msg.contains(&format!("which cannot enter {dir} (mode 0700)")),
        "{msg}"
    );
    assert!(msg.contains(&format!("`chmod o+x {dir}`")), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn server_that_exits_during_startup_is_reported_with_the_log_tail() {
    let (_tmp, data) = traversable_tempdir();
    drop(EmbeddedPostgres::start(opts(&data)).unwrap());
    let conf = data.join("postgres/postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nbogus_setting_for_test = 1\n");
    std::fs::write(&conf, text).unwrap();
    let err = EmbeddedPostgres::start(opts(&data)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EmbeddedError::StartFailed(..)), "{msg}");
    assert!(
        msg.contains("exited during startup") && msg.contains("bogus_setting_for_test"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    eprintln!("{msg}");
}

#[test]
fn socket_path_that_is_too_long_is_refused() {
    let (tmp, _) = traversable_tempdir();
    let data = tmp.path().join("d".repeat(90));
    let err = EmbeddedPostgres::start(opts(&data)).unwrap_err();
    assert!(
        matches!(err, EmbeddedError::SocketPathTooLong { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("shorter CLOUDPKI_DATA_DIR"));
}

#[test]
fn leftover_server_from_a_crashed_run_is_replaced() {
    let (_tmp, data) = traversable_tempdir();
    drop(EmbeddedPostgres::start(opts(&data)).unwrap());
    let cluster = data.join("postgres");

    // Start a postmaster behind the module's back, as a crashed run would leave it.
    let mut cmd = Command::new("/usr/lib/postgresql/15/bin/postgres");
    cmd.arg("-D")
        .arg(&cluster)
        .args(["-c", "listen_addresses="])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", cluster.display()));
    cmd.current_dir(&cluster)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if geteuid().is_root() {
        let u = User::from_name("postgres").unwrap().unwrap();
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    let mut leftover = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.join(".s.PGSQL.5432").exists() {
        assert!(
            Instant::now() < deadline,
            "manual postmaster did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let pg = EmbeddedPostgres::start(opts(&data)).unwrap();
    assert!(
        leftover.try_wait().unwrap().is_some() || !process_alive(leftover.id()),
        "leftover still running"
    );
    leftover.wait().unwrap();
    assert_ne!(pg.postmaster_pid(), Some(leftover.id()));
}

/// Runs only as the child of `server_dies_with_its_owner_process`.
#[test]
fn pdeathsig_child_helper() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let pg = EmbeddedPostgres::start(opts(Path::new(&dir))).unwrap();
    println!("POSTMASTER_PID={}", pg.postmaster_pid().unwrap());
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn server_dies_with_its_owner_process() {
    let (_tmp, data) = traversable_tempdir();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "embedded_postgres::pdeathsig_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        // libtest prints "test name ... " without a newline before the test's own output
        .find_map(|l| {
            l.split_once("POSTMASTER_PID=")
                .map(|(_, p)| p.trim().parse().unwrap())
        })
        .expect("child did not report a postmaster pid");
    assert!(process_alive(pid));

    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "postmaster {pid} survived its owner's SIGKILL"
    );

    // The lock died with the owner, so the data dir is usable again right away.
    let pg = EmbeddedPostgres::start(opts(&data)).unwrap();
    assert!(pg.postmaster_pid().is_some());
}
