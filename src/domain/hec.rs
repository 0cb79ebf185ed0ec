//! HTTP Event Collector value types (Splunk HEC and CrowdStrike Falcon LogScale's
//! HEC-compatible ingest), each parsed from what a person types on the settings page.
//!
//! - [`HecUrl`]: the collector's base URL (`https://splunk.example.com:8088`). The full
//!   `…/services/collector`, `…/services/collector/event` (Splunk) and `…/api/v1/ingest/hec`
//!   (LogScale) URLs are accepted too and normalised to the base, keeping any path prefix a
//!   proxy needs. Whether the host may be reached (https, public address) is decided by the
//!   egress policy of the `siem` layer, not here.
//! - [`HecToken`]: Splunk HEC tokens are GUIDs ([`HecToken::parse_splunk`]); LogScale ingest
//!   tokens are not ([`HecToken::parse_logscale`]: 20–200 printable ASCII characters without
//!   spaces). A token never prints: `Debug` shows only its last 4 characters.
//! - [`SplunkIndex`], [`SourceType`] (default [`DEFAULT_SOURCETYPE`]), [`HecSource`] and
//!   [`HecHost`]: the optional envelope metadata.
//!
//! Every error's `Display` is one sentence saying what is wrong and how to fix it.

use super::secret::Secret;
use std::fmt;

use url::Url;

/// Splunk's event endpoint under the base URL.
pub const SPLUNK_EVENT_PATH: &str = "/services/collector/event";
/// Splunk's indexer acknowledgement endpoint under the base URL.
pub const SPLUNK_ACK_PATH: &str = "/services/collector/ack";
/// Splunk's health endpoint under the base URL (proves reachability only).
pub const SPLUNK_HEALTH_PATH: &str = "/services/collector/health";
/// LogScale's documented HEC ingest endpoint under the base URL.
pub const LOGSCALE_HEC_PATH: &str = "/api/v1/ingest/hec";
/// The sourcetype sent when none is configured.
pub const DEFAULT_SOURCETYPE: &str = "ezca:audit";
/// Longest Splunk index name, in characters.
pub const MAX_INDEX_CHARS: usize = 80;
/// Longest sourcetype, in characters.
pub const MAX_SOURCETYPE_CHARS: usize = 100;
/// Longest `source` or `host` value, in characters.
pub const MAX_META_CHARS: usize = 200;
/// Shortest LogScale ingest token accepted, in characters.
pub const MIN_LOGSCALE_TOKEN_CHARS: usize = 20;
/// Longest LogScale ingest token accepted, in characters.
pub const MAX_LOGSCALE_TOKEN_CHARS: usize = 200;

/// Endpoint suffixes a pasted URL may end with, longest first; each is cut off to get the base.
const KNOWN_ENDPOINTS: [&str; 5] = [
    "/services/collector/event/1.0",
    "/services/collector/event",
    "/services/collector",
    "/api/v1/ingest/hec",
    "/services/collector/ack",
];

/// The collector's base URL: no trailing slash, no endpoint path; may carry a proxy's prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct HecUrl {
    base: String,
    origin: Url,
}

/// Why a typed collector URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HecUrlError {
    #[error("Enter the HTTP Event Collector URL, for example https://splunk.example.com:8088.")]
    Empty,
    #[error("This is not a complete URL; enter it with https://, for example https://splunk.example.com:8088.")]
    NotAUrl,
    #[error("The URL must start with https:// (or http:// for an allowed internal collector), not {scheme}://.")]
    UnsupportedScheme { scheme: String },
    #[error("The URL has no host name; enter it like https://splunk.example.com:8088.")]
    MissingHost,
    #[error("The URL contains a user name or password; remove them from the URL (the token goes in its own field).")]
    HasCredentials,
    #[error("The URL contains a query (?…); remove it and enter only the collector address (the token goes in its own field).")]
    HasQuery,
    #[error("The URL contains a fragment (#…); remove it and enter only the collector address.")]
    HasFragment,
    #[error("The URL points at the raw endpoint (…/raw), which takes unstructured text; enter the collector's base URL instead, for example https://splunk.example.com:8088.")]
    RawEndpoint,
}

impl HecUrl {
    /// Accepts the base URL or a full endpoint URL (see the module doc), trailing slash
    /// optional, and keeps the base.
    pub fn parse(input: &str) -> Result<HecUrl, HecUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(HecUrlError::Empty);
        }
        // Without "://", `host:8088` would parse as a URL whose scheme is the host.
        if !input.contains("://") {
            return Err(HecUrlError::NotAUrl);
        }
        let url = Url::parse(input).map_err(|_| HecUrlError::NotAUrl)?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(HecUrlError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(HecUrlError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(HecUrlError::HasCredentials);
        }
        // `Url` drops an empty `?`/`#`; look at the text so "https://host/?" is refused too.
        if url.query().is_some() || input.contains('?') {
            return Err(HecUrlError::HasQuery);
        }
        if url.fragment().is_some() || input.contains('#') {
            return Err(HecUrlError::HasFragment);
        }
        let path = url.path().trim_end_matches('/');
        if path.ends_with("/raw") || path.ends_with("/raw/1.0") {
            return Err(HecUrlError::RawEndpoint);
        }
        let prefix = KNOWN_ENDPOINTS
            .iter()
            .find_map(|suffix| path.strip_suffix(suffix))
            .unwrap_or(path)
            .trim_end_matches('/');
        let mut origin = url.clone();
        origin.set_path("");
        let base = format!("{}{}", origin.as_str().trim_end_matches('/'), prefix);
        let origin = Url::parse(&base).map_err(|_| HecUrlError::NotAUrl)?;
        Ok(HecUrl { base, origin })
    }

    /// The base URL, e.g. `https://splunk.example.com:8088`.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The base URL followed by `path` (which starts with `/`).
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.origin.clone();
        let joined = format!("{}{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    /// The host name (or IP literal) of the collector.
    pub fn host(&self) -> &str {
        self.origin.host_str().unwrap_or_default()
    }
}

impl fmt::Display for HecUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Debug for HecUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HecUrl({})", self.base)
    }
}

/// An HEC or LogScale ingest token. Never printed: `Debug` shows only the last 4 characters;
/// there is no `Display` and no serde.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HecToken(Secret);

/// Why a typed token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HecTokenError {
    #[error("Enter the HEC token; create one in Splunk under Settings → Data inputs → HTTP Event Collector.")]
    SplunkEmpty,
    #[error("A Splunk HEC token is a GUID like 12345678-9abc-def0-1234-56789abcdef0; copy the Token Value shown in Splunk under Settings → Data inputs → HTTP Event Collector.")]
    SplunkNotAGuid,
    #[error(
        "Enter the LogScale ingest token; create one in the repository's Settings → Ingest tokens."
    )]
    LogScaleEmpty,
    #[error("A LogScale ingest token is 20 to 200 characters long and this one has {found}; copy the whole token from the repository's Settings → Ingest tokens.")]
    LogScaleWrongLength { found: usize },
    #[error("A LogScale ingest token has no spaces and only printable ASCII characters; copy the token itself from the repository's Settings → Ingest tokens.")]
    LogScaleInvalidCharacters,
}

impl HecToken {
    /// Trims surrounding whitespace and accepts a GUID (`8-4-4-4-12` hex digits, any case).
    pub fn parse_splunk(input: &str) -> Result<HecToken, HecTokenError> {
        let token = input.trim();
        if token.is_empty() {
            return Err(HecTokenError::SplunkEmpty);
        }
        if !is_guid(token) {
            return Err(HecTokenError::SplunkNotAGuid);
        }
        Ok(HecToken(Secret::new(token)))
    }

    /// Trims surrounding whitespace and accepts 20–200 printable ASCII characters without
    /// spaces (LogScale does not document the token's shape; this only keeps out what cannot
    /// be a token or travel in a header).
    pub fn parse_logscale(input: &str) -> Result<HecToken, HecTokenError> {
        let token = input.trim();
        if token.is_empty() {
            return Err(HecTokenError::LogScaleEmpty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HecTokenError::LogScaleInvalidCharacters);
        }
        let found = token.len();
        if !(MIN_LOGSCALE_TOKEN_CHARS..=MAX_LOGSCALE_TOKEN_CHARS).contains(&found) {
            return Err(HecTokenError::LogScaleWrongLength { found });
        }
        Ok(HecToken(Secret::new(token)))
    }

    /// The token itself, for the `Authorization` header and for sealing at rest only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The last 4 characters, which the settings page shows to identify a stored token.
    pub fn last4(&self) -> &str {
        self.0.last4()
    }
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Splunk index name: lowercase letters, digits, `_` and `-`, not starting with `_` or `-`,
/// at most [`MAX_INDEX_CHARS`]. (For LogScale the `index` is the repository name.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplunkIndex(String);

/// Why a typed index name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplunkIndexError {
    #[error("Enter an index name, or leave the field blank to use the token's default index.")]
    Empty,
    #[error("An index name has at most 80 characters and this one has {found}; use the name shown in Splunk under Settings → Indexes.")]
    TooLong { found: usize },
    #[error("Index names are lowercase in Splunk; write \"{suggestion}\".")]
    Uppercase { suggestion: String },
    #[error("An index name may only contain lowercase letters, digits, _ and -; use the name shown in Splunk under Settings → Indexes.")]
    InvalidCharacters,
    #[error("An index name cannot start with _ or - (internal indexes cannot receive events); use the name of an event index.")]
    BadFirstCharacter,
}

impl SplunkIndex {
    /// Trims and validates an index name; blank is an error (see [`SplunkIndex::parse_optional`]).
    pub fn parse(input: &str) -> Result<SplunkIndex, SplunkIndexError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(SplunkIndexError::Empty);
        }
        let found = name.chars().count();
        if found > MAX_INDEX_CHARS {
            return Err(SplunkIndexError::TooLong { found });
        }
        let allowed =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        if !name.chars().all(allowed) {
            let lower = name.to_ascii_lowercase();
            if lower.chars().all(allowed) {
                return Err(SplunkIndexError::Uppercase { suggestion: lower });
            }
            return Err(SplunkIndexError::InvalidCharacters);
        }
        if name.starts_with(['_', '-']) {
            return Err(SplunkIndexError::BadFirstCharacter);
        }
        Ok(SplunkIndex(name.to_owned()))
    }

    /// A blank field means "no index" (the token's default index).
    pub fn parse_optional(input: &str) -> Result<Option<SplunkIndex>, SplunkIndexError> {
        if input.trim().is_empty() {
            Ok(None)
        } else {
            SplunkIndex::parse(input).map(Some)
        }
    }

    /// The index name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SplunkIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sourcetype of every event: 1–[`MAX_SOURCETYPE_CHARS`] characters, no whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceType(String);

/// Why a typed sourcetype was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceTypeError {
    #[error("Enter a sourcetype, or leave the field blank to use ezca:audit.")]
    Empty,
    #[error("A sourcetype has at most 100 characters and this one has {found}; shorten it (the default is ezca:audit).")]
    TooLong { found: usize },
    #[error("A sourcetype cannot contain spaces or control characters; write it as one word such as ezca:audit.")]
    InvalidCharacters,
}

impl SourceType {
    /// Trims and validates a sourcetype; blank is an error (see [`SourceType::parse_or_default`]).
    pub fn parse(input: &str) -> Result<SourceType, SourceTypeError> {
        let value = input.trim();
        if value.is_empty() {
            return Err(SourceTypeError::Empty);
        }
        let found = value.chars().count();
        if found > MAX_SOURCETYPE_CHARS {
            return Err(SourceTypeError::TooLong { found });
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SourceTypeError::InvalidCharacters);
        }
        Ok(SourceType(value.to_owned()))
    }

    /// A blank field means [`DEFAULT_SOURCETYPE`].
    pub fn parse_or_default(input: &str) -> Result<SourceType, SourceTypeError> {
        if input.trim().is_empty() {
            Ok(SourceType::default())
        } else {
            SourceType::parse(input)
        }
    }

    /// The sourcetype.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SourceType {
    fn default() -> Self {
        SourceType(DEFAULT_SOURCETYPE.to_owned())
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a typed `source` or `host` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HecFieldError {
    #[error("Enter a {field} value, or leave the field blank to use the default.")]
    Empty { field: &'static str },
    #[error("The {field} value has at most 200 characters and this one has {found}; shorten it.")]
    TooLong { field: &'static str, found: usize },
    #[error("The {field} value cannot contain line breaks, tabs or other control characters; remove them.")]
    ControlCharacters { field: &'static str },
}

fn parse_meta(field: &'static str, input: &str) -> Result<String, HecFieldError> {
    let value = input.trim();
    if value.is_empty() {
        return Err(HecFieldError::Empty { field });
    }
    let found = value.chars().count();
    if found > MAX_META_CHARS {
        return Err(HecFieldError::TooLong { field, found });
    }
    if value.chars().any(char::is_control) {
        return Err(HecFieldError::ControlCharacters { field });
    }
    Ok(value.to_owned())
}

/// The `source` of every event (default `cloudpki`): at most [`MAX_META_CHARS`], no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecSource(String);

impl HecSource {
    /// Trims and validates; blank is an error (the form maps blank to "not set").
    pub fn parse(input: &str) -> Result<HecSource, HecFieldError> {
        parse_meta("source", input).map(HecSource)
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `host` of every event (default: this deployment's host name): at most
/// [`MAX_META_CHARS`], no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HecHost(String);

impl HecHost {
    /// Trims and validates; blank is an error (the form maps blank to "not set").
    pub fn parse(input: &str) -> Result<HecHost, HecFieldError> {
        parse_meta("host", input).map(HecHost)
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "12345678-9abc-DEF0-1234-56789abcdef0";

    #[test]
    fn url_normalises_every_endpoint_form_to_the_base() {
        for input in [
            "https://splunk.example.com:8088",
            "https://splunk.example.com:8088/",
            "https://splunk.example.com:8088/services/collector",
            "https://splunk.example.com:8088/services/collector/",
            "https://splunk.example.com:8088/services/collector/event",
            "https://splunk.example.com:8088/services/collector/event/1.0",
            " https://SPLUNK.example.com:8088/api/v1/ingest/hec/ ",
        ] {
            let url = HecUrl::parse(input).expect("valid url");
            assert_eq!(url.as_str(), "https://splunk.example.com:8088", "{input}");
            assert_eq!(
                url.endpoint(SPLUNK_EVENT_PATH).as_str(),
                "https://splunk.example.com:8088/services/collector/event"
            );
            assert_eq!(url.host(), "splunk.example.com");
        }
    }

    #[test]
    fn url_keeps_a_proxy_prefix() {
        let url = HecUrl::parse("http://10.0.0.5:8080/hec/services/collector/event").expect("ok");
        assert_eq!(url.as_str(), "http://10.0.0.5:8080/hec");
        assert_eq!(
            url.endpoint(SPLUNK_ACK_PATH).as_str(),
            "http://10.0.0.5:8080/hec/services/collector/ack"
        );
        assert_eq!(
            url.endpoint(LOGSCALE_HEC_PATH).as_str(),
            "http://10.0.0.5:8080/hec/api/v1/ingest/hec"
        );
    }

    #[test]
    fn url_rejects_what_cannot_be_a_collector() {
        let cases = [
            ("", HecUrlError::Empty),
            ("splunk.example.com:8088", HecUrlError::NotAUrl),
            ("splunk example", HecUrlError::NotAUrl),
            (
                "ftp://splunk.example.com",
                HecUrlError::UnsupportedScheme {
                    scheme: "ftp".into(),
                },
            ),
            (
                "https://u:p@splunk.example.com",
                HecUrlError::HasCredentials,
            ),
            (
                "https://splunk.example.com/services/collector?token=x",
                HecUrlError::HasQuery,
            ),
            ("https://splunk.example.com/?", HecUrlError::HasQuery),
            ("https://splunk.example.com/#x", HecUrlError::HasFragment),
            (
                "https://splunk.example.com/services/collector/raw",
                HecUrlError::RawEndpoint,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(HecUrl::parse(input), Err(expected), "{input}");
        }
        assert!(HecUrlError::HasCredentials
            .to_string()
            .contains("token goes in its own field"));
    }

    #[test]
    fn splunk_tokens_are_guids() {
        let token = HecToken::parse_splunk(&format!(" {GUID}\n")).expect("guid");
        assert_eq!(token.expose_secret(), GUID);
        assert_eq!(token.last4(), "def0");
        assert_eq!(HecToken::parse_splunk(""), Err(HecTokenError::SplunkEmpty));
        for bad in [
            "123456789abcdef0123456789abcdef0",
            "12345678-9abc-def0-1234-56789abcdef",
            "12345678-9abc-def0-1234-56789abcdefg",
            "{12345678-9abc-def0-1234-56789abcdef0}",
        ] {
            assert_eq!(
                HecToken::parse_splunk(bad),
                Err(HecTokenError::SplunkNotAGuid),
                "{bad}"
            );
        }
    }

    #[test]
    fn logscale_tokens_are_long_printable_words() {
        let token = HecToken::parse_logscale("abcdEFGH1234-_.~ijklmnop").expect("valid");
        assert_eq!(token.last4(), "mnop");
        assert!(HecToken::parse_logscale(GUID).is_ok());
        assert_eq!(
            HecToken::parse_logscale("short"),
            Err(HecTokenError::LogScaleWrongLength { found: 5 })
        );
        assert_eq!(
            HecToken::parse_logscale(&"a".repeat(201)),
            Err(HecTokenError::LogScaleWrongLength { found: 201 })
        );
        assert_eq!(
            HecToken::parse_logscale("abcdefghij klmnopqrstu"),
            Err(HecTokenError::LogScaleInvalidCharacters)
        );
        assert_eq!(
            HecToken::parse_logscale("abcdefghijklmnopqrstué"),
            Err(HecTokenError::LogScaleInvalidCharacters)
        );
        assert_eq!(
            HecToken::parse_logscale(" "),
            Err(HecTokenError::LogScaleEmpty)
        );
    }

    #[test]
    fn token_debug_never_shows_the_token() {
        let token = HecToken::parse_splunk(GUID).expect("guid");
        let printed = format!("{token:?} {:?}", Some(&token));
        assert!(!printed.contains(GUID));
        assert!(!printed.contains(&GUID[..8]));
        assert!(printed.contains("HecToken(****def0)"));
    }

    #[test]
    fn index_names_follow_splunk_rules() {
        assert_eq!(
            SplunkIndex::parse(" security_2-x ").expect("ok").as_str(),
            "security_2-x"
        );
        assert_eq!(SplunkIndex::parse_optional("  "), Ok(None));
        assert_eq!(SplunkIndex::parse(""), Err(SplunkIndexError::Empty));
        assert_eq!(
            SplunkIndex::parse("Security"),
            Err(SplunkIndexError::Uppercase {
                suggestion: "security".into()
            })
        );
        assert_eq!(
            SplunkIndex::parse("sec idx"),
            Err(SplunkIndexError::InvalidCharacters)
        );
        assert_eq!(
            SplunkIndex::parse("_internal"),
            Err(SplunkIndexError::BadFirstCharacter)
        );
        assert_eq!(
            SplunkIndex::parse("-x"),
            Err(SplunkIndexError::BadFirstCharacter)
        );
        assert!(SplunkIndex::parse(&"a".repeat(80)).is_ok());
        assert_eq!(
            SplunkIndex::parse(&"a".repeat(81)),
            Err(SplunkIndexError::TooLong { found: 81 })
        );
        assert!(SplunkIndexError::Uppercase {
            suggestion: "security".into()
        }
        .to_string()
        .contains("\"security\""));
    }

    #[test]
    fn sourcetype_defaults_and_refuses_whitespace() {
        assert_eq!(SourceType::default().as_str(), "ezca:audit");
        assert_eq!(
            SourceType::parse_or_default(" ").expect("ok").as_str(),
            "ezca:audit"
        );
        assert_eq!(
            SourceType::parse("my:type").expect("ok").as_str(),
            "my:type"
        );
        assert_eq!(SourceType::parse(""), Err(SourceTypeError::Empty));
        assert_eq!(
            SourceType::parse("a b"),
            Err(SourceTypeError::InvalidCharacters)
        );
        assert!(SourceType::parse(&"s".repeat(100)).is_ok());
        assert_eq!(
            SourceType::parse(&"s".repeat(101)),
            Err(SourceTypeError::TooLong { found: 101 })
        );
    }

    #[test]
    fn source_and_host_refuse_control_characters_and_long_values() {
        assert_eq!(
            HecSource::parse(" pki prod ").expect("ok").as_str(),
            "pki prod"
        );
        assert_eq!(
            HecHost::parse("pki.example.com").expect("ok").as_str(),
            "pki.example.com"
        );
        assert_eq!(
            HecHost::parse("a\nb"),
            Err(HecFieldError::ControlCharacters { field: "host" })
        );
        assert_eq!(
            HecSource::parse(&"x".repeat(201)),
            Err(HecFieldError::TooLong {
                field: "source",
                found: 201
            })
        );
        assert_eq!(
            HecSource::parse(""),
            Err(HecFieldError::Empty { field: "source" })
        );
        assert_eq!(
            HecFieldError::ControlCharacters { field: "host" }.to_string(),
            "The host value cannot contain line breaks, tabs or other control characters; remove them."
        );
    }
}
