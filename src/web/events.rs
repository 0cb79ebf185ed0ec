//! The Events page: the catalog of audit events a subscription sends, and the recommended alert
//! queries with a link into the Log Explorer of the subscription's Datadog site.

use askama::Template;
use axum::{
    extract::{Path, State},
    response::Html,
    routing::get,
    Router,
};

use super::{session::CurrentUser, subscriptions::membership_or_404, Layout, WebError};
use crate::{
    domain::{
        datadog::DatadogSite,
        events::{alert_query, catalog, Category, Criticality},
    },
    siem::datadog,
    state::AppState,
    store::accounts::MembershipRow,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/subscriptions/{id}/events", get(show))
}

struct Row {
    id: String,
    summary: &'static str,
    description: &'static str,
    criticality: &'static str,
}

struct Query {
    id: String,
    summary: &'static str,
    query: String,
    explorer_url: String,
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    layout: Layout,
    membership: MembershipRow,
    sections: Vec<(&'static str, Vec<Row>)>,
    queries: Vec<Query>,
    site_label: String,
    site_known: bool,
    completeness: Vec<Monitor>,
}

/// A ready-made Datadog monitor that checks the export itself.
struct Monitor {
    id: &'static str,
    title: &'static str,
    explain: &'static str,
    query: String,
}

/// Monitors that prove the export is complete: silence (no heartbeat) and a log that stops
/// short of the heartbeat's `LastSequence`.
fn completeness_monitors(subscription_id: uuid::Uuid) -> Vec<Monitor> {
    let scope = format!("service:EZCA @SubscriptionId:{subscription_id}");
    vec![
        Monitor {
            id: "monitor-heartbeat",
            title: "No heartbeat for 15 minutes",
            explain: "A log alert monitor: cloudpki sends a heartbeat (Event ID 1) every 5 minutes by default, so none for 15 minutes means logs are not arriving.",
            query: format!(
                "logs(\"{scope} @EventID:1\").index(\"*\").rollup(\"count\").last(\"15m\") < 1"
            ),
        },
        Monitor {
            id: "monitor-gap",
            title: "Sequence gap at the end of the log",
            explain: "A log monitor with two queries and a formula: a is the highest LastSequence the heartbeats reported, b the highest Sequence that arrived; above 0 means recorded events have not reached Datadog. For holes in the middle, run cloudpki verify on an export (README, Proving nothing is missing).",
            query: format!(
                "a = logs(\"{scope} @EventID:1\").rollup(\"max\", \"@LastSequence\"); b = logs(\"{scope} @Sequence:>0\").rollup(\"max\", \"@Sequence\"); alert when a - b > 0 over last(\"1h\")"
            ),
        },
    ]
}

async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
) -> Result<Html<String>, WebError> {
    let membership = membership_or_404(&state, &user, &id).await?;
    let stored = crate::settings::load(
        state.pool(),
        state.master_key(),
        membership.subscription_id,
        datadog::provider(),
    )
    .await?;
    let site = datadog::stored_site(&stored.settings);
    let explorer_site = site.unwrap_or(DatadogSite::ALL[0]);

    let sections = [Category::CaOperation, Category::CertificateOperation]
        .into_iter()
        .map(|category| {
            let rows = catalog()
                .iter()
                .filter(|e| e.category == category)
                .map(|e| Row {
                    id: e.id.to_string(),
                    summary: e.summary,
                    description: e.description,
                    criticality: e.criticality.as_str(),
                })
                .collect();
            (category.label(), rows)
        })
        .collect();
    let queries = catalog()
        .iter()
        .filter(|e| e.criticality == Criticality::High)
        .map(|e| {
            let query = alert_query(e.id);
            Query {
                id: e.id.to_string(),
                summary: e.summary,
                explorer_url: explorer_site.log_explorer_url(&query),
                query,
            }
        })
        .collect();
    let completeness = completeness_monitors(membership.subscription_id);
    let page = EventsPage {
        layout: Layout::signed_in(&user, &format!("Events — {}", membership.name)),
        membership,
        sections,
        queries,
        site_label: explorer_site.label(),
        site_known: site.is_some(),
        completeness,
    };
    Ok(Html(page.render()?))
}
