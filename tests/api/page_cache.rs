//! The settings page's memory (store::page_cache): kept between views, dropped when the database
//! announces a change, whoever made it; sessions ended elsewhere are refused.

use crate::support;
use std::time::{Duration, Instant};

use crate::support::TestApp;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";

/// Waits (at most 10 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_settings_page_is_kept_until_the_database_announces_a_change() {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let cache = app.state.page_cache().clone();
    until("the listener connects", || cache.is_live()).await;
    let path = format!("/subscriptions/{sub}/settings");
    let page = app.get_page(&path).await;
    assert!(page.contains("Contoso PKI"));
    assert!(cache.keeps_page(sub), "a view is kept");
    let other = app.create_subscription("Other PKI").await;

    // Another writer (psql, another process): only the database can tell this one.
    sqlx::query("update subscriptions set name = 'Fabrikam PKI' where id = $1")
        .bind(other)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update subscriptions set name = 'Fabrikam PKI' where id = $1")
        .bind(sub)
        .execute(&app.pool)
        .await
        .unwrap();
    until("the change is announced", || !cache.keeps_page(sub)).await;
    let page = app.get_page(&path).await;
    assert!(page.contains("Fabrikam PKI"), "the next view reads it");
    assert!(cache.keeps_page(sub));
}

#[tokio::test]
async fn delivery_state_written_elsewhere_drops_the_kept_page() {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let cache = app.state.page_cache().clone();
    until("the listener connects", || cache.is_live()).await;
    app.configure_datadog(sub, "http://127.0.0.1:9", KEY, true)
        .await;
    let path = format!("/subscriptions/{sub}/settings");
    // The set-up's own announcement may still be on its way: a view it overlaps is not kept.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        app.get_page(&path).await;
        if cache.keeps_page(sub) {
            break;
        }
        assert!(Instant::now() < deadline, "a quiet view is kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A forwarder in another process records what it delivered.
    sqlx::query(
        "update delivery_destinations set delivered_total = delivered_total + 5
         where subscription_id = $1",
    )
    .bind(sub)
    .execute(&app.pool)
    .await
    .unwrap();
    until("the delivery is announced", || !cache.keeps_page(sub)).await;
}

#[tokio::test]
async fn a_session_ended_elsewhere_is_refused_on_the_next_request() {
    ended_elsewhere("delete from sessions").await;
}

#[tokio::test]
async fn sessions_truncated_by_an_operator_are_refused_on_the_next_request() {
    // TRUNCATE fires no row trigger; a statement trigger announces it.
    ended_elsewhere("truncate sessions").await;
}

async fn ended_elsewhere(statement: &str) {
    let (app, _sub) = TestApp::signed_in_admin(PASSWORD).await;
    let cache = app.state.page_cache().clone();
    until("the listener connects", || cache.is_live()).await;
    assert_eq!(app.get("/account").await.status(), 200);
    assert_eq!(
        app.get("/account").await.status(),
        200,
        "served from memory"
    );
    // Signed out by another portal process (or an operator).
    sqlx::query(statement).execute(&app.pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.get("/account").await;
        if r.status() == 303 {
            assert_eq!(support::location(&r), "/login");
            break;
        }
        assert!(Instant::now() < deadline, "the ended session still works");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_the_page_cache_off_every_view_reads_the_database() {
    let mut env = support::test_env();
    env.insert("CLOUDPKI_PAGE_CACHE".into(), "off".into());
    let app = TestApp::spawn_with(env).await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let path = format!("/subscriptions/{sub}/settings");
    app.get_page(&path).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.get_page(&path).await;
    assert!(!app.state.page_cache().is_live(), "no listener runs");
    assert!(!app.state.page_cache().keeps_page(sub));
}

#[tokio::test]
async fn refused_posts_drop_nothing_the_cache_keeps() {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let cache = app.state.page_cache().clone();
    until("the listener connects", || cache.is_live()).await;
    let path = format!("/subscriptions/{sub}/settings");
    app.get_page(&path).await;
    assert!(cache.keeps_page(sub));
    // An anonymous flood: posts without a session or a CSRF token, to pages and to nothing.
    let anonymous = support::new_client();
    for target in [path.as_str(), "/login", "/nowhere", "/account/tokens"] {
        let r = anonymous
            .post(app.url(target))
            .form(&[("csrf_token", "forged")])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error() || support::location(&r) == "/login",
            "{target}: {}",
            r.status()
        );
    }
    assert!(cache.keeps_page(sub), "a refused post flushed the cache");
}
