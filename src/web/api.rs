//! The ingestion API: `POST /api/v1/events` (DESIGN.md, "Contract: ingestion API").
//!
//! `Authorization: Bearer <token>`; the token names the subscription. The body is parsed in full
//! and any problem refuses the whole request (nothing stored); otherwise the events (numbered in
//! their subscription's log) and the forwarder's wake-up commit in one transaction before the
//! 202. The token is checked before the body is read.

use axum::{
    extract::{DefaultBodyLimit, Request, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use chrono::Utc;
use serde_json::json;

use crate::{
    crypto,
    domain::ingest::{self, FieldProblem, IngestError, MAX_EVENTS_PER_REQUEST},
    state::AppState,
    store::{self, events::NewEvent},
};

/// Largest request body, in bytes: 1,000 events with room for large `details`.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events", post(record_events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

fn error(status: StatusCode, message: &str, problems: &[FieldProblem]) -> Response {
    let mut body = json!({ "error": message });
    if !problems.is_empty() {
        body["errors"] = json!(problems);
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"cloudpki\""),
        );
    }
    response
}

async fn record_events(State(state): State<AppState>, request: Request) -> Response {
    match record_events_inner(state, request).await {
        Ok(response) => response,
        // Producers retry on 503: say when, in JSON like every other answer here.
        Err(super::WebError::Unavailable) => {
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable right now; nothing was recorded. Retry after the delay in Retry-After.",
                &[],
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn record_events_inner(
    state: AppState,
    request: Request,
) -> Result<Response, super::WebError> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let token = super::bearer(headers);
    let Some(token) = token else {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "Send the ingestion token as `Authorization: Bearer <token>` (create one with `cloudpki admin create-token`).",
            &[],
        ));
    };
    let Some(subscription_id) =
        store::events::token_subscription(state.pool(), &crypto::token_digest(token)).await?
    else {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "The token is unknown or revoked.",
            &[],
        ));
    };

    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "Send the events as JSON with `Content-Type: application/json`.",
            &[],
        ));
    }
    // The token is checked before the body is read: a stranger cannot make us buffer 16 MB.
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("The body is larger than {MAX_BODY_BYTES} bytes or was cut off; send fewer events per request."),
                &[],
            ))
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                &format!("The body is not valid JSON: {e}."),
                &[],
            ));
        }
    };
    let events = match ingest::parse_body(&value, Utc::now()) {
        Ok(events) => events,
        Err(IngestError::TooMany(n)) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "{n} events in one request; send at most {MAX_EVENTS_PER_REQUEST} per request."
                ),
                &[],
            ))
        }
        Err(IngestError::TooLarge(problems)) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Nothing was recorded: some events carry details that are too large (see `errors`).",
                &problems,
            ));
        }
        Err(IngestError::Invalid(problems)) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "Nothing was recorded: fix the fields listed in `errors`.",
                &problems,
            ));
        }
    };
    let new: Vec<NewEvent> = events
        .into_iter()
        .map(|e| NewEvent {
            id: e.id,
            event_id: i32::try_from(e.event_id.get()).unwrap_or_default(),
            occurred_at: e.occurred_at,
            actor: e.actor,
            details: e.details,
        })
        .collect();
    let recorded = store::events::record(state.pool(), subscription_id, &new).await?;
    // Committed: announced, or handed to the sequencer (the settings page's counts move then).
    state
        .sequencer()
        .recorded(state.pool(), subscription_id, &recorded);
    if recorded.in_log {
        state.page_cache().subscription_changed(subscription_id);
    }
    metrics::counter!("cloudpki_events_recorded_total").increment(recorded.accepted);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": recorded.accepted, "duplicates": recorded.duplicates })),
    )
        .into_response())
}
