//! The REST API for the SIEM settings: personal API tokens (Account page and CLI), GET/PUT with
//! the page's field names and rules (sealing, secrets stay with their address, history), roles
//! (reader 403, stranger 404, no token 401), and the OpenAPI document.

mod support;

use serde_json::{json, Value};
use support::{csrf_token, fake_datadog::FakeDatadog, login_with, new_client, texts, TestApp};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";

/// Signs `email` in with a fresh client and creates a personal API token on the Account page.
async fn token_from_account_page(app: &TestApp, email: &str) -> String {
    let client = new_client();
    assert_eq!(
        login_with(&client, &app.base_url, email, PASSWORD)
            .await
            .status(),
        303
    );
    let page = support::page_with(&client, &app.url("/account")).await;
    let answer = client
        .post(app.url("/account/tokens"))
        .form(&[
            ("csrf_token", csrf_token(&page).as_str()),
            ("name", "terraform"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let page = answer.text().await.unwrap();
    let token = support::input_value(&page, "new_api_token").expect("the token is shown once");
    let again = support::page_with(&client, &app.url("/account")).await;
    assert!(!again.contains(&token), "shown only once");
    assert!(texts(&again, "#api-tokens td")
        .iter()
        .any(|t| t == "terraform"));
    token
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_admin_scripts_the_settings_with_the_same_rules_as_the_page() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let token = token_from_account_page(&app, "admin@example.com").await;
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    let intake = FakeDatadog::start(KEY).await;

    let (status, body) = call(&app, reqwest::Method::GET, &path, Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["siem_enabled"], false);
    assert_eq!(body["provider"], "datadog");

    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({
            "siem_enabled": true,
            "provider": "datadog",
            "datadog_site": "custom",
            "datadog_url": intake.base_url(),
            "datadog_api_key": KEY,
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["siem_enabled"], true);
    assert_eq!(body["datadog_url"], intake.base_url());
    assert_eq!(body["datadog_api_key_set"], true);
    assert_eq!(body["datadog_api_key_last4"], "cdef");
    assert!(!body.to_string().contains(KEY), "secrets never come back");

    // Events flow to what the API configured.
    let ingest = app.token(sub).await;
    assert_eq!(
        app.post_events(&ingest, &json!({"event_id": 4888}))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .delivered,
        1
    );

    // A changed address without the key again is refused, as on the page.
    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(
            json!({"siem_enabled": true, "provider": "datadog", "datadog_site": "custom",
                    "datadog_url": "https://intake.example.com"}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"]["datadog_api_key"]
            .as_str()
            .unwrap()
            .contains("enter the API key again"),
        "{body}"
    );
    // Unknown fields and wrong types are named.
    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(json!({"provider": "datadog", "datadog_colour": "blue", "datadog_url": 7})),
    )
    .await;
    assert_eq!(status, 422);
    assert!(body["errors"]["datadog_colour"].is_string(), "{body}");
    assert!(body["errors"]["datadog_url"].is_string(), "{body}");

    // The same history as the page's.
    app.login("admin@example.com", PASSWORD).await;
    let page = app
        .get_page(&format!("/subscriptions/{sub}/settings"))
        .await;
    let history = texts(&page, "table.history td").join(" ");
    assert!(
        history.contains("Send Audit Logs to SIEM turned on"),
        "{history}"
    );
    assert!(
        history.contains("API key set (ending in cdef)"),
        "{history}"
    );
}

#[tokio::test]
async fn readers_strangers_and_missing_or_revoked_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let other = app.create_subscription("Fabrikam PKI").await;
    app.create_user("reader@example.com", PASSWORD, sub, "reader")
        .await;
    app.create_user("stranger@example.com", PASSWORD, other, "admin")
        .await;
    let reader = token_from_account_page(&app, "reader@example.com").await;
    let stranger = token_from_account_page(&app, "stranger@example.com").await;
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    let change = json!({"siem_enabled": false, "provider": "splunk"});

    let (status, _) = call(&app, reqwest::Method::GET, &path, Some(&reader), None).await;
    assert_eq!(status, 200, "readers may read");
    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&reader),
        Some(change.clone()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    for method in [reqwest::Method::GET, reqwest::Method::PUT] {
        let (status, _) = call(
            &app,
            method.clone(),
            &path,
            Some(&stranger),
            Some(change.clone()),
        )
        .await;
        assert_eq!(status, 404, "{method} as a stranger");
        let (status, _) = call(&app, method.clone(), &path, None, Some(change.clone())).await;
        assert_eq!(status, 401, "{method} without a token");
        let (status, _) = call(
            &app,
            method.clone(),
            &path,
            Some("not-a-token"),
            Some(change.clone()),
        )
        .await;
        assert_eq!(status, 401, "{method} with a wrong token");
    }
    let (status, _) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/subscriptions/{}/siem", Uuid::new_v4()),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Revoked on the account page: 401 from then on.
    let client = new_client();
    login_with(&client, &app.base_url, "reader@example.com", PASSWORD).await;
    let page = support::page_with(&client, &app.url("/account")).await;
    let id: Uuid = sqlx::query_scalar("select id from personal_tokens where revoked_at is null and user_id = (select id from users where email = 'reader@example.com')")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let answer = client
        .post(app.url("/account/tokens/revoke"))
        .form(&[
            ("csrf_token", csrf_token(&page).as_str()),
            ("id", id.to_string().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (status, _) = call(&app, reqwest::Method::GET, &path, Some(&reader), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_cli_creates_and_revokes_personal_api_tokens() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cloudpki"));
        cmd.envs(support::test_env())
            .env("DATABASE_URL", app.database_url())
            .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
            .args(args);
        cmd.output().unwrap()
    };
    let out = run(&["admin", "create-api-token", "--email", "admin@example.com"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = stderr
        .split("token id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stderr}"))
        .to_owned();
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    let (status, _) = call(&app, reqwest::Method::GET, &path, Some(&token), None).await;
    assert_eq!(status, 200);
    let out = run(&["admin", "create-api-token", "--email", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["admin", "revoke-token", "--id", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = call(&app, reqwest::Method::GET, &path, Some(&token), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_openapi_document_describes_every_path_and_every_provider_field() {
    let app = TestApp::spawn().await;
    let (status, doc) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/events",
        "/api/v1/subscriptions/{id}/siem",
        "/api/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    let properties = &doc["components"]["schemas"]["SiemSettings"]["properties"];
    for field in [
        "siem_enabled",
        "provider",
        "datadog_url",
        "splunk_token",
        "splunk_token_set",
        "sentinel_stream",
        "webhook_url",
        "kafka_brokers",
        "kafka_password",
    ] {
        assert!(properties[field].is_object(), "{field}");
    }
    assert_eq!(properties["kafka_password"]["writeOnly"], true);
    assert!(doc["paths"]["/api/v1/subscriptions/{id}/siem"]["put"]["responses"]["422"].is_object());
}

/// The settings (a PUT carries them all; the key left out is kept) with this event filter.
fn with(settings: &Value, send_event_ids: Value) -> Value {
    let mut body = settings.clone();
    body.as_object_mut().unwrap().remove("datadog_api_key");
    body["send_event_ids"] = send_event_ids;
    body
}

#[tokio::test]
async fn the_event_filter_is_read_and_set_through_the_api() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let token = token_from_account_page(&app, "admin@example.com").await;
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    let intake = FakeDatadog::start(KEY).await;
    let settings = json!({
        "siem_enabled": true,
        "provider": "datadog",
        "datadog_site": "custom",
        "datadog_url": intake.base_url(),
        "datadog_api_key": KEY,
    });
    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(settings.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["send_event_ids"].as_array().unwrap().len(),
        11,
        "every event by default"
    );
    let (status, body) = call(
        &app,
        reqwest::Method::PUT,
        &path,
        Some(&token),
        Some(with(&settings, json!([4888, "4887"]))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["send_event_ids"], json!([4888, 4887]));
    let (_, body) = call(&app, reqwest::Method::GET, &path, Some(&token), None).await;
    assert_eq!(body["send_event_ids"], json!([4888, 4887]));
    // None, or an id outside the catalog: refused, nothing saved.
    for bad in [json!([]), json!([4888, 9999]), json!("4888")] {
        let (status, body) = call(
            &app,
            reqwest::Method::PUT,
            &path,
            Some(&token),
            Some(with(&settings, bad)),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert!(body["errors"]["send_event_ids"].is_string(), "{body}");
    }
}
