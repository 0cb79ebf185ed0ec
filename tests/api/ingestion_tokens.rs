//! The Tokens page: an admin creates a named ingestion token (shown once), the PKI core records
//! events with it, the list shows who created it and when it was last used, and a revoked token
//! is refused.

use crate::support::{csrf_token, input_value, texts, TestApp};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn a_token_created_on_the_page_records_events_until_it_is_revoked() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let path = format!("/subscriptions/{sub}/tokens");
    let page = app.get_page(&path).await;
    assert!(!texts(&page, "#no-tokens").is_empty());

    // A name is required.
    let r = app
        .post_form(&path, &[("csrf_token", &csrf_token(&page)), ("name", " ")])
        .await;
    assert_eq!(r.status(), 422);
    assert!(!texts(&r.text().await.unwrap(), "#token_name-error").is_empty());

    let page = app.get_page(&path).await;
    let r = app
        .post_form(
            &path,
            &[("csrf_token", &csrf_token(&page)), ("name", "Issuing CA 1")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let token = input_value(&r.text().await.unwrap(), "new_ingestion_token").expect("shown once");
    let listed = app.get_page(&path).await;
    assert!(!listed.contains(&token), "shown only once");
    let row = texts(&listed, "#tokens tbody td").join(" | ");
    assert!(row.contains("Issuing CA 1"), "{row}");
    assert!(row.contains("admin@example.com"), "{row}");
    assert!(row.contains("never"), "{row}");

    assert_eq!(
        app.post_events(&token, &json!({"event_id": 4888}))
            .await
            .status(),
        202
    );
    let listed = app.get_page(&path).await;
    assert!(
        !texts(&listed, "#tokens tbody td")
            .iter()
            .any(|t| t == "never"),
        "last used is shown"
    );

    let id: uuid::Uuid =
        sqlx::query_scalar("select id from api_tokens where name = 'Issuing CA 1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let r = app
        .post_form(
            &format!("{path}/revoke"),
            &[
                ("csrf_token", &csrf_token(&listed)),
                ("id", &id.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.post_events(&token, &json!({"event_id": 4888}))
            .await
            .status(),
        401
    );
    assert!(!texts(&app.get_page(&path).await, "#no-tokens").is_empty());
}

#[tokio::test]
async fn readers_cannot_see_or_create_tokens() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    assert_eq!(
        app.login("reader@example.com", PASSWORD).await.status(),
        303
    );
    let path = format!("/subscriptions/{sub}/tokens");
    assert_eq!(app.get(&path).await.status(), 403);
    let settings = app
        .get_page(&format!("/subscriptions/{sub}/settings"))
        .await;
    assert!(!settings.contains(&path), "no link for readers");
    let r = app
        .post_form(
            &path,
            &[("csrf_token", &csrf_token(&settings)), ("name", "mine")],
        )
        .await;
    assert_eq!(r.status(), 403);
    let n: i64 = sqlx::query_scalar("select count(*) from api_tokens where name = 'mine'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
