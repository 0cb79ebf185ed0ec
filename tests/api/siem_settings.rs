//! SIEM settings over HTTP: validation, the write-only sealed key, Test Connection against the
//! strict fake Datadog intake, roles, CSRF, history and egress refusal.

use crate::support;
use std::{sync::Arc, time::Duration};

use crate::support::{
    csrf_token,
    fake_datadog::{Behavior, FakeDatadog},
    input_value, location, texts, TestApp,
};
use cloudpki::{
    app::Overrides,
    crypto::Sealed,
    siem::egress::{HttpTimeouts, StaticLookup},
};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";

struct Fixture {
    app: TestApp,
    sub: Uuid,
    path: String,
}

async fn fixture_with(overrides: Overrides) -> Fixture {
    let app = TestApp::spawn_with_overrides(support::test_env(), overrides).await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let path = format!("/subscriptions/{sub}/settings");
    Fixture { app, sub, path }
}

async fn fixture() -> Fixture {
    fixture_with(Overrides::default()).await
}

impl Fixture {
    /// Submits the settings form with these fields (plus the CSRF token and the action).
    async fn submit(&self, action: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &csrf));
        form.push(("action", action));
        self.app.post_form(&self.path, &form).await
    }

    async fn save_datadog(&self, url: &str, key: &str) -> reqwest::Response {
        self.submit(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "custom"),
                ("datadog_url", url),
                ("datadog_api_key", key),
            ],
        )
        .await
    }

    async fn test_datadog(&self, url: &str, key: &str) -> String {
        let r = self
            .submit(
                "test",
                &[
                    ("siem_enabled", "on"),
                    ("provider", "datadog"),
                    ("datadog_site", "custom"),
                    ("datadog_url", url),
                    ("datadog_api_key", key),
                ],
            )
            .await;
        r.text().await.unwrap()
    }
}

fn status_text(page: &str) -> String {
    texts(page, "[role=status]").join(" ")
}

fn field_error(page: &str, field: &str) -> Option<String> {
    texts(page, &format!("#{field}-error")).into_iter().next()
}

#[tokio::test]
async fn an_admin_saves_datadog_settings_and_sees_only_the_last_four_characters_of_the_key() {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    let r = f.save_datadog(&intake.base_url(), KEY).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("saved=1"));
    let page = f.app.get_page(&location(&r)).await;
    assert!(status_text(&page).contains("Settings saved."));
    assert!(!page.contains(KEY), "the key is never rendered back");
    assert_eq!(input_value(&page, "datadog_api_key").as_deref(), Some(""));
    assert!(texts(&page, "#datadog_api_key-state")[0].contains("cdef"));
    assert_eq!(
        input_value(&page, "datadog_url").as_deref(),
        Some(intake.base_url().as_str())
    );
    assert!(page
        .contains(r#"id="siem_enabled" name="siem_enabled" type="checkbox" value="on" checked"#));
    assert!(texts(&page, "#last-change")[0].contains("admin@example.com"));
    let history = texts(&page, "table.history td").join(" ");
    assert!(
        history.contains("Send Audit Logs to SIEM turned on"),
        "{history}"
    );
    assert!(
        history.contains("API key set (ending in cdef)"),
        "{history}"
    );
    assert!(!history.contains(KEY));
}

#[tokio::test]
async fn the_sealed_key_in_the_database_does_not_contain_the_key_and_opens_only_with_the_master_key(
) {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    assert_eq!(f.save_datadog(&intake.base_url(), KEY).await.status(), 303);
    let (key_id, nonce, ciphertext, hint): (String, Vec<u8>, Vec<u8>, String) = sqlx::query_as(
        "select key_id, nonce, ciphertext, hint from siem_secrets where subscription_id = $1",
    )
    .bind(f.sub)
    .fetch_one(&f.app.pool)
    .await
    .unwrap();
    assert_eq!(hint, "cdef");
    assert_eq!(key_id, f.app.master_key.id());
    let sealed = Sealed {
        key_id,
        nonce,
        ciphertext: ciphertext.clone(),
    };
    assert!(!String::from_utf8_lossy(&ciphertext).contains(&KEY[..8]));
    let context = format!("{}/datadog/api_key", f.sub);
    assert_eq!(
        f.app.master_key.open(&sealed, &context).as_deref(),
        Some(KEY.as_bytes())
    );
    assert_eq!(
        f.app
            .master_key
            .open(&sealed, &format!("{}/datadog/api_key", Uuid::new_v4())),
        None
    );
    // Nothing else in the database holds the key.
    let dump: String = sqlx::query_scalar(
        "select string_agg(t::text, ' ') from (
            select row_to_json(s)::text as t from siem_settings s
            union all select row_to_json(p)::text from siem_provider_fields p
            union all select row_to_json(h)::text from siem_settings_history h) x",
    )
    .fetch_one(&f.app.pool)
    .await
    .unwrap();
    assert!(!dump.contains(KEY), "{dump}");
}

#[tokio::test]
async fn a_blank_key_keeps_the_stored_key_on_save_and_on_test() {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    assert_eq!(f.save_datadog(&intake.base_url(), KEY).await.status(), 303);
    assert_eq!(f.save_datadog(&intake.base_url(), "").await.status(), 303);
    let page = f.test_datadog(&intake.base_url(), "").await;
    assert!(
        status_text(&page).contains("Datadog accepted the test log"),
        "{}",
        status_text(&page)
    );
    assert_eq!(intake.logs().len(), 1);
}

#[tokio::test]
async fn every_invalid_field_is_reported_next_to_it_at_once_keeping_what_was_typed() {
    let f = fixture().await;
    let r = f
        .submit(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "MARS1"),
                ("datadog_url", "ftp://intake.example.com"),
                ("datadog_api_key", "0123-not-hex"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    for field in ["datadog_site", "datadog_url", "datadog_api_key"] {
        assert!(
            field_error(&page, field).is_some(),
            "{field} has an error: {page}"
        );
    }
    assert!(status_text(&page).contains("Nothing was saved"));
    assert_eq!(
        input_value(&page, "datadog_url").as_deref(),
        Some("ftp://intake.example.com")
    );
    assert!(!page.contains("0123-not-hex"), "the key is not echoed");
    // A provider outside the list (a tampered request) is named too.
    let r = f.submit("save", &[("provider", "graylog")]).await;
    assert_eq!(r.status(), 422);
    assert!(field_error(&r.text().await.unwrap(), "provider").is_some());
    let saved: i64 = sqlx::query_scalar("select count(*) from siem_settings")
        .fetch_one(&f.app.pool)
        .await
        .unwrap();
    assert_eq!(saved, 0);
}

#[tokio::test]
async fn url_rules_are_enforced_with_plain_messages() {
    let f = fixture().await;
    let cases = [
        ("not a url", "datadog_url"),
        (
            "https://user:pass@http-intake.logs.datadoghq.com",
            "datadog_url",
        ),
        ("http://http-intake.logs.datadoghq.com", "datadog_url"),
        ("https://10.0.0.5", "datadog_url"),
        ("https://169.254.169.254", "datadog_url"),
        ("https://[::1]:8443", "datadog_url"),
        ("http://127.0.0.2:9", "datadog_url"),
    ];
    for (url, field) in cases {
        let page = f.save_datadog(url, KEY).await.text().await.unwrap();
        let error = field_error(&page, field).unwrap_or_else(|| panic!("{url} must be refused"));
        assert!(!error.is_empty());
    }
    let page = f
        .save_datadog("http://10.0.0.5", KEY)
        .await
        .text()
        .await
        .unwrap();
    assert!(field_error(&page, "datadog_url")
        .unwrap()
        .contains("CLOUDPKI_EGRESS_ALLOW"));
}

#[tokio::test]
async fn api_keys_must_be_32_hexadecimal_characters() {
    let f = fixture().await;
    for key in [
        "0123456789abcdef",
        "0123456789abcdef0123456789abcdefff",
        "0123456789abcdef0123456789abcdeg",
    ] {
        let page = f
            .save_datadog("https://http-intake.logs.datadoghq.eu", key)
            .await
            .text()
            .await
            .unwrap();
        assert!(field_error(&page, "datadog_api_key").is_some(), "{key}");
    }
}

#[tokio::test]
async fn the_base_url_and_the_full_api_v2_logs_url_are_both_accepted() {
    let f = fixture().await;
    for url in [
        "https://http-intake.logs.datadoghq.eu",
        "https://http-intake.logs.datadoghq.eu/api/v2/logs",
        "https://http-intake.logs.datadoghq.eu/api/v2/logs/",
    ] {
        assert_eq!(f.save_datadog(url, KEY).await.status(), 303, "{url}");
        let page = f.app.get_page(&f.path).await;
        assert_eq!(
            input_value(&page, "datadog_url").as_deref(),
            Some("https://http-intake.logs.datadoghq.eu")
        );
    }
}

#[tokio::test]
async fn choosing_a_site_without_a_url_uses_the_sites_intake() {
    let f = fixture().await;
    let r = f
        .submit(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "AP1"),
                ("datadog_url", ""),
                ("datadog_api_key", KEY),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = f.app.get_page(&f.path).await;
    assert_eq!(
        input_value(&page, "datadog_url").as_deref(),
        Some("https://http-intake.logs.ap1.datadoghq.com")
    );
    let doc = scraper::Html::parse_document(&page);
    let chosen = scraper::Selector::parse("#datadog_site option[selected]").unwrap();
    let option = doc.select(&chosen).next().expect("a chosen site");
    assert_eq!(option.value().attr("value"), Some("AP1"));
    let fills: serde_json::Value =
        serde_json::from_str(option.value().attr("data-fills").expect("the site fills")).unwrap();
    assert_eq!(
        fills,
        serde_json::json!({
            "datadog_url": "https://http-intake.logs.ap1.datadoghq.com",
            "datadog_api_url": "https://api.ap1.datadoghq.com",
        })
    );
}

#[tokio::test]
async fn the_site_select_lists_every_datadog_site() {
    let f = fixture().await;
    let page = f.app.get_page(&f.path).await;
    let options = texts(&page, "#datadog_site option").join("|");
    for code in [
        "US1", "US3", "US5", "EU1", "AP1", "AP2", "US1-FED", "US2-FED", "UK1",
    ] {
        assert!(options.contains(code), "{code} in {options}");
    }
}

#[tokio::test]
async fn enabling_needs_a_complete_configuration_and_disabling_keeps_it() {
    let f = fixture().await;
    let r = f
        .submit(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_site", "US1"),
                ("datadog_url", "https://http-intake.logs.datadoghq.com"),
                ("datadog_api_key", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(field_error(&r.text().await.unwrap(), "datadog_api_key").is_some());

    assert_eq!(
        f.save_datadog("https://http-intake.logs.datadoghq.com", KEY)
            .await
            .status(),
        303
    );
    let page = f.app.get_page(&f.path).await;
    assert_eq!(
        texts(&page, "#siem_enabled[checked]").len(),
        1,
        "export is on"
    );
    let r = f
        .submit(
            "save",
            &[
                ("provider", "datadog"),
                ("datadog_site", "custom"),
                ("datadog_url", "https://http-intake.logs.datadoghq.com"),
                ("datadog_api_key", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = f.app.get_page(&f.path).await;
    assert!(
        texts(&page, "#siem_enabled[checked]").is_empty(),
        "export is off"
    );
    assert!(
        texts(&page, "#datadog_api_key-state")[0].contains("cdef"),
        "the key is kept"
    );
    assert_eq!(
        input_value(&page, "datadog_url").as_deref(),
        Some("https://http-intake.logs.datadoghq.com")
    );
}

#[tokio::test]
async fn test_connection_puts_one_test_log_at_the_intake_and_saves_nothing() {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    let page = f.test_datadog(&intake.base_url(), KEY).await;
    let status = status_text(&page);
    assert!(status.contains("Datadog accepted the test log"), "{status}");
    assert!(status.contains("service:EZCA @EventID:0"), "{status}");
    assert!(!page.contains(KEY));
    let logs = intake.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["EventID"], 0);
    assert_eq!(logs[0]["EventSummary"], "SIEM connection test");
    assert_eq!(logs[0]["service"], "EZCA");
    assert_eq!(logs[0]["SubscriptionId"], f.sub.to_string());
    let saved: i64 = sqlx::query_scalar("select count(*) from siem_settings")
        .fetch_one(&f.app.pool)
        .await
        .unwrap();
    assert_eq!(saved, 0, "testing never saves");
    let secrets: i64 = sqlx::query_scalar("select count(*) from siem_secrets")
        .fetch_one(&f.app.pool)
        .await
        .unwrap();
    assert_eq!(secrets, 0);
}

#[tokio::test]
async fn a_known_site_gets_a_log_explorer_link() {
    // The EU1 intake name is answered with the fake's loopback address by a test resolver.
    let intake = FakeDatadog::start(KEY).await;
    let port = url::Url::parse(&intake.base_url()).unwrap().port().unwrap();
    let lookup = StaticLookup::new([(
        "http-intake.logs.datadoghq.eu",
        vec!["127.0.0.1".parse().unwrap()],
    )]);
    let mut env = support::test_env();
    env.insert(
        "CLOUDPKI_EGRESS_ALLOW".into(),
        "http-intake.logs.datadoghq.eu,127.0.0.1".into(),
    );
    let app = TestApp::spawn_with_overrides(
        env,
        Overrides {
            lookup: Some(Arc::new(lookup)),
            ..Overrides::default()
        },
    )
    .await;
    let sub = app.create_subscription("S").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    app.login("admin@example.com", PASSWORD).await;
    let f = Fixture {
        app,
        sub,
        path: format!("/subscriptions/{sub}/settings"),
    };
    let r = f
        .submit(
            "test",
            &[
                ("provider", "datadog"),
                ("datadog_site", "EU1"),
                (
                    "datadog_url",
                    &format!("http://http-intake.logs.datadoghq.eu:{port}"),
                ),
                ("datadog_api_key", KEY),
            ],
        )
        .await;
    let page = r.text().await.unwrap();
    let links: Vec<String> = {
        let doc = scraper::Html::parse_document(&page);
        let sel = scraper::Selector::parse("[role=status] a").unwrap();
        doc.select(&sel)
            .filter_map(|a| a.value().attr("href").map(str::to_owned))
            .collect()
    };
    assert_eq!(links.len(), 1, "{}", status_text(&page));
    assert!(
        links[0].starts_with("https://app.datadoghq.eu/logs?query="),
        "{}",
        links[0]
    );
    assert_eq!(intake.logs().len(), 1);
}

#[tokio::test]
async fn test_connection_explains_each_failure_with_cause_and_fix() {
    let f = fixture_with(Overrides {
        siem_timeouts: Some(HttpTimeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_millis(1500),
        }),
        ..Overrides::default()
    })
    .await;
    let intake = FakeDatadog::start(KEY).await;
    let url = intake.base_url();

    let page = f.test_datadog(&url, OTHER_KEY).await;
    assert!(
        status_text(&page).contains("refused the API key"),
        "{}",
        status_text(&page)
    );

    let page = f.test_datadog(&format!("{url}/wrong/prefix"), KEY).await;
    assert!(
        status_text(&page).contains("not found (HTTP 404)"),
        "{}",
        status_text(&page)
    );

    intake.script(vec![Behavior::Status(503)]);
    let page = f.test_datadog(&url, KEY).await;
    assert!(
        status_text(&page).contains("temporarily unavailable"),
        "{}",
        status_text(&page)
    );

    intake.script(vec![Behavior::Status(400)]);
    let page = f.test_datadog(&url, KEY).await;
    assert!(
        status_text(&page).contains("rejected the test log"),
        "{}",
        status_text(&page)
    );

    // The per-user allowance is 5 a minute; a second admin runs the rest.
    let other = support::new_client();
    f.app
        .add_member(
            f.app
                .create_user(
                    "ops@example.com",
                    PASSWORD,
                    f.app.create_subscription("x").await,
                    "admin",
                )
                .await,
            f.sub,
            "admin",
        )
        .await;
    support::login_with(&other, &f.app.base_url, "ops@example.com", PASSWORD).await;
    let run = |url: String| {
        let other = other.clone();
        let base = f.app.base_url.clone();
        let path = f.path.clone();
        async move {
            let page = other
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let csrf = csrf_token(&page);
            let r = other
                .post(format!("{base}{path}"))
                .form(&[
                    ("provider", "datadog"),
                    ("datadog_site", "custom"),
                    ("datadog_url", url.as_str()),
                    ("datadog_api_key", KEY),
                    ("csrf_token", csrf.as_str()),
                    ("action", "test"),
                ])
                .send()
                .await
                .unwrap();
            status_text(&r.text().await.unwrap())
        }
    };

    intake.script(vec![Behavior::Stall(Duration::from_secs(5))]);
    let status = run(url.clone()).await;
    assert!(status.contains("did not answer within"), "{status}");

    intake.script(vec![Behavior::DropConnection]);
    let status = run(url.clone()).await;
    assert!(status.contains("closed the connection"), "{status}");

    let dead_port = crate::support::ports::outside_the_ephemeral_range();
    let status = run(format!("http://127.0.0.1:{dead_port}")).await;
    assert!(status.contains("refused the connection"), "{status}");

    let status = run(format!(
        "https://127.0.0.1:{}",
        url::Url::parse(&url).unwrap().port().unwrap()
    ))
    .await;
    assert!(status.contains("TLS"), "{status}");

    let status = run("https://no-such-host.invalid".to_owned()).await;
    assert!(status.contains("could not be found (DNS)"), "{status}");
}

#[tokio::test]
async fn loopback_and_private_destinations_are_refused_without_sending_a_packet() {
    // 10.1.2.3 is what the test resolver answers for this name; nothing may be sent there.
    let lookup = StaticLookup::new([("siem.internal.example", vec!["10.1.2.3".parse().unwrap()])]);
    let f = fixture_with(Overrides {
        lookup: Some(Arc::new(lookup)),
        ..Overrides::default()
    })
    .await;
    let page = f.test_datadog("https://siem.internal.example", KEY).await;
    let status = status_text(&page);
    assert!(
        status.contains("outbound policy") && status.contains("nothing was sent"),
        "{status}"
    );
    // A loopback address outside the allow-list (only 127.0.0.1 is allowed).
    let page = f.test_datadog("http://127.0.0.2:9", KEY).await;
    assert!(
        field_error(&page, "datadog_url").is_some_and(|e| e.contains("127.0.0.2")),
        "{page}"
    );
}

#[tokio::test]
async fn test_connection_is_throttled_per_user() {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    for _ in 0..5 {
        assert!(status_text(&f.test_datadog(&intake.base_url(), KEY).await).contains("accepted"));
    }
    let page = f.test_datadog(&intake.base_url(), KEY).await;
    assert!(
        status_text(&page).contains("Wait a minute"),
        "{}",
        status_text(&page)
    );
    assert_eq!(intake.logs().len(), 5);
}

#[tokio::test]
async fn a_reader_sees_disabled_controls_and_a_readers_post_is_refused_and_recorded() {
    let f = fixture().await;
    f.app
        .create_user("reader@example.com", PASSWORD, f.sub, "reader")
        .await;
    let reader = support::new_client();
    support::login_with(&reader, &f.app.base_url, "reader@example.com", PASSWORD).await;
    let page = reader
        .get(f.app.url(&f.path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<fieldset disabled>"),
        "every control sits in a disabled fieldset"
    );
    assert!(texts(&page, "#reader-note")[0].contains("read-only"));
    let csrf = csrf_token(&page);
    let r = reader
        .post(f.app.url(&f.path))
        .form(&[
            ("siem_enabled", "on"),
            ("provider", "datadog"),
            ("datadog_site", "US1"),
            ("datadog_url", "https://http-intake.logs.datadoghq.com"),
            ("datadog_api_key", KEY),
            ("csrf_token", csrf.as_str()),
            ("action", "save"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let saved: i64 = sqlx::query_scalar("select count(*) from siem_settings")
        .fetch_one(&f.app.pool)
        .await
        .unwrap();
    assert_eq!(saved, 0);
    let (outcome, who): (String, String) = sqlx::query_as(
        "select outcome, user_email from siem_settings_history where subscription_id = $1",
    )
    .bind(f.sub)
    .fetch_one(&f.app.pool)
    .await
    .unwrap();
    assert_eq!(
        (outcome.as_str(), who.as_str()),
        ("denied", "reader@example.com")
    );
}

#[tokio::test]
async fn settings_posts_without_the_csrf_token_are_refused() {
    let f = fixture().await;
    let r = f
        .app
        .post_form(
            &f.path,
            &[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("datadog_url", "https://http-intake.logs.datadoghq.com"),
                ("datadog_api_key", KEY),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = f
        .app
        .post_form(&f.path, &[("csrf_token", "forged"), ("action", "save")])
        .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn another_tenants_settings_cannot_be_read_or_written() {
    let f = fixture().await;
    let other = f.app.create_subscription("Other").await;
    let page = f.app.get_page(&f.path).await;
    let csrf = csrf_token(&page);
    let path = format!("/subscriptions/{other}/settings");
    assert_eq!(f.app.get(&path).await.status(), 404);
    let r = f
        .app
        .post_form(
            &path,
            &[
                ("csrf_token", &csrf),
                ("action", "save"),
                ("provider", "datadog"),
            ],
        )
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_key_never_appears_in_a_response_or_a_log_line() {
    let f = fixture().await;
    // Keys of this test only: the log buffer holds every test's lines, and other tests' ids
    // (a Sentinel DCR id) contain the shared test key's digits.
    const KEY: &str = "5ec2e7d0b1a94c3f8e6d2a7b9c0f1e3d";
    const OTHER_KEY: &str = "d3e1f0c9b7a2d6e8f3c49a1b0d7e2ce5";
    let intake = FakeDatadog::start(KEY).await;
    let mut bodies = Vec::new();
    bodies.push(f.test_datadog(&intake.base_url(), KEY).await);
    bodies.push(f.test_datadog(&intake.base_url(), OTHER_KEY).await);
    let r = f.save_datadog(&intake.base_url(), KEY).await;
    bodies.push(r.text().await.unwrap());
    bodies.push(f.app.get_page(&f.path).await);
    bodies.push(
        f.save_datadog("ftp://bad", OTHER_KEY)
            .await
            .text()
            .await
            .unwrap(),
    );
    for body in &bodies {
        assert!(!body.contains(KEY) && !body.contains(OTHER_KEY));
    }
    let logs = support::captured_logs();
    assert!(!logs.is_empty());
    let leaks: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(KEY) || l.contains(OTHER_KEY))
        .collect();
    assert!(leaks.is_empty(), "a key reached the logs: {leaks:#?}");
}

async fn stored_hint(f: &Fixture) -> Option<String> {
    sqlx::query_scalar(
        "select hint from siem_secrets where subscription_id = $1 and name = 'api_key'",
    )
    .bind(f.sub)
    .fetch_optional(&f.app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn save_right_after_a_green_test_keeps_the_tested_key_without_retyping() {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    let page = f.test_datadog(&intake.base_url(), KEY).await;
    assert!(
        status_text(&page).contains("kept for 10 minutes"),
        "{}",
        status_text(&page)
    );
    assert!(!page.contains(KEY), "the key is never sent back");
    assert_eq!(f.save_datadog(&intake.base_url(), "").await.status(), 303);
    assert_eq!(stored_hint(&f).await.as_deref(), Some("cdef"));
    let left: i64 = sqlx::query_scalar("select count(*) from tested_secrets")
        .fetch_one(&f.app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "used once, then forgotten");
}

#[tokio::test]
async fn tested_secrets_stay_with_their_session_their_address_and_ten_minutes() {
    let f = fixture().await;
    let intake = FakeDatadog::start(KEY).await;
    let other_intake = FakeDatadog::start(KEY).await;
    f.test_datadog(&intake.base_url(), KEY).await;

    // Another address: the tested key does not follow.
    let r = f.save_datadog(&other_intake.base_url(), "").await;
    assert_eq!(r.status(), 422);
    assert!(field_error(&r.text().await.unwrap(), "datadog_api_key").is_some());

    // Another session of the same admin: nothing held for it.
    let elsewhere = support::new_client();
    support::login_with(&elsewhere, &f.app.base_url, "admin@example.com", PASSWORD).await;
    let page = elsewhere
        .get(format!("{}{}", f.app.base_url, f.path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_token(&page);
    let url = intake.base_url();
    let r = elsewhere
        .post(format!("{}{}", f.app.base_url, f.path))
        .form(&[
            ("siem_enabled", "on"),
            ("provider", "datadog"),
            ("datadog_site", "custom"),
            ("datadog_url", url.as_str()),
            ("datadog_api_key", ""),
            ("csrf_token", csrf.as_str()),
            ("action", "save"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "another session must type the key");

    // Ten minutes later: gone.
    sqlx::query("update tested_secrets set expires_at = now() - interval '1 second'")
        .execute(&f.app.pool)
        .await
        .unwrap();
    assert_eq!(f.save_datadog(&intake.base_url(), "").await.status(), 422);
    assert_eq!(stored_hint(&f).await, None);
}

#[tokio::test]
async fn settings_saved_as_form_values_are_migrated_to_typed_settings_that_read_back_the_same() {
    use chrono::Timelike as _;
    let pool = support::database_at(20261130000004).await;
    let sub = support::insert_subscription(&pool, "Old").await;
    // A rotation window that is still open, a day from now (whole seconds, as stored).
    let previous_until = (chrono::Utc::now() + chrono::Duration::days(1))
        .with_nanosecond(0)
        .unwrap()
        .to_rfc3339();
    let rows = [
        (
            "datadog",
            serde_json::json!({"datadog_url": "https://intake.example.com"}),
        ),
        (
            "splunk",
            serde_json::json!({"splunk_url": "https://splunk.example.com:8088", "splunk_index": "pki",
                "splunk_sourcetype": "ezca:audit", "splunk_ack": "on"}),
        ),
        (
            "logscale",
            serde_json::json!({"logscale_url": "https://cloud.community.humio.com"}),
        ),
        (
            "sentinel",
            serde_json::json!({"sentinel_cloud": "public",
                "sentinel_tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "sentinel_client_id": "0b5f2a6e-4a4d-4d0e-9f4b-2b7c1f0e9a11",
                "sentinel_endpoint": "https://my-dce.eastus-1.ingest.monitor.azure.com",
                "sentinel_dcr_id": "dcr-00000000000000000000000000000000",
                "sentinel_stream": "Custom-EzcaAudit_CL"}),
        ),
        (
            "webhook",
            serde_json::json!({"webhook_url": "https://hooks.example.com/in",
                "webhook_previous_until": previous_until}),
        ),
    ];
    for (provider, fields) in &rows {
        sqlx::query(
            "insert into siem_provider_fields (subscription_id, provider, fields) values ($1, $2, $3)",
        )
        .bind(sub)
        .bind(provider)
        .bind(fields)
        .execute(&pool)
        .await
        .unwrap();
    }
    cloudpki::db::migrate(&pool).await.unwrap();

    let stored: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "select provider, fields from siem_provider_fields where subscription_id = $1",
    )
    .bind(sub)
    .fetch_all(&pool)
    .await
    .unwrap();
    let typed = |p: &str| stored.iter().find(|(q, _)| q == p).unwrap().1.clone();
    assert_eq!(
        typed("splunk"),
        serde_json::json!({"url": "https://splunk.example.com:8088", "index": "pki",
            "sourcetype": "ezca:audit", "ack": true})
    );
    assert_eq!(
        typed("datadog"),
        serde_json::json!({"url": "https://intake.example.com"})
    );
    for (provider, fields) in &rows {
        let form = (cloudpki::siem::Provider::parse(provider)
            .unwrap()
            .spec()
            .form)(&typed(provider));
        let mut expected: std::collections::BTreeMap<String, String> =
            serde_json::from_value(fields.clone()).unwrap();
        if *provider == "datadog" {
            expected.insert("datadog_site".into(), "custom".into());
        }
        assert_eq!(form, expected, "{provider}");
    }
}

#[tokio::test]
async fn a_readers_repeated_refused_posts_are_one_counted_history_row() {
    let f = fixture().await;
    f.app
        .create_user("reader@example.com", PASSWORD, f.sub, "reader")
        .await;
    let reader = support::new_client();
    support::login_with(&reader, &f.app.base_url, "reader@example.com", PASSWORD).await;
    let page = reader
        .get(f.app.url(&f.path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = support::input_value(&page, "csrf_token").unwrap_or_else(|| panic!("{page}"));
    for _ in 0..30 {
        let r = reader
            .post(f.app.url(&f.path))
            .form(&[
                ("siem_enabled", "on"),
                ("provider", "datadog"),
                ("csrf_token", csrf.as_str()),
                ("action", "save"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let (rows, total): (i64, i64) = sqlx::query_as(
        "select count(*), sum(repeats)::bigint from siem_settings_history
         where subscription_id = $1 and outcome = 'denied'",
    )
    .bind(f.sub)
    .fetch_one(&f.app.pool)
    .await
    .unwrap();
    assert!(rows <= 2, "{rows} rows (one per minute at most)");
    assert_eq!(total, 30, "every attempt is counted");
    // The fixture's own client is the admin.
    let history = texts(&f.app.get_page(&f.path).await, "table.history td").join(" ");
    assert!(history.contains("times within the minute"), "{history}");
}
