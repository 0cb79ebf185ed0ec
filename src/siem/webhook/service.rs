//! Sending: the signed POST, and how each answer is classified (410 pauses).

use super::*;

/// Maps a receiver's answer to what the forwarder does with the batch.
///
/// | status | disposition |
/// |---|---|
/// | 2xx | `Delivered` |
/// | 3xx | `AuthFailed` (redirects are not followed: the URL must be fixed) |
/// | 400, 422 | `Rejected` (isolate the event, park it) |
/// | 401, 403 | `AuthFailed` (the receiver's authentication or signature check refused us) |
/// | 404 | `AuthFailed` (wrong URL; events stay queued) |
/// | 410 | `Gone` (the receiver wants no more webhooks: turn the destination off) |
/// | 413 | `SplitBatch` |
/// | 408, 429, 5xx | `Retry`, honouring `Retry-After` up to an hour |
/// | other 4xx | `AuthFailed` with the status (a configuration problem) |
/// | 1xx, ≥ 600 | `Retry` (unknown answers must not lose events) |
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Disposition {
    let detail = body_excerpt(body);
    let wording = crate::siem::HttpWording {
        name: "The webhook receiver",
        detail: &detail,
        redirect: format!("The webhook URL answered with a redirect (HTTP {status}), which is not followed; enter the final URL."),
        too_many: "is rate limiting",
        other_4xx: Some(format!("The webhook receiver refused the request (HTTP {status}){detail}; check the URL and the receiver's configuration.")),
    };
    crate::siem::classify_http(status, retry_after, wording, |status| {
        match status {
        400 | 422 => Some(Disposition::Rejected {
            reason: format!("The webhook receiver rejected the events (HTTP {status}){detail}."),
        }),
        401 | 403 => Some(Disposition::AuthFailed {
            reason: format!("The webhook receiver refused the request (HTTP {status}){detail}; check its authentication (extra headers) and that it verifies signatures with the current signing secret."),
        }),
        404 => Some(Disposition::AuthFailed {
            reason: format!("The webhook URL was not found (HTTP 404){detail}; check the URL."),
        }),
        410 => Some(Disposition::Gone {
            reason: format!("The webhook receiver answered 410 Gone{detail}: it no longer accepts these events, so sending was turned off."),
        }),
        _ => None,
    }
    })
}

pub(super) fn body_excerpt(body: &str) -> String {
    wire::body_excerpt(body, MAX_REASON_BODY_CHARS)
}

/// The receiver's answer, classified.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: String,
    pub(super) disposition: Disposition,
}

/// Why a request was not even attempted.
pub(super) enum NotSent {
    NoSecret,
    Send(SendError),
}

impl From<SendError> for NotSent {
    fn from(err: SendError) -> Self {
        NotSent::Send(err)
    }
}

pub(super) async fn post_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &WebhookConfig,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<Answer, NotSent> {
    egress
        .check_url(cfg.url.as_url())
        .map_err(SendError::from)?;
    if cfg.secrets.is_empty() {
        return Err(NotSent::NoSecret);
    }
    let id = webhook_id(&batch.event_uuids);
    let timestamp = now.timestamp();
    let signature = sign(&cfg.secrets, &id, timestamp, &batch.body);
    let mut request = client
        .post(cfg.url.as_url().clone())
        .header(HEADER_ID, id)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_SIGNATURE, signature)
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in cfg.headers.iter() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| SendError::Other {
            detail: format!("the extra header name {name} is not valid"),
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| SendError::Other {
            detail: format!("the value of the extra header {name} is not valid"),
        })?;
        // Extra headers often carry credentials (Authorization).
        value.set_sensitive(true);
        request = request.header(name, value);
    }
    let wire::Reply {
        status,
        retry_after,
        body,
    } = wire::send(request.body(batch.body.clone())).await?;
    let disposition = classify(status, retry_after.as_deref(), &body);
    Ok(Answer {
        status,
        body,
        disposition,
    })
}

/// Signs one batch for this attempt (`webhook-timestamp` = `now`) and POSTs it uncompressed,
/// then classifies the answer. Calls [`EgressPolicy::check_url`] before anything leaves the
/// host. The `webhook-id` is derived again from `batch.event_uuids` ([`webhook_id`]).
pub async fn send_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &WebhookConfig,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<Disposition, SendError> {
    match post_batch(client, egress, cfg, batch, now).await {
        Ok(answer) => Ok(answer.disposition),
        Err(NotSent::NoSecret) => Ok(Disposition::AuthFailed {
            reason: NO_SECRET_REASON.into(),
        }),
        Err(NotSent::Send(err)) => Err(err),
    }
}
