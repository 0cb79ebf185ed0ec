//! Every provider end to end through the portal: chosen and saved on the settings page (secrets
//! sealed and write-only), tested with Test Connection, and delivering all eleven catalog events
//! to its strict fake intake in its documented format, with a failure class each.

use crate::support;
use crate::support::{
    fake_hec::{FakeHec, HecMode},
    fake_sentinel::{self, FakeSentinel},
    fake_webhook::FakeWebhook,
    portal::{portal, status, CATALOG},
    texts,
};
use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

const DATADOG_KEY: &str = "0123456789abcdef0123456789abcdef";
const SPLUNK_TOKEN: &str = "6f9619ff-8b86-4011-b42d-00c04fc964ff";
const LOGSCALE_TOKEN: &str = "a1b2c3d4-ingest-token-0123456789";

fn assert_event_fields(event: &Value, id: u32, sub: Uuid) {
    assert_eq!(event["EventID"], id);
    assert_eq!(event["SubscriptionId"], sub.to_string());
    assert_eq!(event["Actor"], "alice@example.com");
    assert_eq!(event["details"], json!({"ca": "Issuing CA"}));
    assert!(event["EventSummary"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(["High", "Medium", "Low"].contains(&event["Criticality"].as_str().unwrap()));
    Uuid::parse_str(event["EventUuid"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn splunk_is_configured_tested_and_receives_every_event_as_hec_envelopes() {
    let p = portal().await;
    let hec = FakeHec::start(HecMode::Splunk, SPLUNK_TOKEN).await;
    let url = hec.base_url();
    let fields = [
        ("siem_enabled", "on"),
        ("provider", "splunk"),
        ("splunk_url", url.as_str()),
        ("splunk_token", SPLUNK_TOKEN),
        ("splunk_sourcetype", "ezca:audit"),
    ];

    // Validation names the fields in plain words.
    let (code, page) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "splunk"),
                ("splunk_url", "ftp://x"),
                ("splunk_token", "not-a-guid"),
            ],
        )
        .await;
    assert_eq!(code, 422);
    assert!(
        !texts(&page, "#splunk_url-error").is_empty()
            && !texts(&page, "#splunk_token-error").is_empty()
    );
    assert!(!page.contains("not-a-guid"));

    let (_, page) = p.status_after("test", &fields).await;
    assert!(
        status(&page).contains("EventID=0"),
        "the search that finds it: {}",
        status(&page)
    );
    assert_eq!(hec.events().len(), 1, "the test event is indexed");
    assert_eq!(hec.events()[0]["event"]["EventID"], 0);

    assert_eq!(p.submit("save", &fields).await.status(), 303);
    let page = p.app.get_page(&p.path).await;
    assert!(!page.contains(SPLUNK_TOKEN), "the token is write-only");
    assert!(
        texts(&page, "#splunk_token-state")[0].contains("64ff"),
        "{page}"
    );
    assert!(page.contains(r#"<option value="splunk" selected>"#));

    p.send_catalog().await;
    let envelopes = hec.events();
    assert_eq!(envelopes.len(), 12);
    for (envelope, id) in envelopes[1..].iter().zip(CATALOG) {
        assert_eq!(envelope["sourcetype"], "ezca:audit");
        assert!(envelope["time"].as_f64().is_some(), "time is epoch seconds");
        assert_event_fields(&envelope["event"], id, p.sub);
    }

    // A disabled token: the destination fails and the events stay queued.
    hec.script(vec![support::fake_hec::Behavior::Status(403, 1)]);
    assert_eq!(
        p.app
            .post_events(&p.token, &json!({"event_id": 19}))
            .await
            .status(),
        202
    );
    p.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!(p.destination_status().await.0, "failing");
    assert_eq!(p.app.queued().await, 1);
}

#[tokio::test]
async fn logscale_is_configured_tested_and_receives_every_event_through_its_hec_endpoint() {
    let p = portal().await;
    let hec = FakeHec::start(HecMode::LogScale, LOGSCALE_TOKEN).await;
    let url = hec.base_url();
    let fields = [
        ("siem_enabled", "on"),
        ("provider", "logscale"),
        ("logscale_url", url.as_str()),
        ("logscale_token", LOGSCALE_TOKEN),
    ];
    let (_, page) = p.status_after("test", &fields).await;
    assert!(!status(&page).is_empty());
    assert_eq!(hec.events().len(), 1, "{}", status(&page));
    assert_eq!(p.submit("save", &fields).await.status(), 303);
    p.send_catalog().await;
    let envelopes = hec.events();
    for (envelope, id) in envelopes[1..].iter().zip(CATALOG) {
        assert_event_fields(&envelope["event"], id, p.sub);
    }
    assert!(hec.last_headers().unwrap()["authorization"]
        .to_str()
        .unwrap()
        .starts_with("Bearer "));

    // A wrong token is a plain-language test failure.
    let (_, page) = p
        .status_after(
            "test",
            &[
                ("provider", "logscale"),
                ("logscale_url", url.as_str()),
                ("logscale_token", "wrong-token-0123456789abc"),
            ],
        )
        .await;
    assert!(
        status(&page).to_lowercase().contains("token"),
        "{}",
        status(&page)
    );
}

#[tokio::test]
async fn sentinel_is_configured_tested_and_receives_every_event_with_time_generated() {
    let p = portal().await;
    let azure = FakeSentinel::start().await;
    let base = azure.base_url();
    let fields = [
        ("siem_enabled", "on"),
        ("provider", "sentinel"),
        ("sentinel_cloud", "public"),
        ("sentinel_login_url", base.as_str()),
        ("sentinel_tenant_id", fake_sentinel::TENANT),
        ("sentinel_client_id", fake_sentinel::CLIENT_ID),
        ("sentinel_client_secret", fake_sentinel::CLIENT_SECRET),
        ("sentinel_endpoint", base.as_str()),
        ("sentinel_dcr_id", fake_sentinel::DCR_ID),
        ("sentinel_stream", fake_sentinel::STREAM),
    ];
    let (_, page) = p.status_after("test", &fields).await;
    assert!(
        status(&page).contains("EzcaAudit"),
        "a KQL query for the table: {}",
        status(&page)
    );
    assert_eq!(p.submit("save", &fields).await.status(), 303);
    let page = p.app.get_page(&p.path).await;
    assert!(!page.contains(fake_sentinel::CLIENT_SECRET));
    // Test Connection landed one findable test row, as the other providers do.
    let tested = azure.rows();
    assert_eq!(tested.len(), 1);
    assert_eq!(tested[0]["EventID"], 0);
    p.send_catalog().await;
    let rows = azure.rows()[1..].to_vec();
    assert_eq!(rows.len(), 11);
    for (row, id) in rows.iter().zip(CATALOG) {
        assert!(row["TimeGenerated"].as_str().is_some());
        assert_event_fields(row, id, p.sub);
    }

    // A wrong secret is explained at Test Connection.
    let mut wrong = fields.to_vec();
    wrong[6] = ("sentinel_client_secret", "wrong~secret-value-0123456789");
    let (_, page) = p.status_after("test", &wrong).await;
    assert!(
        status(&page).to_lowercase().contains("secret"),
        "{}",
        status(&page)
    );
    // Bad identifiers are refused before anything is sent.
    let (code, page) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "sentinel"),
                ("sentinel_tenant_id", "contoso"),
                ("sentinel_dcr_id", "dcr-xyz"),
            ],
        )
        .await;
    assert_eq!(code, 422);
    for field in [
        "sentinel_tenant_id",
        "sentinel_dcr_id",
        "sentinel_client_id",
        "sentinel_endpoint",
        "sentinel_stream",
    ] {
        assert!(
            !texts(&page, &format!("#{field}-error")).is_empty(),
            "{field}"
        );
    }
}

#[tokio::test]
async fn a_signed_webhook_gets_a_secret_shown_once_verifies_every_event_and_rotates_with_overlap() {
    let p = portal().await;
    let hook = FakeWebhook::start(&[]).await;
    let url = hook.url();
    let fields = [
        ("siem_enabled", "on"),
        ("provider", "webhook"),
        ("webhook_url", url.as_str()),
        ("webhook_headers", "Authorization: Bearer receiver-token"),
    ];
    let (code, page) = p.status_after("save", &fields).await;
    assert_eq!(code, 200, "the new secret is shown on this answer");
    let secret = texts(&page, "#new-signing-secret")
        .pop()
        .expect("the secret is shown once");
    assert!(secret.starts_with("whsec_"));
    let reload = p.app.get_page(&p.path).await;
    assert!(!reload.contains(&secret), "never shown again");
    assert!(!reload.contains("receiver-token"), "headers are write-only");
    let first = cloudpki::domain::webhook::SigningSecret::parse(&secret).unwrap();
    hook.trust(std::slice::from_ref(&first));

    let (_, page) = p
        .status_after(
            "test",
            &[("provider", "webhook"), ("webhook_url", url.as_str())],
        )
        .await;
    assert!(status(&page).contains("webhook-id"), "{}", status(&page));
    p.send_catalog().await;
    let events = hook.events();
    for (event, id) in events[1..].iter().zip(CATALOG) {
        assert_event_fields(event, id, p.sub);
    }

    // Rotation: a receiver that still knows only the old secret keeps verifying.
    let (code, page) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", url.as_str()),
                ("webhook_rotate", "on"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    let second = texts(&page, "#new-signing-secret").pop().unwrap();
    assert_ne!(second, secret);
    assert_eq!(
        p.app
            .post_events(&p.token, &json!({"event_id": 4888}))
            .await
            .status(),
        202
    );
    assert_eq!(
        p.app
            .state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .delivered,
        1
    );

    // 410 Gone pauses the destination, keeps the event, and tells the admins.
    hook.script(vec![support::fake_webhook::Behavior::Gone]);
    assert_eq!(
        p.app
            .post_events(&p.token, &json!({"event_id": 19}))
            .await
            .status(),
        202
    );
    p.app.state.forwarder().forward_once().await.unwrap();
    let (enabled, paused): (bool, Option<String>) = sqlx::query_as(
        "select s.enabled, d.paused_reason from siem_settings s join delivery_destinations d
         on d.subscription_id = s.subscription_id and d.provider = s.provider
         where s.subscription_id = $1",
    )
    .bind(p.sub)
    .fetch_one(&p.app.pool)
    .await
    .unwrap();
    assert!(enabled, "export stays on");
    assert!(paused.is_some(), "the destination is paused");
    assert_eq!(p.app.queued().await, 1, "nothing dropped");
    assert_eq!(
        p.app
            .state
            .forwarder()
            .forward_once()
            .await
            .unwrap()
            .batches,
        0,
        "a paused destination is not sent to"
    );
    let report = p
        .app
        .state
        .notifier()
        .run_once_at(Utc::now())
        .await
        .unwrap();
    assert_eq!(report.opened, 1, "the admins are told");
    let page = p.app.get_page(&p.path).await;
    assert!(
        texts(&page, "table.history td")
            .join(" ")
            .contains("paused"),
        "the history says why"
    );
}

#[tokio::test]
async fn a_webhook_tested_before_its_first_save_shows_the_secret_that_signed_it_and_save_keeps_it()
{
    let p = portal().await;
    let hook = FakeWebhook::start(&[]).await;
    let url = hook.url();
    let fields = [
        ("siem_enabled", "on"),
        ("provider", "webhook"),
        ("webhook_url", url.as_str()),
    ];
    // The receiver does not know the secret yet: the test fails, but the secret it was signed
    // with is shown, so the receiver can be set up with it.
    let (_, page) = p.status_after("test", &fields).await;
    let shown = texts(&page, "#new-signing-secret")
        .pop()
        .expect("the generated secret is shown with the test");
    let secret = cloudpki::domain::webhook::SigningSecret::parse(&shown).unwrap();
    assert!(status(&page).contains(secret.last4()), "{}", status(&page));
    hook.trust(std::slice::from_ref(&secret));

    // Tested again: the same secret signs, and the receiver verifies it.
    let (_, page) = p.status_after("test", &fields).await;
    assert!(
        status(&page).contains(&format!(
            "signed with the signing secret ending in {}",
            secret.last4()
        )),
        "{}",
        status(&page)
    );
    assert!(texts(&page, "#new-signing-secret").is_empty(), "shown once");

    // Save keeps the tested secret: events verify without touching the receiver.
    assert_eq!(p.submit("save", &fields).await.status(), 303);
    let before = hook.events().len();
    p.send_catalog().await;
    assert_eq!(hook.events().len(), before + CATALOG.len());
}

#[tokio::test]
async fn provider_secrets_never_reach_a_page_or_a_log_line() {
    let p = portal().await;
    let hec = FakeHec::start(HecMode::Splunk, SPLUNK_TOKEN).await;
    let url = hec.base_url();
    let mut bodies = Vec::new();
    for action in ["test", "save"] {
        bodies.push(
            p.status_after(
                action,
                &[
                    ("siem_enabled", "on"),
                    ("provider", "splunk"),
                    ("splunk_url", url.as_str()),
                    ("splunk_token", SPLUNK_TOKEN),
                ],
            )
            .await
            .1,
        );
        bodies.push(
            p.status_after(
                action,
                &[
                    ("provider", "sentinel"),
                    ("sentinel_client_secret", fake_sentinel::CLIENT_SECRET),
                ],
            )
            .await
            .1,
        );
    }
    bodies.push(p.app.get_page(&p.path).await);
    for body in &bodies {
        assert!(!body.contains(SPLUNK_TOKEN) && !body.contains(fake_sentinel::CLIENT_SECRET));
    }
    let logs = support::captured_logs();
    assert!(!logs.contains(SPLUNK_TOKEN) && !logs.contains(fake_sentinel::CLIENT_SECRET));
}

#[tokio::test]
async fn a_hostile_token_lifetime_fails_only_its_own_destination_and_other_tenants_keep_flowing() {
    let p = portal().await;
    let azure = FakeSentinel::start().await;
    // u64::MAX seconds: once enough to overflow the token cache's clock and kill the loop.
    azure.issue_tokens_for(std::time::Duration::from_secs(u64::MAX));
    let base = azure.base_url();
    let fields = [
        ("siem_enabled", "on"),
        ("provider", "sentinel"),
        ("sentinel_cloud", "public"),
        ("sentinel_login_url", base.as_str()),
        ("sentinel_tenant_id", fake_sentinel::TENANT),
        ("sentinel_client_id", fake_sentinel::CLIENT_ID),
        ("sentinel_client_secret", fake_sentinel::CLIENT_SECRET),
        ("sentinel_endpoint", base.as_str()),
        ("sentinel_dcr_id", fake_sentinel::DCR_ID),
        ("sentinel_stream", fake_sentinel::STREAM),
    ];
    assert_eq!(p.submit("save", &fields).await.status(), 303);
    // Another tenant on Datadog.
    let intake = support::fake_datadog::FakeDatadog::start(DATADOG_KEY).await;
    let other = p.app.create_subscription("Fabrikam PKI").await;
    p.app
        .configure_datadog(other, &intake.base_url(), DATADOG_KEY, true)
        .await;
    let other_token = p.app.token(other).await;

    let f = p.app.state.forwarder();
    for round in 0..3 {
        assert_eq!(
            p.app
                .post_events(&p.token, &json!({"event_id": 4888}))
                .await
                .status(),
            202
        );
        let body: Vec<Value> = (0..50).map(|_| json!({"event_id": 12})).collect();
        assert_eq!(
            p.app
                .post_events(&other_token, &Value::Array(body))
                .await
                .status(),
            202
        );
        f.forward_once().await.unwrap();
        assert_eq!(
            intake.logs().len(),
            50 * (round + 1),
            "the other tenant flows"
        );
    }
    assert_eq!(p.app.queued().await, 0);
    assert_eq!(
        azure.rows().len(),
        3,
        "the odd lifetime is clamped, not trusted"
    );
}

#[tokio::test]
async fn a_stored_secret_is_never_sent_to_a_changed_address() {
    let p = portal().await;
    let real = support::fake_datadog::FakeDatadog::start(DATADOG_KEY).await;
    let attacker = support::fake_datadog::FakeDatadog::start(DATADOG_KEY).await;
    let (real_url, attacker_url) = (real.base_url(), attacker.base_url());
    let datadog = |url: &str, key: &'static str| {
        let mut fields = vec![
            ("siem_enabled", "on"),
            ("provider", "datadog"),
            ("datadog_site", "custom"),
            ("datadog_url", url),
        ];
        fields.push(("datadog_api_key", key));
        fields
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect::<Vec<_>>()
    };
    let as_refs = |fields: &[(&'static str, String)]| {
        fields
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<(&str, String)>>()
    };
    let submit = |action: &'static str, fields: Vec<(&'static str, String)>| {
        let p = &p;
        async move {
            let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            p.status_after(action, &refs).await
        }
    };
    let (code, _) = submit("save", datadog(&real_url, DATADOG_KEY)).await;
    assert!(code == 200 || code == 303, "{code}");

    // The URL changes, the key field is left blank: neither a test nor a save sends the key.
    for action in ["test", "save"] {
        let (code, page) = submit(action, as_refs(&datadog(&attacker_url, ""))).await;
        assert_eq!(code, 422, "{action}");
        assert!(
            page.contains("only ever sent to the address it was saved with"),
            "{action}"
        );
    }
    assert_eq!(
        attacker.requests(),
        0,
        "the stored key never left for the new address"
    );

    // Typed again, the key may go there; the test is recorded in the history.
    let (code, page) = submit("test", datadog(&attacker_url, DATADOG_KEY)).await;
    assert_eq!(code, 200);
    assert!(status(&page).contains("service:EZCA"), "{}", status(&page));
    assert_eq!(attacker.requests(), 1);
    let history = texts(&p.app.get_page(&p.path).await, "table.history td").join(" ");
    assert!(
        history.contains("Test Connection to Datadog (127.0.0.1) succeeded"),
        "{history}"
    );

    // Splunk's token and a webhook's extra headers are bound the same way.
    let hec = FakeHec::start(HecMode::Splunk, SPLUNK_TOKEN).await;
    let other_hec = FakeHec::start(HecMode::Splunk, SPLUNK_TOKEN).await;
    let (hec_url, other_url) = (hec.base_url(), other_hec.base_url());
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "splunk"),
                ("splunk_url", hec_url.as_str()),
                ("splunk_token", SPLUNK_TOKEN),
            ],
        )
        .await;
    assert!(code == 200 || code == 303, "{code}");
    let (code, page) = p
        .status_after(
            "test",
            &[
                ("siem_enabled", "on"),
                ("provider", "splunk"),
                ("splunk_url", other_url.as_str()),
            ],
        )
        .await;
    assert_eq!(code, 422);
    assert!(page.contains("enter the HEC token again"));
    assert_eq!(other_hec.requests(), 0);

    let hook = FakeWebhook::start(&[]).await;
    let other_hook = FakeWebhook::start(&[]).await;
    let (hook_url, other_hook_url) = (hook.url(), other_hook.url());
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", hook_url.as_str()),
                ("webhook_headers", "Authorization: Bearer receiver-token"),
            ],
        )
        .await;
    assert_eq!(code, 200);
    let (code, page) = p
        .status_after(
            "test",
            &[
                ("provider", "webhook"),
                ("webhook_url", other_hook_url.as_str()),
            ],
        )
        .await;
    assert_eq!(code, 422);
    assert!(page.contains("enter the extra headers again"));
    assert_eq!(other_hook.requests(), 0);
}

#[tokio::test]
async fn a_webhook_url_query_is_sealed_and_never_shown_or_recorded() {
    let p = portal().await;
    let hook = FakeWebhook::start(&[]).await;
    let url = format!("{}?token=s3cr3t-query-token&tenant=t1", hook.url());
    let (code, page) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", url.as_str()),
            ],
        )
        .await;
    assert_eq!(code, 200);
    let secret = texts(&page, "#new-signing-secret")
        .pop()
        .expect("shown once");
    hook.trust(&[cloudpki::domain::webhook::SigningSecret::parse(&secret).unwrap()]);
    let reload = p.app.get_page(&p.path).await;
    assert!(
        !reload.contains("s3cr3t-query-token"),
        "neither in the form nor in the history"
    );
    let shown = support::input_value(&reload, "webhook_url").expect("the URL field");
    assert_eq!(shown, format!("{}?token=…&tenant=…", hook.url()));
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from siem_provider_fields where fields::text like '%s3cr3t%'",
    )
    .fetch_one(&p.app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "the query is sealed, not stored in clear");

    // Saving the page as shown keeps the sealed URL: events still reach it.
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", shown.as_str()),
            ],
        )
        .await;
    assert!(code == 200 || code == 303, "{code}");
    p.send_catalog().await;
    assert_eq!(hook.events().len(), 11);
}

#[tokio::test]
async fn an_unreadable_signing_secret_stops_sending_instead_of_signing_with_a_made_up_key() {
    let p = portal().await;
    let hook = FakeWebhook::start(&[]).await;
    let url = hook.url();
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", url.as_str()),
            ],
        )
        .await;
    assert_eq!(code, 200);
    // As if the master key had changed: the sealed secret no longer opens.
    sqlx::query(
        "update siem_secrets set ciphertext = '\\x00'::bytea where name = 'signing_secret'",
    )
    .execute(&p.app.pool)
    .await
    .unwrap();
    assert_eq!(
        p.app
            .post_events(&p.token, &json!({"event_id": 4888}))
            .await
            .status(),
        202
    );
    let report = p.app.state.forwarder().forward_once().await.unwrap();
    assert_eq!((report.delivered, report.failures), (0, 1));
    assert_eq!(hook.requests(), 0, "nothing signed with a key nobody has");
    let error: String = sqlx::query_scalar(
        "select last_error from delivery_destinations where subscription_id = $1",
    )
    .bind(p.sub)
    .fetch_one(&p.app.pool)
    .await
    .unwrap();
    assert!(
        error.contains("signing secret can no longer be read"),
        "{error}"
    );
    assert_eq!(p.app.queued().await, 1, "the event is kept");
}

#[tokio::test]
async fn a_webhook_url_saved_before_queries_were_sealed_never_shows_its_query() {
    let p = portal().await;
    let hook = FakeWebhook::start(&[]).await;
    let url = format!("{}?token=0ld-clear-token", hook.url());
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", hook.url().as_str()),
            ],
        )
        .await;
    assert_eq!(code, 200);
    // As an older version stored it: the whole URL in the clear.
    sqlx::query(
        "update siem_provider_fields set fields = jsonb_set(fields, '{url}', to_jsonb($1::text))
         where provider = 'webhook'",
    )
    .bind(&url)
    .execute(&p.app.pool)
    .await
    .unwrap();
    sqlx::query("delete from siem_secrets where name = 'url'")
        .execute(&p.app.pool)
        .await
        .unwrap();
    let user: uuid::Uuid =
        sqlx::query_scalar("select id from users where email = 'admin@example.com'")
            .fetch_one(&p.app.pool)
            .await
            .unwrap();
    let token = cloudpki::crypto::random_token();
    cloudpki::store::personal_tokens::create(
        &p.app.pool,
        user,
        "t",
        &cloudpki::crypto::token_digest(&token),
        cloudpki::store::personal_tokens::TokenGrant::full(),
    )
    .await
    .unwrap();
    let body = reqwest::Client::new()
        .get(p.app.url(&format!("/api/v1/subscriptions/{}/siem", p.sub)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("webhook_url"), "{body}");
    assert!(
        !body.contains("0ld-clear-token"),
        "the REST API shows it: {body}"
    );

    // The first save since: the history line hides the query too.
    let (code, _) = p
        .status_after(
            "save",
            &[
                ("siem_enabled", "on"),
                ("provider", "webhook"),
                ("webhook_url", url.as_str()),
            ],
        )
        .await;
    assert!(code == 200 || code == 303, "{code}");
    let history: Vec<String> =
        sqlx::query_scalar("select changes::text from siem_settings_history")
            .fetch_all(&p.app.pool)
            .await
            .unwrap();
    assert!(
        history.iter().all(|h| !h.contains("0ld-clear-token")),
        "{history:?}"
    );
}

#[tokio::test]
async fn secrets_held_after_a_test_keep_no_address_in_the_clear() {
    let p = portal().await;
    let hook = FakeWebhook::start_with(support::fake_webhook::ReceiverOptions {
        secrets: Vec::new(),
        required_header: None,
    })
    .await;
    let url = format!("{}?token=held-query-token", hook.url());
    let _ = p
        .status_after(
            "test",
            &[
                ("provider", "webhook"),
                ("webhook_url", url.as_str()),
                ("webhook_headers", "Authorization: Bearer receiver-token"),
            ],
        )
        .await;
    let held: Vec<String> = sqlx::query_scalar("select addresses::text from tested_secrets")
        .fetch_all(&p.app.pool)
        .await
        .unwrap();
    assert!(
        !held.is_empty(),
        "the typed headers are held for Save changes"
    );
    assert!(
        held.iter()
            .all(|a| !a.contains("held-query-token") && !a.contains("127.0.0.1")),
        "{held:?}"
    );
}
