//! Test Connection: one log, with every failure explained.

use super::*;

/// Sends one connection-test log (`EventID` 0, "SIEM connection test") through the same
/// builder, client and request as the forwarder, and explains the outcome for the page.
pub async fn test_connection(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &DatadogConfig,
    subscription_id: Uuid,
    hostname: &str,
) -> Result<TestSuccess, TestFailure> {
    let now = Utc::now();
    let probe = wire::test_log(subscription_id, now);
    let batches = build_batches(std::slice::from_ref(&probe), hostname, now);
    let Some(batch) = batches.first() else {
        return Err(failure(
            TestFailureKind::Other,
            "The test log could not be built.".into(),
        ));
    };
    let host = cfg.url.host().to_owned();
    let answer = match post_batch(client, egress, cfg, batch).await {
        Ok(answer) => answer,
        Err(err) => return Err(explain_send_error(err, &host)),
    };
    let query = alert_query(EventId::CONNECTION_TEST);
    match answer.disposition {
        Disposition::Delivered => Ok(TestSuccess {
            explorer_url: cfg.effective_site().map(|site| site.log_explorer_url(&query)),
            message: format!("Datadog accepted the test log. It can take a few minutes to appear; search the Log Explorer for {query}."),
            query,
        }),
        _ => Err(explain_status(answer.status, &answer.body, cfg)),
    }
}

pub(super) fn explain_status(status: u16, body: &str, cfg: &DatadogConfig) -> TestFailure {
    let url = cfg.url.as_str();
    let detail = body_excerpt(body);
    match status {
        401 | 403 => {
            let site = match cfg.effective_site() {
                Some(site) => format!("the {} site ({})", site.code(), site.site_param()),
                None => format!("the Datadog site behind {url}"),
            };
            failure(
                TestFailureKind::InvalidCredentials,
                format!("Datadog refused the API key (HTTP {status}). Copy the whole API key (not an application key) from Organization Settings → API Keys, check that it is not revoked, and that it belongs to {site}: a key of another Datadog site is refused."),
            )
        }
        404 => failure(
            TestFailureKind::WrongUrl,
            format!("The Logs intake URL {url} was not found (HTTP 404). Use your site's intake, for example https://http-intake.logs.datadoghq.com (or its …/api/v2/logs URL); choosing the Datadog site fills it in."),
        ),
        300..=399 => failure(
            TestFailureKind::WrongUrl,
            format!("The Logs intake URL {url} answered with a redirect (HTTP {status}), which is not followed. Enter the final https:// intake URL."),
        ),
        400 | 413 => failure(
            TestFailureKind::PayloadRejected,
            format!("Datadog rejected the test log (HTTP {status}){detail}. The URL may point at something other than a Datadog logs intake; check the Logs intake URL."),
        ),
        408 | 429 | 500..=599 => failure(
            TestFailureKind::Unavailable,
            format!("Datadog is temporarily unavailable (HTTP {status}). The settings may well be right; try again in a few minutes. Events are kept and retried meanwhile."),
        ),
        _ => failure(
            TestFailureKind::Other,
            format!("The Logs intake URL {url} gave an unexpected answer (HTTP {status}){detail}. Check the URL."),
        ),
    }
}

pub(super) fn explain_send_error(err: SendError, host: &str) -> TestFailure {
    explain::send_error(
        err,
        host,
        &Hints {
            sent: "test log",
            address: "the Logs intake URL",
            dns: ", or choose your Datadog site to fill it in",
            refused: "If it points at a proxy, check that the proxy is running.",
            closed: "If the URL points at a proxy, check its logs; otherwise try again in a few minutes.",
            tls: "Check that the URL starts with https:// and points at the intake itself; a proxy that inspects TLS needs a publicly trusted certificate.",
            timeout: REQUEST_TIMEOUT,
            ..Hints::default()
        },
    )
}
