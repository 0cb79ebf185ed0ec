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
    let page = EventsPage {
        layout: Layout::signed_in(&user, &format!("Events — {}", membership.name)),
        membership,
        sections,
        queries,
        site_label: explorer_site.label(),
        site_known: site.is_some(),
    };
    Ok(Html(page.render()?))
}
