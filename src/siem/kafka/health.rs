//! Test Connection: failures explained in the words of the cluster.

use super::*;

pub(super) fn explain_setup(cfg: &KafkaConfig, err: SendError) -> TestFailure {
    let brokers = cfg.brokers.as_bootstrap();
    let topic = &cfg.topic;
    let (kind, message) = match err {
        SendError::EgressDenied { reason } => (
            TestFailureKind::EgressDenied,
            format!("The call was blocked by this server's outbound policy and nothing was sent. {reason}"),
        ),
        SendError::Dns { detail } => (
            TestFailureKind::Dns,
            format!("A broker's host name could not be found (DNS): {detail}. Check the spelling of the bootstrap brokers ({brokers})."),
        ),
        SendError::ConnectionRefused { detail } => (
            TestFailureKind::ConnectionRefused,
            format!("No broker accepted the connection ({detail}). Check the hosts and ports of the bootstrap brokers ({brokers}) and that the cluster is running."),
        ),
        SendError::Tls { detail } => (
            TestFailureKind::Tls,
            format!("The TLS connection to the brokers failed ({detail}). Check that the brokers' listener uses TLS with a publicly trusted certificate, or untick Use TLS for a plaintext listener that CLOUDPKI_EGRESS_ALLOW lists."),
        ),
        SendError::Timeout => (
            TestFailureKind::Timeout,
            format!("No broker answered within {} seconds. Check that this server can reach {brokers} (firewall rules) and that the security protocol matches the listener (TLS on or off, SASL or not).", TEST_TIMEOUT.as_secs()),
        ),
        SendError::Other { detail } if detail.to_ascii_lowercase().contains("authentication") => (
            TestFailureKind::InvalidCredentials,
            format!("The cluster refused the sign-in ({detail}). Check the user name, the password and the SASL mechanism."),
        ),
        SendError::Other { detail } if detail.contains("Unknown topic") || detail.contains("UnknownTopic") => (
            TestFailureKind::WrongUrl,
            format!("The topic {topic} does not exist on the cluster ({detail}). Create it (cloudpki does not create topics), or correct the topic name."),
        ),
        SendError::Other { detail } if detail.to_ascii_lowercase().contains("authoriz") => (
            TestFailureKind::InvalidCredentials,
            format!("The user may not use topic {topic} ({detail}). Grant it Describe and Write on the topic (and IdempotentWrite on the cluster)."),
        ),
        SendError::Other { detail } | SendError::ConnectionClosed { detail } => (
            TestFailureKind::Other,
            format!("Kafka could not be reached with these settings ({detail}). Check the bootstrap brokers, TLS and SASL settings."),
        ),
    };
    failure(kind, message)
}

pub(super) fn explain_disposition(
    cfg: &KafkaConfig,
    outcome: Disposition,
    client: &Client,
) -> TestFailure {
    let topic = &cfg.topic;
    if let Some(refusal) = client.errors().refused() {
        return failure(
            TestFailureKind::EgressDenied,
            format!("The call was blocked by this server's outbound policy and nothing was sent to that address. {refusal}"),
        );
    }
    match outcome {
        Disposition::AuthFailed { reason } if reason.contains("uthoriz") => failure(
            TestFailureKind::InvalidCredentials,
            format!("The user may not write to topic {topic}: {reason} Grant it Write on the topic (and IdempotentWrite on the cluster)."),
        ),
        Disposition::AuthFailed { reason } => failure(TestFailureKind::InvalidCredentials, reason),
        Disposition::Rejected { reason } => failure(
            TestFailureKind::PayloadRejected,
            format!("The cluster refused the test record: {reason}."),
        ),
        Disposition::Retry { reason, .. } => {
            let detail = client.errors().last().map(|(_, d)| d).unwrap_or(reason);
            failure(
                TestFailureKind::Unavailable,
                format!("The cluster did not acknowledge the test record within {} seconds ({detail}). With acks=all every in-sync replica must confirm; check the cluster's health and try again.", TEST_TIMEOUT.as_secs()),
            )
        }
        other => failure(TestFailureKind::Other, format!("Unexpected answer: {other:?}")),
    }
}
