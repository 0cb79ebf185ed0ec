//! Syslog's value types (RFC 5424 over RFC 5425 TLS or RFC 6587 TCP): the receiver's host and
//! port, the transport, the format of each message, and the APP-NAME.

use std::fmt;

/// The TLS syslog port of RFC 5425.
pub const DEFAULT_TLS_PORT: u16 = 6514;

/// The port rsyslog's RELP examples listen on (RELP has none assigned).
pub const DEFAULT_RELP_PORT: u16 = 20514;

/// Longest APP-NAME RFC 5424 allows.
pub const MAX_APP_NAME_CHARS: usize = 48;

/// The receiver's host: a DNS name or an IP address, as typed, without a scheme or port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogHost(String);

impl SyslogHost {
    pub fn parse(input: &str) -> Result<SyslogHost, String> {
        let host = input.trim();
        if host.is_empty() {
            return Err(
                "Enter the syslog receiver's host name or IP address, for example siem.example.com."
                    .into(),
            );
        }
        if host.contains("://") || host.contains('/') {
            return Err("Enter only the host name, without https:// or a path; the port has a field of its own.".into());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return Ok(SyslogHost(bare.to_owned()));
        }
        if !super::is_host_name(host.trim_end_matches('.')) {
            return Err(format!(
                "`{host}` is not a host name: use letters, digits, hyphens, underscores and dots (for example siem.example.com), or an IP address."
            ));
        }
        Ok(SyslogHost(host.trim_end_matches('.').to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SyslogHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TCP port, 1 to 65535 (empty: the transport's usual port: 6514 for syslog over TLS or
/// TCP, 20514 for RELP).
pub fn parse_port(input: &str, transport: SyslogTransport) -> Result<u16, String> {
    let text = input.trim();
    if text.is_empty() {
        return Ok(transport.default_port());
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!(
            "`{text}` is not a port: give a number from 1 to 65535 (TLS syslog listens on {DEFAULT_TLS_PORT})."
        )),
    }
}

/// How messages travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogTransport {
    /// RFC 5425: TLS, the server's certificate checked.
    Tls,
    /// RFC 6587: plain TCP, only to hosts the outbound policy allows as internal.
    Tcp,
    /// RELP (rsyslog's Reliable Event Logging Protocol) over TLS: every message acknowledged
    /// by the receiver.
    Relp,
}

impl SyslogTransport {
    pub fn parse(input: &str) -> Result<SyslogTransport, String> {
        match input.trim() {
            "" | "tls" => Ok(SyslogTransport::Tls),
            "tcp" => Ok(SyslogTransport::Tcp),
            "relp" => Ok(SyslogTransport::Relp),
            other => Err(format!(
                "`{other}` is not a transport: choose tls (RFC 5425), relp (RELP over TLS, acknowledged) or tcp (RFC 6587, internal relays only)."
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SyslogTransport::Tls => "tls",
            SyslogTransport::Tcp => "tcp",
            SyslogTransport::Relp => "relp",
        }
    }

    /// Whether the connection is TLS (the receiver's certificate checked).
    pub fn uses_tls(self) -> bool {
        matches!(self, SyslogTransport::Tls | SyslogTransport::Relp)
    }

    /// The port a receiver of this transport usually listens on.
    pub fn default_port(self) -> u16 {
        match self {
            SyslogTransport::Relp => DEFAULT_RELP_PORT,
            SyslogTransport::Tls | SyslogTransport::Tcp => DEFAULT_TLS_PORT,
        }
    }
}

/// What each message's MSG holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogFormat {
    /// RFC 5424 with the log as one line of JSON in MSG.
    Rfc5424,
    /// ArcSight's Common Event Format in MSG.
    Cef,
}

impl SyslogFormat {
    pub fn parse(input: &str) -> Result<SyslogFormat, String> {
        match input.trim() {
            "" | "rfc5424" => Ok(SyslogFormat::Rfc5424),
            "cef" => Ok(SyslogFormat::Cef),
            other => Err(format!(
                "`{other}` is not a format: choose rfc5424 (the log as JSON) or cef (ArcSight Common Event Format)."
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SyslogFormat::Rfc5424 => "rfc5424",
            SyslogFormat::Cef => "cef",
        }
    }
}

/// RFC 5424's APP-NAME: 1 to 48 printable US-ASCII characters, no spaces (empty: `EZCA`, the
/// service the seed's queries name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppName(String);

impl Default for AppName {
    /// `EZCA`, the service the seed's queries name.
    fn default() -> AppName {
        AppName("EZCA".into())
    }
}

impl AppName {
    pub fn parse(input: &str) -> Result<AppName, String> {
        let name = input.trim();
        if name.is_empty() {
            return Ok(AppName::default());
        }
        if name.len() > MAX_APP_NAME_CHARS || !name.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(format!(
                "The app name is 1 to {MAX_APP_NAME_CHARS} printable ASCII characters without spaces, for example EZCA."
            ));
        }
        Ok(AppName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses_without_scheme_or_port() {
        assert_eq!(
            SyslogHost::parse(" SIEM.Example.com. ").unwrap().as_str(),
            "siem.example.com"
        );
        assert_eq!(SyslogHost::parse("[::1]").unwrap().as_str(), "::1");
        assert_eq!(SyslogHost::parse("10.0.0.5").unwrap().as_str(), "10.0.0.5");
        for bad in ["", "tls://siem", "siem/x", "-siem.example", "si em", "a..b"] {
            assert!(SyslogHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_transports_formats_and_app_names_have_defaults_and_explain_the_rest() {
        assert_eq!(parse_port("", SyslogTransport::Tls), Ok(6514));
        assert_eq!(parse_port("514", SyslogTransport::Tls), Ok(514));
        assert!(parse_port("0", SyslogTransport::Tls).is_err());
        assert!(parse_port("70000", SyslogTransport::Tls).is_err());
        assert_eq!(SyslogTransport::parse(""), Ok(SyslogTransport::Tls));
        assert_eq!(SyslogTransport::parse("tcp"), Ok(SyslogTransport::Tcp));
        assert_eq!(SyslogTransport::parse("relp"), Ok(SyslogTransport::Relp));
        assert_eq!(parse_port(" ", SyslogTransport::Relp), Ok(20514));
        assert_eq!(parse_port("", SyslogTransport::Tls), Ok(6514));
        assert!(SyslogTransport::parse("udp").is_err());
        assert_eq!(SyslogFormat::parse("cef"), Ok(SyslogFormat::Cef));
        assert!(SyslogFormat::parse("leef").is_err());
        assert_eq!(AppName::parse("").unwrap().as_str(), "EZCA");
        assert!(AppName::parse("two words").is_err());
        assert!(AppName::parse(&"x".repeat(49)).is_err());
    }
}
