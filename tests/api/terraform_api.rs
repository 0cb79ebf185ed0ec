//! An API Terraform and scripts can drive: a GET's body PUT back as it is (read-only keys
//! accepted, a contradicting one refused), a JSON merge patch (RFC 7396), and optimistic
//! concurrency (an `ETag` on every answer, 412 for a stale `If-Match`; on the page, a hidden
//! version field, so a second admin saving from an older page is told instead of overwriting).

use crate::support;
use crate::support::{csrf_token, fake_datadog::FakeDatadog, login_with, new_client, TestApp};
use serde_json::{json, Value};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";

struct Api {
    app: TestApp,
    sub: Uuid,
    token: String,
    path: String,
    intake: FakeDatadog,
}

struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl Api {
    /// An admin with a token, and Datadog saved through the API.
    async fn configured() -> Api {
        let app = TestApp::spawn().await;
        let sub = app.create_subscription("Contoso PKI").await;
        app.create_user("admin@example.com", PASSWORD, sub, "admin")
            .await;
        let token = app.personal_token("admin@example.com").await;
        let path = format!("/api/v1/subscriptions/{sub}/siem");
        let intake = FakeDatadog::start(KEY).await;
        let api = Api {
            app,
            sub,
            token,
            path,
            intake,
        };
        let first = api
            .send(
                reqwest::Method::PUT,
                None,
                Some(json!({
                    "siem_enabled": true,
                    "provider": "datadog",
                    "datadog_site": "custom",
                    "datadog_url": api.intake.base_url(),
                    "datadog_api_key": KEY,
                })),
                "application/json",
            )
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        api
    }

    async fn send(
        &self,
        method: reqwest::Method,
        if_match: Option<&str>,
        body: Option<Value>,
        content_type: &str,
    ) -> Answer {
        let mut request = reqwest::Client::new()
            .request(method, self.app.url(&self.path))
            .bearer_auth(&self.token);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let etag = answer
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = answer.json().await.unwrap_or(Value::Null);
        Answer { status, etag, body }
    }

    async fn get(&self) -> Answer {
        self.send(reqwest::Method::GET, None, None, "").await
    }

    async fn put(&self, if_match: Option<&str>, body: Value) -> Answer {
        self.send(
            reqwest::Method::PUT,
            if_match,
            Some(body),
            "application/json",
        )
        .await
    }

    async fn patch(&self, if_match: Option<&str>, body: Value) -> Answer {
        self.send(
            reqwest::Method::PATCH,
            if_match,
            Some(body),
            "application/merge-patch+json",
        )
        .await
    }

    async fn history_rows(&self) -> i64 {
        sqlx::query_scalar("select count(*) from siem_settings_history where subscription_id = $1")
            .bind(self.sub)
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_get_body_put_back_as_it_is_is_accepted_and_keeps_every_setting() {
    let api = Api::configured().await;
    let before = api.get().await;
    assert_eq!(before.body["datadog_api_key_set"], true);
    assert_eq!(before.body["datadog_api_key_last4"], "cdef");

    let again = api.put(None, before.body.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, before.body, "nothing changed");

    // The same body with one value changed: the change applies, the key stays.
    let mut changed = before.body.clone();
    changed["send_event_ids"] = json!([4888, 4887]);
    let after = api.put(None, changed).await;
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(
        after.body["send_event_ids"],
        json!([4888, 4887]),
        "catalog order"
    );
    assert_eq!(after.body["datadog_api_key_last4"], "cdef");
    assert_eq!(after.body["datadog_url"], api.intake.base_url());
}

#[tokio::test]
async fn a_read_only_key_that_contradicts_what_is_stored_is_refused_and_nothing_is_saved() {
    let api = Api::configured().await;
    let body = api.get().await.body;
    let rows = api.history_rows().await;

    let mut wrong_last4 = body.clone();
    wrong_last4["datadog_api_key_last4"] = json!("zzzz");
    let refused = api.put(None, wrong_last4).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let message = refused.body["errors"]["datadog_api_key_last4"]
        .as_str()
        .expect("the read-only key is named");
    assert!(message.contains("cdef"), "{message}");

    let mut not_set = body.clone();
    not_set["datadog_api_key_set"] = json!(false);
    let refused = api.put(None, not_set).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body["errors"]["datadog_api_key_set"].is_string());

    // A new key replaces the stored one: the old key's read-only keys describe what it
    // replaces, not a contradiction.
    let mut new_key = body.clone();
    new_key["datadog_api_key"] = json!(OTHER_KEY);
    let replaced = api.put(None, new_key).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(replaced.body["datadog_api_key_last4"], "3210");
    assert_eq!(
        api.history_rows().await,
        rows + 1,
        "only the valid PUT saved"
    );
}

#[tokio::test]
async fn a_merge_patch_changes_only_what_it_names() {
    let api = Api::configured().await;
    let before = api.get().await.body;

    let patched = api.patch(None, json!({ "send_event_ids": [4888] })).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["send_event_ids"], json!([4888]));
    let mut expected = before.clone();
    expected["send_event_ids"] = json!([4888]);
    assert_eq!(patched.body, expected, "every other key as it was");

    // A secret is patched like any field; the answer shows its new last four only.
    let patched = api
        .patch(None, json!({ "datadog_api_key": OTHER_KEY }))
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["datadog_api_key_last4"], "3210");
    assert!(!patched.body.to_string().contains(OTHER_KEY));

    // `null` removes a member: switching export off keeps the destination's values.
    let patched = api.patch(None, json!({ "siem_enabled": null })).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["siem_enabled"], false);
    assert_eq!(patched.body["datadog_url"], api.intake.base_url());

    // Not an object, or not a merge patch: explained.
    let refused = api.patch(None, json!([1, 2])).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let refused = api
        .send(
            reqwest::Method::PATCH,
            None,
            Some(json!({ "siem_enabled": true })),
            "application/json-patch+json",
        )
        .await;
    assert_eq!(refused.status, 415, "{}", refused.body);
    assert!(refused.body["error"]
        .as_str()
        .unwrap()
        .contains("application/merge-patch+json"));
}

#[tokio::test]
async fn a_stale_if_match_gets_412_and_nothing_is_saved() {
    let api = Api::configured().await;
    let first = api.get().await;
    let tag = first.etag.clone().expect("GET carries an ETag");
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    assert_eq!(
        api.get().await.etag.as_deref(),
        Some(tag.as_str()),
        "stable"
    );

    // A write with the current tag passes and answers the new one.
    let mut body = first.body.clone();
    body["send_event_ids"] = json!([4888]);
    let saved = api.put(Some(&tag), body).await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let new_tag = saved.etag.clone().expect("PUT carries an ETag");
    assert_ne!(new_tag, tag);
    assert_eq!(api.get().await.etag.as_deref(), Some(new_tag.as_str()));

    // The old tag is stale now: PUT and PATCH are refused and change nothing.
    let rows = api.history_rows().await;
    let stale = api.put(Some(&tag), first.body.clone()).await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert!(stale.body["error"]
        .as_str()
        .unwrap()
        .contains("admin@example.com"));
    let stale = api.patch(Some(&tag), json!({ "siem_enabled": null })).await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(api.history_rows().await, rows);
    assert_eq!(api.get().await.body["send_event_ids"], json!([4888]));

    // `*` matches whatever is stored; a malformed tag is a 400, not a silent pass.
    let any = api
        .patch(Some("*"), json!({ "send_event_ids": null }))
        .await;
    assert_eq!(any.status, 200, "{}", any.body);
    let malformed = api.patch(Some("v1"), json!({})).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
}

#[tokio::test]
async fn two_admins_saving_from_the_page_at_once_the_second_is_told_and_nothing_is_overwritten() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("Contoso PKI").await;
    for email in ["ada@example.com", "bob@example.com"] {
        app.create_user(email, PASSWORD, sub, "admin").await;
    }
    let intake = FakeDatadog::start(KEY).await;
    let path = format!("/subscriptions/{sub}/settings");
    let (ada, bob) = (new_client(), new_client());
    for (client, email) in [(&ada, "ada@example.com"), (&bob, "bob@example.com")] {
        let answer = login_with(client, &app.base_url, email, PASSWORD).await;
        assert_eq!(answer.status(), 303);
    }
    // Both open the page.
    let ada_page = support::page_with(&ada, &app.url(&path)).await;
    let bob_page = support::page_with(&bob, &app.url(&path)).await;
    let version = |page: &str| support::input_value(page, "settings_version").expect("version");
    let save = |client: &reqwest::Client, page: &str, key: &'static str| {
        let form = vec![
            ("csrf_token".to_owned(), csrf_token(page)),
            ("settings_version".to_owned(), version(page)),
            ("action".to_owned(), "save".to_owned()),
            ("siem_enabled".to_owned(), "on".to_owned()),
            ("provider".to_owned(), "datadog".to_owned()),
            ("datadog_site".to_owned(), "custom".to_owned()),
            ("datadog_url".to_owned(), intake.base_url()),
            ("datadog_api_key".to_owned(), key.to_owned()),
        ];
        let request = client.post(app.url(&path)).form(&form);
        async move { request.send().await.unwrap() }
    };
    // Bob saves first.
    let answer = save(&bob, &bob_page, KEY).await;
    assert_eq!(answer.status(), 303);
    // Ada's page is older than Bob's save: she is told, nothing of hers is stored.
    let answer = save(&ada, &ada_page, OTHER_KEY).await;
    assert_eq!(answer.status(), 409);
    let page = answer.text().await.unwrap();
    let told = support::texts(&page, "#siem-status").join(" ");
    assert!(told.contains("bob@example.com"), "{told}");
    assert!(told.contains("not saved"), "{told}");
    let last4: String = sqlx::query_scalar(
        "select hint from siem_secrets where subscription_id = $1 and name = 'api_key'",
    )
    .bind(sub)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(last4, "cdef", "Bob's key stays");
    // The page she is shown now carries the current version: saving again works.
    let answer = save(&ada, &page, OTHER_KEY).await;
    assert_eq!(answer.status(), 303);
}
