//! The REST API for a subscription's SIEM settings (DESIGN.md, "Contract: REST API for the
//! settings"): `GET`/`PUT /api/v1/subscriptions/{id}/siem` with a personal API token, and
//! `GET /api/v1/openapi.json`.
//!
//! The body's keys are the settings page's form field names, for every provider in the
//! registry. Secrets never come back: a stored one shows as `<field>_set: true` and
//! `<field>_last4`. A `PUT` goes through the same form check, address rule, sealing, save and
//! history as the page; a secret left out is kept (unless an address changed).

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::WebError;
use crate::{
    crypto,
    domain::events::{catalog, EventFilter},
    siem::{
        config::{self, Context, FormValues},
        registry::FieldKind,
        Provider,
    },
    state::AppState,
    store::{self, accounts::MembershipRow, personal_tokens::TokenUser},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/subscriptions/{id}/siem", get(show).put(update))
        .route("/api/v1/openapi.json", get(openapi))
}

fn problem(status: StatusCode, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"cloudpki\""),
        );
    }
    response
}

/// The token's user and their membership, or the answer that refuses the request.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Result<(TokenUser, MembershipRow), Response>, WebError> {
    let token = super::bearer(headers);
    let Some(token) = token else {
        return Ok(Err(problem(
            StatusCode::UNAUTHORIZED,
            "Send a personal API token as `Authorization: Bearer <token>` (create one on your Account page or with `cloudpki admin create-api-token`).",
        )));
    };
    let Some(user) =
        store::personal_tokens::authenticate(state.pool(), &crypto::token_digest(token)).await?
    else {
        return Ok(Err(problem(
            StatusCode::UNAUTHORIZED,
            "The token is unknown or revoked.",
        )));
    };
    let not_found = || problem(StatusCode::NOT_FOUND, "No such subscription.");
    let Ok(subscription_id) = Uuid::parse_str(id) else {
        return Ok(Err(not_found()));
    };
    match store::accounts::membership(state.pool(), user.user_id, subscription_id).await? {
        Some(membership) => Ok(Ok((user, membership))),
        None => Ok(Err(not_found())),
    }
}

/// The settings as the API shows them: form field names, secrets as `_set` and `_last4`.
async fn representation(state: &AppState, sub: Uuid) -> Result<Value, WebError> {
    let settings = store::siem::settings(state.pool(), sub).await?;
    let stored = crate::settings::load_all(state.pool(), state.master_key(), sub).await?;
    let mut body = Map::new();
    body.insert(
        "siem_enabled".into(),
        json!(settings.as_ref().is_some_and(|s| s.enabled)),
    );
    body.insert(
        "provider".into(),
        json!(settings
            .as_ref()
            .map_or(Provider::first().id(), |s| s.provider.as_str())),
    );
    // The event filter of the current destination (every catalog event by default).
    let current = settings
        .as_ref()
        .map_or(Provider::first().id(), |s| s.provider.as_str());
    let filter = store::delivery::filter_of(state.pool(), sub, current)
        .await?
        .unwrap_or_default();
    let ids: Vec<u32> = catalog()
        .iter()
        .filter(|e| filter.sends(e.id))
        .map(|e| e.id.get())
        .collect();
    body.insert("send_event_ids".into(), json!(ids));
    for (provider, stored) in &stored {
        for field in provider.fields() {
            if field.sealed_as.is_some() && !matches!(field.kind, FieldKind::Url) {
                if let Some(secret) = stored.secrets.get(field.name) {
                    body.insert(format!("{}_set", field.name), json!(true));
                    body.insert(format!("{}_last4", field.name), json!(secret.hint()));
                }
                continue;
            }
            if let Some(value) = stored.fields.get(field.name) {
                let value = match field.kind {
                    FieldKind::Check => json!(value == "on"),
                    _ => json!(value),
                };
                body.insert(field.name.into(), value);
            }
        }
    }
    Ok(Value::Object(body))
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (_, membership) = match caller(&state, &headers, &id).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    Ok(Json(representation(&state, membership.subscription_id).await?).into_response())
}

async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let (user, membership) = match caller(&state, &headers, &id).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let sub = membership.subscription_id;
    if !membership.role().is_admin() {
        store::siem::record_history(
            state.pool(),
            sub,
            user.user_id,
            &user.email,
            "denied",
            &["Tried to change SIEM settings through the API without the admin role".to_owned()],
        )
        .await?;
        return Ok(problem(
            StatusCode::FORBIDDEN,
            "Only administrators of this subscription can change its SIEM settings.",
        ));
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&body) else {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            "Send the settings as a JSON object whose keys are the settings form's field names (GET shows them).",
        ));
    };
    let mut values = FormValues::new();
    let mut errors = config::FieldErrors::default();
    let mut object = object;
    // The event filter: an array of catalog Event IDs (left out: unchanged).
    let filter = match object.remove("send_event_ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let ticked: Vec<String> = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            match EventFilter::parse(&ticked) {
                Ok(filter) => Some(filter),
                Err(e) => {
                    errors.add("send_event_ids", e);
                    None
                }
            }
        }
        Some(_) => {
            errors.add(
                "send_event_ids",
                "Give an array of Event IDs, for example [4888, 4887].",
            );
            None
        }
    };
    for (name, value) in &object {
        match value {
            Value::String(text) => {
                values.insert(name.clone(), text.clone());
            }
            Value::Bool(true) => {
                values.insert(name.clone(), "on".into());
            }
            Value::Bool(false) | Value::Null => {}
            _ => errors.add(name, "Give a string, or true/false for a checkbox."),
        }
    }
    let enabled = values.remove("siem_enabled").is_some();
    let before = store::siem::settings(state.pool(), sub).await?;
    let provider = match values.remove("provider") {
        None => before
            .as_ref()
            .and_then(|s| Provider::parse(&s.provider).ok())
            .unwrap_or_else(Provider::first),
        Some(raw) => match Provider::parse(&raw) {
            Ok(p) => p,
            Err(e) => {
                errors.add("provider", e);
                Provider::first()
            }
        },
    };
    if let Some(unknown) = values.keys().find(|name| {
        provider
            .field(name)
            .is_none_or(|f| matches!(f.kind, FieldKind::Internal))
    }) {
        errors.add(
            unknown,
            format!("Not a field of {}; GET lists the fields.", provider.label()),
        );
    }
    let invalid = |errors: config::FieldErrors| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "Nothing was saved: fix the fields listed in `errors`.",
                "errors": errors.0,
            })),
        )
            .into_response()
    };
    if errors.count() > 0 {
        return Ok(invalid(errors));
    }
    let stored = crate::settings::load(state.pool(), state.master_key(), sub, provider).await?;
    let context = Context {
        hostname: state.hostname(),
        shared: state.shared(),
    };
    let validated =
        match config::validate(provider, &values, &stored, state.egress(), enabled, context) {
            Ok(v) => v,
            Err(errors) => return Ok(invalid(errors)),
        };
    let generated = validated.generated_secret.clone();
    super::settings::save(
        &state,
        (user.user_id, &user.email),
        sub,
        super::settings::Export {
            enabled,
            filter: filter.as_ref(),
            expiries: None,
        },
        before.as_ref(),
        &stored,
        validated,
    )
    .await?;
    let mut body = representation(&state, sub).await?;
    // A signing secret generated by this save is in this answer only.
    if let Some(secret) = generated {
        body["webhook_secret"] = json!(secret);
    }
    Ok(Json(body).into_response())
}

/// The OpenAPI 3.1 document of the whole API.
async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

/// Every provider's fields as the schema of the settings object.
fn settings_schema() -> Value {
    let mut properties = Map::new();
    properties.insert(
        "siem_enabled".into(),
        json!({"type": "boolean", "description": "Send Audit Logs to SIEM"}),
    );
    properties.insert(
        "provider".into(),
        json!({"type": "string", "enum": Provider::all().map(Provider::id).collect::<Vec<_>>()}),
    );
    properties.insert(
        "send_event_ids".into(),
        json!({
            "type": "array",
            "items": {"type": "integer", "enum": catalog().iter().map(|e| e.id.get()).collect::<Vec<_>>()},
            "minItems": 1,
            "description": "Events to send to the current destination (all by default); left out: unchanged"
        }),
    );
    for provider in Provider::all() {
        for field in provider.fields() {
            let description = format!("{}: {}. {}", provider.label(), field.label, field.hint);
            match field.kind {
                FieldKind::Internal if field.sealed_as.is_none() => {}
                FieldKind::Internal | FieldKind::Secret | FieldKind::SecretLines => {
                    properties.insert(
                        field.name.into(),
                        json!({"type": "string", "writeOnly": true, "description": description}),
                    );
                    properties.insert(
                        format!("{}_set", field.name),
                        json!({"type": "boolean", "readOnly": true}),
                    );
                    properties.insert(
                        format!("{}_last4", field.name),
                        json!({"type": "string", "readOnly": true}),
                    );
                }
                FieldKind::Check => {
                    properties.insert(
                        field.name.into(),
                        json!({"type": "boolean", "description": description}),
                    );
                }
                FieldKind::Select(choices) => {
                    let values: Vec<&str> = choices().iter().map(|c| c.value).collect();
                    properties.insert(
                        field.name.into(),
                        json!({"type": "string", "enum": values, "description": description}),
                    );
                }
                FieldKind::Text | FieldKind::Url => {
                    properties.insert(
                        field.name.into(),
                        json!({"type": "string", "description": description}),
                    );
                }
            }
        }
    }
    json!({"type": "object", "properties": properties})
}

fn openapi_document() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cloudpki",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Record audit events and manage a subscription's SIEM export."
        },
        "components": {
            "securitySchemes": {
                "ingestionToken": {"type": "http", "scheme": "bearer", "description": "A subscription's ingestion token (`cloudpki admin create-token`)."},
                "personalToken": {"type": "http", "scheme": "bearer", "description": "A personal API token (Account page, or `cloudpki admin create-api-token`); it acts with its user's roles."}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"},
                    "errors": {"description": "Per field: an object of messages (settings) or a list of problems (events)."}
                }},
                "Event": {"type": "object", "required": ["event_id"], "properties": {
                    "id": {"type": "string", "format": "uuid", "description": "Idempotency key within the subscription."},
                    "event_id": {"type": "integer", "description": "An Event ID of the catalog."},
                    "occurred_at": {"type": "string", "format": "date-time"},
                    "actor": {"type": "string"},
                    "details": {"type": "object", "description": "At most 64 KiB as JSON."}
                }},
                "SiemSettings": settings_schema()
            }
        },
        "paths": {
            "/api/v1/events": {"post": {
                "summary": "Record audit events",
                "security": [{"ingestionToken": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": "#/components/schemas/Event"},
                              {"type": "array", "maxItems": 1000, "items": {"$ref": "#/components/schemas/Event"}}]
                }}}},
                "responses": {
                    "202": {"description": "Committed", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "accepted": {"type": "integer"}, "duplicates": {"type": "integer"}}}}}},
                    "400": {"description": "Invalid; nothing stored", "content": {"application/json": {"schema": error}}},
                    "401": {"description": "No valid token", "content": {"application/json": {"schema": error}}},
                    "413": {"description": "Too many events or details too large", "content": {"application/json": {"schema": error}}},
                    "503": {"description": "Database unavailable; retry after Retry-After", "content": {"application/json": {"schema": error}}}
                }
            }},
            "/api/v1/subscriptions/{id}/siem": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "get": {
                    "summary": "The subscription's SIEM settings (secrets never returned)",
                    "security": [{"personalToken": []}],
                    "responses": {
                        "200": {"description": "Settings", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                        "401": {"description": "No valid token", "content": {"application/json": {"schema": error}}},
                        "404": {"description": "Not a member of this subscription", "content": {"application/json": {"schema": error}}}
                    }
                },
                "put": {
                    "summary": "Change the SIEM settings (admins); a secret left out is kept unless an address changed",
                    "security": [{"personalToken": []}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                    "responses": {
                        "200": {"description": "Saved; the settings as stored (and a generated webhook signing secret, once)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                        "400": {"description": "Not a JSON object", "content": {"application/json": {"schema": error}}},
                        "401": {"description": "No valid token", "content": {"application/json": {"schema": error}}},
                        "403": {"description": "A reader", "content": {"application/json": {"schema": error}}},
                        "404": {"description": "Not a member of this subscription", "content": {"application/json": {"schema": error}}},
                        "422": {"description": "Invalid fields; nothing saved", "content": {"application/json": {"schema": error}}}
                    }
                }
            },
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}}
            }}
        }
    })
}
