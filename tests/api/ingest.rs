//! The ingestion API: `POST /api/v1/events`.

use crate::support;
use crate::support::TestApp;
use serde_json::{json, Value};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn events_are_accepted_and_recorded_even_when_export_is_off() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let r = app
        .post_events(
            &token,
            &json!([{"event_id": 4888, "actor": "alice@example.com"}, {"event_id": 12}]),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": 2, "duplicates": 0})
    );
    assert_eq!(count(&app, "select count(*) from audit_events").await, 2);
    assert_eq!(
        app.queued().await,
        0,
        "no destination enabled, nothing owed"
    );
    assert_eq!(
        count(&app, "select last_seq from subscriptions").await,
        2,
        "numbered in the subscription's log all the same"
    );
}

#[tokio::test]
async fn an_event_gets_one_delivery_entry_per_enabled_destination_in_the_same_commit() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    app.configure_datadog(sub, "https://http-intake.logs.datadoghq.com", KEY, true)
        .await;
    let token = app.token(sub).await;
    let r = app
        .post_events(
            &token,
            &json!({"event_id": 19, "details": {"ca": "Issuing CA 1"}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.queued().await, 1);
    let details: Value = sqlx::query_scalar("select details from audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(details, json!({"ca": "Issuing CA 1"}));
}

#[tokio::test]
async fn retrying_the_same_ids_is_idempotent() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    app.configure_datadog(sub, "https://http-intake.logs.datadoghq.com", KEY, true)
        .await;
    let token = app.token(sub).await;
    let body =
        json!([{"id": Uuid::new_v4(), "event_id": 4870}, {"id": Uuid::new_v4(), "event_id": 4887}]);
    assert_eq!(
        app.post_events(&token, &body)
            .await
            .json::<Value>()
            .await
            .unwrap()["accepted"],
        2
    );
    let again = app.post_events(&token, &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 2})
    );
    assert_eq!(count(&app, "select count(*) from audit_events").await, 2);
    assert_eq!(app.queued().await, 2, "no second delivery entry");
}

#[tokio::test]
async fn a_batch_with_one_bad_event_stores_nothing_and_names_every_bad_field() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let r = app
        .post_events(&token, &json!([{"event_id": 4888}, {"event_id": 9999, "occurred_at": "last tuesday"}, {"event_id": "12"}]))
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["[1].event_id", "[1].occurred_at", "[2].event_id"]
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("4888"),
        "lists the catalog: {body}"
    );
    assert_eq!(count(&app, "select count(*) from audit_events").await, 0);
}

#[tokio::test]
async fn an_id_is_an_idempotency_key_within_its_subscription_only_and_reveals_nothing_about_others()
{
    let app = TestApp::spawn().await;
    let a = app.create_subscription("A").await;
    let b = app.create_subscription("B").await;
    let id = Uuid::new_v4();
    let body = json!({"id": id, "event_id": 92});
    assert_eq!(
        app.post_events(&app.token(a).await, &body).await.status(),
        202
    );
    let r = app.post_events(&app.token(b).await, &body).await;
    assert_eq!(r.status(), 202, "B cannot tell that A used this id");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0})
    );
    let again = app.post_events(&app.token(b).await, &body).await;
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": 1})
    );
    assert_eq!(count(&app, "select count(*) from audit_events").await, 2);
    assert_eq!(
        count(&app, "select count(*) from audit_events where seq = 1").await,
        2,
        "each subscription numbers its own log"
    );
}

#[tokio::test]
async fn details_over_64_kib_are_refused_with_413_naming_the_event_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let big = "x".repeat(64 * 1024);
    let r = app
        .post_events(
            &token,
            &json!([{"event_id": 12}, {"event_id": 4887, "details": {"blob": big}}]),
        )
        .await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "[1].details", "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("65536"));
    assert_eq!(count(&app, "select count(*) from audit_events").await, 0);

    let fits = "x".repeat(60 * 1024);
    let r = app
        .post_events(
            &token,
            &json!({"event_id": 4887, "details": {"blob": fits}}),
        )
        .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn a_nul_character_in_details_is_a_400_not_a_500() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    for details in [
        json!({"note": "a\u{0}b"}),
        json!({"a\u{0}": 1}),
        json!({"list": ["ok", "\u{0}"]}),
    ] {
        let r = app
            .post_events(&token, &json!({"event_id": 12, "details": details}))
            .await;
        assert_eq!(r.status(), 400, "{details}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "details");
        assert!(body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("NUL"));
    }
    assert_eq!(count(&app, "select count(*) from audit_events").await, 0);
}

#[tokio::test]
async fn a_bad_token_is_refused_before_a_huge_body_is_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Announce 16 MB but send none of it: the answer must not wait for the body.
    stream
        .write_all(
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Type: application/json\r\nContent-Length: 16000000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    tokio::time::timeout(
        std::time::Duration::from_secs(3),
        stream.read_exact(&mut answer),
    )
    .await
    .expect("answered without the body")
    .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
}

#[tokio::test]
async fn missing_unknown_and_revoked_tokens_get_401() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let r = app
        .client
        .post(app.url("/api/v1/events"))
        .json(&json!({"event_id": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(
        app.post_events("not-a-token", &json!({"event_id": 12}))
            .await
            .status(),
        401
    );
    let token = cloudpki::crypto::random_token();
    let id = cloudpki::store::events::create_token(
        &app.pool,
        sub,
        &cloudpki::crypto::token_digest(&token),
    )
    .await
    .unwrap();
    assert_eq!(
        app.post_events(&token, &json!({"event_id": 12}))
            .await
            .status(),
        202
    );
    assert!(cloudpki::store::events::revoke_token(&app.pool, id)
        .await
        .unwrap());
    assert_eq!(
        app.post_events(&token, &json!({"event_id": 12}))
            .await
            .status(),
        401
    );
    let stored: i64 = count(
        &app,
        "select count(*) from api_tokens where token_digest is not null",
    )
    .await;
    assert_eq!(stored, 1);
    let plain: i64 = sqlx::query_scalar("select count(*) from api_tokens where encode(token_digest, 'escape') like '%' || $1 || '%'")
        .bind(&token)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(plain, 0, "the token is stored hashed");
}

#[tokio::test]
async fn more_than_a_thousand_events_is_413() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let many: Vec<Value> = (0..1001).map(|_| json!({"event_id": 4872})).collect();
    let r = app.post_events(&token, &Value::Array(many)).await;
    assert_eq!(r.status(), 413);
    assert_eq!(count(&app, "select count(*) from audit_events").await, 0);
    let thousand: Vec<Value> = (0..1000).map(|_| json!({"event_id": 4872})).collect();
    assert_eq!(
        app.post_events(&token, &Value::Array(thousand))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused_with_a_reason() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let r = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
}

#[tokio::test]
async fn the_events_page_lists_the_catalog_and_the_alert_queries_for_the_subscriptions_site() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    app.create_user(
        "r@example.com",
        "correct horse battery staple",
        sub,
        "reader",
    )
    .await;
    app.configure_datadog(sub, "https://http-intake.logs.datadoghq.eu", KEY, false)
        .await;
    app.login("r@example.com", "correct horse battery staple")
        .await;
    let page = app.get_page(&format!("/subscriptions/{sub}/events")).await;
    for id in [
        "4882", "92", "23", "19", "28", "22", "12", "4888", "4870", "4872", "4887",
    ] {
        assert!(support::texts(&page, "td").contains(&id.to_owned()), "{id}");
    }
    let queries: Vec<String> = {
        let doc = scraper::Html::parse_document(&page);
        let sel = scraper::Selector::parse("input.query").unwrap();
        doc.select(&sel)
            .filter_map(|e| e.value().attr("value").map(str::to_owned))
            .collect()
    };
    for q in [
        "service:EZCA @EventID:4888",
        "service:EZCA @EventID:4882",
        "service:EZCA @EventID:92",
        "service:EZCA @EventID:19",
    ] {
        assert!(queries.contains(&q.to_owned()), "{q} in {queries:?}");
    }
    assert!(
        page.contains("https://app.datadoghq.eu/logs?query="),
        "links open the EU1 Log Explorer"
    );
    let other = app.create_subscription("Other").await;
    assert_eq!(
        app.get(&format!("/subscriptions/{other}/events"))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn while_the_database_is_unreachable_the_api_answers_503_with_retry_after_not_500() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    app.create_user(
        "admin@example.com",
        "correct horse battery staple",
        sub,
        "admin",
    )
    .await;
    assert_eq!(
        app.login("admin@example.com", "correct horse battery staple")
            .await
            .status(),
        303
    );
    app.pool.close().await;
    let r = app.post_events(&token, &json!({"event_id": 12})).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("nothing was recorded"));
    let page = app.get("/subscriptions").await;
    assert_eq!(page.status(), 503, "pages too");
}
