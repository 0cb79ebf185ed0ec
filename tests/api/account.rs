//! The account page: password change (which ends every other session), sign out everywhere,
//! and throttling that believes `X-Forwarded-For` only from trusted proxies.

use crate::support;
use crate::support::{csrf_token, location, login_with, new_client, TestApp};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";

async fn app_with_user() -> TestApp {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    app
}

async fn change_password(
    app: &TestApp,
    current: &str,
    new: &str,
    again: &str,
) -> reqwest::Response {
    let csrf = csrf_token(&app.get_page("/account").await);
    app.post_form(
        "/account/password",
        &[
            ("csrf_token", csrf.as_str()),
            ("current_password", current),
            ("new_password", new),
            ("new_password_confirm", again),
        ],
    )
    .await
}

async fn signed_in(client: &reqwest::Client, base: &str) -> bool {
    let r = client
        .get(format!("{base}/subscriptions"))
        .send()
        .await
        .unwrap();
    r.status() == 200
}

#[tokio::test]
async fn changing_the_password_needs_the_current_one_and_signs_out_every_other_session() {
    let app = app_with_user().await;
    let elsewhere = new_client();
    assert_eq!(
        login_with(&elsewhere, &app.base_url, "admin@example.com", PASSWORD)
            .await
            .status(),
        303
    );

    let r = change_password(&app, "not my password", NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status(), 422);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("This is not your current password."));
    let r = change_password(&app, PASSWORD, NEW_PASSWORD, "something else entirely").await;
    assert_eq!(r.status(), 422);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("The two new passwords differ."));
    let r = change_password(&app, PASSWORD, "short", "short").await;
    assert_eq!(r.status(), 422);
    assert!(
        signed_in(&elsewhere, &app.base_url).await,
        "nothing changed yet"
    );

    let r = change_password(&app, PASSWORD, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(
            "Password changed. 1 other session(s) were signed out and 0 API token(s) revoked."
        ),
        "{page}"
    );
    assert!(
        !signed_in(&elsewhere, &app.base_url).await,
        "the other session ended"
    );
    assert!(
        signed_in(&app.client, &app.base_url).await,
        "this one stays"
    );

    let fresh = new_client();
    assert_eq!(
        login_with(&fresh, &app.base_url, "admin@example.com", PASSWORD)
            .await
            .status(),
        401
    );
    assert_eq!(
        login_with(&fresh, &app.base_url, "admin@example.com", NEW_PASSWORD)
            .await
            .status(),
        303
    );
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_this_one_too() {
    let app = app_with_user().await;
    let elsewhere = new_client();
    login_with(&elsewhere, &app.base_url, "admin@example.com", PASSWORD).await;
    let page = app.get_page("/account").await;
    assert!(page.contains("2 active session(s)"), "{page}");
    let csrf = csrf_token(&page);
    let r = app
        .post_form(
            "/account/sign-out-everywhere",
            &[("csrf_token", csrf.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    assert!(!signed_in(&elsewhere, &app.base_url).await);
    assert!(!signed_in(&app.client, &app.base_url).await);
}

#[tokio::test]
async fn account_forms_need_the_csrf_token() {
    let app = app_with_user().await;
    let r = app
        .post_form(
            "/account/password",
            &[
                ("csrf_token", "forged"),
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_confirm", NEW_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = app
        .post_form("/account/sign-out-everywhere", &[("csrf_token", "forged")])
        .await;
    assert_eq!(r.status(), 403);
    assert!(signed_in(&app.client, &app.base_url).await);
}

async fn login_from(app: &TestApp, forwarded_for: &str, email: &str, password: &str) -> u16 {
    let client = new_client();
    let page = client
        .get(format!("{}/login", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    client
        .post(format!("{}/login", app.base_url))
        .header("x-forwarded-for", forwarded_for)
        .form(&[
            ("email", email),
            ("password", password),
            ("csrf_token", csrf_token(&page).as_str()),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_throttling_keys_on_the_forwarded_client() {
    let mut env = support::test_env();
    env.insert("CLOUDPKI_TRUSTED_PROXIES".into(), "127.0.0.1".into());
    let app = TestApp::spawn_with(env).await;
    for i in 0..20 {
        // Twenty different accounts from one client behind the proxy.
        let email = format!("user{i}@example.com");
        assert_eq!(
            login_from(&app, "203.0.113.7", &email, "wrong password!").await,
            401
        );
    }
    assert_eq!(
        login_from(&app, "203.0.113.7", "someone@example.com", "x").await,
        429,
        "that client is throttled"
    );
    assert_eq!(
        login_from(&app, "198.51.100.9", "someone@example.com", "x").await,
        401,
        "another client behind the same proxy is not"
    );
}

#[tokio::test]
async fn an_ipv6_client_is_throttled_by_its_64_not_per_address() {
    let mut env = support::test_env();
    env.insert("CLOUDPKI_TRUSTED_PROXIES".into(), "127.0.0.1".into());
    let app = TestApp::spawn_with(env).await;
    for i in 0..20 {
        // A flood that picks a new address of its /64 for every guess.
        let from = format!("2001:db8:1:2::{:x}", i + 1);
        let email = format!("user{i}@example.com");
        assert_eq!(
            login_from(&app, &from, &email, "wrong password!").await,
            401
        );
    }
    assert_eq!(
        login_from(&app, "2001:db8:1:2:ffff::9", "someone@example.com", "x").await,
        429,
        "the whole /64 is throttled"
    );
    assert_eq!(
        login_from(&app, "2001:db8:1:3::1", "someone@example.com", "x").await,
        401,
        "the next /64 is not"
    );
}

/// Creates a personal API token on the Account page; the answer's status and the token.
async fn create_token(app: &TestApp, password: &str) -> (u16, Option<String>) {
    let csrf = csrf_token(&app.get_page("/account").await);
    let r = app
        .post_form(
            "/account/tokens",
            &[
                ("csrf_token", csrf.as_str()),
                ("name", "terraform"),
                ("current_password", password),
            ],
        )
        .await;
    let code = r.status().as_u16();
    let page = r.text().await.unwrap();
    (code, support::input_value(&page, "new_api_token"))
}

/// Whether a personal API token still works on the REST API.
async fn token_works(app: &TestApp, token: &str) -> bool {
    let sub: uuid::Uuid = sqlx::query_scalar("select id from subscriptions limit 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .get(app.url(&format!("/api/v1/subscriptions/{sub}/siem")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    r.status() == 200
}

#[tokio::test]
async fn creating_an_api_token_asks_for_the_current_password() {
    let app = app_with_user().await;
    // A session alone (a stolen cookie) mints nothing.
    for wrong in ["", "not my password"] {
        let (code, token) = create_token(&app, wrong).await;
        assert_eq!(code, 422, "{wrong:?}");
        assert!(token.is_none());
    }
    let tokens: i64 = sqlx::query_scalar("select count(*) from personal_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
    let (code, token) = create_token(&app, PASSWORD).await;
    assert_eq!(code, 200);
    assert!(token_works(&app, &token.unwrap()).await);
}

#[tokio::test]
async fn sign_out_everywhere_and_a_password_change_revoke_api_tokens_unless_kept() {
    let app = app_with_user().await;
    let (_, first) = create_token(&app, PASSWORD).await;
    let first = first.unwrap();
    let (_, second) = create_token(&app, PASSWORD).await;
    let second = second.unwrap();
    // A password change with the box ticked keeps them.
    let csrf = csrf_token(&app.get_page("/account").await);
    let r = app
        .post_form(
            "/account/password",
            &[
                ("csrf_token", csrf.as_str()),
                ("current_password", PASSWORD),
                ("new_password", NEW_PASSWORD),
                ("new_password_confirm", NEW_PASSWORD),
                ("keep_api_tokens", "on"),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(token_works(&app, &first).await);
    // Without it, they go.
    let r = change_password(&app, NEW_PASSWORD, PASSWORD, PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("2 API token(s) revoked"));
    assert!(!token_works(&app, &first).await);
    assert!(!token_works(&app, &second).await);

    let (_, third) = create_token(&app, PASSWORD).await;
    let third = third.unwrap();
    let page = app.get_page("/account").await;
    assert!(page.contains("revokes your API tokens"), "the page says so");
    let r = app
        .post_form(
            "/account/sign-out-everywhere",
            &[("csrf_token", csrf_token(&page).as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        !token_works(&app, &third).await,
        "Sign out everywhere revoked it"
    );
}

#[tokio::test]
async fn a_sign_in_marks_the_browser_as_a_known_device_for_that_account() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    let r = login_with(&new_client(), &app.base_url, "admin@example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let device = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("cloudpki_device="))
        .expect("a known-device cookie")
        .to_owned();
    assert!(
        device.contains("HttpOnly") && device.contains("SameSite=Strict"),
        "{device}"
    );
    // A wrong password sets none: only proof of the password marks a browser.
    let r = login_with(
        &new_client(),
        &app.base_url,
        "admin@example.com",
        "not the password",
    )
    .await;
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .all(|c| !c.starts_with("cloudpki_device=")));
}
