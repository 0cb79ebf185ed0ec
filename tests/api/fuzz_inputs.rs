//! Generated input, lots of it: the ingestion body and every provider's settings form never
//! panic and never cause a 500, and a refused request stores nothing.
//!
//! The parsers get 10,000 cases each (pure functions, fast); the HTTP endpoints get fewer
//! cases each, through the whole stack and a real database.

use std::collections::BTreeMap;

use crate::support::{csrf_token, TestApp};
use chrono::Utc;
use cloudpki::{
    domain::ingest,
    siem::{
        egress::EgressPolicy,
        provider::{self, StoredProvider},
        Provider,
    },
};
use proptest::{prelude::*, strategy::ValueTree as _};
use serde_json::{json, Map, Value};

const PASSWORD: &str = "correct horse battery staple";

/// Strings that like to break things: empty, huge, control and NUL characters, unicode,
/// numbers, URLs, injections.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("\u{0}".to_owned()),
        Just("x".repeat(70_000)),
        Just("https://127.0.0.2/api/v2/logs".to_owned()),
        Just("http://[::1]:9/".to_owned()),
        Just("' or 1=1 --".to_owned()),
        Just("4888".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("2026-13-45T99:99:99Z".to_owned()),
        "\\PC{0,40}",
        any::<String>(),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Something shaped like an event, with each field possibly wrong.
fn event_like() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!(4888)), Just(json!(12)), json_value()],
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(json_value()),
    )
        .prop_map(|(event_id, id, occurred_at, actor, details)| {
            let mut object = Map::new();
            object.insert("event_id".into(), event_id);
            for (name, value) in [
                ("id", id),
                ("occurred_at", occurred_at),
                ("actor", actor),
                ("details", details),
            ] {
                if let Some(value) = value {
                    object.insert(name.into(), value);
                }
            }
            Value::Object(object)
        })
}

fn ingest_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        event_like(),
        prop::collection::vec(event_like(), 0..4).prop_map(Value::Array),
        json_value(),
    ]
}

fn settings_form(provider: Provider) -> impl Strategy<Value = BTreeMap<String, String>> {
    // Every field the provider declares, the internal ones included (a form may carry them).
    let names: Vec<&'static str> = provider.fields().iter().map(|f| f.name).collect();
    prop::collection::vec(prop::option::of(nasty_string()), names.len()).prop_map(move |values| {
        names
            .iter()
            .zip(values)
            .filter_map(|(name, value)| value.map(|v| ((*name).to_owned(), v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn the_ingestion_parser_never_panics(body in ingest_body()) {
        let _ = ingest::parse_body(&body, Utc::now());
    }

    #[test]
    fn every_settings_form_validates_without_panicking(
        (provider, form) in prop::sample::select(Provider::all().collect::<Vec<_>>())
            .prop_flat_map(|p| (Just(p), settings_form(p))),
    ) {
        let egress = EgressPolicy::parse("").unwrap();
        let shared = provider::Shared::default();
        let context = provider::Context { hostname: "h", shared: &shared };
        for complete in [false, true] {
            let _ = provider::validate(
                provider,
                &form,
                &StoredProvider::default(),
                &egress,
                complete,
                context,
            );
        }
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn generated_ingestion_bodies_never_get_a_500_and_refused_ones_store_nothing() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    let token = app.token(sub).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..1_000 {
        let body = ingest_body().new_tree(&mut runner).unwrap().current();
        let before = count(&app, "select count(*) from audit_events").await;
        let r = app.post_events(&token, &body).await;
        let status = r.status().as_u16();
        assert!(status < 500, "{status} for {body}");
        if status != 202 {
            assert_eq!(
                count(&app, "select count(*) from audit_events").await,
                before,
                "a refused request stored something: {body}"
            );
        }
    }
}

#[tokio::test]
async fn generated_settings_forms_never_get_a_500_and_refused_ones_change_nothing() {
    let app = TestApp::spawn().await;
    let sub = app.create_subscription("S").await;
    app.create_user("admin@example.com", PASSWORD, sub, "admin")
        .await;
    assert_eq!(app.login("admin@example.com", PASSWORD).await.status(), 303);
    let path = format!("/subscriptions/{sub}/settings");
    let csrf = csrf_token(&app.get_page(&path).await);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let snapshot = |app: &TestApp| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select coalesce((select string_agg(provider || enabled::text, ',') from siem_settings), '')
                     || '|' || coalesce((select string_agg(fields::text, ',' order by provider) from siem_provider_fields), '')
                     || '|' || coalesce((select string_agg(name || hint, ',' order by provider, name) from siem_secrets), '')",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for round in 0..300 {
        let all: Vec<Provider> = Provider::all().collect();
        let provider = all[round % all.len()];
        let form = settings_form(provider)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut fields: Vec<(String, String)> = form.into_iter().collect();
        fields.push(("provider".into(), provider.id().into()));
        if round % 2 == 0 {
            fields.push(("siem_enabled".into(), "on".into()));
        }
        // Only save: a test would send generated values to loopback addresses.
        fields.push(("action".into(), "save".into()));
        fields.push(("csrf_token".into(), csrf.clone()));
        let before = snapshot(&app).await;
        let refs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = app.post_form(&path, &refs).await;
        let status = r.status().as_u16();
        assert!(status < 500, "{status} for {fields:?}");
        if status == 422 {
            assert_eq!(
                snapshot(&app).await,
                before,
                "refused, yet changed: {fields:?}"
            );
        }
    }
}
