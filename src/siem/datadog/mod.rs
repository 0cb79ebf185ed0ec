//! Datadog provider: audit logs → Datadog Logs intake.
//!
//! Contract (Datadog "Send logs" API, v2): `POST <intake>/api/v2/logs` with headers
//! `DD-API-KEY`, `Content-Type: application/json` and `Content-Encoding: gzip`; the body is a
//! JSON array of log objects; success is `202 {}`. Limits, enforced before sending:
//!
//! - at most [`MAX_BATCH_EVENTS`] logs per request;
//! - less than [`MAX_PAYLOAD_BYTES`] per request, measured **uncompressed** (else 413);
//! - less than [`MAX_LOG_BYTES`] per log (Datadog would truncate silently; we truncate
//!   `details` ourselves, keep every identifying field and mark the log `Truncated: true`);
//! - a `date` at most [`MAX_LOG_AGE`] old (older logs are dropped by Datadog although the
//!   request gets 202): a late event is sent with `date` = now, `OriginalDate` = its own time
//!   and the tag `late:true`. Same for a date more than [`MAX_LOG_FUTURE`] ahead.
//!
//! Each log has `service: "EZCA"`, `ddsource: "ezca"`, `hostname`, `status` (High → error,
//! Medium → warning, Low → info), `message`, `ddtags`, `date` (RFC 3339) and the attributes
//! `EventID` (number), `EventSummary`, `Criticality`, `SubscriptionId`, `EventUuid`, `Actor`,
//! `details`, so `service:EZCA @EventID:4888` finds it (see DESIGN.md).
//!
//! Status classification is [`classify`]; 401/403/404/3xx keep events queued and mark the
//! destination failing, 400 isolates and parks, 413 splits, everything else is retried.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::datadog::{
    DatadogApiKey, DatadogApiUrl, DatadogAppKey, DatadogIntakeUrl, DatadogSite,
};
use crate::domain::events::{alert_query, EventId};
use crate::siem::egress::{BoxFuture, EgressPolicy, REQUEST_TIMEOUT};
use crate::siem::explain::{self, failure, Hints};
use crate::siem::provider::{
    needed, settings_of, stored, Action, BuildError, Choice, Context, Explorer, Field, FieldKind,
    FormCheck, FormValues, Provider, ProviderSpec, Secrets,
};
use crate::siem::wire::{self, rfc3339, Framing};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};
use serde::{Deserialize, Serialize};

mod health;
pub mod monitors;
mod request;
mod service;

pub use health::*;
pub use request::*;
pub use service::*;

/// Most log objects Datadog accepts in one request.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Largest request body Datadog accepts, uncompressed, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 5_000_000;

/// Largest single log Datadog keeps whole, in bytes of JSON.
pub const MAX_LOG_BYTES: usize = 1_000_000;

/// Oldest `date` Datadog accepts.
pub const MAX_LOG_AGE: Duration = Duration::from_secs(18 * 3600);

/// From this age on, a log is re-timed: an hour's margin under [`MAX_LOG_AGE`] for the time a
/// request spends in flight and in retries (the check runs when the request is built).
pub const LATE_AFTER: Duration = Duration::from_secs(17 * 3600);

/// Furthest future `date` Datadog accepts.
pub const MAX_LOG_FUTURE: Duration = Duration::from_secs(2 * 3600);

/// `service` of every log; customers' alert queries rely on it.
pub const SERVICE: &str = "EZCA";

/// `ddsource` of every log.
pub const SOURCE: &str = "ezca";

/// Appended to `details` when a log had to be cut to fit [`MAX_LOG_BYTES`].
pub const TRUNCATION_MARKER: &str = "…[truncated by cloudpki: log exceeded 1 MB]";

/// Longest `Actor` kept when even the truncated `details` do not make a log fit, in chars.
const MAX_ACTOR_CHARS_WHEN_TRUNCATED: usize = 1024;

/// Longest excerpt of an intake's error body kept in a reason, in chars.
const MAX_REASON_BODY_CHARS: usize = 200;

/// A validated Datadog destination: it cannot lack a URL or an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatadogConfig {
    /// The site chosen on the page; `None` when only a custom URL is known.
    pub site: Option<DatadogSite>,
    pub url: DatadogIntakeUrl,
    pub api_key: DatadogApiKey,
}

impl DatadogConfig {
    /// The site of this destination: as chosen, else recognised from the intake host.
    pub fn effective_site(&self) -> Option<DatadogSite> {
        self.site.or_else(|| self.url.site())
    }
}

/// Datadog's entry in the registry.
pub static SPEC: ProviderSpec = ProviderSpec {
    id: "datadog",
    label: "Datadog",
    fields: &[
        Field::plain(
            "datadog_site",
            "Datadog site",
            FieldKind::Select(site_choices),
            "The site shown at the top right of Datadog's docs and in your Datadog address. Choosing one fills in its intake and API URLs.",
        )
        .with_default("US1"),
        Field::address(
            "datadog_url",
            "Logs intake URL",
            "For example https://http-intake.logs.datadoghq.com; the full …/api/v2/logs URL from Datadog's docs works too. Change it only to go through a proxy or pipeline.",
        )
        .with_default("https://http-intake.logs.datadoghq.com"),
        Field::secret(
            "datadog_api_key",
            "API key",
            "api_key",
            "An API key from Organization Settings → API Keys (not an application key).",
        )
        .with_placeholder("32 characters, 0-9 and a-f"),
        Field::address(
            "datadog_api_url",
            "API URL (for Create monitors)",
            "The site's API, filled in from the site, for example https://api.datadoghq.com. Only Create monitors uses it.",
        ),
        Field::secret(
            "datadog_app_key",
            "Application key (for Create monitors)",
            "app_key",
            "Optional: an application key with the monitors_write permission (Organization Settings → Application Keys), unscoped, to create the recommended monitors in one click.",
        )
        .with_placeholder("40 characters, 0-9 and a-f"),
    ],
    parse,
    build,
    form,
    generated: None,
    // One range is one request: the intake takes at most 1,000 logs per call.
    range_events: MAX_BATCH_EVENTS as i64,
    explorer: Some(explorer),
    actions: &[Action {
        route: "monitors",
        id: "create-monitors",
        label: "Create monitors",
        hint: "One Datadog log alert monitor per High event, with the stored API URL and keys; pressing it again creates no duplicates.",
    }],
};

/// The Log Explorer of the stored site (US1 when none is known yet, and the page says so).
fn explorer(settings: &Value) -> Explorer {
    let site = stored_site(settings);
    let shown = site.unwrap_or(DatadogSite::ALL[0]);
    let label = shown.label();
    Explorer {
        where_links_go: if site.is_some() {
            format!("Links open the Log Explorer of your Datadog site ({label}).")
        } else {
            format!("Links open the Log Explorer of {label}; choose your Datadog site in Settings to link to yours.")
        },
        button: "Open in Log Explorer",
        link: Box::new(move |query| shown.log_explorer_url(query)),
    }
}

/// Datadog, as a provider handle.
pub fn provider() -> Provider {
    Provider::of(&SPEC)
}

fn site_choices() -> Vec<Choice> {
    let mut choices: Vec<Choice> = DatadogSite::ALL
        .iter()
        .map(|site| {
            Choice::new(site.code(), site.label())
                .filling("datadog_url", site.intake_base_url())
                .filling("datadog_api_url", site.api_base_url())
        })
        .collect();
    choices.push(Choice::new("custom", "Custom URL (proxy or pipeline)"));
    choices
}

/// What is stored: the site as chosen (none for a custom URL) and the intake URL.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub site: Option<DatadogSite>,
    pub url: Option<DatadogIntakeUrl>,
    /// The API base for monitors, when it is not the site's own.
    pub api_url: Option<DatadogApiUrl>,
}

impl Settings {
    /// The site's API base (as chosen, or recognised from the intake URL).
    fn default_api_url(&self) -> Option<String> {
        self.site
            .or_else(|| self.url.as_ref().and_then(DatadogIntakeUrl::site))
            .map(DatadogSite::api_base_url)
    }

    /// The API base Create monitors calls.
    pub fn api_url(&self) -> Option<DatadogApiUrl> {
        self.api_url.clone().or_else(|| {
            self.default_api_url()
                .and_then(|u| DatadogApiUrl::parse(&u).ok())
        })
    }

    /// The site whose web app shows the monitors.
    pub fn site(&self) -> Option<DatadogSite> {
        self.site
            .or_else(|| self.url.as_ref().and_then(DatadogIntakeUrl::site))
    }
}

fn parse(check: &mut FormCheck<'_>) -> Value {
    let site = match check.get("datadog_site").as_str() {
        "" | "custom" => None,
        code => match DatadogSite::parse(code) {
            Ok(site) => Some(site),
            Err(e) => {
                check.error("datadog_site", e.to_string());
                None
            }
        },
    };
    // Without JavaScript the select cannot fill the URL in: a blank URL means the site's.
    let url_text = match (check.get("datadog_url"), site) {
        (text, Some(site)) if text.is_empty() => site.intake_base_url(),
        (text, _) => text,
    };
    let egress = check.egress;
    let url = check.required_text(
        &url_text,
        "datadog_url",
        "Enter the logs intake URL, or choose a Datadog site.",
        |text| {
            let url = DatadogIntakeUrl::parse(text).map_err(|e| e.to_string())?;
            egress
                .check_url(&url.logs_endpoint())
                .map_err(|e| e.to_string())?;
            Ok(url)
        },
    );
    check.secret(
        "datadog_api_key",
        "Enter the API key from Datadog (Organization Settings → API Keys).",
        |raw| {
            let key = DatadogApiKey::parse(raw).map_err(|e| e.to_string())?;
            let (text, hint) = (key.expose_secret().to_owned(), key.last4().to_owned());
            Ok((key, text, hint))
        },
    );
    let mut settings = Settings {
        site,
        url,
        api_url: None,
    };
    // The site's own API is not stored: it follows the site.
    let api_text = check.get("datadog_api_url");
    if !api_text.is_empty() && Some(&api_text) != settings.default_api_url().as_ref() {
        settings.api_url = check.optional("datadog_api_url", |text| {
            let url = DatadogApiUrl::parse(text)?;
            egress
                .check_url(&url.monitors_endpoint()?)
                .map_err(|e| e.to_string())?;
            Ok(url)
        });
    }
    // The application key is optional: checked when typed or kept.
    if !check.get("datadog_app_key").is_empty() || check.stored_secret("datadog_app_key").is_some()
    {
        check.secret("datadog_app_key", "", |raw| {
            let key = DatadogAppKey::parse(raw)?;
            let (text, hint) = (key.expose_secret().to_owned(), key.last4().to_owned());
            Ok((key, text, hint))
        });
    }
    stored(&settings)
}

fn build(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, BuildError> {
    let settings: Settings = settings_of(settings)?;
    let key = needed(secrets.get("api_key"), "the API key")?;
    Ok(Box::new(DatadogDestination {
        config: DatadogConfig {
            site: settings.site,
            url: needed(settings.url, "the logs intake URL")?,
            api_key: DatadogApiKey::parse(key).map_err(BuildError::invalid)?,
        },
        hostname: context.hostname.to_owned(),
    }))
}

fn form(settings: &Value) -> FormValues {
    let settings: Settings = settings_of(settings).unwrap_or_default();
    let mut form = FormValues::new();
    match (settings.site, &settings.url) {
        (Some(site), _) => form.insert("datadog_site".into(), site.code().into()),
        (None, Some(_)) => form.insert("datadog_site".into(), "custom".into()),
        (None, None) => None,
    };
    if let Some(api) = settings
        .api_url
        .as_ref()
        .map(|u| u.as_str().to_owned())
        .or_else(|| settings.default_api_url())
    {
        form.insert("datadog_api_url".into(), api);
    }
    if let Some(url) = settings.url {
        form.insert("datadog_url".into(), url.as_str().into());
    }
    form
}

/// The Datadog site of stored settings (as chosen, else recognised from the intake URL), for
/// links into its Log Explorer.
pub fn stored_site(settings: &Value) -> Option<DatadogSite> {
    let settings: Settings = settings_of(settings).ok()?;
    settings
        .site
        .or_else(|| settings.url.and_then(|u| u.site()))
}

/// A configured Datadog destination, as the forwarder holds it.
#[derive(Debug, Clone)]
pub struct DatadogDestination {
    pub config: DatadogConfig,
    /// The `hostname` of every log: the name of this cloudpki deployment.
    pub hostname: String,
}

impl SiemDestination for DatadogDestination {
    fn provider(&self) -> &'static str {
        "Datadog"
    }

    fn build_batches(&self, logs: &[AuditLog], now: DateTime<Utc>) -> Vec<Batch> {
        build_batches(logs, &self.hostname, now)
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Disposition, SendError>> {
        Box::pin(send_batch(client, egress, &self.config, batch))
    }

    fn test_connection<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        subscription_id: Uuid,
    ) -> BoxFuture<'a, Result<TestSuccess, TestFailure>> {
        Box::pin(test_connection(
            client,
            egress,
            &self.config,
            subscription_id,
            &self.hostname,
        ))
    }
}

#[cfg(test)]
mod tests;
