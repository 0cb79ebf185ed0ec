//! When delivery fails, people know: failure, reminder and recovery emails through a real SMTP
//! server, the delivery health panel, and retention that never drops silently.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::{
    fake_datadog::{Behavior, FakeDatadog},
    smtp::SmtpSink,
    texts, TestApp,
};
use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const WRONG_KEY: &str = "ffffffffffffffffffffffffffffffff";
const PASSWORD: &str = "correct horse battery staple";
const ADMINS: [&str; 2] = ["alice@example.com", "bob@example.com"];
const READER: &str = "carol@example.com";

struct Setup {
    app: TestApp,
    sub: Uuid,
    token: String,
    intake: FakeDatadog,
    sink: SmtpSink,
}

async fn setup(key: &str, extra_env: &[(&str, &str)]) -> Setup {
    let sink = SmtpSink::start().await;
    let mut env = support::test_env();
    env.insert("CLOUDPKI_SMTP_URL".into(), sink.url());
    env.insert(
        "CLOUDPKI_MAIL_FROM".into(),
        "cloudpki@pki.example.com".into(),
    );
    for (k, v) in extra_env {
        env.insert((*k).into(), (*v).into());
    }
    let app = TestApp::spawn_with(env).await;
    let sub = app.create_subscription("Contoso PKI").await;
    for admin in ADMINS {
        app.create_user(admin, PASSWORD, sub, "admin").await;
    }
    app.create_user(READER, PASSWORD, sub, "reader").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), key, true)
        .await;
    let token = app.token(sub).await;
    Setup {
        app,
        sub,
        token,
        intake,
        sink,
    }
}

async fn post_n(s: &Setup, n: usize) {
    let body: Vec<Value> = (0..n).map(|_| json!({"event_id": 4888})).collect();
    assert_eq!(
        s.app
            .post_events(&s.token, &Value::Array(body))
            .await
            .status(),
        202
    );
}

fn recipients(messages: &[support::smtp::Received]) -> Vec<String> {
    let mut to: Vec<String> = messages.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    to
}

async fn panel(s: &Setup, who: &str) -> String {
    let client = support::new_client();
    support::login_with(&client, &s.app.base_url, who, PASSWORD).await;
    client
        .get(s.app.url(&format!("/subscriptions/{}/settings", s.sub)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failing_destination_emails_every_admin_once_and_no_reader() {
    let s = setup(WRONG_KEY, &[]).await;
    post_n(&s, 7).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    // Two notifiers (as in two worker processes), several passes each.
    let a = s.app.state.notifier();
    let b = s.app.state.notifier();
    let now = Utc::now();
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(a.run_once_at(now), b.run_once_at(now));
        ra.unwrap();
        rb.unwrap();
    }
    let messages = s.sink.messages();
    assert_eq!(
        recipients(&messages),
        vec![ADMINS[0].to_owned(), ADMINS[1].to_owned()]
    );
    let mail = &messages[0];
    assert!(
        mail.subject.contains("Action needed") && mail.subject.contains("Contoso PKI"),
        "{}",
        mail.subject
    );
    assert!(
        mail.text.contains("Datadog refused the API key"),
        "the error in plain words: {}",
        mail.text
    );
    assert!(mail.text.contains("7 event(s) wait"), "{}", mail.text);
    assert!(
        mail.text.contains(&format!(
            "{}/subscriptions/{}/settings",
            s.app.base_url, s.sub
        )),
        "{}",
        mail.text
    );
    assert!(mail.html.contains("Fix the settings"));
    assert!(!mail.text.contains(WRONG_KEY) && !mail.html.contains(WRONG_KEY));
}

#[tokio::test]
async fn reminders_go_out_at_most_once_a_day_while_failing() {
    let s = setup(WRONG_KEY, &[]).await;
    post_n(&s, 2).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    let n = s.app.state.notifier();
    let t0 = Utc::now();
    n.run_once_at(t0).await.unwrap();
    assert_eq!(s.sink.messages().len(), 2);
    for hours in [1, 12, 23] {
        n.run_once_at(t0 + chrono::Duration::hours(hours))
            .await
            .unwrap();
    }
    assert_eq!(s.sink.messages().len(), 2, "no reminder within a day");
    n.run_once_at(t0 + chrono::Duration::hours(25))
        .await
        .unwrap();
    n.run_once_at(t0 + chrono::Duration::hours(26))
        .await
        .unwrap();
    let messages = s.sink.messages();
    assert_eq!(messages.len(), 4);
    assert!(
        messages[2].subject.starts_with("Still failing"),
        "{}",
        messages[2].subject
    );
    n.run_once_at(t0 + chrono::Duration::hours(50))
        .await
        .unwrap();
    assert_eq!(s.sink.messages().len(), 6);
}

#[tokio::test]
async fn fixing_the_key_sends_one_recovery_email_and_empties_the_backlog() {
    let s = setup(WRONG_KEY, &[]).await;
    post_n(&s, 30).await;
    let f = s.app.state.forwarder();
    let n = s.app.state.notifier();
    f.forward_once().await.unwrap();
    n.run_once_at(Utc::now()).await.unwrap();
    assert_eq!(s.sink.messages().len(), 2);

    s.app
        .configure_datadog(s.sub, &s.intake.base_url(), KEY, true)
        .await;
    assert_eq!(f.forward_once().await.unwrap().delivered, 30);
    n.run_once_at(Utc::now()).await.unwrap();
    n.run_once_at(Utc::now()).await.unwrap();
    let messages = s.sink.messages();
    assert_eq!(messages.len(), 4, "one recovery email per admin");
    let recovery: Vec<_> = messages
        .iter()
        .filter(|m| m.subject.starts_with("Resolved"))
        .collect();
    assert_eq!(
        recipients(&recovery.iter().map(|m| (*m).clone()).collect::<Vec<_>>()),
        vec![ADMINS[0].to_owned(), ADMINS[1].to_owned()]
    );
    assert!(
        recovery[0].text.contains("delivered 30 waiting event(s)"),
        "{}",
        recovery[0].text
    );
    assert!(
        recovery[0].text.contains("No event was lost."),
        "{}",
        recovery[0].text
    );
    assert_eq!(s.app.queued().await, 0);
}

#[tokio::test]
async fn an_email_that_cannot_be_sent_is_retried_until_the_smtp_server_is_back() {
    let mut s = setup(WRONG_KEY, &[]).await;
    s.sink.stop();
    post_n(&s, 3).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    let n = s.app.state.notifier();
    let t0 = Utc::now();
    let report = n.run_once_at(t0).await.unwrap();
    assert_eq!(
        (report.opened, report.sent, report.send_failures),
        (1, 0, 2)
    );
    let page = panel(&s, ADMINS[0]).await;
    assert!(
        texts(&page, "table.emails td")
            .join(" ")
            .contains("not sent yet, retrying"),
        "the panel says so"
    );

    s.sink.restart().await;
    n.run_once_at(t0 + chrono::Duration::seconds(10))
        .await
        .unwrap();
    assert!(s.sink.messages().is_empty(), "backing off");
    n.run_once_at(t0 + chrono::Duration::minutes(5))
        .await
        .unwrap();
    n.run_once_at(t0 + chrono::Duration::minutes(10))
        .await
        .unwrap();
    assert_eq!(
        recipients(&s.sink.messages()),
        vec![ADMINS[0].to_owned(), ADMINS[1].to_owned()],
        "sent once each, after all"
    );
}

#[tokio::test]
async fn a_short_outage_retries_quietly_and_a_long_one_becomes_an_incident() {
    let s = setup(KEY, &[]).await;
    post_n(&s, 4).await;
    s.intake.script(vec![Behavior::Status(503); 10]);
    let f = s.app.state.forwarder();
    let n = s.app.state.notifier();
    let t0 = Utc::now();
    f.forward_once_at(t0).await.unwrap();
    n.run_once_at(t0).await.unwrap();
    assert!(s.sink.messages().is_empty(), "one 503 is no incident");
    let page = panel(&s, ADMINS[0]).await;
    assert_eq!(texts(&page, "#health-state"), vec!["Retrying"]);
    f.forward_once_at(t0 + chrono::Duration::minutes(6))
        .await
        .unwrap();
    n.run_once_at(t0 + chrono::Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(s.sink.messages().len(), 2, "failing for over five minutes");
    assert!(
        s.sink.messages()[0].text.contains("unavailable"),
        "{}",
        s.sink.messages()[0].text
    );
}

#[tokio::test]
async fn events_past_retention_are_counted_recorded_as_a_gap_shown_and_mailed() {
    let s = setup(WRONG_KEY, &[("CLOUDPKI_RETENTION_DAYS", "2")]).await;
    post_n(&s, 12).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    let n = s.app.state.notifier();
    let report = n
        .run_once_at(Utc::now() + chrono::Duration::days(3))
        .await
        .unwrap();
    assert_eq!(report.expired, 12);
    assert_eq!(s.app.queued().await, 0);
    let kept: i64 = sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 12, "the audit trail keeps them");
    let expired: Vec<_> = s
        .sink
        .messages()
        .into_iter()
        .filter(|m| m.subject.contains("expired undelivered"))
        .collect();
    assert_eq!(expired.len(), 2, "one per admin");
    assert!(
        expired[0].text.contains("Events expired: 12"),
        "{}",
        expired[0].text
    );
    let page = panel(&s, ADMINS[0]).await;
    assert_eq!(texts(&page, "#expired-total"), vec!["12"]);
    assert!(texts(&page, "table.gaps td").contains(&"12".to_owned()));
}

#[tokio::test]
async fn without_smtp_emails_are_recorded_and_logged_and_the_portal_says_so() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user(ADMINS[0], PASSWORD, sub, "admin").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), WRONG_KEY, true)
        .await;
    let token = app.token(sub).await;
    assert_eq!(
        app.post_events(&token, &json!({"event_id": 19}))
            .await
            .status(),
        202
    );
    app.state.forwarder().forward_once().await.unwrap();
    let report = app.state.notifier().run_once_at(Utc::now()).await.unwrap();
    assert_eq!((report.opened, report.sent), (1, 1));
    let via: String = sqlx::query_scalar("select sent_via from notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(via, "logged");
    assert!(support::captured_logs().contains("email recorded, not sent"));
    app.login(ADMINS[0], PASSWORD).await;
    let page = app
        .get_page(&format!("/subscriptions/{sub}/settings"))
        .await;
    assert!(!texts(&page, "#email-not-configured").is_empty());
    assert!(texts(&page, "table.emails td")
        .join(" ")
        .contains("recorded (email not configured)"));
}

#[tokio::test]
async fn the_panel_shows_healthy_failing_disabled_and_parked_states() {
    let s = setup(KEY, &[]).await;
    let page = panel(&s, READER).await;
    assert_eq!(texts(&page, "#health-state"), vec!["Healthy"]);
    post_n(&s, 3).await;
    s.intake.reject_logs_with_detail("poison", json!(true));
    assert_eq!(
        s.app
            .post_events(
                &s.token,
                &json!({"event_id": 23, "details": {"poison": true}})
            )
            .await
            .status(),
        202
    );
    s.app.state.forwarder().forward_once().await.unwrap();
    let page = panel(&s, ADMINS[0]).await;
    assert_eq!(texts(&page, "#health-state"), vec!["Healthy"]);
    assert_eq!(texts(&page, "#parked-total"), vec!["1"]);
    assert!(texts(&page, "table.parked td")
        .iter()
        .any(|t| t.contains("400")));
    assert!(texts(&page, "#last-success")[0] != "none yet");
    assert!(
        !texts(&page, "table.attempts td").is_empty(),
        "recent attempts are listed"
    );

    // An admin retries the parked event once the SIEM accepts it.
    s.intake.reject_logs_with_detail("poison", json!("never"));
    let client = support::new_client();
    support::login_with(&client, &s.app.base_url, ADMINS[0], PASSWORD).await;
    let settings = s.app.url(&format!("/subscriptions/{}/settings", s.sub));
    let csrf = support::csrf_token(
        &client
            .get(&settings)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let r = client
        .post(format!("{settings}/retry-parked"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        s.app
            .state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .delivered,
        1
    );
    // The 3 events and the retried one (the parked event's proof was a connection-test probe).
    let events = s
        .intake
        .logs()
        .into_iter()
        .filter(|l| l["EventID"] != 0)
        .count();
    assert_eq!(events, 4);

    // Failing, with the reason.
    s.app
        .configure_datadog(s.sub, &s.intake.base_url(), WRONG_KEY, true)
        .await;
    post_n(&s, 2).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    let page = panel(&s, READER).await;
    assert_eq!(texts(&page, "#health-state"), vec!["Failing"]);
    assert!(texts(&page, "#last-error")[0].contains("API key"));
    assert!(texts(&page, "#events-waiting")[0].starts_with('2'));
    // A reader cannot retry parked events.
    let reader = support::new_client();
    support::login_with(&reader, &s.app.base_url, READER, PASSWORD).await;
    let csrf = support::csrf_token(
        &reader
            .get(&settings)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let r = reader
        .post(format!("{settings}/retry-parked"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Disabled.
    s.app
        .configure_datadog(s.sub, &s.intake.base_url(), WRONG_KEY, false)
        .await;
    let page = panel(&s, READER).await;
    assert_eq!(texts(&page, "#health-state"), vec!["Disabled"]);
}

#[tokio::test]
async fn breaking_the_key_in_a_running_portal_mails_each_admin_and_fixing_it_mails_recovery() {
    let sink = SmtpSink::start().await;
    let mut env = support::test_env();
    env.insert("CLOUDPKI_SMTP_URL".into(), sink.url());
    let app = TestApp::spawn_with_worker(env, cloudpki::app::Overrides::default()).await;
    let sub = app.create_subscription("Contoso PKI").await;
    for admin in ADMINS {
        app.create_user(admin, PASSWORD, sub, "admin").await;
    }
    let intake = FakeDatadog::start(KEY).await;
    let token = app.token(sub).await;
    app.login(ADMINS[0], PASSWORD).await;
    let path = format!("/subscriptions/{sub}/settings");
    let save = |key: &'static str| {
        let app = &app;
        let path = path.clone();
        let url = intake.base_url();
        async move {
            let csrf = support::csrf_token(&app.get_page(&path).await);
            let r = app
                .post_form(
                    &path,
                    &[
                        ("siem_enabled", "on"),
                        ("provider", "datadog"),
                        ("datadog_site", "custom"),
                        ("datadog_url", &url),
                        ("datadog_api_key", key),
                        ("csrf_token", &csrf),
                        ("action", "save"),
                    ],
                )
                .await;
            assert_eq!(r.status(), 303);
        }
    };
    save(WRONG_KEY).await;
    let body: Vec<Value> = (0..20).map(|_| json!({"event_id": 4882})).collect();
    assert_eq!(
        app.post_events(&token, &Value::Array(body)).await.status(),
        202
    );

    let wait_for = |n: usize| {
        let sink = &sink;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while sink.messages().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "expected {n} emails, got {:?}",
                    sink.messages()
                        .iter()
                        .map(|m| &m.subject)
                        .collect::<Vec<_>>()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(2).await;
    let page = app.get_page(&path).await;
    assert_eq!(texts(&page, "#health-state"), vec!["Failing"]);
    assert!(texts(&page, "#last-error")[0].contains("API key"));

    save(KEY).await;
    wait_for(4).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.queued().await > 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages = sink.messages();
    assert_eq!(
        messages.len(),
        4,
        "exactly one failure and one recovery email per admin"
    );
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.subject.starts_with("Resolved"))
            .count(),
        2
    );
    assert_eq!(intake.logs().len(), 20);
}

#[tokio::test]
async fn switching_export_off_ends_the_reminders() {
    let s = setup(WRONG_KEY, &[]).await;
    post_n(&s, 2).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    let n = s.app.state.notifier();
    let t0 = Utc::now();
    n.run_once_at(t0).await.unwrap();
    assert_eq!(s.sink.messages().len(), 2);
    // An admin turns the export off on purpose: no more reminders, no "resolved" either.
    s.app
        .configure_datadog(s.sub, &s.intake.base_url(), WRONG_KEY, false)
        .await;
    for hours in [25, 49, 73] {
        n.run_once_at(t0 + chrono::Duration::hours(hours))
            .await
            .unwrap();
    }
    assert_eq!(s.sink.messages().len(), 2);
    assert_eq!(s.app.queued().await, 2, "the events are kept");
}

#[tokio::test]
async fn events_left_for_a_provider_no_longer_chosen_are_pointed_out() {
    let s = setup(WRONG_KEY, &[]).await;
    post_n(&s, 3).await;
    s.app.state.forwarder().forward_once().await.unwrap();
    // The admin switches to Splunk (not enabled yet): the Datadog backlog is still there.
    let client = support::new_client();
    support::login_with(&client, &s.app.base_url, ADMINS[0], PASSWORD).await;
    let settings = s.app.url(&format!("/subscriptions/{}/settings", s.sub));
    let csrf = support::csrf_token(
        &client
            .get(&settings)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let r = client
        .post(&settings)
        .form(&[
            ("provider", "splunk"),
            ("csrf_token", csrf.as_str()),
            ("action", "save"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = panel(&s, ADMINS[0]).await;
    let warning = texts(&page, "p.stranded").join(" ");
    assert!(
        warning.contains("3 event(s) still wait for Datadog"),
        "{warning}"
    );
}
