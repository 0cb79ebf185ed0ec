//! A strict fake HTTP Event Collector on 127.0.0.1, for tests, in two modes.
//!
//! **Splunk** ([`HecMode::Splunk`]): `POST /services/collector/event` (and its aliases
//! `/services/collector`, `/services/collector/event/1.0`), `POST /services/collector/ack`,
//! `GET /services/collector/health` (200 code 17). `Authorization: Splunk <token>`: missing →
//! 401 code 2, another scheme → 401 code 3, wrong token → 403 `{"text":"Invalid token","code":4}`.
//!
//! **LogScale** ([`HecMode::LogScale`]): `POST /api/v1/ingest/hec` (and `/services/collector`),
//! `Authorization: Bearer <ingest token>`: missing or another scheme → 401, wrong token → 401.
//! No acknowledgement endpoint.
//!
//! Every other path is 404. The body must not be compressed (400 code 6 otherwise: real
//! collectors are not documented to inflate), at most 1,000,000 bytes (413), not blank (400 code
//! 5), and a series of whitespace-separated JSON objects, each with a non-empty `event` and a
//! numeric `time`; an `index` must be on the allowed list (400 code 7, nothing indexed). Like
//! Splunk, object k that is malformed yields 400 code 6 with `invalid-event-number: k` **after
//! the k objects before it were indexed**. Success is `{"text":"Success","code":0}`.
//!
//! Indexer acknowledgement (Splunk mode): a request with `X-Splunk-Request-Channel` gets an
//! `ackId` (per channel, from 0); `/services/collector/ack` answers `{"acks":{"<id>":bool}}`,
//! true at once unless the batch was scripted [`Behavior::NeverAck`]. The token can be set to
//! require a channel (400 code 10 without) or to have acknowledgement disabled (channel ignored,
//! ack endpoint 400 code 14).
//!
//! Tests script the next event requests' fate with [`Behavior`]; every request is counted and
//! every indexed envelope recorded.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

/// Largest body accepted, in bytes (Splunk's pre-7.x `max_content_length`).
pub const MAX_CONTENT_LENGTH: usize = 1_000_000;
/// Largest request body read at all, in bytes.
const MAX_WIRE_BYTES: usize = 16 * 1024 * 1024;

/// Which collector the fake plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HecMode {
    Splunk,
    LogScale,
}

/// What the token says about indexer acknowledgement (Splunk mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAck {
    /// Acknowledgement on; a channel is optional (the default of this fake).
    Optional,
    /// Acknowledgement on and a channel required (400 code 10 without).
    Required,
    /// Acknowledgement off: channels are ignored, the ack endpoint answers 400 code 14.
    Disabled,
}

/// What the fake does with one event request instead of, or besides, its normal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Answer this HTTP status with this HEC code.
    Status(u16, i64),
    /// Answer this HTTP status and HEC code with `Retry-After: <seconds>`.
    StatusWithRetryAfter(u16, i64, u64),
    /// Wait this long before answering 503 code 9.
    Stall(Duration),
    /// Close the connection without answering.
    DropConnection,
    /// Index events 0..k, then answer code 6 for event k as if it were malformed.
    RejectEventAt(usize),
    /// Index normally, but never acknowledge this request's ackId.
    NeverAck,
}

#[derive(Default)]
struct Recorded {
    events: Vec<Value>,
    requests: usize,
    event_requests: usize,
    ack_polls: usize,
    script: VecDeque<Behavior>,
    last_headers: Option<HeaderMap>,
    /// channel → next ackId and the state of each id.
    acks: HashMap<String, Vec<bool>>,
}

#[derive(Clone)]
struct Shared {
    mode: HecMode,
    token: Arc<str>,
    allowed_indexes: Arc<Mutex<Vec<String>>>,
    token_ack: Arc<Mutex<TokenAck>>,
    recorded: Arc<Mutex<Recorded>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide the recordings from the others.
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn token_ack(&self) -> TokenAck {
        *self.token_ack.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake collector; stops when dropped.
pub struct FakeHec {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl FakeHec {
    /// Starts the fake on 127.0.0.1:0 in `mode`, accepting only `token`; the allowed indexes
    /// are `main` and `pki`.
    pub async fn start(mode: HecMode, token: &str) -> FakeHec {
        let shared = Shared {
            mode,
            token: Arc::from(token),
            allowed_indexes: Arc::new(Mutex::new(vec!["main".into(), "pki".into()])),
            token_ack: Arc::new(Mutex::new(TokenAck::Optional)),
            recorded: Arc::default(),
        };
        let router = match mode {
            HecMode::Splunk => Router::new()
                .route("/services/collector/event", post(collect))
                .route("/services/collector/event/1.0", post(collect))
                .route("/services/collector", post(collect))
                .route("/services/collector/ack", post(ack))
                .route("/services/collector/health", get(health)),
            HecMode::LogScale => Router::new()
                .route("/api/v1/ingest/hec", post(collect))
                .route("/services/collector", post(collect)),
        };
        let app = router
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_WIRE_BYTES))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake HEC on loopback");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeHec {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, the collector base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port the fake listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the token's allowed indexes.
    pub fn allow_indexes(&self, indexes: &[&str]) {
        *self
            .shared
            .allowed_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = indexes.iter().map(|s| s.to_string()).collect();
    }

    /// Sets the token's indexer acknowledgement.
    pub fn set_token_ack(&self, ack: TokenAck) {
        *self
            .shared
            .token_ack
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = ack;
    }

    /// Every indexed envelope so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock().events.clone()
    }

    /// `event.EventUuid` of every indexed envelope, in arrival order.
    pub fn event_uuids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| {
                e["event"]["EventUuid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// Requests received so far, on any path, scripted or not.
    pub fn requests(&self) -> usize {
        self.shared.lock().requests
    }

    /// Requests to an event endpoint so far.
    pub fn event_requests(&self) -> usize {
        self.shared.lock().event_requests
    }

    /// Requests to the ack endpoint so far.
    pub fn ack_polls(&self) -> usize {
        self.shared.lock().ack_polls
    }

    /// Headers of the last request to an event endpoint.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.shared.lock().last_headers.clone()
    }

    /// The next event requests get these behaviours, in order; then back to normal.
    pub fn script(&self, behaviors: Vec<Behavior>) {
        self.shared.lock().script.extend(behaviors);
    }
}

impl Drop for FakeHec {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: StatusCode, value: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        value.to_string(),
    )
        .into_response()
}

fn hec(status: StatusCode, text: &str, code: i64) -> Response {
    reply(status, json!({ "text": text, "code": code }))
}

fn text_for(code: i64) -> &'static str {
    match code {
        0 => "Success",
        1 => "Token disabled",
        2 => "Token is required",
        3 => "Invalid authorization",
        4 => "Invalid token",
        5 => "No data",
        6 => "Invalid data format",
        7 => "Incorrect index",
        8 => "Internal server error",
        9 => "Server is busy",
        10 => "Data channel is missing",
        11 => "Invalid data channel",
        12 => "Event field is required",
        13 => "Event field cannot be blank",
        14 => "ACK is disabled",
        18 => "HEC is unhealthy, queues are full",
        19 => "HEC is unhealthy, ack service unavailable",
        20 => "HEC is unhealthy, queues are full",
        _ => "Error",
    }
}

async fn not_found(State(shared): State<Shared>) -> Response {
    shared.lock().requests += 1;
    hec(
        StatusCode::NOT_FOUND,
        "The requested URL was not found on this server.",
        404,
    )
}

async fn health(State(shared): State<Shared>) -> Response {
    shared.lock().requests += 1;
    hec(StatusCode::OK, "HEC is healthy", 17)
}

/// The refusal of a missing or wrong `Authorization` header, as the mode's collector answers.
fn refuse_auth(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match shared.mode {
        HecMode::Splunk => {
            let Some(value) = value else {
                return Some(hec(StatusCode::UNAUTHORIZED, text_for(2), 2));
            };
            let Some(token) = value.strip_prefix("Splunk ") else {
                return Some(hec(StatusCode::UNAUTHORIZED, text_for(3), 3));
            };
            if token.trim() != &*shared.token {
                return Some(hec(StatusCode::FORBIDDEN, text_for(4), 4));
            }
        }
        HecMode::LogScale => {
            let token = value.and_then(|v| v.strip_prefix("Bearer "));
            if token.map(str::trim) != Some(&*shared.token) {
                return Some(
                    (StatusCode::UNAUTHORIZED, "The ingest token is not valid").into_response(),
                );
            }
        }
    }
    None
}

fn channel_of(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    if shared.mode != HecMode::Splunk || shared.token_ack() == TokenAck::Disabled {
        return None;
    }
    headers
        .get("x-splunk-request-channel")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn collect(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let scripted = {
        let mut recorded = shared.lock();
        recorded.requests += 1;
        recorded.event_requests += 1;
        recorded.last_headers = Some(headers.clone());
        recorded.script.pop_front()
    };
    if let Some(refusal) = refuse_auth(&shared, &headers) {
        return refusal;
    }
    let mut reject_at = None;
    let mut never_ack = false;
    match scripted {
        Some(Behavior::Status(status, code)) => return scripted_status(status, code, None),
        Some(Behavior::StatusWithRetryAfter(status, code, secs)) => {
            return scripted_status(status, code, Some(secs))
        }
        Some(Behavior::Stall(wait)) => {
            tokio::time::sleep(wait).await;
            return hec(StatusCode::SERVICE_UNAVAILABLE, text_for(9), 9);
        }
        Some(Behavior::DropConnection) => {
            // Unwinding ends the connection task, so hyper closes the socket without a
            // response; `resume_unwind` skips the panic hook and keeps test output clean.
            std::panic::resume_unwind(Box::new("fake HEC drops the connection"));
        }
        Some(Behavior::RejectEventAt(k)) => reject_at = Some(k),
        Some(Behavior::NeverAck) => never_ack = true,
        None => {}
    }
    let channel = channel_of(&shared, &headers);
    if channel.is_none()
        && shared.mode == HecMode::Splunk
        && shared.token_ack() == TokenAck::Required
    {
        return hec(StatusCode::BAD_REQUEST, text_for(10), 10);
    }
    if channel
        .as_deref()
        .is_some_and(|c| uuid::Uuid::parse_str(c).is_err())
    {
        return hec(StatusCode::BAD_REQUEST, text_for(11), 11);
    }
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    if !encoding.eq_ignore_ascii_case("identity") {
        return hec(StatusCode::BAD_REQUEST, text_for(6), 6);
    }
    if body.len() > MAX_CONTENT_LENGTH {
        return hec(StatusCode::PAYLOAD_TOO_LARGE, "Content too large", 413);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return hec(StatusCode::BAD_REQUEST, text_for(5), 5);
    }

    // Parse all objects first to check indexes; a malformed object stops the parse at k.
    let mut objects = Vec::new();
    let mut malformed_at = None;
    for (k, item) in serde_json::Deserializer::from_slice(&body)
        .into_iter::<Value>()
        .enumerate()
    {
        match item {
            Ok(value) if well_formed(&value) => objects.push(value),
            _ => {
                malformed_at = Some(k);
                break;
            }
        }
    }
    {
        let allowed = shared
            .allowed_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let refused = objects.iter().any(|o| {
            o.get("index")
                .is_some_and(|i| !i.as_str().is_some_and(|i| allowed.iter().any(|a| a == i)))
        });
        if refused {
            return hec(StatusCode::BAD_REQUEST, text_for(7), 7);
        }
    }
    let stop = match (malformed_at, reject_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut recorded = shared.lock();
    if let Some(k) = stop {
        if k < objects.len() + usize::from(malformed_at.is_some()) {
            recorded.events.extend(objects.into_iter().take(k));
            return reply(
                StatusCode::BAD_REQUEST,
                json!({ "text": text_for(6), "code": 6, "invalid-event-number": k }),
            );
        }
    }
    recorded.events.extend(objects);
    match channel {
        Some(channel) => {
            let acks = recorded.acks.entry(channel).or_default();
            let id = acks.len();
            acks.push(!never_ack);
            reply(
                StatusCode::OK,
                json!({ "text": "Success", "code": 0, "ackId": id }),
            )
        }
        None => hec(StatusCode::OK, "Success", 0),
    }
}

/// An object with a non-empty `event` and a numeric `time`.
fn well_formed(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let event_ok = match object.get("event") {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        _ => false,
    };
    event_ok && object.get("time").is_some_and(Value::is_number)
}

fn scripted_status(status: u16, code: i64, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = hec(status, text_for(code), code);
    if let Some(secs) = retry_after {
        if let Ok(value) = secs.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

async fn ack(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    {
        let mut recorded = shared.lock();
        recorded.requests += 1;
        recorded.ack_polls += 1;
    }
    if let Some(refusal) = refuse_auth(&shared, &headers) {
        return refusal;
    }
    if shared.token_ack() == TokenAck::Disabled {
        return hec(StatusCode::BAD_REQUEST, text_for(14), 14);
    }
    let Some(channel) = channel_of(&shared, &headers) else {
        return hec(StatusCode::BAD_REQUEST, text_for(10), 10);
    };
    let ids: Option<Vec<u64>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["acks"].as_array().cloned())
        .map(|ids| ids.iter().filter_map(Value::as_u64).collect());
    let Some(ids) = ids else {
        return hec(StatusCode::BAD_REQUEST, text_for(6), 6);
    };
    let recorded = shared.lock();
    let Some(acks) = recorded.acks.get(&channel) else {
        return hec(StatusCode::BAD_REQUEST, text_for(11), 11);
    };
    let answer: serde_json::Map<String, Value> = ids
        .iter()
        .map(|id| {
            let done = usize::try_from(*id)
                .ok()
                .and_then(|i| acks.get(i))
                .copied()
                .unwrap_or(false);
            (id.to_string(), Value::Bool(done))
        })
        .collect();
    reply(StatusCode::OK, json!({ "acks": answer }))
}
