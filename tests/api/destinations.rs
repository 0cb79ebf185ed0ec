//! Several destinations per subscription: each has its own provider, settings, cursor, filter,
//! health and incidents; `/siem` stays the first; at most five; removing one counts what it
//! still owed as not sent and says who removed it. Driven through the REST API with real fake
//! intakes and the real forwarder and notifier.

use crate::support::{fake_datadog::FakeDatadog, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const SOC_KEY: &str = "0123456789abcdef0123456789abcdef";
const ARCHIVE_KEY: &str = "fedcba9876543210fedcba9876543210";

struct Setup {
    app: TestApp,
    sub: Uuid,
    token: String,
    soc: FakeDatadog,
    archive: FakeDatadog,
}

fn datadog(name: &str, intake: &FakeDatadog, key: &str) -> Value {
    json!({
        "destination_name": name,
        "siem_enabled": true,
        "provider": "datadog",
        "datadog_site": "custom",
        "datadog_url": intake.base_url(),
        "datadog_api_key": key,
    })
}

impl Setup {
    /// A subscription whose first destination is "SOC" (Datadog) and second "Archive" (another
    /// Datadog intake, with its own key).
    async fn two_destinations() -> Setup {
        Setup::two_destinations_on(TestApp::spawn().await).await
    }

    async fn two_destinations_on(app: TestApp) -> Setup {
        let sub = app.create_subscription("Contoso PKI").await;
        app.create_user("admin@example.com", PASSWORD, sub, "admin")
            .await;
        let token = app.personal_token("admin@example.com").await;
        let soc = FakeDatadog::start(SOC_KEY).await;
        let archive = FakeDatadog::start(ARCHIVE_KEY).await;
        let s = Setup {
            app,
            sub,
            token,
            soc,
            archive,
        };
        let (status, body) = s
            .call(
                reqwest::Method::PUT,
                "siem",
                Some(datadog("SOC", &s.soc, SOC_KEY)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                "destinations",
                Some(datadog("Archive", &s.archive, ARCHIVE_KEY)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["destination_id"], 2, "{body}");
        assert_eq!(body["destination_name"], "Archive");
        assert_eq!(body["datadog_api_key_last4"], "3210", "{body}");
        assert!(body.get("datadog_api_key").is_none(), "never sent back");
        s
    }

    async fn call(&self, method: reqwest::Method, rest: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/api/v1/subscriptions/{}/{rest}", self.sub);
        self.app.call(method, &path, Some(&self.token), body).await
    }

    async fn send_events(&self, n: usize, event_id: u32) {
        let ingest = self.app.token(self.sub).await;
        self.app.post_n(&ingest, n, event_id).await;
    }

    async fn notify(&self) {
        self.app
            .state
            .notifier()
            .run_once_at(chrono::Utc::now())
            .await
            .unwrap();
    }

    async fn forward(&self) {
        for _ in 0..4 {
            self.app.state.forwarder().forward_once().await.unwrap();
        }
    }
}

#[tokio::test]
async fn every_destination_receives_every_event_through_its_own_cursor() {
    let s = Setup::two_destinations().await;
    s.send_events(7, 4888).await;
    s.forward().await;
    assert_eq!(s.soc.logs().len(), 7, "SOC got every event once");
    assert_eq!(s.archive.logs().len(), 7, "Archive got every event once");
    // Each intake saw only its own key.
    assert_eq!(
        s.archive.last_headers().unwrap()["dd-api-key"],
        ARCHIVE_KEY,
        "destination 2 sends with its own key"
    );
    let (status, list) = s.call(reqwest::Method::GET, "destinations", None).await;
    assert_eq!(status, 200, "{list}");
    let listed = list["destinations"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{list}");
    assert_eq!(listed[0]["destination_id"], 1);
    assert_eq!(listed[0]["destination_name"], "SOC");
    assert_eq!(listed[1]["destination_name"], "Archive");
    assert_eq!(listed[1]["events_waiting"], 0);
    assert_eq!(listed[1]["state"], "on");
    // `/siem` is the first destination, `/destinations/1` too.
    let (_, first) = s.call(reqwest::Method::GET, "siem", None).await;
    let (_, one) = s.call(reqwest::Method::GET, "destinations/1", None).await;
    assert_eq!(first, one);
    assert_eq!(first["destination_name"], "SOC");
}

#[tokio::test]
async fn a_failing_destination_does_not_hold_back_the_other_and_its_email_names_it() {
    let s = Setup::two_destinations().await;
    // The archive's key is revoked at the intake: that destination alone fails.
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "destinations/2",
            Some(json!({"datadog_api_key": "00000000000000000000000000000000"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.send_events(3, 4888).await;
    s.forward().await;
    assert_eq!(
        s.soc.logs().len(),
        3,
        "the healthy destination keeps flowing"
    );
    assert!(s.archive.logs().is_empty());
    let (_, list) = s.call(reqwest::Method::GET, "destinations", None).await;
    assert_eq!(list["destinations"][0]["state"], "on", "{list}");
    assert_eq!(list["destinations"][1]["state"], "failing", "{list}");
    assert_eq!(list["destinations"][1]["events_waiting"], 3, "{list}");

    s.notify().await;
    let subjects: Vec<String> = sqlx::query_scalar(
        "select subject from notifications where subscription_id = $1 and kind = 'failing'",
    )
    .bind(s.sub)
    .fetch_all(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(
        subjects.len(),
        1,
        "one incident, for the archive: {subjects:?}"
    );
    assert!(
        subjects[0].contains("Archive (Datadog)"),
        "the email names the destination: {subjects:?}"
    );
    let body: String = sqlx::query_scalar(
        "select text_body from notifications where subscription_id = $1 and kind = 'failing'",
    )
    .bind(s.sub)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert!(
        body.contains("destination=2"),
        "the link opens that destination's settings: {body}"
    );
}

#[tokio::test]
async fn each_destination_has_its_own_event_filter_and_pause() {
    let s = Setup::two_destinations().await;
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "destinations/2",
            Some(json!({"send_event_ids": [4888]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s
        .call(reqwest::Method::POST, "destinations/1/pause", None)
        .await;
    assert_eq!(status, 200, "{body}");
    s.send_events(2, 4888).await;
    s.send_events(3, 4887).await;
    s.forward().await;
    assert!(s.soc.logs().is_empty(), "the first destination is paused");
    let ids: Vec<i64> = s
        .archive
        .logs()
        .iter()
        .map(|l| l["EventID"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![4888, 4888],
        "the archive's filter sends 4888 only"
    );
    let (_, first) = s.call(reqwest::Method::GET, "siem", None).await;
    assert_eq!(
        first["send_event_ids"].as_array().unwrap().len(),
        cloudpki::domain::events::catalog().len(),
        "the first destination's filter is untouched"
    );
    s.call(reqwest::Method::POST, "siem/resume", None).await;
    s.forward().await;
    assert_eq!(s.soc.logs().len(), 5, "resumed: what was kept is sent");
}

#[tokio::test]
async fn removing_a_destination_counts_what_it_still_owed_and_the_history_says_who() {
    let s = Setup::two_destinations().await;
    s.call(reqwest::Method::POST, "destinations/2/pause", None)
        .await;
    s.send_events(4, 4888).await;
    s.forward().await;
    let (status, body) = s
        .call(reqwest::Method::DELETE, "destinations/2", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events_not_sent"], 4, "{body}");
    let (status, _) = s.call(reqwest::Method::GET, "destinations/2", None).await;
    assert_eq!(status, 404, "gone");
    let (_, list) = s.call(reqwest::Method::GET, "destinations", None).await;
    assert_eq!(list["destinations"].as_array().unwrap().len(), 1);
    let removed: String = sqlx::query_scalar(
        "select user_email || ': ' || (changes->>0) || '; ' || (changes->>1)
         from siem_settings_history where subscription_id = $1 and outcome = 'removed'",
    )
    .bind(s.sub)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert!(
        removed.starts_with("admin@example.com: Removed destination Archive (Datadog); 4 event(s)"),
        "{removed}"
    );
    // A button pressed on its page as it went records nothing under its number.
    let admin: Uuid = sqlx::query_scalar("select id from users where email = 'admin@example.com'")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    let two = cloudpki::domain::destination::DestinationKey::new(
        s.sub,
        cloudpki::domain::destination::DestinationNo::parse("2").unwrap(),
    );
    cloudpki::store::siem::record_history(
        &s.app.pool,
        two,
        admin,
        "admin@example.com",
        "paused",
        &["Export paused".to_owned()],
    )
    .await
    .unwrap();
    let rows: Vec<String> = sqlx::query_scalar(
        "select outcome from siem_settings_history where subscription_id = $1 and destination = 2
         and outcome <> 'added' order by id",
    )
    .bind(s.sub)
    .fetch_all(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec!["paused", "removed"],
        "the removal is its last word"
    );
    // Nothing of it is left behind, and its number is never reused.
    for table in [
        "siem_provider_fields",
        "siem_secrets",
        "delivery_destinations",
        "delivery_parked",
    ] {
        let left: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} where subscription_id = $1 and destination = 2"
        ))
        .bind(s.sub)
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "destinations",
            Some(datadog("Archive again", &s.archive, ARCHIVE_KEY)),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["destination_id"], 3, "numbers are not reused");
    // The first destination cannot be removed.
    let (status, body) = s
        .call(reqwest::Method::DELETE, "destinations/1", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("switch Send Audit Logs to SIEM off"));
}

#[tokio::test]
async fn a_sixth_destination_is_refused_with_the_limit() {
    let s = Setup::two_destinations().await;
    for n in 3..=5 {
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                "destinations",
                Some(datadog(&format!("Copy {n}"), &s.archive, ARCHIVE_KEY)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "destinations",
            Some(datadog("One too many", &s.archive, ARCHIVE_KEY)),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("already has 5 destinations"),
        "{body}"
    );
}

#[tokio::test]
async fn destination_paths_are_checked_and_invalid_names_are_explained() {
    let s = Setup::two_destinations().await;
    for path in ["destinations/9", "destinations/0", "destinations/x"] {
        let (status, _) = s.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "destinations/2",
            Some(json!({"destination_name": "x".repeat(61)})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"]["destination_name"]
        .as_str()
        .unwrap()
        .contains("at most 60"));
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "destinations/2",
            Some(json!({"destination_id": 1})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"]["destination_id"].is_string(), "{body}");
    // A token limited to another subscription does not see these destinations.
    let other = s.app.create_subscription("Fabrikam").await;
    let (status, _) = s
        .app
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/subscriptions/{other}/destinations"),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(status, 404, "not a member");
}

#[tokio::test]
async fn secrets_of_an_added_destination_are_sealed_for_that_destination() {
    let s = Setup::two_destinations().await;
    // The sealed key of destination 2 does not open as destination 1's (its associated data
    // names the destination): copying the row across does not make it usable.
    sqlx::query(
        "update siem_secrets d set key_id = s.key_id, nonce = s.nonce, ciphertext = s.ciphertext
         from siem_secrets s
         where d.subscription_id = $1 and d.destination = 1 and s.subscription_id = $1
           and s.destination = 2 and d.name = s.name and d.provider = s.provider",
    )
    .bind(s.sub)
    .execute(&s.app.pool)
    .await
    .unwrap();
    s.send_events(1, 4888).await;
    s.forward().await;
    assert!(s.soc.logs().is_empty(), "the copied seal does not open");
    assert_eq!(s.archive.logs().len(), 1);
    let (_, list) = s.call(reqwest::Method::GET, "destinations", None).await;
    assert_eq!(list["destinations"][0]["state"], "failing", "{list}");
}

#[tokio::test]
async fn the_events_page_and_the_metrics_show_each_destination_state() {
    let s = Setup::two_destinations().await;
    s.call(
        reqwest::Method::PATCH,
        "destinations/2",
        Some(json!({"send_event_ids": [4888]})),
    )
    .await;
    s.send_events(1, 4887).await;
    s.forward().await;
    let client = crate::support::new_client();
    crate::support::login_with(&client, &s.app.base_url, "admin@example.com", PASSWORD).await;
    let events = |query: &'static str| {
        let client = client.clone();
        let url = s
            .app
            .url(&format!("/subscriptions/{}/events{query}", s.sub));
        async move { crate::support::page_with(&client, &url).await }
    };
    let first = events("").await;
    let states = crate::support::texts(&first, ".event-state");
    assert_eq!(states, vec!["delivered"], "destination 1 sends every event");
    assert!(
        first.contains("id=\"destination-choices\""),
        "two destinations: a choice"
    );
    assert!(
        first.contains("the current destination (SOC (Datadog))"),
        "{first}"
    );
    let second = events("?destination=2").await;
    let states = crate::support::texts(&second, ".event-state");
    assert_eq!(
        states,
        vec!["not sent (filtered)"],
        "destination 2's filter"
    );
    assert!(second.contains("Archive (Datadog)"));
    let missing = client
        .get(
            s.app
                .url(&format!("/subscriptions/{}/events?destination=7", s.sub)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let url = s.app.metrics_url().await;
    let scrape = reqwest::get(&url).await.unwrap().text().await.unwrap();
    for destination in ["1", "2"] {
        let label = format!("destination=\"{destination}\"");
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with("cloudpki_backlog_events") && l.contains(&label)),
            "{scrape}"
        );
    }
}

#[tokio::test]
async fn credential_reminders_name_each_destination_and_reach_every_subscription() {
    let s = Setup::two_destinations().await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(5))
        .date_naive()
        .to_string();
    // The same key and date on both destinations, and on another subscription of the same
    // administrator: each gets its own reminder.
    let other = s.app.create_subscription("Fabrikam PKI").await;
    let admin: Uuid = sqlx::query_scalar("select id from users where email = 'admin@example.com'")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    s.app.add_member(admin, other, "admin").await;
    for path in [
        format!("/api/v1/subscriptions/{}/siem", s.sub),
        format!("/api/v1/subscriptions/{}/destinations/2", s.sub),
        format!("/api/v1/subscriptions/{other}/siem"),
    ] {
        let mut body = datadog("Archive", &s.archive, ARCHIVE_KEY);
        body["datadog_api_key_expires_on"] = json!(expires);
        if path.ends_with("/siem") {
            body["destination_name"] = Value::Null;
        }
        let (status, answer) = s
            .app
            .call(reqwest::Method::PUT, &path, Some(&s.token), Some(body))
            .await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    s.notify().await;
    let mut subjects: Vec<String> = sqlx::query_scalar(
        "select subject from notifications where kind = 'credential_expiry' order by subject",
    )
    .fetch_all(&s.app.pool)
    .await
    .unwrap();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "The Archive (Datadog) API key of Contoso PKI expires in 5 days",
            "The Datadog API key of Contoso PKI expires in 5 days",
            "The Datadog API key of Fabrikam PKI expires in 5 days",
        ],
        "one reminder per destination and subscription"
    );
}

#[tokio::test]
async fn test_connection_and_replay_act_on_the_destination_they_are_pressed_for() {
    let s = Setup::two_destinations().await;
    let client = crate::support::new_client();
    crate::support::login_with(&client, &s.app.base_url, "admin@example.com", PASSWORD).await;
    let page_url = s
        .app
        .url(&format!("/subscriptions/{}/settings?destination=2", s.sub));
    let page = crate::support::page_with(&client, &page_url).await;
    assert_eq!(
        crate::support::texts(&page, "#destination-title"),
        vec!["Archive (Datadog)"]
    );
    assert!(
        page.contains(&format!("/subscriptions/{}/events?destination=2", s.sub)),
        "the Events link shows this destination's states"
    );
    let csrf = crate::support::csrf_token(&page);
    let url = s.archive.base_url();
    let tested = client
        .post(&page_url)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("action", "test"),
            ("siem_enabled", "on"),
            ("provider", "datadog"),
            ("datadog_site", "custom"),
            ("datadog_url", url.as_str()),
            ("destination_name", "Archive"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tested.status(), 200);
    let answer = tested.text().await.unwrap();
    assert!(
        answer.contains("Datadog accepted the test log"),
        "the stored key of destination 2 was used: {answer}"
    );
    assert_eq!(
        s.archive.logs().len(),
        1,
        "the test log went to the archive"
    );
    assert!(s.soc.logs().is_empty(), "and not to the SOC");
    let tested_rows: Vec<i16> = sqlx::query_scalar(
        "select destination from siem_settings_history where subscription_id = $1 and outcome = 'tested'",
    )
    .bind(s.sub)
    .fetch_all(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(tested_rows, vec![2], "recorded in destination 2's history");

    // Replay resends to destination 2 only.
    s.send_events(2, 4888).await;
    s.forward().await;
    let (soc_before, archive_before) = (s.soc.logs().len(), s.archive.logs().len());
    let from = (chrono::Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "destinations/2/replay",
            Some(json!({"replay_from": from, "replay_to": to})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["events"], 2, "{body}");
    s.forward().await;
    assert_eq!(
        s.archive.logs().len(),
        archive_before + 2,
        "resent to the archive"
    );
    assert_eq!(s.soc.logs().len(), soc_before, "the SOC got nothing again");
}

#[tokio::test]
async fn a_hung_destination_never_delays_a_sparse_tenants_other_destination() {
    use std::time::Duration;
    let overrides = cloudpki::app::Overrides {
        siem_timeouts: Some(cloudpki::siem::egress::HttpTimeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(60),
        }),
        forwarder_sweep: Some(Duration::from_millis(100)),
        ..cloudpki::app::Overrides::default()
    };
    let app = TestApp::spawn_with_overrides(crate::support::test_env(), overrides).await;
    let s = Setup::two_destinations_on(app).await;
    // The archive now answers nothing: it accepts the connection and holds it.
    let (hung, holder) = crate::support::hung_listener().await;
    let hung_url = format!("http://{hung}");
    let (status, body) = s
        .call(
            reqwest::Method::PATCH,
            "destinations/2",
            Some(json!({"datadog_url": hung_url, "datadog_api_key": ARCHIVE_KEY})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(s.app.state.forwarder().run(stop));
    // One event at a time, as a quiet subscription records them.
    let ingest = s.app.token(s.sub).await;
    for n in 1..=4 {
        s.app.post_n(&ingest, 1, 4888).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while s.soc.logs().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "event {n} waited for the hung destination"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    assert!(s.archive.logs().is_empty());
    stop_tx.send(true).unwrap();
    running.abort();
    holder.abort();
}
