//! Microsoft Sentinel (Azure Monitor Logs Ingestion API) value types, each parsed from what a
//! person types on the settings page.
//!
//! Contract (Microsoft Learn, "Logs Ingestion API in Azure Monitor", and "National clouds"):
//!
//! - The app registration is named by its **Directory (tenant) ID** and **Application (client)
//!   ID**, both GUIDs, and authenticates with a **client secret** (its *Value*, not its
//!   *Secret ID*, which is a GUID).
//! - Data is POSTed to `{endpoint}/dataCollectionRules/{dcr}/streams/{stream}`, where the
//!   endpoint is the DCR's own logs-ingestion endpoint or a data collection endpoint (DCE) such as
//!   `https://x.eastus-1.ingest.monitor.azure.com`; the DCR immutable id is `dcr-` + 32 hex;
//!   the stream is an *input* stream declared in the DCR: `Custom-<name>` for custom data or
//!   `Microsoft-<table>` for a built-in table. The `_CL` suffix belongs to the custom *table*
//!   (the DCR's `outputStream`), not to the input stream (the docs' own example posts to
//!   `Custom-MyTable` and writes to `MyTable_CL`), so it is not required here.
//! - Each cloud has its own sign-in host and Azure Monitor audience:
//!   public `login.microsoftonline.com` / `https://monitor.azure.com`, US Government
//!   `login.microsoftonline.us` / `https://monitor.azure.us`, Azure operated by 21Vianet
//!   `login.chinacloudapi.cn` / `https://monitor.azure.cn` (hosts from Microsoft's national
//!   clouds page and the MSAL `AzureCloudInstance` values; audiences from the Logs Ingestion API
//!   page). The sign-in base URL can be overridden ([`LoginBaseUrl`]) for a proxy, a cloud not
//!   listed here, or tests.
//!
//! Whether a URL may be reached (https, public address) is decided by the egress policy of the
//! `siem` layer, not by these parsers, so `http://` is accepted here.

use super::secret::Secret;
use std::fmt;

use url::Url;

/// Longest client secret accepted, in characters (Azure generates 40).
pub const MAX_CLIENT_SECRET_CHARS: usize = 256;
/// Length of the hex part of a DCR immutable id.
pub const DCR_HEX_CHARS: usize = 32;
/// Longest stream name after its `Custom-` / `Microsoft-` prefix, in characters.
pub const MAX_STREAM_NAME_CHARS: usize = 100;

/// The Azure cloud (instance) the tenant and the workspace live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AzureCloud {
    Public,
    UsGovernment,
    China,
}

/// A cloud name that is not one of [`AzureCloud::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an Azure cloud; choose Azure (public), Azure US Government or Azure operated by 21Vianet (China).")]
pub struct UnknownAzureCloud(pub String);

impl AzureCloud {
    /// Every cloud, public first.
    pub const ALL: [AzureCloud; 3] = [
        AzureCloud::Public,
        AzureCloud::UsGovernment,
        AzureCloud::China,
    ];

    /// The form value: `public`, `usgovernment`, `china`.
    pub fn code(self) -> &'static str {
        match self {
            AzureCloud::Public => "public",
            AzureCloud::UsGovernment => "usgovernment",
            AzureCloud::China => "china",
        }
    }

    /// The option label of the cloud select.
    pub fn label(self) -> &'static str {
        match self {
            AzureCloud::Public => "Azure (public)",
            AzureCloud::UsGovernment => "Azure US Government",
            AzureCloud::China => "Azure operated by 21Vianet (China)",
        }
    }

    /// The Microsoft Entra sign-in base URL of the cloud, without a trailing slash.
    pub fn default_login_base_url(self) -> &'static str {
        match self {
            AzureCloud::Public => "https://login.microsoftonline.com",
            AzureCloud::UsGovernment => "https://login.microsoftonline.us",
            AzureCloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// [`AzureCloud::default_login_base_url`] as a parsed value.
    pub fn default_login_base(self) -> LoginBaseUrl {
        LoginBaseUrl::parse(self.default_login_base_url())
            .unwrap_or_else(|_| unreachable!("the built-in login URLs are valid"))
    }

    /// The OAuth2 `scope` of a token for the Logs Ingestion API in this cloud.
    pub fn monitor_scope(self) -> &'static str {
        match self {
            AzureCloud::Public => "https://monitor.azure.com/.default",
            AzureCloud::UsGovernment => "https://monitor.azure.us/.default",
            AzureCloud::China => "https://monitor.azure.cn/.default",
        }
    }

    /// Parses a form value or an Azure CLI cloud name (`AzureCloud`, `AzureUSGovernment`,
    /// `AzureChinaCloud`), case-insensitively.
    pub fn parse(input: &str) -> Result<AzureCloud, UnknownAzureCloud> {
        let code = input.trim().to_ascii_lowercase();
        match code.as_str() {
            "public" | "azurecloud" | "azure" => Ok(AzureCloud::Public),
            "usgovernment" | "azureusgovernment" | "usgov" => Ok(AzureCloud::UsGovernment),
            "china" | "azurechinacloud" | "21vianet" => Ok(AzureCloud::China),
            _ => Err(UnknownAzureCloud(input.trim().to_owned())),
        }
    }
}

impl fmt::Display for AzureCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Parses the hyphenated GUID form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercased.
fn parse_guid(input: &str) -> Option<String> {
    let text = input.trim();
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text)
        .ok()
        .map(|id| id.hyphenated().to_string())
}

/// The Directory (tenant) ID of the app registration: a GUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

/// Why a typed tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    #[error("Enter the Directory (tenant) ID; it is shown on the app registration's Overview page in the Azure portal.")]
    Empty,
    #[error("The Directory (tenant) ID is a GUID like 72f988bf-86f1-41af-91ab-2d7cd011db47; copy it from the app registration's Overview page.")]
    NotAGuid,
}

impl TenantId {
    /// Accepts a hyphenated GUID (surrounding whitespace ignored), kept lowercase.
    pub fn parse(input: &str) -> Result<TenantId, TenantIdError> {
        if input.trim().is_empty() {
            return Err(TenantIdError::Empty);
        }
        parse_guid(input)
            .map(TenantId)
            .ok_or(TenantIdError::NotAGuid)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Application (client) ID of the app registration: a GUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

/// Why a typed client id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    #[error("Enter the Application (client) ID; it is shown on the app registration's Overview page in the Azure portal.")]
    Empty,
    #[error("The Application (client) ID is a GUID like 0d3c8e5a-1b2f-4c6d-9e8f-123456789abc; copy it from the app registration's Overview page (not the object ID or a secret).")]
    NotAGuid,
}

impl ClientId {
    /// Accepts a hyphenated GUID (surrounding whitespace ignored), kept lowercase.
    pub fn parse(input: &str) -> Result<ClientId, ClientIdError> {
        if input.trim().is_empty() {
            return Err(ClientIdError::Empty);
        }
        parse_guid(input)
            .map(ClientId)
            .ok_or(ClientIdError::NotAGuid)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client secret of the app registration. Never printed: `Debug` shows only the last 4
/// characters; there is no `Display` and no serde.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSecret(Secret);

/// Why a typed client secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSecretError {
    #[error("Enter a client secret; create one under the app registration's Certificates & secrets and copy its Value.")]
    Empty,
    #[error("A client secret is at most 256 characters; this one has {found}, so it is probably not a secret value.")]
    TooLong { found: usize },
    #[error("The client secret contains spaces inside it or control characters; copy the secret's Value again, exactly as the portal shows it.")]
    InvalidCharacters,
    #[error("This looks like the secret's Secret ID (a GUID); copy the secret's Value instead, which the portal shows only right after the secret is created.")]
    LooksLikeSecretId,
}

impl ClientSecret {
    /// Trims surrounding whitespace and accepts 1–256 printable characters without inner
    /// whitespace. A GUID is refused: it is the Secret ID that people often paste by mistake.
    pub fn parse(input: &str) -> Result<ClientSecret, ClientSecretError> {
        let secret = input.trim();
        if secret.is_empty() {
            return Err(ClientSecretError::Empty);
        }
        let found = secret.chars().count();
        if found > MAX_CLIENT_SECRET_CHARS {
            return Err(ClientSecretError::TooLong { found });
        }
        if secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ClientSecretError::InvalidCharacters);
        }
        if parse_guid(secret).is_some() {
            return Err(ClientSecretError::LooksLikeSecretId);
        }
        Ok(ClientSecret(Secret::new(secret)))
    }

    /// The secret itself, for the token request and for sealing at rest only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// The last 4 characters, which the settings page shows to identify a stored secret; empty
    /// when the secret is shorter than 8 characters (showing 4 would reveal half of it).
    pub fn last4(&self) -> &str {
        self.0.last4()
    }
}

/// Why a typed URL (ingestion endpoint or sign-in base) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("Enter the logs ingestion endpoint of the data collection rule (or of its data collection endpoint), for example https://my-dce-a1b2.eastus-1.ingest.monitor.azure.com.")]
    Empty,
    #[error("This is not a complete URL; enter it with https://, for example https://my-dce-a1b2.eastus-1.ingest.monitor.azure.com.")]
    NotAUrl,
    #[error("The URL must start with https:// (or http:// for an allowed internal proxy), not {scheme}://.")]
    UnsupportedScheme { scheme: String },
    #[error("The URL has no host name; enter it like https://my-dce-a1b2.eastus-1.ingest.monitor.azure.com.")]
    MissingHost,
    #[error("The URL contains a user name or password; remove them (the client secret goes in its own field).")]
    HasCredentials,
    #[error("The URL contains a query (?…) or a fragment (#…); remove it and enter only the endpoint address.")]
    HasQuery,
    #[error("Enter only the endpoint address (scheme, host and port) without a path such as /dataCollectionRules/…; the DCR immutable ID and the stream name have their own fields.")]
    HasPath,
}

/// Checks the shape shared by the ingestion endpoint and the sign-in base URL and returns the
/// parsed URL and its path without a trailing slash.
fn parse_base_url(input: &str) -> Result<(Url, String), EndpointError> {
    let input = input.trim();
    if input.is_empty() {
        return Err(EndpointError::Empty);
    }
    let url = Url::parse(input).map_err(|_| EndpointError::NotAUrl)?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(EndpointError::UnsupportedScheme {
                scheme: other.to_owned(),
            })
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(EndpointError::MissingHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::HasCredentials);
    }
    // `Url` drops an empty `?`/`#`; look at the text so "https://host/?" is refused too.
    if url.query().is_some() || url.fragment().is_some() || input.contains(['?', '#']) {
        return Err(EndpointError::HasQuery);
    }
    let path = url.path().trim_end_matches('/').to_owned();
    Ok((url, path))
}

/// The logs-ingestion endpoint: a DCR's own endpoint or a DCE, `scheme://host[:port]` only.
#[derive(Clone, PartialEq, Eq)]
pub struct IngestionEndpoint {
    url: Url,
}

impl IngestionEndpoint {
    /// Accepts an absolute http(s) URL with no path (a trailing `/` is fine), no query, no
    /// fragment and no user info.
    pub fn parse(input: &str) -> Result<IngestionEndpoint, EndpointError> {
        let (mut url, path) = parse_base_url(input)?;
        if !path.is_empty() {
            return Err(EndpointError::HasPath);
        }
        url.set_path("");
        Ok(IngestionEndpoint { url })
    }

    /// `scheme://host[:port]`, without a trailing slash.
    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// The host name (or IP) of the endpoint.
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    /// The ingestion URL of one stream of one DCR, with `api-version`.
    pub fn stream_url(&self, dcr: &DcrImmutableId, stream: &StreamName, api_version: &str) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!(
            "/dataCollectionRules/{}/streams/{}",
            dcr.as_str(),
            stream.as_str()
        ));
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", api_version);
        url
    }
}

impl fmt::Debug for IngestionEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IngestionEndpoint({})", self.as_str())
    }
}

impl fmt::Display for IngestionEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Microsoft Entra sign-in base URL (e.g. `https://login.microsoftonline.com`); may carry
/// a proxy's path prefix. The token URL is `{base}/{tenant}/oauth2/v2.0/token`.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginBaseUrl {
    base: String,
}

impl LoginBaseUrl {
    /// Accepts an absolute http(s) URL without query, fragment or user info; a path prefix is
    /// kept (trailing slash dropped).
    pub fn parse(input: &str) -> Result<LoginBaseUrl, EndpointError> {
        let (url, _) = parse_base_url(input)?;
        // Without query and fragment, the serialised URL is origin + path.
        Ok(LoginBaseUrl {
            base: url.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &TenantId) -> Url {
        let text = format!("{}/{}/oauth2/v2.0/token", self.base, tenant.as_str());
        // The base parsed as a URL and a GUID adds only hex digits and hyphens.
        Url::parse(&text).unwrap_or_else(|_| unreachable!("token URL of a valid base"))
    }

    /// The host of the sign-in URL.
    pub fn host(&self) -> String {
        Url::parse(&self.base)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl fmt::Debug for LoginBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoginBaseUrl({})", self.base)
    }
}

impl fmt::Display for LoginBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

/// The immutable id of a data collection rule: `dcr-` + 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DcrImmutableId(String);

/// Why a typed DCR immutable id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DcrIdError {
    #[error("Enter the DCR immutable ID; it is shown on the data collection rule's Overview page (JSON view: immutableId).")]
    Empty,
    #[error("A DCR immutable ID is dcr- followed by 32 hex digits, like dcr-000a00a000a00000a000000aa000a0aa; copy it from the rule's Overview page (not its name or resource ID).")]
    Malformed,
}

impl DcrImmutableId {
    /// Accepts `dcr-` + 32 characters `0-9a-f` (either case), trimmed.
    pub fn parse(input: &str) -> Result<DcrImmutableId, DcrIdError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(DcrIdError::Empty);
        }
        let hex = text.strip_prefix("dcr-").ok_or(DcrIdError::Malformed)?;
        if hex.len() != DCR_HEX_CHARS || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DcrIdError::Malformed);
        }
        Ok(DcrImmutableId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DcrImmutableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An input stream of the DCR: `Custom-<name>` or `Microsoft-<table>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName(String);

/// Why a typed stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    #[error("Enter the stream name declared in the data collection rule, for example Custom-EzcaAudit_CL.")]
    Empty,
    #[error("A stream name starts with Custom- (custom data) or Microsoft- (a built-in table), for example Custom-EzcaAudit_CL; copy it from the rule's streamDeclarations.")]
    MissingPrefix,
    #[error("After Custom- or Microsoft- a stream name has 1 to 100 letters, digits or underscores, for example Custom-EzcaAudit_CL.")]
    InvalidName,
}

impl StreamName {
    /// Accepts `Custom-` or `Microsoft-` (exact case, as Azure writes them) followed by 1–100
    /// ASCII letters, digits or underscores.
    pub fn parse(input: &str) -> Result<StreamName, StreamNameError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(StreamNameError::Empty);
        }
        let name = text
            .strip_prefix("Custom-")
            .or_else(|| text.strip_prefix("Microsoft-"))
            .ok_or(StreamNameError::MissingPrefix)?;
        if name.is_empty()
            || name.len() > MAX_STREAM_NAME_CHARS
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StreamNameError::InvalidName);
        }
        Ok(StreamName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a custom (`Custom-`) stream.
    pub fn is_custom(&self) -> bool {
        self.0.starts_with("Custom-")
    }

    /// The Log Analytics table the stream most likely lands in: `Custom-X_CL` → `X_CL`,
    /// `Custom-X` → `X_CL` (custom tables always end in `_CL`), `Microsoft-X` → `X`. The DCR's
    /// `outputStream` decides for sure; this is for the query shown after Test Connection.
    pub fn likely_table(&self) -> String {
        if let Some(name) = self.0.strip_prefix("Custom-") {
            if name.ends_with("_CL") {
                name.to_owned()
            } else {
                format!("{name}_CL")
            }
        } else {
            self.0
                .strip_prefix("Microsoft-")
                .unwrap_or(&self.0)
                .to_owned()
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn clouds_have_login_hosts_and_monitor_scopes() {
        let table = [
            (
                AzureCloud::Public,
                "https://login.microsoftonline.com",
                "https://monitor.azure.com/.default",
            ),
            (
                AzureCloud::UsGovernment,
                "https://login.microsoftonline.us",
                "https://monitor.azure.us/.default",
            ),
            (
                AzureCloud::China,
                "https://login.chinacloudapi.cn",
                "https://monitor.azure.cn/.default",
            ),
        ];
        for (cloud, login, scope) in table {
            assert_eq!(cloud.default_login_base().as_str(), login);
            assert_eq!(cloud.monitor_scope(), scope);
            assert_eq!(AzureCloud::parse(cloud.code()), Ok(cloud));
        }
        assert_eq!(
            AzureCloud::parse(" AzureUSGovernment "),
            Ok(AzureCloud::UsGovernment)
        );
        assert_eq!(AzureCloud::parse("AzureChinaCloud"), Ok(AzureCloud::China));
        let err = AzureCloud::parse("germany").expect_err("closed cloud");
        assert!(err.to_string().contains("\"germany\""));
    }

    #[test]
    fn tenant_and_client_ids_are_guids_kept_lowercase() {
        let tenant = TenantId::parse(&format!(" {} ", GUID.to_uppercase())).expect("guid");
        assert_eq!(tenant.as_str(), GUID);
        assert_eq!(ClientId::parse(GUID).expect("guid").as_str(), GUID);
        assert_eq!(TenantId::parse(" "), Err(TenantIdError::Empty));
        for bad in [
            "contoso.onmicrosoft.com",
            "72f988bf86f141af91ab2d7cd011db47",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "72f988bf-86f1-41af-91ab-2d7cd011db4",
        ] {
            assert_eq!(TenantId::parse(bad), Err(TenantIdError::NotAGuid), "{bad}");
            assert_eq!(ClientId::parse(bad), Err(ClientIdError::NotAGuid), "{bad}");
        }
        assert!(ClientIdError::NotAGuid
            .to_string()
            .contains("Application (client) ID"));
    }

    #[test]
    fn client_secret_never_prints_and_shows_only_its_last_four() {
        let secret = ClientSecret::parse(" abc8Q~sEcReT.value-1234wxyz ").expect("secret");
        assert_eq!(secret.expose_secret(), "abc8Q~sEcReT.value-1234wxyz");
        assert_eq!(secret.last4(), "wxyz");
        let debug = format!("{secret:?}");
        assert_eq!(debug, "ClientSecret(****wxyz)");
        assert!(!debug.contains("sEcReT"));
        let short = ClientSecret::parse("abc").expect("short secret");
        assert_eq!(format!("{short:?}"), "ClientSecret(****)");
        let unicode = ClientSecret::parse("ééééééééé€xyz").expect("unicode");
        assert_eq!(unicode.last4(), "€xyz");
    }

    #[test]
    fn client_secret_rejects_what_cannot_be_a_secret_value() {
        assert_eq!(ClientSecret::parse("  "), Err(ClientSecretError::Empty));
        assert_eq!(
            ClientSecret::parse(&"a".repeat(257)),
            Err(ClientSecretError::TooLong { found: 257 })
        );
        assert!(ClientSecret::parse(&"a".repeat(256)).is_ok());
        assert_eq!(
            ClientSecret::parse("abc def"),
            Err(ClientSecretError::InvalidCharacters)
        );
        assert_eq!(
            ClientSecret::parse("abc\u{7}def"),
            Err(ClientSecretError::InvalidCharacters)
        );
        assert_eq!(
            ClientSecret::parse(GUID),
            Err(ClientSecretError::LooksLikeSecretId)
        );
    }

    #[test]
    fn ingestion_endpoint_accepts_dcr_and_dce_hosts_only() {
        let dce =
            IngestionEndpoint::parse("https://my-dce-5kyl.eastus-1.ingest.monitor.azure.com/")
                .expect("dce");
        assert_eq!(
            dce.as_str(),
            "https://my-dce-5kyl.eastus-1.ingest.monitor.azure.com"
        );
        assert_eq!(dce.host(), "my-dce-5kyl.eastus-1.ingest.monitor.azure.com");
        let local = IngestionEndpoint::parse("http://127.0.0.1:9000").expect("http at parse time");
        assert_eq!(local.as_str(), "http://127.0.0.1:9000");

        let dcr = DcrImmutableId::parse("dcr-000a00a000a00000a000000aa000a0aa").expect("dcr");
        let stream = StreamName::parse("Custom-MyTable").expect("stream");
        assert_eq!(
            dce.stream_url(&dcr, &stream, "2023-01-01").as_str(),
            "https://my-dce-5kyl.eastus-1.ingest.monitor.azure.com/dataCollectionRules/dcr-000a00a000a00000a000000aa000a0aa/streams/Custom-MyTable?api-version=2023-01-01"
        );

        let table = [
            ("", EndpointError::Empty),
            (
                "my-dce.eastus-1.ingest.monitor.azure.com",
                EndpointError::NotAUrl,
            ),
            (
                "ftp://x.example.com",
                EndpointError::UnsupportedScheme {
                    scheme: "ftp".into(),
                },
            ),
            (
                "https://user:pw@x.example.com",
                EndpointError::HasCredentials,
            ),
            ("https://x.example.com/?", EndpointError::HasQuery),
            ("https://x.example.com/#a", EndpointError::HasQuery),
            (
                "https://x.example.com/dataCollectionRules/dcr-1/streams/Custom-A",
                EndpointError::HasPath,
            ),
        ];
        for (input, expected) in table {
            assert_eq!(IngestionEndpoint::parse(input), Err(expected), "{input}");
        }
    }

    #[test]
    fn login_base_builds_the_v2_token_url_and_keeps_a_proxy_prefix() {
        let tenant = TenantId::parse(GUID).expect("guid");
        let public = AzureCloud::Public.default_login_base();
        assert_eq!(
            public.token_url(&tenant).as_str(),
            format!("https://login.microsoftonline.com/{GUID}/oauth2/v2.0/token")
        );
        let proxy = LoginBaseUrl::parse("http://127.0.0.1:8443/entra/").expect("proxy");
        assert_eq!(proxy.as_str(), "http://127.0.0.1:8443/entra");
        assert_eq!(
            proxy.token_url(&tenant).as_str(),
            format!("http://127.0.0.1:8443/entra/{GUID}/oauth2/v2.0/token")
        );
        assert_eq!(proxy.host(), "127.0.0.1");
        assert_eq!(
            LoginBaseUrl::parse("https://login.microsoftonline.com?x=1"),
            Err(EndpointError::HasQuery)
        );
    }

    #[test]
    fn dcr_immutable_id_is_dcr_dash_32_hex() {
        let id = DcrImmutableId::parse(" dcr-000A00a000a00000a000000aa000a0aa ").expect("dcr");
        assert_eq!(id.as_str(), "dcr-000A00a000a00000a000000aa000a0aa");
        assert_eq!(DcrImmutableId::parse(""), Err(DcrIdError::Empty));
        for bad in [
            "000a00a000a00000a000000aa000a0aa",
            "dcr-000a00a000a00000a000000aa000a0a",
            "dcr-000a00a000a00000a000000aa000a0aag",
            "dcr-000a00a000a00000a000000aa000a0zz",
            "my-dcr-rule",
        ] {
            assert_eq!(
                DcrImmutableId::parse(bad),
                Err(DcrIdError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn stream_names_need_a_prefix_and_a_plain_name() {
        for good in [
            "Custom-EzcaAudit_CL",
            "Custom-MyTable",
            "Microsoft-CommonSecurityLog",
        ] {
            assert_eq!(StreamName::parse(good).expect(good).as_str(), good);
        }
        assert_eq!(StreamName::parse(""), Err(StreamNameError::Empty));
        for (bad, expected) in [
            ("EzcaAudit_CL", StreamNameError::MissingPrefix),
            ("custom-EzcaAudit_CL", StreamNameError::MissingPrefix),
            ("Custom-", StreamNameError::InvalidName),
            ("Custom-Ezca Audit", StreamNameError::InvalidName),
            ("Custom-Ezca-Audit", StreamNameError::InvalidName),
        ] {
            assert_eq!(StreamName::parse(bad), Err(expected), "{bad}");
        }
        assert!(StreamName::parse(&format!("Custom-{}", "a".repeat(101))).is_err());
    }

    #[test]
    fn the_likely_table_follows_the_custom_table_suffix_rule() {
        let table = |s: &str| StreamName::parse(s).expect(s).likely_table();
        assert_eq!(table("Custom-EzcaAudit_CL"), "EzcaAudit_CL");
        assert_eq!(table("Custom-MyTable"), "MyTable_CL");
        assert_eq!(table("Microsoft-CommonSecurityLog"), "CommonSecurityLog");
        assert!(StreamName::parse("Custom-A").expect("custom").is_custom());
    }
}
