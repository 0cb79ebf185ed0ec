//! Syslog (RFC 5424) for the SIEMs that speak it: QRadar, ArcSight, LogRhythm, Graylog, Wazuh
//! and rsyslog or syslog-ng relays.
//!
//! - each event is one RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID - MSG`,
//!   facility 13 (log audit), severity from the event's criticality (High 3, Medium 4, Low 6),
//!   TIMESTAMP when it happened, MSGID its Event ID;
//! - MSG is the log as one line of JSON (`rfc5424`: the same object the webhook and Kafka carry,
//!   `Sequence`, `Hash` and `EventUuid` included) or ArcSight's Common Event Format (`cef`:
//!   signature id = Event ID, severity High 8, Medium 6, Low 3, `externalId` = `EventUuid`,
//!   `cn1` = `Sequence`, `cs2` = `Hash`);
//! - a message is at most [`MAX_MESSAGE_BYTES`] (rsyslog's default limit): a longer event's
//!   details are cut with a marker, every identifying field kept;
//! - on the wire, RFC 5425 / RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`.
//!
//! Sending (`service`): one connection per batch through the egress guard, TLS (the public
//! roots plus a configured CA, mutual TLS optional) or plain TCP, closed cleanly; failures
//! explained (name, issuer, refused, timeout), an error after the first byte "maybe sent".
//! Over RELP (`relp`), every message is acknowledged by the receiver before it counts; a batch
//! cut short keeps its acknowledged messages delivered.
//!
//! Fields: `syslog_host`, `syslog_port` (6514; 20514 for RELP), `syslog_transport` (`tls`,
//! `relp` for RELP over TLS, or `tcp` for hosts the outbound policy allows as internal), `syslog_format` (`rfc5424` or `cef`),
//! `syslog_ca_pem` (a CA to trust beyond the public ones), `syslog_client_cert_pem` and the
//! write-only `syslog_client_key_pem` (mutual TLS), `syslog_app_name` (`EZCA`).

mod relp;
mod request;
mod service;

pub use request::*;
pub use service::*;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::syslog::{parse_port, AppName, SyslogFormat, SyslogHost, SyslogTransport};
use crate::siem::egress::{BoxFuture, EgressPolicy, Lookup, Standing};
use crate::siem::provider::{
    needed, settings_of, stored, BuildError, Choice, Context, Field, FieldKind, FormCheck,
    FormValues, ProviderSpec, Secrets, RANGE_EVENTS,
};
use crate::siem::{
    wire, AuditLog, Batch, Disposition, SendError, SiemDestination, TestFailure, TestFailureKind,
    TestSuccess,
};

/// Most events in one batch (one connection).
pub const MAX_BATCH_EVENTS: usize = 1000;

/// Syslog's entry in the registry.
pub static SPEC: ProviderSpec = ProviderSpec {
    id: "syslog",
    label: "Syslog (RFC 5424)",
    fields: &[
        Field::plain("syslog_host", "Host", FieldKind::Text, "The syslog receiver's host name or IP address (QRadar, ArcSight, LogRhythm, Graylog, Wazuh or a relay), e.g. siem.example.com.").addressing(),
        Field::plain("syslog_port", "Port", FieldKind::Text, "6514 is TLS syslog's port (RFC 5425).").addressing().with_default("6514"),
        Field::plain("syslog_transport", "Transport", FieldKind::Select(transport_choices), "TLS checks the receiver's certificate. Plain TCP only reaches hosts listed in CLOUDPKI_EGRESS_ALLOW.").addressing().with_default("tls"),
        Field::plain("syslog_format", "Format", FieldKind::Select(format_choices), "RFC 5424 carries the log as one line of JSON; CEF suits ArcSight and QRadar's CEF parser.").with_default("rfc5424"),
        Field::plain("syslog_ca_pem", "CA certificate (optional)", FieldKind::Lines, "A CA to trust beyond the public ones, in PEM, when the receiver's certificate comes from your own CA.").with_placeholder("-----BEGIN CERTIFICATE-----"),
        Field::plain("syslog_client_cert_pem", "Client certificate (optional)", FieldKind::Lines, "For mutual TLS: the certificate (PEM, chain after it) cloudpki shows the receiver.").with_placeholder("-----BEGIN CERTIFICATE-----"),
        Field {
            sealed_as: Some("client_key"),
            ..Field::plain("syslog_client_key_pem", "Client key", FieldKind::SecretLines, "For mutual TLS: the client certificate's private key (PEM). Write-only: stored encrypted, never shown again.")
        }
        .with_placeholder("-----BEGIN PRIVATE KEY-----"),
        Field::plain("syslog_app_name", "App name", FieldKind::Text, "RFC 5424's APP-NAME of every message; searches and parsers match on it.").with_default("EZCA"),
    ],
    parse,
    build,
    form,
    generated: None,
    range_events: RANGE_EVENTS,
    explorer: None,
    actions: &[],
};

fn transport_choices() -> Vec<Choice> {
    vec![
        Choice::new("tls", "TLS (RFC 5425)"),
        Choice::new(
            "relp",
            "RELP over TLS (rsyslog), every message acknowledged",
        ),
        Choice::new("tcp", "Plain TCP (RFC 6587), internal relays only"),
    ]
}

fn format_choices() -> Vec<Choice> {
    vec![
        Choice::new("rfc5424", "RFC 5424, the log as JSON"),
        Choice::new("cef", "CEF (ArcSight Common Event Format)"),
    ]
}

/// What is stored (the client key is sealed apart).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub host: Option<SyslogHost>,
    pub port: Option<u16>,
    pub transport: Option<SyslogTransport>,
    pub format: Option<SyslogFormat>,
    pub ca_pem: Option<String>,
    pub client_cert_pem: Option<String>,
    pub app_name: Option<AppName>,
}

/// A PEM certificate list as typed: at least one certificate.
fn pem_certificates(text: &str) -> Result<String, String> {
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err("Paste the certificate in PEM: the lines from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----.".into());
    }
    Ok(text.trim().to_owned())
}

fn parse(check: &mut FormCheck<'_>) -> Value {
    let egress = check.egress;
    let transport = SyslogTransport::parse(&check.get("syslog_transport"))
        .map_err(|e| check.error("syslog_transport", e))
        .ok();
    let host = check.required(
        "syslog_host",
        "Enter the syslog receiver's host name or IP address.",
        |text| {
            let host = SyslogHost::parse(text)?;
            check_host(egress, &host, transport.unwrap_or(SyslogTransport::Tls))?;
            Ok(host)
        },
    );
    let port = parse_port(
        &check.get("syslog_port"),
        transport.unwrap_or(SyslogTransport::Tls),
    )
    .map_err(|e| check.error("syslog_port", e))
    .ok();
    let format = SyslogFormat::parse(&check.get("syslog_format"))
        .map_err(|e| check.error("syslog_format", e))
        .ok();
    let app = AppName::parse(&check.get("syslog_app_name"))
        .map_err(|e| check.error("syslog_app_name", e))
        .ok();
    let ca = check.optional("syslog_ca_pem", pem_certificates);
    let client_cert = check.optional("syslog_client_cert_pem", pem_certificates);
    let mut client_key = None;
    if client_cert.is_some() {
        client_key = check.secret(
            "syslog_client_key_pem",
            "Paste the client certificate's private key (PEM), or clear the client certificate.",
            |raw| {
                if !raw.contains("PRIVATE KEY-----") {
                    return Err("Paste the private key in PEM: the lines from -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) to its END line.".into());
                }
                Ok((raw.to_owned(), raw.to_owned(), "a PEM private key".to_owned()))
            },
        );
    } else {
        check.unseal("client_key");
    }
    // The TLS settings must hold together (the key matches the certificate, the CA parses).
    if transport.is_some_and(SyslogTransport::uses_tls) {
        let client = client_cert.as_deref().zip(client_key.as_deref());
        if let Err(e) = tls_config(ca.as_deref(), client) {
            let field = match e.part {
                TlsPart::Ca => "syslog_ca_pem",
                TlsPart::Client | TlsPart::Library => "syslog_client_cert_pem",
            };
            let e = e.message;
            check.error(field, format!("{}{}.", e[..1].to_uppercase(), &e[1..]));
        }
    }
    if let Some(key) = &client_key {
        check.use_secret("client_key", key.clone());
    }
    stored(&Settings {
        host,
        port,
        transport,
        format,
        ca_pem: ca,
        client_cert_pem: client_cert,
        app_name: app,
    })
}

/// Refuses a receiver the egress policy does not let us reach: a non-public IP literal that is
/// not allowed, and plain TCP to a host that is not allowed.
fn check_host(
    egress: &EgressPolicy,
    host: &SyslogHost,
    transport: SyslogTransport,
) -> Result<(), String> {
    let standing = egress.standing(host.as_str());
    if standing == Standing::Refused {
        return Err(format!("{host} is a private, loopback or reserved address, which SIEM calls may not reach; use the receiver's public address, or list it in CLOUDPKI_EGRESS_ALLOW if this internal receiver is intended."));
    }
    if transport == SyslogTransport::Tcp && standing != Standing::Listed {
        return Err(format!("Plain TCP sends the audit log unencrypted, so it is only for receivers listed in CLOUDPKI_EGRESS_ALLOW; choose TLS for {host}."));
    }
    Ok(())
}

fn build(
    settings: &Value,
    secrets: &Secrets,
    context: Context<'_>,
) -> Result<Box<dyn SiemDestination>, BuildError> {
    let settings: Settings = settings_of(settings)?;
    let host = needed(settings.host, "the host")?;
    let transport = settings.transport.unwrap_or(SyslogTransport::Tls);
    let format = settings.format.unwrap_or(SyslogFormat::Rfc5424);
    let app = settings.app_name.unwrap_or_default();
    let tls = match transport {
        SyslogTransport::Tls | SyslogTransport::Relp => {
            let client = match &settings.client_cert_pem {
                Some(cert) => Some((
                    cert.as_str(),
                    needed(secrets.get("client_key"), "the client key")?.as_str(),
                )),
                None => None,
            };
            Some(Arc::new(
                tls_config(settings.ca_pem.as_deref(), client).map_err(BuildError::invalid)?,
            ))
        }
        SyslogTransport::Tcp => None,
    };
    Ok(Box::new(SyslogDestination {
        endpoint: Endpoint {
            host,
            port: settings.port.unwrap_or(transport.default_port()),
            transport,
            tls,
        },
        format,
        app,
        hostname: context.hostname.to_owned(),
        lookup: context.shared.lookup.clone(),
    }))
}

fn form(settings: &Value) -> FormValues {
    let Ok(settings) = settings_of::<Settings>(settings).map_err(drop) else {
        return FormValues::new();
    };
    let mut form = FormValues::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            form.insert(name.to_owned(), value);
        }
    };
    put("syslog_host", settings.host.map(|h| h.as_str().to_owned()));
    put("syslog_port", settings.port.map(|p| p.to_string()));
    put(
        "syslog_transport",
        settings.transport.map(|t| t.as_str().to_owned()),
    );
    put(
        "syslog_format",
        settings.format.map(|f| f.as_str().to_owned()),
    );
    put("syslog_ca_pem", settings.ca_pem);
    put("syslog_client_cert_pem", settings.client_cert_pem);
    put(
        "syslog_app_name",
        settings.app_name.map(|a| a.as_str().to_owned()),
    );
    form
}

/// A configured syslog receiver, as the forwarder holds it.
pub struct SyslogDestination {
    pub endpoint: Endpoint,
    pub format: SyslogFormat,
    pub app: AppName,
    /// The HOSTNAME of every message: the name of this cloudpki deployment.
    pub hostname: String,
    pub lookup: Arc<dyn Lookup>,
}

impl SyslogDestination {
    /// Batches of at most [`MAX_BATCH_EVENTS`] octet-counted messages.
    pub fn batches(&self, logs: &[AuditLog]) -> Vec<Batch> {
        logs.chunks(MAX_BATCH_EVENTS)
            .map(|chunk| Batch {
                event_uuids: chunk.iter().map(|l| l.uuid).collect(),
                body: chunk
                    .iter()
                    .flat_map(|log| frame(&message(log, self.format, &self.hostname, &self.app)))
                    .collect(),
            })
            .collect()
    }

    async fn send_batch(
        &self,
        egress: &EgressPolicy,
        batch: &Batch,
    ) -> Result<Disposition, SendError> {
        match send_framed(&self.endpoint, egress, self.lookup.clone(), &batch.body).await {
            Ok(()) => Ok(Disposition::Delivered),
            Err(SyslogError::Denied(reason)) => Err(SendError::EgressDenied { reason }),
            Err(SyslogError::NotSent { detail, .. }) => Ok(Disposition::Retry {
                after: None,
                reason: format!("The syslog receiver could not be reached: {detail}."),
            }),
            Err(SyslogError::Tls(reason)) => Ok(Disposition::AuthFailed {
                reason: format!("TLS with the syslog receiver failed: {reason}."),
            }),
            // Plain syslog acknowledges nothing (0): every message of the batch is maybe sent.
            Err(SyslogError::MaybeSent {
                acknowledged,
                reason,
            }) => Ok(Disposition::PartlyAcknowledged {
                acknowledged,
                reason: format!("The syslog connection broke: {reason}."),
            }),
            Err(SyslogError::Refused(reason)) => Ok(Disposition::AuthFailed {
                reason: format!("The syslog receiver refused the session: {reason}."),
            }),
        }
    }

    async fn test(
        &self,
        egress: &EgressPolicy,
        subscription_id: Uuid,
    ) -> Result<TestSuccess, TestFailure> {
        let log = wire::test_log(subscription_id, Utc::now());
        let body = frame(&message(&log, self.format, &self.hostname, &self.app));
        let at = format!("{}:{}", self.endpoint.host, self.endpoint.port);
        let failure = |kind, message: String| TestFailure { kind, message };
        match send_framed(&self.endpoint, egress, self.lookup.clone(), &body).await {
            Ok(()) => {
                let query = format!("APP-NAME {}, MSGID 0", self.app.as_str());
                let message = match self.endpoint.transport {
                    SyslogTransport::Relp => format!("The syslog receiver at {at} acknowledged the test message over RELP (TLS). Find it by {query}."),
                    SyslogTransport::Tls => format!("The syslog receiver at {at} took the test message over TLS and closed the session cleanly (syslog sends no acknowledgement). Find it by {query}."),
                    SyslogTransport::Tcp => format!("The syslog receiver at {at} took the test message over plain TCP and closed the session cleanly (syslog sends no acknowledgement). Find it by {query}."),
                };
                Ok(TestSuccess {
                    message,
                    query,
                    explorer_url: None,
                })
            }
            Err(SyslogError::Denied(reason)) => Err(failure(TestFailureKind::EgressDenied, format!("The call was blocked by this server's outbound policy and nothing was sent. {reason}."))),
            Err(SyslogError::NotSent { why: Unreached::Refused, detail }) => Err(failure(TestFailureKind::ConnectionRefused, format!("Nothing was sent: {detail}. Check the host and port and that the receiver listens for TCP syslog there."))),
            Err(SyslogError::NotSent { why: Unreached::TimedOut, detail }) => Err(failure(TestFailureKind::Timeout, format!("Nothing was sent: {detail}. Check that this server can reach {at} (firewall rules)."))),
            Err(SyslogError::NotSent { why: Unreached::Unresolved, detail }) => Err(failure(TestFailureKind::Dns, format!("Nothing was sent: {detail}. Check the spelling of the host."))),
            Err(SyslogError::NotSent { why: Unreached::Failed, detail }) => Err(failure(TestFailureKind::Other, format!("Nothing was sent: {detail}."))),
            Err(SyslogError::Tls(reason)) => Err(failure(TestFailureKind::Tls, format!("TLS with {at} failed: {reason}."))),
            Err(SyslogError::MaybeSent { reason, .. }) => Err(failure(TestFailureKind::ConnectionClosed, format!("The connection to {at} broke: {reason}."))),
            Err(SyslogError::Refused(reason)) => Err(failure(TestFailureKind::Other, format!("Nothing was delivered: {reason}."))),
        }
    }
}

impl std::fmt::Debug for SyslogDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogDestination")
            .field("host", &self.endpoint.host)
            .field("port", &self.endpoint.port)
            .field("transport", &self.endpoint.transport)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl SiemDestination for SyslogDestination {
    fn provider(&self) -> &'static str {
        SPEC.label
    }

    fn build_batches(&self, logs: &[AuditLog], _now: DateTime<Utc>) -> Vec<Batch> {
        self.batches(logs)
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
