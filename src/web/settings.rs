//! A subscription's Settings page: Advanced Settings → Send Audit Logs to SIEM, SIEM Provider,
//! the provider's fields, Test Connection and Save changes (DESIGN.md, "Contract: pages").
//!
//! One form, two buttons (`action=test` / `action=save`), so the page works without JavaScript.
//! Test Connection sends a real test event with the values in the form and never saves; Save
//! changes is for admins, stores the settings (secrets sealed), writes a history entry and
//! redirects (post/redirect/get). Secrets are write-only: never rendered back; a blank secret
//! field keeps the stored one. Provider rules live in `siem::config`; this module only
//! collects the form and renders the page.

use std::collections::BTreeMap;

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};
use serde::Deserialize;

use super::{
    health_panel::{health_view, when, HealthView, PANEL_ROWS},
    session::CurrentUser,
    subscriptions::membership_or_404,
    Layout, WebError,
};
use crate::{
    domain::events::{catalog, Criticality, EventFilter, ReplayWindow},
    settings::{
        actions::{
            admin_or_denied, ensure_monitors, pause_or_resume_export, replay_events,
            replay_refusal, retry_parked_events, AdminAction, MonitorsOutcome, PauseOutcome,
            EXPORT_OFF_NOTHING_TO_PAUSE,
        },
        expiry::{expiry_field, parse_expiries, AbsentExpiry},
        save::{save, Export},
        tested::{hold_tested, reuse_tested},
    },
    siem::{
        config::{self, Context, FieldErrors, FormValues, StoredProvider, StoredSecret},
        registry::{Choice, FieldKind},
        Provider,
    },
    state::AppState,
    store::{self, accounts::MembershipRow},
};

/// How many history entries the page lists.
const HISTORY_SHOWN: i64 = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/subscriptions/{id}/settings", get(show).post(submit))
        .route(
            "/subscriptions/{id}/settings/retry-parked",
            axum::routing::post(retry_parked),
        )
        .route(
            "/subscriptions/{id}/settings/pause",
            axum::routing::post(pause),
        )
        .route(
            "/subscriptions/{id}/settings/resume",
            axum::routing::post(resume),
        )
        .route(
            "/subscriptions/{id}/settings/replay",
            axum::routing::post(replay),
        )
        .route(
            "/subscriptions/{id}/settings/monitors",
            axum::routing::post(create_monitors),
        )
}

/// One checkbox of the event filter.
struct FilterBox {
    id: String,
    summary: &'static str,
    checked: bool,
}

/// The event filter's checkboxes, grouped by criticality (High first).
fn filter_groups(filter: &EventFilter) -> Vec<(&'static str, Vec<FilterBox>)> {
    [Criticality::High, Criticality::Medium, Criticality::Low]
        .into_iter()
        .map(|crit| {
            let boxes = catalog()
                .iter()
                .filter(|e| e.criticality == crit)
                .map(|e| FilterBox {
                    id: e.id.to_string(),
                    summary: e.summary,
                    checked: filter.sends(e.id),
                })
                .collect();
            (crit.as_str(), boxes)
        })
        .collect()
}

/// The form field that says the event filter was on the submitted form (an unticked
/// checkbox sends nothing, so "none ticked" needs it).
const FILTER_SHOWN: &str = "send_event_ids_shown";

/// The message in the `role="status"` element.
struct Status {
    /// `ok`, `error` or `info`: the style.
    kind: &'static str,
    message: String,
    query: Option<String>,
    link: Option<String>,
    /// A newly generated signing secret, shown once.
    secret: Option<String>,
    /// Monitors made or found by Create monitors: (label, link).
    monitors: Vec<(String, Option<String>)>,
}

impl Status {
    fn plain(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            query: None,
            link: None,
            secret: None,
            monitors: Vec::new(),
        }
    }
}

struct HistoryEntry {
    who: String,
    outcome: String,
    changes: Vec<String>,
    at: String,
}

/// A provider field as the template renders it.
struct FieldView {
    name: &'static str,
    label: &'static str,
    /// `text`, `url`, `password`, `checkbox`, `select` or `textarea`.
    kind: &'static str,
    value: String,
    options: Vec<Choice>,
    hint: &'static str,
    placeholder: &'static str,
    error: Option<String>,
    /// For secrets: the last characters (or header names) of the stored value.
    stored_hint: Option<String>,
    /// For secrets: the stored value no longer opens (the master key changed).
    unreadable: bool,
    /// For sealed secrets: the "expires on" date field (`<name>_expires_on`), its value and error.
    expiry: Option<(String, String, Option<String>)>,
}

/// A provider's section.
struct ProviderView {
    id: &'static str,
    label: &'static str,
    fields: Vec<FieldView>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    membership: MembershipRow,
    is_admin: bool,
    filter_groups: Vec<(&'static str, Vec<FilterBox>)>,
    filter_error: Option<String>,
    paused: bool,
    replay_from: String,
    replay_to: String,
    /// The current provider's credential expiry dates: (sentence, due within 30 days).
    expiries: Vec<(String, bool)>,
    enabled: bool,
    provider: String,
    errors: FieldErrors,
    status: Option<Status>,
    open: bool,
    last_change: Option<(String, String)>,
    providers: Vec<ProviderView>,
    health: HealthView,
    history: Vec<HistoryEntry>,
    /// On a provider switch: (events the current destination still owes, its label).
    carry_from: Option<(i64, &'static str)>,
}

impl SettingsPage {
    /// A field's error.
    fn error(&self, name: &str) -> Option<&str> {
        self.errors.get(name)
    }

    /// What the replay window's fields hold.
    fn value(&self, name: &str) -> &str {
        match name {
            "replay_from" => &self.replay_from,
            "replay_to" => &self.replay_to,
            _ => "",
        }
    }
}

#[derive(Deserialize)]
struct ShowQuery {
    #[serde(default)]
    paused: Option<String>,
    #[serde(default)]
    resumed: Option<String>,
    #[serde(default)]
    export: Option<String>,
    #[serde(default)]
    replay: Option<i64>,
    #[serde(default)]
    saved: Option<String>,
    #[serde(default)]
    retried: Option<u64>,
}

async fn show(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Response, WebError> {
    // One statement reads the session, the membership, the settings and the panel, or the
    // page cache has them (kept until the database announces a change).
    let Some(token) = super::session::cookie(&headers, super::session::SESSION_COOKIE) else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Ok(sub) = uuid::Uuid::parse_str(&id) else {
        // The session still decides between sign-in and not found.
        return match super::session::current_user(&state, &headers).await? {
            Some(_) => Err(WebError::NotFound),
            None => Ok(Redirect::to("/login").into_response()),
        };
    };
    let digest = crate::crypto::token_digest(token);
    let cache = state.page_cache();
    let (session, membership, page) = match cache.settings_page(&digest, sub) {
        Some(kept) => {
            metrics::counter!("cloudpki_page_cache_total", "outcome" => "hit").increment(1);
            kept
        }
        None => {
            metrics::counter!("cloudpki_page_cache_total", "outcome" => "miss").increment(1);
            // The generations before the read: a change announced meanwhile is not kept.
            let ticket = cache.ticket(Some(sub));
            let Some(snapshot) = store::page::settings_page(
                state.pool(),
                &digest,
                sub,
                Provider::first().id(),
                PANEL_ROWS,
                HISTORY_SHOWN,
            )
            .await?
            else {
                return Ok(Redirect::to("/login").into_response());
            };
            let page = std::sync::Arc::new(snapshot.page);
            if let Some(ticket) = ticket {
                cache.put(
                    ticket,
                    &digest,
                    &snapshot.session,
                    snapshot.membership.as_ref(),
                    &page,
                );
            }
            let membership = snapshot.membership.ok_or(WebError::NotFound)?;
            (snapshot.session, membership, page)
        }
    };
    let user = CurrentUser {
        user_id: session.user_id,
        email: session.email,
        csrf_token: session.csrf_token,
    };
    let loaded = Loaded {
        stored: crate::settings::open_all(state.master_key(), sub, &page.fields, &page.secrets),
        settings: page.settings.clone(),
        history: page.history.clone(),
        panel: page.panel.clone(),
    };
    let status = match (query.saved, query.retried) {
        (Some(_), _) => Some(Status::plain("ok", "Settings saved.")),
        (None, Some(n)) => Some(Status::plain(
            "ok",
            format!("{n} parked event(s) are queued again and will be retried now."),
        )),
        (None, None) if query.paused.is_some() => Some(Status::plain(
            "ok",
            "Export paused. Events are recorded and kept (the retention period still applies); nothing is sent until you resume.",
        )),
        (None, None) if query.resumed.is_some() => Some(Status::plain(
            "ok",
            "Export resumed. The events kept meanwhile are being sent now.",
        )),
        (None, None) if query.replay.is_some() => Some(Status::plain(
            "ok",
            format!(
                "Replay started: {} event(s) will be resent with their Sequence, Hash and EventUuid. Progress is shown under Delivery health.",
                query.replay.unwrap_or_default()
            ),
        )),
        (None, None) if query.export.is_some() => {
            Some(Status::plain("error", EXPORT_OFF_NOTHING_TO_PAUSE))
        }
        (None, None) => None,
    };
    let form = stored_form(membership, &loaded, status);
    Ok(Html(render(&state, &user, form, loaded)?).into_response())
}

/// What the panel says of the current provider's credential expiry dates.
fn credential_expiries(
    stored: &[(Provider, StoredProvider)],
    current: Option<&str>,
) -> Vec<(String, bool)> {
    let today = chrono::Utc::now().date_naive();
    stored
        .iter()
        .filter(|(p, _)| Some(p.id()) == current)
        .flat_map(|(p, s)| {
            s.expiries.iter().map(move |(field, date)| {
                let label = p.field(field).map_or(field.as_str(), |f| f.label);
                let days = (*date - today).num_days();
                let when = match days {
                    ..=-1 => format!("expired on {date}"),
                    0 => format!("expires today ({date})"),
                    1 => format!("expires tomorrow ({date})"),
                    n => format!("expires on {date}, in {n} days"),
                };
                (format!("{label} {when}."), days <= 30)
            })
        })
        .collect()
}

/// The form as stored, with a status.
fn stored_form(membership: MembershipRow, loaded: &Loaded, status: Option<Status>) -> FormState {
    let mut values = FormValues::new();
    for (provider, stored) in &loaded.stored {
        values.extend(stored.fields.clone());
        for (field, date) in &stored.expiries {
            values.insert(expiry_field(field), date.to_string());
        }
        for field in provider.fields().iter().filter(|f| !f.default.is_empty()) {
            values
                .entry(field.name.to_owned())
                .or_insert_with(|| field.default.to_owned());
        }
    }
    FormState {
        membership,
        filter: loaded.filter(),
        enabled: loaded.settings.as_ref().is_some_and(|s| s.enabled),
        provider: loaded
            .settings
            .as_ref()
            .map_or_else(|| Provider::first().id().to_owned(), |s| s.provider.clone()),
        values,
        errors: FieldErrors::default(),
        status,
    }
}

/// The subscription's stored SIEM state, read once per request.
#[derive(Clone)]
struct Loaded {
    /// What is stored for every provider.
    stored: Vec<(Provider, StoredProvider)>,
    /// The switch, the chosen provider and who changed them last.
    settings: Option<store::siem::SettingsRow>,
    /// The latest changes.
    history: Vec<store::siem::HistoryRow>,
    /// The health panel of the current destination.
    panel: store::page::PanelRows,
}

impl Loaded {
    /// The current destination's stored event filter.
    fn filter(&self) -> EventFilter {
        EventFilter::from_stored(
            self.panel
                .health
                .as_ref()
                .and_then(|h| h.send_event_ids.clone()),
        )
    }

    async fn fetch(state: &AppState, subscription_id: uuid::Uuid) -> Result<Loaded, WebError> {
        let settings = store::siem::settings(state.pool(), subscription_id).await?;
        let provider = settings
            .as_ref()
            .map_or(Provider::first().id(), |s| s.provider.as_str());
        let panel = store::page::panel(state.pool(), subscription_id, provider, PANEL_ROWS).await?;
        Ok(Loaded {
            stored: crate::settings::load_all(state.pool(), state.master_key(), subscription_id)
                .await?,
            history: store::siem::history(state.pool(), subscription_id, HISTORY_SHOWN).await?,
            settings,
            panel,
        })
    }
}

/// The form as the page shows it: what was typed (or stored), its errors and the outcome.
struct FormState {
    membership: MembershipRow,
    enabled: bool,
    provider: String,
    /// The event filter as shown (stored, or as submitted).
    filter: EventFilter,
    values: FormValues,
    errors: FieldErrors,
    status: Option<Status>,
}

fn render(
    state: &AppState,
    user: &CurrentUser,
    form: FormState,
    loaded: Loaded,
) -> Result<String, WebError> {
    let FormState {
        membership,
        enabled,
        provider,
        filter,
        mut values,
        errors,
        status,
    } = form;
    let paused = loaded
        .panel
        .health
        .as_ref()
        .is_some_and(|h| h.paused_reason.is_some());
    let filter_error = errors.get("send_event_ids").map(str::to_owned);
    let settings = loaded.settings.as_ref();
    let owed = loaded.panel.health.as_ref().map_or(0, |h| h.pending);
    let carry_from = settings
        .filter(|s| s.enabled && owed > 0)
        .and_then(|s| Provider::parse(&s.provider).ok())
        .map(|p| (owed, p.label()));
    let health = health_view(
        state.sends_email(),
        settings.is_some_and(|s| s.enabled),
        state.config().retention_days,
        loaded.panel,
    );
    let history = loaded
        .history
        .into_iter()
        .map(|h| HistoryEntry {
            who: h.user_email,
            outcome: h.outcome,
            changes: serde_json::from_value(h.changes).unwrap_or_default(),
            at: when(h.at),
        })
        .collect();
    // A webhook URL's query may carry a credential: its values are never shown (rows saved
    // before the query was sealed included).
    if let Some(shown) = values
        .get("webhook_url")
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| config::hide_query_values(&u))
    {
        values.insert("webhook_url".into(), shown);
    }
    // Secrets are write-only: whatever was typed is never sent back.
    let mut secret_hints = BTreeMap::new();
    for (provider, stored) in &loaded.stored {
        for field in provider.sealed_fields() {
            if matches!(field.kind, FieldKind::Url) {
                // A URL sealed for its query is shown with the query's values hidden.
                continue;
            }
            values.remove(field.name);
            if let Some(secret) = stored.secrets.get(field.name) {
                secret_hints.insert(
                    field.name.to_owned(),
                    (
                        secret.hint().to_owned(),
                        matches!(secret, StoredSecret::Unreadable(_)),
                    ),
                );
            }
        }
    }
    let open = status.is_some() || errors.count() > 0;
    let providers: Vec<ProviderView> = Provider::all()
        .map(|p| ProviderView {
            id: p.id(),
            label: p.label(),
            fields: p
                .fields()
                .iter()
                // An internal value shows as its state, when it is a sealed one.
                .filter(|f| !matches!(f.kind, FieldKind::Internal) || f.sealed_as.is_some())
                .map(|field| FieldView {
                    name: field.name,
                    label: field.label,
                    kind: match field.kind {
                        FieldKind::Text => "text",
                        FieldKind::Internal => "state",
                        FieldKind::Url => "url",
                        FieldKind::Secret => "password",
                        FieldKind::Check => "checkbox",
                        FieldKind::Select(_) => "select",
                        FieldKind::SecretLines => "textarea",
                    },
                    value: values.get(field.name).cloned().unwrap_or_default(),
                    options: match field.kind {
                        FieldKind::Select(choices) => choices(),
                        _ => Vec::new(),
                    },
                    hint: field.hint,
                    placeholder: field.placeholder,
                    error: errors.get(field.name).map(str::to_owned),
                    stored_hint: secret_hints.get(field.name).map(|(h, _)| h.clone()),
                    unreadable: secret_hints.get(field.name).is_some_and(|(_, u)| *u),
                    expiry: matches!(field.kind, FieldKind::Secret).then(|| {
                        let name = expiry_field(field.name);
                        let value = values.get(&name).cloned().unwrap_or_default();
                        let error = errors.get(&name).map(str::to_owned);
                        (name, value, error)
                    }),
                })
                .collect(),
        })
        .collect();
    let page = SettingsPage {
        layout: Layout::signed_in(user, &format!("Settings — {}", membership.name)),
        is_admin: membership.role().is_admin(),
        filter_groups: filter_groups(&filter),
        filter_error,
        paused,
        expiries: credential_expiries(&loaded.stored, settings.map(|s| s.provider.as_str())),
        replay_from: values.get("replay_from").cloned().unwrap_or_default(),
        replay_to: values.get("replay_to").cloned().unwrap_or_default(),
        enabled,
        provider,
        errors,
        status,
        open,
        last_change: settings.map(|s| (s.updated_by_email.clone(), when(s.updated_at))),
        providers,
        health,
        history,
        carry_from,
        membership,
    };
    Ok(page.render()?)
}

/// Answers with the page re-rendered for `form`.
async fn answer(
    state: &AppState,
    user: &CurrentUser,
    form: FormState,
    loaded: &Loaded,
    code: StatusCode,
) -> Result<Response, WebError> {
    Ok((code, Html(render(state, user, form, loaded.clone())?)).into_response())
}

async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Form(raw): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    // Secrets that pass Test Connection are held for this session (see `hold_tested`).
    let session_digest = super::session::cookie(&headers, super::session::SESSION_COOKIE)
        .map(crate::crypto::token_digest);
    let membership = membership_or_404(&state, &user, &id).await?;
    // The event filter's checkboxes repeat one name: taken before the fields become a map.
    let filter_shown = raw.iter().any(|(k, _)| k == FILTER_SHOWN);
    let ticked: Vec<String> = raw
        .iter()
        .filter(|(k, _)| k == "send_event_ids")
        .map(|(_, v)| v.clone())
        .collect();
    let mut values: FormValues = raw
        .into_iter()
        .filter(|(k, _)| k != "send_event_ids" && k != FILTER_SHOWN)
        .collect();
    let csrf = values.remove("csrf_token").unwrap_or_default();
    user.check_csrf(&csrf)?;
    let action = values.remove("action").unwrap_or_default();
    let sub = membership.subscription_id;

    if !membership.role().is_admin() {
        let attempted = if action == "test" {
            "Tried to run Test Connection without the admin role"
        } else {
            "Tried to save SIEM settings without the admin role"
        };
        store::siem::record_history(
            state.pool(),
            sub,
            user.user_id,
            &user.email,
            "denied",
            &[attempted.to_owned()],
        )
        .await?;
        tracing::warn!(subscription_id = %sub, user_id = %user.user_id, "reader tried to change SIEM settings");
        return Err(WebError::Forbidden(
            "Only administrators of this subscription can change or test its SIEM settings.".into(),
        ));
    }

    let enabled = values.remove("siem_enabled").is_some();
    // The checkbox is on the page only while the current destination owes events; without
    // it (nothing owed when the page was drawn) a switch carries whatever is owed by then.
    let carry_ticked = values.remove("carry_backlog").is_some();
    let carry_offered = values.remove("carry_backlog_offered").is_some();
    let carry_backlog = carry_ticked || !carry_offered;
    let provider_raw = values.remove("provider").unwrap_or_default();
    let loaded = Loaded::fetch(&state, sub).await?;
    // Absent from the form (an old page): unchanged.
    let filter = if filter_shown {
        EventFilter::parse(&ticked)
    } else {
        Ok(loaded.filter())
    };
    let shown_filter = filter.clone().unwrap_or_else(|_| {
        EventFilter::parse(&ticked).unwrap_or_else(|_| EventFilter::from_stored(Some(Vec::new())))
    });
    // The page again, as submitted, with field errors and a status.
    let again = |values: FormValues, errors: FieldErrors, status: Status| FormState {
        membership: membership.clone(),
        filter: shown_filter.clone(),
        enabled,
        provider: provider_raw.trim().to_owned(),
        values,
        errors,
        status: Some(status),
    };
    let provider = match Provider::parse(&provider_raw) {
        Ok(p) => p,
        Err(e) => {
            let mut errors = FieldErrors::default();
            errors.add("provider", e);
            let status = Status::plain("error", "Nothing was saved. Fix the field marked below.");
            let form = again(values, errors, status);
            return answer(
                &state,
                &user,
                form,
                &loaded,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let stored = loaded
        .stored
        .iter()
        .find(|(p, _)| *p == provider)
        .map(|(_, s)| s.clone())
        .unwrap_or_default();
    let context = Context {
        hostname: state.hostname(),
        shared: state.shared(),
    };
    // Blank secret fields take what this session just tested (see `hold_tested`).
    if let Some(digest) = &session_digest {
        reuse_tested(state.settings(), sub, digest, provider, &mut values).await?;
    }

    match action.as_str() {
        "test" => {
            let validated =
                match config::validate(provider, &values, &stored, state.egress(), true, context) {
                    Ok(v) => v,
                    Err(errors) => {
                        let status = Status::plain(
                            "error",
                            format!(
                                "Fix the {} marked below, then test again.",
                                plural(errors.count(), "field", "fields")
                            ),
                        );
                        let form = again(values, errors, status);
                        return answer(
                            &state,
                            &user,
                            form,
                            &loaded,
                            StatusCode::UNPROCESSABLE_ENTITY,
                        )
                        .await;
                    }
                };
            if !state.allow_test_connection(user.user_id) {
                let status = Status::plain(
                    "error",
                    format!(
                        "You ran Test Connection {} times in the last minute. Wait a minute, then try again.",
                        crate::state::TEST_CONNECTION_LIMIT
                    ),
                );
                let form = again(values, FieldErrors::default(), status);
                return answer(&state, &user, form, &loaded, StatusCode::TOO_MANY_REQUESTS).await;
            }
            let Some(destination) = &validated.destination else {
                return Err(WebError::Internal(anyhow::anyhow!(
                    "a complete validation produced no destination"
                )));
            };
            let outcome = destination
                .test_connection(state.siem_client(), state.egress(), sub)
                .await;
            let result = match &outcome {
                Ok(_) => "succeeded".to_owned(),
                Err(failure) => format!("failed ({:?})", failure.kind),
            };
            let target = provider
                .address_fields()
                .filter_map(|field| validated.fields.get(field.name))
                .filter_map(|v| url::Url::parse(v).ok())
                .filter_map(|u| u.host_str().map(str::to_owned))
                .collect::<Vec<_>>()
                .join(", ");
            store::siem::record_history(
                state.pool(),
                sub,
                user.user_id,
                &user.email,
                "tested",
                &[format!(
                    "Test Connection to {} ({}) {result}",
                    provider.label(),
                    if target.is_empty() {
                        "default address".to_owned()
                    } else {
                        target
                    }
                )],
            )
            .await?;
            // A signing secret generated for this test comes back with the page (shown once),
            // so that Save changes keeps the secret the receiver was just tested with.
            let generated = validated.generated_secret.clone();
            if let Some(secret) = &generated {
                values.insert("webhook_secret".into(), secret.clone());
            }
            // A green test holds what was typed; a red one still holds a secret it generated,
            // which is shown now so the receiver can be set up with it.
            let held = match (&outcome, &session_digest) {
                (Ok(_), Some(digest)) => {
                    hold_tested(state.settings(), sub, digest, provider, &values).await?
                }
                (Err(_), Some(digest)) if generated.is_some() => {
                    let mut only_generated: FormValues = provider
                        .address_fields()
                        .filter_map(|f| values.get(f.name).map(|v| (f.name.to_owned(), v.clone())))
                        .collect();
                    only_generated.extend(
                        values
                            .get("webhook_secret")
                            .map(|v| ("webhook_secret".to_owned(), v.clone())),
                    );
                    hold_tested(state.settings(), sub, digest, provider, &only_generated).await?
                }
                _ => false,
            };
            values.remove("webhook_secret");
            let generated = generated.filter(|_| held);
            let status = match outcome {
                Ok(ok) => Status {
                    kind: "ok",
                    message: format!(
                        "{} Nothing was saved: press Save changes to keep these settings{}.",
                        ok.message,
                        if held {
                            " (the secrets you just typed are kept for 10 minutes for that, so leave their fields blank)"
                        } else {
                            ""
                        }
                    ),
                    query: Some(ok.query),
                    link: ok.explorer_url,
                    secret: generated,
                    monitors: Vec::new(),
                },
                Err(failure) => {
                    tracing::info!(subscription_id = %sub, kind = ?failure.kind, "test connection failed");
                    match generated {
                        Some(secret) => Status {
                            kind: "error",
                            message: format!(
                                "{} The test was signed with a new signing secret, ending in {}, shown below once: set it up in your receiver, then test again. Save changes keeps this secret.",
                                failure.message,
                                // ASCII (prefix and base64): any byte index is a boundary.
                                &secret[secret.len().saturating_sub(4)..]
                            ),
                            query: None,
                            link: None,
                            secret: Some(secret),
                            monitors: Vec::new(),
                        },
                        None => Status::plain("error", failure.message),
                    }
                }
            };
            let form = again(values, FieldErrors::default(), status);
            answer(&state, &user, form, &loaded, StatusCode::OK).await
        }
        "save" => {
            let mut expiry_errors = FieldErrors::default();
            let expiries = parse_expiries(
                provider,
                &values,
                AbsentExpiry::Clears,
                chrono::Utc::now().date_naive(),
                &mut expiry_errors,
            );
            let validated = match (
                config::validate(provider, &values, &stored, state.egress(), enabled, context),
                &filter,
            ) {
                (Ok(v), Ok(_)) if expiry_errors.count() == 0 => v,
                (result, filter) => {
                    let mut errors = result.err().unwrap_or_default();
                    errors.extend(expiry_errors);
                    if let Err(e) = filter {
                        errors.add("send_event_ids", e.clone());
                    }
                    let status = Status::plain(
                        "error",
                        format!(
                            "Nothing was saved. Fix the {} marked below.",
                            plural(errors.count(), "field", "fields")
                        ),
                    );
                    let form = again(values, errors, status);
                    return answer(
                        &state,
                        &user,
                        form,
                        &loaded,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    )
                    .await;
                }
            };
            let generated = validated.generated_secret.clone();
            save(
                state.settings(),
                (user.user_id, &user.email),
                sub,
                Export {
                    enabled,
                    filter: filter.as_ref().ok(),
                    expiries: Some(expiries),
                    carry_backlog,
                },
                loaded.settings.as_ref(),
                &stored,
                validated,
            )
            .await?;
            if let Some(digest) = &session_digest {
                store::siem::drop_tested_secrets(state.pool(), sub, digest).await?;
            }
            match generated {
                // A new signing secret is shown exactly once, on this answer (never stored in
                // a URL or a session); the page is not cached.
                Some(secret) => {
                    let status = Status {
                        kind: "ok",
                        message: "Settings saved. Copy the new signing secret into your receiver now: it is shown only this once.".to_owned(),
                        query: None,
                        link: None,
                        secret: Some(secret),
                        monitors: Vec::new(),
                    };
                    values.remove("webhook_rotate");
                    values.remove("webhook_clear_headers");
                    let form = again(values, FieldErrors::default(), status);
                    let saved = Loaded::fetch(&state, sub).await?;
                    answer(&state, &user, form, &saved, StatusCode::OK).await
                }
                None => Ok(Redirect::to(&format!(
                    "/subscriptions/{sub}/settings?saved=1#advanced"
                ))
                .into_response()),
            }
        }
        _ => {
            let status = Status::plain("error", "Use Test Connection or Save changes.");
            let form = again(values, FieldErrors::default(), status);
            answer(
                &state,
                &user,
                form,
                &loaded,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

/// The checks of every administrator's button on the page: a member (else 404), the
/// session's CSRF token, the admin role (a reader's attempt is refused and recorded).
async fn admin_post(
    state: &AppState,
    user: &CurrentUser,
    id: &str,
    csrf_token: &str,
    action: AdminAction,
) -> Result<MembershipRow, WebError> {
    let membership = membership_or_404(state, user, id).await?;
    user.check_csrf(csrf_token)?;
    admin_or_denied(
        state.settings(),
        (user.user_id, &user.email),
        &membership,
        action,
    )
    .await?;
    Ok(membership)
}

/// Puts the parked events back in the queue (admins only).
async fn retry_parked(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let membership = admin_post(
        &state,
        &user,
        &id,
        &form.csrf_token,
        AdminAction::RetryParked,
    )
    .await?;
    let sub = membership.subscription_id;
    let n = retry_parked_events(state.settings(), (user.user_id, &user.email), sub).await?;
    Ok(Redirect::to(&format!("/subscriptions/{sub}/settings?retried={n}#health")).into_response())
}

/// **Pause export** (admins only): events are recorded and kept, nothing is sent.
async fn pause(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    pause_or_resume(state, user, id, form, true).await
}

/// **Resume export** (admins only): what was kept meanwhile is sent.
async fn resume(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    pause_or_resume(state, user, id, form, false).await
}

async fn pause_or_resume(
    state: AppState,
    user: CurrentUser,
    id: String,
    form: CsrfOnly,
    pausing: bool,
) -> Result<Response, WebError> {
    let (what, action) = if pausing {
        ("pause", AdminAction::PauseExport)
    } else {
        ("resume", AdminAction::ResumeExport)
    };
    let membership = admin_post(&state, &user, &id, &form.csrf_token, action).await?;
    let sub = membership.subscription_id;
    match pause_or_resume_export(state.settings(), (user.user_id, &user.email), sub, pausing)
        .await?
    {
        PauseOutcome::ExportOff => Ok(Redirect::to(&format!(
            "/subscriptions/{sub}/settings?export=off#health"
        ))
        .into_response()),
        PauseOutcome::Done { .. } => Ok(Redirect::to(&format!(
            "/subscriptions/{sub}/settings?{what}d=1#health"
        ))
        .into_response()),
    }
}

#[derive(Deserialize)]
struct ReplayForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    replay_from: String,
    #[serde(default)]
    replay_to: String,
}

/// **Replay** (admins only): resends the events recorded in a window (UTC) to the current
/// destination, at most [`REPLAY_CAP`] of them.
async fn replay(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<ReplayForm>,
) -> Result<Response, WebError> {
    let membership = admin_post(&state, &user, &id, &form.csrf_token, AdminAction::Replay).await?;
    let sub = membership.subscription_id;
    let refuse = |loaded: Loaded, field: Option<&'static str>, message: String| {
        let mut page = stored_form(membership.clone(), &loaded, None);
        page.values
            .insert("replay_from".into(), form.replay_from.clone());
        page.values
            .insert("replay_to".into(), form.replay_to.clone());
        if let Some(field) = field {
            page.errors.add(field, message.clone());
        }
        page.status = Some(Status::plain(
            "error",
            format!("Nothing was replayed. {message}"),
        ));
        (page, loaded)
    };
    let (field, message) = match ReplayWindow::parse(&form.replay_from, &form.replay_to) {
        Err((field, message)) => (Some(field), message),
        Ok(window) => {
            let plan =
                replay_events(state.settings(), (user.user_id, &user.email), sub, &window).await?;
            match (plan, replay_refusal(&plan)) {
                (store::delivery::ReplayPlan::Started { events, .. }, _) => {
                    return Ok(Redirect::to(&format!(
                        "/subscriptions/{sub}/settings?replay={events}#health"
                    ))
                    .into_response());
                }
                (_, message) => (None, message.unwrap_or_default()),
            }
        }
    };
    let loaded = Loaded::fetch(&state, sub).await?;
    let (page, loaded) = refuse(loaded, field, message);
    answer(
        &state,
        &user,
        page,
        &loaded,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// **Create monitors** (admins only): one Datadog log alert monitor per High catalog event,
/// with the stored API URL, API key and application key; pressing it again creates none twice.
async fn create_monitors(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let membership = admin_post(
        &state,
        &user,
        &id,
        &form.csrf_token,
        AdminAction::CreateMonitors,
    )
    .await?;
    let sub = membership.subscription_id;
    let outcome = ensure_monitors(state.settings(), (user.user_id, &user.email), sub).await?;
    let loaded = Loaded::fetch(&state, sub).await?;
    let (status, code) = match outcome {
        MonitorsOutcome::InPlace(links) => {
            let created = links.iter().filter(|l| l.created).count();
            let mut status = Status::plain(
                "ok",
                format!(
                    "{} Datadog monitors are in place, one per High event ({created} created now, {} already there, tagged managed-by:cloudpki).",
                    links.len(),
                    links.len() - created
                ),
            );
            status.monitors = links
                .into_iter()
                .map(|l| {
                    (
                        format!("{} (Event ID {}): monitor {}", l.summary, l.event_id, l.id),
                        l.url,
                    )
                })
                .collect();
            (status, StatusCode::OK)
        }
        MonitorsOutcome::Refused(message) => (
            Status::plain("error", message),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    };
    let page = stored_form(membership, &loaded, Some(status));
    answer(&state, &user, page, &loaded, code).await
}
