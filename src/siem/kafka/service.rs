//! Sending: the guarded producer, per-record delivery reports, and how each outcome is
//! classified.

use super::*;

/// A producer and what its librdkafka reported.
pub(super) struct Client {
    pub(super) producer: GuardedProducer,
}

impl Client {
    pub(super) fn errors(&self) -> &Recorder {
        self.producer.recorder()
    }
}

pub(super) fn egress_reason(err: &std::io::Error) -> Option<String> {
    crate::siem::egress::find_resolve_denied(err).map(|d| d.to_string())
}

/// Fetches the topic's metadata (proving the brokers answer and the credentials work), checks
/// that the topic exists and that every broker the cluster advertises may be reached.
pub(super) async fn check_advertised(
    client: &Client,
    egress: &EgressPolicy,
    topic: &KafkaTopic,
) -> Result<(), SendError> {
    let metadata = {
        let kafka = client.producer.client().clone();
        let topic = topic.as_str().to_owned();
        let fetch =
            tokio::task::spawn_blocking(move || kafka.fetch_metadata(Some(&topic), TEST_TIMEOUT));
        tokio::select! {
            fetched = fetch => fetched.map_err(|err| SendError::Other {
                detail: err.to_string(),
            })?,
            // A broker address refused by the egress policy: no need to wait for the timeout.
            () = client.errors().wait_refused() => {
                return Err(SendError::EgressDenied {
                    reason: client.errors().refused().unwrap_or_default(),
                });
            }
        }
    };
    let metadata = metadata.map_err(|err| kafka_send_error(&err, client.errors()))?;
    for broker in metadata.brokers() {
        let host = broker.host();
        if egress.standing(host) == Standing::Refused {
            return Err(SendError::EgressDenied {
                reason: format!("The cluster advertises broker {host}:{}, a private or loopback address that SIEM calls may not reach; list it in CLOUDPKI_EGRESS_ALLOW if this internal cluster is intended.", broker.port()),
            });
        }
    }
    match metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic.as_str())
    {
        Some(t) => match t.error() {
            None => Ok(()),
            Some(code) => Err(SendError::Other {
                detail: format!("topic {topic}: {}", RDKafkaErrorCode::from(code)),
            }),
        },
        None => Err(SendError::Other {
            detail: format!(
                "topic {topic}: {}",
                RDKafkaErrorCode::UnknownTopicOrPartition
            ),
        }),
    }
}

/// A transport-level failure from librdkafka, with its last reported reason.
pub(super) fn kafka_send_error(err: &KafkaError, context: &Recorder) -> SendError {
    if let Some(reason) = context.refused() {
        if !is_refusal_by_the_cluster(err.rdkafka_error_code()) {
            return SendError::EgressDenied { reason };
        }
    }
    let reason = context
        .last()
        .map(|(_, reason)| reason)
        .unwrap_or_else(|| err.to_string());
    match err.rdkafka_error_code() {
        Some(RDKafkaErrorCode::Resolve) => SendError::Dns { detail: reason },
        Some(RDKafkaErrorCode::SSL) => SendError::Tls { detail: reason },
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::MessageTimedOut) => {
            match context.last() {
                Some((Some(RDKafkaErrorCode::Resolve), detail)) => SendError::Dns { detail },
                Some((Some(RDKafkaErrorCode::SSL), detail)) => SendError::Tls { detail },
                Some((_, detail)) if detail.contains("Connection refused") => {
                    SendError::ConnectionRefused { detail }
                }
                Some((Some(RDKafkaErrorCode::Authentication), detail)) => SendError::Other {
                    detail: format!("authentication: {detail}"),
                },
                _ => SendError::Timeout,
            }
        }
        _ if reason.contains("Connection refused") => {
            SendError::ConnectionRefused { detail: reason }
        }
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            SendError::Other {
                detail: format!("authentication: {reason}"),
            }
        }
        _ => SendError::Other { detail: reason },
    }
}

/// A record the cluster refused for good (too large, invalid).
pub(super) fn is_record_refusal(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// The cluster refused the settings: the topic, the credentials or an authorization.
pub(super) fn is_settings_refusal(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
        )
    )
}

/// Whether the cluster itself answered with a refusal, which explains a failure better than an
/// address the egress policy refused along the way.
pub(super) fn is_refusal_by_the_cluster(code: Option<RDKafkaErrorCode>) -> bool {
    is_record_refusal(code) || is_settings_refusal(code)
}

/// What a failure to set up the client means for the batch: egress refusals and refused
/// credentials or topics need the settings changed; the rest is retried.
pub(super) fn disposition_of_setup(err: SendError) -> Disposition {
    let reason = err.to_string();
    match &err {
        SendError::EgressDenied { .. } => Disposition::AuthFailed { reason },
        SendError::Other { detail } if is_configuration(detail) => Disposition::AuthFailed {
            reason: format!("Kafka refused the settings ({detail}); open Settings and fix them."),
        },
        _ => Disposition::Retry {
            after: None,
            reason,
        },
    }
}

pub(super) fn is_configuration(detail: &str) -> bool {
    let lower = detail.to_ascii_lowercase();
    lower.contains("authentication")
        || lower.contains("authorization")
        || lower.contains("unknown topic")
        || lower.contains("topic ")
}

/// Produces every record of `batch` and waits for each acknowledgement.
pub(super) async fn produce(producer: &Client, topic: &KafkaTopic, batch: &Batch) -> Disposition {
    produce_with_report(producer, topic, batch).await.0
}

pub(super) async fn produce_with_report(
    client: &Client,
    topic: &KafkaTopic,
    batch: &Batch,
) -> (Disposition, Option<String>) {
    let mut pending = Vec::with_capacity(batch.len());
    let mut refused_at = None;
    for line in batch.body.split(|b| *b == b'\n') {
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            return (
                Disposition::Rejected {
                    reason: "the record could not be built".into(),
                },
                None,
            );
        };
        let key = value["SubscriptionId"].as_str().unwrap_or_default();
        let event_id = value["EventID"].to_string();
        let criticality = value["Criticality"].as_str().unwrap_or_default();
        let headers: [(&str, &[u8]); 2] = [
            ("event_id", event_id.as_bytes()),
            ("criticality", criticality.as_bytes()),
        ];
        match client
            .producer
            .send(topic.as_str(), key.as_bytes(), line, &headers)
        {
            Ok(delivery) => pending.push(delivery),
            Err(err) => {
                // Not queued; the records queued before it still go out: wait for them.
                refused_at = Some(classify(&err, client.errors()));
                break;
            }
        }
    }
    // An address the egress policy refused fails the batch at once instead of at the
    // delivery timeout: the records are purged, and the refusal explains why.
    let refused = client.errors().wait_refused();
    tokio::pin!(refused);
    let mut purged = false;
    // Per record, in batch order (one key, so one partition: acknowledged in order).
    let mut results: Vec<Result<(), Disposition>> = Vec::with_capacity(batch.len());
    let mut report = None;
    for mut delivery in pending {
        let answer = loop {
            tokio::select! {
                answer = &mut delivery => break answer,
                () = &mut refused, if !purged => {
                    client.producer.purge();
                    purged = true;
                }
            }
        };
        results.push(match answer {
            Ok(Ok(delivered)) => {
                report = Some(format!(
                    "partition {}, offset {}",
                    delivered.partition, delivered.offset
                ));
                Ok(())
            }
            Ok(Err(err)) => Err(classify(&err, client.errors())),
            Err(_) => Err(Disposition::Retry {
                after: None,
                reason: "the Kafka client stopped before acknowledging".into(),
            }),
        });
    }
    if let Some(refused) = refused_at {
        results.push(Err(refused));
    }
    (batch_outcome(results), report)
}

/// What a batch's per-record results mean: a refused record after acknowledged ones is a
/// partial accept (nothing after it is resent as new); any other failure once some records
/// were acknowledged leaves the batch maybe stored, so its resend is counted.
pub(super) fn batch_outcome(results: Vec<Result<(), Disposition>>) -> Disposition {
    let Some(first) = results.iter().position(Result::is_err) else {
        return Disposition::Delivered;
    };
    let acked_after = results[first + 1..].iter().any(Result::is_ok);
    let acked = results.iter().filter(|r| r.is_ok()).count();
    let failure = results
        .into_iter()
        .nth(first)
        .and_then(Result::err)
        .unwrap_or(Disposition::Retry {
            after: None,
            reason: "a record was not acknowledged".into(),
        });
    match failure {
        Disposition::Rejected { reason } if first > 0 && !acked_after => {
            Disposition::PartialAccept {
                accepted: first,
                reason,
            }
        }
        other if acked == 0 => other,
        Disposition::Retry { after, reason } | Disposition::Unconfirmed { after, reason } => {
            Disposition::Unconfirmed {
                after,
                reason: format!("{reason}; {acked} record(s) of the batch were acknowledged, so their resend is counted as possible duplicates"),
            }
        }
        Disposition::Rejected { reason }
        | Disposition::AuthFailed { reason }
        | Disposition::Gone { reason }
        | Disposition::PartialAccept { reason, .. } => Disposition::Unconfirmed {
            after: None,
            reason: format!("{reason}; {acked} record(s) of the batch were acknowledged, so their resend is counted as possible duplicates"),
        },
        other => other,
    }
}

/// What a refused or failed record means for the batch.
pub fn classify(err: &KafkaError, context: &Recorder) -> Disposition {
    let code = err.rdkafka_error_code();
    if let Some(refusal) = context.refused() {
        if !is_refusal_by_the_cluster(code) {
            return Disposition::AuthFailed {
                reason: format!("The call was blocked by this server's outbound policy. {refusal}"),
            };
        }
    }
    let reason = match context.last() {
        Some((_, last)) => format!("{err} ({last})"),
        None => err.to_string(),
    };
    if is_record_refusal(code) {
        Disposition::Rejected { reason }
    } else if is_settings_refusal(code) {
        Disposition::AuthFailed {
            reason: format!(
                "Kafka refused the records: {reason}. Open Settings and test the connection."
            ),
        }
    } else {
        Disposition::Retry {
            after: None,
            reason: format!("Kafka did not acknowledge the records: {reason}"),
        }
    }
}
