//! What an administrator controls about the export on the settings page: the event filter per
//! destination (`send_event_ids`) and Pause / Resume export.

use crate::support;
use crate::support::{csrf_token, fake_datadog::FakeDatadog, location, texts, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    app: TestApp,
    sub: Uuid,
    path: String,
    intake: FakeDatadog,
    token: String,
}

async fn fixture() -> Fixture {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let intake = FakeDatadog::start(KEY).await;
    let token = app.token(sub).await;
    let path = format!("/subscriptions/{sub}/settings");
    let f = Fixture {
        app,
        sub,
        path,
        intake,
        token,
    };
    let r = f.save(&[]).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    f
}

impl Fixture {
    /// Saves Datadog settings with these event filter boxes ticked (none given: all).
    async fn save(&self, ticked: &[&str]) -> reqwest::Response {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        let url = self.intake.base_url();
        let all: Vec<String> = cloudpki::domain::events::catalog()
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        let ticked: Vec<&str> = if ticked.is_empty() {
            all.iter().map(String::as_str).collect()
        } else {
            ticked.to_vec()
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("csrf_token", &csrf),
            ("action", "save"),
            ("siem_enabled", "on"),
            ("provider", "datadog"),
            ("datadog_site", "custom"),
            ("datadog_url", &url),
            ("datadog_api_key", KEY),
            ("send_event_ids_shown", "1"),
        ];
        for id in &ticked {
            form.push(("send_event_ids", id));
        }
        self.app.post_form(&self.path, &form).await
    }

    async fn record(&self, event_ids: &[u32]) {
        let body: Vec<Value> = event_ids.iter().map(|id| json!({"event_id": id})).collect();
        assert_eq!(
            self.app
                .post_events(&self.token, &Value::Array(body))
                .await
                .status(),
            202
        );
    }

    async fn press(&self, button: &str) -> reqwest::Response {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        self.app
            .post_form(
                &format!("{}/{button}", self.path),
                &[("csrf_token", csrf.as_str())],
            )
            .await
    }

    fn delivered_ids(&self) -> Vec<i64> {
        self.intake
            .logs()
            .iter()
            .filter(|l| l["EventID"].as_i64().is_some_and(|id| id > 1))
            .map(|l| l["EventID"].as_i64().unwrap())
            .collect()
    }

    async fn totals(&self) -> (i64, i64, i64) {
        sqlx::query_as(
            "select d.delivered_total, d.filtered_total, s.last_seq - d.cursor
             from delivery_destinations d join subscriptions s on s.id = d.subscription_id
             where d.subscription_id = $1",
        )
        .bind(self.sub)
        .fetch_one(&self.app.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn every_event_is_ticked_by_default_grouped_by_criticality() {
    let f = fixture().await;
    let page = f.app.get_page(&f.path).await;
    let doc = scraper::Html::parse_document(&page);
    let sel = scraper::Selector::parse("input[name=send_event_ids]").unwrap();
    let boxes: Vec<_> = doc.select(&sel).collect();
    assert_eq!(boxes.len(), 11);
    assert!(boxes.iter().all(|b| b.value().attr("checked").is_some()));
    let legends = texts(&page, "fieldset.filter-group legend");
    assert_eq!(
        legends,
        ["High criticality", "Medium criticality", "Low criticality"]
    );
}

#[tokio::test]
async fn filtered_events_are_counted_as_not_sent_and_never_as_delivered() {
    let f = fixture().await;
    let r = f.save(&["4888", "4887"]).await;
    assert_eq!(r.status(), 303);
    let page = f.app.get_page(&f.path).await;
    let doc = scraper::Html::parse_document(&page);
    let checked = scraper::Selector::parse("input[name=send_event_ids][checked]").unwrap();
    let ticked: Vec<&str> = doc
        .select(&checked)
        .filter_map(|b| b.value().attr("value"))
        .collect();
    assert_eq!(ticked, ["4888", "4887"]);

    f.record(&[4888, 12, 4887, 92, 12]).await;
    let report = f.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 2);
    assert_eq!(report.filtered, 3);
    assert_eq!(f.delivered_ids(), [4888, 4887]);
    // The cursor passed over the filtered events: nothing is owed.
    assert_eq!(f.totals().await, (2, 3, 0));
    let page = f.app.get_page(&f.path).await;
    assert_eq!(texts(&page, "#filtered-total"), ["3"]);
    let history = texts(&page, "table.history td");
    assert!(
        history
            .iter()
            .any(|h| h.contains("Events to send changed from every event to 2 of 11 events")),
        "{history:?}"
    );
}

#[tokio::test]
async fn ticking_no_event_is_refused_with_a_plain_message_and_nothing_is_saved() {
    let f = fixture().await;
    let page = f.app.get_page(&f.path).await;
    let csrf = csrf_token(&page);
    let url = f.intake.base_url();
    let r = f
        .app
        .post_form(
            &f.path,
            &[
                ("csrf_token", csrf.as_str()),
                ("action", "save"),
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "custom"),
                ("datadog_url", url.as_str()),
                ("send_event_ids_shown", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(
        texts(&page, "#event-filter-error")
            .concat()
            .contains("Tick at least one event"),
        "{page}"
    );
    // An id outside the catalog is refused too.
    let r = f.save(&["4888", "9999"]).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("9999"));
}

#[tokio::test]
async fn paused_export_keeps_and_counts_events_and_resume_sends_them() {
    let f = fixture().await;
    let r = f.press("pause").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).ends_with("?paused=1#health"));
    let page = f.app.get_page(&format!("{}?paused=1", f.path)).await;
    assert_eq!(texts(&page, "#health-state"), ["Paused"]);
    assert!(texts(&page, "[role=status]")
        .concat()
        .contains("Export paused"));
    assert_eq!(texts(&page, "#resume-export"), ["Resume export"]);

    f.record(&[4888, 4887, 12]).await;
    let report = f.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 0);
    assert!(f.delivered_ids().is_empty());
    assert_eq!(f.totals().await, (0, 0, 3), "recorded, kept and counted");
    let page = f.app.get_page(&f.path).await;
    assert_eq!(
        texts(&page, "#events-waiting").concat().split(' ').next(),
        Some("3")
    );
    assert!(
        texts(&page, "#paused-expiry")
            .concat()
            .contains("The oldest kept event expires on"),
        "{page}"
    );
    // Saving the settings does not lift a pause an administrator asked for.
    assert_eq!(f.save(&[]).await.status(), 303);
    assert_eq!(
        f.app
            .state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .delivered,
        0
    );

    let r = f.press("resume").await;
    assert_eq!(r.status(), 303);
    let report = f.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.delivered, 3);
    assert_eq!(f.delivered_ids(), [4888, 4887, 12]);
    let page = f.app.get_page(&f.path).await;
    assert_eq!(texts(&page, "#pause-export"), ["Pause export"]);
    let history = texts(&page, "table.history td");
    assert!(
        history.iter().any(|h| h.contains("Export paused")),
        "{history:?}"
    );
    assert!(
        history.iter().any(|h| h.contains("Export resumed")),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_reader_cannot_pause_and_the_attempt_is_recorded() {
    let f = fixture().await;
    f.app
        .create_user("reader@example.com", PASSWORD, f.sub, "reader")
        .await;
    let reader = support::new_client();
    support::login_with(&reader, &f.app.base_url, "reader@example.com", PASSWORD).await;
    let page = support::page_with(&reader, &f.app.url(&f.path)).await;
    let doc = scraper::Html::parse_document(&page);
    let sel = scraper::Selector::parse("#pause-export[disabled]").unwrap();
    assert!(doc.select(&sel).next().is_some(), "disabled for readers");
    let csrf = csrf_token(&page);
    let r = reader
        .post(f.app.url(&format!("{}/pause", f.path)))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (paused,): (Option<String>,) = sqlx::query_as(
        "select paused_reason from delivery_destinations where subscription_id = $1",
    )
    .bind(f.sub)
    .fetch_one(&f.app.pool)
    .await
    .unwrap();
    assert_eq!(paused, None);
    let (denied,): (i64,) = sqlx::query_as(
        "select count(*) from siem_settings_history
         where subscription_id = $1 and outcome = 'denied' and user_email = 'reader@example.com'",
    )
    .bind(f.sub)
    .fetch_one(&f.app.pool)
    .await
    .unwrap();
    assert_eq!(denied, 1);
}

fn local(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

impl Fixture {
    async fn replay(&self, from: &str, to: &str) -> reqwest::Response {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        self.app
            .post_form(
                &format!("{}/replay", self.path),
                &[
                    ("csrf_token", csrf.as_str()),
                    ("replay_from", from),
                    ("replay_to", to),
                ],
            )
            .await
    }
}

#[tokio::test]
async fn a_replay_resends_the_window_with_the_same_sequence_hash_and_uuid() {
    let f = fixture().await;
    f.record(&[4888, 4887, 12, 92, 4870]).await;
    assert_eq!(
        f.app
            .state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .delivered,
        5
    );
    // Recorded after the replay is asked for: not part of it, sent once by the log.
    let now = chrono::Utc::now();
    let r = f
        .replay(
            &local(now - chrono::Duration::hours(1)),
            &local(now + chrono::Duration::minutes(1)),
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).ends_with("?replay=5#health"),
        "{}",
        location(&r)
    );
    let page = f.app.get_page(&format!("{}?replay=5", f.path)).await;
    assert!(texts(&page, "[role=status]")
        .concat()
        .contains("Replay started: 5 event(s)"));
    assert!(texts(&page, "#replay-progress")
        .concat()
        .contains("0 of 5 event(s) resent"));

    let report = f.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(report.replayed, 5);
    assert_eq!(report.delivered, 0, "a replay is not new delivery");
    let logs = f.intake.logs();
    assert_eq!(logs.len(), 10);
    let key = |l: &Value| {
        (
            l["Sequence"].clone(),
            l["Hash"].clone(),
            l["PrevHash"].clone(),
            l["EventUuid"].clone(),
        )
    };
    let (first, again) = logs.split_at(5);
    assert_eq!(
        first.iter().map(key).collect::<Vec<_>>(),
        again.iter().map(key).collect::<Vec<_>>()
    );
    let page = f.app.get_page(&f.path).await;
    assert!(texts(&page, "#replay-progress")
        .concat()
        .contains("Last replay done: 5 event(s) resent (Sequence 1..5)"));
    let history = texts(&page, "table.history td");
    assert!(
        history.iter().any(|h| h.contains("Replay of 5 event(s)")),
        "{history:?}"
    );
    // Nothing more to replay.
    assert_eq!(
        f.app
            .state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .replayed,
        0
    );
}

#[tokio::test]
async fn a_replay_window_is_checked_and_explained() {
    let f = fixture().await;
    f.record(&[4888, 4887, 12, 92, 4870]).await;
    let now = chrono::Utc::now();
    // The end before the start, named at its field.
    let r = f
        .replay(&local(now), &local(now - chrono::Duration::hours(1)))
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(texts(&page, "#replay_to-error")
        .concat()
        .contains("after the start"));
    // Nothing delivered yet: nothing to replay (the log sends it anyway).
    let r = f
        .replay(
            &local(now - chrono::Duration::hours(1)),
            &local(now + chrono::Duration::minutes(1)),
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(texts(&r.text().await.unwrap(), "[role=status]")
        .concat()
        .contains("No event recorded in that window has been sent"));
    // More than a replay may resend.
    f.app.state.forwarder().forward_once().await.unwrap();
    let plan = cloudpki::store::delivery::start_replay(
        &f.app.pool,
        cloudpki::domain::destination::DestinationKey::first(f.sub),
        "datadog",
        (
            now - chrono::Duration::hours(1),
            now + chrono::Duration::minutes(1),
        ),
        3,
    )
    .await
    .unwrap();
    assert_eq!(
        plan,
        cloudpki::store::delivery::ReplayPlan::TooMany { events: 5 }
    );
}

#[tokio::test]
async fn retention_still_applies_while_paused_and_the_expiry_is_counted() {
    let f = fixture().await;
    assert_eq!(f.press("pause").await.status(), 303);
    f.record(&[4888, 4887]).await;
    // Fifteen days on, past the 14-day retention: the kept events expire, counted and mailed.
    let later = chrono::Utc::now() + chrono::Duration::days(15);
    let report = f.app.state.notifier().run_once_at(later).await.unwrap();
    assert_eq!(report.expired, 2);
    let (_, _, owed) = f.totals().await;
    assert_eq!(owed, 0);
    let page = f.app.get_page(&f.path).await;
    assert_eq!(texts(&page, "#expired-total"), ["2"]);
}
