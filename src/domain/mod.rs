//! Domain types: parsed, validated values that the rest of the program trusts.
//!
//! Nothing here knows about HTTP or SQL.

/// Serialises a value type as its text and reads it back through its parser, so stored
/// settings are typed: what deserialises is as valid as what the form accepted.
macro_rules! serde_as_text {
    ($($ty:ty => $parse:path, $text:expr;)+) => {$(
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let text: &str = &$text(self);
                s.serialize_str(text)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                $parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )+};
}

/// A DNS host name as people type them: dot-separated labels of letters, digits, `-` and `_`
/// (not at a label's ends), at most 63 characters each and 253 in all. IP addresses are judged
/// by their own parser.
pub fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

serde_as_text! {
    syslog::SyslogHost => syslog::SyslogHost::parse, syslog::SyslogHost::as_str;
    syslog::AppName => syslog::AppName::parse, syslog::AppName::as_str;
    syslog::SyslogTransport => syslog::SyslogTransport::parse, |v: &syslog::SyslogTransport| v.as_str();
    syslog::SyslogFormat => syslog::SyslogFormat::parse, |v: &syslog::SyslogFormat| v.as_str();
    datadog::DatadogSite => datadog::DatadogSite::parse, |v: &datadog::DatadogSite| v.code();
    datadog::DatadogIntakeUrl => datadog::DatadogIntakeUrl::parse, datadog::DatadogIntakeUrl::as_str;
    datadog::DatadogApiUrl => datadog::DatadogApiUrl::parse, datadog::DatadogApiUrl::as_str;
    hec::HecUrl => hec::HecUrl::parse, hec::HecUrl::as_str;
    hec::SplunkIndex => hec::SplunkIndex::parse, hec::SplunkIndex::as_str;
    hec::SourceType => hec::SourceType::parse, hec::SourceType::as_str;
    hec::HecSource => hec::HecSource::parse, hec::HecSource::as_str;
    hec::HecHost => hec::HecHost::parse, hec::HecHost::as_str;
    sentinel::AzureCloud => sentinel::AzureCloud::parse, |v: &sentinel::AzureCloud| v.code();
    sentinel::LoginBaseUrl => sentinel::LoginBaseUrl::parse, sentinel::LoginBaseUrl::as_str;
    sentinel::TenantId => sentinel::TenantId::parse, sentinel::TenantId::as_str;
    sentinel::ClientId => sentinel::ClientId::parse, sentinel::ClientId::as_str;
    sentinel::IngestionEndpoint => sentinel::IngestionEndpoint::parse, sentinel::IngestionEndpoint::as_str;
    sentinel::DcrImmutableId => sentinel::DcrImmutableId::parse, sentinel::DcrImmutableId::as_str;
    sentinel::StreamName => sentinel::StreamName::parse, sentinel::StreamName::as_str;
    webhook::WebhookUrl => webhook::WebhookUrl::parse, webhook::WebhookUrl::as_str;
    kafka::KafkaBrokers => kafka::KafkaBrokers::parse, kafka::KafkaBrokers::as_bootstrap;
    kafka::KafkaTopic => kafka::KafkaTopic::parse, kafka::KafkaTopic::as_str;
    kafka::SaslMechanism => kafka::SaslMechanism::parse, |v: &kafka::SaslMechanism| v.code();
    kafka::KafkaUsername => kafka::KafkaUsername::parse, kafka::KafkaUsername::as_str;
}

pub mod account;
pub mod datadog;
pub mod destination;
pub mod events;
pub mod hec;
pub mod ingest;
pub mod kafka;
pub mod secret;
pub mod sentinel;
pub mod syslog;
pub mod webhook;
