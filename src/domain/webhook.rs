//! Custom webhook value types: the receiver URL, the signing secret and the extra headers, each
//! parsed from what a person types (or what cloudpki generated) on the settings page.
//!
//! Contract (Standard Webhooks 1.0, "Signature scheme"): a symmetric signing secret is presented
//! as `whsec_` followed by the base64 of 24 to 64 random bytes; cloudpki generates 32. The
//! decoded bytes, not the text, are the HMAC-SHA256 key. Whether a URL may be reached (https,
//! public address) is decided by the egress policy of the `siem` layer, not by this parser.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, Engine, GeneralPurpose, GeneralPurposeConfig};
use rand::RngCore;
use subtle::ConstantTimeEq;
use url::Url;

/// Prefix of a symmetric Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret cloudpki generates.
pub const GENERATED_SECRET_BYTES: usize = 32;
/// Fewest key bytes the spec allows (192 bits).
pub const MIN_SECRET_BYTES: usize = 24;
/// Most key bytes the spec allows (512 bits).
pub const MAX_SECRET_BYTES: usize = 64;
/// Most extra headers one destination may add.
pub const MAX_EXTRA_HEADERS: usize = 10;
/// Longest extra header value, in characters.
pub const MAX_HEADER_VALUE_CHARS: usize = 1024;
/// Headers that cloudpki sets itself or that would break the request; refused as extra
/// headers (compared case-insensitively). Any other `webhook-` header is refused too: the
/// Standard Webhooks spec reserves that prefix for its own metadata.
pub const RESERVED_HEADERS: [&str; 14] = [
    "content-type",
    "content-length",
    "content-encoding",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Standard base64 (with `+` and `/`); padding may be present or left out, as secrets are
/// often pasted without it.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The URL webhook requests are POSTed to: absolute http(s), with a host, without user
/// information or fragment. A query is kept (some receivers route or authenticate with it),
/// so `Debug` and `Display` hide it; [`WebhookUrl::as_str`] gives the whole URL.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a typed webhook URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error(
        "Enter the URL of your webhook receiver, for example https://siem.example.com/hooks/ezca."
    )]
    Empty,
    #[error("This is not a complete URL; enter it with https://, for example https://siem.example.com/hooks/ezca.")]
    NotAUrl,
    #[error("The URL must start with https:// (or http:// for an allowed internal receiver), not {scheme}://.")]
    UnsupportedScheme { scheme: String },
    #[error("The URL has no host name; enter it like https://siem.example.com/hooks/ezca.")]
    MissingHost,
    #[error("The URL contains a user name or password; remove them from the URL and add an Authorization header under Extra headers instead.")]
    HasCredentials,
    #[error("The URL contains a fragment (#…), which is never sent to the receiver; remove it.")]
    HasFragment,
}

impl WebhookUrl {
    /// Trims surrounding whitespace and accepts an absolute http(s) URL with a host, no user
    /// information and no fragment.
    pub fn parse(input: &str) -> Result<WebhookUrl, WebhookUrlError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(WebhookUrlError::Empty);
        }
        let url = Url::parse(input).map_err(|_| WebhookUrlError::NotAUrl)?;
        match url.scheme() {
            "http" | "https" => {}
            other => {
                return Err(WebhookUrlError::UnsupportedScheme {
                    scheme: other.to_owned(),
                })
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebhookUrlError::MissingHost);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookUrlError::HasCredentials);
        }
        // `Url` drops an empty `#`; look at the text so "https://host/#" is refused too.
        if url.fragment().is_some() || input.contains('#') {
            return Err(WebhookUrlError::HasFragment);
        }
        Ok(WebhookUrl(url))
    }

    /// The whole URL, query included: for the request and the settings form.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URL as `url::Url`, for the request and the egress check.
    pub fn as_url(&self) -> &Url {
        &self.0
    }

    /// The host name (or IP literal) of the receiver.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The URL without its query (`?…` stands in for it): safe for logs and messages.
    pub fn redacted(&self) -> String {
        let mut shown = self.0.clone();
        let had_query = shown.query().is_some();
        shown.set_query(None);
        if had_query {
            format!("{shown}?…")
        } else {
            shown.to_string()
        }
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

/// A Standard Webhooks signing secret, `whsec_<base64 of the key>`. Never printed: no
/// `Display`, and `Debug` shows only the last 4 characters.
#[derive(Clone)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

/// Why a signing secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningSecretError {
    #[error("Enter a signing secret, or generate a new one.")]
    Empty,
    #[error("A signing secret starts with whsec_; generate a new one on this page.")]
    MissingPrefix,
    #[error("The part after whsec_ must be base64; copy the whole secret, or generate a new one.")]
    NotBase64,
    #[error("A signing secret holds 24 to 64 bytes; this one holds {found}. Generate a new one.")]
    WrongLength { found: usize },
}

impl SigningSecret {
    /// A new secret of [`GENERATED_SECRET_BYTES`] bytes from the operating system's RNG.
    pub fn generate() -> SigningSecret {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let text = format!("{SECRET_PREFIX}{}", SECRET_BASE64.encode(&key));
        SigningSecret { text, key }
    }

    /// Trims surrounding whitespace and accepts `whsec_` followed by the base64 of 24 to 64
    /// bytes (padding optional).
    pub fn parse(input: &str) -> Result<SigningSecret, SigningSecretError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(SigningSecretError::Empty);
        }
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningSecretError::MissingPrefix)?;
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| SigningSecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SigningSecretError::WrongLength { found: key.len() });
        }
        Ok(SigningSecret {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret as shown once to the user and sealed at rest: `whsec_…`.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// The HMAC-SHA256 key: the base64-decoded part after `whsec_`.
    pub fn hmac_key(&self) -> &[u8] {
        &self.key
    }

    /// The last 4 characters, which the settings page shows to identify a stored secret.
    pub fn last4(&self) -> &str {
        // The text is ASCII (prefix + base64), so any byte index is a char boundary.
        &self.text[self.text.len().saturating_sub(4)..]
    }
}

impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        self.key.ct_eq(&other.key).into()
    }
}

impl Eq for SigningSecret {}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecret(whsec_****{})", self.last4())
    }
}

/// Headers the user adds to every webhook request (for example `Authorization: Bearer …`,
/// which is how many receivers authenticate). Values may be credentials, so `Debug` masks
/// them; [`ExtraHeaders::iter`] and [`ExtraHeaders::expose_text`] give them out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExtraHeaders(Vec<(String, String)>);

/// What is wrong with one line of the extra headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtraHeadersError {
    #[error("Line {line} is not a header; write one header per line as Name: value.")]
    NotAHeader { line: usize },
    #[error("Line {line} has no header name before the colon.")]
    EmptyName { line: usize },
    #[error("Line {line}: the header name \"{name}\" may only contain letters, digits and ! # $ % & ' * + - . ^ _ ` | ~ (no spaces).")]
    InvalidName { line: usize, name: String },
    #[error("Line {line}: cloudpki sets the {name} header itself (or it would break the request); remove this line.")]
    Reserved { line: usize, name: String },
    #[error("Line {line} repeats the header {name}; keep one line per header.")]
    Duplicate { line: usize, name: String },
    #[error("Line {line}: the {name} header has no value.")]
    EmptyValue { line: usize, name: String },
    #[error("Line {line}: the value of {name} contains a control character or a character outside ASCII; use printable ASCII only.")]
    InvalidValue { line: usize, name: String },
    #[error("Line {line}: the value of {name} is longer than 1024 characters.")]
    ValueTooLong { line: usize, name: String },
    #[error("Line {line} is one header too many; at most 10 extra headers are allowed.")]
    TooMany { line: usize },
}

impl ExtraHeaders {
    /// No extra header.
    pub fn none() -> ExtraHeaders {
        ExtraHeaders::default()
    }

    /// Parses one `Name: value` per line (blank lines are skipped, spaces around the name and
    /// the value are trimmed). Refuses the first bad line, naming it (1-based).
    pub fn parse(text: &str) -> Result<ExtraHeaders, ExtraHeadersError> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let (name, value) = raw
                .split_once(':')
                .ok_or(ExtraHeadersError::NotAHeader { line })?;
            let name = name.trim();
            if name.is_empty() {
                return Err(ExtraHeadersError::EmptyName { line });
            }
            if !name.bytes().all(is_token_byte) {
                return Err(ExtraHeadersError::InvalidName {
                    line,
                    name: name.to_owned(),
                });
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("webhook-") {
                return Err(ExtraHeadersError::Reserved {
                    line,
                    name: name.to_owned(),
                });
            }
            if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(ExtraHeadersError::Duplicate {
                    line,
                    name: name.to_owned(),
                });
            }
            if headers.len() == MAX_EXTRA_HEADERS {
                return Err(ExtraHeadersError::TooMany { line });
            }
            let value = value.trim_matches([' ', '\t']);
            if value.is_empty() {
                return Err(ExtraHeadersError::EmptyValue {
                    line,
                    name: name.to_owned(),
                });
            }
            if !value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                return Err(ExtraHeadersError::InvalidValue {
                    line,
                    name: name.to_owned(),
                });
            }
            if value.chars().count() > MAX_HEADER_VALUE_CHARS {
                return Err(ExtraHeadersError::ValueTooLong {
                    line,
                    name: name.to_owned(),
                });
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
        Ok(ExtraHeaders(headers))
    }

    /// The headers as typed (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The header names, in order: what the settings page may show back.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// The headers as `Name: value` lines, values included: for sealing at rest only.
    pub fn expose_text(&self) -> String {
        self.iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no extra header.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ExtraHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.names().map(|name| (name, "****")))
            .finish()
    }
}

/// RFC 7230 `tchar`: the characters allowed in a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_accepts_http_and_https_with_path_port_and_query() {
        let url = WebhookUrl::parse("  https://siem.example.com:8443/hooks/ezca?tenant=7 ")
            .expect("valid url");
        assert_eq!(
            url.as_str(),
            "https://siem.example.com:8443/hooks/ezca?tenant=7"
        );
        assert_eq!(url.host(), "siem.example.com");
        assert_eq!(
            WebhookUrl::parse("http://127.0.0.1:9000/")
                .expect("valid url")
                .as_str(),
            "http://127.0.0.1:9000/"
        );
    }

    #[test]
    fn url_hides_its_query_when_printed() {
        let url = WebhookUrl::parse("https://siem.example.com/in?token=s3cr3t").expect("valid");
        assert_eq!(url.to_string(), "https://siem.example.com/in?…");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert!(url.as_str().contains("token=s3cr3t"));
        let plain = WebhookUrl::parse("https://siem.example.com/in").expect("valid");
        assert_eq!(plain.to_string(), "https://siem.example.com/in");
    }

    #[test]
    fn url_rejects_what_cannot_be_a_receiver() {
        let cases = [
            ("", WebhookUrlError::Empty),
            ("   ", WebhookUrlError::Empty),
            ("siem.example.com/hooks", WebhookUrlError::NotAUrl),
            (
                "ftp://siem.example.com/",
                WebhookUrlError::UnsupportedScheme {
                    scheme: "ftp".into(),
                },
            ),
            (
                "mailto:soc@example.com",
                WebhookUrlError::UnsupportedScheme {
                    scheme: "mailto".into(),
                },
            ),
            (
                "https://user:pw@siem.example.com/",
                WebhookUrlError::HasCredentials,
            ),
            (
                "https://user@siem.example.com/",
                WebhookUrlError::HasCredentials,
            ),
            ("https://siem.example.com/#x", WebhookUrlError::HasFragment),
            ("https://siem.example.com/#", WebhookUrlError::HasFragment),
        ];
        for (input, expected) in cases {
            assert_eq!(WebhookUrl::parse(input), Err(expected), "{input}");
        }
        assert!(WebhookUrlError::HasCredentials
            .to_string()
            .contains("Authorization header"));
    }

    #[test]
    fn generated_secrets_are_32_random_bytes_and_parse_back() {
        let secret = SigningSecret::generate();
        assert!(secret.expose_secret().starts_with("whsec_"));
        assert_eq!(secret.hmac_key().len(), GENERATED_SECRET_BYTES);
        assert_eq!(
            SigningSecret::parse(secret.expose_secret()).expect("round trip"),
            secret
        );
        assert_ne!(SigningSecret::generate(), secret);
    }

    #[test]
    fn secret_parse_decodes_the_key_and_checks_its_length() {
        // The Standard Webhooks reference secret: 24 bytes, the smallest allowed.
        let secret =
            SigningSecret::parse(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").expect("valid");
        assert_eq!(secret.hmac_key().len(), 24);
        assert_eq!(secret.last4(), "LaSw");
        let cases = [
            ("", SigningSecretError::Empty),
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SigningSecretError::MissingPrefix,
            ),
            ("whsec_not base64!", SigningSecretError::NotBase64),
            (
                "whsec_c2hvcnQ=",
                SigningSecretError::WrongLength { found: 5 },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SigningSecret::parse(input).map(|s| s.hmac_key().len()),
                Err(expected),
                "{input}"
            );
        }
        // Padding may be left out.
        let padded = SigningSecret::generate();
        let bare = padded.expose_secret().trim_end_matches('=');
        assert_eq!(SigningSecret::parse(bare).expect("unpadded"), padded);
    }

    #[test]
    fn secret_debug_never_shows_the_secret() {
        let secret = SigningSecret::generate();
        let printed = format!("{secret:?} {:?}", Some(&secret));
        assert!(!printed.contains(secret.expose_secret()));
        assert!(!printed.contains(&secret.expose_secret()[6..14]));
        assert!(printed.contains(&format!("whsec_****{}", secret.last4())));
    }

    #[test]
    fn extra_headers_parse_one_per_line_and_keep_order() {
        let headers = ExtraHeaders::parse(
            "Authorization: Bearer abc.def\r\n\n  X-Team :  soc-eu  \nX-Empty-Ok:1",
        )
        .expect("valid headers");
        let got: Vec<(&str, &str)> = headers.iter().collect();
        assert_eq!(
            got,
            [
                ("Authorization", "Bearer abc.def"),
                ("X-Team", "soc-eu"),
                ("X-Empty-Ok", "1")
            ]
        );
        assert_eq!(headers.len(), 3);
        assert_eq!(
            ExtraHeaders::parse(&headers.expose_text()).expect("round trip"),
            headers
        );
        assert!(ExtraHeaders::parse("\n \n").expect("blank").is_empty());
        // A colon inside the value is part of the value.
        let url = ExtraHeaders::parse("X-Origin: https://pki.example.com:8443").expect("valid");
        assert_eq!(
            url.iter().next(),
            Some(("X-Origin", "https://pki.example.com:8443"))
        );
    }

    #[test]
    fn extra_headers_debug_masks_values() {
        let headers = ExtraHeaders::parse("Authorization: Bearer topsecret").expect("valid");
        let printed = format!("{headers:?}");
        assert!(!printed.contains("topsecret"), "{printed}");
        assert!(printed.contains("Authorization"));
    }

    #[test]
    fn extra_headers_errors_name_the_line() {
        let long = format!("X-Long: {}", "a".repeat(1025));
        let eleven: String = (0..11).map(|i| format!("X-H{i}: v\n")).collect();
        let cases: Vec<(&str, ExtraHeadersError)> = vec![
            (
                "X-Ok: 1\nno colon here",
                ExtraHeadersError::NotAHeader { line: 2 },
            ),
            (": value", ExtraHeadersError::EmptyName { line: 1 }),
            (
                "X Team: a",
                ExtraHeadersError::InvalidName {
                    line: 1,
                    name: "X Team".into(),
                },
            ),
            (
                "X-Ok: 1\n\nContent-Type: text/plain",
                ExtraHeadersError::Reserved {
                    line: 3,
                    name: "Content-Type".into(),
                },
            ),
            (
                "WEBHOOK-SIGNATURE: v1,x",
                ExtraHeadersError::Reserved {
                    line: 1,
                    name: "WEBHOOK-SIGNATURE".into(),
                },
            ),
            (
                "webhook-foo: 1",
                ExtraHeadersError::Reserved {
                    line: 1,
                    name: "webhook-foo".into(),
                },
            ),
            (
                "Transfer-Encoding: chunked",
                ExtraHeadersError::Reserved {
                    line: 1,
                    name: "Transfer-Encoding".into(),
                },
            ),
            (
                "X-A: 1\nx-a: 2",
                ExtraHeadersError::Duplicate {
                    line: 2,
                    name: "x-a".into(),
                },
            ),
            (
                "X-A:   ",
                ExtraHeadersError::EmptyValue {
                    line: 1,
                    name: "X-A".into(),
                },
            ),
            (
                "X-A: a\u{7f}b",
                ExtraHeadersError::InvalidValue {
                    line: 1,
                    name: "X-A".into(),
                },
            ),
            (
                "X-A: café",
                ExtraHeadersError::InvalidValue {
                    line: 1,
                    name: "X-A".into(),
                },
            ),
            (
                &long,
                ExtraHeadersError::ValueTooLong {
                    line: 1,
                    name: "X-Long".into(),
                },
            ),
            (&eleven, ExtraHeadersError::TooMany { line: 11 }),
        ];
        for (input, expected) in cases {
            assert_eq!(ExtraHeaders::parse(input), Err(expected), "{input:?}");
        }
        for name in RESERVED_HEADERS {
            assert!(
                ExtraHeaders::parse(&format!("{name}: x")).is_err(),
                "{name}"
            );
        }
        assert_eq!(
            ExtraHeadersError::Reserved {
                line: 4,
                name: "Host".into()
            }
            .to_string(),
            "Line 4: cloudpki sets the Host header itself (or it would break the request); remove this line."
        );
        // Exactly ten headers and a 1024-character value are fine.
        let ten: String = (0..10).map(|i| format!("X-H{i}: v\n")).collect();
        assert_eq!(ExtraHeaders::parse(&ten).expect("ten").len(), 10);
        let max = format!("X-Max: {}", "a".repeat(1024));
        assert!(ExtraHeaders::parse(&max).is_ok());
    }
}
