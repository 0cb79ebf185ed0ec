//! A strict Standard Webhooks receiver on 127.0.0.1, for tests.
//!
//! It checks every request as a receiver following the spec would, in this order:
//! the configured extra header (e.g. `Authorization: Bearer x`), if any, else 401; the
//! signature against each of its secrets, with `webhook-id` present and `webhook-timestamp`
//! within ±5 minutes, else 401; `Content-Type: application/json` and no `Content-Encoding`,
//! else 415; a body over 1,000,000 bytes is 413; the body must be
//! `{"type","timestamp","data":{"events":[{…EventUuid…}]}}`, else 400. A `webhook-id` seen
//! before is acknowledged (204) without recording its events again, as a deduplicating
//! receiver does. Success is `204`. Every other path is 404.
//!
//! Tests can script the next requests' fate with [`Behavior`]; the `webhook-id` of every
//! request is recorded, scripted or refused ones included.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use cloudpki::domain::webhook::SigningSecret;
use cloudpki::siem::webhook::{verify, DEFAULT_TOLERANCE};
use serde_json::Value;

/// The path the receiver listens on.
pub const HOOK_PATH: &str = "/hooks/ezca";
/// Largest body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1_000_000;

/// What the fake does with one request instead of its normal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Answer this status with a short text body.
    Status(u16),
    /// Answer this status with `Retry-After: <seconds>`.
    StatusWithRetryAfter(u16, u64),
    /// Wait this long before answering 503 (longer than the client's timeout).
    Stall(Duration),
    /// Close the connection without answering.
    DropConnection,
    /// Answer 410 Gone: the endpoint no longer wants webhooks.
    Gone,
}

/// How the receiver is configured.
#[derive(Clone, Default)]
pub struct ReceiverOptions {
    /// Secrets the receiver verifies with; any one matching is enough.
    pub secrets: Vec<SigningSecret>,
    /// A header every request must carry with exactly this value.
    pub required_header: Option<(String, String)>,
}

/// One request that passed every check.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub payload: Value,
}

#[derive(Default)]
struct Recorded {
    deliveries: Vec<Delivery>,
    request_ids: Vec<String>,
    refusals: Vec<String>,
    duplicates: usize,
    script: VecDeque<Behavior>,
    last_headers: Option<HeaderMap>,
}

#[derive(Clone)]
struct Shared {
    options: Arc<Mutex<ReceiverOptions>>,
    recorded: Arc<Mutex<Recorded>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide the recordings from the others.
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake receiver; stops when dropped.
pub struct FakeWebhook {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWebhook {
    /// Starts a receiver that verifies with `secrets` and needs no extra header.
    pub async fn start(secrets: &[SigningSecret]) -> FakeWebhook {
        FakeWebhook::start_with(ReceiverOptions {
            secrets: secrets.to_vec(),
            required_header: None,
        })
        .await
    }

    /// Starts a receiver with these options on 127.0.0.1:0.
    pub async fn start_with(options: ReceiverOptions) -> FakeWebhook {
        let shared = Shared {
            options: Arc::new(Mutex::new(options)),
            recorded: Arc::default(),
        };
        let app = Router::new()
            .route(HOOK_PATH, post(receive))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake webhook receiver on loopback");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWebhook {
            addr,
            shared,
            server,
        }
    }

    /// From now on, verify with these secrets (a receiver configured after the portal showed
    /// its new secret).
    pub fn trust(&self, secrets: &[SigningSecret]) {
        self.shared
            .options
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .secrets = secrets.to_vec();
    }

    /// `http://127.0.0.1:<port>/hooks/ezca`, the receiver's URL.
    pub fn url(&self) -> String {
        format!("http://{}{HOOK_PATH}", self.addr)
    }

    /// `http://127.0.0.1:<port>`, for building wrong URLs.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests that passed every check, in arrival order (duplicates not repeated).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Every event of every accepted request, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.deliveries()
            .iter()
            .flat_map(|d| d.payload["data"]["events"].as_array().cloned())
            .flatten()
            .collect()
    }

    /// The `webhook-id` of every request to the hook path (empty when missing).
    pub fn webhook_ids(&self) -> Vec<String> {
        self.shared.lock().request_ids.clone()
    }

    /// Requests received on the hook path, scripted, refused or accepted.
    pub fn requests(&self) -> usize {
        self.shared.lock().request_ids.len()
    }

    /// Why requests were refused, in order.
    pub fn refusals(&self) -> Vec<String> {
        self.shared.lock().refusals.clone()
    }

    /// Verified requests whose `webhook-id` had been accepted before.
    pub fn duplicates(&self) -> usize {
        self.shared.lock().duplicates
    }

    /// Headers of the last request to the hook path.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.shared.lock().last_headers.clone()
    }

    /// The next requests get these behaviours, in order; then back to normal.
    pub fn script(&self, behaviors: Vec<Behavior>) {
        self.shared.lock().script.extend(behaviors);
    }
}

impl Drop for FakeWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn text(status: StatusCode, message: &str) -> Response {
    (status, [("content-type", "text/plain")], message.to_owned()).into_response()
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "no webhook endpoint here")
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let scripted = {
        let mut recorded = shared.lock();
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        recorded.request_ids.push(id);
        recorded.last_headers = Some(headers.clone());
        recorded.script.pop_front()
    };
    match scripted {
        Some(Behavior::Status(code)) => return scripted_status(code, None),
        Some(Behavior::StatusWithRetryAfter(code, secs)) => {
            return scripted_status(code, Some(secs))
        }
        Some(Behavior::Gone) => return text(StatusCode::GONE, "endpoint disabled"),
        Some(Behavior::Stall(wait)) => {
            tokio::time::sleep(wait).await;
            return text(StatusCode::SERVICE_UNAVAILABLE, "stalled");
        }
        Some(Behavior::DropConnection) => {
            // Unwinding ends the connection task, so hyper closes the socket without a
            // response; `resume_unwind` skips the panic hook and keeps test output clean.
            std::panic::resume_unwind(Box::new("fake webhook drops the connection"));
        }
        None => {}
    }
    match accept(&shared, &headers, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err((status, message)) => {
            shared.lock().refusals.push(message.clone());
            text(status, &message)
        }
    }
}

fn scripted_status(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = text(status, status.canonical_reason().unwrap_or("Error"));
    if let Some(secs) = retry_after {
        if let Ok(value) = secs.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

fn accept(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let options = shared
        .options
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some((name, value)) = &options.required_header {
        if headers.get(name.as_str()).map(|v| v.as_bytes()) != Some(value.as_bytes()) {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("missing or wrong {name} header"),
            ));
        }
    }
    let now = Utc::now();
    let mut last_error = "no signing secret configured on the receiver".to_owned();
    let verified = options.secrets.iter().any(|secret| {
        match verify(secret, headers, body, now, DEFAULT_TOLERANCE) {
            Ok(()) => true,
            Err(err) => {
                last_error = err.to_string();
                false
            }
        }
    });
    if !verified {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            format!("signature verification failed: {last_error}"),
        ));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    if headers.contains_key("content-encoding") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be sent as signed, without Content-Encoding",
        ));
    }
    let payload: Value = serde_json::from_slice(body)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "body is not JSON"))?;
    let well_formed = payload["type"].is_string()
        && payload["timestamp"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
        && payload["data"]["events"].as_array().is_some_and(|events| {
            events
                .iter()
                .all(|e| e["EventUuid"].is_string() && e["EventID"].is_u64())
        });
    if !well_formed {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "expected {type, timestamp, data: {events: [...]}}",
        ));
    }
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let delivery = Delivery {
        webhook_id: header_text("webhook-id"),
        timestamp: header_text("webhook-timestamp").parse().unwrap_or_default(),
        signature: header_text("webhook-signature"),
        payload,
    };
    let mut recorded = shared.lock();
    if recorded
        .deliveries
        .iter()
        .any(|d| d.webhook_id == delivery.webhook_id)
    {
        recorded.duplicates += 1;
        return Ok(());
    }
    recorded.deliveries.push(delivery);
    Ok(())
}
