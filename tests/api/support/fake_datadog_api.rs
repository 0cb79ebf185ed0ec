//! A strict fake of Datadog's monitors API (`/api/v1/monitor`) on 127.0.0.1, for tests.
//!
//! As Datadog documents it: both `DD-API-KEY` and `DD-APPLICATION-KEY` are required (missing
//! or wrong → 403 `{"errors":["Forbidden"]}`); `GET` lists monitors, filtered by
//! `monitor_tags` (comma-separated, all must be present); `POST` creates one from a JSON body
//! (`Content-Type: application/json`) with a non-empty `name`, `type` `log alert`, a `query`
//! of the form `logs("…").index("…").rollup("count").last("…") <op> <number>`, `message` a
//! string, `tags` strings, `options.thresholds.critical` a number; anything else → 400
//! `{"errors":[…]}`. An application key without `monitors_write` gets 403 on `POST`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Shared {
    monitors: Vec<Value>,
    next_id: i64,
    read_only: bool,
    creates: usize,
}

#[derive(Clone)]
struct Fake {
    api_key: String,
    app_key: String,
    shared: Arc<Mutex<Shared>>,
}

/// The running fake.
pub struct FakeDatadogApi {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDatadogApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"errors": ["Forbidden"]})),
    )
        .into_response()
}

fn bad(why: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"errors": [why]}))).into_response()
}

impl Fake {
    fn keys_ok(&self, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        header("DD-API-KEY") == Some(self.api_key.as_str())
            && header("DD-APPLICATION-KEY") == Some(self.app_key.as_str())
    }
}

async fn list(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    if !fake.keys_ok(&headers) {
        return forbidden();
    }
    let wanted: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "monitor_tags")
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_owned()))
        .filter(|t| !t.is_empty())
        .collect();
    let shared = fake.shared.lock().unwrap();
    let found: Vec<Value> = shared
        .monitors
        .iter()
        .filter(|m| {
            let tags: Vec<&str> = m["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            wanted.iter().all(|w| tags.contains(&w.as_str()))
        })
        .cloned()
        .collect();
    Json(Value::Array(found)).into_response()
}

fn check_body(body: &Value) -> Result<(), String> {
    let text = |k: &str| body[k].as_str().filter(|s| !s.is_empty());
    text("name").ok_or("name is required")?;
    if body["type"] != "log alert" {
        return Err(format!("type must be log alert, not {}", body["type"]));
    }
    let query = text("query").ok_or("query is required")?;
    let shape = query.starts_with("logs(\"")
        && query.contains("\").index(\"")
        && query.contains(").rollup(\"count\")")
        && query.contains(".last(\"");
    let threshold = query
        .rsplit_once(' ')
        .is_some_and(|(_, n)| n.parse::<f64>().is_ok());
    if !shape || !threshold {
        return Err(format!(
            "The value provided for parameter 'query' is invalid: {query}"
        ));
    }
    if !body["message"].is_string() {
        return Err("message must be a string".into());
    }
    if !body["tags"]
        .as_array()
        .is_some_and(|t| t.iter().all(Value::is_string))
    {
        return Err("tags must be a list of strings".into());
    }
    if !body["options"]["thresholds"]["critical"].is_number() {
        return Err("options.thresholds.critical must be a number".into());
    }
    Ok(())
}

async fn create(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    if !fake.keys_ok(&headers) {
        return forbidden();
    }
    if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| !v.starts_with("application/json"))
    {
        return bad("Content-Type must be application/json");
    }
    let mut shared = fake.shared.lock().unwrap();
    if shared.read_only {
        return forbidden();
    }
    let Ok(mut body) = serde_json::from_str::<Value>(&body) else {
        return bad("body is not JSON");
    };
    if let Err(why) = check_body(&body) {
        return bad(&why);
    }
    shared.next_id += 1;
    body["id"] = json!(1000 + shared.next_id);
    shared.monitors.push(body.clone());
    shared.creates += 1;
    Json(body).into_response()
}

impl FakeDatadogApi {
    /// Starts the fake; only these two keys open it.
    pub async fn start(api_key: &str, app_key: &str) -> FakeDatadogApi {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let fake = Fake {
            api_key: api_key.to_owned(),
            app_key: app_key.to_owned(),
            shared: shared.clone(),
        };
        let app = Router::new()
            .route("/api/v1/monitor", get(list).post(create))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeDatadogApi { addr, shared, task }
    }

    /// The API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every monitor it holds.
    pub fn monitors(&self) -> Vec<Value> {
        self.shared.lock().unwrap().monitors.clone()
    }

    /// How many monitors were created.
    pub fn creates(&self) -> usize {
        self.shared.lock().unwrap().creates
    }

    /// From now on the application key lacks `monitors_write`.
    pub fn read_only(&self) {
        self.shared.lock().unwrap().read_only = true;
    }
}
