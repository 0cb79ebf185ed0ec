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
    health_panel::{health_view, when, HealthView},
    session::CurrentUser,
    subscriptions::membership_or_404,
    Layout, WebError,
};
use crate::{
    app::AppState,
    domain::{datadog::DatadogSite, provider::Provider},
    siem::config::{self, FieldErrors, FormValues, StoredProvider, StoredSecret},
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
}

/// The message in the `role="status"` element.
struct Status {
    /// `ok`, `error` or `info`: the style.
    kind: &'static str,
    message: String,
    query: Option<String>,
    link: Option<String>,
    /// A newly generated signing secret, shown once.
    secret: Option<String>,
}

impl Status {
    fn plain(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            query: None,
            link: None,
            secret: None,
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

/// How a provider field is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Url,
    Secret,
    Check,
    Select(&'static [(&'static str, &'static str)]),
    SecretLines,
}

/// One field of a provider's section (Datadog's section is written out in the template).
struct FieldSpec {
    name: &'static str,
    label: &'static str,
    kind: Kind,
    hint: &'static str,
}

const fn spec(
    name: &'static str,
    label: &'static str,
    kind: Kind,
    hint: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        label,
        kind,
        hint,
    }
}

const AZURE_CLOUDS: &[(&str, &str)] = &[
    ("public", "Azure (global)"),
    ("usgovernment", "Azure US Government"),
    ("china", "Azure China (21Vianet)"),
];

static SPLUNK_FIELDS: &[FieldSpec] = &[
            spec("splunk_url", "HEC URL", Kind::Url, "The HTTP Event Collector address, e.g. https://splunk.example.com:8088 (the …/services/collector URL works too). Its certificate must be publicly trusted."),
            spec("splunk_token", "HEC token", Kind::Secret, "The token of an HTTP Event Collector input (a GUID)."),
            spec("splunk_index", "Index", Kind::Text, "Optional; it must be allowed for the token. Blank uses the token's default index."),
            spec("splunk_sourcetype", "Source type", Kind::Text, "Defaults to ezca:audit."),
            spec("splunk_source", "Source", Kind::Text, "Optional; defaults to cloudpki."),
            spec("splunk_host", "Host", Kind::Text, "Optional; defaults to this server's name."),
            spec("splunk_ack", "Use indexer acknowledgement", Kind::Check, "Turn on only if the token has indexer acknowledgement enabled: events then count as delivered once Splunk confirms they are indexed."),
];

static SENTINEL_FIELDS: &[FieldSpec] = &[
            spec("sentinel_cloud", "Azure cloud", Kind::Select(AZURE_CLOUDS), "Where your tenant lives; it decides the sign-in and ingestion audiences."),
            spec("sentinel_tenant_id", "Tenant ID", Kind::Text, "Directory (tenant) ID of the Entra ID app registration (a GUID)."),
            spec("sentinel_client_id", "Client ID", Kind::Text, "Application (client) ID of the app registration (a GUID)."),
            spec("sentinel_client_secret", "Client secret", Kind::Secret, "A client secret of the app registration; note its expiry date. The app needs the Monitoring Metrics Publisher role on the data collection rule."),
            spec("sentinel_endpoint", "Ingestion endpoint", Kind::Url, "The logs ingestion endpoint of the data collection rule, or its data collection endpoint, e.g. https://my-dce.eastus-1.ingest.monitor.azure.com."),
            spec("sentinel_dcr_id", "DCR immutable ID", Kind::Text, "The immutable ID of the data collection rule (dcr-…, on its JSON view)."),
            spec("sentinel_stream", "Stream name", Kind::Text, "The stream declared in the rule, e.g. Custom-EzcaAudit_CL."),
            spec("sentinel_login_url", "Sign-in URL (advanced)", Kind::Url, "Leave blank to use the cloud's Entra ID sign-in address."),
];

static LOGSCALE_FIELDS: &[FieldSpec] = &[
            spec("logscale_url", "Ingest URL", Kind::Url, "The address of your LogScale cluster, e.g. https://cloud.community.humio.com (events go to its HEC-compatible endpoint /api/v1/ingest/hec)."),
            spec("logscale_token", "Ingest token", Kind::Secret, "An ingest token of the repository that receives the events."),
];

static WEBHOOK_FIELDS: &[FieldSpec] = &[
            spec("webhook_url", "Webhook URL", Kind::Url, "The https address that receives the signed events."),
            spec("webhook_headers", "Extra headers", Kind::SecretLines, "Optional; one `Name: value` per line, e.g. Authorization: Bearer …. Stored sealed; leave blank to keep the stored headers."),
            spec("webhook_clear_headers", "Remove the extra headers", Kind::Check, "Sends no extra headers from now on."),
            spec("webhook_rotate", "Rotate the signing secret", Kind::Check, "Generates a new signing secret on save and shows it once; the old one keeps signing for 24 hours so receivers can switch over."),
];

/// The fields of the providers other than Datadog, in the order the page shows them.
fn provider_specs(provider: Provider) -> &'static [FieldSpec] {
    match provider {
        Provider::Datadog => &[],
        Provider::Splunk => SPLUNK_FIELDS,
        Provider::Sentinel => SENTINEL_FIELDS,
        Provider::LogScale => LOGSCALE_FIELDS,
        Provider::Webhook => WEBHOOK_FIELDS,
    }
}

/// The label people see for a form field (history entries use it too).
fn field_label(name: &str) -> &str {
    match name {
        "datadog_site" => "Datadog site",
        "datadog_url" => "Logs intake URL",
        "datadog_api_key" => "API key",
        "webhook_secret" => "Signing secret",
        "webhook_secret_previous" => "Previous signing secret",
        "webhook_previous_until" => "Previous signing secret valid until",
        "webhook_url_sealed" => "Webhook URL query",
        other => Provider::ALL
            .iter()
            .flat_map(|p| provider_specs(*p))
            .find(|s| s.name == other)
            .map_or(other, |s| s.label),
    }
}

/// A provider field as the template renders it.
struct FieldView {
    name: &'static str,
    label: &'static str,
    /// `text`, `url`, `password`, `checkbox`, `select` or `textarea`.
    kind: &'static str,
    value: String,
    options: &'static [(&'static str, &'static str)],
    hint: &'static str,
    error: Option<String>,
    /// For secrets: the last characters (or header names) of the stored value.
    stored_hint: Option<String>,
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
    enabled: bool,
    provider: String,
    values: FormValues,
    errors: FieldErrors,
    status: Option<Status>,
    open: bool,
    secret_hints: BTreeMap<String, (String, bool)>,
    last_change: Option<(String, String)>,
    providers: Vec<(&'static str, &'static str)>,
    other_providers: Vec<ProviderView>,
    health: HealthView,
    sites: Vec<SiteOption>,
    history: Vec<HistoryEntry>,
}

impl SettingsPage {
    /// A field's value as typed or stored.
    fn value(&self, name: &str) -> &str {
        self.values
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// A field's error.
    fn error(&self, name: &str) -> Option<&str> {
        self.errors.get(name)
    }

    /// The last 4 characters of a stored secret.
    fn hint(&self, name: &str) -> Option<&str> {
        self.secret_hints.get(name).map(|(h, _)| h.as_str())
    }

    /// Whether a stored secret no longer opens.
    fn unreadable(&self, name: &str) -> bool {
        self.secret_hints.get(name).is_some_and(|(_, u)| *u)
    }
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
    let loaded = Loaded::fetch(&state, membership.subscription_id).await?;
    let mut values = FormValues::new();
    for (_, s) in &loaded.stored {
        values.extend(s.fields.clone());
    }
    values.entry("datadog_site".into()).or_insert_with(|| {
        if values_has_url(&loaded.stored) {
            "custom".into()
        } else {
            DatadogSite::ALL[0].code().into()
        }
    });
    values
        .entry("datadog_url".into())
        .or_insert_with(|| DatadogSite::ALL[0].intake_base_url());
    values
        .entry("splunk_sourcetype".into())
        .or_insert_with(|| "ezca:audit".into());
    values
        .entry("sentinel_cloud".into())
        .or_insert_with(|| "public".into());
    let status = match (query.saved, query.retried) {
        (Some(_), _) => Some(Status::plain("ok", "Settings saved.")),
        (None, Some(n)) => Some(Status::plain(
            "ok",
            format!("{n} parked event(s) are queued again and will be retried now."),
        )),
        (None, None) => None,
    };
    let form = FormState {
        membership,
        enabled: loaded.settings.as_ref().is_some_and(|s| s.enabled),
        provider: loaded
            .settings
            .as_ref()
            .map_or_else(|| Provider::Datadog.id().to_owned(), |s| s.provider.clone()),
        values,
        errors: FieldErrors::default(),
        status,
    };
    Ok(Html(render(&state, &user, form, &loaded).await?))
}

fn values_has_url(stored: &[(Provider, StoredProvider)]) -> bool {
    stored.iter().any(|(p, s)| {
        *p == Provider::Datadog
            && s.fields.contains_key("datadog_url")
            && !s.fields.contains_key("datadog_site")
    })
}

/// The subscription's stored SIEM state, read once per request.
struct Loaded {
    /// What is stored for every provider.
    stored: Vec<(Provider, StoredProvider)>,
    /// The switch, the chosen provider and who changed them last.
    settings: Option<store::siem::SettingsRow>,
}

impl Loaded {
    async fn fetch(state: &AppState, subscription_id: uuid::Uuid) -> Result<Loaded, WebError> {
        Ok(Loaded {
            stored: config::load_all(state.pool(), state.master_key(), subscription_id).await?,
            settings: store::siem::settings(state.pool(), subscription_id).await?,
        })
    }
}

/// The form as the page shows it: what was typed (or stored), its errors and the outcome.
struct FormState {
    membership: MembershipRow,
    enabled: bool,
    provider: String,
    values: FormValues,
    errors: FieldErrors,
    status: Option<Status>,
}

async fn render(
    state: &AppState,
    user: &CurrentUser,
    form: FormState,
    loaded: &Loaded,
) -> Result<String, WebError> {
    let FormState {
        membership,
        enabled,
        provider,
        mut values,
        errors,
        status,
    } = form;
    let sub = membership.subscription_id;
    let settings = loaded.settings.as_ref();
    let health = health_view(
        state,
        sub,
        settings.is_some_and(|s| s.enabled),
        settings.map_or(Provider::Datadog.id(), |s| s.provider.as_str()),
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
    for (p, s) in &loaded.stored {
        for secret in config::secret_fields(*p) {
            values.remove(secret.field);
            if let Some(stored) = s.secrets.get(secret.field) {
                secret_hints.insert(
                    secret.field.to_owned(),
                    (
                        stored.hint().to_owned(),
                        matches!(stored, StoredSecret::Unreadable(_)),
                    ),
                );
            }
        }
    }
    let open = status.is_some() || errors.count() > 0;
    let other_providers: Vec<ProviderView> = Provider::ALL
        .iter()
        .filter(|p| **p != Provider::Datadog)
        .map(|p| ProviderView {
            id: p.id(),
            label: p.label(),
            fields: provider_specs(*p)
                .iter()
                .map(|spec| FieldView {
                    name: spec.name,
                    label: spec.label,
                    kind: match spec.kind {
                        Kind::Text => "text",
                        Kind::Url => "url",
                        Kind::Secret => "password",
                        Kind::Check => "checkbox",
                        Kind::Select(_) => "select",
                        Kind::SecretLines => "textarea",
                    },
                    value: values.get(spec.name).cloned().unwrap_or_default(),
                    options: match spec.kind {
                        Kind::Select(options) => options,
                        _ => &[],
                    },
                    hint: spec.hint,
                    error: errors.get(spec.name).map(str::to_owned),
                    stored_hint: secret_hints.get(spec.name).map(|(h, _)| h.clone()),
                })
                .collect(),
        })
        .collect();
    let page = SettingsPage {
        layout: Layout::signed_in(user, &format!("Settings — {}", membership.name)),
        is_admin: membership.role().is_admin(),
        enabled,
        provider,
        values,
        errors,
        status,
        open,
        secret_hints,
        last_change: settings.map(|s| (s.updated_by_email.clone(), when(s.updated_at))),
        providers: Provider::ALL.iter().map(|p| (p.id(), p.label())).collect(),
        other_providers,
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

/// Answers with the page re-rendered for `form`.
async fn answer(
    state: &AppState,
    user: &CurrentUser,
    form: FormState,
    loaded: &Loaded,
    code: StatusCode,
) -> Result<Response, WebError> {
    Ok((code, Html(render(state, user, form, loaded).await?)).into_response())
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
    let mut values: FormValues = raw.into_iter().collect();
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
    let provider_raw = values.remove("provider").unwrap_or_default();
    let loaded = Loaded::fetch(&state, sub).await?;
    // The page again, as submitted, with field errors and a status.
    let again = |values: FormValues, errors: FieldErrors, status: Status| FormState {
        membership: membership.clone(),
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

    match action.as_str() {
        "test" => {
            let validated = match config::validate(provider, &values, &stored, state.egress(), true)
            {
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
                        crate::app::TEST_CONNECTION_LIMIT
                    ),
                );
                let form = again(values, FieldErrors::default(), status);
                return answer(&state, &user, form, &loaded, StatusCode::TOO_MANY_REQUESTS).await;
            }
            let Some(config) = validated.config else {
                return Err(WebError::Internal(anyhow::anyhow!(
                    "a complete validation produced no configuration"
                )));
            };
            let outcome = config
                .test_connection(
                    state.siem_client(),
                    state.egress(),
                    state.shared(),
                    sub,
                    state.hostname(),
                )
                .await;
            let result = match &outcome {
                Ok(_) => "succeeded".to_owned(),
                Err(failure) => format!("failed ({:?})", failure.kind),
            };
            let target = config::address_fields(provider)
                .iter()
                .filter_map(|(field, _)| validated.fields.get(*field))
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
            let held = match (&outcome, &session_digest) {
                (Ok(_), Some(digest)) => {
                    hold_tested(&state, sub, digest, provider, &values).await?
                }
                _ => false,
            };
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
                    secret: None,
                },
                Err(failure) => {
                    tracing::info!(subscription_id = %sub, kind = ?failure.kind, "test connection failed");
                    Status::plain("error", failure.message)
                }
            };
            let form = again(values, FieldErrors::default(), status);
            answer(&state, &user, form, &loaded, StatusCode::OK).await
        }
        "save" => {
            let mut values = values;
            if let Some(digest) = &session_digest {
                reuse_tested(&state, sub, digest, provider, &mut values).await?;
            }
            let validated =
                match config::validate(provider, &values, &stored, state.egress(), enabled) {
                    Ok(v) => v,
                    Err(errors) => {
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
                &state,
                &user,
                sub,
                enabled,
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

async fn save(
    state: &AppState,
    user: &CurrentUser,
    sub: uuid::Uuid,
    enabled: bool,
    before: Option<&store::siem::SettingsRow>,
    stored: &StoredProvider,
    validated: config::Validated,
) -> Result<(), WebError> {
    let provider = validated.provider;
    let changes = describe_changes(before, enabled, stored, &validated);
    let fields = serde_json::to_value(&validated.fields).map_err(anyhow::Error::from)?;

    let mut tx = state.pool().begin().await.map_err(store::Error::from)?;
    store::siem::upsert_settings(
        &mut tx,
        sub,
        enabled,
        provider.id(),
        user.user_id,
        &user.email,
    )
    .await?;
    store::siem::upsert_provider_fields(&mut tx, sub, provider.id(), &fields).await?;
    for name in &validated.removed_secrets {
        store::siem::delete_secret(&mut tx, sub, provider.id(), name).await?;
    }
    for (name, value, hint) in &validated.new_secrets {
        let sealed = state.master_key().seal(
            value.as_bytes(),
            &config::secret_context(sub, provider, name),
        );
        store::siem::upsert_secret(&mut tx, sub, provider.id(), name, &sealed, hint).await?;
    }
    if let Some(before) = before.filter(|b| b.enabled) {
        if !enabled || before.provider != provider.id() {
            store::delivery::switch_off(&mut tx, sub, &before.provider).await?;
        }
    }
    if enabled {
        store::delivery::ensure_destination(&mut tx, sub, provider.id()).await?;
    }
    store::siem::record_history(&mut *tx, sub, user.user_id, &user.email, "saved", &changes)
        .await?;
    tx.commit().await.map_err(store::Error::from)?;
    tracing::info!(subscription_id = %sub, user_id = %user.user_id, enabled, provider = provider.id(), "SIEM settings saved");
    Ok(())
}

/// How long secrets that passed Test Connection are held for Save changes.
pub const TESTED_SECRETS_MINUTES: i64 = 10;

fn tested_context(sub: uuid::Uuid, provider: Provider, digest: &[u8]) -> String {
    format!("{sub}/{}/tested/{}", provider.id(), hex::encode(digest))
}

/// After a green Test Connection: holds the secrets typed for it, sealed, bound to this
/// session and to the address fields as tested. Returns whether anything is held.
async fn hold_tested(
    state: &AppState,
    sub: uuid::Uuid,
    digest: &[u8],
    provider: Provider,
    values: &FormValues,
) -> Result<bool, WebError> {
    let typed: BTreeMap<&str, &str> = config::typed_secret_fields(provider)
        .iter()
        .filter_map(|(field, _)| {
            values
                .get(*field)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (*field, v))
        })
        .collect();
    if typed.is_empty() {
        return Ok(false);
    }
    let addresses: BTreeMap<&str, &str> = config::address_fields(provider)
        .iter()
        .map(|(field, _)| (*field, values.get(*field).map_or("", |v| v.trim())))
        .collect();
    let plain = serde_json::to_vec(&typed).map_err(anyhow::Error::from)?;
    let sealed = state
        .master_key()
        .seal(&plain, &tested_context(sub, provider, digest));
    store::siem::hold_tested_secrets(
        state.pool(),
        sub,
        digest,
        provider.id(),
        &serde_json::to_value(addresses).map_err(anyhow::Error::from)?,
        &sealed,
        chrono::Utc::now() + chrono::Duration::minutes(TESTED_SECRETS_MINUTES),
    )
    .await?;
    Ok(true)
}

/// Before Save changes: secret fields left blank take the secrets this session just tested,
/// if the address fields are still the ones they were tested against.
async fn reuse_tested(
    state: &AppState,
    sub: uuid::Uuid,
    digest: &[u8],
    provider: Provider,
    values: &mut FormValues,
) -> Result<(), WebError> {
    let Some(held) =
        store::siem::tested_secrets(state.pool(), sub, digest, provider.id(), chrono::Utc::now())
            .await?
    else {
        return Ok(());
    };
    let same_addresses = config::address_fields(provider).iter().all(|(field, _)| {
        held.addresses
            .get(*field)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            == values.get(*field).map_or("", |v| v.trim())
    });
    if !same_addresses {
        return Ok(());
    }
    let sealed = crate::crypto::Sealed {
        key_id: held.key_id,
        nonce: held.nonce,
        ciphertext: held.ciphertext,
    };
    let Some(secrets) = state
        .master_key()
        .open(&sealed, &tested_context(sub, provider, digest))
        .and_then(|plain| serde_json::from_slice::<BTreeMap<String, String>>(&plain).ok())
    else {
        return Ok(());
    };
    for (field, secret) in secrets {
        let blank = values.get(&field).is_none_or(|v| v.trim().is_empty());
        if blank {
            values.insert(field, secret);
        }
    }
    Ok(())
}

/// Sentences for the history: what this save changes. Never a secret itself.
fn describe_changes(
    before: Option<&store::siem::SettingsRow>,
    enabled: bool,
    stored: &StoredProvider,
    new: &config::Validated,
) -> Vec<String> {
    let mut changes = Vec::new();
    let was_enabled = before.is_some_and(|b| b.enabled);
    if was_enabled != enabled {
        changes.push(if enabled {
            "Send Audit Logs to SIEM turned on".to_owned()
        } else {
            "Send Audit Logs to SIEM turned off".to_owned()
        });
    }
    if before.map(|b| b.provider.as_str()) != Some(new.provider.id()) {
        changes.push(format!("SIEM Provider set to {}", new.provider.label()));
    }
    let names: std::collections::BTreeSet<&String> =
        stored.fields.keys().chain(new.fields.keys()).collect();
    for name in names {
        let old = stored.fields.get(name);
        let now = new.fields.get(name);
        if old != now {
            changes.push(format!(
                "{} changed from {} to {}",
                field_label(name),
                old.map_or("none", String::as_str),
                now.map_or("none", String::as_str)
            ));
        }
    }
    for (name, value, hint) in &new.new_secrets {
        let field = config::secret_fields(new.provider)
            .iter()
            .find(|s| s.name == *name)
            .map_or(*name, |s| s.field);
        let label = field_label(field);
        changes.push(match stored.secrets.get(field) {
            Some(old) if old.usable() == Some(value.as_str()) => {
                format!("{label} entered again (unchanged)")
            }
            Some(_) => format!("{label} replaced (now ending in {hint})"),
            None => format!("{label} set (ending in {hint})"),
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
