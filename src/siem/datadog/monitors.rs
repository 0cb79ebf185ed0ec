//! One-click Datadog monitors: one `log alert` monitor per High catalog event of a
//! subscription, with the seed's query `service:EZCA @EventID:<id>` (scoped to the
//! subscription), tagged `managed-by:cloudpki`. Idempotent: the monitors cloudpki already made
//! are listed by tag first and only the missing ones are created.

use http::header::{HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::domain::{
    datadog::{DatadogApiKey, DatadogApiUrl, DatadogAppKey, DatadogSite},
    events::{alert_query, catalog, Criticality},
};
use crate::siem::{egress::EgressPolicy, wire};

/// The tag on every monitor cloudpki creates.
pub const MANAGED_TAG: &str = "managed-by:cloudpki";

/// A monitor of one High event, found or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorLink {
    pub event_id: u32,
    pub summary: &'static str,
    pub id: i64,
    /// Its page in the site's web app, when the site is known.
    pub url: Option<String>,
    /// Made by this call (not found already).
    pub created: bool,
}

/// Where and with what keys to call the monitors API.
pub struct MonitorsApi<'a> {
    pub client: &'a reqwest::Client,
    pub egress: &'a EgressPolicy,
    pub base: &'a DatadogApiUrl,
    pub api_key: &'a DatadogApiKey,
    pub app_key: &'a DatadogAppKey,
    pub site: Option<DatadogSite>,
}

/// Ensures the monitors with what is stored for a subscription's Datadog destination: the
/// API URL (from the site, or typed), the API key and the application key. `Err` says what is
/// missing and what to do.
pub async fn ensure_from_stored(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    stored: &crate::siem::provider::StoredProvider,
    subscription_id: Uuid,
) -> Result<Vec<MonitorLink>, String> {
    let settings: super::Settings =
        crate::siem::provider::settings_of(&stored.settings).unwrap_or_default();
    let key = |field: &str| {
        stored
            .secrets
            .get(field)
            .and_then(crate::siem::provider::StoredSecret::usable)
    };
    match (
        settings.api_url(),
        key("datadog_api_key").and_then(|k| DatadogApiKey::parse(k).ok()),
        key("datadog_app_key").and_then(|k| DatadogAppKey::parse(k).ok()),
    ) {
        (Some(base), Some(api_key), Some(app_key)) => {
            MonitorsApi {
                client,
                egress,
                base: &base,
                api_key: &api_key,
                app_key: &app_key,
                site: settings.site(),
            }
            .ensure(subscription_id)
            .await
        }
        (None, _, _) => Err("Choose your Datadog site (or enter the API URL) and save first.".to_owned()),
        (_, None, _) => Err("Save a Datadog API key first.".to_owned()),
        (_, _, None) => Err("Enter an application key with the monitors_write permission under Application key (for Create monitors), save, then press Create monitors.".to_owned()),
    }
}

/// The tag that ties a monitor to a subscription.
fn subscription_tag(subscription_id: Uuid) -> String {
    format!("cloudpki-subscription:{subscription_id}")
}

/// The monitor's log query for one event of one subscription.
fn monitor_query(subscription_id: Uuid, search: &str) -> String {
    format!(
        "logs(\"{search} @SubscriptionId:{subscription_id}\").index(\"*\").rollup(\"count\").last(\"5m\") > 0"
    )
}

impl MonitorsApi<'_> {
    fn request(&self, method: reqwest::Method) -> Result<reqwest::RequestBuilder, String> {
        let endpoint = self.base.monitors_endpoint()?;
        self.egress
            .check_url(&endpoint)
            .map_err(|e| format!("The API URL is not allowed: {e}"))?;
        let mut api = HeaderValue::from_str(self.api_key.expose_secret())
            .map_err(|_| "The API key is not a valid header value.".to_owned())?;
        api.set_sensitive(true);
        let mut app = HeaderValue::from_str(self.app_key.expose_secret())
            .map_err(|_| "The application key is not a valid header value.".to_owned())?;
        app.set_sensitive(true);
        Ok(self
            .client
            .request(method, endpoint)
            .header("DD-API-KEY", api)
            .header("DD-APPLICATION-KEY", app))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let reply = wire::send(request).await.map_err(|e| {
            format!("Datadog's API could not be reached ({e}). Check the API URL; it is filled in from the Datadog site.")
        })?;
        let detail = wire::body_excerpt(&reply.body, 300);
        match reply.status {
            200..=299 => serde_json::from_str(&reply.body).map_err(|_| {
                "Datadog's API answered with something that is not JSON; check the API URL."
                    .to_owned()
            }),
            401 => Err(format!("Datadog refused the API key or the application key (HTTP 401){detail}. Check both keys belong to this Datadog site.")),
            403 => Err(format!("Datadog refused to create monitors (HTTP 403){detail}: the application key lacks the monitors_write permission, is scoped, or one of the keys is not valid for this site. Use an unscoped application key of a user who may write monitors, with an API key of the same organisation.")),
            404 => Err(format!("The API URL has no monitors API (HTTP 404){detail}. Check the API URL, for example https://api.datadoghq.com.")),
            429 => Err(format!("Datadog's rate limit was reached (HTTP 429){detail}. Try again in a minute.")),
            status => Err(format!("Datadog's API answered HTTP {status}{detail}.")),
        }
    }

    /// Makes sure every High catalog event of the subscription has its monitor; returns them
    /// in catalog order.
    pub async fn ensure(&self, subscription_id: Uuid) -> Result<Vec<MonitorLink>, String> {
        let tag = subscription_tag(subscription_id);
        let listed = self
            .call(
                self.request(reqwest::Method::GET)?
                    .query(&[("monitor_tags", MANAGED_TAG)]),
            )
            .await?;
        let existing: Vec<&Value> = listed
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut links = Vec::new();
        for event in catalog()
            .iter()
            .filter(|e| e.criticality == Criticality::High)
        {
            let search = alert_query(event.id);
            let query = monitor_query(subscription_id, &search);
            let found = existing.iter().find(|m| {
                let tags: Vec<&str> = m["tags"]
                    .as_array()
                    .map(|t| t.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                tags.contains(&tag.as_str())
                    && m["query"].as_str().is_some_and(|q| q.contains(&search))
            });
            let (id, created) = match found.and_then(|m| m["id"].as_i64()) {
                Some(id) => (id, false),
                None => {
                    let body = json!({
                        "name": format!("EZCA: {} (Event ID {})", event.summary, event.id),
                        "type": "log alert",
                        "query": query,
                        "message": format!(
                            "{} (Event ID {}) was recorded in cloudpki subscription {subscription_id}. Sent by cloudpki's Create monitors.",
                            event.summary, event.id
                        ),
                        "tags": [MANAGED_TAG, tag, format!("event_id:{}", event.id)],
                        "priority": 2,
                        "options": {
                            "thresholds": {"critical": 0},
                            "enable_logs_sample": true,
                            "notify_no_data": false
                        }
                    });
                    let made = self
                        .call(
                            self.request(reqwest::Method::POST)?
                                .header(CONTENT_TYPE, "application/json")
                                .body(body.to_string()),
                        )
                        .await?;
                    let id = made["id"].as_i64().ok_or_else(|| {
                        "Datadog created a monitor but did not say its id.".to_owned()
                    })?;
                    (id, true)
                }
            };
            links.push(MonitorLink {
                event_id: event.id.get(),
                summary: event.summary,
                id,
                url: self.site.map(|s| s.monitor_url(id)),
                created,
            });
        }
        Ok(links)
    }
}
