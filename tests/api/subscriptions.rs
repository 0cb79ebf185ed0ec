//! Subscriptions, roles and tenant isolation.

use crate::support::TestApp;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn a_user_sees_only_the_subscriptions_they_belong_to() {
    let app = TestApp::spawn().await;
    let mine = app.create_subscription("Mine").await;
    let theirs = app.create_subscription("Theirs").await;
    app.create_user("me@example.com", PASSWORD, mine, "reader")
        .await;
    app.create_user("them@example.com", PASSWORD, theirs, "admin")
        .await;
    app.login("me@example.com", PASSWORD).await;
    let page = app.get_page("/subscriptions").await;
    assert!(page.contains("Mine"));
    assert!(page.contains(&mine.to_string()));
    assert!(!page.contains("Theirs"));
    assert!(!page.contains(&theirs.to_string()));
}

#[tokio::test]
async fn another_subscription_answers_404_and_never_its_data() {
    let app = TestApp::spawn().await;
    let mine = app.create_subscription("Mine").await;
    let theirs = app.create_subscription("Secret Corp").await;
    app.create_user("me@example.com", PASSWORD, mine, "admin")
        .await;
    app.login("me@example.com", PASSWORD).await;
    let r = app.get(&format!("/subscriptions/{theirs}/settings")).await;
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(!body.contains("Secret Corp"));
    // Same answer as for a subscription that does not exist, or a malformed id.
    let missing = app
        .get(&format!("/subscriptions/{}/settings", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        app.get("/subscriptions/not-a-uuid/settings").await.status(),
        404
    );
}

#[tokio::test]
async fn members_reach_their_settings_page_with_their_role() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso").await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    app.login("reader@example.com", PASSWORD).await;
    let page = app
        .get_page(&format!("/subscriptions/{sub}/settings"))
        .await;
    assert!(page.contains("Settings"));
    assert!(page.contains("Advanced Settings"));
    assert!(page.contains("reader"));
}
