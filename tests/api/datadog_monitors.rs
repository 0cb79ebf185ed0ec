//! Create monitors: one Datadog `log alert` monitor per High catalog event, against a strict
//! fake of Datadog's monitors API (both keys checked, the body as Datadog documents it).

use crate::support::{
    csrf_token, fake_datadog::FakeDatadog, fake_datadog_api::FakeDatadogApi, texts, TestApp,
};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const APP_KEY: &str = "abcdef0123456789abcdef0123456789abcdef01";

struct Fixture {
    app: TestApp,
    sub: Uuid,
    path: String,
    intake: FakeDatadog,
    api: FakeDatadogApi,
}

async fn fixture() -> Fixture {
    let (app, sub) = TestApp::signed_in_admin(PASSWORD).await;
    let intake = FakeDatadog::start(KEY).await;
    let api = FakeDatadogApi::start(KEY, APP_KEY).await;
    let path = format!("/subscriptions/{sub}/settings");
    Fixture {
        app,
        sub,
        path,
        intake,
        api,
    }
}

impl Fixture {
    async fn save(&self, app_key: &str) -> reqwest::Response {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        let (url, api) = (self.intake.base_url(), self.api.base_url());
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
                    ("datadog_api_key", KEY),
                    ("datadog_api_url", api.as_str()),
                    ("datadog_app_key", app_key),
                ],
            )
            .await
    }

    async fn press(&self) -> (u16, String) {
        let page = self.app.get_page(&self.path).await;
        let csrf = csrf_token(&page);
        let r = self
            .app
            .post_form(
                &format!("{}/monitors", self.path),
                &[("csrf_token", csrf.as_str())],
            )
            .await;
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn high_events() -> Vec<u32> {
    cloudpki::domain::events::catalog()
        .iter()
        .filter(|e| e.criticality == cloudpki::domain::events::Criticality::High)
        .map(|e| e.id.get())
        .collect()
}

#[tokio::test]
async fn create_monitors_makes_one_log_alert_per_high_event_and_pressing_again_makes_none() {
    let f = fixture().await;
    assert_eq!(f.save(APP_KEY).await.status(), 303);
    // The application key is write-only: only its last four characters come back.
    let page = f.app.get_page(&f.path).await;
    assert!(!page.contains(APP_KEY));
    assert!(texts(&page, "#datadog_app_key-state")
        .concat()
        .contains("ef01"));

    let (status, page) = f.press().await;
    assert_eq!(status, 200, "{page}");
    let high = high_events();
    let monitors = f.api.monitors();
    assert_eq!(monitors.len(), high.len());
    for (monitor, id) in monitors.iter().zip(&high) {
        assert_eq!(monitor["type"], "log alert");
        let query = monitor["query"].as_str().unwrap();
        assert!(
            query.contains(&format!("service:EZCA @EventID:{id}")),
            "{query}"
        );
        assert!(
            query.contains(&f.sub.to_string()),
            "scoped to the subscription"
        );
        let tags: Vec<&str> = monitor["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(tags.contains(&"managed-by:cloudpki"), "{tags:?}");
    }
    assert_eq!(texts(&page, "#monitor-links li").len(), high.len());
    assert!(texts(&page, "[role=status] .status-message")
        .concat()
        .contains(&format!("{} created now", high.len())));

    let (status, page) = f.press().await;
    assert_eq!(status, 200);
    assert_eq!(f.api.creates(), high.len(), "no duplicates");
    assert!(texts(&page, "[role=status] .status-message")
        .concat()
        .contains(&format!("0 created now, {} already there", high.len())));
}

#[tokio::test]
async fn an_application_key_without_monitors_write_is_explained() {
    let f = fixture().await;
    assert_eq!(f.save(APP_KEY).await.status(), 303);
    f.api.read_only();
    let (status, page) = f.press().await;
    assert_eq!(status, 422);
    let message = texts(&page, "[role=status] .status-message").concat();
    assert!(message.contains("HTTP 403"), "{message}");
    assert!(message.contains("monitors_write"), "{message}");
    assert!(f.api.monitors().is_empty());
}

#[tokio::test]
async fn a_wrong_application_key_is_refused_by_datadog_and_explained() {
    let f = fixture().await;
    assert_eq!(
        f.save("0000000000000000000000000000000000000000")
            .await
            .status(),
        303
    );
    let (status, page) = f.press().await;
    assert_eq!(status, 422);
    assert!(texts(&page, "[role=status] .status-message")
        .concat()
        .contains("HTTP 403"));
}

#[tokio::test]
async fn without_an_application_key_the_page_says_what_to_do() {
    let f = fixture().await;
    assert_eq!(f.save("").await.status(), 303);
    let (status, page) = f.press().await;
    assert_eq!(status, 422);
    assert!(texts(&page, "[role=status] .status-message")
        .concat()
        .contains("Enter an application key"));
    let r = f.save("not-a-key").await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("40 characters"));
}
