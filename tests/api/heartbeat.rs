//! The export heartbeat (DESIGN.md): every `CLOUDPKI_HEARTBEAT_SECONDS` each enabled destination
//! receives a log with `EventID` 1, "Export heartbeat" and `LastSequence`, so the SIEM can alert
//! on silence and on a gap at the end of the log.

use crate::support::{fake_datadog::FakeDatadog, TestApp};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn heartbeats(intake: &FakeDatadog) -> Vec<Value> {
    intake
        .logs()
        .into_iter()
        .filter(|l| l["EventID"] == 1)
        .collect()
}

async fn setup(events: usize) -> (TestApp, uuid::Uuid, FakeDatadog) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    if events > 0 {
        let body: Vec<Value> = (0..events).map(|_| json!({"event_id": 4888})).collect();
        assert_eq!(
            app.post_events(&token, &Value::Array(body)).await.status(),
            202
        );
        app.state.forwarder().forward_once().await.unwrap();
    }
    (app, sub, intake)
}

#[tokio::test]
async fn an_enabled_destination_gets_one_heartbeat_per_period_with_the_latest_sequence() {
    let (app, sub, intake) = setup(3).await;
    let f = app.state.forwarder();
    let now = Utc::now();
    // The first pass schedules the first heartbeat a period (300 s by default) from now.
    assert_eq!(f.heartbeat_once_at(now).await.unwrap(), 0);
    assert_eq!(
        f.heartbeat_once_at(now + Duration::seconds(299))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.heartbeat_once_at(now + Duration::seconds(301))
            .await
            .unwrap(),
        1
    );
    let beats = heartbeats(&intake);
    assert_eq!(beats.len(), 1);
    let beat = &beats[0];
    assert_eq!(beat["EventSummary"], "Export heartbeat");
    assert_eq!(beat["status"], "info");
    assert_eq!(beat["service"], "EZCA");
    assert_eq!(beat["LastSequence"], 3);
    assert_eq!(beat["SubscriptionId"], sub.to_string());
    assert!(
        beat.get("Hash").is_none(),
        "a heartbeat is not part of the chain"
    );
    // Nothing more within the period; the next one a period later.
    assert_eq!(
        f.heartbeat_once_at(now + Duration::seconds(400))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.heartbeat_once_at(now + Duration::seconds(602))
            .await
            .unwrap(),
        1
    );
    assert_eq!(heartbeats(&intake).len(), 2);
}

#[tokio::test]
async fn two_workers_send_one_heartbeat_per_period_between_them() {
    let (app, _sub, intake) = setup(1).await;
    let (a, b) = (app.state.forwarder(), app.state.forwarder());
    let now = Utc::now();
    a.heartbeat_once_at(now).await.unwrap();
    let later = now + Duration::seconds(301);
    let (x, y) = tokio::join!(a.heartbeat_once_at(later), b.heartbeat_once_at(later));
    assert_eq!(x.unwrap() + y.unwrap(), 1);
    assert_eq!(heartbeats(&intake).len(), 1);
}

#[tokio::test]
async fn a_switched_off_destination_gets_no_heartbeat() {
    let (app, sub, intake) = setup(1).await;
    let f = app.state.forwarder();
    let now = Utc::now();
    f.heartbeat_once_at(now).await.unwrap();
    app.configure_datadog(sub, &intake.base_url(), KEY, false)
        .await;
    assert_eq!(
        f.heartbeat_once_at(now + Duration::seconds(301))
            .await
            .unwrap(),
        0
    );
    assert!(heartbeats(&intake).is_empty());
}

#[tokio::test]
async fn a_heartbeat_reveals_events_the_siem_never_got() {
    // Two events are recorded but not delivered yet: the heartbeat carries the latest
    // Sequence all the same, so the SIEM sees that 3 and 4 have not arrived.
    let (app, sub, intake) = setup(2).await;
    let token = app.token(sub).await;
    let body = json!([{"event_id": 4888}, {"event_id": 4887}]);
    assert_eq!(app.post_events(&token, &body).await.status(), 202);
    let f = app.state.forwarder();
    let now = Utc::now();
    f.heartbeat_once_at(now).await.unwrap();
    f.heartbeat_once_at(now + Duration::seconds(301))
        .await
        .unwrap();
    let beat = &heartbeats(&intake)[0];
    assert_eq!(beat["LastSequence"], 4);
    let delivered: Vec<i64> = intake
        .logs()
        .iter()
        .filter(|l| l["EventID"] != 1)
        .map(|l| l["Sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(
        delivered,
        [1, 2],
        "events 3 and 4 are still owed: a gap the SIEM can see"
    );
}

#[tokio::test]
async fn the_events_page_offers_the_heartbeat_and_gap_monitors_for_this_subscription() {
    let (app, sub, _intake) = setup(0).await;
    app.create_user(
        "r@example.com",
        "correct horse battery staple",
        sub,
        "reader",
    )
    .await;
    app.login("r@example.com", "correct horse battery staple")
        .await;
    let page = app.get_page(&format!("/subscriptions/{sub}/events")).await;
    let doc = scraper::Html::parse_document(&page);
    let value = |id: &str| {
        let sel = scraper::Selector::parse(&format!("input#{id}")).unwrap();
        doc.select(&sel)
            .next()
            .and_then(|e| e.value().attr("value"))
            .unwrap_or_default()
            .to_owned()
    };
    let silence = value("monitor-heartbeat");
    assert!(
        silence.contains(&format!("@SubscriptionId:{sub} @EventID:1"))
            && silence.contains("last(\"15m\") < 1"),
        "{silence}"
    );
    let gap = value("monitor-gap");
    assert!(
        gap.contains("@LastSequence") && gap.contains("@Sequence") && gap.contains("a - b > 0"),
        "{gap}"
    );
}
