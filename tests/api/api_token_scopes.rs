//! Personal API tokens carry a scope: `read` (GET only) or `write`, optionally one subscription,
//! and may expire (a last day chosen at creation, shown in the list). Made on the Account page
//! or with `cloudpki admin create-api-token`.

use crate::support;
use crate::support::{csrf_token, login_with, new_client, texts, TestApp};
use serde_json::json;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

/// Signs `email` in and creates a token on the Account page with these extra fields; the
/// answer's status and page.
async fn create_on_page(
    app: &TestApp,
    email: &str,
    fields: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let client = new_client();
    assert_eq!(
        login_with(&client, &app.base_url, email, PASSWORD)
            .await
            .status(),
        303
    );
    let page = support::page_with(&client, &app.url("/account")).await;
    let csrf = csrf_token(&page);
    let mut form = vec![
        ("csrf_token", csrf.as_str()),
        ("name", "script"),
        ("current_password", PASSWORD),
    ];
    form.extend_from_slice(fields);
    let answer = client
        .post(app.url("/account/tokens"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let page = answer.text().await.unwrap();
    let token = support::input_value(&page, "new_api_token");
    (status, page, token)
}

async fn call(app: &TestApp, method: reqwest::Method, path: &str, token: &str) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method.clone(), app.url(path))
        .bearer_auth(token);
    if method != reqwest::Method::GET {
        request = request
            .header("Content-Type", "application/merge-patch+json")
            .body(json!({ "send_event_ids": [4888] }).to_string());
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test]
async fn a_read_token_reads_the_settings_and_is_refused_every_change() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let (status, page, token) =
        create_on_page(&app, "admin@example.com", &[("scope", "read")]).await;
    assert_eq!(status, 200, "{page}");
    let token = token.expect("shown once");
    assert!(texts(&page, "#api-tokens td")
        .iter()
        .any(|t| t == "read, all your subscriptions"));

    let siem = format!("/api/v1/subscriptions/{sub}/siem");
    assert_eq!(call(&app, reqwest::Method::GET, &siem, &token).await.0, 200);
    for (method, path) in [
        (reqwest::Method::PUT, siem.clone()),
        (reqwest::Method::PATCH, siem.clone()),
        (reqwest::Method::POST, format!("{siem}/pause")),
    ] {
        let (status, body) = call(&app, method.clone(), &path, &token).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("read-only"), "{body}");
    }
    // Nothing changed: no history row but the first-run nothing.
    let saved: i64 =
        sqlx::query_scalar("select count(*) from siem_settings_history where subscription_id = $1")
            .bind(sub)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(saved, 0);

    // A scope that is neither is explained, and no token is made.
    let (status, page, token) =
        create_on_page(&app, "admin@example.com", &[("scope", "admin")]).await;
    assert_eq!(status, 422);
    assert!(token.is_none());
    assert!(texts(&page, "#token_scope-error")
        .join(" ")
        .contains("read"));
}

#[tokio::test]
async fn a_token_for_one_subscription_answers_404_for_every_other() {
    let app = TestApp::spawn().await;
    let mine = app.create_subscription("Contoso PKI").await;
    let other = app.create_subscription("Fabrikam PKI").await;
    let user = app
        .create_user("admin@example.com", PASSWORD, mine, "admin")
        .await;
    app.add_member(user, other, "admin").await;
    let mine_text = mine.to_string();
    let (status, page, token) = create_on_page(
        &app,
        "admin@example.com",
        &[("scope", "write"), ("subscription", &mine_text)],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let token = token.expect("shown once");
    assert!(texts(&page, "#api-tokens td")
        .iter()
        .any(|t| t == "write, Contoso PKI"));
    let path = |sub: Uuid| format!("/api/v1/subscriptions/{sub}/siem");
    assert_eq!(
        call(&app, reqwest::Method::GET, &path(mine), &token)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, reqwest::Method::GET, &path(other), &token)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&app, reqwest::Method::PATCH, &path(other), &token)
            .await
            .0,
        404
    );

    // A subscription the user is not a member of cannot be chosen.
    let stranger = app.create_subscription("Someone else's").await.to_string();
    let (status, page, token) =
        create_on_page(&app, "admin@example.com", &[("subscription", &stranger)]).await;
    assert_eq!(status, 422);
    assert!(token.is_none());
    assert!(!texts(&page, "#token_subscription-error").is_empty());
}

#[tokio::test]
async fn a_token_stops_at_the_end_of_its_last_day_and_says_so() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let today = chrono::Utc::now().date_naive();
    let last_day = (today + chrono::Days::new(30)).to_string();
    let (status, page, token) =
        create_on_page(&app, "admin@example.com", &[("expires_on", &last_day)]).await;
    assert_eq!(status, 200, "{page}");
    let token = token.expect("shown once");
    assert!(texts(&page, "#api-tokens td")
        .iter()
        .any(|t| *t == format!("until {last_day}")));
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    assert_eq!(call(&app, reqwest::Method::GET, &path, &token).await.0, 200);

    // Its time passes (moved in the database, relative to now).
    sqlx::query("update personal_tokens set expires_at = now() - interval '1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = call(&app, reqwest::Method::GET, &path, &token).await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
    let client = new_client();
    login_with(&client, &app.base_url, "admin@example.com", PASSWORD).await;
    let list = support::page_with(&client, &app.url("/account")).await;
    assert!(texts(&list, "#api-tokens td")
        .iter()
        .any(|t| t.starts_with("expired on ")));

    // A last day in the past is refused.
    let yesterday = (today - chrono::Days::new(1)).to_string();
    let (status, page, token) =
        create_on_page(&app, "admin@example.com", &[("expires_on", &yesterday)]).await;
    assert_eq!(status, 422);
    assert!(token.is_none());
    assert!(!texts(&page, "#token_expires_on-error").is_empty());
}

#[tokio::test]
async fn the_cli_makes_scoped_tokens_and_refuses_a_subscription_the_user_is_not_in() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    let other = app.create_subscription("Fabrikam PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let run = |extra: Vec<String>| {
        let mut args = vec![
            "admin".to_owned(),
            "create-api-token".to_owned(),
            "--email".to_owned(),
            "admin@example.com".to_owned(),
        ];
        args.extend(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_cloudpki"))
            .args(&args)
            .env("DATABASE_URL", app.database_url())
            .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
            .output()
            .unwrap()
    };
    let made = run(vec![
        "--scope".into(),
        "read".into(),
        "--subscription".into(),
        sub.to_string(),
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let path = format!("/api/v1/subscriptions/{sub}/siem");
    assert_eq!(call(&app, reqwest::Method::GET, &path, &token).await.0, 200);
    assert_eq!(
        call(&app, reqwest::Method::PATCH, &path, &token).await.0,
        403
    );

    let refused = run(vec!["--subscription".into(), other.to_string()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--subscription"));
    let refused = run(vec!["--scope".into(), "admin".into()]);
    assert_eq!(refused.status.code(), Some(2));
}
