//! A strict fake of Microsoft Entra ID's token endpoint and of the Azure Monitor Logs Ingestion
//! API, both on one 127.0.0.1 server, for tests.
//!
//! Token endpoint, `POST /{tenant}/oauth2/v2.0/token`: the body must be
//! `application/x-www-form-urlencoded` with exactly `client_id`, `client_secret`,
//! `grant_type=client_credentials` and `scope` (once each). Unknown tenant → 400 AADSTS90002;
//! unknown client → 400 AADSTS700016; wrong secret → 401 AADSTS7000215; expired secret
//! ([`FakeSentinel::expire_secret`]) → 401 AADSTS7000222; other scope → 400 AADSTS500011.
//! Success: `{"token_type":"Bearer","expires_in":N,"access_token":"…"}`.
//!
//! Ingestion, `POST /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`: a
//! missing, unknown, expired or revoked bearer token → 401; another `api-version` → 400;
//! another DCR or stream → 404; `Content-Type` must be `application/json` (400);
//! `Content-Encoding` gzip, identity or absent; more than 1,048,576 bytes on the wire or
//! decoded → 413 `ContentLengthLimitExceeded`; the body must be a JSON array of objects, each
//! with an RFC 3339 `TimeGenerated` (400); `x-ms-client-request-id`, when sent, must be a GUID.
//! Success: 204 with no body; every row is recorded.
//!
//! Tests can script the next ingestion requests ([`FakeSentinel::script`]) or token requests
//! ([`FakeSentinel::script_token`]) with [`Behavior`].
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// The tenant the fake knows.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The app (client) id the fake knows.
pub const CLIENT_ID: &str = "0d3c8e5a-1b2f-4c6d-9e8f-123456789abc";
/// The app's only valid secret.
pub const CLIENT_SECRET: &str = "abc8Q~fake-secret.value_0123456789WXYZ";
/// The only scope the fake issues tokens for (public cloud).
pub const SCOPE: &str = "https://monitor.azure.com/.default";
/// The DCR the fake hosts.
pub const DCR_ID: &str = "dcr-0123456789abcdef0123456789abcdef";
/// The stream of that DCR.
pub const STREAM: &str = "Custom-EzcaAudit_CL";
/// The only API version served.
pub const API_VERSION: &str = "2023-01-01";
/// Largest request, compressed or not, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;
/// Lifetime of issued tokens unless changed, in seconds.
pub const DEFAULT_TOKEN_SECONDS: u64 = 3599;

/// What the fake does with one request instead of its normal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Answer this status with an Azure-like error body.
    Status(u16),
    /// Answer this status with `Retry-After: <seconds>`.
    StatusWithRetryAfter(u16, u64),
    /// Wait this long before answering 503 (longer than the client's timeout).
    Stall(Duration),
    /// Close the connection without answering.
    DropConnection,
    /// 403 `OperationFailed`: the app lacks Monitoring Metrics Publisher on the DCR.
    Forbidden,
}

#[derive(Default)]
struct Recorded {
    token_requests: usize,
    ingestion_requests: usize,
    rows: Vec<Value>,
    /// Decoded body size of each accepted ingestion request.
    accepted_sizes: Vec<usize>,
    /// Valid tokens and when they expire.
    tokens: HashMap<String, Instant>,
    issued: u64,
    token_lifetime: Option<Duration>,
    secret_expired: bool,
    script: VecDeque<Behavior>,
    token_script: VecDeque<Behavior>,
    last_headers: Option<HeaderMap>,
}

#[derive(Clone)]
struct Shared {
    recorded: Arc<Mutex<Recorded>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide the recordings from the others.
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake; stops when dropped.
pub struct FakeSentinel {
    addr: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl FakeSentinel {
    /// Starts the fake on 127.0.0.1:0.
    pub async fn start() -> FakeSentinel {
        let shared = Shared {
            recorded: Arc::default(),
        };
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/dataCollectionRules/{dcr}/streams/{stream}", post(ingest))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(16 * MAX_REQUEST_BYTES))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Sentinel on loopback");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSentinel {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: both the sign-in base URL and the ingestion endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port the fake listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Token requests received so far (any outcome).
    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Ingestion requests received so far (any outcome).
    pub fn ingestion_requests(&self) -> usize {
        self.shared.lock().ingestion_requests
    }

    /// Every row accepted so far, in arrival order.
    pub fn rows(&self) -> Vec<Value> {
        self.shared.lock().rows.clone()
    }

    /// Decoded body size of each accepted ingestion request.
    pub fn accepted_sizes(&self) -> Vec<usize> {
        self.shared.lock().accepted_sizes.clone()
    }

    /// Headers of the last ingestion request.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.shared.lock().last_headers.clone()
    }

    /// Tokens issued from now on live this long.
    pub fn issue_tokens_for(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = Some(lifetime);
    }

    /// Every token issued so far stops working: the next ingestion call with one gets 401.
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }

    /// From now on the secret is refused as expired (AADSTS7000222).
    pub fn expire_secret(&self) {
        self.shared.lock().secret_expired = true;
    }

    /// The next ingestion requests get these behaviours, in order; then back to normal.
    pub fn script(&self, behaviors: Vec<Behavior>) {
        self.shared.lock().script.extend(behaviors);
    }

    /// The next token requests get these behaviours, in order; then back to normal.
    pub fn script_token(&self, behaviors: Vec<Behavior>) {
        self.shared.lock().token_script.extend(behaviors);
    }
}

impl Drop for FakeSentinel {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn not_found() -> Response {
    azure_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The resource was not found.",
    )
}

fn azure_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({ "error": { "code": code, "message": message } }).to_string(),
    )
        .into_response()
}

fn entra_error(status: StatusCode, error: &str, code: u64, text: &str) -> Response {
    let description = format!(
        "AADSTS{code}: {text}\r\nTrace ID: 00000000-0000-0000-0000-000000000001\r\nCorrelation ID: 00000000-0000-0000-0000-000000000002\r\nTimestamp: 2025-03-04 10:00:00Z"
    );
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": "2025-03-04 10:00:00Z",
            "trace_id": "00000000-0000-0000-0000-000000000001",
            "correlation_id": "00000000-0000-0000-0000-000000000002",
        })
        .to_string(),
    )
        .into_response()
}

/// Applies a scripted behaviour; `None` when the request should be handled normally.
async fn scripted(behavior: Option<Behavior>) -> Option<Response> {
    let response = match behavior? {
        Behavior::Status(code) => status_response(code, None),
        Behavior::StatusWithRetryAfter(code, secs) => status_response(code, Some(secs)),
        Behavior::Stall(wait) => {
            tokio::time::sleep(wait).await;
            azure_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is unavailable.",
            )
        }
        Behavior::DropConnection => {
            // Unwinding ends the connection task, so hyper closes the socket without a
            // response; `resume_unwind` skips the panic hook and keeps test output clean.
            std::panic::resume_unwind(Box::new("fake Sentinel drops the connection"));
        }
        Behavior::Forbidden => azure_error(
            StatusCode::FORBIDDEN,
            "OperationFailed",
            "The authentication token provided does not have access to ingest data for the data collection rule with immutable Id 'dcr-0123456789abcdef0123456789abcdef'.",
        ),
    };
    Some(response)
}

fn status_response(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = azure_error(
        status,
        status.canonical_reason().unwrap_or("Error"),
        "Scripted answer of the fake.",
    );
    if let Some(secs) = retry_after {
        if let Ok(value) = secs.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

async fn token(
    State(shared): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behavior = {
        let mut recorded = shared.lock();
        recorded.token_requests += 1;
        recorded.token_script.pop_front()
    };
    if let Some(response) = scripted(behavior).await {
        return response;
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/x-www-form-urlencoded") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "Malformed form body.",
        );
    };
    let mut names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    if names != ["client_id", "client_secret", "grant_type", "scope"] {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain exactly client_id, client_secret, grant_type and scope.",
        );
    }
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    if tenant != TENANT {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != CLIENT_ID {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'.",
                field("client_id")
            ),
        );
    }
    if field("client_secret") != CLIENT_SECRET {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    if shared.lock().secret_expired {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000222,
            "The provided client secret keys for app are expired.",
        );
    }
    if field("scope") != SCOPE {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {} was not found in the tenant.",
                field("scope")
            ),
        );
    }
    let mut recorded = shared.lock();
    recorded.issued += 1;
    let lifetime = recorded
        .token_lifetime
        .unwrap_or(Duration::from_secs(DEFAULT_TOKEN_SECONDS));
    let access_token = format!("fake-token-{}-{}", recorded.issued, rand::random::<u64>());
    recorded
        .tokens
        // A hostile lifetime (u64::MAX s) is what the answer says; the fake's own clock
        // saturates at a century.
        .insert(
            access_token.clone(),
            Instant::now() + lifetime.min(Duration::from_secs(100 * 365 * 86_400)),
        );
    (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
            "ext_expires_in": lifetime.as_secs(),
            "access_token": access_token,
        })
        .to_string(),
    )
        .into_response()
}

async fn ingest(
    State(shared): State<Shared>,
    Path((dcr, stream)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behavior = {
        let mut recorded = shared.lock();
        recorded.ingestion_requests += 1;
        recorded.last_headers = Some(headers.clone());
        recorded.script.pop_front()
    };
    if let Some(response) = scripted(behavior).await {
        return response;
    }
    match accept(&shared, &dcr, &stream, &query, &headers, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err((status, code, message)) => azure_error(status, code, &message),
    }
}

/// A refusal: status, Azure error code and message.
type Refusal = (StatusCode, &'static str, String);

fn accept(
    shared: &Shared,
    dcr: &str,
    stream: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or((
            StatusCode::UNAUTHORIZED,
            "InvalidToken",
            "An authorization token is required.".to_owned(),
        ))?;
    let valid = shared
        .lock()
        .tokens
        .get(bearer)
        .is_some_and(|expires| Instant::now() < *expires);
    if !valid {
        return Err((
            StatusCode::UNAUTHORIZED,
            "InvalidToken",
            "The authentication token is invalid, expired or revoked.".to_owned(),
        ));
    }
    if query.get("api-version").map(String::as_str) != Some(API_VERSION) {
        return Err((
            StatusCode::BAD_REQUEST,
            "InvalidApiVersion",
            "The api-version query parameter must be 2023-01-01.".to_owned(),
        ));
    }
    if dcr != DCR_ID {
        return Err((
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Data collection rule with immutable Id '{dcr}' not found."),
        ));
    }
    if stream != STREAM {
        return Err((
            StatusCode::NOT_FOUND,
            "InvalidStream",
            format!("Stream '{stream}' is not declared in the data collection rule."),
        ));
    }
    if let Some(id) = headers.get("x-ms-client-request-id") {
        let id = id.to_str().unwrap_or_default();
        if uuid::Uuid::try_parse(id).is_err() {
            return Err((
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "x-ms-client-request-id must be a GUID.".to_owned(),
            ));
        }
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err((
            StatusCode::BAD_REQUEST,
            "InvalidContentType",
            "Content-Type must be application/json.".to_owned(),
        ));
    }
    let too_large = |size: usize| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "ContentLengthLimitExceeded",
            format!("Maximum allowed content length: {MAX_REQUEST_BYTES} bytes (1 MB). Provided content length: {size} bytes."),
        )
    };
    if body.len() > MAX_REQUEST_BYTES {
        return Err(too_large(body.len()));
    }
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let limit = (MAX_REQUEST_BYTES + 1) as u64;
    let mut plain = Vec::new();
    let decoded = match encoding.as_str() {
        "gzip" => flate2::read::MultiGzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut plain),
        "identity" => body.take(limit).read_to_end(&mut plain),
        _ => {
            return Err((
                StatusCode::BAD_REQUEST,
                "InvalidContentEncoding",
                "Content-Encoding must be gzip when set.".to_owned(),
            ))
        }
    };
    if decoded.is_err() {
        return Err((
            StatusCode::BAD_REQUEST,
            "InvalidContentEncoding",
            "The body does not match Content-Encoding.".to_owned(),
        ));
    }
    if plain.len() > MAX_REQUEST_BYTES {
        return Err(too_large(plain.len()));
    }
    let malformed = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            message.to_owned(),
        )
    };
    let parsed: Value =
        serde_json::from_slice(&plain).map_err(|_| malformed("The body is not valid JSON."))?;
    let Value::Array(rows) = parsed else {
        return Err(malformed("The body must be a JSON array."));
    };
    for row in &rows {
        let time = row
            .get("TimeGenerated")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("Every row needs a TimeGenerated."))?;
        chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|_| malformed("TimeGenerated must be an RFC 3339 date."))?;
    }
    let mut recorded = shared.lock();
    recorded.accepted_sizes.push(plain.len());
    recorded.rows.extend(rows);
    Ok(())
}
