//! Sign-in, sign-out, sessions, CSRF and throttling.

use crate::support;
use crate::support::{csrf_token, location, login_with, new_client, texts, TestApp};

const PASSWORD: &str = "correct horse battery staple";

async fn app_with_admin() -> (TestApp, uuid::Uuid) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    (app, sub)
}

fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("cloudpki_session=") && !c.starts_with("cloudpki_session=;"))
        .map(str::to_owned)
}

#[tokio::test]
async fn login_with_the_right_password_leads_to_the_subscriptions() {
    let (app, _) = app_with_admin().await;
    let r = app.login("Admin@Example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/subscriptions");
    let page = app.get_page("/subscriptions").await;
    assert!(page.contains("Contoso PKI"));
    assert!(page.contains("admin@example.com"));
}

#[tokio::test]
async fn a_failed_login_says_only_wrong_email_or_password() {
    let (app, _) = app_with_admin().await;
    let wrong_password = app.login("admin@example.com", "not the password").await;
    assert_eq!(wrong_password.status(), 401);
    let wrong_password = wrong_password.text().await.unwrap();
    let unknown_user = app.login("nobody@example.com", PASSWORD).await;
    assert_eq!(unknown_user.status(), 401);
    let unknown_user = unknown_user.text().await.unwrap();
    for page in [&wrong_password, &unknown_user] {
        assert_eq!(
            texts(page, "[role=alert]"),
            vec!["Wrong email or password."]
        );
    }
    assert_eq!(app.get("/subscriptions").await.status(), 303);
}

#[tokio::test]
async fn login_without_or_with_a_wrong_csrf_token_is_refused() {
    let (app, _) = app_with_admin().await;
    let _ = app.get("/login").await; // sets the CSRF cookie
    for token in ["", "forged-token-forged-token-forged-token"] {
        let r = app
            .post_form(
                "/login",
                &[
                    ("email", "admin@example.com"),
                    ("password", PASSWORD),
                    ("csrf_token", token),
                ],
            )
            .await;
        assert_eq!(r.status(), 403, "token {token:?}");
        assert!(r.text().await.unwrap().contains("This form has expired"));
    }
    // A cross-site request carries no CSRF cookie at all.
    let r = new_client()
        .post(app.url("/login"))
        .form(&[
            ("email", "admin@example.com"),
            ("password", PASSWORD),
            ("csrf_token", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn the_session_cookie_is_httponly_and_samesite() {
    let (app, _) = app_with_admin().await;
    let r = app.login("admin@example.com", PASSWORD).await;
    let cookie = session_cookie(&r).expect("session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain http public URL: {cookie}"
    );
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_public_url_is_https() {
    let mut env = support::test_env();
    env.insert(
        "CLOUDPKI_PUBLIC_URL".into(),
        "https://pki.example.com".into(),
    );
    let app = TestApp::spawn_with(env).await;
    let sub = app.create_subscription("S").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    // reqwest's cookie store would not send a Secure cookie over http, so read the header.
    let r = app.login("admin@example.com", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookie = session_cookie(&r).expect("session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn the_session_id_is_renewed_at_login() {
    let (app, _) = app_with_admin().await;
    let first = session_cookie(&app.login("admin@example.com", PASSWORD).await).unwrap();
    // Signed in, the sign-in page redirects; post the form again with the same CSRF cookie.
    let csrf = app
        .client
        .get(app.url("/login"))
        .header("cookie", "cloudpki_session=none")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_token(&csrf);
    let again = app
        .post_form(
            "/login",
            &[
                ("email", "admin@example.com"),
                ("password", PASSWORD),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    let second = session_cookie(&again).unwrap();
    let value = |c: &str| c.split(';').next().unwrap().to_owned();
    assert_ne!(value(&first), value(&second));
    // The old session no longer works.
    let r = new_client()
        .get(app.url("/subscriptions"))
        .header("cookie", value(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    let count: i64 = sqlx::query_scalar("select count(*) from sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn repeated_failures_throttle_the_account_even_for_the_right_password() {
    let (app, _) = app_with_admin().await;
    for _ in 0..5 {
        assert_eq!(
            app.login("admin@example.com", "wrong password!")
                .await
                .status(),
            401
        );
    }
    let r = app.login("admin@example.com", PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Too many failed sign-in attempts"));
}

#[tokio::test]
async fn repeated_failures_from_one_address_throttle_that_address() {
    let (app, _) = app_with_admin().await;
    for i in 0..20 {
        let r = app
            .login(&format!("user{i}@example.com"), "wrong password!")
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = app.login("admin@example.com", PASSWORD).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_ends_the_session() {
    let (app, _) = app_with_admin().await;
    app.login("admin@example.com", PASSWORD).await;
    let page = app.get_page("/subscriptions").await;
    let r = app.post_form("/logout", &[("csrf_token", "wrong")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.get("/subscriptions").await.status(), 200);
    let r = app
        .post_form("/logout", &[("csrf_token", &csrf_token(&page))])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    assert_eq!(app.get("/subscriptions").await.status(), 303);
}

#[tokio::test]
async fn pages_need_a_session() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    for path in [
        "/subscriptions".to_owned(),
        format!("/subscriptions/{sub}/settings"),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(location(&r), "/login");
    }
    let r = login_with(&app.client, &app.base_url, "x@example.com", "y").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_parallel_guesses_gets_only_the_allowance_evaluated() {
    let (app, _) = app_with_admin().await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let base = app.base_url.clone();
        burst.spawn(async move {
            let client = support::new_client();
            support::login_with(&client, &base, "admin@example.com", "wrong password!")
                .await
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = burst.join_next().await {
        statuses.push(status.unwrap());
    }
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(evaluated, 5, "{statuses:?}");
    assert_eq!(refused, 35, "{statuses:?}");
}
