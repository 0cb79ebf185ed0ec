//! Sending: the collector call, indexer acknowledgement, and how each answer is classified.

use super::*;
use crate::siem::HttpWording;

/// What a collector said in its `{"text","code"}` reply (all optional: proxies say other
/// things).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HecReply {
    /// Whether the body was a JSON object at all.
    pub is_json: bool,
    pub text: Option<String>,
    pub code: Option<i64>,
    /// `ackId` of a 200 when a channel was sent.
    pub ack_id: Option<u64>,
    /// `invalid-event-number` of a code 6, from its own field or from `text`.
    pub invalid_event_number: Option<usize>,
}

impl HecReply {
    /// Parses a reply body leniently.
    pub fn parse(body: &str) -> HecReply {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(body.trim()) else {
            return HecReply::default();
        };
        let text = object
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let number = |value: &Value| match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let invalid_event_number = object
            .get("invalid-event-number")
            .and_then(number)
            .or_else(|| text.as_deref().and_then(invalid_event_number_in_text))
            .and_then(|k| usize::try_from(k).ok());
        HecReply {
            is_json: true,
            code: object.get("code").and_then(Value::as_i64),
            ack_id: object.get("ackId").and_then(number),
            invalid_event_number,
            text,
        }
    }
}

/// `k` from a text like `Invalid data format; invalid-event-number: 3`.
pub(super) fn invalid_event_number_in_text(text: &str) -> Option<u64> {
    let (_, after) = text.split_once("invalid-event-number")?;
    let digits: String = after
        .trim_start_matches([':', '=', ' ', '"'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub(super) fn reply_excerpt(reply: &HecReply, body: &str) -> String {
    let source = match (&reply.text, reply.code) {
        (Some(text), Some(code)) => format!("code {code}, \"{text}\""),
        (Some(text), None) => format!("\"{text}\""),
        (None, Some(code)) => format!("code {code}"),
        (None, None) => body.trim().to_owned(),
    };
    if source.is_empty() {
        return String::new();
    }
    format!(", {}", wire::clean_excerpt(&source, MAX_REASON_BODY_CHARS))
}

/// Maps a collector's answer to what the forwarder does with the batch.
///
/// | status | reply code | disposition |
/// |---|---|---|
/// | 2xx | 0, none, or empty body | `Delivered` |
/// | 2xx | other code, or a body that is not JSON | `AuthFailed` (not an event endpoint) |
/// | 3xx | – | `AuthFailed` (redirects are not followed) |
/// | 400 | 6 with `invalid-event-number` k | `PartialAccept { accepted: k }` |
/// | 400 | 6 without a number, none, unknown | `Rejected` (isolate, park) |
/// | 400 | 5, 7, 10, 11, 12, 13, 14, 15, 16, 21, 22 | `AuthFailed` (configuration; events stay queued) |
/// | 401, 403 | 1–4 | `AuthFailed` (token missing, malformed, disabled, invalid) |
/// | 404 | – | `AuthFailed` (wrong URL) |
/// | 413 | – | `SplitBatch` |
/// | 408, 429, 5xx except 501 | 8, 9, 18–20 | `Retry`, honouring `Retry-After` |
/// | 501, other 4xx | – | `AuthFailed` (not an HEC endpoint / configuration) |
/// | 1xx, ≥ 600 | – | `Retry` (unknown answers must not lose events) |
pub fn classify(
    flavor: HecFlavor,
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> Disposition {
    let name = flavor.short();
    let reply = HecReply::parse(body);
    let detail = reply_excerpt(&reply, body);
    let config = |reason: String| Some(Disposition::AuthFailed { reason });
    // HEC words the statuses whose reply code means something particular, and its 2xx (a
    // reply that is not HEC's is a wrong URL); the skeleton does the rest.
    let specific = |status: u16| {
        match status {
        200..=299 => match (reply.is_json, reply.code) {
            (true, Some(0) | None) => Some(Disposition::Delivered),
            (false, _) if body.trim().is_empty() => Some(Disposition::Delivered),
            (true, Some(code)) => config(format!("The collector URL answered HTTP {status} with code {code}{detail} instead of accepting the events; check that the URL is the HTTP Event Collector itself.")),
            (false, _) => config(format!("The collector URL answered HTTP {status} with something that is not an HTTP Event Collector reply; check the URL (it may point at a proxy or login page).")),
        },
        400 => match reply.code {
            Some(6) => Some(match reply.invalid_event_number {
                Some(accepted) => Disposition::PartialAccept {
                    accepted,
                    reason: format!("{name} refused this event as malformed (HTTP 400{detail}) after indexing the events before it."),
                },
                None => Disposition::Rejected {
                    reason: format!("{name} refused the events as malformed (HTTP 400{detail})."),
                },
            }),
            Some(5) => config(format!("{name} received no data (HTTP 400{detail}); something between cloudpki and {name}, such as a proxy, may be dropping request bodies.")),
            Some(7) => config(format!("{name} refused the index (HTTP 400{detail}); add the index to the token's allowed indexes, or change or clear the Index field.")),
            Some(10) => config(format!("The token requires indexer acknowledgement (HTTP 400{detail}); turn on indexer acknowledgement in the settings, or turn it off for the token in {name}.")),
            Some(11) => config(format!("{name} refused the data channel (HTTP 400{detail}); check that nothing between cloudpki and {name} changes the X-Splunk-Request-Channel header.")),
            Some(12 | 13) => config(format!("{name} says the event field is missing or blank (HTTP 400{detail}); check that the URL points at the event endpoint and not at a proxy that rewrites requests.")),
            Some(14) => config(format!("Indexer acknowledgement is disabled on this token (HTTP 400{detail}); turn it on for the token in {name}, or turn it off in the settings.")),
            Some(15) => config(format!("{name} refused the indexed fields of the events (HTTP 400{detail}); check the token's settings in {name}.")),
            Some(16) => config(format!("{name} refused query-string authorization (HTTP 400{detail}); check that nothing between cloudpki and {name} moves the token into the URL.")),
            Some(21 | 22) => config(format!("{name} refused the token as invalid or disabled (HTTP 400{detail}); check the token and enable it.")),
            _ => Some(Disposition::Rejected {
                reason: format!("{name} refused the events as malformed (HTTP 400{detail})."),
            }),
        },
        401 => config(format!("{name} refused the request: the token is missing or not sent in the expected form (HTTP 401{detail}); check the token.")),
        403 => config(format!("{name} refused the token: it is invalid or disabled (HTTP 403{detail}); copy the token again and check that it and HEC are enabled.")),
        404 => config(format!("The collector URL was not found (HTTP 404{detail}); check the URL and port.")),
        501 => config(format!("The collector URL does not implement event ingestion (HTTP 501{detail}); check that the URL points at the HTTP Event Collector.")),
        _ => None,
    }
    };
    // The skeleton puts the detail after the status, as Datadog's: "(HTTP 503): code 9, …".
    let after_status = detail.replacen(", ", ": ", 1);
    crate::siem::classify_http(
        status,
        retry_after,
        HttpWording {
            name,
            detail: &after_status,
            redirect: format!("The collector URL answered with a redirect (HTTP {status}); enter the final https:// URL of the HTTP Event Collector."),
            too_many: "is rate limiting",
            other_4xx: Some(format!("{name} refused the request (HTTP {status}{detail}); check the collector URL and the token.")),
        },
        specific,
    )
}

/// How the acknowledgement of an accepted batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AckOutcome {
    /// No acknowledgement was asked for (or the answer was not a 200).
    NotRequested,
    /// The collector confirmed the events are indexed.
    Acknowledged,
    /// A channel was sent but the 200 carried no `ackId`: acknowledgement is off on the token.
    NoAckId,
    /// The ack endpoint refused to answer (e.g. code 14); the 200 was trusted.
    Unavailable { reason: String },
    /// Still unconfirmed when the timeout ran out.
    TimedOut { last_problem: Option<String> },
}

/// The HTTP answer of the collector, classified, plus the acknowledgement.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) reply: HecReply,
    pub(super) body: String,
    pub(super) disposition: Disposition,
    pub(super) ack: AckOutcome,
}

pub(super) fn header_value(value: &str, what: &str) -> Result<HeaderValue, SendError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| SendError::Other {
        detail: format!("the {what} is not a valid header value"),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

pub(super) async fn post_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    batch: &Batch,
) -> Result<Answer, SendError> {
    let endpoint = cfg.url.endpoint(cfg.flavor.event_path());
    egress.check_url(&endpoint)?;
    let auth = header_value(&cfg.flavor.authorization(&cfg.token), "token")?;
    let mut request = client
        .post(endpoint)
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .body(batch.body.clone());
    if cfg.uses_ack() {
        request = request.header(CHANNEL_HEADER, cfg.channel.to_string());
    }
    let wire::Reply {
        status,
        retry_after,
        body,
    } = wire::send(request).await?;
    let mut disposition = classify(cfg.flavor, status, retry_after.as_deref(), &body);
    let reply = HecReply::parse(&body);
    if let Disposition::PartialAccept { accepted, .. } = disposition {
        if accepted >= batch.len() {
            disposition = Disposition::Rejected {
                reason: format!("{} refused the events as malformed (HTTP 400) and named event {accepted}, which the request did not hold.", cfg.flavor.short()),
            };
        }
    }
    let mut ack = AckOutcome::NotRequested;
    if cfg.uses_ack() && disposition == Disposition::Delivered {
        ack = match reply.ack_id {
            Some(id) => await_ack(client, egress, cfg, id).await,
            None => AckOutcome::NoAckId,
        };
        match &ack {
            AckOutcome::TimedOut { last_problem } => {
                let extra = last_problem
                    .as_deref()
                    .map(|p| format!(" Last problem: {p}"))
                    .unwrap_or_default();
                disposition = Disposition::Unconfirmed {
                    after: None,
                    reason: format!("Splunk accepted the events but did not confirm within {} seconds that they were indexed (indexer acknowledgement); they will be sent again, so Splunk may hold duplicates with the same EventUuid.{extra}", cfg.ack_timing.timeout.as_secs_f32()),
                };
            }
            AckOutcome::NoAckId => tracing::warn!(
                destination = cfg.url.as_str(),
                "indexer acknowledgement is on but the collector returned no ackId; trusting the 200"
            ),
            AckOutcome::Unavailable { reason } => tracing::warn!(
                destination = cfg.url.as_str(),
                reason = reason.as_str(),
                "the acknowledgement endpoint is unusable; trusting the 200"
            ),
            AckOutcome::NotRequested | AckOutcome::Acknowledged => {}
        }
    }
    Ok(Answer {
        status,
        reply,
        body,
        disposition,
        ack,
    })
}

/// One poll of the ack endpoint.
pub(super) enum AckPoll {
    Acked,
    Pending,
    /// The endpoint says acknowledgement cannot work (4xx): stop polling.
    Unusable(String),
    /// A transient problem (5xx, transport error): keep polling.
    Problem(String),
}

pub(super) async fn await_ack(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    ack_id: u64,
) -> AckOutcome {
    let started = tokio::time::Instant::now();
    let mut last_problem = None;
    loop {
        tokio::time::sleep(cfg.ack_timing.poll_interval).await;
        match poll_ack(client, egress, cfg, ack_id).await {
            AckPoll::Acked => return AckOutcome::Acknowledged,
            AckPoll::Pending => {}
            AckPoll::Unusable(reason) => return AckOutcome::Unavailable { reason },
            AckPoll::Problem(reason) => last_problem = Some(reason),
        }
        if started.elapsed() >= cfg.ack_timing.timeout {
            return AckOutcome::TimedOut { last_problem };
        }
    }
}

pub(super) async fn poll_ack(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    ack_id: u64,
) -> AckPoll {
    let endpoint = cfg.url.endpoint(SPLUNK_ACK_PATH);
    if let Err(err) = egress.check_url(&endpoint) {
        return AckPoll::Unusable(err.to_string());
    }
    let auth = match header_value(&cfg.flavor.authorization(&cfg.token), "token") {
        Ok(auth) => auth,
        Err(err) => return AckPoll::Unusable(err.to_string()),
    };
    let sent = client
        .post(endpoint)
        .header(AUTHORIZATION, auth)
        .header(CONTENT_TYPE, "application/json")
        .header(CHANNEL_HEADER, cfg.channel.to_string())
        .body(json!({ "acks": [ack_id] }).to_string());
    let (status, body) = match wire::send(sent).await {
        Ok(reply) => (reply.status, reply.body),
        Err(err) => return AckPoll::Problem(err.to_string()),
    };
    match status {
        200 => {
            let acked = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["acks"][ack_id.to_string()].as_bool());
            match acked {
                Some(true) => AckPoll::Acked,
                Some(false) => AckPoll::Pending,
                None => AckPoll::Problem(format!(
                    "the acknowledgement reply did not mention ackId {ack_id}"
                )),
            }
        }
        400..=499 if status != 408 && status != 429 => {
            let reply = HecReply::parse(&body);
            AckPoll::Unusable(format!(
                "the acknowledgement endpoint answered HTTP {status}{}",
                reply_excerpt(&reply, &body)
            ))
        }
        _ => AckPoll::Problem(format!(
            "the acknowledgement endpoint answered HTTP {status}"
        )),
    }
}

/// Sends one batch to the collector, waits for the indexer acknowledgement when configured,
/// and classifies the outcome. Calls [`EgressPolicy::check_url`] before anything leaves the
/// host.
pub async fn send_batch(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    batch: &Batch,
) -> Result<Disposition, SendError> {
    post_batch(client, egress, cfg, batch)
        .await
        .map(|answer| answer.disposition)
}
