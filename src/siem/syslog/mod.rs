//! Syslog (RFC 5424) for the SIEMs that speak it: QRadar, ArcSight, LogRhythm, Graylog, Wazuh
//! and rsyslog or syslog-ng relays. Issue "[5 of 5]" builds it; what is here so far is the
//! wire format, complete and tested, not yet a provider in [`super::PROVIDERS`]:
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
//!
//! Still to build (the list): the spec and form (host, port, transport, format, CA,
//! mutual TLS, app name), the `SiemDestination` with Test Connection, and registering it.

mod request;
mod service;

pub use request::*;
pub use service::*;
