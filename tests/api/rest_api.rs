//! The REST API for the SIEM settings: personal API tokens (Account page and CLI), GET/PUT with
//! the page's field names and rules (sealing, secrets stay with their address, history), roles
//! (reader 403, stranger 404, no token 401), and the OpenAPI document.

use crate::support;
use crate::support::{
    csrf_token, fake_datadog::FakeDatadog, fake_datadog_api::FakeDatadogApi, login_with,
    new_client, texts, TestApp,
};
use serde_json::{json, Value};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const APP_KEY: &str = "abcdef0123456789abcdef0123456789abcdef01";

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
            ("current_password", PASSWORD),
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

#[tokio::test]
async fn an_admin_scripts_the_settings_with_the_same_rules_as_the_page() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let token = token_from_account_page(&app, "admin@example.com").await;
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    let intake = FakeDatadog::start(KEY).await;

    let (status, body) = app
        .call(reqwest::Method::GET, &path, Some(&token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["siem_enabled"], false);
    assert_eq!(body["provider"], "datadog");

    let (status, body) = app
        .call(
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
    let (status, body) = app
        .call(
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
    let (status, body) = app
        .call(
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

    let (status, _) = app
        .call(reqwest::Method::GET, &path, Some(&reader), None)
        .await;
    assert_eq!(status, 200, "readers may read");
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &path,
            Some(&reader),
            Some(change.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    for method in [reqwest::Method::GET, reqwest::Method::PUT] {
        let (status, _) = app
            .call(method.clone(), &path, Some(&stranger), Some(change.clone()))
            .await;
        assert_eq!(status, 404, "{method} as a stranger");
        let (status, _) = app
            .call(method.clone(), &path, None, Some(change.clone()))
            .await;
        assert_eq!(status, 401, "{method} without a token");
        let (status, _) = app
            .call(
                method.clone(),
                &path,
                Some("not-a-token"),
                Some(change.clone()),
            )
            .await;
        assert_eq!(status, 401, "{method} with a wrong token");
    }
    let (status, _) = app
        .call(
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
    let (status, _) = app
        .call(reqwest::Method::GET, &path, Some(&reader), None)
        .await;
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
    let (status, _) = app
        .call(reqwest::Method::GET, &path, Some(&token), None)
        .await;
    assert_eq!(status, 200);
    let out = run(&["admin", "create-api-token", "--email", "nobody@example.com"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["admin", "revoke-token", "--id", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = app
        .call(reqwest::Method::GET, &path, Some(&token), None)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_openapi_document_describes_every_path_and_every_provider_field() {
    let app = TestApp::spawn().await;
    let (status, doc) = app
        .call(reqwest::Method::GET, "/api/v1/openapi.json", None, None)
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
    for action in ["pause", "resume", "replay", "monitors", "retry-parked"] {
        let post = &doc["paths"][format!("/api/v1/subscriptions/{{id}}/siem/{action}")]["post"];
        assert!(post["summary"].is_string(), "{action}");
        for code in ["401", "403", "404"] {
            assert!(post["responses"][code].is_object(), "{action} {code}");
        }
    }
    let replay = &doc["paths"]["/api/v1/subscriptions/{id}/siem/replay"]["post"];
    assert!(replay["responses"]["202"].is_object());
    assert!(
        replay["requestBody"]["content"]["application/json"]["schema"]["properties"]["replay_from"]
            .is_object()
    );
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
    assert_eq!(properties["datadog_api_key_expires_on"]["format"], "date");
    assert!(properties["splunk_token_expires_on"].is_object());
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
    let s = Scripted::start().await;
    let (status, body) = s.put(s.settings.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["send_event_ids"].as_array().unwrap().len(),
        11,
        "every event by default"
    );
    let (status, body) = s.put(with(&s.settings, json!([4888, "4887"]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["send_event_ids"], json!([4888, 4887]));
    assert_eq!(s.get().await["send_event_ids"], json!([4888, 4887]));
    // None, or an id outside the catalog: refused, nothing saved.
    for bad in [json!([]), json!([4888, 9999]), json!("4888")] {
        let (status, body) = s.put(with(&s.settings, bad)).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["errors"]["send_event_ids"].is_string(), "{body}");
    }
}

/// "Contoso PKI", its administrator's personal API token, and the settings (a PUT body) that
/// switch export to a fake Datadog intake on.
struct Scripted {
    app: TestApp,
    sub: Uuid,
    path: String,
    intake: FakeDatadog,
    admin: String,
    settings: Value,
}

impl Scripted {
    async fn start() -> Self {
        let app = TestApp::spawn().await;
        let sub = app.create_subscription("Contoso PKI").await;
        app.create_user("admin@example.com", PASSWORD, sub, "admin")
            .await;
        let admin = token_from_account_page(&app, "admin@example.com").await;
        let intake = FakeDatadog::start(KEY).await;
        let settings = json!({
            "siem_enabled": true,
            "provider": "datadog",
            "datadog_site": "custom",
            "datadog_url": intake.base_url(),
            "datadog_api_key": KEY,
        });
        Self {
            path: format!("/api/v1/subscriptions/{sub}/siem"),
            app,
            sub,
            intake,
            admin,
            settings,
        }
    }

    async fn put(&self, body: Value) -> (u16, Value) {
        self.app
            .call(
                reqwest::Method::PUT,
                &self.path,
                Some(&self.admin),
                Some(body),
            )
            .await
    }

    async fn get(&self) -> Value {
        let (status, body) = self
            .app
            .call(reqwest::Method::GET, &self.path, Some(&self.admin), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `POST …/siem/<action>` with `token`.
    async fn act(&self, action: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.app
            .call(
                reqwest::Method::POST,
                &format!("{}/{action}", self.path),
                token,
                body,
            )
            .await
    }

    async fn record(&self, events: Value) {
        let ingest = self.app.token(self.sub).await;
        assert_eq!(self.app.post_events(&ingest, &events).await.status(), 202);
    }

    async fn history(&self, outcome: &str, email: &str) -> Vec<String> {
        let rows: Vec<Value> = sqlx::query_scalar(
            "select changes from siem_settings_history
             where subscription_id = $1 and outcome = $2 and user_email = $3 order by id",
        )
        .bind(self.sub)
        .bind(outcome)
        .bind(email)
        .fetch_all(&self.app.pool)
        .await
        .unwrap();
        rows.iter()
            .flat_map(|r| r.as_array().cloned().unwrap_or_default())
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    }

    async fn paused(&self) -> bool {
        let reason: Option<String> = sqlx::query_scalar(
            "select paused_reason from delivery_destinations where subscription_id = $1",
        )
        .bind(self.sub)
        .fetch_one(&self.app.pool)
        .await
        .unwrap();
        reason.is_some()
    }
}

fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[tokio::test]
async fn pause_resume_replay_and_retry_are_scriptable_with_the_page_s_rules() {
    let s = Scripted::start().await;
    let admin = s.admin.clone();

    // Export off: nothing to pause, said plainly.
    let (status, body) = s.act("pause", Some(&admin), None).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("Export is off"),
        "{body}"
    );
    let (status, body) = s.put(s.settings.clone()).await;
    assert_eq!(status, 200, "{body}");

    // Pause: recorded and kept, nothing sent; a second pause changes nothing.
    let (status, body) = s.act("pause", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"paused": true, "changed": true}));
    assert!(s.paused().await);
    let (_, body) = s.act("pause", Some(&admin), None).await;
    assert_eq!(body, json!({"paused": true, "changed": false}));
    assert_eq!(
        s.history("paused", "admin@example.com").await,
        ["Export paused: events are recorded and kept, not sent"]
    );
    s.record(json!([{"event_id": 4888}, {"event_id": 4887}]))
        .await;
    let forwarder = s.app.state.forwarder();
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 0);

    // Resume: what was kept is sent.
    let (status, body) = s.act("resume", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"paused": false, "changed": true}));
    assert!(!s.paused().await);
    assert_eq!(
        s.history("resumed", "admin@example.com").await,
        ["Export resumed: kept events are sent now"]
    );
    assert_eq!(forwarder.forward_once().await.unwrap().delivered, 2);

    // Replay: a bad window is named at its field, with the page's words.
    let now = chrono::Utc::now();
    let (status, body) = s
        .act(
            "replay",
            Some(&admin),
            Some(json!({"replay_from": utc(now), "replay_to": utc(now - chrono::Duration::hours(1))})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"]["replay_to"]
            .as_str()
            .unwrap()
            .contains("after the start"),
        "{body}"
    );
    let (status, body) = s
        .act(
            "replay",
            Some(&admin),
            Some(json!({"replay_from": "yesterday", "replay_to": utc(now)})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"]["replay_from"].is_string(), "{body}");
    // A window with nothing sent in it.
    let (status, body) = s
        .act(
            "replay",
            Some(&admin),
            Some(json!({
                "replay_from": utc(now - chrono::Duration::days(3)),
                "replay_to": utc(now - chrono::Duration::days(2)),
            })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("No event recorded in that window has been sent"),
        "{body}"
    );
    // The events sent are replayed: the intake receives them again.
    let (status, body) = s
        .act(
            "replay",
            Some(&admin),
            Some(json!({
                "replay_from": utc(now - chrono::Duration::hours(1)),
                "replay_to": utc(now + chrono::Duration::minutes(1)),
            })),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"events": 2, "from_seq": 1, "to_seq": 2}));
    assert_eq!(forwarder.forward_once().await.unwrap().replayed, 2);
    let sequences: Vec<i64> = s
        .intake
        .logs()
        .iter()
        .filter(|l| l["EventID"].as_i64().is_some_and(|id| id > 1))
        .filter_map(|l| l["Sequence"].as_i64())
        .collect();
    assert_eq!(sequences, [1, 2, 1, 2]);
    assert!(s.history("replayed", "admin@example.com").await[0].starts_with("Replay of 2 event(s)"));

    // Retry parked events: the parked event goes back in the queue.
    s.intake.reject_logs_with_detail("poison", json!(true));
    s.record(json!({"event_id": 12, "details": {"poison": true}}))
        .await;
    assert_eq!(forwarder.forward_once().await.unwrap().parked, 1);
    let (status, body) = s.act("retry-parked", Some(&admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"retried": 1}));
    assert!(s
        .history("saved", "admin@example.com")
        .await
        .contains(&"Retried 1 parked event(s)".to_owned()));

    // A reader is refused each action, and each attempt is recorded as on the page.
    s.app
        .create_user("reader@example.com", PASSWORD, s.sub, "reader")
        .await;
    let reader = token_from_account_page(&s.app, "reader@example.com").await;
    let window = json!({
        "replay_from": utc(now - chrono::Duration::hours(1)),
        "replay_to": utc(now + chrono::Duration::minutes(1)),
    });
    for action in ["pause", "resume", "replay", "monitors", "retry-parked"] {
        let (status, body) = s.act(action, Some(&reader), Some(window.clone())).await;
        assert_eq!(status, 403, "{action}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("Only administrators"),
            "{body}"
        );
    }
    assert!(!s.paused().await, "the reader's pause did nothing");
    assert_eq!(
        s.history("denied", "reader@example.com").await,
        [
            "Tried to pause export without the admin role",
            "Tried to resume export without the admin role",
            "Tried to replay events without the admin role",
            "Tried to create monitors without the admin role",
            "Tried to retry parked events without the admin role",
        ]
    );

    // A stranger, a malformed id, no token or an unknown one.
    let other = s.app.create_subscription("Fabrikam PKI").await;
    s.app
        .create_user("stranger@example.com", PASSWORD, other, "admin")
        .await;
    let stranger = token_from_account_page(&s.app, "stranger@example.com").await;
    for action in ["pause", "resume", "replay", "monitors", "retry-parked"] {
        let (status, _) = s.act(action, Some(&stranger), Some(window.clone())).await;
        assert_eq!(status, 404, "{action} as a stranger");
        let (status, _) = s
            .app
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/subscriptions/not-a-uuid/siem/{action}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, 404, "{action} with a malformed id");
        let (status, _) = s.act(action, None, Some(window.clone())).await;
        assert_eq!(status, 401, "{action} without a token");
        let (status, _) = s.act(action, Some("not-a-token"), None).await;
        assert_eq!(status, 401, "{action} with an unknown token");
    }
    assert!(!s.paused().await);
}

#[tokio::test]
async fn credential_expiry_dates_are_read_and_set_through_the_api() {
    let s = Scripted::start().await;
    let today = chrono::Utc::now().date_naive();
    let expires = today + chrono::Duration::days(40);
    let mut settings = s.settings.clone();
    settings["datadog_api_key_expires_on"] = json!(expires.to_string());
    let (status, body) = s.put(settings).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["datadog_api_key_expires_on"], expires.to_string());
    assert_eq!(
        s.get().await["datadog_api_key_expires_on"],
        expires.to_string()
    );
    assert!(s
        .history("saved", "admin@example.com")
        .await
        .contains(&format!("API key expires on {expires}")));

    // Left out of a PUT: unchanged.
    let mut kept = s.settings.clone();
    kept.as_object_mut().unwrap().remove("datadog_api_key");
    let (status, body) = s.put(kept.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["datadog_api_key_expires_on"], expires.to_string());

    // Past, malformed, wrongly typed or another provider's: refused at the field, nothing saved.
    for (field, bad) in [
        (
            "datadog_api_key_expires_on",
            json!((today - chrono::Duration::days(1)).to_string()),
        ),
        ("datadog_api_key_expires_on", json!(today.to_string())),
        ("datadog_api_key_expires_on", json!("30/06/2027")),
        ("datadog_api_key_expires_on", json!(20270630)),
        ("splunk_token_expires_on", json!(expires.to_string())),
    ] {
        let mut body = kept.clone();
        body[field] = bad.clone();
        let (status, body) = s.put(body).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body["errors"][field].is_string(), "{bad}: {body}");
    }
    let (status, body) = s
        .put({
            let mut body = kept.clone();
            body["datadog_api_key_expires_on"] = json!(today.to_string());
            body
        })
        .await;
    assert_eq!(status, 422);
    assert!(
        body["errors"]["datadog_api_key_expires_on"]
            .as_str()
            .unwrap()
            .contains("has passed"),
        "{body}"
    );
    assert_eq!(
        s.get().await["datadog_api_key_expires_on"],
        expires.to_string()
    );

    // "" or null removes the date.
    for clear in [json!(null), json!("")] {
        let mut body = kept.clone();
        body["datadog_api_key_expires_on"] = json!(expires.to_string());
        assert_eq!(s.put(body).await.0, 200);
        let mut body = kept.clone();
        body["datadog_api_key_expires_on"] = clear.clone();
        let (status, body) = s.put(body).await;
        assert_eq!(status, 200, "{clear}: {body}");
        assert!(body.get("datadog_api_key_expires_on").is_none(), "{body}");
    }
    assert!(s
        .history("saved", "admin@example.com")
        .await
        .contains(&"API key: expiry date removed".to_owned()));
}

#[tokio::test]
async fn monitors_are_created_through_the_api() {
    let s = Scripted::start().await;
    let api = FakeDatadogApi::start(KEY, APP_KEY).await;
    let mut settings = s.settings.clone();
    settings["datadog_api_url"] = json!(api.base_url());
    let (status, body) = s.put(settings.clone()).await;
    assert_eq!(status, 200, "{body}");

    // Without an application key: the page's explanation.
    let (status, body) = s.act("monitors", Some(&s.admin), None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Enter an application key"),
        "{body}"
    );
    assert!(api.monitors().is_empty());

    settings["datadog_app_key"] = json!(APP_KEY);
    let (status, body) = s.put(settings).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["datadog_app_key_last4"], "ef01");
    let high: Vec<u32> = cloudpki::domain::events::catalog()
        .iter()
        .filter(|e| e.criticality == cloudpki::domain::events::Criticality::High)
        .map(|e| e.id.get())
        .collect();
    let (status, body) = s.act("monitors", Some(&s.admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], high.len());
    let monitors = body["monitors"].as_array().unwrap();
    let ids: Vec<u64> = monitors
        .iter()
        .map(|m| m["event_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        high.iter().map(|id| u64::from(*id)).collect::<Vec<_>>()
    );
    for monitor in monitors {
        assert!(monitor["id"].is_i64(), "{monitor}");
        assert!(monitor["summary"].is_string(), "{monitor}");
        assert_eq!(monitor["created"], true);
    }
    assert_eq!(api.monitors().len(), high.len());

    // Again: none twice.
    let (status, body) = s.act("monitors", Some(&s.admin), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], 0);
    assert_eq!(api.creates(), high.len());
    assert_eq!(
        s.history("saved", "admin@example.com").await.last(),
        Some(&format!(
            "Create monitors: 0 created, {} already there",
            high.len()
        ))
    );
}
