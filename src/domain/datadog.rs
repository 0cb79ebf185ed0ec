//! Datadog value types: the site, the API key and the logs intake URL, each parsed from what a
//! person types on the settings page.
//!
//! Contract (Datadog "Send logs" API): logs are POSTed to
//! `https://http-intake.logs.<site>/api/v2/logs`; the key is 32 lowercase hex characters and is
//! sent in the `DD-API-KEY` header. The intake URL may be replaced by a proxy or pipeline URL,
//! so any absolute http(s) URL is accepted here; whether it may be reached (https, public
//! address) is decided by the egress policy of the `siem` layer, not by this parser.

use super::secret::Secret;
use std::fmt;

use url::Url;

/// The path of the logs intake under the base URL.
pub const LOGS_PATH: &str = "/api/v2/logs";
/// Length of a Datadog API key, in characters.
pub const API_KEY_CHARS: usize = 32;

/// A Datadog site (region); decides the intake host and the web app of the Log Explorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatadogSite {
    Us1,
    Us3,
    Us5,
    Eu1,
    Ap1,
    Ap2,
    Us1Fed,
    Us2Fed,
    Uk1,
}

/// A site code that is not one of [`DatadogSite::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a Datadog site; choose one of US1, US3, US5, EU1, AP1, AP2, US1-FED, US2-FED or UK1.")]
pub struct UnknownDatadogSite(pub String);

impl DatadogSite {
    /// Every site, in the order of Datadog's sites table.
    pub const ALL: [DatadogSite; 9] = [
        DatadogSite::Us1,
        DatadogSite::Us3,
        DatadogSite::Us5,
        DatadogSite::Eu1,
        DatadogSite::Ap1,
        DatadogSite::Ap2,
        DatadogSite::Us1Fed,
        DatadogSite::Us2Fed,
        DatadogSite::Uk1,
    ];

    /// The short code Datadog uses, e.g. `US1`, `US1-FED`; also the form value.
    pub fn code(self) -> &'static str {
        match self {
            DatadogSite::Us1 => "US1",
            DatadogSite::Us3 => "US3",
            DatadogSite::Us5 => "US5",
            DatadogSite::Eu1 => "EU1",
            DatadogSite::Ap1 => "AP1",
            DatadogSite::Ap2 => "AP2",
            DatadogSite::Us1Fed => "US1-FED",
            DatadogSite::Us2Fed => "US2-FED",
            DatadogSite::Uk1 => "UK1",
        }
    }

    /// The `site` parameter, e.g. `datadoghq.com`, `us3.datadoghq.com`.
    pub fn site_param(self) -> &'static str {
        match self {
            DatadogSite::Us1 => "datadoghq.com",
            DatadogSite::Us3 => "us3.datadoghq.com",
            DatadogSite::Us5 => "us5.datadoghq.com",
            DatadogSite::Eu1 => "datadoghq.eu",
            DatadogSite::Ap1 => "ap1.datadoghq.com",
            DatadogSite::Ap2 => "ap2.datadoghq.com",
            DatadogSite::Us1Fed => "ddog-gov.com",
            DatadogSite::Us2Fed => "us2.ddog-gov.com",
            DatadogSite::Uk1 => "uk1.datadoghq.com",
        }
    }

    /// The option label of the site select, e.g. `US1 — datadoghq.com`.
    pub fn label(self) -> String {
        format!("{} — {}", self.code(), self.site_param())
    }

    /// The logs intake base URL, e.g. `https://http-intake.logs.datadoghq.com`.
    pub fn intake_base_url(self) -> String {
        format!("https://{}", self.intake_host())
    }

    /// The logs intake host name, e.g. `http-intake.logs.datadoghq.eu`.
    pub fn intake_host(self) -> String {
        format!("http-intake.logs.{}", self.site_param())
    }

    /// The Log Explorer of the site's web app, searching for `query`.
    pub fn log_explorer_url(self, query: &str) -> String {
        let app = match self {
            DatadogSite::Us1 => "https://app.datadoghq.com",
            DatadogSite::Eu1 => "https://app.datadoghq.eu",
            DatadogSite::Us1Fed => "https://app.ddog-gov.com",
            DatadogSite::Us2Fed => "https://us2.ddog-gov.com",
            DatadogSite::Us3 => "https://us3.datadoghq.com",
            DatadogSite::Us5 => "https://us5.datadoghq.com",
            DatadogSite::Ap1 => "https://ap1.datadoghq.com",
            DatadogSite::Ap2 => "https://ap2.datadoghq.com",
            DatadogSite::Uk1 => "https://uk1.datadoghq.com",
        };
        // Form encoding writes a space as `+`; `%20` reads the same in every URL parser.
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        format!("{app}/logs?query={encoded}")
    }

    /// Parses a site code (`US1`, `us1-fed`, …), case-insensitively.
    pub fn parse(code: &str) -> Result<DatadogSite, UnknownDatadogSite> {
        let code = code.trim();
        DatadogSite::ALL
            .into_iter()
            .find(|site| site.code().eq_ignore_ascii_case(code))
            .ok_or_else(|| UnknownDatadogSite(code.to_owned()))
    }

    /// The site whose logs intake host is `host` (case-insensitive), if any.
    pub fn from_intake_host(host: &str) -> Option<DatadogSite> {
        let host = host.trim_end_matches('.');
        DatadogSite::ALL
            .into_iter()
            .find(|site| site.intake_host().eq_ignore_ascii_case(host))
    }
}

impl fmt::Display for DatadogSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A Datadog API key: 32 characters `0-9a-f`. Never printed: `Debug` shows only the last 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatadogApiKey(Secret);

/// Why a typed API key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("Enter a Datadog API key; create one under Organization Settings → API Keys.")]
    Empty,
    #[error("A Datadog API key is 32 characters, 0-9 and a-f; this one has {found}.")]
    WrongLength { found: usize },
    #[error("A Datadog API key is 32 characters, 0-9 and a-f; this one contains other characters (an application key or a client token will not work).")]
    InvalidCharacters,
}

impl DatadogApiKey {
    /// Trims surrounding whitespace and accepts exactly 32 characters `0-9a-f`.
    pub fn parse(input: &str) -> Result<DatadogApiKey, ApiKeyError> {
        let key = input.trim();
        if key.is_empty() {
            return Err(ApiKeyError::Empty);
        }
        let found = key.chars().count();
        if found != API_KEY_CHARS {
            return Err(ApiKeyError::WrongLength { found });
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ApiKeyError::InvalidCharacters);
        }
        Ok(DatadogApiKey(Secret::new(key)))
    }

    /// The key itself, for the `DD-API-KEY` header and for sealing at rest only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The last 4 characters, which the settings page shows to identify a stored key.
    pub fn last4(&self) -> &str {
        self.0.last4()
    }
}

/// The logs intake base URL (no trailing slash, no `/api/v2/logs`); may carry a proxy's path.
#[derive(Clone, PartialEq, Eq)]
pub struct DatadogIntakeUrl {
    base: String,
    endpoint: Url,
}

/// Why a typed intake URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeUrlError {
    #[error("Enter the logs intake URL, for example https://http-intake.logs.datadoghq.com.")]
    Empty,
    #[error("This is not a complete URL; enter it with https://, for example https://http-intake.logs.datadoghq.com.")]
    NotAUrl,
    #[error("The URL must start with https:// (or http:// for an allowed internal proxy), not {scheme}://.")]
    UnsupportedScheme { scheme: String },
    #[error("The URL has no host name; enter it like https://http-intake.logs.datadoghq.com.")]
    MissingHost,
    #[error("The URL contains a user name or password; remove the user name/password from the URL (the API key goes in its own field).")]
    HasCredentials,
    #[error("The URL contains a query (?…); remove it and enter only the intake address.")]
    HasQuery,
    #[error("The URL contains a fragment (#…); remove it and enter only the intake address.")]
    HasFragment,
}

impl DatadogIntakeUrl {
    /// Accepts the base URL or the full `…/api/v2/logs` URL (trailing slash optional) and keeps
    /// the base, including any path prefix a proxy needs.
    pub fn parse(input: &str) -> Result<DatadogIntakeUrl, IntakeUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(IntakeUrlError::Empty);
        }
        let url = Url::parse(input).map_err(|_| IntakeUrlError::NotAUrl)?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(IntakeUrlError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(IntakeUrlError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(IntakeUrlError::HasCredentials);
        }
        // `Url` drops an empty `?`/`#`; look at the text so "https://host/?" is refused too.
        if url.query().is_some() || input.contains('?') {
            return Err(IntakeUrlError::HasQuery);
        }
        if url.fragment().is_some() || input.contains('#') {
            return Err(IntakeUrlError::HasFragment);
        }
        let path = url.path().trim_end_matches('/');
        let prefix = path
            .strip_suffix(LOGS_PATH)
            .unwrap_or(path)
            .trim_end_matches('/');
        let mut origin = url.clone();
        origin.set_path("");
        let base = format!("{}{}", origin.as_str().trim_end_matches('/'), prefix);
        let endpoint =
            Url::parse(&format!("{base}{LOGS_PATH}")).map_err(|_| IntakeUrlError::NotAUrl)?;
        Ok(DatadogIntakeUrl { base, endpoint })
    }

    /// The intake of a Datadog site.
    pub fn for_site(site: DatadogSite) -> DatadogIntakeUrl {
        let base = site.intake_base_url();
        let endpoint = Url::parse(&format!("{base}{LOGS_PATH}"))
            // The site table holds only valid host names.
            .unwrap_or_else(|_| unreachable!("site intake URLs are valid"));
        DatadogIntakeUrl { base, endpoint }
    }

    /// The base URL, e.g. `https://http-intake.logs.datadoghq.eu`.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The URL logs are POSTed to: base + `/api/v2/logs`.
    pub fn logs_endpoint(&self) -> Url {
        self.endpoint.clone()
    }

    /// The host name (or IP literal) of the intake.
    pub fn host(&self) -> &str {
        self.endpoint.host_str().unwrap_or_default()
    }

    /// The Datadog site whose intake this is, if it is one of Datadog's own hosts.
    pub fn site(&self) -> Option<DatadogSite> {
        DatadogSite::from_intake_host(self.host())
    }
}

impl fmt::Display for DatadogIntakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Debug for DatadogIntakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatadogIntakeUrl({})", self.base)
    }
}

impl DatadogSite {
    /// The API base of the site (monitors and other `api.*` endpoints), e.g.
    /// `https://api.datadoghq.com`.
    pub fn api_base_url(self) -> String {
        format!("https://api.{}", self.site_param())
    }

    /// A monitor's page in the site's web app.
    pub fn monitor_url(self, id: i64) -> String {
        let explorer = self.log_explorer_url("");
        let app = explorer.split("/logs?").next().unwrap_or_default();
        format!("{app}/monitors/{id}")
    }
}

/// The Datadog API base URL (for monitors): https, a host, no credentials, query or fragment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DatadogApiUrl(String);

impl DatadogApiUrl {
    /// Parses the base, without a trailing slash.
    pub fn parse(input: &str) -> Result<DatadogApiUrl, String> {
        let input = input.trim();
        let example = "for example https://api.datadoghq.com";
        let url = Url::parse(input).map_err(|_| {
            format!("This is not a complete URL; enter it with https://, {example}.")
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("The URL must start with https://, {example}."));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("The URL has no host name; {example}."));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "The URL contains a user name or password; the keys go in their own fields.".into(),
            );
        }
        if url.query().is_some() || url.fragment().is_some() || input.contains(['?', '#']) {
            return Err(format!(
                "Enter only the API address, without ? or #, {example}."
            ));
        }
        Ok(DatadogApiUrl(input.trim_end_matches('/').to_owned()))
    }

    /// The base URL as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<base>/api/v1/monitor`.
    pub fn monitors_endpoint(&self) -> Result<Url, String> {
        Url::parse(&format!("{}/api/v1/monitor", self.0)).map_err(|e| e.to_string())
    }
}

/// Characters of a Datadog application key.
pub const APP_KEY_CHARS: usize = 40;

/// A Datadog application key (needed with the API key to create monitors); never printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatadogAppKey(Secret);

impl DatadogAppKey {
    /// 40 characters, 0-9 and a-f.
    pub fn parse(input: &str) -> Result<DatadogAppKey, String> {
        let key = input.trim();
        let found = key.chars().count();
        if found != APP_KEY_CHARS {
            return Err(format!("A Datadog application key is 40 characters, 0-9 and a-f; this one has {found}. Create one under Organization Settings → Application Keys."));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("A Datadog application key is 40 characters, 0-9 and a-f; this one contains other characters (an API key will not work here).".into());
        }
        Ok(DatadogAppKey(Secret::new(key)))
    }

    /// The key, for the `DD-APPLICATION-KEY` header only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Its last four characters, shown on the page.
    pub fn last4(&self) -> &str {
        self.0.last4()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn api_urls_and_app_keys_are_checked_and_keys_never_print() {
        assert_eq!(DatadogSite::Eu1.api_base_url(), "https://api.datadoghq.eu");
        assert_eq!(
            DatadogSite::Us1.monitor_url(7),
            "https://app.datadoghq.com/monitors/7"
        );
        let url = DatadogApiUrl::parse("https://api.datadoghq.com/").unwrap();
        assert_eq!(url.as_str(), "https://api.datadoghq.com");
        assert!(DatadogApiUrl::parse("api.datadoghq.com").is_err());
        assert!(DatadogApiUrl::parse("https://u:p@api.datadoghq.com").is_err());
        assert!(DatadogApiUrl::parse("https://api.datadoghq.com/?x=1").is_err());
        let app = "0123456789abcdef0123456789abcdef01234567";
        let key = DatadogAppKey::parse(app).unwrap();
        assert_eq!(key.last4(), "4567");
        assert!(!format!("{key:?}").contains("0123456789"));
        assert!(DatadogAppKey::parse(KEY).unwrap_err().contains("has 32"));
        assert!(DatadogAppKey::parse(&"g".repeat(40)).is_err());
    }

    #[test]
    fn every_site_has_code_param_and_intake() {
        let codes: Vec<&str> = DatadogSite::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(
            codes,
            ["US1", "US3", "US5", "EU1", "AP1", "AP2", "US1-FED", "US2-FED", "UK1"]
        );
        assert_eq!(DatadogSite::Us1.site_param(), "datadoghq.com");
        assert_eq!(DatadogSite::Us1.label(), "US1 — datadoghq.com");
        assert_eq!(
            DatadogSite::Eu1.intake_base_url(),
            "https://http-intake.logs.datadoghq.eu"
        );
        assert_eq!(
            DatadogSite::Us2Fed.intake_base_url(),
            "https://http-intake.logs.us2.ddog-gov.com"
        );
        for site in DatadogSite::ALL {
            assert_eq!(DatadogSite::parse(site.code()), Ok(site));
            assert_eq!(
                DatadogSite::from_intake_host(&site.intake_host()),
                Some(site)
            );
        }
    }

    #[test]
    fn site_parse_is_case_insensitive_and_explains_unknown_codes() {
        assert_eq!(DatadogSite::parse(" us1-fed "), Ok(DatadogSite::Us1Fed));
        let err = DatadogSite::parse("EU2").expect_err("unknown site");
        assert!(err.to_string().contains("EU2"));
        assert_eq!(
            DatadogSite::from_intake_host("HTTP-INTAKE.LOGS.DATADOGHQ.EU."),
            Some(DatadogSite::Eu1)
        );
        assert_eq!(DatadogSite::from_intake_host("proxy.example.com"), None);
    }

    #[test]
    fn log_explorer_urls_use_each_sites_web_app() {
        let q = "service:EZCA @EventID:0";
        let enc = "service%3AEZCA%20%40EventID%3A0";
        let cases = [
            (DatadogSite::Us1, "https://app.datadoghq.com"),
            (DatadogSite::Eu1, "https://app.datadoghq.eu"),
            (DatadogSite::Us1Fed, "https://app.ddog-gov.com"),
            (DatadogSite::Us2Fed, "https://us2.ddog-gov.com"),
            (DatadogSite::Us3, "https://us3.datadoghq.com"),
            (DatadogSite::Us5, "https://us5.datadoghq.com"),
            (DatadogSite::Ap1, "https://ap1.datadoghq.com"),
            (DatadogSite::Ap2, "https://ap2.datadoghq.com"),
            (DatadogSite::Uk1, "https://uk1.datadoghq.com"),
        ];
        for (site, app) in cases {
            assert_eq!(site.log_explorer_url(q), format!("{app}/logs?query={enc}"));
        }
    }

    #[test]
    fn api_key_accepts_32_hex_and_trims() {
        let key = DatadogApiKey::parse(&format!("  {KEY}\n")).expect("valid key");
        assert_eq!(key.expose_secret(), KEY);
        assert_eq!(key.last4(), "cdef");
    }

    #[test]
    fn api_key_rejects_wrong_length_and_characters_with_plain_messages() {
        assert_eq!(DatadogApiKey::parse("   "), Err(ApiKeyError::Empty));
        let short = DatadogApiKey::parse(&KEY[..31]).expect_err("too short");
        assert_eq!(
            short.to_string(),
            "A Datadog API key is 32 characters, 0-9 and a-f; this one has 31."
        );
        let upper = KEY.to_uppercase();
        assert_eq!(
            DatadogApiKey::parse(&upper),
            Err(ApiKeyError::InvalidCharacters)
        );
        assert_eq!(
            DatadogApiKey::parse("0123456789abcdef0123456789abcdeg"),
            Err(ApiKeyError::InvalidCharacters)
        );
        // Multi-byte characters are counted as characters, not bytes.
        assert_eq!(
            DatadogApiKey::parse(&format!("{}é", &KEY[..31])),
            Err(ApiKeyError::InvalidCharacters)
        );
    }

    #[test]
    fn api_key_debug_never_shows_the_key() {
        let key = DatadogApiKey::parse(KEY).expect("valid key");
        let printed = format!("{key:?} {:?}", Some(&key));
        assert!(!printed.contains(KEY));
        assert!(!printed.contains(&KEY[..8]));
        assert!(printed.contains("****cdef"));
    }

    #[test]
    fn intake_url_normalises_to_the_base() {
        for input in [
            "https://http-intake.logs.datadoghq.eu",
            "https://http-intake.logs.datadoghq.eu/",
            "https://http-intake.logs.datadoghq.eu/api/v2/logs",
            " https://HTTP-INTAKE.logs.datadoghq.eu/api/v2/logs/ ",
        ] {
            let url = DatadogIntakeUrl::parse(input).expect("valid url");
            assert_eq!(url.as_str(), "https://http-intake.logs.datadoghq.eu");
            assert_eq!(
                url.logs_endpoint().as_str(),
                "https://http-intake.logs.datadoghq.eu/api/v2/logs"
            );
            assert_eq!(url.site(), Some(DatadogSite::Eu1));
        }
    }

    #[test]
    fn intake_url_keeps_a_proxy_prefix_and_port() {
        let url =
            DatadogIntakeUrl::parse("http://10.0.0.5:8080/datadog/api/v2/logs").expect("valid url");
        assert_eq!(url.as_str(), "http://10.0.0.5:8080/datadog");
        assert_eq!(
            url.logs_endpoint().as_str(),
            "http://10.0.0.5:8080/datadog/api/v2/logs"
        );
        assert_eq!(url.site(), None);
        assert_eq!(
            DatadogIntakeUrl::for_site(DatadogSite::Us1),
            DatadogIntakeUrl::parse("https://http-intake.logs.datadoghq.com").expect("valid")
        );
    }

    #[test]
    fn intake_url_rejects_what_cannot_be_an_intake() {
        let cases = [
            ("", IntakeUrlError::Empty),
            ("http-intake.logs.datadoghq.com", IntakeUrlError::NotAUrl),
            (
                "ftp://http-intake.logs.datadoghq.com",
                IntakeUrlError::UnsupportedScheme {
                    scheme: "ftp".into(),
                },
            ),
            (
                "https://user:pw@http-intake.logs.datadoghq.com",
                IntakeUrlError::HasCredentials,
            ),
            (
                "https://user@http-intake.logs.datadoghq.com",
                IntakeUrlError::HasCredentials,
            ),
            (
                "https://http-intake.logs.datadoghq.com/api/v2/logs?dd-api-key=x",
                IntakeUrlError::HasQuery,
            ),
            (
                "https://http-intake.logs.datadoghq.com/?",
                IntakeUrlError::HasQuery,
            ),
            (
                "https://http-intake.logs.datadoghq.com/#x",
                IntakeUrlError::HasFragment,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(DatadogIntakeUrl::parse(input), Err(expected), "{input}");
        }
        assert!(IntakeUrlError::HasCredentials
            .to_string()
            .contains("remove the user name/password from the URL"));
    }
}
