//! A signed-in admin on one subscription's settings page, for the provider tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use uuid::Uuid;

use super::{csrf_token, texts, TestApp};

pub const PASSWORD: &str = "correct horse battery staple";
/// The eleven catalog Event IDs, in the order the tests send them.
pub const CATALOG: [u32; 11] = [4882, 92, 23, 19, 28, 22, 12, 4888, 4870, 4872, 4887];

pub struct Portal {
    pub app: TestApp,
    pub sub: Uuid,
    pub path: String,
    pub token: String,
}

pub async fn portal() -> Portal {
    portal_on(TestApp::spawn().await).await
}

/// A portal whose SIEM calls resolve names with `lookup` (the default egress allow-list).
pub async fn portal_with_lookup(
    lookup: std::sync::Arc<dyn cloudpki::siem::egress::Lookup>,
) -> Portal {
    let overrides = cloudpki::state::Overrides {
        lookup: Some(lookup),
        ..Default::default()
    };
    portal_on(TestApp::spawn_with_overrides(super::test_env(), overrides).await).await
}

async fn portal_on(app: TestApp) -> Portal {
    let sub = app.create_subscription("Contoso PKI").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let token = app.token(sub).await;
    Portal {
        path: format!("/subscriptions/{sub}/settings"),
        app,
        sub,
        token,
    }
}

impl Portal {
    pub async fn submit(&self, action: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let csrf = csrf_token(&self.app.get_page(&self.path).await);
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf_token", &csrf));
        form.push(("action", action));
        self.app.post_form(&self.path, &form).await
    }

    pub async fn status_after(&self, action: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let r = self.submit(action, fields).await;
        let code = r.status().as_u16();
        let page = r.text().await.unwrap();
        (code, page)
    }

    pub async fn send_catalog(&self) {
        let body: Vec<Value> = CATALOG
            .iter()
            .map(|id| json!({"event_id": id, "actor": "alice@example.com", "details": {"ca": "Issuing CA"}}))
            .collect();
        assert_eq!(
            self.app
                .post_events(&self.token, &Value::Array(body))
                .await
                .status(),
            202
        );
        let report = self.app.state.forwarder().forward_once().await.unwrap();
        assert_eq!(report.delivered, 11, "{report:?}");
        assert_eq!(self.app.queued().await, 0);
    }

    pub async fn destination_status(&self) -> (String, Option<String>) {
        sqlx::query_as(
            "select status, last_error from delivery_destinations where subscription_id = $1",
        )
        .bind(self.sub)
        .fetch_one(&self.app.pool)
        .await
        .unwrap()
    }
}

/// The text of the page's status element.
pub fn status(page: &str) -> String {
    texts(page, "[role=status]").join(" ")
}
