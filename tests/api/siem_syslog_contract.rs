//! Syslog's wire contract against a real rsyslog over TLS (RFC 5425, octet counting): every
//! catalog event arrives and parses back, as RFC 5424 with the log as JSON and as CEF; mutual
//! TLS; and the failures a user can fix are explained (unknown CA, a name the certificate does
//! not carry, a client certificate required, nothing listening), with nothing sent.

use std::sync::Arc;

use crate::support::{
    input_value,
    portal::{portal_with_lookup, status, CATALOG},
    rsyslog::{Pki, Rsyslog},
};
use cloudpki::{
    domain::{
        events::catalog,
        syslog::{AppName, SyslogFormat, SyslogHost, SyslogTransport},
    },
    siem::{
        egress::{EgressPolicy, Lookup, StaticLookup},
        syslog::{self, Endpoint, SyslogError},
        AuditLog, ChainLink,
    },
};
use serde_json::{json, Value};
use uuid::Uuid;

/// Every catalog event, numbered 1, 2, 3 … and chained.
fn catalog_events(subscription: Uuid) -> Vec<AuditLog> {
    let now = chrono::Utc::now();
    catalog()
        .iter()
        .enumerate()
        .map(|(i, info)| AuditLog {
            uuid: Uuid::new_v4(),
            sequence: i as i64 + 1,
            subscription_id: subscription,
            event_id: info.id,
            occurred_at: now,
            recorded_at: now,
            actor: Some("ca-admin@example.com".into()),
            details: json!({"Index": i, "Note": "a=b \\ c"}),
            chain: Some(ChainLink {
                prev_hash: format!("{:064x}", i),
                hash: format!("{:064x}", i + 1),
            }),
        })
        .collect()
}

fn egress() -> EgressPolicy {
    EgressPolicy::parse("127.0.0.1/32").unwrap()
}

/// `localhost` and `other.test` both answer 127.0.0.1 (no packet leaves loopback).
fn lookup() -> Arc<dyn Lookup> {
    Arc::new(StaticLookup::new([
        ("localhost", vec!["127.0.0.1".parse().unwrap()]),
        ("other.test", vec!["127.0.0.1".parse().unwrap()]),
    ]))
}

fn endpoint(host: &str, port: u16, ca: Option<&str>, client: Option<(&str, &str)>) -> Endpoint {
    Endpoint {
        host: SyslogHost::parse(host).unwrap(),
        port,
        transport: SyslogTransport::Tls,
        tls: Some(Arc::new(syslog::tls_config(ca, client).unwrap())),
    }
}

/// Sends `bytes` over TLS to `host:port`, trusting the test CA, with `client` (certificate
/// and key) when given.
async fn send_tls(
    host: &str,
    port: u16,
    pki: &Pki,
    client: Option<(&str, &str)>,
    bytes: &[u8],
) -> Result<(), SyslogError> {
    syslog::send_framed(
        &endpoint(host, port, Some(&pki.ca_pem), client),
        &egress(),
        lookup(),
        bytes,
    )
    .await
}

fn client_of(pki: &Pki) -> Option<(&str, &str)> {
    Some((&pki.client_cert_pem, &pki.client_key_pem))
}

fn framed(logs: &[AuditLog], format: SyslogFormat) -> Vec<u8> {
    let app = AppName::parse("").unwrap();
    logs.iter()
        .flat_map(|log| syslog::frame(&syslog::message(log, format, "cloudpki-test", &app)))
        .collect()
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG` split into its parts.
fn parts(line: &str) -> (u16, Vec<&str>, &str) {
    let rest = line.strip_prefix('<').expect("a PRI");
    let (pri, rest) = rest.split_once('>').expect("a PRI");
    let fields: Vec<&str> = rest.splitn(8, ' ').collect();
    assert_eq!(fields.len(), 8, "{line}");
    (pri.parse().unwrap(), fields[..7].to_vec(), fields[7])
}

#[tokio::test]
async fn every_catalog_event_arrives_over_tls_as_rfc5424_json_and_parses_back() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start(&pki, false).await;
    let sub = Uuid::new_v4();
    let logs = catalog_events(sub);
    let bytes = framed(&logs, SyslogFormat::Rfc5424);
    send_tls("localhost", rsyslog.port, &pki, None, &bytes)
        .await
        .expect("sent");
    let lines = rsyslog.received(logs.len()).await;
    assert_eq!(lines.len(), logs.len(), "{lines:#?}");
    for (log, line) in logs.iter().zip(&lines) {
        let (pri, fields, msg) = parts(line);
        assert_eq!(pri, 13 * 8 + u16::from(syslog::severity(log)), "{line}");
        assert_eq!(fields[0], "1");
        assert_eq!(fields[2], "cloudpki-test");
        assert_eq!(fields[3], "EZCA");
        assert_eq!(fields[5], log.event_id.get().to_string());
        assert_eq!(fields[6], "-");
        let body: Value = serde_json::from_str(msg).expect("MSG is JSON");
        assert_eq!(body["Sequence"], log.sequence);
        assert_eq!(body["EventUuid"], log.uuid.to_string());
        assert_eq!(body["Hash"], log.chain.as_ref().unwrap().hash);
        assert_eq!(body["SubscriptionId"], sub.to_string());
        assert_eq!(body["details"]["Note"], "a=b \\ c");
    }
}

#[tokio::test]
async fn every_catalog_event_arrives_as_cef_with_mutual_tls() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start(&pki, true).await;
    let logs = catalog_events(Uuid::new_v4());
    let bytes = framed(&logs, SyslogFormat::Cef);

    // Without a client certificate the receiver refuses the session: explained, not delivered.
    let refused = send_tls("localhost", rsyslog.port, &pki, None, &bytes)
        .await
        .expect_err("a client certificate is required");
    assert!(matches!(refused, SyslogError::Tls(_)), "{refused}");
    assert!(
        refused.to_string().contains("client certificate"),
        "{refused}"
    );

    send_tls("localhost", rsyslog.port, &pki, client_of(&pki), &bytes)
        .await
        .expect("sent with the client certificate");
    let lines = rsyslog.received(logs.len()).await;
    assert_eq!(
        lines.len(),
        logs.len(),
        "only the mutual-TLS session's: {lines:#?}"
    );
    for (log, line) in logs.iter().zip(&lines) {
        let (_, fields, msg) = parts(line);
        assert_eq!(fields[5], log.event_id.get().to_string());
        let header: Vec<&str> = msg.splitn(8, '|').collect();
        assert_eq!(header[0], "CEF:0", "{msg}");
        assert_eq!(header[4], log.event_id.get().to_string());
        assert_eq!(header[5], log.event_id.info().summary);
        assert_eq!(header[6], syslog::cef_severity(log).to_string());
        let ext = header[7];
        assert!(ext.contains(&format!("externalId={}", log.uuid)), "{ext}");
        assert!(ext.contains(&format!("cn1={}", log.sequence)), "{ext}");
        assert!(
            ext.contains(&format!("cs2={}", log.chain.as_ref().unwrap().hash)),
            "{ext}"
        );
    }
}

#[tokio::test]
async fn an_unknown_ca_a_wrong_name_and_a_closed_port_are_explained_and_nothing_arrives() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start(&pki, false).await;
    let bytes = framed(&catalog_events(Uuid::new_v4())[..1], SyslogFormat::Rfc5424);

    let unknown_ca = syslog::send_framed(
        &endpoint("localhost", rsyslog.port, None, None),
        &egress(),
        lookup(),
        &bytes,
    )
    .await
    .expect_err("the test CA is not trusted");
    assert!(matches!(unknown_ca, SyslogError::Tls(_)), "{unknown_ca}");
    assert!(unknown_ca.to_string().contains("CA"), "{unknown_ca}");

    let wrong_name = send_tls("other.test", rsyslog.port, &pki, None, &bytes)
        .await
        .expect_err("the certificate is for localhost");
    assert!(
        wrong_name.to_string().contains("not issued for other.test"),
        "{wrong_name}"
    );

    let closed = crate::support::ports::outside_the_ephemeral_range();
    let refused = send_tls("localhost", closed, &pki, None, &bytes)
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(
            refused,
            SyslogError::NotSent {
                why: syslog::Unreached::Refused,
                ..
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("refused"), "{refused}");

    // An address outside the outbound policy is never connected to.
    let denied_lookup: Arc<dyn Lookup> = Arc::new(StaticLookup::new([(
        "localhost",
        vec!["127.0.0.2".parse().unwrap()],
    )]));
    let denied = syslog::send_framed(
        &endpoint("localhost", rsyslog.port, Some(&pki.ca_pem), None),
        &egress(),
        denied_lookup,
        &bytes,
    )
    .await
    .expect_err("127.0.0.2 is not allowed");
    assert!(denied.to_string().contains("outbound policy"), "{denied}");

    // rsyslog writes what it takes within milliseconds; a second is ample to see nothing came.
    assert!(
        rsyslog
            .received_within(1, std::time::Duration::from_secs(1))
            .await
            .is_empty(),
        "nothing arrived"
    );
}

#[tokio::test]
async fn configured_on_the_page_it_tests_saves_and_forwards_every_event_with_mutual_tls() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start(&pki, true).await;
    let p = portal_with_lookup(lookup()).await;
    let port = rsyslog.port.to_string();
    let form = vec![
        ("siem_enabled", "on"),
        ("provider", "syslog"),
        ("syslog_host", "localhost"),
        ("syslog_port", port.as_str()),
        ("syslog_transport", "tls"),
        ("syslog_format", "rfc5424"),
        ("syslog_ca_pem", pki.ca_pem.as_str()),
        ("syslog_client_cert_pem", pki.client_cert_pem.as_str()),
        ("syslog_client_key_pem", pki.client_key_pem.as_str()),
        ("syslog_app_name", "EZCA"),
    ];
    // Test Connection on a receiver of its own: this rsyslog (8.2302, OpenSSL driver) now and
    // then closes a descriptor twice when one TLS session follows another, and its output file
    // then fails with EPIPE inside rsyslog (seen here; the messages had arrived). One session
    // per receiver keeps the test about cloudpki.
    let tester = Rsyslog::start(&pki, true).await;
    let tester_port = tester.port.to_string();
    let mut test_form = form.clone();
    test_form[3] = ("syslog_port", tester_port.as_str());
    let (code, page) = p.status_after("test", &test_form).await;
    assert_eq!(code, 200, "{}", status(&page));
    assert!(
        status(&page).contains("took the test message over TLS"),
        "{}",
        status(&page)
    );
    let test_lines = tester.received(1).await;
    assert_eq!(test_lines.len(), 1, "{test_lines:?}");
    let test: Value = serde_json::from_str(parts(&test_lines[0]).2).unwrap();
    assert_eq!(test["EventID"], 0);
    assert_eq!(p.status_after("save", &form).await.0, 303);

    // The key is write-only: the page never shows it back.
    let page = p.app.get_page(&p.path).await;
    assert!(
        !page.contains("PRIVATE KEY-----\n"),
        "the key is not in the page"
    );
    assert_eq!(
        input_value(&page, "syslog_client_key_pem").unwrap_or_default(),
        ""
    );

    let body: Vec<Value> = CATALOG
        .iter()
        .map(|id| json!({"event_id": id, "actor": "alice@example.com"}))
        .collect();
    assert_eq!(
        p.app
            .post_events(&p.token, &Value::Array(body))
            .await
            .status(),
        202
    );
    let report = p.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, CATALOG.len() as u64, "{report:?}");

    let lines = rsyslog.received(CATALOG.len()).await;
    assert_eq!(
        lines.len(),
        CATALOG.len(),
        "each event once; received {lines:#?}; rsyslogd said: {}",
        rsyslog.complaints()
    );
    for (i, (line, id)) in lines.iter().zip(CATALOG).enumerate() {
        let (_, fields, msg) = parts(line);
        assert_eq!(fields[5], id.to_string());
        let log: Value = serde_json::from_str(msg).unwrap();
        assert_eq!(log["Sequence"], i as i64 + 1);
        assert_eq!(log["SubscriptionId"], p.sub.to_string());
        assert!(log["Hash"].is_string() && log["EventUuid"].is_string());
    }
}

#[tokio::test]
async fn plain_tcp_reaches_an_allow_listed_relay_and_is_refused_for_any_other_host() {
    let pki = Pki::new();
    let relay = Rsyslog::start_plain_tcp(&pki).await;
    let logs = catalog_events(Uuid::new_v4());
    let tcp = Endpoint {
        host: SyslogHost::parse("localhost").unwrap(),
        port: relay.port,
        transport: SyslogTransport::Tcp,
        tls: None,
    };
    syslog::send_framed(&tcp, &egress(), lookup(), &framed(&logs, SyslogFormat::Cef))
        .await
        .expect("sent");
    let lines = relay.received(logs.len()).await;
    assert_eq!(lines.len(), logs.len());
    for (log, line) in logs.iter().zip(&lines) {
        assert!(parts(line).2.starts_with("CEF:0|"), "{line}");
        assert!(line.contains(&format!("externalId={}", log.uuid)), "{line}");
    }

    // On the page: plain TCP only to a host CLOUDPKI_EGRESS_ALLOW lists (127.0.0.1 here).
    let p = portal_with_lookup(lookup()).await;
    let port = relay.port.to_string();
    let form = |host: &'static str| {
        vec![
            ("siem_enabled", "on"),
            ("provider", "syslog"),
            ("syslog_host", host),
            ("syslog_port", "6514"),
            ("syslog_transport", "tcp"),
            ("syslog_format", "cef"),
        ]
    };
    let (code, page) = p.status_after("save", &form("siem.example.com")).await;
    assert_eq!(code, 422);
    let error = crate::support::texts(&page, "#syslog_host-error").join(" ");
    assert!(error.contains("CLOUDPKI_EGRESS_ALLOW"), "{error}");
    let mut allowed = form("127.0.0.1");
    allowed[3] = ("syslog_port", port.as_str());
    let (code, page) = p.status_after("test", &allowed).await;
    assert_eq!(code, 200, "{}", status(&page));
    assert!(
        status(&page).contains("over plain TCP"),
        "{}",
        status(&page)
    );
}

#[tokio::test]
async fn a_receiver_that_accepts_but_never_answers_tls_is_a_timeout_with_nothing_sent() {
    // Accepts the connection and then says nothing: no TLS server behind the port.
    let (address, holder) = crate::support::hung_listener().await;
    let port = address.port();
    let pki = Pki::new();
    let bytes = framed(&catalog_events(Uuid::new_v4())[..1], SyslogFormat::Rfc5424);
    let silent = send_tls("localhost", port, &pki, None, &bytes)
        .await
        .expect_err("no TLS answer");
    assert!(
        matches!(
            silent,
            SyslogError::NotSent {
                why: syslog::Unreached::TimedOut,
                ..
            }
        ),
        "{silent}"
    );
    assert!(
        silent.to_string().contains("did not finish within"),
        "{silent}"
    );
    holder.abort();
}

#[tokio::test]
async fn a_receiver_that_asks_for_a_client_certificate_gets_nothing_without_one() {
    // A receiver that asks for a client certificate but lets the session through without one
    // and keeps nothing of it (GnuTLS receivers in x509 modes close without an alert): without
    // this check, the batch would count as delivered and be lost.
    let pki = Pki::new();
    let acceptor = pki.acceptor(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = received.clone();
    // How many sessions the receiver has seen to their end.
    let (ended, mut sessions_ended) = tokio::sync::watch::channel(0usize);
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, counted, ended) = (acceptor.clone(), counted.clone(), ended.clone());
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                if let Ok(mut tls) = acceptor.accept(socket).await {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counted.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Closes without a word, as if it had stored the batch.
                }
                ended.send_modify(|n| *n += 1);
            });
        }
    });
    async fn until_ended(ended: &mut tokio::sync::watch::Receiver<usize>, sessions: usize) {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            ended.wait_for(|n| *n >= sessions),
        )
        .await
        .expect("the receiver saw the session end")
        .expect("the receiver runs");
    }
    let bytes = framed(&catalog_events(Uuid::new_v4())[..2], SyslogFormat::Rfc5424);
    let refused = send_tls("localhost", port, &pki, None, &bytes)
        .await
        .expect_err("not counted as delivered");
    assert!(matches!(refused, SyslogError::Tls(_)), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("asks for a client certificate"),
        "{refused}"
    );
    until_ended(&mut sessions_ended, 1).await;
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no event was written to it"
    );
    // With the certificate, the same receiver gets the batch.
    send_tls("localhost", port, &pki, client_of(&pki), &bytes)
        .await
        .expect("sent with the client certificate");
    until_ended(&mut sessions_ended, 2).await;
    assert_eq!(
        received.load(std::sync::atomic::Ordering::SeqCst),
        bytes.len()
    );
    server.abort();
}

#[tokio::test]
async fn over_relp_every_catalog_event_is_acknowledged_and_arrives_with_mutual_tls() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start_relp(&pki, true).await;
    let logs = catalog_events(Uuid::new_v4());
    let bytes = framed(&logs, SyslogFormat::Rfc5424);
    let relp = |client| Endpoint {
        transport: SyslogTransport::Relp,
        ..endpoint("localhost", rsyslog.port, Some(&pki.ca_pem), client)
    };
    // Without a client certificate: refused, nothing counted as delivered.
    let refused = syslog::send_framed(&relp(None), &egress(), lookup(), &bytes)
        .await
        .expect_err("a client certificate is required");
    assert!(
        refused.to_string().contains("client certificate"),
        "{refused}"
    );
    // With it, every message is acknowledged before the batch counts as delivered.
    syslog::send_framed(&relp(client_of(&pki)), &egress(), lookup(), &bytes)
        .await
        .unwrap_or_else(|e| panic!("acknowledged: {e}; rsyslog: {}", rsyslog.complaints()));
    let lines = rsyslog.received(logs.len()).await;
    assert_eq!(lines.len(), logs.len(), "{lines:#?}");
    for (log, line) in logs.iter().zip(&lines) {
        let (_, fields, msg) = parts(line);
        assert_eq!(fields[5], log.event_id.to_string(), "MSGID is the Event ID");
        let json: Value = serde_json::from_str(msg).unwrap();
        assert_eq!(json["EventUuid"], log.uuid.to_string());
        assert_eq!(json["Sequence"], log.sequence);
    }
}

/// The next RELP frame of `buf` (by its length, as a receiver reads it): its number, command
/// and the bytes it took.
fn relp_frame(buf: &[u8]) -> Option<(u64, String, usize)> {
    let text = String::from_utf8_lossy(buf);
    let mut fields = text.splitn(4, [' ', '\n']);
    let txnr_text = fields.next()?;
    let txnr: u64 = txnr_text.parse().ok()?;
    let command = fields.next()?.to_owned();
    let len_text = fields.next()?;
    let len: usize = len_text.parse().ok()?;
    let header = txnr_text.len() + 1 + command.len() + 1 + len_text.len();
    let end = if len == 0 {
        header + 1
    } else {
        header + 1 + len + 1
    };
    (buf.len() >= end).then_some((txnr, command, end))
}

/// What a fake RELP receiver acknowledged: the payload of every `syslog` command it answered
/// with `200` (what imrelp keeps).
type Kept = Arc<std::sync::Mutex<Vec<String>>>;

/// A RELP receiver over TLS (the test PKI's server certificate, no client certificate asked)
/// that takes one session after another and answers each frame with `reply(session, txnr,
/// command)`, sessions counted from 0: `Some(text)` as `rsp` (a plain `200 OK` to `open` with
/// imrelp's offers), `None` hangs up.
async fn fake_relp(
    pki: &Pki,
    reply: impl Fn(usize, u64, &str) -> Option<String> + Send + 'static,
) -> (u16, tokio::task::JoinHandle<()>, Kept) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let acceptor = pki.acceptor(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let kept = Kept::default();
    let keeping = kept.clone();
    let server = tokio::spawn(async move {
        for session in 0.. {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(socket).await else {
                continue;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            'session: loop {
                let n = tls.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some((txnr, command, used)) = relp_frame(&buf) {
                    let data = relp_data(&buf[..used]);
                    buf.drain(..used);
                    let Some(mut text) = reply(session, txnr, &command) else {
                        break 'session;
                    };
                    if command == "open" && text == "200 OK" {
                        // imrelp's offers, as librelp 1.11 sends them.
                        text.push_str("\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog");
                    }
                    if command == "syslog" && text.starts_with("200") {
                        keeping.lock().unwrap().push(data);
                    }
                    let answer = format!("{txnr} rsp {} {text}\n", text.len());
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        break 'session;
                    }
                }
            }
        }
    });
    (port, server, kept)
}

/// The data of one whole RELP frame (`txnr command datalen data` and its trailer).
fn relp_data(frame: &[u8]) -> String {
    let text = String::from_utf8_lossy(frame);
    let mut fields = text.splitn(4, ' ');
    let data = fields.nth(3).unwrap_or_default();
    data.strip_suffix('\n').unwrap_or(data).to_owned()
}

fn relp_endpoint(port: u16, pki: &Pki) -> Endpoint {
    Endpoint {
        transport: SyslogTransport::Relp,
        ..endpoint("localhost", port, Some(&pki.ca_pem), None)
    }
}

#[tokio::test]
async fn a_relp_receiver_that_hangs_up_midway_leaves_the_batch_unconfirmed() {
    // It opens the session, acknowledges the first message, then hangs up: the batch is not
    // delivered, and says how far it got.
    let pki = Pki::new();
    let (port, server, _) =
        fake_relp(&pki, |_, txnr, _| (txnr <= 2).then(|| "200 OK".to_owned())).await;
    let bytes = framed(&catalog_events(Uuid::new_v4())[..3], SyslogFormat::Rfc5424);
    let unconfirmed = syslog::send_framed(&relp_endpoint(port, &pki), &egress(), lookup(), &bytes)
        .await
        .expect_err("not every message was acknowledged");
    assert!(
        matches!(
            unconfirmed,
            SyslogError::MaybeSent {
                acknowledged: 1,
                ..
            }
        ),
        "{unconfirmed}"
    );
    assert!(
        unconfirmed
            .to_string()
            .starts_with("1 of 3 messages were acknowledged"),
        "{unconfirmed}"
    );
    server.abort();
}

#[tokio::test]
async fn a_relp_session_cut_short_keeps_what_was_acknowledged_and_resends_only_the_rest() {
    // The first session acknowledges the first of three events, then hangs up; the next one
    // acknowledges everything.
    let pki = Pki::new();
    let (port, server, kept) = fake_relp(&pki, |session, txnr, _| {
        (session > 0 || txnr <= 2).then(|| "200 OK".to_owned())
    })
    .await;
    let p = portal_with_lookup(lookup()).await;
    let port = port.to_string();
    let form = [
        ("siem_enabled", "on"),
        ("provider", "syslog"),
        ("syslog_host", "localhost"),
        ("syslog_port", port.as_str()),
        ("syslog_transport", "relp"),
        ("syslog_format", "rfc5424"),
        ("syslog_ca_pem", pki.ca_pem.as_str()),
        ("syslog_app_name", "EZCA"),
    ];
    let (code, page) = p.status_after("save", &form).await;
    assert_eq!(code, 303, "{}", status(&page));
    let body: Vec<Value> = CATALOG[..3]
        .iter()
        .map(|id| json!({"event_id": id}))
        .collect();
    let posted = p.app.post_events(&p.token, &Value::Array(body)).await;
    assert_eq!(posted.status(), 202);

    let forwarder = p.app.state.forwarder();
    let cut = forwarder.forward_once().await.unwrap();
    assert_eq!((cut.delivered, cut.duplicates), (1, 0), "{cut:?}");
    let later = chrono::Utc::now() + chrono::Duration::minutes(10);
    let rest = forwarder.forward_once_at(later).await.unwrap();
    // The two the receiver may have kept unacknowledged are counted; the acknowledged one is
    // not sent again.
    assert_eq!((rest.delivered, rest.duplicates), (2, 2), "{rest:?}");
    let sequences: Vec<i64> = kept
        .lock()
        .unwrap()
        .iter()
        .map(|data| {
            let log: Value = serde_json::from_str(parts(data).2).unwrap();
            log["Sequence"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    server.abort();
}

#[tokio::test]
async fn a_relp_receiver_that_refuses_the_session_or_offers_no_syslog_fails_the_destination_and_one_that_hangs_up_is_retried(
) {
    let pki = Pki::new();
    let bytes = framed(&catalog_events(Uuid::new_v4())[..1], SyslogFormat::Rfc5424);
    let (port, server, _) = fake_relp(&pki, |_, _, _| {
        Some("500 not accepting sessions".to_owned())
    })
    .await;
    let refused = syslog::send_framed(&relp_endpoint(port, &pki), &egress(), lookup(), &bytes)
        .await
        .expect_err("refused");
    assert!(matches!(refused, SyslogError::Refused(_)), "{refused}");
    assert!(
        refused.to_string().contains("500 not accepting sessions"),
        "{refused}"
    );
    server.abort();
    // An open answered without the syslog command among its offers: nothing is sent.
    let (port, server, kept) = fake_relp(&pki, |_, _, command| {
        Some(match command {
            "open" => "200 OK\nrelp_version=0\ncommands=eventlog".to_owned(),
            _ => "200 OK".to_owned(),
        })
    })
    .await;
    let refused = syslog::send_framed(&relp_endpoint(port, &pki), &egress(), lookup(), &bytes)
        .await
        .expect_err("no syslog command");
    assert!(matches!(refused, SyslogError::Refused(_)), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("does not offer the syslog command"),
        "{refused}"
    );
    assert!(kept.lock().unwrap().is_empty());
    server.abort();
    let (port, server, _) = fake_relp(&pki, |_, _, _| None).await;
    let hung_up = syslog::send_framed(&relp_endpoint(port, &pki), &egress(), lookup(), &bytes)
        .await
        .expect_err("no session");
    assert!(
        matches!(
            hung_up,
            SyslogError::NotSent {
                why: syslog::Unreached::Failed,
                ..
            }
        ),
        "nothing left, so it is retried: {hung_up}"
    );
    server.abort();
}

#[tokio::test]
async fn over_relp_a_receiver_that_checks_no_client_certificate_acknowledges_too() {
    let pki = Pki::new();
    let rsyslog = Rsyslog::start_relp(&pki, false).await;
    let logs = catalog_events(Uuid::new_v4());
    let bytes = framed(&logs[..2], SyslogFormat::Cef);
    let endpoint = Endpoint {
        transport: SyslogTransport::Relp,
        ..endpoint("localhost", rsyslog.port, Some(&pki.ca_pem), None)
    };
    syslog::send_framed(&endpoint, &egress(), lookup(), &bytes)
        .await
        .unwrap_or_else(|e| panic!("acknowledged: {e}; rsyslog: {}", rsyslog.complaints()));
    assert_eq!(rsyslog.received(2).await.len(), 2);
}
