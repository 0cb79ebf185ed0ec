//! `/metrics` in the Prometheus text format.
//!
//! Counters and histograms are recorded where things happen (ingestion, forwarder); the backlog
//! gauges are read from the queue at scrape time, so they are right whichever process did the
//! work. Served only on `CLOUDPKI_METRICS_LISTEN`, a listener of its own for the operator's
//! scraper, never on the portal's port (it names every subscription).

use std::sync::OnceLock;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};
use chrono::Utc;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::WebError;
use crate::{state::AppState, store};

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("cloudpki_send_seconds".into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("cloudpki_batch_events".into()),
                    &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (several apps in one test process).
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The metrics listener's whole router (`CLOUDPKI_METRICS_LISTEN`); the portal's own port
/// never serves `/metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Result<impl IntoResponse, WebError> {
    let handle = handle();
    let now = Utc::now();
    for b in store::delivery::backlogs(state.pool()).await? {
        let labels = [
            ("subscription_id", b.subscription_id.to_string()),
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
