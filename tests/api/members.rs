//! The Members page: invitations (a one-time link valid 7 days, shown once without SMTP,
//! emailed with it), accepting as a new or an existing user, role changes and removals that
//! always keep an administrator, and history rows.

use crate::support;
use crate::support::{csrf_token, input_value, login_with, new_client, page_with, texts, TestApp};

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
    assert!(
        invite_page.contains("Password again (new accounts only)"),
        "{invite_page}"
    );
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
    assert!(invite_page.contains(">Join</button>"));
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
        .contains("Password again (new accounts only)"));
    // Once sent, the stored message keeps no link: it is a credential.
    let kept: i64 = sqlx::query_scalar(
        "select count(*) from notifications where text_body like '%/invite/%' or html_body like '%/invite/%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, 0);
}

/// The link of a new invitation (no SMTP: shown once on the answer).
async fn invite_link(app: &TestApp, path: &str, email: &str, role: &str) -> String {
    let page = invite(app, path, email, role).await.text().await.unwrap();
    input_value(&page, "invite_link").expect("the link is shown without SMTP")
}

async fn user_id(app: &TestApp, email: &str) -> uuid::Uuid {
    sqlx::query_scalar("select id from users where email = $1")
        .bind(email)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// `sender` (an administrator) signs in with a browser of their own and invites `email` as an
/// administrator; the link shown (no SMTP).
async fn invite_as(app: &TestApp, path: &str, sender: &str, email: &str) -> String {
    let client = new_client();
    login_with(&client, &app.base_url, sender, PASSWORD).await;
    let page = page_with(&client, &app.url(path)).await;
    let r = client
        .post(app.url(&format!("{path}/invite")))
        .form(&[
            ("csrf_token", csrf_token(&page).as_str()),
            ("email", email),
            ("role", "admin"),
        ])
        .send()
        .await
        .unwrap();
    input_value(&r.text().await.unwrap(), "invite_link").unwrap()
}

/// Opens an invitation link while it works: a browser with the form's CSRF token.
async fn open_invite(link: &str) -> (reqwest::Client, String) {
    let client = new_client();
    let page = page_with(&client, link).await;
    let csrf = csrf_token(&page);
    (client, csrf)
}

/// Accepts an opened invitation as a new account; the status of the answer.
async fn accept_opened(opened: &(reqwest::Client, String), link: &str, password: &str) -> u16 {
    let (client, csrf) = opened;
    client
        .post(link)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("password", password),
            ("password_confirm", password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Accepts an invitation as a new account; the status of the answer.
async fn accept_as_new(link: &str, password: &str) -> u16 {
    accept_opened(&open_invite(link).await, link, password).await
}

#[tokio::test]
async fn a_removed_administrators_invitation_no_longer_lets_anyone_in() {
    let (app, sub, path) = admin_app().await;
    // A second administrator invites an address as admin, then is removed by the first.
    let mallory = app
        .create_user("mallory@example.com", PASSWORD, sub, "admin")
        .await;
    let link = invite_as(
        &app,
        &path,
        "mallory@example.com",
        "mallory-too@example.com",
    )
    .await;
    let opened = open_invite(&link).await;
    assert_eq!(
        member_action(&app, &path, "remove", mallory, "").await.0,
        200
    );
    assert!(
        !app.get_page(&path)
            .await
            .contains("mallory-too@example.com"),
        "no longer listed as open"
    );
    assert_eq!(new_client().get(&link).send().await.unwrap().status(), 404);
    assert_eq!(
        accept_opened(&opened, &link, "a long mallory password").await,
        404
    );
    let members: i64 =
        sqlx::query_scalar("select count(*) from memberships where subscription_id = $1")
            .bind(sub)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(members, 1, "only the first administrator is left");
}

#[tokio::test]
async fn demoting_an_administrator_revokes_the_invitations_they_sent_and_acceptance_checks_the_sender(
) {
    let (app, sub, path) = admin_app().await;
    let second = app
        .create_user("second@example.com", PASSWORD, sub, "admin")
        .await;
    let link = invite_as(&app, &path, "second@example.com", "friend@example.com").await;
    let opened = open_invite(&link).await;
    assert_eq!(
        member_action(&app, &path, "role", second, "reader").await.0,
        200
    );
    assert_eq!(
        accept_opened(&opened, &link, "a long friend password").await,
        404
    );

    // Even an invitation not revoked (made before senders were recorded, say) needs its sender
    // to be an administrator when it is accepted.
    let link = invite_link(&app, &path, "later@example.com", "admin").await;
    let opened = open_invite(&link).await;
    let first = user_id(&app, "admin@example.com").await;
    sqlx::query("update memberships set role = 'reader' where user_id = $1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        accept_opened(&opened, &link, "a long later password").await,
        404
    );
}

#[tokio::test]
async fn an_open_invitation_can_be_revoked_and_its_link_stops_working() {
    let (app, sub, path) = admin_app().await;
    let link = invite_link(&app, &path, "oops@example.com", "reader").await;
    let page = app.get_page(&path).await;
    let invite_id: uuid::Uuid =
        sqlx::query_scalar("select id from invites where email = 'oops@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        page.contains(&format!(r#"name="invite_id" value="{invite_id}""#)),
        "a Revoke button per invitation"
    );
    let r = app
        .post_form(
            &format!("{path}/invites/revoke"),
            &[
                ("csrf_token", &csrf_token(&page)),
                ("invite_id", &invite_id.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(texts(&r.text().await.unwrap(), "[role=status]")
        .join(" ")
        .contains("Revoked the invitation of oops@example.com"));
    assert_eq!(new_client().get(&link).send().await.unwrap().status(), 404);
    let again = app
        .post_form(
            &format!("{path}/invites/revoke"),
            &[
                ("csrf_token", &csrf_token(&app.get_page(&path).await)),
                ("invite_id", &invite_id.to_string()),
            ],
        )
        .await;
    assert_eq!(again.status(), 404);
    let history = texts(
        &app.get_page(&format!("/subscriptions/{sub}/settings"))
            .await,
        "table.history td",
    )
    .join(" ");
    assert!(
        history.contains("Revoked the invitation of oops@example.com"),
        "{history}"
    );
}

#[tokio::test]
async fn the_invitation_page_does_not_reveal_whether_the_address_has_an_account() {
    let (app, sub, path) = admin_app().await;
    let other = app.create_subscription("Fabrikam PKI").await;
    app.create_user("known@example.com", PASSWORD, other, "reader")
        .await;
    let known = invite_link(&app, &path, "known@example.com", "reader").await;
    let unknown = invite_link(&app, &path, "unknown@example.com", "reader").await;
    let form = |page: &str| {
        let labels = texts(page, "form label").join("|");
        let buttons = texts(page, "form button").join("|");
        (labels, buttons)
    };
    let a = form(&page_with(&new_client(), &known).await);
    let b = form(&page_with(&new_client(), &unknown).await);
    assert_eq!(a, b);
    let _ = sub;
}

#[tokio::test]
async fn an_admin_of_one_subscription_cannot_reach_another_through_an_invitation_and_create_user() {
    let (app, _sub, path) = admin_app().await;
    let other = app.create_subscription("Fabrikam PKI").await;
    // Without SMTP, the admin of Contoso accepts their own invitation for someone else's address.
    let link = invite_link(&app, &path, "victim@corp.example", "reader").await;
    assert_eq!(accept_as_new(&link, "the admin knows this one").await, 303);
    // Later an operator grants that address a role in Fabrikam.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudpki"))
        .args([
            "admin",
            "create-user",
            "--email",
            "victim@corp.example",
            "--subscription",
            &other.to_string(),
            "--role",
            "admin",
        ])
        .env("DATABASE_URL", app.database_url())
        .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let _ = writeln!(child.stdin.take().unwrap(), "{PASSWORD}");
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no admin command made"), "{stderr}");
    assert!(
        stderr.contains("Invite the address"),
        "says what to do: {stderr}"
    );
    let roles: i64 = sqlx::query_scalar(
        "select count(*) from memberships m join users u on u.id = m.user_id
         where u.email = 'victim@corp.example' and m.subscription_id = $1",
    )
    .bind(other)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(roles, 0);
}
