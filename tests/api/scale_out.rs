//! The schema can be distributed by subscription (Citus) when one primary is not enough: every
//! unique key of a distributed table holds `subscription_id`, and every hot query filters by it.
//! README "Scaling out" lists the tables and the `create_distributed_table` calls.

use crate::support;
use crate::support::TestApp;

/// The tables distributed by `subscription_id` (co-located with `subscriptions`).
const DISTRIBUTED: &[&str] = &[
    "audit_events",
    "audit_inbox",
    "delivery_destinations",
    "delivery_parked",
    "delivery_attempts",
    "delivery_gaps",
    "incidents",
    "siem_settings",
    "siem_provider_fields",
    "siem_secrets",
    "siem_settings_history",
    "tested_secrets",
];

#[tokio::test]
async fn every_unique_key_of_a_distributed_table_holds_the_subscription() {
    let app = TestApp::spawn().await;
    let keys: Vec<(String, String, bool)> = sqlx::query_as(
        "select c.relname::text, i.relname::text,
                exists (select 1 from pg_attribute a
                        where a.attrelid = c.oid and a.attname = 'subscription_id'
                          and a.attnum = any(x.indkey::int2[]))
         from pg_index x
         join pg_class i on i.oid = x.indexrelid
         join pg_class c on c.oid = x.indrelid
         where x.indisunique and c.relnamespace = 'public'::regnamespace
           and c.relname = any($1)",
    )
    .bind(DISTRIBUTED)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let tables: std::collections::BTreeSet<&str> =
        keys.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(
        tables.len(),
        DISTRIBUTED.len(),
        "every table has a key: {tables:?}"
    );
    let missing: Vec<String> = keys
        .iter()
        .filter(|(_, _, holds)| !holds)
        .map(|(table, index, _)| format!("{table}.{index}"))
        .collect();
    assert!(
        missing.is_empty(),
        "unique keys without subscription_id: {missing:?}"
    );
    // Every distributed table has the column at all (a foreign key could not co-locate otherwise).
    for table in DISTRIBUTED {
        let has: bool = sqlx::query_scalar(
            "select exists (select 1 from information_schema.columns
                            where table_name = $1 and column_name = 'subscription_id')",
        )
        .bind(table)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert!(has, "{table}");
    }
}

#[test]
fn every_hot_query_filters_by_the_subscription() {
    let product = [
        (
            "what a destination owes",
            cloudpki::store::delivery::OWED_SQL,
        ),
        ("the Events page", cloudpki::store::events::RECENT_SQL),
        (
            "the list of destinations",
            cloudpki::store::siem::DESTINATIONS_SQL,
        ),
        (
            "the Events page, filtered",
            cloudpki::store::events::RECENT_FILTERED_SQL,
        ),
    ];
    for (what, sql) in support::hot_queries::HOT_QUERIES
        .iter()
        .copied()
        .chain(product)
    {
        let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("subscription_id = $1"),
            "{what} does not filter by the subscription: {flat}"
        );
    }
}
