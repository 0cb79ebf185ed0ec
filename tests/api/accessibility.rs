//! Every page passes axe-core's WCAG 2.x A/AA rules (and its best practices) in Chromium:
//! sign-in, setup, subscriptions, settings (closed, open, with errors, as a reader), events,
//! members, tokens and account. A new violation fails the test.

use crate::support::{browser::Browser, TestApp};
use fantoccini::Locator;

const PASSWORD: &str = "correct horse battery staple";

async fn check(browser: &Browser, name: &str, found: &mut Vec<String>) {
    for violation in browser.axe_violations().await {
        found.push(format!("{name}: {violation}"));
    }
}

async fn sign_in(browser: &Browser, app: &TestApp, email: &str) {
    browser.sign_in(&app.base_url, email, PASSWORD).await;
}

#[tokio::test]
async fn every_page_passes_axe_core() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    let c = &browser.client;
    let mut found = Vec::new();

    // The checker itself finds what it should: an unlabeled field.
    c.goto(
        "data:text/html,<html lang=en><title>t</title><main><input id=q type=text></main></html>",
    )
    .await
    .unwrap();
    let known_bad = browser.axe_violations().await;
    assert!(
        known_bad.iter().any(|v| v.starts_with("label")),
        "axe-core did not run: {known_bad:?}"
    );

    let setup = app
        .setup_link
        .clone()
        .expect("a fresh portal has a setup link");
    c.goto(&setup).await.unwrap();
    browser.wait_css("form").await;
    check(&browser, "setup", &mut found).await;

    c.goto(&app.url("/login")).await.unwrap();
    browser.wait_css("#email").await;
    check(&browser, "sign-in", &mut found).await;

    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    sign_in(&browser, &app, "admin@example.com").await;
    check(&browser, "subscriptions", &mut found).await;

    let settings = app.url(&format!("/subscriptions/{sub}/settings"));
    c.goto(&settings).await.unwrap();
    browser.wait_css("details#advanced").await;
    check(&browser, "settings", &mut found).await;
    browser
        .wait_css("details#advanced > summary")
        .await
        .click()
        .await
        .unwrap();
    check(&browser, "settings (open)", &mut found).await;
    // Enable with no key: the page comes back with field errors.
    c.find(Locator::Css("#siem_enabled"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.submit_with("#save-changes").await;
    browser.wait_css(".field-error").await;
    check(&browser, "settings (errors)", &mut found).await;

    for (name, path) in [
        ("events", format!("/subscriptions/{sub}/events")),
        ("members", format!("/subscriptions/{sub}/members")),
        ("tokens", format!("/subscriptions/{sub}/tokens")),
        ("account", "/account".to_owned()),
    ] {
        c.goto(&app.url(&path)).await.unwrap();
        browser.wait_css("h1").await;
        check(&browser, name, &mut found).await;
    }

    // A reader's settings: every control disabled.
    c.goto(&app.url("/account")).await.unwrap();
    browser.submit_with("form[action='/logout'] button").await;
    sign_in(&browser, &app, "reader@example.com").await;
    c.goto(&settings).await.unwrap();
    browser.wait_css("details#advanced").await;
    check(&browser, "settings (reader)", &mut found).await;

    browser.close().await;
    assert!(
        found.is_empty(),
        "axe-core violations:\n{}",
        found.join("\n")
    );
}
