//! A strict fake of the Datadog Logs intake (`POST /api/v2/logs`) on 127.0.0.1, for tests.
//!
//! It speaks the outside contract as Datadog does: `DD-API-KEY` missing → 401, wrong → 403
//! `{"errors":["Forbidden"]}`; `Content-Type` must be `application/json` (400);
//! `Content-Encoding` gzip, deflate (zlib), identity or absent; the decoded body must be a JSON
//! array of objects (a single object is accepted too), at most 1,000 entries (400) and at most
//! 5,000,000 bytes uncompressed (413). A log over 1,000,000 bytes is accepted and counted as
//! truncated, as Datadog would. Success is `202 {}`. Every other path is 404.
//!
//! Tests can script the next requests' fate with [`Behavior`]; every request is counted and
//! every accepted log recorded.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// Most logs per request.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Largest uncompressed body, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 5_000_000;
/// Largest log kept whole, in bytes.
pub const MAX_LOG_BYTES: usize = 1_000_000;
/// Largest request body read at all (compressed or not), in bytes.
const MAX_WIRE_BYTES: usize = 64 * 1024 * 1024;

/// What the fake does with one request instead of its normal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Answer this status with a Datadog-like error body.
    Status(u16),
    /// Answer this status with a body that names the request (a proxy's request id), so no
    /// two answers are alike.
    StatusWithRequestId(u16),
    /// Answer this status with `Retry-After: <seconds>`.
    StatusWithRetryAfter(u16, u64),
    /// Wait this long before answering 503 (longer than the client's timeout).
    Stall(Duration),
    /// Close the connection without answering.
    DropConnection,
    /// Accept and record the logs, then wait this long before answering 202 (a sender that
    /// dies meanwhile never learns that the logs arrived).
    AcceptSlowly(Duration),
}

#[derive(Default)]
struct Recorded {
    logs: Vec<Value>,
    requests: usize,
    truncated_logs: usize,
    script: VecDeque<Behavior>,
    always: Option<Behavior>,
    last_headers: Option<HeaderMap>,
    poison: Option<(String, Value)>,
}

#[derive(Clone)]
struct Shared {
    valid_api_key: Arc<str>,
    recorded: Arc<Mutex<Recorded>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide the recordings from the others.
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake intake; stops when dropped.
pub struct FakeDatadog {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl FakeDatadog {
    /// Starts the fake on 127.0.0.1:0, accepting only `valid_api_key`.
    pub async fn start(valid_api_key: &str) -> FakeDatadog {
        let shared = Shared {
            valid_api_key: Arc::from(valid_api_key),
            recorded: Arc::default(),
        };
        let app = Router::new()
            .route("/api/v2/logs", post(intake))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_WIRE_BYTES))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Datadog on loopback");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeDatadog {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, the intake base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every log accepted so far, in arrival order.
    pub fn logs(&self) -> Vec<Value> {
        self.shared.lock().logs.clone()
    }

    /// Requests received so far, on any path, scripted or not.
    pub fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    /// Accepted logs that exceeded 1 MB (Datadog would have truncated them).
    pub fn truncated_logs(&self) -> usize {
        self.shared.lock().truncated_logs
    }

    /// Headers of the last request to the intake path.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.shared.lock().last_headers.clone()
    }

    /// From now on, a request holding any log whose `details.<key>` equals `value` is refused
    /// whole with 400, as Datadog refuses a malformed payload.
    pub fn reject_logs_with_detail(&self, key: &str, value: Value) {
        self.shared.lock().poison = Some((key.to_owned(), value));
    }

    /// Every request gets this behaviour once the script (if any) is used up: a proxy that
    /// answers 400 to everything, an intake that is always slow.
    pub fn always(&self, behavior: Behavior) {
        self.shared.lock().always = Some(behavior);
    }

    /// The next requests get these behaviours, in order; then back to normal (or to
    /// [`Self::always`]).
    /// Forgets every scripted or standing misbehaviour: from now on it accepts valid logs.
    pub fn heal(&self) {
        let mut recorded = self.shared.lock();
        recorded.always = None;
        recorded.script.clear();
    }

    pub fn script(&self, behaviors: Vec<Behavior>) {
        self.shared.lock().script.extend(behaviors);
    }
}

impl Drop for FakeDatadog {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn errors(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({ "errors": [message] }).to_string(),
    )
        .into_response()
}

async fn not_found(State(shared): State<Shared>) -> Response {
    shared.lock().requests += 1;
    errors(StatusCode::NOT_FOUND, "Not found")
}

async fn intake(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (scripted, request) = {
        let mut recorded = shared.lock();
        recorded.requests += 1;
        recorded.last_headers = Some(headers.clone());
        let next = recorded.script.pop_front();
        (next.or_else(|| recorded.always.clone()), recorded.requests)
    };
    match scripted {
        Some(Behavior::StatusWithRequestId(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            return errors(
                status,
                &format!("Refused by proxy (request id {request:08x})"),
            );
        }
        Some(Behavior::Status(code)) => return scripted_status(code, None),
        Some(Behavior::StatusWithRetryAfter(code, secs)) => {
            return scripted_status(code, Some(secs))
        }
        Some(Behavior::Stall(wait)) => {
            tokio::time::sleep(wait).await;
            return errors(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        }
        Some(Behavior::AcceptSlowly(wait)) => {
            let answer = accept(&shared, &headers, &body);
            tokio::time::sleep(wait).await;
            return match answer {
                Ok(()) => (
                    StatusCode::ACCEPTED,
                    [("content-type", "application/json")],
                    "{}",
                )
                    .into_response(),
                Err((status, message)) => errors(status, message),
            };
        }
        Some(Behavior::DropConnection) => {
            // Unwinding ends the connection task, so hyper closes the socket without a
            // response; `resume_unwind` skips the panic hook and keeps test output clean.
            std::panic::resume_unwind(Box::new("fake Datadog drops the connection"));
        }
        None => {}
    }
    match accept(&shared, &headers, &body) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            [("content-type", "application/json")],
            "{}",
        )
            .into_response(),
        Err((status, message)) => errors(status, message),
    }
}

fn scripted_status(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = errors(status, status.canonical_reason().unwrap_or("Error"));
    if let Some(secs) = retry_after {
        if let Ok(value) = secs.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

/// A refusal: the status and the text of Datadog's `{"errors":[…]}` body.
type Refusal = (StatusCode, &'static str);

fn accept(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    let key = headers
        .get("dd-api-key")
        .ok_or((StatusCode::UNAUTHORIZED, "Unauthorized"))?;
    if key.as_bytes() != shared.valid_api_key.as_bytes() {
        return Err((StatusCode::FORBIDDEN, "Forbidden"));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    // Read at most one byte past the limit: enough to know it is too large.
    let limit = (MAX_PAYLOAD_BYTES + 1) as u64;
    let mut plain = Vec::new();
    let decoded = match encoding.as_str() {
        "gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut plain),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut plain),
        "identity" => body.take(limit).read_to_end(&mut plain),
        _ => return Err((StatusCode::BAD_REQUEST, "Unsupported Content-Encoding")),
    };
    if decoded.is_err() {
        return Err((
            StatusCode::BAD_REQUEST,
            "Body does not match Content-Encoding",
        ));
    }
    if plain.len() > MAX_PAYLOAD_BYTES {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "Payload too large"));
    }
    let parsed: Value =
        serde_json::from_slice(&plain).map_err(|_| (StatusCode::BAD_REQUEST, "Malformed JSON"))?;
    let logs = match parsed {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err((StatusCode::BAD_REQUEST, "Expected an array of logs")),
    };
    if logs.len() > MAX_BATCH_EVENTS {
        return Err((StatusCode::BAD_REQUEST, "Too many logs in one request"));
    }
    if logs.iter().any(|log| !log.is_object()) {
        return Err((StatusCode::BAD_REQUEST, "Each log must be an object"));
    }
    let mut recorded = shared.lock();
    if let Some((key, value)) = &recorded.poison {
        if logs
            .iter()
            .any(|log| log["details"].get(key) == Some(value))
        {
            return Err((StatusCode::BAD_REQUEST, "Malformed log"));
        }
    }
    for log in logs {
        if log.to_string().len() > MAX_LOG_BYTES {
            recorded.truncated_logs += 1;
        }
        recorded.logs.push(log);
    }
    Ok(())
}
