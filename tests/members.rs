//! The Members page: invitations (a one-time link valid 7 days, shown once without SMTP,
//! emailed with it), accepting as a new or an existing user, role changes and removals that
//! always keep an administrator, and history rows.

mod support;

use support::{csrf_token, input_value, login_with, new_client, page_with, texts, TestApp};

const PASSWORD: &str = "correct horse battery staple";

async fn admin_app() -> (TestApp, uuid::Uuid, String) {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let path = format!("/subscriptions/{sub}/members");
    (app, sub, path)
}

async fn invite(app: &TestApp, path: &str, email: &str, role: &str) -> reqwest::Response {
    let page = app.get_page(path).await;
    app.post_form(
        &format!("{path}/invite"),
        &[
            ("csrf_token", &csrf_token(&page)),
            ("email", email),
            ("role", role),
        ],
    )
    .await
}

async fn member_action(
    app: &TestApp,
    path: &str,
    action: &str,
    user: uuid::Uuid,
    role: &str,
) -> (u16, String) {
    let page = app.get_page(path).await;
    let r = app
        .post_form(
            &format!("{path}/{action}"),
            &[
                ("csrf_token", &csrf_token(&page)),
                ("user_id", &user.to_string()),
                ("role", role),
            ],
        )
        .await;
    (
        r.status().as_u16(),
        texts(&r.text().await.unwrap(), "[role=status]").join(" "),
    )
}

#[tokio::test]
async fn an_invited_colleague_sets_a_password_joins_and_is_signed_in() {
    let (app, sub, path) = admin_app().await;
    let r = invite(&app, &path, "Colleague@Example.com", "reader").await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let link = input_value(&page, "invite_link").expect("the link is shown once without SMTP");
    assert!(
        !app.get_page(&path).await.contains(&link),
        "shown only once"
    );
    assert!(texts(&app.get_page(&path).await, "#invites td")
        .iter()
        .any(|t| t == "colleague@example.com"));

    // The colleague, in another browser.
    let colleague = new_client();
    let invite_page = page_with(&colleague, &link).await;
    assert!(invite_page.contains("Choose a password"), "{invite_page}");
    let short = colleague
        .post(&link)
        .form(&[
            ("csrf_token", csrf_token(&invite_page).as_str()),
            ("password", "short"),
            ("password_confirm", "short"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 422);
    let joined = colleague
        .post(&link)
        .form(&[
            ("csrf_token", csrf_token(&invite_page).as_str()),
            ("password", "a long colleague password"),
            ("password_confirm", "a long colleague password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 303);
    let settings = page_with(
        &colleague,
        &app.url(&format!("/subscriptions/{sub}/settings")),
    )
    .await;
    assert!(settings.contains("Contoso PKI"), "signed in and a member");
    assert_eq!(
        colleague.get(&link).send().await.unwrap().status(),
        404,
        "the link works once"
    );
    // They can sign in later with that password.
    assert_eq!(
        login_with(
            &new_client(),
            &app.base_url,
            "colleague@example.com",
            "a long colleague password"
        )
        .await
        .status(),
        303
    );
    let history = texts(
        &app.get_page(&format!("/subscriptions/{sub}/settings"))
            .await,
        "table.history td",
    )
    .join(" ");
    assert!(
        history.contains("Invited colleague@example.com as reader"),
        "{history}"
    );
}

#[tokio::test]
async fn an_existing_user_joins_with_their_password_and_expired_links_do_not_work() {
    let (app, sub, path) = admin_app().await;
    let other = app.create_subscription("Fabrikam PKI").await;
    app.create_user("bob@example.com", PASSWORD, other, "admin")
        .await;
    let page = invite(&app, &path, "bob@example.com", "admin")
        .await
        .text()
        .await
        .unwrap();
    let link = input_value(&page, "invite_link").unwrap();
    let bob = new_client();
    let invite_page = page_with(&bob, &link).await;
    assert!(invite_page.contains("Sign in and join"));
    let wrong = bob
        .post(&link)
        .form(&[
            ("csrf_token", csrf_token(&invite_page).as_str()),
            ("password", "not it at all"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 422);
    let joined = bob
        .post(&link)
        .form(&[
            ("csrf_token", csrf_token(&invite_page).as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 303);
    assert_eq!(
        bob.get(app.url(&format!("/subscriptions/{sub}/members")))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "joined as an administrator"
    );

    let page = invite(&app, &path, "late@example.com", "reader")
        .await
        .text()
        .await
        .unwrap();
    let link = input_value(&page, "invite_link").unwrap();
    sqlx::query("update invites set expires_at = now() - interval '1 second' where email = 'late@example.com'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(new_client().get(&link).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_last_administrator_can_be_neither_demoted_nor_removed() {
    let (app, sub, path) = admin_app().await;
    let admin: uuid::Uuid =
        sqlx::query_scalar("select id from users where email = 'admin@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    for (action, role) in [("role", "reader"), ("remove", "")] {
        let (code, status) = member_action(&app, &path, action, admin, role).await;
        assert_eq!(code, 409, "{action}");
        assert!(status.contains("at least one administrator"), "{status}");
    }

    // Removing a reader.
    let third = app
        .create_user("third@example.com", PASSWORD, sub, "reader")
        .await;
    assert_eq!(member_action(&app, &path, "remove", third, "").await.0, 200);
    assert!(!app.get_page(&path).await.contains("third@example.com"));

    // With a second administrator, the first may step down.
    let second = app
        .create_user("second@example.com", PASSWORD, sub, "reader")
        .await;
    assert_eq!(
        member_action(&app, &path, "role", second, "admin").await.0,
        200
    );
    assert_eq!(
        member_action(&app, &path, "role", admin, "reader").await.0,
        200
    );
    assert_eq!(app.get(&path).await.status(), 403, "a reader now");
    let history = texts(
        &app.get_page(&format!("/subscriptions/{sub}/settings"))
            .await,
        "table.history td",
    )
    .join(" ");
    assert!(
        history.contains("Role of second@example.com set to admin"),
        "{history}"
    );
    assert!(
        history.contains("Role of admin@example.com set to reader"),
        "{history}"
    );
}

#[tokio::test]
async fn with_smtp_the_invitation_is_emailed_and_never_shown() {
    let sink = support::smtp::SmtpSink::start().await;
    let mut env = support::test_env();
    env.insert("CLOUDPKI_SMTP_URL".into(), sink.url());
    let app = TestApp::spawn_with(env).await;
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let path = format!("/subscriptions/{sub}/members");
    let page = invite(&app, &path, "colleague@example.com", "reader")
        .await
        .text()
        .await
        .unwrap();
    assert!(input_value(&page, "invite_link").is_none(), "not shown");
    assert!(texts(&page, "[role=status]").join(" ").contains("emailed"));
    app.state
        .notifier()
        .run_once_at(chrono::Utc::now())
        .await
        .unwrap();
    let messages = sink.messages();
    let mail = messages
        .iter()
        .find(|m| m.to == ["colleague@example.com"])
        .expect("the invitation is emailed");
    let link = mail
        .text
        .split_whitespace()
        .find(|w| w.contains("/invite/"))
        .expect("a link in the email")
        .to_owned();
    let colleague = new_client();
    assert!(page_with(&colleague, &link)
        .await
        .contains("Choose a password"));
}
