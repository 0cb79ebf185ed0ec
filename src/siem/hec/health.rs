//! Test Connection: one event, acknowledged when the collector asks for it, with every failure
//! explained.

use super::*;

/// The search that finds the connection-test event.
pub fn test_query(cfg: &HecConfig) -> String {
    match cfg.flavor {
        HecFlavor::Splunk => format!(
            "index={} sourcetype={} EventID=0",
            cfg.index.as_ref().map_or("main", SplunkIndex::as_str),
            cfg.sourcetype
        ),
        HecFlavor::LogScale => "EventID=0".to_owned(),
    }
}

/// Sends one connection-test event (`EventID` 0, "SIEM connection test") through the same
/// builder, client and request as the forwarder, and explains the outcome for the page.
///
/// The event keeps the configured sourcetype (in LogScale the sourcetype picks the parser, and
/// in Splunk it may route the event; a special test sourcetype would prove a path the real
/// events never take) and is marked by `EventID` 0, its summary and
/// `details.ConnectionTest: true`. It passes only on HTTP 200 with HEC code 0 (LogScale: or
/// a 200 without a code, as its reply body is not documented), and, with acknowledgement on,
/// only once the event is acknowledged.
pub async fn test_connection(
    client: &reqwest::Client,
    egress: &EgressPolicy,
    cfg: &HecConfig,
    subscription_id: Uuid,
    hostname: &str,
) -> Result<TestSuccess, TestFailure> {
    let name = cfg.flavor.short();
    if let Err(err) = cfg.validate() {
        return Err(failure(TestFailureKind::Other, err.to_string()));
    }
    let now = Utc::now();
    let mut probe = wire::test_log(subscription_id, now);
    probe.details["ConnectionTest"] = json!(true);
    let batches = build_batches(cfg, std::slice::from_ref(&probe), hostname, now);
    let Some(batch) = batches.first() else {
        return Err(failure(
            TestFailureKind::Other,
            "The test event could not be built.".into(),
        ));
    };
    let host = cfg.url.host().to_owned();
    let answer = match post_batch(client, egress, cfg, batch).await {
        Ok(answer) => answer,
        Err(err) => return Err(explain_send_error(err, &host, cfg)),
    };
    let success_code = answer.reply.code == Some(0)
        || (cfg.flavor == HecFlavor::LogScale && answer.reply.code.is_none());
    // An unconfirmed acknowledgement turns the 200 into a `Retry`: explain it as such below.
    let acked_or_not = answer.disposition == Disposition::Delivered
        || matches!(answer.ack, AckOutcome::TimedOut { .. });
    if answer.status != 200 || !acked_or_not {
        return Err(explain_status(&answer, cfg));
    }
    if !success_code {
        return Err(failure(
            TestFailureKind::WrongUrl,
            format!("{} answered HTTP 200 without the HTTP Event Collector's success code (code 0). The URL may point at a proxy or at something other than the collector; check the URL.", cfg.url),
        ));
    }
    match answer.ack {
        AckOutcome::NotRequested | AckOutcome::Acknowledged => {}
        AckOutcome::NoAckId => return Err(failure(
            TestFailureKind::Other,
            "Splunk accepted the test event but returned no acknowledgement id: indexer acknowledgement is off on this token. Turn it on for the token in Splunk (Settings → Data inputs → HTTP Event Collector → Edit), or turn it off in these settings.".into(),
        )),
        AckOutcome::Unavailable { reason } => return Err(failure(
            TestFailureKind::Other,
            format!("Splunk accepted the test event but its acknowledgement endpoint cannot be used ({reason}). Turn indexer acknowledgement on for the token in Splunk, or turn it off in these settings."),
        )),
        AckOutcome::TimedOut { .. } => return Err(failure(
            TestFailureKind::Unavailable,
            format!("Splunk accepted the test event but did not confirm within {} seconds that it was indexed. Splunk may be busy; try again in a few minutes, or turn indexer acknowledgement off.", cfg.ack_timing.timeout.as_secs_f32()),
        )),
    }
    let query = test_query(cfg);
    let acked = if answer.ack == AckOutcome::Acknowledged {
        " and confirmed it was indexed"
    } else {
        ""
    };
    Ok(TestSuccess {
        message: format!(
            "{name} accepted the test event{acked}. It can take a minute to appear; search for {query}."
        ),
        query,
        explorer_url: None,
    })
}

pub(super) fn explain_status(answer: &Answer, cfg: &HecConfig) -> TestFailure {
    let status = answer.status;
    let url = cfg.url.as_str();
    let name = cfg.flavor.short();
    let detail = reply_excerpt(&answer.reply, &answer.body);
    let splunk = cfg.flavor == HecFlavor::Splunk;
    match (status, answer.reply.code) {
        (401 | 403, _) | (400, Some(21 | 22)) => failure(
            TestFailureKind::InvalidCredentials,
            if splunk {
                format!("Splunk refused the HEC token (HTTP {status}{detail}). Copy the Token Value from Settings → Data inputs → HTTP Event Collector, and check that the token is enabled and that HEC is enabled under Global Settings.")
            } else {
                format!("LogScale refused the ingest token (HTTP {status}{detail}). Copy the ingest token from the repository's Settings → Ingest tokens (a personal API token is not an ingest token).")
            },
        ),
        (404, _) => failure(
            TestFailureKind::WrongUrl,
            if splunk {
                format!("The collector URL {url} was not found (HTTP 404). Enter the HEC base URL, for example https://splunk.example.com:8088 (Splunk Enterprise listens on port 8088), or its …/services/collector/event URL.")
            } else {
                format!("The LogScale URL {url} was not found (HTTP 404). Enter the base URL of your LogScale (the ingest URL shown at the top of the Ingest tokens page), or its …/api/v1/ingest/hec URL.")
            },
        ),
        (300..=399, _) => failure(
            TestFailureKind::WrongUrl,
            format!("The collector URL {url} answered with a redirect (HTTP {status}), which is not followed. Enter the final https:// URL."),
        ),
        (400, Some(7)) => failure(
            TestFailureKind::InvalidCredentials,
            format!("{name} refused the index {} for this token (HTTP 400{detail}). Add it to the token's allowed indexes in {name}, or change the Index field (blank uses the token's default index).", cfg.index.as_ref().map_or("(default)", SplunkIndex::as_str)),
        ),
        (400, Some(10)) => failure(
            TestFailureKind::Other,
            format!("This token has indexer acknowledgement turned on, so Splunk requires a data channel (HTTP 400{detail}). Turn on indexer acknowledgement in these settings, or turn it off for the token in Splunk."),
        ),
        (400, Some(11)) => failure(
            TestFailureKind::Other,
            format!("Splunk refused the data channel (HTTP 400{detail}). Check that no proxy between cloudpki and Splunk changes the X-Splunk-Request-Channel header, or turn indexer acknowledgement off."),
        ),
        (400, Some(14)) => failure(
            TestFailureKind::Other,
            format!("Indexer acknowledgement is disabled on this token (HTTP 400{detail}). Turn it on for the token in Splunk, or turn it off in these settings."),
        ),
        (400 | 413, _) => failure(
            TestFailureKind::PayloadRejected,
            format!("{name} rejected the test event (HTTP {status}{detail}). The URL may point at something other than an HTTP Event Collector; check the URL."),
        ),
        (408 | 429 | 500..=599, _) if status != 501 => failure(
            TestFailureKind::Unavailable,
            format!("{name} is temporarily unavailable (HTTP {status}{detail}). The settings may well be right; try again in a few minutes. Events are kept and retried meanwhile."),
        ),
        _ => failure(
            TestFailureKind::Other,
            format!("The collector URL {url} gave an unexpected answer (HTTP {status}{detail}). Check the URL."),
        ),
    }
}

pub(super) fn explain_send_error(err: SendError, host: &str, cfg: &HecConfig) -> TestFailure {
    let splunk = cfg.flavor == HecFlavor::Splunk;
    explain::send_error(
        err,
        host,
        &Hints {
            address: "the collector URL",
            port: if splunk {
                "the collector's port: 8088 on Splunk Enterprise, 443 on Splunk Cloud"
            } else {
                "port 443"
            },
            refused: "Check that HTTP Event Collector is enabled.",
            closed: "If the URL uses http:// while the collector expects https:// (or the reverse), fix the scheme; otherwise try again in a few minutes.",
            tls: if splunk {
                "Self-signed certificates are refused, including Splunk's default certificate on port 8088: give the collector a publicly trusted certificate, or put it behind a proxy that has one."
            } else {
                "Check that the URL starts with https:// and that LogScale's certificate is publicly trusted."
            },
            timeout: REQUEST_TIMEOUT,
            ..Hints::default()
        },
    )
}
