//! Sending: the intake call, gzip, and how each answer is classified.

use super::*;

/// The HTTP answer of the intake, classified.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: String,
    pub(super) disposition: Disposition,
}

pub(super) async fn post_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &DatadogConfig,
    batch: &Batch,
) -> Result<Answer, SendError> {
    let endpoint = cfg.url.logs_endpoint();
    egress.check_url(&endpoint)?;
    let body = batch.gzip_body().map_err(|err| SendError::Other {
        detail: format!("could not compress the batch: {err}"),
    })?;
    let mut key =
        HeaderValue::from_str(cfg.api_key.expose_secret()).map_err(|_| SendError::Other {
            detail: "the API key is not a valid header value".into(),
        })?;
    key.set_sensitive(true);
    let response = client
        .post(endpoint)
        .header("DD-API-KEY", key)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .body(body);
    let wire::Reply {
        status,
        retry_after,
        body,
    } = wire::send(response).await?;
    let disposition = classify(status, retry_after.as_deref(), &body);
    Ok(Answer {
        status,
        body,
        disposition,
    })
}

/// Sends one batch (gzip) to the intake and classifies the answer. Calls
/// [`EgressPolicy::check_url`] before anything leaves the host.
pub async fn send_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &DatadogConfig,
    batch: &Batch,
) -> Result<Disposition, SendError> {
    post_batch(client, egress, cfg, batch)
        .await
        .map(|answer| answer.disposition)
}

/// Maps an intake answer to what the forwarder does with the batch.
///
/// | status | disposition |
/// |---|---|
/// | 2xx | `Delivered` |
/// | 3xx | `AuthFailed` (redirects are not followed: the URL must be fixed) |
/// | 400 | `Rejected` (isolate the event, park it) |
/// | 401, 403 | `AuthFailed` (missing / invalid key, or key of another site) |
/// | 404 | `AuthFailed` (wrong URL; a destination problem, events stay queued) |
/// | 408, 429, 5xx | `Retry`, honouring `Retry-After` up to [`crate::siem::MAX_RETRY_AFTER`] |
/// | 413 | `SplitBatch` |
/// | other 4xx, 1xx, ≥ 600 | `Retry` (unknown answers must not lose events) |
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Disposition {
    let detail = body_excerpt(body);
    let wording = crate::siem::HttpWording {
        name: "Datadog",
        detail: &detail,
        redirect: format!("The Logs intake URL answered with a redirect (HTTP {status}); enter the final intake URL."),
        too_many: "is rate limiting",
        other_4xx: None,
    };
    crate::siem::classify_http(status, retry_after, wording, |status| {
        match status {
        400 => Some(Disposition::Rejected {
            reason: format!("Datadog rejected the log as malformed (HTTP 400){detail}."),
        }),
        401 => Some(Disposition::AuthFailed {
            reason: format!("Datadog refused the request: API key missing (HTTP 401){detail}."),
        }),
        403 => Some(Disposition::AuthFailed {
            reason: format!("Datadog refused the API key: it is invalid, revoked or belongs to another Datadog site (HTTP 403){detail}."),
        }),
        404 => Some(Disposition::AuthFailed {
            reason: format!("The Logs intake URL was not found (HTTP 404); check the URL{detail}."),
        }),
        _ => None,
    }
    })
}

pub(super) fn body_excerpt(body: &str) -> String {
    wire::body_excerpt(body, MAX_REASON_BODY_CHARS)
}
