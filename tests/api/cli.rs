//! The `cloudpki` binary itself: configuration errors, the embedded database path (first run,
//! setup link, sign-in, "already in use", clean stop on SIGTERM) and the admin commands.

use crate::support;
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_cloudpki");
const PASSWORD: &str = "correct horse battery staple";

fn cloudpki(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("DATABASE_URL")
        .env_remove("CLOUDPKI_MASTER_KEY")
        .env("CLOUDPKI_DATA_DIR", data_dir)
        .env("CLOUDPKI_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info");
    cmd
}

/// A scratch directory the `postgres` user can traverse, and the data dir inside it.
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    (dir, data)
}

/// A running `cloudpki serve` whose stderr lines arrive on a channel.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .arg("serve")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "cloudpki exited ({status}) before logging {needle:?}: {:?}",
                            self.seen
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no line with {needle:?} in {:?}", self.seen)
    }

    fn base_url(&mut self) -> String {
        let line = self.wait_for("portal listening");
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        format!("http://{addr}")
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!(
            "cloudpki did not stop within 30 s of SIGTERM: {:?}",
            self.seen
        );
    }
}

fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(data_dir.join("postgres/postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn configuration_errors_stop_start_up_with_one_line_naming_the_variable() {
    let (_dir, data) = scratch();
    let cases = [
        ("CLOUDPKI_LISTEN", "nonsense"),
        ("CLOUDPKI_MASTER_KEY", "dG9vIHNob3J0"),
        ("CLOUDPKI_RETENTION_DAYS", "-3"),
        ("CLOUDPKI_EGRESS_ALLOW", "10.0.0.0/99"),
        ("CLOUDPKI_PUBLIC_URL", "pki.example.com"),
        ("CLOUDPKI_METRICS_LISTEN", "everywhere"),
        ("CLOUDPKI_SHUTDOWN_GRACE_SECONDS", "9999"),
        ("CLOUDPKI_TRUSTED_PROXIES", "10.0.0.0/99"),
        ("CLOUDPKI_LOG_FORMAT", "yaml"),
    ];
    for (var, value) in cases {
        let out = cloudpki(&data)
            .env(var, value)
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: {stderr}");
        assert!(lines[0].contains(var), "{var}: {stderr}");
    }
    assert!(
        !data.exists(),
        "nothing is created when the configuration is wrong"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_default_runs_first_run_setup_sign_in_and_stops_cleanly() {
    let (_dir, data) = scratch();
    let mut served = Served::start(&mut cloudpki(&data));
    let link_line = served.wait_for("one-time setup link");
    let base = served.base_url();
    let link = link_line.split_whitespace().last().unwrap().to_owned();
    assert!(
        link.starts_with(&format!("{base}/setup/")),
        "{link} vs {base}"
    );

    // The cluster runs as the unprivileged `postgres` user when we are root.
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(data.join("postgres")).unwrap().uid();
        let postgres = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        assert_eq!(owner, postgres.uid.as_raw());
    }
    let master_key = std::fs::metadata(data.join("master.key")).unwrap();
    assert_eq!(master_key.permissions().mode() & 0o777, 0o600);

    // A second serve on the same data dir is refused, and the first keeps working.
    let second = cloudpki(&data).arg("serve").output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");

    // The setup link creates the admin, who can sign in and reach the settings.
    let client = support::new_client();
    let page = client
        .get(&link)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = support::csrf_token(&page);
    let r = client
        .post(&link)
        .form(&[
            ("email", "first@example.com"),
            ("password", PASSWORD),
            ("password_confirm", PASSWORD),
            ("subscription_name", "Contoso"),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let fresh = support::new_client();
    let r = support::login_with(&fresh, &base, "first@example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let list = fresh
        .get(format!("{base}/subscriptions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("Contoso"));
    assert_eq!(client.get(&link).send().await.unwrap().status(), 404);

    let pid = postmaster_pid(&data).expect("the cluster is running");
    let status = served.terminate();
    assert!(status.success(), "{status}");
    assert!(
        !alive(pid),
        "the embedded PostgreSQL stopped with the portal"
    );

    // The next start reuses the cluster: no setup link, the admin still signs in.
    let mut again = Served::start(&mut cloudpki(&data));
    let base = again.base_url();
    assert!(!again.seen.iter().any(|l| l.contains("setup link")));
    let r = support::login_with(&support::new_client(), &base, "first@example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert!(again.terminate().success());
}

#[test]
fn admin_commands_create_a_subscription_and_a_user_on_the_embedded_database() {
    let (_dir, data) = scratch();
    let out = cloudpki(&data)
        .args(["admin", "create-subscription", "--name", "Fabrikam"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    uuid::Uuid::parse_str(&sub).expect("prints the subscription id");

    let mut child = cloudpki(&data)
        .args([
            "admin",
            "create-user",
            "--email",
            "ops@example.com",
            "--subscription",
            &sub,
            "--role",
            "reader",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = cloudpki(&data)
        .args([
            "admin",
            "create-user",
            "--email",
            "x@example.com",
            "--subscription",
            "nope",
            "--role",
            "admin",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--subscription"));

    let weak = cloudpki(&data)
        .args([
            "admin",
            "create-user",
            "--email",
            "weak@example.com",
            "--subscription",
            &sub,
            "--role",
            "admin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            writeln!(c.stdin.take().unwrap(), "short")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12"));

    // Ingestion tokens and events from the command line.
    let out = cloudpki(&data)
        .args(["admin", "create-token", "--subscription", &sub])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.len() >= 40, "{token}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let token_id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("token id "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token id in {stderr}"))
        .to_owned();
    let out = cloudpki(&data)
        .args([
            "events",
            "emit",
            "--subscription",
            &sub,
            "--event-id",
            "4888",
            "--actor",
            "alice@example.com",
            "--details",
            r#"{"template":"WebServer"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    uuid::Uuid::parse_str(String::from_utf8_lossy(&out.stdout).trim())
        .expect("prints the event's id");
    let bad = cloudpki(&data)
        .args([
            "events",
            "emit",
            "--subscription",
            &sub,
            "--event-id",
            "9999",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--event-id"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = cloudpki(&data)
        .args([
            "events",
            "emit",
            "--subscription",
            &sub,
            "--event-id",
            "12",
            "--details",
            "[1]",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let out = cloudpki(&data)
        .args(["admin", "revoke-token", "--id", &token_id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = cloudpki(&data)
        .args(["admin", "revoke-token", "--id", &token_id])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_data_dir_the_postgres_user_cannot_reach_gives_a_clear_error() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root hands the cluster to the postgres user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = dir.path().join("data");
    let out = cloudpki(&data).arg("migrate").output().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("postgres") && stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("chmod") || stderr.contains("CLOUDPKI_DATA_DIR"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_work_beside_a_running_embedded_portal() {
    let (_dir, data) = scratch();
    let mut served = Served::start(&mut cloudpki(&data));
    let base = served.base_url();

    let out = cloudpki(&data)
        .args(["admin", "create-subscription", "--name", "Beside"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut child = cloudpki(&data)
        .args([
            "admin",
            "create-user",
            "--email",
            "colleague@example.com",
            "--subscription",
            &sub,
            "--role",
            "admin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cloudpki(&data)
        .args([
            "events",
            "emit",
            "--subscription",
            &sub,
            "--event-id",
            "4888",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The running portal sees what the commands did: the colleague signs in.
    let client = support::new_client();
    let r = support::login_with(&client, &base, "colleague@example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let page = client
        .get(format!("{base}/subscriptions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Beside"));
    assert!(served.terminate().success());
}
