//! Credential expiry: an optional "expires on" date per sealed secret, shown on the panel, and
//! reminder emails to the administrators 30, 7 and 1 days before.

use crate::support::{csrf_token, fake_datadog::FakeDatadog, texts, TestApp};
use chrono::{Duration, Utc};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";

struct Fixture {
    app: TestApp,
    sub: Uuid,
    path: String,
    intake: FakeDatadog,
}

async fn fixture() -> Fixture {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let intake = FakeDatadog::start(KEY).await;
    let path = format!("/subscriptions/{sub}/settings");
    Fixture {
        app,
        sub,
        path,
        intake,
    }
}

impl Fixture {
    async fn save(&self, key: &str, expires_on: &str) -> reqwest::Response {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        let url = self.intake.base_url();
        self.app
            .post_form(
                &self.path,
                &[
                    ("csrf_token", csrf.as_str()),
                    ("action", "save"),
                    ("siem_enabled", "on"),
                    ("provider", "datadog"),
                    ("datadog_site", "custom"),
                    ("datadog_url", url.as_str()),
                    ("datadog_api_key", key),
                    ("datadog_api_key_expires_on", expires_on),
                ],
            )
            .await
    }

    async fn reminders(&self) -> Vec<String> {
        sqlx::query_scalar(
            "select subject from notifications
             where subscription_id = $1 and kind = 'credential_expiry' order by id",
        )
        .bind(self.sub)
        .fetch_all(&self.app.pool)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn an_expiry_date_is_kept_shown_and_reminded_30_7_and_1_days_before() {
    let f = fixture().await;
    let now = Utc::now();
    let expires = (now + Duration::days(40)).date_naive();
    assert_eq!(f.save(KEY, &expires.to_string()).await.status(), 303);
    let page = f.app.get_page(&f.path).await;
    let doc = scraper::Html::parse_document(&page);
    let input = scraper::Selector::parse("input#datadog_api_key_expires_on").unwrap();
    assert_eq!(
        doc.select(&input).next().unwrap().value().attr("value"),
        Some(expires.to_string().as_str())
    );
    assert!(texts(&page, ".credential-expiry")
        .concat()
        .contains(&format!("API key expires on {expires}, in 40 days")));
    // Saving again with the date left as shown keeps it (no new secret typed).
    assert_eq!(f.save("", &expires.to_string()).await.status(), 303);

    let n = f.app.state.notifier();
    n.run_once_at(now).await.unwrap();
    assert!(f.reminders().await.is_empty(), "40 days ahead: nothing yet");
    for (days_before, expected) in [(30, 1), (25, 1), (7, 2), (1, 3), (1, 3)] {
        n.run_once_at(now + Duration::days(40 - days_before))
            .await
            .unwrap();
        assert_eq!(
            f.reminders().await.len(),
            expected,
            "{days_before} days before"
        );
    }
    let subjects = f.reminders().await;
    assert!(subjects[0].contains("expires in 30 days"), "{subjects:?}");
    assert!(subjects[1].contains("expires in 7 days"), "{subjects:?}");
    assert!(subjects[2].contains("expires tomorrow"), "{subjects:?}");
    assert!(
        subjects[0].contains("Datadog API key of Contoso PKI"),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn a_past_or_malformed_expiry_date_is_refused_at_its_field() {
    let f = fixture().await;
    let yesterday = (Utc::now() - Duration::days(1)).date_naive();
    let r = f.save(KEY, &yesterday.to_string()).await;
    assert_eq!(r.status(), 422);
    let page = r.text().await.unwrap();
    assert!(texts(&page, "#datadog_api_key_expires_on-error")
        .concat()
        .contains("That date has passed"));
    let r = f.save(KEY, "next spring").await;
    assert_eq!(r.status(), 422);
    assert!(texts(
        &r.text().await.unwrap(),
        "#datadog_api_key_expires_on-error"
    )
    .concat()
    .contains("is not a date"));
}

#[tokio::test]
async fn a_new_secret_clears_the_old_expiry_date() {
    let f = fixture().await;
    let expires = (Utc::now() + Duration::days(10)).date_naive();
    assert_eq!(f.save(KEY, &expires.to_string()).await.status(), 303);
    assert_eq!(
        f.save("fedcba9876543210fedcba9876543210", "")
            .await
            .status(),
        303
    );
    let page = f.app.get_page(&f.path).await;
    assert!(texts(&page, ".credential-expiry").is_empty());
}
