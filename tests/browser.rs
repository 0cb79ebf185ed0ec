//! The seed document's "How To" steps in a real browser (headless Chromium via ChromeDriver):
//! sign in → Settings → Advanced Settings → Send Audit Logs to SIEM → Datadog → site → URL and
//! key → Test Connection → Save changes.

mod support;

use fantoccini::Locator;
use support::{browser::Browser, fake_datadog::FakeDatadog, TestApp};

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const WRONG_KEY: &str = "ffffffffffffffffffffffffffffffff";

async fn sign_in(browser: &Browser, app: &TestApp, email: &str) {
    let c = &browser.client;
    c.goto(&app.url("/login")).await.unwrap();
    browser
        .wait_css("#email")
        .await
        .send_keys(email)
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    browser.submit_with("button[type=submit].primary").await;
    browser.wait_css("ul.cards").await;
}

async fn open_settings(browser: &Browser) {
    let c = &browser.client;
    c.find(Locator::LinkText("Settings"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let summary = browser.wait_css("details#advanced > summary").await;
    assert_eq!(summary.text().await.unwrap(), "Advanced Settings");
    summary.click().await.unwrap();
}

async fn status_text(browser: &Browser) -> String {
    browser
        .wait_css("[role=status] .status-message")
        .await
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_enables_datadog_export_tests_the_connection_and_saves() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let intake = FakeDatadog::start(KEY).await;
    let browser = Browser::start().await;
    let c = &browser.client;

    sign_in(&browser, &app, "admin@example.com").await;
    open_settings(&browser).await;

    let enabled = c.find(Locator::Css("#siem_enabled")).await.unwrap();
    assert!(!enabled.is_selected().await.unwrap());
    c.find(Locator::Css("label[for=siem_enabled]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(enabled.is_selected().await.unwrap());

    c.find(Locator::Css("#provider"))
        .await
        .unwrap()
        .select_by_label("Datadog")
        .await
        .unwrap();

    // Choosing a site fills in its intake URL.
    let site = c.find(Locator::Css("#datadog_site")).await.unwrap();
    site.select_by_value("EU1").await.unwrap();
    let url = c.find(Locator::Css("#datadog_url")).await.unwrap();
    assert_eq!(
        url.prop("value").await.unwrap().as_deref(),
        Some("https://http-intake.logs.datadoghq.eu")
    );

    // A proxy in front of Datadog: here, the fake intake.
    site.select_by_value("custom").await.unwrap();
    url.clear().await.unwrap();
    url.send_keys(&format!("{}/api/v2/logs", intake.base_url()))
        .await
        .unwrap();
    c.find(Locator::Css("#datadog_api_key"))
        .await
        .unwrap()
        .send_keys(KEY)
        .await
        .unwrap();

    browser.submit_with("#test-connection").await;
    let status = status_text(&browser).await;
    assert!(status.contains("Datadog accepted the test log"), "{status}");
    let query = browser
        .wait_css("[role=status] code.query")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(query, "service:EZCA @EventID:0");
    let logs = intake.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["EventSummary"], "SIEM connection test");
    // The typed values survive the test; the key field is empty again (write-only).
    assert_eq!(
        c.find(Locator::Css("#datadog_url"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap(),
        Some(format!("{}/api/v2/logs", intake.base_url()))
    );
    let key = c.find(Locator::Css("#datadog_api_key")).await.unwrap();
    assert_eq!(key.prop("value").await.unwrap().as_deref(), Some(""));
    key.send_keys(KEY).await.unwrap();

    browser.submit_with("#save-changes").await;
    let status = status_text(&browser).await;
    assert_eq!(status, "Settings saved.");

    // A reload shows the saved state with the masked key.
    c.refresh().await.unwrap();
    browser.wait_css("details#advanced").await;
    let enabled = c.find(Locator::Css("#siem_enabled")).await.unwrap();
    assert!(enabled.is_selected().await.unwrap());
    let key_state = c.find(Locator::Css("#key-state")).await.unwrap();
    let summary = c
        .find(Locator::Css("details#advanced > summary"))
        .await
        .unwrap();
    if !key_state.is_displayed().await.unwrap() {
        summary.click().await.unwrap();
    }
    assert_eq!(
        key_state.text().await.unwrap(),
        "A key is set, ending in cdef."
    );
    assert_eq!(
        c.find(Locator::Css("#datadog_url"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap(),
        Some(intake.base_url())
    );
    let source = c.source().await.unwrap();
    assert!(!source.contains(KEY));
    let shot = browser.screenshot("settings").await;
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);
    browser.close().await;
}

#[tokio::test]
async fn a_wrong_key_shows_the_invalid_key_message() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let intake = FakeDatadog::start(KEY).await;
    let browser = Browser::start().await;
    let c = &browser.client;
    sign_in(&browser, &app, "admin@example.com").await;
    open_settings(&browser).await;
    c.find(Locator::Css("#datadog_site"))
        .await
        .unwrap()
        .select_by_value("custom")
        .await
        .unwrap();
    let url = c.find(Locator::Css("#datadog_url")).await.unwrap();
    url.clear().await.unwrap();
    url.send_keys(&intake.base_url()).await.unwrap();
    c.find(Locator::Css("#datadog_api_key"))
        .await
        .unwrap()
        .send_keys(WRONG_KEY)
        .await
        .unwrap();
    browser.submit_with("#test-connection").await;
    let status = status_text(&browser).await;
    assert!(status.contains("Datadog refused the API key"), "{status}");
    assert!(status.contains("another Datadog site"), "{status}");
    assert!(intake.logs().is_empty());
    browser.screenshot("settings-wrong-key").await;
    browser.close().await;
}

#[tokio::test]
async fn a_reader_sees_every_control_disabled() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    let browser = Browser::start().await;
    let c = &browser.client;
    sign_in(&browser, &app, "reader@example.com").await;
    open_settings(&browser).await;
    let note = browser.wait_css("#reader-note").await.text().await.unwrap();
    assert!(note.contains("read-only"), "{note}");
    for css in [
        "#siem_enabled",
        "#provider",
        "#datadog_site",
        "#datadog_url",
        "#datadog_api_key",
        "#test-connection",
        "#save-changes",
    ] {
        let element = c.find(Locator::Css(css)).await.unwrap();
        assert!(
            !element.is_enabled().await.unwrap(),
            "{css} is disabled for a reader"
        );
    }
    browser.close().await;
}
