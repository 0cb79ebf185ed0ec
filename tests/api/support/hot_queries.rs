//! The delivery log's hot queries, as the EXPLAIN test (`delivery_log`) runs them at a million
//! events and the scale-out test (`scale_out`) checks that each filters by subscription.

/// (what, SQL with the subscription as `$1`).
pub const HOT_QUERIES: &[(&str, &str)] = &[
    (
        "read a range after the cursor",
        "select seq, id, event_id, occurred_at, recorded_at, actor, details from audit_events
         where subscription_id = $1 and seq > 500000 order by seq limit 1000",
    ),
    (
        "the oldest owed event",
        "select recorded_at from audit_events where subscription_id = $1 and seq = 1",
    ),
    (
        "retention's cut",
        "select seq - 1 from audit_events where subscription_id = $1 and seq > 500000
         and recorded_at >= now() - interval '14 days' order by seq limit 1",
    ),
    (
        "a duplicate id within the subscription",
        "select 1 from audit_events where subscription_id = $1
         and id = '00000000-0000-0000-0000-000000000001'",
    ),
];
