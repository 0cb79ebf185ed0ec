//! A subscription's Settings page: Advanced Settings → Send Audit Logs to SIEM, SIEM Provider,
//! the provider's fields, Test Connection and Save changes (DESIGN.md, "Contract: pages").
//!
//! One form, two buttons (`action=test` / `action=save`), so the page works without JavaScript.
//! Test Connection sends a real test event with the values in the form and never saves; Save
//! changes is for admins, stores the settings (secrets sealed), writes a history entry and
//! redirects (post/redirect/get). Secrets are write-only: never rendered back; a blank secret
//! field keeps the stored one. Provider rules live in `siem::provider`, saving and the buttons'
//! effects in the settings service (`crate::settings`); this module only collects the form and
//! renders the page: `page.rs` shows it, `submit.rs` handles Test Connection and Save changes,
//! `buttons.rs` the administrators' buttons.

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
    domain::{
        destination::{DestinationKey, DestinationName, DestinationNo, MAX_DESTINATIONS},
        events::{catalog, Criticality, EventFilter, ReplayWindow},
    },
    settings::{
        actions::{
            admin_or_denied, ensure_monitors, pause_or_resume_export, replay_events,
            replay_refusal, retry_parked_events, AdminAction, MonitorsOutcome, PauseOutcome,
            EXPORT_OFF_NOTHING_TO_PAUSE,
        },
        expiry::{expiry_field, parse_expiries, AbsentExpiry},
        save::{save, Export, Target},
        tested::{hold_tested, reuse_tested},
    },
    siem::{
        provider::{
            self, fills_focus, Choice, Context, FieldErrors, FieldKind, FormValues, StoredProvider,
            StoredSecret,
        },
        Provider,
    },
    state::AppState,
    store::{self, accounts::MembershipRow, siem::Slot},
};

/// How many history entries the page lists.
mod buttons;
mod page;
mod submit;

use buttons::{create_monitors, pause, remove_destination, replay, resume, retry_parked};
use page::{answer, show, stored_form};
use submit::submit;

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
        .route(
            "/subscriptions/{id}/settings/remove",
            axum::routing::post(remove_destination),
        )
}

/// Which destination a settings request is about: `?destination=N`, the first when absent,
/// or `?destination=new` for the form that adds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Number(DestinationNo),
    New,
}

/// The `destination` query parameter of the page and its forms.
#[derive(Deserialize, Default)]
struct DestinationQuery {
    #[serde(default)]
    destination: Option<String>,
}

impl Which {
    /// Reads `?destination=`; anything else than a number or `new` is a page that does not
    /// exist.
    fn parse(raw: Option<&str>) -> Result<Which, WebError> {
        match raw.map(str::trim) {
            None | Some("") => Ok(Which::Number(DestinationNo::FIRST)),
            Some("new") => Ok(Which::New),
            Some(n) => DestinationNo::parse(n)
                .map(Which::Number)
                .map_err(|_| WebError::NotFound),
        }
    }

    /// The query that names it on a URL (`""` for the first destination, as before).
    fn query(self) -> String {
        match self {
            Which::Number(n) => n.query().unwrap_or_default(),
            Which::New => "destination=new".to_owned(),
        }
    }

    /// The settings page's URL for it, with `extra` query parameters, at Advanced Settings.
    fn url(self, sub: uuid::Uuid, extra: &str) -> String {
        self.url_at(sub, extra, "advanced")
    }

    /// [`Which::url`] at the element `anchor` (`health`: the delivery health panel).
    fn url_at(self, sub: uuid::Uuid, extra: &str, anchor: &str) -> String {
        let query: Vec<String> = [self.query(), extra.to_owned()]
            .into_iter()
            .filter(|q| !q.is_empty())
            .collect();
        if query.is_empty() {
            format!("/subscriptions/{sub}/settings#{anchor}")
        } else {
            format!("/subscriptions/{sub}/settings?{}#{anchor}", query.join("&"))
        }
    }

    /// What a form's action adds to its path (`?destination=2`).
    fn suffix(self) -> String {
        let query = self.query();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

/// A destination in the page's list.
struct DestinationItem {
    number: DestinationNo,
    label: String,
    state: &'static str,
    current: bool,
    url: String,
}

pub(crate) use crate::settings::destinations::destination_label;

/// A listed destination's state, as the page words it.
fn destination_state(row: &store::siem::DestinationRow) -> &'static str {
    match row.state() {
        "off" => "Off",
        "paused" => "Paused",
        "failing" => "Failing",
        _ => "On",
    }
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
    /// For a select whose options fill other fields: the field to focus when one fills nothing.
    fills_focus: &'static str,
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
    /// The chosen provider's own buttons (Datadog: Create monitors).
    provider_actions: &'static [provider::Action],
    /// The hidden `settings_version` of the form.
    version: String,
    errors: FieldErrors,
    status: Option<Status>,
    open: bool,
    last_change: Option<(String, String)>,
    providers: Vec<ProviderView>,
    health: HealthView,
    history: Vec<HistoryEntry>,
    /// On a provider switch: (events the current destination still owes, its label).
    carry_from: Option<(i64, &'static str)>,
    /// What the forms' actions add to their paths to name this destination.
    suffix: String,
    /// The destination shown: `None` while adding one.
    number: Option<DestinationNo>,
    /// How the page names it.
    destination_title: String,
    /// Every destination, to switch between them (shown from two on, and while adding).
    destinations: Vec<DestinationItem>,
    /// Whether another destination may be added.
    can_add: bool,
    /// Show the destination name field (every destination but a lone, unnamed first one).
    show_name: bool,
    /// Removing it was asked: the events it still owes, to confirm.
    confirm_remove: Option<i64>,
    /// An administrator may remove it (any destination but the first).
    removable: bool,
    /// The name field's value.
    destination_name: String,
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
    destination: Option<String>,
    /// Asks to confirm removing the destination.
    #[serde(default)]
    remove: Option<String>,
    /// A destination was removed: how many events it still owed.
    #[serde(default)]
    removed: Option<i64>,
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

/// The subscription's stored SIEM state, read once per request.
#[derive(Clone)]
struct Loaded {
    /// The destination shown.
    which: Which,
    /// The key its settings are stored under (for a new one: the number it will get).
    key: DestinationKey,
    /// Every destination of the subscription.
    destinations: Vec<store::siem::DestinationRow>,
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

    /// Reads what the page shows of destination `which`: `NotFound` for a number that was
    /// never added or was removed.
    async fn fetch(
        state: &AppState,
        subscription_id: uuid::Uuid,
        which: Which,
    ) -> Result<Loaded, WebError> {
        let destinations = store::siem::destinations(state.pool(), subscription_id).await?;
        let key = match which {
            Which::Number(n) => DestinationKey::new(subscription_id, n),
            Which::New => DestinationKey::new(
                subscription_id,
                store::siem::next_destination(state.pool(), subscription_id).await?,
            ),
        };
        if which == Which::New {
            return Ok(Loaded {
                which,
                key,
                destinations,
                stored: crate::settings::open_all(state.master_key(), key, &[], &[]),
                settings: None,
                history: Vec::new(),
                panel: store::page::PanelRows::default(),
            });
        }
        let settings = store::siem::settings(state.pool(), key).await?;
        if settings.is_none() && !key.number.is_first() {
            return Err(WebError::NotFound);
        }
        let provider = settings
            .as_ref()
            .map_or(Provider::first().id(), |s| s.provider.as_str());
        let panel = store::page::panel(state.pool(), key, provider, PANEL_ROWS).await?;
        Ok(Loaded {
            which,
            key,
            destinations,
            stored: crate::settings::load_all(state.pool(), state.master_key(), key).await?,
            history: store::siem::history(state.pool(), key, HISTORY_SHOWN).await?,
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
    /// The version of the settings this form was drawn from (`settings_version`): a save from
    /// it is refused when someone saved since.
    version: String,
    /// Removing the destination was asked: the events it still owes, to confirm.
    confirm_remove: Option<i64>,
}
