//! Apache Kafka: one record per audit event on a topic, through librdkafka (`rdkafka`).
//!
//! - Record: key = `SubscriptionId` (one partition per subscription, so its events stay in
//!   order), value = the event's plain JSON object (the webhook's, see [`wire::event_object`]),
//!   headers `event_id` and `criticality`.
//! - Producer: idempotent (`enable.idempotence`), `acks=all`, one per destination, built on the
//!   first send and kept while the settings stay the same.
//! - A batch is a list of records (one JSON object per line); it is delivered when every record
//!   is acknowledged. A record refused for good (too large, invalid) is `Rejected` and isolated
//!   by splitting; a missing topic, refused credentials or a refused authorization keep every
//!   event queued and mark the destination failing; anything else is retried.
//! - Egress: bootstrap brokers are judged by the egress policy (IP literals when the form is
//!   checked, names when they resolve), and so are the brokers the cluster advertises, before
//!   anything is produced. Plaintext (TLS off) is allowed only for brokers listed in
//!   `CLOUDPKI_EGRESS_ALLOW`, as plain http is.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::kafka::{KafkaBrokers, KafkaPassword, KafkaTopic, KafkaUsername, SaslMechanism};
use crate::siem::egress::{BoxFuture, EgressPolicy, GuardedResolver, Lookup, Standing};
use crate::siem::explain::failure;
use crate::siem::kafka::producer::{Guard, GuardedProducer, Recorder};
use crate::siem::provider::{
    needed, settings_of, stored, BuildError, Choice, Context, Field, FieldKind, FormCheck,
    FormValues, ProviderSpec, Secrets, RANGE_EVENTS,
};
use crate::siem::wire::{self, Framing};
use crate::siem::{
    AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};
use serde::{Deserialize, Serialize};

mod health;
pub mod producer;
mod request;
mod service;

use health::*;
pub use request::*;
pub use service::*;

/// Largest record value; a bigger event has its `details` cut (brokers refuse records over
/// `message.max.bytes`, 1 MB by default).
pub const MAX_RECORD_BYTES: usize = 100_000;

/// Replaces the cut end of `details` when an event exceeded [`MAX_RECORD_BYTES`].
pub const TRUNCATION_MARKER: &str = "…[truncated by cloudpki: event exceeded 100 kB]";

/// Most records in one batch.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Most bytes of records in one batch.
pub const MAX_BATCH_BYTES: usize = 4_000_000;

/// How long a record may wait for its acknowledgement before the batch is retried.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long Test Connection waits for the cluster.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kafka's entry in the registry.
pub static SPEC: ProviderSpec = ProviderSpec {
    id: "kafka",
    label: "Apache Kafka",
    fields: &[
        Field {
            kind: FieldKind::Text,
            ..Field::address("kafka_brokers", "Bootstrap brokers", "Comma-separated host:port, e.g. kafka-1.example.com:9093,kafka-2.example.com:9093.")
        },
        Field::plain("kafka_topic", "Topic", FieldKind::Text, "The topic that receives one record per audit event; it must exist (cloudpki does not create topics)."),
        Field::plain("kafka_sasl_mechanism", "SASL mechanism", FieldKind::Select(mechanism_choices), "How cloudpki signs in to the cluster.").addressing().with_default("none"),
        Field::plain("kafka_username", "User name", FieldKind::Text, "The SASL user; leave blank with no authentication."),
        Field::secret("kafka_password", "Password", "password", "The SASL user's password; leave blank with no authentication.").with_placeholder("The SASL password"),
        Field::plain("kafka_tls", "Use TLS", FieldKind::Check, "Encrypts the connection; required unless the brokers are listed in CLOUDPKI_EGRESS_ALLOW.").addressing().with_default("on"),
    ],
    parse,
    build,
    form,
    generated: None,
    range_events: RANGE_EVENTS,
    explorer: None,
    actions: &[],
};

fn mechanism_choices() -> Vec<Choice> {
    SaslMechanism::ALL
        .iter()
        .map(|m| Choice::new(m.code(), m.label()))
        .collect()
}

/// How the client signs in.
#[derive(Clone, Debug)]
pub enum Sasl {
    None,
    Credentials {
        mechanism: SaslMechanism,
        username: KafkaUsername,
        password: KafkaPassword,
    },
}

/// A complete Kafka destination.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub brokers: KafkaBrokers,
    pub topic: KafkaTopic,
    pub sasl: Sasl,
    pub tls: bool,
}

/// What is stored (the password is sealed apart).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub brokers: Option<KafkaBrokers>,
    pub topic: Option<KafkaTopic>,
    pub mechanism: Option<SaslMechanism>,
    pub username: Option<KafkaUsername>,
    pub tls: bool,
}

fn parse(check: &mut FormCheck<'_>) -> Value {
    let egress = check.egress;
    let tls = check.ticked("kafka_tls");
    let brokers = check.required(
        "kafka_brokers",
        "Enter the bootstrap brokers as host:port, separated by commas.",
        |text| {
            let brokers = KafkaBrokers::parse(text).map_err(|e| e.to_string())?;
            check_brokers(egress, &brokers, tls)?;
            Ok(brokers)
        },
    );
    let topic = check.required(
        "kafka_topic",
        "Enter the topic that receives the events.",
        |t| KafkaTopic::parse(t).map_err(|e| e.to_string()),
    );
    let mechanism_text = check.get("kafka_sasl_mechanism");
    let mechanism = if mechanism_text.is_empty() {
        Some(SaslMechanism::None)
    } else {
        SaslMechanism::parse(&mechanism_text)
            .map_err(|e| check.error("kafka_sasl_mechanism", e.to_string()))
            .ok()
    };
    let mut username = None;
    if mechanism.is_some_and(|m| m != SaslMechanism::None) {
        username = check.required(
            "kafka_username",
            "Enter the SASL user name, or choose no authentication.",
            |t| KafkaUsername::parse(t).map_err(|e| e.to_string()),
        );
        check.secret(
            "kafka_password",
            "Enter the SASL password, or choose no authentication.",
            |raw| {
                let password = KafkaPassword::parse(raw).map_err(|e| e.to_string())?;
                let (text, hint) = (password.expose_secret().to_owned(), password.hint());
                Ok((password, text, hint))
            },
        );
    }
    stored(&Settings {
        brokers,
        topic,
        mechanism,
        username,
        tls,
    })
}

fn build(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, BuildError> {
    let settings: Settings = settings_of(settings)?;
    let sasl = match settings.mechanism.unwrap_or(SaslMechanism::None) {
        SaslMechanism::None => Sasl::None,
        mechanism => Sasl::Credentials {
            mechanism,
            username: needed(settings.username, "the SASL user name")?,
            password: KafkaPassword::parse(needed(secrets.get("password"), "the SASL password")?)
                .map_err(BuildError::invalid)?,
        },
    };
    Ok(Box::new(KafkaDestination::new(
        KafkaConfig {
            brokers: needed(settings.brokers, "the bootstrap brokers")?,
            topic: needed(settings.topic, "the topic")?,
            sasl,
            tls: settings.tls,
        },
        context.shared.lookup.clone(),
    )))
}

fn form(settings: &Value) -> FormValues {
    let Ok(settings) = settings_of::<Settings>(settings).map_err(drop) else {
        return FormValues::new();
    };
    if settings.brokers.is_none() && settings.topic.is_none() && settings.mechanism.is_none() {
        // Nothing stored: the form's defaults apply (TLS on).
        return FormValues::new();
    }
    let mut form = FormValues::new();
    if let Some(brokers) = &settings.brokers {
        form.insert("kafka_brokers".into(), brokers.as_bootstrap());
    }
    if let Some(topic) = &settings.topic {
        form.insert("kafka_topic".into(), topic.as_str().into());
    }
    if let Some(mechanism) = settings.mechanism {
        form.insert("kafka_sasl_mechanism".into(), mechanism.code().into());
    }
    if let Some(username) = &settings.username {
        form.insert("kafka_username".into(), username.as_str().into());
    }
    form.insert(
        "kafka_tls".into(),
        if settings.tls { "on" } else { "off" }.into(),
    );
    form
}

/// Refuses brokers the egress policy does not let us reach: an IP literal that is not public
/// and not allowed, and plaintext to a broker that is not allowed.
fn check_brokers(egress: &EgressPolicy, brokers: &KafkaBrokers, tls: bool) -> Result<(), String> {
    for broker in brokers.iter() {
        let standing = egress.standing(&broker.host);
        if standing == Standing::Refused {
            return Err(format!("{broker} is a private, loopback or reserved address, which SIEM calls may not reach; use the cluster's public address, or list it in CLOUDPKI_EGRESS_ALLOW if this internal destination is intended."));
        }
        if !tls && standing != Standing::Listed {
            return Err(format!("{broker} may only be reached with TLS: tick Use TLS (plaintext is allowed only for brokers listed in CLOUDPKI_EGRESS_ALLOW)."));
        }
    }
    Ok(())
}

/// A configured Kafka destination, as the forwarder holds it.
pub struct KafkaDestination {
    pub config: KafkaConfig,
    lookup: Arc<dyn Lookup>,
    /// Built on the first send; dropped after a failed one, so that a producer a broker
    /// restart left in a fatal state (an unknown producer id) is replaced.
    producer: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl KafkaDestination {
    pub fn new(config: KafkaConfig, lookup: Arc<dyn Lookup>) -> KafkaDestination {
        KafkaDestination {
            config,
            lookup,
            producer: tokio::sync::Mutex::new(None),
        }
    }

    fn client_config(&self, message_timeout: Duration) -> ClientConfig {
        let cfg = &self.config;
        let mut c = ClientConfig::new();
        // `client.dns.lookup` stays at its default: see `producer::Guard`.
        c.set("bootstrap.servers", cfg.brokers.as_bootstrap())
            .set("client.id", "cloudpki")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            )
            .set("socket.connection.setup.timeout.ms", "10000")
            // A missing topic is reported as such within seconds, not as a timeout.
            .set("topic.metadata.propagation.max.ms", "5000")
            .set("reconnect.backoff.max.ms", "5000");
        let protocol = match (&cfg.sasl, cfg.tls) {
            (Sasl::None, false) => "plaintext",
            (Sasl::None, true) => "ssl",
            (Sasl::Credentials { .. }, false) => "sasl_plaintext",
            (Sasl::Credentials { .. }, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Sasl::Credentials {
            mechanism,
            username,
            password,
        } = &cfg.sasl
        {
            c.set("sasl.mechanism", mechanism.code())
                .set("sasl.username", username.as_str())
                .set("sasl.password", password.expose_secret());
        }
        c
    }

    /// Resolves the bootstrap brokers through the egress policy (refusing private answers),
    /// then builds the producer.
    async fn build(
        &self,
        egress: &EgressPolicy,
        message_timeout: Duration,
    ) -> Result<Client, SendError> {
        let resolver = GuardedResolver::new(Arc::new(egress.clone()), self.lookup.clone());
        for broker in self.config.brokers.iter().filter(|b| b.ip().is_none()) {
            resolver
                .resolve_allowed(&broker.host)
                .await
                .map_err(|err| match egress_reason(&err) {
                    Some(reason) => SendError::EgressDenied { reason },
                    None => SendError::Dns {
                        detail: format!("{}: {err}", broker.host),
                    },
                })?;
        }
        // Every lookup librdkafka makes from now on (bootstrap again, advertised brokers,
        // reconnects) goes through the same guard: the check above only explains early.
        let guard = Guard::new(
            Recorder::default(),
            Arc::new(egress.clone()),
            self.lookup.clone(),
            tokio::runtime::Handle::current(),
        );
        let producer =
            GuardedProducer::new(&self.client_config(message_timeout), guard).map_err(|err| {
                SendError::Other {
                    detail: format!("the Kafka client could not be set up: {err}"),
                }
            })?;
        Ok(Client { producer })
    }

    /// The shared producer, built on first use.
    async fn producer(&self, egress: &EgressPolicy) -> Result<Arc<Client>, SendError> {
        let mut slot = self.producer.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = self.build(egress, DELIVERY_TIMEOUT).await?;
        check_advertised(&client, egress, &self.config.topic).await?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn send_batch(
        &self,
        egress: &EgressPolicy,
        batch: &Batch,
    ) -> Result<Disposition, SendError> {
        let producer = match self.producer(egress).await {
            Ok(p) => p,
            Err(err) => return Ok(disposition_of_setup(err)),
        };
        let outcome = produce(&producer, &self.config.topic, batch).await;
        if !matches!(
            outcome,
            Disposition::Delivered | Disposition::Rejected { .. }
        ) {
            *self.producer.lock().await = None;
        }
        Ok(outcome)
    }

    async fn test(
        &self,
        egress: &EgressPolicy,
        subscription_id: Uuid,
    ) -> Result<TestSuccess, TestFailure> {
        // A fresh client with a short timeout: the test proves the settings as typed now.
        let client = self
            .build(egress, TEST_TIMEOUT)
            .await
            .map_err(|err| explain_setup(&self.config, err))?;
        let topic = &self.config.topic;
        check_advertised(&client, egress, topic)
            .await
            .map_err(|err| explain_setup(&self.config, err))?;
        let probe = wire::test_log(subscription_id, Utc::now());
        let batches = build_batches(std::slice::from_ref(&probe));
        let batch = batches.first().ok_or_else(|| {
            failure(
                TestFailureKind::Other,
                "The test record could not be built.".into(),
            )
        })?;
        let (outcome, delivery) = produce_with_report(&client, topic, batch).await;
        match outcome {
            Disposition::Delivered => {
                let query = format!("topic {topic}, key {subscription_id}, header event_id=0");
                Ok(TestSuccess {
                    message: format!(
                        "Kafka acknowledged the test record ({}). Find it in {query}.",
                        delivery.unwrap_or_else(|| "acks=all".into())
                    ),
                    query,
                    explorer_url: None,
                })
            }
            other => Err(explain_disposition(&self.config, other, &client)),
        }
    }
}

impl std::fmt::Debug for KafkaDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDestination")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SiemDestination for KafkaDestination {
    fn provider(&self) -> &'static str {
        SPEC.label
    }

    fn build_batches(&self, logs: &[AuditLog], _now: DateTime<Utc>) -> Vec<Batch> {
        build_batches(logs)
    }

    fn send<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        batch: &'a Batch,
    ) -> BoxFuture<'a, Result<Disposition, SendError>> {
        Box::pin(self.send_batch(egress, batch))
    }

    fn test_connection<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        egress: &'a EgressPolicy,
        subscription_id: Uuid,
    ) -> BoxFuture<'a, Result<TestSuccess, TestFailure>> {
        Box::pin(self.test(egress, subscription_id))
    }
}

#[cfg(test)]
mod tests;
