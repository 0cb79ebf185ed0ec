//! `/metrics` in the Prometheus text format.
//!
//! Counters and histograms are recorded where things happen (ingestion, forwarder); the backlog
//! gauges are read from the queue at scrape time, so they are right whichever process did the
//! work. Served only on `CLOUDPKI_METRICS_LISTEN`, a listener of its own for the operator's
//! scraper, never on the portal's port (it names every subscription).

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use chrono::Utc;

use super::WebError;
use crate::{state::AppState, store};

/// The metrics listener's whole router (`CLOUDPKI_METRICS_LISTEN`); the portal's own port
/// never serves `/metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Result<impl IntoResponse, WebError> {
    let handle = crate::telemetry::metrics();
    let now = Utc::now();
    for b in store::delivery::backlogs(state.pool()).await? {
        let labels = [
            ("subscription_id", b.subscription_id.to_string()),
            ("destination", b.destination.to_string()),
            ("provider", b.provider.clone()),
        ];
        metrics::gauge!("cloudpki_backlog_events", &labels).set(b.pending as f64);
        metrics::gauge!("cloudpki_parked_events", &labels).set(b.parked as f64);
        metrics::gauge!("cloudpki_duplicates_sent", &labels).set(b.duplicates as f64);
        metrics::gauge!("cloudpki_lease_takeovers", &labels).set(b.takeovers as f64);
        metrics::gauge!("cloudpki_destination_refusals", &labels).set(b.refusals as f64);
        let age = b
            .oldest_pending
            .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("cloudpki_oldest_undelivered_seconds", &labels).set(age);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}
