//! Test Connection: a token, then one row, with every failure explained.

use super::*;

/// Gets a fresh token, then posts the test row (`EventID` 0, "SIEM connection test") through
/// the same builder, client and request as the forwarder, and explains the outcome for the
/// page. The row lands in the table, where the query of the answer finds it.
pub async fn test_connection(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    tokens: &TokenCache,
    cfg: &SentinelConfig,
    subscription_id: Uuid,
    hostname: &str,
) -> Result<TestSuccess, TestFailure> {
    let now = Utc::now();
    let probe = wire::test_log(subscription_id, now);
    let batches = build_batches(std::slice::from_ref(&probe), hostname, now);
    let Some(batch) = batches.first() else {
        return Err(failure(
            TestFailureKind::Other,
            "The test row could not be built.".into(),
        ));
    };
    let (outcome, _) = match deliver(client, egress, tokens, cfg, batch, true).await {
        Ok(answer) => answer,
        Err(Failure { leg, error }) => {
            let host = match leg {
                Leg::Token => cfg.login_base.host(),
                Leg::Ingestion => cfg.endpoint.host().to_owned(),
            };
            return Err(explain_send_error(error, &host, leg));
        }
    };
    match outcome {
        Outcome::Token(err) => Err(explain_token_failure(err)),
        Outcome::Answer { status, .. } if (200..=299).contains(&status) => {
            let query = cfg.query_for(EventId::CONNECTION_TEST.get());
            Ok(TestSuccess {
                message: format!(
                    "Azure Monitor accepted the test row: the app signed in and may write to stream {} of {}. Ingestion takes a few minutes; then find the row with {query}, and alert on events such as {}.",
                    cfg.stream, cfg.dcr_id, cfg.query_for(EXAMPLE_QUERY_EVENT)
                ),
                query,
                explorer_url: None,
            })
        }
        Outcome::Answer { status, body } => Err(explain_status(status, &body, cfg)),
    }
}

pub(super) fn explain_token_failure(err: TokenError) -> TestFailure {
    match err {
        TokenError::Refused {
            kind: TokenRefusal::WrongLoginUrl,
            reason,
            ..
        } => failure(TestFailureKind::WrongUrl, reason),
        TokenError::Refused { reason, .. } => failure(TestFailureKind::InvalidCredentials, reason),
        TokenError::Unavailable { reason, .. } => failure(
            TestFailureKind::Unavailable,
            format!("{reason} The settings may well be right; try again in a few minutes."),
        ),
        TokenError::Transport(err) => TestFailure::from(err),
    }
}

pub(super) fn explain_status(status: u16, body: &str, cfg: &SentinelConfig) -> TestFailure {
    let detail = azure_error(body);
    let endpoint = cfg.endpoint.as_str();
    match status {
        401 => failure(
            TestFailureKind::InvalidCredentials,
            format!("The app signed in, but Azure Monitor refused its token (HTTP 401){detail}. Check that the Azure cloud setting ({}) is the cloud of the ingestion endpoint {endpoint}.", cfg.cloud),
        ),
        403 => failure(
            TestFailureKind::InvalidCredentials,
            format!("The app signed in, but may not write to the data collection rule (HTTP 403){detail}. In the Azure portal open the DCR, Access control (IAM), and grant the app the Monitoring Metrics Publisher role; the role can take up to 30 minutes to apply."),
        ),
        404 => failure(
            TestFailureKind::WrongUrl,
            format!("Azure Monitor did not find stream {} of {} at {endpoint} (HTTP 404){detail}. Check the ingestion endpoint (the DCR's logs ingestion endpoint or its DCE), the DCR immutable ID (dcr-…) and the stream name from the rule's streamDeclarations.", cfg.stream, cfg.dcr_id),
        ),
        300..=399 => failure(
            TestFailureKind::WrongUrl,
            format!("The ingestion endpoint {endpoint} answered with a redirect (HTTP {status}), which is not followed. Enter the final https:// endpoint."),
        ),
        400 | 413 => failure(
            TestFailureKind::PayloadRejected,
            format!("Azure Monitor rejected the test row (HTTP {status}){detail}. Check that the endpoint is a logs ingestion endpoint, that the stream belongs to that DCR, and that the stream declares the columns in the README's DCR template."),
        ),
        408 | 429 | 500 | 502..=599 => failure(
            TestFailureKind::Unavailable,
            format!("Azure Monitor is temporarily unavailable (HTTP {status}). The settings may well be right; try again in a few minutes. Events are kept and retried meanwhile."),
        ),
        _ => failure(
            TestFailureKind::Other,
            format!("The ingestion endpoint {endpoint} gave an unexpected answer (HTTP {status}){detail}. Check the endpoint URL."),
        ),
    }
}

pub(super) fn explain_send_error(err: SendError, host: &str, leg: Leg) -> TestFailure {
    let address = match leg {
        Leg::Token => "the sign-in URL (Azure cloud setting)",
        Leg::Ingestion => "the ingestion endpoint",
    };
    explain::send_error(
        err,
        host,
        &Hints {
            sent: "test row",
            address,
            tls: &format!("Check that {address} starts with https:// and that no TLS-inspecting proxy is in the way."),
            timeout: REQUEST_TIMEOUT,
            ..Hints::default()
        },
    )
}
