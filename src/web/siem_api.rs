//! The REST API for a subscription's SIEM settings (DESIGN.md, "Contract: REST API for the
//! settings"): `GET`/`PUT /api/v1/subscriptions/{id}/siem` with a personal API token, and
//! `GET /api/v1/openapi.json`; and the administrator's buttons of the settings page as
//! `POST /api/v1/subscriptions/{id}/siem/{pause,resume,replay,monitors,retry-parked}`.
//!
//! The body's keys are the settings page's form field names, for every provider in the
//! registry. Secrets never come back: a stored one shows as `<field>_set: true` and
//! `<field>_last4`. A `PUT` goes through the same form check, address rule, sealing, save and
//! history as the page; a secret left out is kept (unless an address changed). The
//! "expires on" dates of stored secrets are `<field>_expires_on` (`YYYY-MM-DD`); a `PUT` takes
//! them with the page's rules, and one left out keeps its date.
//!
//! The actions run the page's own functions (`web::settings`: same checks, effects, messages
//! and history rows) after the token's checks; a reader's attempt is refused (403) and
//! recorded in the history as on the page.

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::WebError;
use crate::{
    crypto,
    domain::{
        destination::{DestinationKey, DestinationName, DestinationNo},
        events::{catalog, EventFilter, ReplayWindow, REPLAY_CAP},
    },
    settings::{
        actions::{self, AdminAction, MonitorsOutcome, PauseOutcome},
        expiry,
    },
    siem::{
        provider::FieldKind,
        provider::{self, Context, FormValues},
        Provider,
    },
    state::AppState,
    store::{
        self,
        accounts::MembershipRow,
        personal_tokens::{Presented, TokenUser},
        siem::SettingsVersion,
    },
};

pub fn router() -> Router<AppState> {
    // `/siem` is the first destination; `/destinations/{destination_id}` any of them, with the
    // same actions.
    Router::new()
        .route(
            "/api/v1/subscriptions/{id}/siem",
            get(show).put(update).patch(patch),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations",
            get(list_destinations).post(add_destination),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations/{destination_id}",
            get(show)
                .put(update)
                .patch(patch)
                .delete(remove_destination),
        )
        .route("/api/v1/subscriptions/{id}/siem/pause", post(pause))
        .route("/api/v1/subscriptions/{id}/siem/resume", post(resume))
        .route("/api/v1/subscriptions/{id}/siem/replay", post(replay))
        .route("/api/v1/subscriptions/{id}/siem/monitors", post(monitors))
        .route(
            "/api/v1/subscriptions/{id}/siem/retry-parked",
            post(retry_parked),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations/{destination_id}/pause",
            post(pause),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations/{destination_id}/resume",
            post(resume),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations/{destination_id}/replay",
            post(replay),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations/{destination_id}/monitors",
            post(monitors),
        )
        .route(
            "/api/v1/subscriptions/{id}/destinations/{destination_id}/retry-parked",
            post(retry_parked),
        )
        .route("/api/v1/openapi.json", get(openapi))
}

/// The path of a request about one destination: `/siem` (the first) or
/// `/destinations/{destination_id}`.
#[derive(Deserialize)]
struct DestPath {
    id: String,
    #[serde(default)]
    destination_id: Option<String>,
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

/// What a request does with the settings: a token of scope `read` may only [`Access::Read`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// [`caller`] for one destination: also 404 for a destination number the subscription does
/// not have (never added, or removed).
async fn destination_caller(
    state: &AppState,
    headers: &HeaderMap,
    path: &DestPath,
    access: Access,
) -> Result<Result<(TokenUser, MembershipRow, DestinationKey), Response>, WebError> {
    let (user, membership) = match caller(state, headers, &path.id, access).await? {
        Ok(found) => found,
        Err(refused) => return Ok(Err(refused)),
    };
    let number = match path.destination_id.as_deref() {
        None => DestinationNo::FIRST,
        Some(raw) => match DestinationNo::parse(raw) {
            Ok(n) => n,
            Err(_) => return Ok(Err(no_destination())),
        },
    };
    let dest = DestinationKey::new(membership.subscription_id, number);
    if !number.is_first() && store::siem::settings(state.pool(), dest).await?.is_none() {
        return Ok(Err(no_destination()));
    }
    Ok(Ok((user, membership, dest)))
}

fn no_destination() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "This subscription has no such destination (GET /destinations lists them).",
    )
}

/// The token's user and their membership, or the answer that refuses the request: 401 without
/// a live token (an expired one says when it expired), 404 for a subscription the user is not
/// a member of or the token is not for, 403 for a change with a read-only token.
async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    access: Access,
) -> Result<Result<(TokenUser, MembershipRow), Response>, WebError> {
    let token = super::bearer(headers);
    let Some(token) = token else {
        return Ok(Err(problem(
            StatusCode::UNAUTHORIZED,
            "Send a personal API token as `Authorization: Bearer <token>` (create one on your Account page or with `cloudpki admin create-api-token`).",
        )));
    };
    let user =
        match store::personal_tokens::authenticate(state.pool(), &crypto::token_digest(token))
            .await?
        {
            Presented::Live(user) => user,
            Presented::Expired(at) => {
                return Ok(Err(problem(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "The token expired on {}; create a new one on your Account page.",
                        at.format("%Y-%m-%d %H:%M UTC")
                    ),
                )))
            }
            Presented::Unknown => {
                return Ok(Err(problem(
                    StatusCode::UNAUTHORIZED,
                    "The token is unknown or revoked.",
                )))
            }
        };
    let not_found = || problem(StatusCode::NOT_FOUND, "No such subscription.");
    let Ok(subscription_id) = Uuid::parse_str(id) else {
        return Ok(Err(not_found()));
    };
    if user
        .subscription_id
        .is_some_and(|only| only != subscription_id)
    {
        return Ok(Err(not_found()));
    }
    let Some(membership) =
        store::accounts::membership(state.pool(), user.user_id, subscription_id).await?
    else {
        return Ok(Err(not_found()));
    };
    if access == Access::Write && !user.writes {
        return Ok(Err(problem(
            StatusCode::FORBIDDEN,
            "This token is read-only (scope read): it can GET the settings but not change them. Create a token with the write scope on your Account page.",
        )));
    }
    Ok(Ok((user, membership)))
}

/// The settings as the API shows them, and the version they are.
struct Shown {
    /// Form field names; secrets as `_set` and `_last4`.
    body: Value,
    version: SettingsVersion,
    /// What it was shown from (a save starts from the same reads).
    settings: Option<store::siem::SettingsRow>,
    stored: Vec<(Provider, provider::StoredProvider)>,
}

/// The settings as the API shows them: form field names, secrets as `_set` and `_last4`.
async fn representation(state: &AppState, dest: DestinationKey) -> Result<Shown, WebError> {
    let settings = store::siem::settings(state.pool(), dest).await?;
    let version = SettingsVersion::of(settings.as_ref());
    let stored = crate::settings::load_all(state.pool(), state.master_key(), dest).await?;
    let mut body = Map::new();
    body.insert("destination_id".into(), json!(dest.number));
    body.insert(
        "destination_name".into(),
        json!(settings.as_ref().and_then(|s| s.name.clone())),
    );
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
    let filter = store::delivery::filter_of(state.pool(), dest, current)
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
                    if let Some(date) = stored.expiries.get(field.name) {
                        body.insert(expiry::expiry_field(field.name), json!(date.to_string()));
                    }
                }
                continue;
            }
            if let Some(value) = stored.fields.get(field.name) {
                let value = match field.kind {
                    FieldKind::Check => json!(value == "on"),
                    // A query may carry a credential (URLs saved before queries were sealed
                    // hold it in the clear): its values are never shown.
                    FieldKind::Url => json!(url::Url::parse(value)
                        .ok()
                        .filter(|u| u.query().is_some())
                        .map_or_else(|| value.clone(), |u| provider::hide_query_values(&u))),
                    _ => json!(value),
                };
                body.insert(field.name.into(), value);
            }
        }
    }
    Ok(Shown {
        body: Value::Object(body),
        version,
        settings,
        stored,
    })
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
) -> Result<Response, WebError> {
    let (_, _, dest) = match destination_caller(&state, &headers, &path, Access::Read).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let shown = representation(&state, dest).await?;
    Ok(with_etag(Json(shown.body).into_response(), shown.version))
}

/// An answer carrying the settings' version as its strong `ETag`.
fn with_etag(mut response: Response, version: SettingsVersion) -> Response {
    if let Ok(value) = header::HeaderValue::from_str(&format!("\"{}\"", version.token())) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// `If-Match`: absent or `*` asks for no check; a tag we gave out names the version the writer
/// read; anything else is refused (400), never passed silently.
fn if_match(headers: &HeaderMap) -> Result<Option<SettingsVersion>, BadIfMatch> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(SettingsVersion::parse)
        .map(Some)
        .ok_or(BadIfMatch)
}

/// An `If-Match` that is neither `*` nor a tag we gave out.
struct BadIfMatch;

impl BadIfMatch {
    fn answer(self) -> Response {
        problem(
            StatusCode::BAD_REQUEST,
            "If-Match must be the ETag of a GET (a quoted version such as \"1765000000000000\") or *.",
        )
    }
}

/// 412: someone saved since the writer's `If-Match` version.
fn stale(by: &str, at: chrono::DateTime<chrono::Utc>) -> Response {
    problem(
        StatusCode::PRECONDITION_FAILED,
        &format!(
            "Nothing was saved: the settings were changed by {by} at {} since the version in If-Match. GET them again, apply your change, and send it with the new ETag.",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
    )
}

/// A writing caller (a `write` token of a member) and the version its `If-Match` names.
/// A change of one destination's settings: who, the destination and the `If-Match` version.
struct Writer {
    user: TokenUser,
    membership: MembershipRow,
    dest: DestinationKey,
    expected: Option<SettingsVersion>,
}

impl Writer {
    /// Saves `object` into the destination, as the writer asked.
    async fn save(
        self,
        state: &AppState,
        object: Map<String, Value>,
        shown: Option<Shown>,
    ) -> Result<Response, WebError> {
        let target = Some(self.dest.number);
        apply(
            state,
            self.user,
            self.membership,
            target,
            object,
            self.expected,
            shown,
        )
        .await
    }
}

async fn writer(
    state: &AppState,
    headers: &HeaderMap,
    path: &DestPath,
) -> Result<Result<Writer, Response>, WebError> {
    let (user, membership, dest) =
        match destination_caller(state, headers, path, Access::Write).await? {
            Ok(found) => found,
            Err(refused) => return Ok(Err(refused)),
        };
    Ok(match if_match(headers) {
        Ok(expected) => Ok(Writer {
            user,
            membership,
            dest,
            expected,
        }),
        Err(bad) => Err(bad.answer()),
    })
}

async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let w = match writer(&state, &headers, &path).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&body) else {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            "Send the settings as a JSON object whose keys are the settings form's field names (GET shows them).",
        ));
    };
    w.save(&state, object, None).await
}

/// `PATCH`: a JSON merge patch (RFC 7396) over what a GET shows, then saved as a `PUT` of the
/// result: a member set to `null` is removed, an object member is merged, anything else
/// replaces.
async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let w = match writer(&state, &headers, &path).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media != "application/merge-patch+json" && media != "application/json" {
        return Ok(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Send a JSON merge patch (RFC 7396) with Content-Type: application/merge-patch+json.",
        ));
    }
    let Ok(patch @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            "Send a JSON object: the keys to change, with null for a key to remove (RFC 7396).",
        ));
    };
    let shown = representation(&state, w.dest).await?;
    let mut merged = shown.body.clone();
    merge_patch(&mut merged, patch);
    let Value::Object(object) = merged else {
        return Err(WebError::Internal(anyhow::anyhow!(
            "the settings are not an object"
        )));
    };
    w.save(&state, object, Some(shown)).await
}

/// RFC 7396, section 2.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(&key);
            } else {
                merge_patch(target.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

/// A key the GET shows that a writer cannot set: a stored secret's `_set`/`_last4`, or a value
/// of a provider other than the one being saved.
enum ReadOnly {
    Secret {
        provider: Provider,
        field: &'static provider::Field,
    },
    OtherProvider(Provider),
}

fn read_only(chosen: Provider, key: &str) -> Option<ReadOnly> {
    for p in Provider::all() {
        for field in p.fields() {
            if field.sealed_as.is_some() && !matches!(field.kind, FieldKind::Url) {
                let is_secret_state = key
                    .strip_prefix(field.name)
                    .is_some_and(|rest| rest == "_set" || rest == "_last4");
                if is_secret_state {
                    return Some(ReadOnly::Secret { provider: p, field });
                }
            }
            if p != chosen
                && !matches!(field.kind, FieldKind::Internal)
                && (key == field.name || key == expiry::expiry_field(field.name))
            {
                return Some(ReadOnly::OtherProvider(p));
            }
        }
    }
    None
}

/// Takes the read-only keys out of `object`: one equal to what a GET shows now is ignored (a
/// GET's body PUT back as it is), and so is a secret's state when a new value of that secret
/// is sent; any other value contradicts what is stored and is an error for its key.
fn take_read_only(
    object: &mut Map<String, Value>,
    chosen: Provider,
    shown: &Value,
    errors: &mut provider::FieldErrors,
) {
    let keys: Vec<String> = object.keys().cloned().collect();
    for key in keys {
        let Some(kind) = read_only(chosen, &key) else {
            continue;
        };
        let Some(value) = object.remove(&key) else {
            continue;
        };
        let absent = value.is_null() || value == json!("");
        if shown.get(&key) == Some(&value) || (absent && shown.get(&key).is_none()) {
            continue;
        }
        match kind {
            ReadOnly::Secret { provider, field } => {
                let replaced = provider == chosen
                    && object
                        .get(field.name)
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.trim().is_empty());
                if replaced {
                    continue;
                }
                let label = field.label.to_lowercase();
                let message = match shown.get(format!("{}_last4", field.name)).and_then(Value::as_str) {
                    Some(hint) => format!(
                        "The stored {} {label} ends in {hint}, which `{key}` contradicts: leave `{key}` out (it is read-only), or send `{}` to replace the {label}.",
                        provider.label(),
                        field.name
                    ),
                    None => format!(
                        "No {} {label} is stored: leave `{key}` out (it is read-only) and send `{}` with the value.",
                        provider.label(),
                        field.name
                    ),
                };
                errors.add(&key, message);
            }
            ReadOnly::OtherProvider(other) => errors.add(
                &key,
                format!(
                    "This is a {} setting and the settings being saved are {}'s: send \"provider\": \"{}\" to change it, or leave it out.",
                    other.label(),
                    chosen.label(),
                    other.id()
                ),
            ),
        }
    }
}

/// A `PUT` (or a merged `PATCH`): the page's form check, address rule, sealing, save and
/// history, for an administrator.
/// Saves a settings object into destination `target` (`None`: a new destination).
async fn apply(
    state: &AppState,
    user: TokenUser,
    membership: MembershipRow,
    target: Option<DestinationNo>,
    object: Map<String, Value>,
    expected: Option<SettingsVersion>,
    shown: Option<Shown>,
) -> Result<Response, WebError> {
    let sub = membership.subscription_id;
    // A new destination is read as the empty one it will be (its number is not stored yet).
    let dest = match target {
        Some(number) => DestinationKey::new(sub, number),
        None => DestinationKey::new(sub, store::siem::next_destination(state.pool(), sub).await?),
    };
    if !membership.role().is_admin() {
        store::siem::record_history(
            state.pool(),
            DestinationKey::new(sub, target.unwrap_or(DestinationNo::FIRST)),
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
    // What a GET shows now (a PATCH read it already to merge onto), and what it was read from.
    let shown = match shown {
        Some(shown) => shown,
        None => representation(state, dest).await?,
    };
    let before = shown.settings.as_ref();
    if let (Some(expected), Some(now)) = (expected, before) {
        if expected != SettingsVersion::of(Some(now)) {
            return Ok(stale(&now.updated_by_email, now.updated_at));
        }
    }
    let mut values = FormValues::new();
    let mut errors = provider::FieldErrors::default();
    let mut object = object;
    // The provider being saved decides which keys are read-only.
    let chosen = match object.get("provider") {
        Some(Value::String(raw)) => Provider::parse(raw).ok(),
        _ => before.and_then(|s| Provider::parse(&s.provider).ok()),
    }
    .unwrap_or_else(Provider::first);
    take_read_only(&mut object, chosen, &shown.body, &mut errors);
    // The destination's number is read-only: the path names it.
    match object.remove("destination_id") {
        None | Some(Value::Null) => {}
        Some(id) if target.is_some() && shown.body.get("destination_id") == Some(&id) => {}
        Some(_) => errors.add(
            "destination_id",
            "The destination's number is read-only and given by the path; leave it out.",
        ),
    }
    let name = match object.remove("destination_name") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(text)) => match DestinationName::parse(&text) {
            Ok(name) => Some(name),
            Err(e) => {
                errors.add("destination_name", e);
                None
            }
        },
        Some(_) => {
            errors.add(
                "destination_name",
                "Give the destination's name as a string, or null.",
            );
            None
        }
    };
    // "Expires on" dates: a date, or "" / null to clear it (left out: unchanged).
    let mut dates = FormValues::new();
    let sent_dates: Vec<String> = object
        .keys()
        .filter(|name| name.ends_with("_expires_on"))
        .cloned()
        .collect();
    for name in sent_dates {
        match object.remove(&name) {
            Some(Value::String(text)) => {
                dates.insert(name, text);
            }
            Some(Value::Null) => {
                dates.insert(name, String::new());
            }
            _ => errors.add(
                &name,
                "Give a date such as 2027-06-30, or \"\" or null to remove the date.",
            ),
        }
    }
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
    // On a provider switch the old destination's backlog goes along unless this is false.
    let carry_backlog = !matches!(object.get("carry_backlog"), Some(Value::Bool(false)));
    values.remove("carry_backlog");
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
    let dated: Vec<String> = expiry::dated_secret_fields(provider)
        .map(|field| expiry::expiry_field(field.name))
        .collect();
    for name in dates.keys().filter(|name| !dated.contains(name)) {
        let message = if dated.is_empty() {
            format!("{} has no secret with an expiry date.", provider.label())
        } else {
            format!(
                "Not an expiry date of a {} secret; these are: {}.",
                provider.label(),
                dated.join(", ")
            )
        };
        errors.add(name, message);
    }
    let expiries = expiry::parse_expiries(
        provider,
        &dates,
        expiry::AbsentExpiry::Unchanged,
        chrono::Utc::now().date_naive(),
        &mut errors,
    );
    let invalid = |errors: provider::FieldErrors| {
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
    let stored = (shown.stored.iter())
        .find(|(p, _)| *p == provider)
        .map(|(_, stored)| stored.clone())
        .unwrap_or_default();
    let context = Context {
        hostname: state.hostname(),
        shared: state.shared(),
    };
    let validated =
        match provider::validate(provider, &values, &stored, state.egress(), enabled, context) {
            Ok(v) => v,
            Err(errors) => return Ok(invalid(errors)),
        };
    let generated = validated.generated_secret.clone();
    let saved = crate::settings::save::save(
        state.settings(),
        (user.user_id, &user.email),
        crate::settings::save::Target {
            subscription_id: sub,
            // An added destination under the number it was read and checked as.
            slot: match target {
                Some(number) => store::siem::Slot::Existing(number),
                None => store::siem::Slot::Added(dest.number),
            },
            name: name.as_ref().map(Option::as_ref),
        },
        crate::settings::save::Export {
            enabled,
            filter: filter.as_ref(),
            expiries: (!dates.is_empty()).then_some(expiries),
            carry_backlog,
            expected,
        },
        before,
        &stored,
        validated,
    )
    .await;
    let saved = match saved {
        Ok(saved) => saved,
        Err(crate::settings::Error::Stale { by, at }) => return Ok(stale(&by, at)),
        Err(crate::settings::Error::Refused(why)) => {
            return Ok(problem(StatusCode::CONFLICT, &why))
        }
        Err(crate::settings::Error::NoDestination(_)) => return Ok(no_destination()),
        Err(other) => return Err(other.into()),
    };
    let Shown {
        mut body, version, ..
    } = representation(state, saved).await?;
    // A signing secret generated by this save is in this answer only.
    if let (Some(secret), Some(g)) = (generated, provider.generated()) {
        body[g.field] = json!(secret);
    }
    let mut response = with_etag(Json(body).into_response(), version);
    if target.is_none() {
        *response.status_mut() = StatusCode::CREATED;
        if let Ok(location) = header::HeaderValue::from_str(&format!(
            "/api/v1/subscriptions/{sub}/destinations/{}",
            saved.number
        )) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

/// The caller, when an administrator of the subscription: the user and the subscription id.
/// A reader's attempt is refused (403) and recorded in the history, as on the page.
async fn admin_caller(
    state: &AppState,
    headers: &HeaderMap,
    path: &DestPath,
    action: AdminAction,
) -> Result<Result<(TokenUser, DestinationKey), Response>, WebError> {
    let (user, membership, dest) =
        match destination_caller(state, headers, path, Access::Write).await? {
            Ok(found) => found,
            Err(refused) => return Ok(Err(refused)),
        };
    match actions::admin_or_denied(
        state.settings(),
        (user.user_id, &user.email),
        &membership,
        dest.number,
        action,
    )
    .await
    {
        Ok(()) => Ok(Ok((user, dest))),
        Err(crate::settings::Error::Forbidden(message)) => {
            Ok(Err(problem(StatusCode::FORBIDDEN, &message)))
        }
        Err(other) => Err(other.into()),
    }
}

/// `POST …/siem/pause`: the page's **Pause export**.
async fn pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
) -> Result<Response, WebError> {
    pause_or_resume(&state, &headers, &path, true).await
}

/// `POST …/siem/resume`: the page's **Resume export**.
async fn resume(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
) -> Result<Response, WebError> {
    pause_or_resume(&state, &headers, &path, false).await
}

/// 200 `{"paused", "changed"}` (`changed: false` when it already was), 409 when export is off.
async fn pause_or_resume(
    state: &AppState,
    headers: &HeaderMap,
    path: &DestPath,
    pausing: bool,
) -> Result<Response, WebError> {
    let action = if pausing {
        AdminAction::PauseExport
    } else {
        AdminAction::ResumeExport
    };
    let (user, sub) = match admin_caller(state, headers, path, action).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    match actions::pause_or_resume_export(
        state.settings(),
        (user.user_id, &user.email),
        sub,
        pausing,
    )
    .await?
    {
        PauseOutcome::ExportOff => Ok(problem(
            StatusCode::CONFLICT,
            actions::EXPORT_OFF_NOTHING_TO_PAUSE,
        )),
        PauseOutcome::Done { changed } => {
            Ok(Json(json!({ "paused": pausing, "changed": changed })).into_response())
        }
    }
}

/// The body of `POST …/siem/replay`: the page's fields, as the page takes them (UTC).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    replay_from: String,
    #[serde(default)]
    replay_to: String,
}

/// `POST …/siem/replay`: the page's **Replay**. 202 `{"events", "from_seq", "to_seq"}` once
/// started; 422 with the page's sentence (and `errors` at the field for a bad window).
async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let (user, sub) = match admin_caller(&state, &headers, &path, AdminAction::Replay).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let request = match serde_json::from_slice::<ReplayRequest>(&body) {
        Ok(request) => request,
        Err(e) => {
            return Ok(problem(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Send a JSON object such as {{\"replay_from\": \"2026-12-01T09:30\", \"replay_to\": \"2026-12-01T10:00\"}} (UTC): {e}."
                ),
            ))
        }
    };
    let window = match ReplayWindow::parse(&request.replay_from, &request.replay_to) {
        Ok(window) => window,
        Err((field, message)) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!("Nothing was replayed. {message}"),
                    "errors": { field: message },
                })),
            )
                .into_response())
        }
    };
    let plan =
        actions::replay_events(state.settings(), (user.user_id, &user.email), sub, &window).await?;
    match (plan, actions::replay_refusal(&plan)) {
        (store::delivery::ReplayPlan::Started { from, to, events }, _) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "events": events, "from_seq": from, "to_seq": to })),
        )
            .into_response()),
        (_, message) => Ok(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Nothing was replayed. {}", message.unwrap_or_default()),
        )),
    }
}

/// `POST …/siem/monitors`: the page's **Create monitors** (Datadog). 200 with the monitors
/// in place; 422 with the page's explanation when none could be created.
async fn monitors(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
) -> Result<Response, WebError> {
    let (user, sub) =
        match admin_caller(&state, &headers, &path, AdminAction::CreateMonitors).await? {
            Ok(found) => found,
            Err(refused) => return Ok(refused),
        };
    match actions::ensure_monitors(state.settings(), (user.user_id, &user.email), sub).await? {
        MonitorsOutcome::InPlace(links) => {
            let created = links.iter().filter(|l| l.created).count();
            let monitors: Vec<Value> = links
                .iter()
                .map(|l| {
                    json!({
                        "event_id": l.event_id,
                        "summary": l.summary,
                        "id": l.id,
                        "url": l.url,
                        "created": l.created,
                    })
                })
                .collect();
            Ok(Json(json!({ "monitors": monitors, "created": created })).into_response())
        }
        MonitorsOutcome::Refused(message) => {
            Ok(problem(StatusCode::UNPROCESSABLE_ENTITY, &message))
        }
    }
}

/// `POST …/siem/retry-parked`: the page's **Retry parked events**. 200 `{"retried"}`.
async fn retry_parked(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
) -> Result<Response, WebError> {
    let (user, sub) = match admin_caller(&state, &headers, &path, AdminAction::RetryParked).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let retried =
        actions::retry_parked_events(state.settings(), (user.user_id, &user.email), sub).await?;
    Ok(Json(json!({ "retried": retried })).into_response())
}

/// The OpenAPI 3.1 document of the whole API.
/// `GET /destinations`: every destination of the subscription, by number, with its state.
async fn list_destinations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let (_, membership) = match caller(&state, &headers, &id, Access::Read).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let sub = membership.subscription_id;
    let listed: Vec<Value> = store::siem::destinations(state.pool(), sub)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "destination_id": d.number(),
                "destination_name": d.name,
                "provider": d.provider,
                "siem_enabled": d.enabled,
                "state": d.state(),
                "events_waiting": d.owed,
                "updated_at": d.updated_at,
                "url": format!("/api/v1/subscriptions/{sub}/destinations/{}", d.number()),
            })
        })
        .collect();
    Ok(Json(json!({
        "destinations": listed,
        "max_destinations": crate::domain::destination::MAX_DESTINATIONS,
    }))
    .into_response())
}

/// `POST /destinations`: adds a destination with the settings in the body (as a `PUT`);
/// 201 with its `Location`, 409 when the subscription has as many as it may.
async fn add_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let (user, membership) = match caller(&state, &headers, &id, Access::Write).await? {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(&body) else {
        return Ok(problem(
            StatusCode::BAD_REQUEST,
            "Send the new destination's settings as a JSON object, as for a PUT (GET /siem shows the keys).",
        ));
    };
    apply(&state, user, membership, None, object, None, None).await
}

/// `DELETE /destinations/{destination_id}`: removes a destination other than the first; what
/// it still owed is counted as not sent.
async fn remove_destination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(path): Path<DestPath>,
) -> Result<Response, WebError> {
    let (user, dest) =
        match admin_caller(&state, &headers, &path, AdminAction::RemoveDestination).await? {
            Ok(found) => found,
            Err(refused) => return Ok(refused),
        };
    match crate::settings::destinations::remove(state.settings(), (user.user_id, &user.email), dest)
        .await
    {
        Ok(removed) => Ok(Json(json!({
            "destination_id": dest.number,
            "removed": true,
            "events_not_sent": removed.unsent,
        }))
        .into_response()),
        Err(crate::settings::Error::Refused(why)) => Ok(problem(StatusCode::CONFLICT, &why)),
        Err(crate::settings::Error::NoDestination(_)) => Ok(no_destination()),
        Err(other) => Err(other.into()),
    }
}

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
        "destination_id".into(),
        json!({"type": "integer", "readOnly": true, "description": "The destination's number (the path names it)"}),
    );
    properties.insert(
        "destination_name".into(),
        json!({"type": ["string", "null"], "maxLength": 60, "description": "The destination's name, shown on the page and in emails (optional; null clears it; left out: unchanged)"}),
    );
    properties.insert(
        "carry_backlog".into(),
        json!({"type": "boolean", "default": true, "writeOnly": true,
               "description": "On a provider switch, send the events not yet delivered to the previous provider to the new one (default true); false leaves them counted as not sent."}),
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
                    if matches!(field.kind, FieldKind::Secret) {
                        properties.insert(
                            expiry::expiry_field(field.name),
                            json!({
                                "type": ["string", "null"],
                                "format": "date",
                                "description": format!("{}: when the stored {} expires (YYYY-MM-DD, after today); \"\" or null removes the date; left out of a PUT: unchanged. A new secret clears it.", provider.label(), field.label)
                            }),
                        );
                    }
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
                FieldKind::Text | FieldKind::Url | FieldKind::Lines => {
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

/// A `POST` action on the settings, with its responses (401, 403 and 404 as for a `PUT`).
fn action(summary: &str, body: Option<Value>, mut responses: Map<String, Value>) -> Value {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    for (code, description) in [
        ("401", "No valid token"),
        (
            "403",
            "A reader (the attempt is recorded in the settings history)",
        ),
        ("404", "Not a member of this subscription"),
    ] {
        let mut answer = error.clone();
        answer["description"] = json!(description);
        responses.insert(code.into(), answer);
    }
    let mut operation = json!({
        "summary": summary,
        "security": [{"personalToken": []}],
        "responses": responses,
    });
    if let Some(schema) = body {
        operation["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    json!({
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
        "post": operation,
    })
}

/// A response with a JSON body of `schema`.
fn answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn openapi_document() -> Value {
    let mut document;
    let error = json!({"$ref": "#/components/schemas/Error"});
    let etag = json!({"description": "The settings' version: send it back as If-Match", "schema": {"type": "string"}});
    let if_match = json!({"name": "If-Match", "in": "header", "required": false,
        "description": "The ETag of the GET the change is based on (or *): a save since then answers 412 and nothing is saved",
        "schema": {"type": "string"}});
    let write_responses = json!({
        "200": {"description": "Saved; the settings as stored (and a generated webhook signing secret, once)", "headers": {"ETag": etag}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
        "400": {"description": "Not a JSON object, or a malformed If-Match", "content": {"application/json": {"schema": error}}},
        "401": {"description": "No valid token (an expired one says when it expired)", "content": {"application/json": {"schema": error}}},
        "403": {"description": "A reader, or a token of scope read", "content": {"application/json": {"schema": error}}},
        "404": {"description": "Not a member of this subscription, or a token limited to another one", "content": {"application/json": {"schema": error}}},
        "412": {"description": "If-Match is stale: someone saved since (who and when are named); nothing saved", "content": {"application/json": {"schema": error}}},
        "415": {"description": "PATCH without Content-Type application/merge-patch+json", "content": {"application/json": {"schema": error}}},
        "422": {"description": "Invalid fields (a past or malformed `_expires_on` date, a read-only key that contradicts what is stored); nothing saved", "content": {"application/json": {"schema": error}}}
    });
    let responses = |list: Vec<(&str, Value)>| -> Map<String, Value> {
        list.into_iter().map(|(c, v)| (c.to_owned(), v)).collect()
    };
    let pause_state = json!({"type": "object", "required": ["paused", "changed"], "properties": {
        "paused": {"type": "boolean", "description": "Whether export is paused now"},
        "changed": {"type": "boolean", "description": "false when it already was (nothing recorded)"}
    }});
    let export_off = answer(
        "Export is off: there is nothing to pause or resume",
        error.clone(),
    );
    let pause = action(
        "Pause export (admins): events are recorded and kept, nothing is sent; the page's Pause export",
        None,
        responses(vec![
            ("200", answer("Paused", pause_state.clone())),
            ("409", export_off.clone()),
        ]),
    );
    let resume = action(
        "Resume export (admins): what was kept meanwhile is sent; the page's Resume export",
        None,
        responses(vec![
            ("200", answer("Running", pause_state)),
            ("409", export_off),
        ]),
    );
    let replay = action(
        "Replay a window (admins): resend the events recorded in it that the current destination was already sent, with their Sequence, Hash and EventUuid; the page's Replay",
        Some(json!({"type": "object", "required": ["replay_from", "replay_to"], "additionalProperties": false, "properties": {
            "replay_from": {"type": "string", "description": "Start, UTC, included: 2026-12-01T09:30 (seconds optional)"},
            "replay_to": {"type": "string", "description": "End, UTC, excluded; after the start"}
        }})),
        responses(vec![
            ("202", answer("Replay started; progress is on the settings page", json!({"type": "object", "properties": {
                "events": {"type": "integer"},
                "from_seq": {"type": "integer", "description": "First Sequence resent"},
                "to_seq": {"type": "integer", "description": "Last Sequence resent"}
            }}))),
            ("400", answer("Not a JSON object with replay_from and replay_to", error.clone())),
            ("422", answer(&format!("Nothing replayed: a bad window (`errors` names the field), no event of the window sent yet, more than {REPLAY_CAP} events, or export off"), error.clone())),
        ]),
    );
    let monitors = action(
        "Create monitors (admins, Datadog): one log alert monitor per High catalog event, none twice; the page's Create monitors",
        None,
        responses(vec![
            ("200", answer("The monitors in place", json!({"type": "object", "properties": {
                "monitors": {"type": "array", "items": {"type": "object", "properties": {
                    "event_id": {"type": "integer"},
                    "summary": {"type": "string"},
                    "id": {"type": "integer", "description": "Datadog's monitor id"},
                    "url": {"type": ["string", "null"], "description": "The monitor in Datadog's web app, when the site is known"},
                    "created": {"type": "boolean", "description": "Made by this call (false: found)"}
                }}},
                "created": {"type": "integer"}
            }}))),
            ("422", answer("No monitor was created: what to do (site, API key, application key with monitors_write, or Datadog's refusal)", error.clone())),
        ]),
    );
    let retry = action(
        "Retry parked events (admins): put the current destination's parked events back in the queue; the page's Retry parked events",
        None,
        responses(vec![(
            "200",
            answer("Queued again", json!({"type": "object", "properties": {"retried": {"type": "integer"}}})),
        )]),
    );
    document = json!({
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
                    "summary": "The subscription's SIEM settings (secrets never returned); the ETag names the version, for If-Match",
                    "security": [{"personalToken": []}],
                    "responses": {
                        "200": {"description": "Settings", "headers": {"ETag": etag.clone()}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                        "401": {"description": "No valid token", "content": {"application/json": {"schema": error}}},
                        "404": {"description": "Not a member of this subscription", "content": {"application/json": {"schema": error}}}
                    }
                },
                "put": {
                    "summary": "Change the SIEM settings (admins, write tokens); a secret left out is kept unless an address changed. A GET's body may be sent back as it is: read-only keys (`_set`, `_last4`, another provider's values) are accepted when they match what is stored",
                    "security": [{"personalToken": []}],
                    "parameters": [if_match.clone()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                    "responses": write_responses.clone()
                },
                "patch": {
                    "summary": "Change some of the SIEM settings with a JSON merge patch (RFC 7396) over what GET shows: null removes a key; then saved as a PUT of the result",
                    "security": [{"personalToken": []}],
                    "parameters": [if_match],
                    "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                    "responses": write_responses
                }
            },
            "/api/v1/subscriptions/{id}/siem/pause": pause,
            "/api/v1/subscriptions/{id}/siem/resume": resume,
            "/api/v1/subscriptions/{id}/siem/replay": replay,
            "/api/v1/subscriptions/{id}/siem/monitors": monitors,
            "/api/v1/subscriptions/{id}/siem/retry-parked": retry,
            "/api/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1"}}
            }}
        }
    });
    add_destination_paths(&mut document);
    document
}

/// The destinations' paths: the collection, and every `/siem` path again under
/// `/destinations/{destination_id}` (with `DELETE` for the destination itself).
fn add_destination_paths(document: &mut Value) {
    let error = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let described = |text: &str| {
        let mut answer = error.clone();
        answer["description"] = json!(text);
        answer
    };
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let destination_id = json!({"name": "destination_id", "in": "path", "required": true,
        "schema": {"type": "integer", "minimum": 1},
        "description": "The destination's number within the subscription: 1 is the first (also served as /siem); numbers are never reused"});
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    let siem: Vec<(String, Value)> = paths
        .iter()
        .filter(|(path, _)| path.starts_with("/api/v1/subscriptions/{id}/siem"))
        .map(|(path, item)| (path.clone(), item.clone()))
        .collect();
    for (path, mut item) in siem {
        let path = path.replace("/siem", "/destinations/{destination_id}");
        if let Some(parameters) = item["parameters"].as_array_mut() {
            parameters.push(destination_id.clone());
        }
        if path.ends_with("{destination_id}") {
            item["delete"] = json!({
                "summary": "Remove a destination other than the first (admins, write tokens): its settings and secrets are deleted, and the events it had not been sent yet are counted as not sent; the history says who removed it",
                "security": [{"personalToken": []}],
                "responses": {
                    "200": {"description": "Removed", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "destination_id": {"type": "integer"},
                        "removed": {"type": "boolean"},
                        "events_not_sent": {"type": "integer", "description": "Events it still owed, now never sent to it"}
                    }}}}},
                    "401": described("No valid token"),
                    "403": described("A reader, or a token of scope read"),
                    "404": described("No such subscription or destination"),
                    "409": described("The first destination: switch export off instead")
                }
            });
        }
        paths.insert(path, item);
    }
    paths.insert(
        "/api/v1/subscriptions/{id}/destinations".to_owned(),
        json!({
            "parameters": [id],
            "get": {
                "summary": "Every destination of the subscription, by number, with its state (on, off, paused, failing) and the events it has not been sent yet",
                "security": [{"personalToken": []}],
                "responses": {
                    "200": {"description": "The destinations", "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "max_destinations": {"type": "integer"},
                        "destinations": {"type": "array", "items": {"type": "object", "properties": {
                            "destination_id": {"type": "integer"},
                            "destination_name": {"type": ["string", "null"]},
                            "provider": {"type": "string"},
                            "siem_enabled": {"type": "boolean"},
                            "state": {"type": "string", "enum": ["on", "off", "paused", "failing"]},
                            "events_waiting": {"type": "integer"},
                            "updated_at": {"type": "string", "format": "date-time"},
                            "url": {"type": "string"}
                        }}}
                    }}}}},
                    "401": described("No valid token"),
                    "404": described("Not a member of this subscription")
                }
            },
            "post": {
                "summary": "Add a destination (admins, write tokens) with settings as for a PUT, and an optional destination_name; it receives the events recorded from now on",
                "security": [{"personalToken": []}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                "responses": {
                    "201": {"description": "Added; Location names it", "headers": {"Location": {"schema": {"type": "string"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SiemSettings"}}}},
                    "400": described("Not a JSON object"),
                    "401": described("No valid token"),
                    "403": described("A reader, or a token of scope read"),
                    "404": described("Not a member of this subscription"),
                    "409": described("The subscription already has as many destinations as it may (5)"),
                    "422": described("Invalid fields; nothing saved")
                }
            }
        }),
    );
}
