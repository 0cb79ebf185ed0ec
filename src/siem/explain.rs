//! One explainer for a connection test that got no HTTP answer. The causes and their fixes are
//! the same for every SIEM; a provider only says, through [`Hints`], what it sent, which
//! setting to check and what is particular to it (ports, certificates, proxies).

use std::time::Duration;

use super::{SendError, TestFailure, TestFailureKind};

/// What a provider adds to the shared explanations. Every sentence is complete on its own.
#[derive(Clone, Copy, Debug)]
pub struct Hints<'a> {
    /// What the test sent: "test log", "test event", "test record".
    pub sent: &'a str,
    /// The setting that holds the address, with its article: "the Logs intake URL".
    pub address: &'a str,
    /// Where it listens: "port 443".
    pub port: &'a str,
    /// After "Check the spelling of {address}": a way to fill it in, e.g. ", or choose your
    /// Datadog site to fill it in". Often empty.
    pub dns: &'a str,
    /// A sentence after "Check the host and port of {address}."
    pub refused: &'a str,
    /// What to do when the connection closes without an answer.
    pub closed: &'a str,
    /// What to do when TLS fails.
    pub tls: &'a str,
    /// How long the client waited.
    pub timeout: Duration,
}

impl Default for Hints<'_> {
    fn default() -> Self {
        Hints {
            sent: "test event",
            address: "the URL",
            port: "port 443",
            dns: "",
            refused: "",
            closed: "Try again in a few minutes; if it persists, check the receiving side's logs.",
            tls: "Check that the URL starts with https:// and that the server has a valid, publicly trusted certificate.",
            timeout: super::egress::REQUEST_TIMEOUT,
        }
    }
}

/// A failed connection test with its cause.
pub fn failure(kind: TestFailureKind, message: String) -> TestFailure {
    TestFailure { kind, message }
}

/// Explains a transport failure of a connection test to `host` in plain language.
pub fn send_error(err: SendError, host: &str, hints: &Hints<'_>) -> TestFailure {
    let Hints {
        sent,
        address,
        port,
        dns,
        refused,
        closed,
        tls,
        timeout,
    } = hints;
    let (kind, message) = match &err {
        SendError::Dns { .. } => (
            TestFailureKind::Dns,
            format!("The host name {host} could not be found (DNS). Check the spelling of {address}{dns}; if it is right, check this server's DNS."),
        ),
        SendError::ConnectionRefused { .. } => (
            TestFailureKind::ConnectionRefused,
            format!("{host} refused the connection. Check the host and port of {address} ({port}).{}", spaced(refused)),
        ),
        SendError::ConnectionClosed { .. } => (
            TestFailureKind::ConnectionClosed,
            format!("{host} closed the connection without answering. {closed}"),
        ),
        SendError::Tls { detail } => (
            TestFailureKind::Tls,
            format!("The secure (TLS) connection to {host} failed ({detail}). {tls}"),
        ),
        SendError::Timeout => (
            TestFailureKind::Timeout,
            format!("{host} did not answer within {} seconds. Check that this server can reach it on {port} (firewall or outbound proxy rules), then try again.", timeout.as_secs()),
        ),
        SendError::EgressDenied { reason } => (
            TestFailureKind::EgressDenied,
            format!("The call was blocked by this server's outbound policy and nothing was sent. {reason}"),
        ),
        SendError::Other { detail } => (
            TestFailureKind::Other,
            format!("Sending the {sent} to {host} failed ({detail}). Check {address} and try again."),
        ),
    };
    failure(kind, message)
}

fn spaced(sentence: &str) -> String {
    if sentence.is_empty() {
        String::new()
    } else {
        format!(" {sentence}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_names_the_host_and_the_setting_to_check() {
        let hints = Hints {
            address: "the collector URL",
            port: "port 8088",
            ..Hints::default()
        };
        let cases = [
            SendError::Dns { detail: "x".into() },
            SendError::ConnectionRefused { detail: "x".into() },
            SendError::ConnectionClosed { detail: "x".into() },
            SendError::Tls { detail: "x".into() },
            SendError::Timeout,
            SendError::EgressDenied {
                reason: "private address".into(),
            },
            SendError::Other { detail: "x".into() },
        ];
        for err in cases {
            let failure = send_error(err.clone(), "siem.example", &hints);
            assert_eq!(failure.kind, TestFailure::from(err).kind);
            assert!(
                failure.message.contains("siem.example")
                    || failure.kind == TestFailureKind::EgressDenied,
                "{failure}"
            );
        }
    }
}
