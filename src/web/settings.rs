//! A subscription's Settings page: Advanced Settings → Send Audit Logs to SIEM, SIEM Provider,
//! the provider's fields, Test Connection and Save changes (DESIGN.md, "Contract: pages").
//!
//! One form, two buttons (`action=test` / `action=save`), so the page works without JavaScript.
//! Test Connection sends a real test log with the values in the form and never saves; Save
//! changes is for admins, stores the settings (the API key sealed), writes a history entry and
//! redirects (post/redirect/get). The API key is write-only: it is never rendered back; a blank
//! key field means "keep the stored key".

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Form, Router,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{session::CurrentUser, subscriptions::membership_or_404, Layout, WebError};
use crate::{
    app::AppState,
    domain::{
        datadog::{DatadogApiKey, DatadogIntakeUrl, DatadogSite},
        provider::Provider,
    },
    siem::{
        datadog::{self, DatadogConfig},
        stored::{self, DatadogFields, StoredDatadog, StoredSecret, DATADOG_API_KEY},
    },
    store::{self, accounts::MembershipRow},
};

/// How many history entries the page lists.
const HISTORY_SHOWN: i64 = 10;
/// The select value for "type the URL yourself".
const CUSTOM_SITE: &str = "custom";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/subscriptions/{id}/settings", get(show).post(submit))
        .route(
            "/subscriptions/{id}/settings/retry-parked",
            axum::routing::post(retry_parked),
        )
}

/// Parked events, attempts and emails the panel lists.
const PANEL_ROWS: i64 = 10;

/// The delivery health panel.
struct HealthView {
    /// `healthy`, `retrying`, `failing`, `disabled` or `idle` (never enabled).
    state: &'static str,
    label: &'static str,
    summary: String,
    last_success: Option<String>,
    waiting: i64,
    oldest_waiting: Option<String>,
    last_error: Option<(String, String)>,
    delivered_total: i64,
    duplicates_total: i64,
    expired_total: i64,
    parked_total: i64,
    parked: Vec<(String, String, String, String)>,
    attempts: Vec<(String, String, i32, String)>,
    gaps: Vec<(String, i64, String, String)>,
    emails: Vec<(String, String, String, String)>,
    sends_email: bool,
}

fn age(since: DateTime<Utc>) -> String {
    let secs = (Utc::now() - since).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=172_799 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} days", secs / 86_400),
    }
}

async fn health_view(
    state: &AppState,
    subscription_id: uuid::Uuid,
    enabled: bool,
    provider: &str,
) -> Result<HealthView, WebError> {
    let health = store::delivery::health(state.pool(), subscription_id, provider).await?;
    let emails = store::delivery::notifications(state.pool(), subscription_id, PANEL_ROWS)
        .await?
        .into_iter()
        .map(|n| {
            let status = match (n.sent_via.as_deref(), n.last_error) {
                (Some("smtp"), _) => "sent".to_owned(),
                (Some(_), _) => "recorded (email not configured)".to_owned(),
                (None, Some(e)) => format!("not sent yet, retrying: {e}"),
                (None, None) => "queued".to_owned(),
            };
            (when(n.created_at), n.kind, n.recipient, status)
        })
        .collect();
    let Some(h) = health else {
        return Ok(HealthView {
            state: if enabled { "healthy" } else { "idle" },
            label: if enabled { "Healthy" } else { "Not enabled" },
            summary: if enabled {
                "No event has been sent yet.".to_owned()
            } else {
                "SIEM export has never been turned on for this subscription.".to_owned()
            },
            last_success: None,
            waiting: 0,
            oldest_waiting: None,
            last_error: None,
            delivered_total: 0,
            duplicates_total: 0,
            expired_total: 0,
            parked_total: 0,
            parked: Vec::new(),
            attempts: Vec::new(),
            gaps: Vec::new(),
            emails,
            sends_email: state.sends_email(),
        });
    };
    let parked = store::delivery::parked(state.pool(), subscription_id, provider, PANEL_ROWS)
        .await?
        .into_iter()
        .map(|p| {
            (
                p.event_id.to_string(),
                p.event_uuid.to_string(),
                when(p.occurred_at),
                p.reason,
            )
        })
        .collect();
    let attempts = store::delivery::attempts(state.pool(), subscription_id, provider, PANEL_ROWS)
        .await?
        .into_iter()
        .map(|a| {
            (
                when(a.at),
                a.outcome,
                a.events,
                a.detail.unwrap_or_default(),
            )
        })
        .collect();
    let gaps = store::delivery::gaps(state.pool(), subscription_id, provider, PANEL_ROWS)
        .await?
        .into_iter()
        .map(|g| {
            (
                when(g.recorded_at),
                g.expired_events,
                when(g.oldest_event_at),
                when(g.newest_event_at),
            )
        })
        .collect();
    let (state_name, label, summary) = if !enabled {
        (
            "disabled",
            "Disabled",
            format!(
                "Export is off. {} event(s) wait and will be sent when it is turned on again.",
                h.pending
            ),
        )
    } else if h.status == "failing" {
        ("failing", "Failing", format!(
            "Delivery has been failing since {}. Events are kept and retried; the administrators are emailed.",
            h.failing_since.map(when).unwrap_or_else(|| "recently".into())
        ))
    } else if h.failing_since.is_some() {
        (
            "retrying",
            "Retrying",
            "The last attempt failed; cloudpki retries automatically.".to_owned(),
        )
    } else {
        (
            "healthy",
            "Healthy",
            "Events are delivered as they arrive.".to_owned(),
        )
    };
    Ok(HealthView {
        state: state_name,
        label,
        summary,
        last_success: h.last_success_at.map(when),
        waiting: h.pending,
        oldest_waiting: h.oldest_pending.map(age),
        last_error: h.last_error.zip(h.last_error_at.map(when)),
        delivered_total: h.delivered_total,
        duplicates_total: h.duplicates_total,
        expired_total: h.expired_total,
        parked_total: h.parked,
        parked,
        attempts,
        gaps,
        emails,
        sends_email: state.sends_email(),
    })
}

/// What the user typed (or what is stored), as strings, for re-rendering.
#[derive(Deserialize, Default, Clone)]
pub struct SettingsForm {
    #[serde(default)]
    siem_enabled: Option<String>,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    datadog_site: String,
    #[serde(default)]
    datadog_url: String,
    #[serde(default)]
    datadog_api_key: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    action: String,
}

/// One message per field, shown next to it.
#[derive(Default)]
struct FieldErrors {
    provider: Option<String>,
    datadog_site: Option<String>,
    datadog_url: Option<String>,
    datadog_api_key: Option<String>,
}

impl FieldErrors {
    fn count(&self) -> usize {
        [
            &self.provider,
            &self.datadog_site,
            &self.datadog_url,
            &self.datadog_api_key,
        ]
        .iter()
        .filter(|e| e.is_some())
        .count()
    }
}

/// The message in the `role="status"` element.
struct Status {
    /// `ok`, `error` or `info`: the style.
    kind: &'static str,
    message: String,
    query: Option<String>,
    link: Option<String>,
}

impl Status {
    fn plain(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            query: None,
            link: None,
        }
    }
}

struct SiteOption {
    code: &'static str,
    label: String,
    intake_url: String,
}

struct HistoryEntry {
    who: String,
    outcome: String,
    changes: Vec<String>,
    at: String,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    membership: MembershipRow,
    is_admin: bool,
    form: SettingsForm,
    errors: FieldErrors,
    status: Option<Status>,
    open: bool,
    key_hint: Option<String>,
    key_unreadable: bool,
    last_change: Option<(String, String)>,
    providers: Vec<(&'static str, &'static str)>,
    health: HealthView,
    sites: Vec<SiteOption>,
    history: Vec<HistoryEntry>,
}

impl SettingsPage {
    fn enabled(&self) -> bool {
        self.form.siem_enabled.is_some()
    }
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

#[derive(Deserialize)]
struct ShowQuery {
    #[serde(default)]
    saved: Option<String>,
    #[serde(default)]
    retried: Option<u64>,
}

async fn show(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Html<String>, WebError> {
    let membership = membership_or_404(&state, &user, &id).await?;
    let stored = stored_form(&state, &membership).await?;
    let status = match (query.saved, query.retried) {
        (Some(_), _) => Some(Status::plain("ok", "Settings saved.")),
        (None, Some(n)) => Some(Status::plain(
            "ok",
            format!("{n} parked event(s) are queued again and will be retried now."),
        )),
        (None, None) => None,
    };
    let page = render(
        &state,
        &user,
        membership,
        stored,
        FieldErrors::default(),
        status,
    )
    .await?;
    Ok(Html(page))
}

/// The form as stored, for a fresh page.
async fn stored_form(
    state: &AppState,
    membership: &MembershipRow,
) -> Result<SettingsForm, WebError> {
    let sub = membership.subscription_id;
    let settings = store::siem::settings(state.pool(), sub).await?;
    let fields: DatadogFields =
        store::siem::provider_fields(state.pool(), sub, Provider::Datadog.id())
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
    Ok(SettingsForm {
        siem_enabled: settings
            .as_ref()
            .filter(|s| s.enabled)
            .map(|_| "on".to_owned()),
        provider: settings
            .map(|s| s.provider)
            .unwrap_or_else(|| Provider::Datadog.id().to_owned()),
        datadog_site: match (&fields.site, &fields.url) {
            (Some(site), _) => site.clone(),
            (None, Some(_)) => CUSTOM_SITE.to_owned(),
            (None, None) => DatadogSite::ALL[0].code().to_owned(),
        },
        datadog_url: fields
            .url
            .unwrap_or_else(|| DatadogSite::ALL[0].intake_base_url()),
        ..SettingsForm::default()
    })
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    membership: MembershipRow,
    mut form: SettingsForm,
    errors: FieldErrors,
    status: Option<Status>,
) -> Result<String, WebError> {
    let sub = membership.subscription_id;
    let stored = stored::load_datadog(state.pool(), state.master_key(), sub).await?;
    let settings = store::siem::settings(state.pool(), sub).await?;
    let health = health_view(
        state,
        sub,
        settings.as_ref().is_some_and(|s| s.enabled),
        settings
            .as_ref()
            .map_or(Provider::Datadog.id(), |s| s.provider.as_str()),
    )
    .await?;
    let history = store::siem::history(state.pool(), sub, HISTORY_SHOWN)
        .await?
        .into_iter()
        .map(|h| HistoryEntry {
            who: h.user_email,
            outcome: h.outcome,
            changes: serde_json::from_value(h.changes).unwrap_or_default(),
            at: when(h.at),
        })
        .collect();
    // The key is write-only: whatever was typed is never sent back.
    form.datadog_api_key.clear();
    let open = status.is_some() || errors.count() > 0;
    let page = SettingsPage {
        layout: Layout::signed_in(user, &format!("Settings — {}", membership.name)),
        is_admin: membership.role().is_admin(),
        form,
        errors,
        status,
        open,
        key_hint: stored.api_key.as_ref().map(|k| k.hint().to_owned()),
        key_unreadable: matches!(stored.api_key, Some(StoredSecret::Unreadable(_))),
        last_change: settings.map(|s| (s.updated_by_email, when(s.updated_at))),
        providers: Provider::ALL.iter().map(|p| (p.id(), p.label())).collect(),
        health,
        sites: DatadogSite::ALL
            .iter()
            .map(|s| SiteOption {
                code: s.code(),
                label: s.label(),
                intake_url: s.intake_base_url(),
            })
            .collect(),
        history,
        membership,
    };
    Ok(page.render()?)
}

/// The form parsed into domain values.
struct Validated {
    enabled: bool,
    provider: Provider,
    site: Option<DatadogSite>,
    url: Option<DatadogIntakeUrl>,
    /// A newly typed key; `None` keeps the stored one.
    new_key: Option<DatadogApiKey>,
    /// The key to use: the new one, else the stored one.
    key: Option<DatadogApiKey>,
}

impl Validated {
    fn datadog_config(&self) -> Option<DatadogConfig> {
        Some(DatadogConfig {
            site: self.site,
            url: self.url.clone()?,
            api_key: self.key.clone()?,
        })
    }
}

/// Checks every field and collects every error, so the page can show them all at once.
/// `complete` demands a usable URL and key (Test Connection, or saving with export on).
fn validate(
    state: &AppState,
    form: &SettingsForm,
    stored: &StoredDatadog,
    complete_required: bool,
) -> Result<Validated, FieldErrors> {
    let mut errors = FieldErrors::default();
    let enabled = form.siem_enabled.is_some();
    let complete = complete_required || enabled;

    let provider = Provider::parse(&form.provider)
        .map_err(|e| errors.provider = Some(e))
        .ok();

    let site = match form.datadog_site.trim() {
        "" | CUSTOM_SITE => None,
        code => match DatadogSite::parse(code) {
            Ok(site) => Some(site),
            Err(e) => {
                errors.datadog_site = Some(e.to_string());
                None
            }
        },
    };

    // Without JavaScript the select cannot fill the URL in: a blank URL means the site's.
    let url_text = match (form.datadog_url.trim(), site) {
        ("", Some(site)) => site.intake_base_url(),
        (text, _) => text.to_owned(),
    };
    let url = if url_text.is_empty() {
        if complete {
            errors.datadog_url =
                Some("Enter the logs intake URL, or choose a Datadog site.".into());
        }
        None
    } else {
        match DatadogIntakeUrl::parse(&url_text) {
            Ok(url) => match state.egress().check_url(&url.logs_endpoint()) {
                Ok(()) => Some(url),
                Err(e) => {
                    errors.datadog_url = Some(e.to_string());
                    None
                }
            },
            Err(e) => {
                errors.datadog_url = Some(e.to_string());
                None
            }
        }
    };

    let typed_key = form.datadog_api_key.trim();
    let (new_key, key) = if typed_key.is_empty() {
        match &stored.api_key {
            Some(StoredSecret::Usable(key, _)) => (None, Some(key.clone())),
            Some(StoredSecret::Unreadable(_)) => {
                if complete {
                    errors.datadog_api_key = Some(
                        "The stored API key can no longer be read (the master key changed); enter the key again.".into(),
                    );
                }
                (None, None)
            }
            None => {
                if complete {
                    errors.datadog_api_key = Some(
                        "Enter the API key from Datadog (Organization Settings → API Keys).".into(),
                    );
                }
                (None, None)
            }
        }
    } else {
        match DatadogApiKey::parse(typed_key) {
            Ok(key) => (Some(key.clone()), Some(key)),
            Err(e) => {
                errors.datadog_api_key = Some(e.to_string());
                (None, None)
            }
        }
    };

    match provider {
        Some(provider) if errors.count() == 0 => Ok(Validated {
            enabled,
            provider,
            site,
            url,
            new_key,
            key,
        }),
        _ => Err(errors),
    }
}

async fn submit(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<SettingsForm>,
) -> Result<Response, WebError> {
    let membership = membership_or_404(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let sub = membership.subscription_id;

    if !membership.role().is_admin() {
        let attempted = if form.action == "test" {
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

    let stored = stored::load_datadog(state.pool(), state.master_key(), sub).await?;
    match form.action.as_str() {
        "test" => test_connection(state, user, membership, form, stored).await,
        "save" => save(state, user, membership, form, stored).await,
        _ => {
            let status = Status::plain("error", "Use Test Connection or Save changes.");
            let page = render(
                &state,
                &user,
                membership,
                form,
                FieldErrors::default(),
                Some(status),
            )
            .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response())
        }
    }
}

async fn test_connection(
    state: AppState,
    user: CurrentUser,
    membership: MembershipRow,
    form: SettingsForm,
    stored: StoredDatadog,
) -> Result<Response, WebError> {
    let sub = membership.subscription_id;
    let validated = match validate(&state, &form, &stored, true) {
        Ok(v) => v,
        Err(errors) => {
            let status = Status::plain(
                "error",
                format!(
                    "Fix the {} marked below, then test again.",
                    plural(errors.count(), "field", "fields")
                ),
            );
            let page = render(&state, &user, membership, form, errors, Some(status)).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response());
        }
    };
    if !state.allow_test_connection(user.user_id) {
        let status = Status::plain(
            "error",
            format!(
                "You ran Test Connection {} times in the last minute. Wait a minute, then try again.",
                crate::app::TEST_CONNECTION_LIMIT
            ),
        );
        let page = render(
            &state,
            &user,
            membership,
            form,
            FieldErrors::default(),
            Some(status),
        )
        .await?;
        return Ok((StatusCode::TOO_MANY_REQUESTS, Html(page)).into_response());
    }
    let Some(config) = validated.datadog_config() else {
        return Err(WebError::Internal(anyhow::anyhow!(
            "validated test config is incomplete"
        )));
    };
    let outcome = datadog::test_connection(
        state.siem_client(),
        state.egress(),
        &config,
        sub,
        state.hostname(),
    )
    .await;
    let (status_code, status) = match outcome {
        Ok(ok) => (
            StatusCode::OK,
            Status {
                kind: "ok",
                message: format!(
                    "{} Nothing was saved: press Save changes to keep these settings.",
                    ok.message
                ),
                query: Some(ok.query),
                link: ok.explorer_url,
            },
        ),
        Err(failure) => {
            tracing::info!(subscription_id = %sub, kind = ?failure.kind, "test connection failed");
            (StatusCode::OK, Status::plain("error", failure.message))
        }
    };
    let page = render(
        &state,
        &user,
        membership,
        form,
        FieldErrors::default(),
        Some(status),
    )
    .await?;
    Ok((status_code, Html(page)).into_response())
}

async fn save(
    state: AppState,
    user: CurrentUser,
    membership: MembershipRow,
    form: SettingsForm,
    stored: StoredDatadog,
) -> Result<Response, WebError> {
    let sub = membership.subscription_id;
    let validated = match validate(&state, &form, &stored, false) {
        Ok(v) => v,
        Err(errors) => {
            let status = Status::plain(
                "error",
                format!(
                    "Nothing was saved. Fix the {} marked below.",
                    plural(errors.count(), "field", "fields")
                ),
            );
            let page = render(&state, &user, membership, form, errors, Some(status)).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(page)).into_response());
        }
    };

    let before = store::siem::settings(state.pool(), sub).await?;
    let fields = DatadogFields {
        site: validated.site.map(|s| s.code().to_owned()),
        url: validated.url.as_ref().map(|u| u.as_str().to_owned()),
    };
    let changes = describe_changes(before.as_ref(), &stored, &validated, &fields);

    let mut tx = state.pool().begin().await.map_err(store::Error::from)?;
    store::siem::upsert_settings(
        &mut tx,
        sub,
        validated.enabled,
        validated.provider.id(),
        user.user_id,
        &user.email,
    )
    .await?;
    store::siem::upsert_provider_fields(
        &mut tx,
        sub,
        validated.provider.id(),
        &serde_json::to_value(&fields).map_err(anyhow::Error::from)?,
    )
    .await?;
    if let Some(key) = &validated.new_key {
        let context = stored::secret_context(sub, Provider::Datadog, DATADOG_API_KEY);
        let sealed = state
            .master_key()
            .seal(key.expose_secret().as_bytes(), &context);
        store::siem::upsert_secret(
            &mut tx,
            sub,
            Provider::Datadog.id(),
            DATADOG_API_KEY,
            &sealed,
            key.last4(),
        )
        .await?;
    }
    if validated.enabled {
        store::delivery::ensure_destination(&mut tx, sub, validated.provider.id()).await?;
    }
    store::siem::record_history(&mut *tx, sub, user.user_id, &user.email, "saved", &changes)
        .await?;
    tx.commit().await.map_err(store::Error::from)?;
    tracing::info!(subscription_id = %sub, user_id = %user.user_id, enabled = validated.enabled, "SIEM settings saved");

    Ok(Redirect::to(&format!("/subscriptions/{sub}/settings?saved=1#advanced")).into_response())
}

/// Sentences for the history: what this save changes. Never the key itself.
fn describe_changes(
    before: Option<&store::siem::SettingsRow>,
    stored: &StoredDatadog,
    new: &Validated,
    fields: &DatadogFields,
) -> Vec<String> {
    let mut changes = Vec::new();
    let was_enabled = before.is_some_and(|b| b.enabled);
    if was_enabled != new.enabled {
        changes.push(if new.enabled {
            "Send Audit Logs to SIEM turned on".to_owned()
        } else {
            "Send Audit Logs to SIEM turned off".to_owned()
        });
    }
    if before.map(|b| b.provider.as_str()) != Some(new.provider.id()) {
        changes.push(format!("SIEM Provider set to {}", new.provider.label()));
    }
    let old_site = stored.site.map(|s| s.code().to_owned());
    if old_site != fields.site {
        changes.push(format!(
            "Datadog site changed from {} to {}",
            old_site.as_deref().unwrap_or("none"),
            fields.site.as_deref().unwrap_or("custom URL")
        ));
    }
    let old_url = stored.url.as_ref().map(|u| u.as_str().to_owned());
    if old_url != fields.url {
        changes.push(format!(
            "Logs intake URL changed from {} to {}",
            old_url.as_deref().unwrap_or("none"),
            fields.url.as_deref().unwrap_or("none")
        ));
    }
    if let Some(key) = &new.new_key {
        changes.push(match &stored.api_key {
            Some(old) if old.hint() == key.last4() && old.usable() == Some(key) => {
                "API key entered again (unchanged)".to_owned()
            }
            Some(_) => format!("API key replaced (now ending in {})", key.last4()),
            None => format!("API key set (ending in {})", key.last4()),
        });
    }
    if changes.is_empty() {
        changes.push("Saved without changes".to_owned());
    }
    changes
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

/// Puts the parked events back in the queue (admins only).
async fn retry_parked(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let membership = membership_or_404(&state, &user, &id).await?;
    user.check_csrf(&form.csrf_token)?;
    let sub = membership.subscription_id;
    if !membership.role().is_admin() {
        store::siem::record_history(
            state.pool(),
            sub,
            user.user_id,
            &user.email,
            "denied",
            &["Tried to retry parked events without the admin role".to_owned()],
        )
        .await?;
        return Err(WebError::Forbidden(
            "Only administrators of this subscription can retry parked events.".into(),
        ));
    }
    let provider = store::siem::settings(state.pool(), sub)
        .await?
        .map_or_else(|| Provider::Datadog.id().to_owned(), |s| s.provider);
    let n = store::delivery::retry_parked(state.pool(), sub, &provider).await?;
    store::siem::record_history(
        state.pool(),
        sub,
        user.user_id,
        &user.email,
        "saved",
        &[format!("Retried {n} parked event(s)")],
    )
    .await?;
    Ok(Redirect::to(&format!("/subscriptions/{sub}/settings?retried={n}#health")).into_response())
}
