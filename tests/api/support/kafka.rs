//! A real Kafka-compatible broker on loopback for tests: tansu (`bash .ci/setup --test` builds
//! it once into a cache folder), one process per test on a free port, its topics and SCRAM users
//! in a SQLite file of the test's own temp dir. A consumer reads the records back.
//!
//! tansu 0.6 signs in with SCRAM-SHA-256 and SCRAM-SHA-512 (not PLAIN), and its tools cannot
//! talk to a broker that requires authentication: users and topics are created before the
//! broker is restarted with `--authentication`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// The tansu binary: `CLOUDPKI_TANSU`, or where `.ci/setup --test` installs it.
pub fn tansu() -> PathBuf {
    if let Ok(path) = std::env::var("CLOUDPKI_TANSU") {
        return PathBuf::from(path);
    }
    let mut roots = Vec::new();
    if let Ok(dir) = std::env::var("CLOUDPKI_TOOLS_DIR") {
        roots.push(PathBuf::from(dir));
    }
    roots.push(PathBuf::from("/var/cache/cloudpki-tools"));
    if let Ok(home) = std::env::var("HOME") {
        roots.push(PathBuf::from(home).join(".cache/cloudpki-tools"));
    }
    roots
        .into_iter()
        .map(|root| root.join("tansu-sql/bin/tansu"))
        .find(|path| path.exists())
        .expect("the tansu broker is installed (bash .ci/setup --test builds it)")
}

/// One SCRAM user: name, password, `scram256` or `scram512`.
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
    pub mechanism: &'static str,
}

/// A running broker.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    authentication: bool,
    /// The host the broker advertises in its metadata (default `127.0.0.1`).
    advertised: String,
}

impl Broker {
    /// A broker without authentication, with these topics (one partition each).
    pub async fn start(topics: &[&str]) -> Broker {
        Broker::start_with_users(topics, &[]).await
    }

    /// A broker with these topics; with users, it then requires SASL/SCRAM.
    pub async fn start_with_users(topics: &[&str], users: &[User]) -> Broker {
        Broker::start_as(topics, users, "127.0.0.1").await
    }

    /// A broker listening on 127.0.0.1 that advertises itself as `host` (on the same port).
    pub async fn start_advertising(topics: &[&str], host: &str) -> Broker {
        Broker::start_as(topics, &[], host).await
    }

    async fn start_as(topics: &[&str], users: &[User], advertised: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Broker {
            child: None,
            port: super::ports::outside_the_ephemeral_range(),
            dir,
            authentication: false,
            advertised: advertised.to_owned(),
        };
        broker.run();
        for topic in topics {
            broker.tool(&["topic", "create", "--partitions", "1", topic]);
        }
        for user in users {
            broker.tool(&[
                "user",
                "create",
                "--mechanism",
                user.mechanism,
                user.name,
                user.password,
            ]);
        }
        if !users.is_empty() {
            broker.stop();
            broker.authentication = true;
            broker.run();
        }
        broker
    }

    /// `127.0.0.1:port`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        // `CLOUDPKI_TANSU_STORAGE=memory` runs a build without SQLite (no users, no restarts).
        let storage = match std::env::var("CLOUDPKI_TANSU_STORAGE").as_deref() {
            Ok("memory") => "memory://tansu/".to_owned(),
            // tansu reads the path as relative to its working directory.
            _ => "sqlite://tansu.db".to_owned(),
        };
        let mut cmd = Command::new(tansu());
        cmd.current_dir(self.dir.path());
        cmd.args([
            "broker",
            "--storage-engine",
            &storage,
            "--listener-url",
            &self.url(),
            "--advertised-listener-url",
            &format!("tcp://{}:{}", self.advertised, self.port),
        ]);
        if self.authentication {
            cmd.arg("--authentication");
        }
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(exited.is_none(), "tansu exited: {}", self.log());
            assert!(
                Instant::now() < deadline,
                "tansu did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tool(&self, args: &[&str]) {
        let out = Command::new(tansu())
            .args(args)
            .args(["--broker", &self.url()])
            .output()
            .expect("run tansu");
        assert!(
            out.status.success(),
            "tansu {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the broker (SIGKILL); its topics stay in the SQLite file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Every record of `topic`, waiting up to 20 s for at least `expected` of them.
    pub fn records(&self, topic: &str, expected: usize) -> Vec<Record> {
        self.records_as(topic, expected, None)
    }

    /// [`Broker::records`], signed in as `user` when the broker requires it.
    pub fn records_as(&self, topic: &str, expected: usize, user: Option<&User>) -> Vec<Record> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "cloudpki-tests")
            .set("enable.auto.commit", "false");
        if let Some(user) = user {
            let mechanism = if user.mechanism == "scram512" {
                "SCRAM-SHA-512"
            } else {
                "SCRAM-SHA-256"
            };
            config
                .set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", user.name)
                .set("sasl.password", user.password);
        }
        let consumer: BaseConsumer = config.create().expect("consumer");
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&partitions).expect("assign");
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    quiet_since = Instant::now();
                    let headers = message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|header| {
                                    (
                                        header.key.to_owned(),
                                        String::from_utf8_lossy(header.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    records.push(Record {
                        key: String::from_utf8_lossy(message.key().unwrap_or_default())
                            .into_owned(),
                        value: serde_json::from_slice(message.payload().unwrap_or_default())
                            .unwrap_or(Value::Null),
                        headers,
                    });
                }
                Some(Err(_)) | None => {
                    if records.len() >= expected
                        && quiet_since.elapsed() > Duration::from_millis(500)
                    {
                        break;
                    }
                }
            }
        }
        records
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One record as a consumer reads it.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: Value,
    pub headers: BTreeMap<String, String>,
}
