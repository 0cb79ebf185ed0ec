//! Kafka destination settings, parsed at the edge: brokers, topic, SASL mechanism, user name
//! and password (write-only, never printed).

use super::secret::Secret;
use std::fmt;
use std::net::IpAddr;

/// Most bootstrap brokers in one setting.
pub const MAX_BROKERS: usize = 16;

/// One bootstrap broker: a host name or IP and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    /// Lowercase host name, or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl Broker {
    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The bootstrap brokers, as librdkafka's `bootstrap.servers` takes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaBrokers(Vec<Broker>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokersError {
    #[error("Enter at least one broker as host:port, for example kafka-1.example.com:9093.")]
    Empty,
    #[error("Enter at most {MAX_BROKERS} brokers; a few bootstrap brokers are enough, the client learns the rest from the cluster.")]
    TooMany,
    #[error("\"{0}\" is not host:port: give each broker without a scheme (no kafka:// or https://), with its port, separated by commas.")]
    NotHostPort(String),
    #[error("\"{0}\" has no valid port: use a number from 1 to 65535, e.g. :9093.")]
    BadPort(String),
    #[error("\"{0}\" is not a valid host name or IP address.")]
    BadHost(String),
}

impl KafkaBrokers {
    /// Parses a comma-separated list of `host:port` (IPv6 as `[addr]:port`).
    pub fn parse(input: &str) -> Result<KafkaBrokers, BrokersError> {
        let mut brokers = Vec::new();
        for entry in input.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if brokers.len() == MAX_BROKERS {
                return Err(BrokersError::TooMany);
            }
            brokers.push(parse_broker(entry)?);
        }
        if brokers.is_empty() {
            return Err(BrokersError::Empty);
        }
        Ok(KafkaBrokers(brokers))
    }

    /// Every broker.
    pub fn iter(&self) -> impl Iterator<Item = &Broker> {
        self.0.iter()
    }

    /// `host:port,host:port`, normalised.
    pub fn as_bootstrap(&self) -> String {
        self.0
            .iter()
            .map(Broker::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn parse_broker(entry: &str) -> Result<Broker, BrokersError> {
    if entry.contains("://") || entry.contains('/') || entry.chars().any(char::is_whitespace) {
        return Err(BrokersError::NotHostPort(entry.to_owned()));
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| BrokersError::NotHostPort(entry.to_owned()))?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(BrokersError::BadHost(entry.to_owned()));
        }
        (v6.to_owned(), port)
    } else {
        let (host, port) = entry
            .rsplit_once(':')
            .ok_or_else(|| BrokersError::NotHostPort(entry.to_owned()))?;
        if host.contains(':') {
            return Err(BrokersError::NotHostPort(entry.to_owned()));
        }
        (host.trim_end_matches('.').to_ascii_lowercase(), port)
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| BrokersError::BadPort(entry.to_owned()))?;
    if !super::is_host_name(&host) && host.parse::<IpAddr>().is_err() {
        return Err(BrokersError::BadHost(entry.to_owned()));
    }
    Ok(Broker { host, port })
}

/// A topic name: 1–249 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..` (Kafka's rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaTopic(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("A topic name is 1 to 249 characters of letters, digits, '.', '_' and '-' (and not \".\" or \"..\").")]
pub struct TopicError;

impl KafkaTopic {
    pub fn parse(input: &str) -> Result<KafkaTopic, TopicError> {
        let name = input.trim();
        let valid = (1..=249).contains(&name.len())
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(KafkaTopic(name.to_owned()))
        } else {
            Err(TopicError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KafkaTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the client authenticates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    None,
    Plain,
    ScramSha256,
    ScramSha512,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Choose none, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")]
pub struct MechanismError;

impl SaslMechanism {
    pub const ALL: [SaslMechanism; 4] = [
        SaslMechanism::None,
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ];

    /// The form value (DESIGN.md) and, but for `none`, librdkafka's `sasl.mechanism`.
    pub fn code(self) -> &'static str {
        match self {
            SaslMechanism::None => "none",
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// What people see.
    pub fn label(self) -> &'static str {
        match self {
            SaslMechanism::None => "None (no authentication)",
            SaslMechanism::Plain => "PLAIN (user name and password)",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Parses a form value, case-insensitively.
    pub fn parse(input: &str) -> Result<SaslMechanism, MechanismError> {
        let input = input.trim();
        SaslMechanism::ALL
            .into_iter()
            .find(|m| m.code().eq_ignore_ascii_case(input))
            .ok_or(MechanismError)
    }
}

/// A SASL user name: 1–255 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaUsername(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("A user name is 1 to 255 characters without control characters.")]
pub struct UsernameError;

impl KafkaUsername {
    pub fn parse(input: &str) -> Result<KafkaUsername, UsernameError> {
        let name = input.trim();
        if (1..=255).contains(&name.chars().count()) && !name.chars().any(char::is_control) {
            Ok(KafkaUsername(name.to_owned()))
        } else {
            Err(UsernameError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A SASL password. Never printed; the portal shows only that one is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaPassword(Secret);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("A password is 1 to 1024 characters without control characters.")]
pub struct PasswordError;

impl KafkaPassword {
    pub fn parse(input: &str) -> Result<KafkaPassword, PasswordError> {
        if (1..=1024).contains(&input.chars().count()) && !input.chars().any(char::is_control) {
            Ok(KafkaPassword(Secret::password(input)))
        } else {
            Err(PasswordError)
        }
    }

    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// What the page shows of a stored password: nothing of the password itself.
    pub fn hint(&self) -> String {
        format!("{} characters", self.0.chars())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_host_port_lists() {
        let b =
            KafkaBrokers::parse(" Kafka-1.Example.com:9093 , 10.0.0.1:9092,[::1]:9094").unwrap();
        assert_eq!(
            b.as_bootstrap(),
            "kafka-1.example.com:9093,10.0.0.1:9092,[::1]:9094"
        );
        for bad in [
            "",
            " , ",
            "kafka://h:9092",
            "h",
            "h:0",
            "h:65536",
            "h:x",
            "bad host:1",
            "-h:1",
            "::1:9092",
            "[zz]:1",
        ] {
            assert!(KafkaBrokers::parse(bad).is_err(), "{bad}");
        }
        let many = vec!["h:1"; MAX_BROKERS + 1].join(",");
        assert_eq!(KafkaBrokers::parse(&many), Err(BrokersError::TooMany));
    }

    #[test]
    fn topics_mechanisms_and_secrets_follow_kafkas_rules() {
        assert!(KafkaTopic::parse("ezca.audit_v1-x").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(KafkaTopic::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            SaslMechanism::parse("scram-sha-512"),
            Ok(SaslMechanism::ScramSha512)
        );
        assert!(SaslMechanism::parse("GSSAPI").is_err());
        let password = KafkaPassword::parse("s3cret!").unwrap();
        assert_eq!(format!("{password:?}"), "KafkaPassword(****)");
        assert!(!password.hint().contains("s3cret"));
        assert!(KafkaUsername::parse("a\u{0}b").is_err());
    }
}
