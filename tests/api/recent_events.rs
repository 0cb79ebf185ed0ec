//! Recent events on the Events page: newest first, paged, filterable by Event ID and
//! criticality, each with its Sequence and its state for the current destination (delivered,
//! waiting, parked with the reason, filtered, paused), from cursor arithmetic.

use crate::support::{fake_datadog::FakeDatadog, texts, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    app: TestApp,
    sub: Uuid,
    token: String,
    intake: FakeDatadog,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    app.login("reader@example.com", PASSWORD).await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    Fixture {
        app,
        sub,
        token,
        intake,
    }
}

impl Fixture {
    async fn record(&self, events: Value) {
        assert_eq!(
            self.app.post_events(&self.token, &events).await.status(),
            202
        );
    }

    async fn page(&self, query: &str) -> String {
        self.app
            .get_page(&format!("/subscriptions/{}/events{query}", self.sub))
            .await
    }
}

/// (Sequence, Event ID, state) of each row of the recent events table.
fn rows(page: &str) -> Vec<(String, String, String)> {
    let doc = scraper::Html::parse_document(page);
    let row = scraper::Selector::parse("table.recent tbody tr").unwrap();
    let cell = scraper::Selector::parse("td").unwrap();
    doc.select(&row)
        .map(|r| {
            let cells: Vec<String> = r
                .select(&cell)
                .map(|c| c.text().collect::<String>().trim().to_owned())
                .collect();
            (cells[0].clone(), cells[1].clone(), cells[6].clone())
        })
        .collect()
}

#[tokio::test]
async fn each_recent_event_shows_its_sequence_and_its_state_for_the_destination() {
    let f = fixture().await;
    // This destination is sent 4888, 4887 and 12 only.
    sqlx::query("update delivery_destinations set send_event_ids = '{4888,4887,12}' where subscription_id = $1")
        .bind(f.sub)
        .execute(&f.app.pool)
        .await
        .unwrap();
    f.intake.reject_logs_with_detail("poison", json!(true));
    f.record(json!([
        {"event_id": 4888},
        {"event_id": 92},
        {"event_id": 4887, "details": {"poison": true}},
        {"event_id": 12}
    ]))
    .await;
    f.app.state.forwarder().forward_once().await.unwrap();
    cloudpki::store::delivery::pause(
        &f.app.pool,
        cloudpki::domain::destination::DestinationKey::first(f.sub),
        "datadog",
        "admin@example.com",
    )
    .await
    .unwrap();
    f.record(json!({"event_id": 4888})).await;

    let page = f.page("").await;
    let rows = rows(&page);
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|(seq, _, state)| (seq.as_str(), state.as_str()))
        .collect();
    assert_eq!(states[0], ("5", "paused: kept, not sent"));
    assert_eq!(states[1], ("4", "delivered"));
    assert_eq!(states[2].0, "3");
    assert!(states[2].1.starts_with("parked: "), "{states:?}");
    assert!(states[2].1.len() > "parked: ".len(), "the reason is shown");
    assert_eq!(states[3], ("2", "not sent (filtered)"));
    assert_eq!(states[4], ("1", "delivered"));
    assert_eq!(rows.len(), 5);

    // Resumed: the paused event is only waiting.
    cloudpki::store::delivery::resume(
        &f.app.pool,
        cloudpki::domain::destination::DestinationKey::first(f.sub),
        "datadog",
    )
    .await
    .unwrap();
    assert_eq!(rows_of(&f.page("").await)[0], "waiting");
}

fn rows_of(page: &str) -> Vec<String> {
    rows(page).into_iter().map(|(_, _, s)| s).collect()
}

#[tokio::test]
async fn recent_events_filter_by_event_id_and_criticality_and_explain_a_bad_filter() {
    let f = fixture().await;
    f.record(json!([
        {"event_id": 4888}, {"event_id": 12}, {"event_id": 92}, {"event_id": 4888}
    ]))
    .await;
    let by_id: Vec<String> = rows(&f.page("?event_id=4888").await)
        .into_iter()
        .map(|(seq, _, _)| seq)
        .collect();
    assert_eq!(by_id, ["4", "1"]);
    let ids_of =
        |page: &str| -> Vec<String> { rows(page).into_iter().map(|(_, id, _)| id).collect() };
    for id in ids_of(&f.page("?criticality=Low").await) {
        let info = cloudpki::domain::events::EventId::parse(id.parse().unwrap())
            .unwrap()
            .info();
        assert_eq!(info.criticality.as_str(), "Low", "{id}");
    }
    // 4888 and 92 are High in the catalog; 12 is not.
    assert_eq!(
        ids_of(&f.page("?criticality=High").await),
        ["4888", "92", "4888"]
    );
    let page = f.page("?event_id=4899").await;
    assert!(texts(&page, "#recent-filter-error")
        .concat()
        .contains("`4899` is not an Event ID of the catalog"));
    assert_eq!(rows(&page).len(), 4, "an unknown id shows every event");
}

#[tokio::test]
async fn recent_events_are_paged_fifty_at_a_time() {
    let f = fixture().await;
    let body: Vec<Value> = (0..55).map(|_| json!({"event_id": 4888})).collect();
    f.record(Value::Array(body)).await;
    let first = f.page("").await;
    let seqs: Vec<String> = rows(&first).into_iter().map(|(s, _, _)| s).collect();
    assert_eq!(seqs.len(), 50);
    assert_eq!(seqs[0], "55");
    assert_eq!(seqs[49], "6");
    let doc = scraper::Html::parse_document(&first);
    let link = doc
        .select(&scraper::Selector::parse("#older-events").unwrap())
        .next()
        .and_then(|a| a.value().attr("href"))
        .unwrap()
        .to_owned();
    let second = f.app.get_page(&link).await;
    let seqs: Vec<String> = rows(&second).into_iter().map(|(s, _, _)| s).collect();
    assert_eq!(seqs, ["5", "4", "3", "2", "1"]);
    assert!(texts(&second, "#older-events").is_empty());
}

#[tokio::test]
async fn filtering_by_a_rare_event_id_reads_by_index_at_a_million_events() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Big").await;
    // A million routine events and one rare one, the oldest.
    sqlx::query(
        "insert into audit_events (subscription_id, seq, id, event_id, occurred_at, recorded_at)
         select $1, g, gen_random_uuid(), case when g = 1 then 4888 else 12 end, now(), now()
         from generate_series(1, 1000000) g",
    )
    .bind(sub)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("analyze audit_events")
        .execute(&app.pool)
        .await
        .unwrap();
    // The High criticality's Event IDs, as the page asks for them.
    let high: Vec<i32> = cloudpki::domain::events::catalog()
        .iter()
        .filter(|e| e.criticality.as_str() == "High")
        .map(|e| e.id.get() as i32)
        .collect();
    for ids in [vec![4888], high] {
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "explain (analyze, costs off) {}",
            cloudpki::store::events::RECENT_FILTERED_SQL
        ))
        .bind(sub)
        .bind("datadog")
        .bind(None::<i64>)
        .bind(&ids)
        .bind(50i64)
        .bind(1i16)
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{ids:?}:\n{plan}");
        let removed: u64 = plan
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Rows Removed by Filter: "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        assert!(
            removed < 1000,
            "{ids:?} walks the log ({removed} rows passed over):\n{plan}"
        );
    }
    sqlx::query("truncate audit_events cascade")
        .execute(&app.pool)
        .await
        .unwrap();
}
