//! The first-run setup link.

use crate::support;
use crate::support::{csrf_token, location, TestApp};

const PASSWORD: &str = "correct horse battery staple";

fn path_of(link: &str) -> String {
    let url = url::Url::parse(link).unwrap();
    url.path().to_owned()
}

#[tokio::test]
async fn the_setup_link_creates_the_first_admin_and_then_is_dead() {
    let app = TestApp::spawn().await;
    let link = app
        .setup_link
        .clone()
        .expect("empty database issues a setup link");
    let path = path_of(&link);
    let page = app.get_page(&path).await;
    let csrf = csrf_token(&page);
    let r = app
        .post_form(
            &path,
            &[
                ("email", "first@example.com"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
                ("subscription_name", "Contoso PKI"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let settings = location(&r);
    assert!(settings.ends_with("/settings"), "{settings}");
    // Signed in right away, as an admin of the new subscription.
    let page = app.get_page(&settings).await;
    assert!(page.contains("Contoso PKI"));
    assert!(page.contains("admin"));
    // The link is dead now, for GET and POST alike.
    assert_eq!(app.get(&path).await.status(), 404);
    let again = app
        .post_form(
            &path,
            &[
                ("email", "second@example.com"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
                ("subscription_name", "Other"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(again.status(), 404);
    let users: i64 = sqlx::query_scalar("select count(*) from users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[tokio::test]
async fn the_setup_form_shows_every_error_at_once_and_keeps_what_was_typed() {
    let app = TestApp::spawn().await;
    let path = path_of(app.setup_link.as_deref().unwrap());
    let csrf = csrf_token(&app.get_page(&path).await);
    let r = app
        .post_form(
            &path,
            &[
                ("email", "not-an-email"),
                ("password", "short"),
                ("password_confirm", "different"),
                ("subscription_name", " "),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    let errors = support::texts(&page, ".field-error");
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert_eq!(
        support::input_value(&page, "email").as_deref(),
        Some("not-an-email")
    );
    assert!(!page.contains("short\""), "passwords are not sent back");
}

#[tokio::test]
async fn a_wrong_setup_token_is_404() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/setup/not-the-token").await.status(), 404);
}

#[tokio::test]
async fn no_setup_link_once_a_user_exists() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    app.create_user("a@example.com", PASSWORD, sub, "admin")
        .await;
    let path = path_of(app.setup_link.as_deref().unwrap());
    assert_eq!(app.get(&path).await.status(), 404);
}

#[tokio::test]
async fn a_setup_link_older_than_24_hours_is_dead() {
    let app = TestApp::spawn().await;
    let path = path_of(app.setup_link.as_deref().unwrap());
    assert_eq!(app.get(&path).await.status(), 200);
    sqlx::query("update setup_tokens set created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get(&path).await.status(), 404);
}

fn admin_setup_link(app: &TestApp) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cloudpki"))
        .args(["admin", "setup-link"])
        .env("DATABASE_URL", app.database_url())
        .env("CLOUDPKI_MASTER_KEY", app.master_key.to_base64())
        .env("CLOUDPKI_PUBLIC_URL", &app.base_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_setup_link_prints_a_fresh_link_and_the_old_one_stops_working() {
    let app = TestApp::spawn().await;
    let old = path_of(app.setup_link.as_deref().unwrap());
    let out = admin_setup_link(&app);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/setup/", app.base_url)),
        "{link}"
    );
    assert_eq!(app.get(&path_of(&link)).await.status(), 200);
    assert_eq!(app.get(&old).await.status(), 404);

    app.create_subscription("S").await;
    sqlx::query("insert into users (id, email, password_hash) values (gen_random_uuid(), 'a@example.com', 'x')")
        .execute(&app.pool)
        .await
        .unwrap();
    let out = admin_setup_link(&app);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("an administrator exists already"));
}
