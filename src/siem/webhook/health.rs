//! Test Connection: one signed test call, with every failure explained.

use super::*;

/// Sends one signed test event (`type` `ezca.test`, `EventID` 0, "SIEM connection test")
/// through the same builder, signer, client and request as the forwarder, and explains the
/// outcome for the page.
pub async fn test_connection(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &WebhookConfig,
    subscription_id: Uuid,
) -> Result<TestSuccess, TestFailure> {
    let now = Utc::now();
    let probe = wire::test_log(subscription_id, now);
    let batches = pack(std::slice::from_ref(&probe), TEST_EVENT_TYPE);
    let Some(batch) = batches.first() else {
        return Err(failure(
            TestFailureKind::Other,
            "The test event could not be built.".into(),
        ));
    };
    let id = webhook_id(&batch.event_uuids);
    let host = cfg.url.host().to_owned();
    let answer = match post_batch(client, egress, cfg, batch, now).await {
        Ok(answer) => answer,
        Err(NotSent::NoSecret) => {
            return Err(failure(
                TestFailureKind::InvalidCredentials,
                NO_SECRET_REASON.into(),
            ))
        }
        Err(NotSent::Send(err)) => return Err(explain_send_error(err, &host)),
    };
    match answer.disposition {
        Disposition::Delivered => Ok(TestSuccess {
            message: format!(
                "The receiver accepted the test event (HTTP {}), signed with the signing secret ending in {}. Look for webhook-id {id}, type {TEST_EVENT_TYPE}, in its logs.",
                answer.status,
                cfg.secrets.first().map_or("—", SigningSecret::last4)
            ),
            query: format!("webhook-id {id}"),
            explorer_url: None,
        }),
        _ => Err(explain_status(answer.status, &answer.body, cfg)),
    }
}

pub(super) fn explain_status(status: u16, body: &str, cfg: &WebhookConfig) -> TestFailure {
    let url = cfg.url.redacted();
    let detail = body_excerpt(body);
    match status {
        401 | 403 => failure(
            TestFailureKind::InvalidCredentials,
            format!("The receiver refused the request (HTTP {status}){detail}. Check that it verifies signatures with this destination's signing secret (the one ending in {}) and that any Authorization header it expects is set under Extra headers.", cfg.secrets.first().map_or("—", SigningSecret::last4)),
        ),
        404 => failure(
            TestFailureKind::WrongUrl,
            format!("The webhook URL {url} was not found (HTTP 404). Check the path the receiver listens on."),
        ),
        410 => failure(
            TestFailureKind::WrongUrl,
            format!("The receiver at {url} answered 410 Gone: it no longer accepts webhooks from cloudpki. Enter the URL of an active receiver."),
        ),
        300..=399 => failure(
            TestFailureKind::WrongUrl,
            format!("The webhook URL {url} answered with a redirect (HTTP {status}), which is not followed. Enter the final https:// URL."),
        ),
        400 | 413 | 422 => failure(
            TestFailureKind::PayloadRejected,
            format!("The receiver rejected the test event (HTTP {status}){detail}. Check that it accepts JSON bodies of type {TEST_EVENT_TYPE}."),
        ),
        408 | 429 | 500..=599 => failure(
            TestFailureKind::Unavailable,
            format!("The receiver is temporarily unavailable (HTTP {status}). The settings may well be right; try again in a few minutes. Events are kept and retried meanwhile."),
        ),
        _ => failure(
            TestFailureKind::Other,
            format!("The webhook URL {url} gave an unexpected answer (HTTP {status}){detail}. Check the URL."),
        ),
    }
}

pub(super) fn explain_send_error(err: SendError, host: &str) -> TestFailure {
    explain::send_error(
        err,
        host,
        &Hints {
            address: "the webhook URL",
            port: "the URL's port",
            refused: "Check that the receiver is running.",
            closed: "Check the receiver's logs, then try again.",
            tls: "Check that the URL starts with https:// and that the receiver has a valid, publicly trusted certificate.",
            timeout: REQUEST_TIMEOUT,
            ..Hints::default()
        },
    )
}
