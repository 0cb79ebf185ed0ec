//! Liveness and readiness probes.

use axum::{extract::State, http::StatusCode, routing::get, Router};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the database answers a query.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        crate::store::ping(state.pool()),
    )
    .await;
    match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n"),
    }
}
