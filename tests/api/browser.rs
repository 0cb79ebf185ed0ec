//! The seed document's "How To" steps in a real browser (headless Chromium via ChromeDriver):
//! sign in → Settings → Advanced Settings → Send Audit Logs to SIEM → Datadog → site → URL and
//! key → Test Connection → Save changes.

use crate::support::{browser::Browser, fake_datadog::FakeDatadog, TestApp};
use fantoccini::Locator;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const WRONG_KEY: &str = "ffffffffffffffffffffffffffffffff";

async fn sign_in(browser: &Browser, app: &TestApp, email: &str) {
    browser.sign_in(&app.base_url, email, PASSWORD).await;
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

/// Chooses a custom Datadog site and types its intake URL and an API key.
async fn fill_custom_datadog(browser: &Browser, url: &str, key: &str) {
    let c = &browser.client;
    c.find(Locator::Css("#datadog_site"))
        .await
        .unwrap()
        .select_by_value("custom")
        .await
        .unwrap();
    let field = c.find(Locator::Css("#datadog_url")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(url).await.unwrap();
    c.find(Locator::Css("#datadog_api_key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
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

    // Choosing a site fills in its intake and API URLs.
    let site = c.find(Locator::Css("#datadog_site")).await.unwrap();
    site.select_by_value("EU1").await.unwrap();
    let url = c.find(Locator::Css("#datadog_url")).await.unwrap();
    assert_eq!(
        url.prop("value").await.unwrap().as_deref(),
        Some("https://http-intake.logs.datadoghq.eu")
    );
    let api_url = c.find(Locator::Css("#datadog_api_url")).await.unwrap();
    assert_eq!(
        api_url.prop("value").await.unwrap().as_deref(),
        Some("https://api.datadoghq.eu")
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

    // Save changes with the key field left blank keeps the key that was just tested.
    browser.submit_with("#save-changes").await;
    let status = status_text(&browser).await;
    assert_eq!(status, "Settings saved.");

    // A reload shows the saved state with the masked key.
    c.refresh().await.unwrap();
    browser.wait_css("details#advanced").await;
    let enabled = c.find(Locator::Css("#siem_enabled")).await.unwrap();
    assert!(enabled.is_selected().await.unwrap());
    let key_state = c
        .find(Locator::Css("#datadog_api_key-state"))
        .await
        .unwrap();
    let summary = c
        .find(Locator::Css("details#advanced > summary"))
        .await
        .unwrap();
    if !key_state.is_displayed().await.unwrap() {
        summary.click().await.unwrap();
    }
    assert_eq!(
        key_state.text().await.unwrap(),
        "Set, ending in cdef. Leave this blank to keep it."
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
    sign_in(&browser, &app, "admin@example.com").await;
    open_settings(&browser).await;
    fill_custom_datadog(&browser, &intake.base_url(), WRONG_KEY).await;
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

/// Chooses a provider, fills its visible fields, saves them, then runs Test Connection with
/// the saved values (secret fields left blank: the stored secret is used).
async fn save_and_test_provider(
    browser: &Browser,
    provider: &str,
    fields: &[(&str, &str)],
) -> String {
    let c = &browser.client;
    c.find(Locator::Css("#provider"))
        .await
        .unwrap()
        .select_by_value(provider)
        .await
        .unwrap();
    let section = c
        .find(Locator::Css(&format!("fieldset[data-provider={provider}]")))
        .await
        .unwrap();
    assert!(
        section.is_displayed().await.unwrap(),
        "{provider} fields show"
    );
    let datadog = c
        .find(Locator::Css("fieldset[data-provider=datadog]"))
        .await
        .unwrap();
    assert!(
        !datadog.is_displayed().await.unwrap(),
        "other providers' fields hide"
    );
    for (name, value) in fields {
        let input = c.find(Locator::Css(&format!("#{name}"))).await.unwrap();
        if input.tag_name().await.unwrap() == "select" {
            input.select_by_value(value).await.unwrap();
        } else {
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
    }
    browser.submit_with("#save-changes").await;
    let saved = status_text(browser).await;
    assert!(saved.starts_with("Settings saved."), "{provider}: {saved}");
    if provider != "webhook" {
        browser.submit_with("#test-connection").await;
    }
    status_text(browser).await
}

#[tokio::test]
async fn each_provider_can_be_chosen_saved_and_tested_in_the_browser() {
    use crate::support::{
        fake_hec::{FakeHec, HecMode},
        fake_sentinel::{self, FakeSentinel},
        fake_webhook::FakeWebhook,
    };
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let browser = Browser::start().await;
    sign_in(&browser, &app, "admin@example.com").await;
    open_settings(&browser).await;

    let splunk = FakeHec::start(HecMode::Splunk, "6f9619ff-8b86-4011-b42d-00c04fc964ff").await;
    let status = save_and_test_provider(
        &browser,
        "splunk",
        &[
            ("splunk_url", &splunk.base_url()),
            ("splunk_token", "6f9619ff-8b86-4011-b42d-00c04fc964ff"),
        ],
    )
    .await;
    assert_eq!(splunk.events().len(), 1, "{status}");

    let logscale = FakeHec::start(HecMode::LogScale, "a1b2c3d4-ingest-token-0123456789").await;
    let status = save_and_test_provider(
        &browser,
        "logscale",
        &[
            ("logscale_url", &logscale.base_url()),
            ("logscale_token", "a1b2c3d4-ingest-token-0123456789"),
        ],
    )
    .await;
    assert_eq!(logscale.events().len(), 1, "{status}");

    let azure = FakeSentinel::start().await;
    let base = azure.base_url();
    let status = save_and_test_provider(
        &browser,
        "sentinel",
        &[
            ("sentinel_cloud", "public"),
            ("sentinel_tenant_id", fake_sentinel::TENANT),
            ("sentinel_client_id", fake_sentinel::CLIENT_ID),
            ("sentinel_client_secret", fake_sentinel::CLIENT_SECRET),
            ("sentinel_endpoint", &base),
            ("sentinel_dcr_id", fake_sentinel::DCR_ID),
            ("sentinel_stream", fake_sentinel::STREAM),
            ("sentinel_login_url", &base),
        ],
    )
    .await;
    assert!(azure.token_requests() >= 1, "{status}");
    assert!(
        !browser
            .client
            .find(Locator::Css("[role=status]"))
            .await
            .unwrap()
            .attr("class")
            .await
            .unwrap()
            .unwrap_or_default()
            .contains("error"),
        "{status}"
    );

    // The webhook's signing secret is generated by the save and shown once.
    let hook = FakeWebhook::start(&[]).await;
    let saved = save_and_test_provider(&browser, "webhook", &[("webhook_url", &hook.url())]).await;
    assert!(saved.contains("shown only this once"), "{saved}");
    let secret = browser
        .wait_css("#new-signing-secret")
        .await
        .text()
        .await
        .unwrap();
    hook.trust(&[cloudpki::domain::webhook::SigningSecret::parse(&secret).unwrap()]);
    browser.submit_with("#test-connection").await;
    let status = status_text(&browser).await;
    assert_eq!(hook.events().len(), 1, "{status}");
    browser.screenshot("settings-webhook").await;
    browser.close().await;
}

#[tokio::test]
async fn an_admin_pauses_resumes_and_replays_export_in_the_browser() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let intake = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &intake.base_url(), KEY, true)
        .await;
    let token = app.token(sub).await;
    let record = |n: usize| {
        let body: Vec<serde_json::Value> = (0..n)
            .map(|_| serde_json::json!({"event_id": 4888}))
            .collect();
        let (app, token) = (&app, &token);
        async move {
            assert_eq!(
                app.post_events(token, &serde_json::Value::Array(body))
                    .await
                    .status(),
                202
            );
        }
    };
    record(3).await;
    let forwarder = app.state.forwarder();
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 3);

    let browser = Browser::start().await;
    let c = &browser.client;
    sign_in(&browser, &app, "admin@example.com").await;
    open_settings(&browser).await;

    browser.submit_with("#pause-export").await;
    assert!(status_text(&browser).await.contains("Export paused"));
    assert!(browser
        .wait_css("#health-state")
        .await
        .text()
        .await
        .unwrap()
        .eq_ignore_ascii_case("Paused"));
    record(2).await;
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 0);

    browser.submit_with("#resume-export").await;
    assert!(status_text(&browser).await.contains("Export resumed"));
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 2);

    // Replay the last hour: the five events delivered so far go again.
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let to = (now + chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    c.execute(
        "document.getElementById('replay_from').value = arguments[0];
         document.getElementById('replay_to').value = arguments[1];",
        vec![serde_json::json!(from), serde_json::json!(to)],
    )
    .await
    .unwrap();
    browser.submit_with("#replay").await;
    assert!(
        status_text(&browser)
            .await
            .contains("Replay started: 5 event(s)"),
        "{}",
        status_text(&browser).await
    );
    assert_eq!(forwarder.forward_once().await.unwrap().replayed, 5);
    c.refresh().await.unwrap();
    let progress = browser.wait_css("#replay-progress").await;
    assert!(progress
        .text()
        .await
        .unwrap()
        .contains("Last replay done: 5 event(s) resent"));
    assert_eq!(intake.logs().len(), 10);
    browser.close().await;
}

#[tokio::test]
async fn an_admin_adds_a_second_destination_and_removes_it_after_confirming() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let soc = FakeDatadog::start(KEY).await;
    app.configure_datadog(sub, &soc.base_url(), KEY, true).await;
    let archive = FakeDatadog::start(WRONG_KEY).await;
    let browser = Browser::start().await;
    let c = &browser.client;

    sign_in(&browser, &app, "admin@example.com").await;
    open_settings(&browser).await;
    browser.submit_with("#add-destination").await;
    let title = browser.wait_css("#destination-title").await;
    assert_eq!(title.text().await.unwrap(), "New destination");
    assert!(
        browser.axe_violations().await.is_empty(),
        "the new destination's form is accessible"
    );
    c.find(Locator::Css("#destination_name"))
        .await
        .unwrap()
        .send_keys("Archive")
        .await
        .unwrap();
    c.find(Locator::Css("label[for=siem_enabled]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("#provider"))
        .await
        .unwrap()
        .select_by_label("Datadog")
        .await
        .unwrap();
    fill_custom_datadog(&browser, &archive.base_url(), WRONG_KEY).await;
    browser.submit_with("#save-changes").await;
    assert_eq!(status_text(&browser).await, "Settings saved.");
    assert!(c
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("destination=2"));
    let listed: Vec<String> = {
        let mut texts = Vec::new();
        for link in c
            .find_all(Locator::Css("#destinations li a"))
            .await
            .unwrap()
        {
            texts.push(link.text().await.unwrap());
        }
        texts
    };
    assert_eq!(listed, vec!["Datadog", "Archive (Datadog)"]);
    browser.screenshot("settings-two-destinations").await;

    // Events reach both destinations.
    let ingest = app.token(sub).await;
    app.post_n(&ingest, 2, 4888).await;
    for _ in 0..3 {
        app.state.forwarder().forward_once().await.unwrap();
    }
    assert_eq!(soc.logs().len(), 2);
    assert_eq!(archive.logs().len(), 2);

    // Remove asks first; Cancel would keep it.
    browser.submit_with("#remove-destination").await;
    let confirm = browser.wait_css("#confirm-remove").await;
    assert!(
        confirm
            .text()
            .await
            .unwrap()
            .contains("Remove Archive (Datadog)?"),
        "the confirmation names the destination"
    );
    browser.screenshot("settings-remove-destination").await;
    browser.submit_with("#confirm-remove-destination").await;
    let status = status_text(&browser).await;
    assert!(
        status == "Destination removed. Nothing was waiting to be sent to it.",
        "{status}"
    );
    assert!(c
        .find_all(Locator::Css("#destinations li"))
        .await
        .unwrap()
        .is_empty());
    let history = c
        .find(Locator::Css("table.history"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        history.contains("Removed destination Archive (Datadog)"),
        "{history}"
    );
    browser.close().await;
}
