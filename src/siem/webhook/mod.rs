//! Custom webhook provider: audit logs → any HTTPS receiver, signed per Standard Webhooks 1.0.
//!
//! Contract (Standard Webhooks, `spec/standard-webhooks.md`): `POST <url>` with
//!
//! - `webhook-id`: `msg_` + 32 hex digits, derived from the batch's event UUIDs
//!   ([`webhook_id`]); a retry of the same batch carries the same id, the receiver's dedupe key;
//! - `webhook-timestamp`: unix seconds of this attempt (new on every retry, so a receiver can
//!   refuse replays older than its tolerance, typically 5 minutes);
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with
//!   the base64-decoded part of each `whsec_` secret; during a rotation one signature per
//!   secret, space-separated, current first ([`sign`]);
//! - `Content-Type: application/json`, then the user's extra headers. No `Content-Encoding`:
//!   receivers verify the exact bytes they read, so the body goes out as it was signed.
//!
//! The body is minified JSON, in the spec's recommended payload shape:
//! `{"type":"ezca.audit_events","timestamp":"<RFC 3339>","data":{"events":[…]}}`, where
//! `timestamp` is the latest event time of the batch and each event holds `EventID` (number),
//! `EventSummary`, `Criticality`, `SubscriptionId`, `EventUuid`, `Actor`, `details`, `date`
//! (RFC 3339) and `message` (see DESIGN.md). The body depends on the events alone, so a batch
//! rebuilt for a retry is byte-identical. Test Connection sends the same shape with `type`
//! `ezca.test` and one event, `EventID` 0.
//!
//! Limits, enforced before sending: at most [`MAX_BATCH_EVENTS`] events and
//! [`MAX_BATCH_BYTES`] bytes per request; an event over [`MAX_EVENT_BYTES`] has its `details`
//! cut (marked `Truncated: true`, identity kept) so it always fits.
//!
//! Timeout: requests run under the shared SIEM client's
//! [`REQUEST_TIMEOUT`](crate::siem::egress::REQUEST_TIMEOUT) (10 s). The spec recommends giving
//! receivers 15–30 s; a slower receiver times out, which is retried like any timeout.
//!
//! Status classification is [`classify`]: 2xx delivered; 410 gone (the forwarder turns the
//! destination off and tells the admins); 408, 429, 5xx retried honouring `Retry-After`; 413
//! split; 400/422 isolate and park; 3xx (never followed), 401/403, 404 and other 4xx keep the
//! events queued and mark the destination failing.

use std::fmt::Write as _;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::webhook::{ExtraHeaders, SigningSecret, WebhookUrl};
use crate::siem::egress::{BoxFuture, EgressPolicy, REQUEST_TIMEOUT};
use crate::siem::explain::{self, failure, Hints};
use crate::siem::provider::{
    hide_query_values, needed, settings_of, stored, BuildError, Context, Field, FieldKind,
    FormCheck, FormValues, GeneratedSecret, ProviderSpec, Secrets, RANGE_EVENTS,
};
use crate::siem::wire::{self, rfc3339};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};
use serde::{Deserialize, Serialize};

mod health;
mod request;
mod service;

pub use health::*;
pub use request::*;
pub use service::*;

/// Most events in one request.
pub const MAX_BATCH_EVENTS: usize = 100;

/// Largest request body, in bytes.
pub const MAX_BATCH_BYTES: usize = 1_000_000;

/// Largest single event, in bytes of JSON; a larger one has its `details` truncated.
pub const MAX_EVENT_BYTES: usize = 100_000;

/// `type` of a batch of audit events.
pub const EVENT_TYPE: &str = "ezca.audit_events";

/// `type` of the Test Connection request.
pub const TEST_EVENT_TYPE: &str = "ezca.test";

/// Header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";

/// Header carrying the attempt time, unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";

/// Header carrying the space-separated signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Version tag of an HMAC-SHA256 signature.
pub const SIGNATURE_VERSION: &str = "v1";

/// Tolerance a receiver should allow between `webhook-timestamp` and its clock (replay guard).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Replaces the cut end of `details` when an event exceeded [`MAX_EVENT_BYTES`].
pub const TRUNCATION_MARKER: &str = "…[truncated by cloudpki: event exceeded 100 kB]";

/// Longest `Actor` kept when an event has to be truncated, in chars.
/// Longest excerpt of a receiver's answer kept in a reason, in chars.
const MAX_REASON_BODY_CHARS: usize = 200;

/// Hex digits of the SHA-256 digest kept in a webhook id (128 bits).
const ID_HEX_DIGITS: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// A validated webhook destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: WebhookUrl,
    pub headers: ExtraHeaders,
    /// Current secret first, then previous ones still in their rotation overlap window. A
    /// destination without any secret sends nothing (every send is `AuthFailed`).
    pub secrets: Vec<SigningSecret>,
}

const NO_SECRET_REASON: &str = "The webhook destination has no signing secret, so nothing was sent; generate one on the settings page.";

/// How long a replaced webhook signing secret still signs (receivers switch over meanwhile).
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// The signed webhook's entry in the registry.
pub static SPEC: ProviderSpec = ProviderSpec {
    id: "webhook",
    label: "Signed webhook",
    fields: &[
        Field::address("webhook_url", "Webhook URL", "The https address that receives the signed events.").sealed("url"),
        Field {
            kind: FieldKind::SecretLines,
            ..Field::secret("webhook_headers", "Extra headers", "headers", "Optional; one Name: value per line, e.g. Authorization: Bearer …. Stored sealed; leave blank to keep the stored headers.")
        },
        Field::plain("webhook_clear_headers", "Remove the extra headers", FieldKind::Check, "Sends no extra headers from now on."),
        Field::plain("webhook_rotate", "Rotate the signing secret", FieldKind::Check, "Generates a new signing secret on save and shows it once; the old one keeps signing for 24 hours so receivers can switch over."),
        Field {
            hint: "Generated by the portal and shown once: on the first Test Connection or save, and on rotation. See the README for how receivers verify the webhook-signature.",
            ..Field::internal("webhook_secret", "Signing secret", "signing_secret")
        },
        Field {
            hint: "A rotated-out secret keeps signing for 24 hours.",
            ..Field::internal("webhook_secret_previous", "Previous signing secret", "signing_secret_previous")
        },
        Field::plain("webhook_previous_until", "Previous signing secret valid until", FieldKind::Internal, ""),
    ],
    parse,
    build,
    form,
    generated: Some(GeneratedSecret {
        field: "webhook_secret",
        one_shot: &["webhook_rotate", "webhook_clear_headers"],
        unreadable_fix: "open Settings, tick \"Rotate the signing secret\" and save, then give the new secret to the receiver",
    }),
    range_events: RANGE_EVENTS,
    explorer: None,
    actions: &[],
};

/// What is stored: the URL as shown (a query's values hidden, the whole URL then sealed) and
/// until when a rotated-out signing secret still signs.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub url: Option<String>,
    pub query_sealed: bool,
    pub previous_until: Option<DateTime<Utc>>,
}

fn parse(check: &mut FormCheck<'_>) -> Value {
    // The page shows the URL with its query's values hidden; sending that back unchanged
    // keeps the sealed URL.
    let typed_url = check.get("webhook_url");
    let sealed_url = check
        .stored_secret("webhook_url")
        .filter(|_| !typed_url.is_empty() && check.stored_field("webhook_url") == Some(&typed_url))
        .map(str::to_owned);
    if sealed_url.is_none() && typed_url.contains('…') {
        check.error(
            "webhook_url",
            "The query's values are hidden on this page; to change the URL, type it again in full, query included.",
        );
    }
    let egress = check.egress;
    let url = check.required_text(
        sealed_url.as_deref().unwrap_or(&typed_url),
        "webhook_url",
        "Enter the https URL that receives the events.",
        |text| {
            let url = WebhookUrl::parse(text).map_err(|e| e.to_string())?;
            egress.check_url(url.as_url()).map_err(|e| e.to_string())?;
            Ok(url)
        },
    );
    let typed_headers = check.get("webhook_headers");
    if check.ticked("webhook_clear_headers") {
        check.unseal("headers");
    } else if !typed_headers.is_empty() {
        match ExtraHeaders::parse(&typed_headers) {
            Ok(h) => {
                let names = h.names().collect::<Vec<_>>().join(", ");
                check.seal("headers", h.expose_text(), names);
            }
            Err(e) => check.error("webhook_headers", e.to_string()),
        }
    } else if let Some(text) = check.stored_secret("webhook_headers").map(str::to_owned) {
        check.use_secret("headers", text);
    }
    let mut settings = Settings {
        previous_until: signing_secrets(check),
        ..Settings::default()
    };
    if let Some(url) = &url {
        let shown = hide_query_values(url.as_url());
        if shown != url.as_str() {
            settings.query_sealed = true;
            if sealed_url.as_deref() == Some(url.as_str()) {
                check.use_secret("url", url.as_str());
            } else {
                check.seal("url", url.as_str().to_owned(), "query".into());
            }
        } else if check.stored.secrets.contains_key("webhook_url") {
            check.unseal("url");
        }
        settings.url = Some(shown);
    }
    stored(&settings)
}

fn build(
    settings: &Value,
    secrets: &Secrets,
    _context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, BuildError> {
    let settings: Settings = settings_of(settings)?;
    let url_text = if settings.query_sealed {
        needed(secrets.get("url"), "the webhook URL")?
    } else {
        needed(settings.url.as_ref(), "the webhook URL")?
    };
    let url = WebhookUrl::parse(url_text).map_err(BuildError::invalid)?;
    let headers = match secrets.get("headers") {
        Some(text) => ExtraHeaders::parse(text).map_err(BuildError::invalid)?,
        None => ExtraHeaders::none(),
    };
    let current = needed(secrets.get("signing_secret"), "the signing secret")?;
    let mut signing = vec![SigningSecret::parse(current).map_err(BuildError::invalid)?];
    if settings
        .previous_until
        .is_some_and(|until| until > Utc::now())
    {
        if let Some(previous) = secrets
            .get("signing_secret_previous")
            .and_then(|s| SigningSecret::parse(s).ok())
        {
            signing.push(previous);
        }
    }
    Ok(Box::new(WebhookDestination {
        config: WebhookConfig {
            url,
            headers,
            secrets: signing,
        },
    }))
}

fn form(settings: &Value) -> FormValues {
    let settings: Settings = settings_of(settings).unwrap_or_default();
    let mut form = FormValues::new();
    if let Some(url) = settings.url {
        form.insert("webhook_url".into(), url);
    }
    if let Some(until) = settings.previous_until {
        form.insert("webhook_previous_until".into(), until.to_rfc3339());
    }
    form
}

/// Decides the secrets that sign, for the destination (newest first) and for storage, and
/// returns until when the previous one still signs. The portal generates them: on first use
/// and on rotation (a secret that Test Connection generated and showed comes back in the form
/// and is kept); a rotated-out one still signs for [`ROTATION_OVERLAP_HOURS`].
fn signing_secrets(check: &mut FormCheck<'_>) -> Option<DateTime<Utc>> {
    let current = check
        .stored_secret("webhook_secret")
        .and_then(|s| SigningSecret::parse(s).ok());
    let rotate = check.ticked("webhook_rotate");
    let now = Utc::now();
    if let (Some(current), false) = (&current, rotate) {
        check.use_secret("signing_secret", current.expose_secret());
        let until = check
            .stored_field("webhook_previous_until")
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|until| *until > now)?;
        let previous = check.stored_secret("webhook_secret_previous")?.to_owned();
        check.use_secret("signing_secret_previous", previous);
        return Some(until);
    }
    // A secret that an earlier Test Connection generated and showed comes back in the form;
    // anything else is generated now, to be shown once.
    let shown = SigningSecret::parse(&check.get("webhook_secret"))
        .ok()
        .filter(|shown| current.as_ref() != Some(shown));
    let fresh = shown.clone().unwrap_or_else(SigningSecret::generate);
    check.seal(
        "signing_secret",
        fresh.expose_secret().to_owned(),
        fresh.last4().to_owned(),
    );
    if shown.is_none() {
        check.out.generated_secret = Some(fresh.expose_secret().to_owned());
    }
    let old = current?;
    check.seal(
        "signing_secret_previous",
        old.expose_secret().to_owned(),
        old.last4().to_owned(),
    );
    Some(now + chrono::Duration::hours(ROTATION_OVERLAP_HOURS))
}

/// A configured webhook destination, as the forwarder holds it.
#[derive(Debug, Clone)]
pub struct WebhookDestination {
    pub config: WebhookConfig,
}

impl SiemDestination for WebhookDestination {
    fn provider(&self) -> &'static str {
        "Webhook"
    }

    fn build_batches(&self, logs: &[AuditLog], now: DateTime<Utc>) -> Vec<Batch> {
        build_batches(logs, now)
    }

    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Disposition, SendError>> {
        Box::pin(send_batch(client, egress, &self.config, batch, Utc::now()))
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
        ))
    }
}

#[cfg(test)]
mod tests;
