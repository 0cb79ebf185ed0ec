//! Kafka end to end against a real broker (tansu) on loopback: configured and tested on the
//! settings page, every catalog event produced once with its key and headers and read back, a
//! missing topic and refused credentials explained, SASL/SCRAM signed in, and a broker that
//! stops mid-stream and comes back losing nothing; every broker address librdkafka looks up
//! (bootstrap, rebinding, advertised later) judged by the egress policy, proven with a test
//! resolver and listeners on 127.0.0.2 (outside the allow-list) that must see no connection.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cloudpki::siem::egress::{BoxFuture, Lookup, StaticLookup};

use crate::support::{
    kafka::{Broker, User},
    portal::{portal, portal_with_lookup, status, Portal, CATALOG},
};
use serde_json::{json, Value};

const TOPIC: &str = "ezca-audit";

async fn forward(p: &Portal) -> cloudpki::forwarder::PassReport {
    p.app.state.forwarder().forward_once().await.unwrap()
}

async fn post(p: &Portal, events: Value) {
    assert_eq!(p.app.post_events(&p.token, &events).await.status(), 202);
}

fn fields<'a>(brokers: &'a str, topic: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("siem_enabled", "on"),
        ("provider", "kafka"),
        ("kafka_brokers", brokers),
        ("kafka_topic", topic),
        ("kafka_sasl_mechanism", "none"),
    ]
}

#[tokio::test]
async fn every_catalog_event_is_produced_once_with_its_key_and_headers() {
    let broker = Broker::start(&[TOPIC]).await;
    let p = portal().await;
    let brokers = broker.bootstrap();
    let form = fields(&brokers, TOPIC);

    let (code, page) = p.status_after("test", &form).await;
    assert_eq!(code, 200);
    assert!(
        status(&page).contains("Kafka acknowledged the test record"),
        "{}",
        status(&page)
    );
    assert_eq!(p.status_after("save", &form).await.0, 303);
    let body: Vec<Value> = CATALOG
        .iter()
        .map(|id| json!({"event_id": id, "actor": "alice@example.com", "details": {"ca": "Issuing CA"}}))
        .collect();
    post(&p, Value::Array(body)).await;
    let report = forward(&p).await;
    assert_eq!(report.delivered, 11, "{report:?}");
    assert_eq!(p.app.queued().await, 0);

    let records = broker.records(TOPIC, 12);
    assert_eq!(records.len(), 12, "the test record and each event once");
    let test = &records[0];
    assert_eq!(test.value["EventID"], 0);
    assert_eq!(test.headers["event_id"], "0");
    for (record, id) in records[1..].iter().zip(CATALOG) {
        assert_eq!(record.key, p.sub.to_string());
        assert_eq!(record.headers["event_id"], id.to_string());
        assert_eq!(
            record.headers["criticality"],
            record.value["Criticality"].as_str().unwrap()
        );
        assert_eq!(record.value["EventID"], id);
        assert_eq!(record.value["SubscriptionId"], p.sub.to_string());
        assert_eq!(record.value["Actor"], "alice@example.com");
        assert_eq!(record.value["details"], json!({"ca": "Issuing CA"}));
        assert!(record.value["Sequence"].as_i64().unwrap() >= 1);
        assert!(record.value["EventUuid"].as_str().is_some());
    }
}

#[tokio::test]
async fn a_missing_topic_is_explained_and_keeps_the_events() {
    let broker = Broker::start(&[TOPIC]).await;
    let p = portal().await;
    let brokers = broker.bootstrap();
    let (_, page) = p
        .status_after("test", &fields(&brokers, "no-such-topic"))
        .await;
    assert!(
        status(&page).contains("The topic no-such-topic does not exist"),
        "{}",
        status(&page)
    );
    // Saved anyway: the destination fails visibly and nothing is lost.
    assert_eq!(
        p.status_after("save", &fields(&brokers, "no-such-topic"))
            .await
            .0,
        303
    );
    post(&p, json!({"event_id": 4888})).await;
    let report = forward(&p).await;
    assert_eq!(report.delivered, 0);
    assert_eq!(p.app.queued().await, 1);
    let (state, error): (String, Option<String>) = sqlx::query_as(
        "select status, last_error from delivery_destinations where subscription_id = $1",
    )
    .bind(p.sub)
    .fetch_one(&p.app.pool)
    .await
    .unwrap();
    assert_eq!(state, "failing", "{error:?}");
}

#[tokio::test]
async fn an_unreachable_broker_and_a_private_address_are_explained() {
    let p = portal().await;
    // A loopback port nobody listens on (nor will: it is outside the ephemeral range).
    let closed = crate::support::ports::outside_the_ephemeral_range();
    let brokers = format!("127.0.0.1:{closed}");
    let (_, page) = p.status_after("test", &fields(&brokers, TOPIC)).await;
    assert!(
        status(&page).contains("No broker accepted the connection")
            || status(&page).contains("No broker answered"),
        "{}",
        status(&page)
    );
    // 127.0.0.2 is outside the allow-list: refused when the form is checked, before a packet.
    let (code, page) = p
        .status_after("test", &fields("127.0.0.2:9092", TOPIC))
        .await;
    assert_eq!(code, 422);
    assert!(page.contains("private, loopback or reserved"), "{page}");
    // Plaintext to a broker that is not allow-listed is refused too.
    let (code, page) = p
        .status_after("test", &fields("kafka.example.com:9092", TOPIC))
        .await;
    assert_eq!(code, 422);
    assert!(page.contains("tick Use TLS"), "{page}");
}

#[tokio::test]
async fn sasl_scram_signs_in_and_a_wrong_password_is_explained() {
    let alice = User {
        name: "alice",
        password: "alice-secret-256",
        mechanism: "scram256",
    };
    let bob = User {
        name: "bob",
        password: "bob-secret-512",
        mechanism: "scram512",
    };
    let broker = Broker::start_with_users(&[TOPIC], &[alice, bob]).await;
    let p = portal().await;
    let brokers = broker.bootstrap();
    let signed_in = |mechanism: &'static str, user: &'static str, password: &'static str| {
        let mut form = fields(&brokers, TOPIC);
        form.retain(|(name, _)| *name != "kafka_sasl_mechanism");
        form.push(("kafka_sasl_mechanism", mechanism));
        form.push(("kafka_username", user));
        form.push(("kafka_password", password));
        form
    };
    for (mechanism, user, password) in [
        ("SCRAM-SHA-256", "alice", "alice-secret-256"),
        ("SCRAM-SHA-512", "bob", "bob-secret-512"),
    ] {
        let (_, page) = p
            .status_after("test", &signed_in(mechanism, user, password))
            .await;
        assert!(
            status(&page).contains("Kafka acknowledged the test record"),
            "{mechanism}: {}",
            status(&page)
        );
    }
    let (_, page) = p
        .status_after(
            "test",
            &signed_in("SCRAM-SHA-256", "alice", "wrong-password"),
        )
        .await;
    assert!(
        status(&page).contains("refused the sign-in"),
        "{}",
        status(&page)
    );
    // Saved with the right password, events flow; the password never reaches the page.
    assert_eq!(
        p.status_after("save", &signed_in("SCRAM-SHA-512", "bob", "bob-secret-512"))
            .await
            .0,
        303
    );
    let page = p.app.get_page(&p.path).await;
    assert!(!page.contains("bob-secret-512"));
    post(&p, json!({"event_id": 4888})).await;
    assert_eq!(forward(&p).await.delivered, 1);
    let reader = User {
        name: "bob",
        password: "bob-secret-512",
        mechanism: "scram512",
    };
    let records = broker.records_as(TOPIC, 3, Some(&reader));
    assert!(records.iter().any(|r| r.value["EventID"] == 4888));
}

#[tokio::test]
async fn a_broker_stopped_mid_stream_and_restarted_loses_nothing() {
    let mut broker = Broker::start(&[TOPIC]).await;
    let p = portal().await;
    let brokers = broker.bootstrap();
    assert_eq!(
        p.status_after("save", &fields(&brokers, TOPIC)).await.0,
        303
    );

    let batch = |from: usize| -> Value {
        (from..from + 100)
            .map(|n| json!({"event_id": 4888, "details": {"n": n}}))
            .collect()
    };
    post(&p, batch(0)).await;
    assert_eq!(forward(&p).await.delivered, 100);

    broker.stop();
    post(&p, batch(100)).await;
    let report = forward(&p).await;
    assert_eq!(
        report.delivered, 0,
        "nothing can be acknowledged while down"
    );
    assert_eq!(p.app.queued().await, 100, "kept");

    broker.restart();
    post(&p, batch(200)).await;
    let mut delivered = 0;
    for _ in 0..10 {
        // Retries are due after a backoff; make them due now.
        sqlx::query("update delivery_destinations set next_attempt_at = now()")
            .execute(&p.app.pool)
            .await
            .unwrap();
        delivered += forward(&p).await.delivered;
        if p.app.queued().await == 0 {
            break;
        }
    }
    assert_eq!(p.app.queued().await, 0, "delivered {delivered}");
    let records = broker.records(TOPIC, 300);
    let seen: BTreeSet<i64> = records
        .iter()
        .filter_map(|r| r.value["details"]["n"].as_i64())
        .collect();
    assert_eq!(seen.len(), 300, "every event arrived at least once");
}

/// Counts the connections made to `ip:port`; accepts and closes each.
async fn knock_counter(ip: &str, port: u16) -> Arc<AtomicUsize> {
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .expect("bind the knock counter");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    count
}

fn tls_fields(brokers: &str) -> Vec<(&str, &str)> {
    let mut form = fields(brokers, TOPIC);
    form.push(("kafka_tls", "on"));
    form
}

#[tokio::test]
async fn a_broker_name_with_allowed_and_denied_addresses_is_only_connected_to_the_allowed_one() {
    let port = crate::support::ports::outside_the_ephemeral_range();
    let allowed = knock_counter("127.0.0.1", port).await;
    let denied = knock_counter("127.0.0.2", port).await;
    let lookup = StaticLookup::new([(
        "kafka.test",
        vec![
            "127.0.0.2".parse::<IpAddr>().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ],
    )]);
    let p = portal_with_lookup(Arc::new(lookup)).await;
    // TLS on (the name is not allow-listed); the listeners speak no TLS, so the test fails:
    // what matters is where librdkafka connected.
    let brokers = format!("kafka.test:{port}");
    let (_, page) = p.status_after("test", &tls_fields(&brokers)).await;
    assert!(!status(&page).contains("acknowledged"), "{}", status(&page));
    assert!(
        allowed.load(Ordering::SeqCst) >= 1,
        "librdkafka connected to the allowed address: {}",
        status(&page)
    );
    assert_eq!(denied.load(Ordering::SeqCst), 0, "never to the denied one");
}

/// Answers a name with its first address once, then with the rest: a rebinding name.
struct Rebinding {
    first: IpAddr,
    then: IpAddr,
    asked: AtomicUsize,
}

impl Lookup for Rebinding {
    fn lookup<'a>(&'a self, _host: &'a str) -> BoxFuture<'a, std::io::Result<Vec<IpAddr>>> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst);
        let ip = if n == 0 { self.first } else { self.then };
        Box::pin(async move { Ok(vec![ip]) })
    }
}

#[tokio::test]
async fn a_broker_name_that_rebinds_to_a_denied_address_after_the_check_is_refused() {
    let port = crate::support::ports::outside_the_ephemeral_range();
    let denied = knock_counter("127.0.0.2", port).await;
    let lookup = Arc::new(Rebinding {
        first: "127.0.0.1".parse().unwrap(),
        then: "127.0.0.2".parse().unwrap(),
        asked: AtomicUsize::new(0),
    });
    let p = portal_with_lookup(lookup.clone()).await;
    let brokers = format!("kafka.test:{port}");
    let (_, page) = p.status_after("test", &tls_fields(&brokers)).await;
    let text = status(&page);
    assert!(text.contains("outbound policy"), "{text}");
    assert!(text.contains("127.0.0.2"), "{text}");
    assert!(
        lookup.asked.load(Ordering::SeqCst) >= 2,
        "librdkafka's own lookup went through the guard"
    );
    assert_eq!(denied.load(Ordering::SeqCst), 0, "no packet to 127.0.0.2");
}

#[tokio::test]
async fn a_broker_advertised_at_a_denied_address_is_refused_and_the_events_wait() {
    // The bootstrap broker is allowed; the cluster's metadata names itself kafka-adv.test,
    // which resolves to 127.0.0.2, outside the allow-list.
    let broker = Broker::start_advertising(&[TOPIC], "kafka-adv.test").await;
    let denied = knock_counter("127.0.0.2", broker.port).await;
    let lookup = StaticLookup::new([("kafka-adv.test", vec!["127.0.0.2".parse().unwrap()])]);
    let p = portal_with_lookup(Arc::new(lookup)).await;
    let brokers = broker.bootstrap();
    let form = fields(&brokers, TOPIC);
    let (_, page) = p.status_after("test", &form).await;
    let text = status(&page);
    assert!(text.contains("outbound policy"), "{text}");
    assert!(text.contains("kafka-adv.test"), "{text}");

    // Saved anyway: the destination fails visibly, the event waits, nothing reaches 127.0.0.2.
    assert_eq!(p.status_after("save", &form).await.0, 303);
    post(&p, json!({"event_id": 4888})).await;
    let report = forward(&p).await;
    assert_eq!(report.delivered, 0, "{report:?}");
    assert_eq!(p.app.queued().await, 1);
    let (state, error) = p.destination_status().await;
    assert_eq!(state, "failing", "{error:?}");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("outbound") && error.contains("kafka-adv.test"),
        "{error}"
    );
    assert_eq!(denied.load(Ordering::SeqCst), 0, "no packet to 127.0.0.2");
}
