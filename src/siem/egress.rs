//! Egress control for outbound SIEM calls (SSRF protection).
//!
//! A SIEM URL is typed by a subscription administrator, so without a guard it could make the
//! server call its own loopback services, the cloud metadata endpoint (169.254.169.254) or the
//! private network. The rules:
//!
//! - Only `https` to public addresses, unless the host is listed in `CLOUDPKI_EGRESS_ALLOW`
//!   (comma-separated host names, IPs or CIDRs), which also permits plain `http`.
//! - IP-literal URLs are judged by [`EgressPolicy::check_url`] (reqwest does not resolve them);
//!   every send path calls it before building the request.
//! - Host names are resolved by [`GuardedResolver`], which drops every non-public address that
//!   is not allowed; the connection is made only to the addresses it returns, so a DNS answer
//!   that changes between check and connect (rebinding) cannot reach a private address.
//! - The client follows no redirects and ignores proxy environment variables, so neither can
//!   route a request around these checks.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use url::{Host, Url};

/// Time allowed to establish a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request, from connect to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The `User-Agent` of every outbound SIEM call.
pub const USER_AGENT: &str = concat!("cloudpki/", env!("CARGO_PKG_VERSION"));

/// A boxed, sendable future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Destinations that may be reached although private/loopback, and over plain http.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

/// A `CLOUDPKI_EGRESS_ALLOW` entry that is neither a host name, an IP nor a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CLOUDPKI_EGRESS_ALLOW entry \"{entry}\" is not a host name, an IP address or a CIDR (like 10.0.0.0/8); fix or remove it.")]
pub struct EgressPolicyError {
    pub entry: String,
}

/// Why an outbound call was refused before any packet was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("The URL must use https or http, not {scheme}.")]
    UnsupportedScheme { scheme: String },
    #[error("The URL has no host name.")]
    MissingHost,
    #[error("{host} may only be reached over https; use an https:// URL (plain http is allowed only for hosts listed in CLOUDPKI_EGRESS_ALLOW).")]
    PlainHttp { host: String },
    #[error("{host} is a private, loopback or reserved address, which SIEM calls may not reach; use the SIEM's public address, or list it in CLOUDPKI_EGRESS_ALLOW if this internal destination is intended.")]
    PrivateAddress { host: String },
}

impl EgressPolicy {
    /// Parses `CLOUDPKI_EGRESS_ALLOW`: comma-separated host names (exact, case-insensitive),
    /// IPs and CIDRs. Empty means nothing beyond public https.
    pub fn parse(input: &str) -> Result<EgressPolicy, EgressPolicyError> {
        let mut policy = EgressPolicy::default();
        for entry in input.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = bare.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if is_host_name(entry) {
                policy
                    .hosts
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(EgressPolicyError {
                    entry: entry.to_owned(),
                });
            }
        }
        Ok(policy)
    }

    /// Whether the host name is listed (exact, case-insensitive).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether the address is inside a listed IP or CIDR.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// How a host typed into a non-HTTP destination's settings (brokers, a syslog receiver)
    /// stands before any lookup: listed, an address the policy refuses, or neither (a name,
    /// judged again at resolution time by [`GuardedResolver`], or a public address).
    pub fn standing(&self, host: &str) -> Standing {
        match host.parse::<IpAddr>() {
            Ok(ip) => self.standing_ip(ip),
            Err(_) if self.allows_host(host) => Standing::Listed,
            Err(_) => Standing::Open,
        }
    }

    /// How an address stands: listed, refused (not public and not listed), or open (public).
    pub fn standing_ip(&self, ip: IpAddr) -> Standing {
        if self.allows_ip(ip) {
            Standing::Listed
        } else if !is_public(ip) {
            Standing::Refused
        } else {
            Standing::Open
        }
    }

    /// Refuses a URL that may not be called: non-http(s), plain http to a host that is not
    /// allowed, or an IP literal that is not public and not allowed. Host names are judged
    /// again at resolution time by [`GuardedResolver`].
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(EgressError::UnsupportedScheme {
                scheme: scheme.to_owned(),
            });
        }
        let host = url.host().ok_or(EgressError::MissingHost)?;
        let standing = match &host {
            Host::Domain(name) => self.standing(name),
            Host::Ipv4(v4) => self.standing_ip(IpAddr::V4(*v4)),
            Host::Ipv6(v6) => self.standing_ip(IpAddr::V6(*v6)),
        };
        if standing == Standing::Refused {
            return Err(EgressError::PrivateAddress {
                host: host.to_string(),
            });
        }
        if scheme == "http" && standing != Standing::Listed {
            return Err(EgressError::PlainHttp {
                host: host.to_string(),
            });
        }
        Ok(())
    }
}

fn is_host_name(entry: &str) -> bool {
    !entry.is_empty()
        && entry.len() <= 253
        && entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && entry.bytes().any(|b| b.is_ascii_alphabetic())
}

/// An IPv4-mapped IPv6 address is the IPv4 address it carries.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

/// Whether an address is on the public internet: false for loopback, private, link-local
/// (incl. cloud metadata), CGNAT, unspecified, broadcast, multicast, documentation,
/// benchmarking and reserved ranges; IPv6 forms that embed an IPv4 address are judged by it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0 // "this network", incl. 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96 carry an IPv4 address.
    if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    // 6to4 2002::/16 embeds the IPv4 address in the next 32 bits.
    if seg[0] == 0x2002 {
        let [a, b] = seg[1].to_be_bytes();
        let [c, d] = seg[2].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    let reserved = (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (seg[0] & 0xff00) == 0xff00 // multicast
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        // Teredo 2001::/32 tunnels to an IPv4 address of anyone's choosing (private included)
        || (seg[0] == 0x2001 && seg[1] == 0x0000)
        || (seg[0] == 0x2001 && seg[1] == 0x0002 && seg[2] == 0) // benchmarking 2001:2::/48
        || (seg[0] == 0x0064 && seg[1] == 0xff9b) // local-use NAT64 64:ff9b:1::/48
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only 100::/64
        || seg[0] == 0; // rest of ::/16 (reserved)
    !reserved
}

/// Name resolution, pluggable so tests can answer with chosen addresses.
pub trait Lookup: Send + Sync {
    /// Every address `host` resolves to.
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|addr| addr.ip()).collect())
        })
    }
}

/// A fixed table of answers; unknown names fail like NXDOMAIN.
#[derive(Debug, Clone, Default)]
pub struct StaticLookup {
    answers: HashMap<String, Vec<IpAddr>>,
}

impl StaticLookup {
    /// A table of `host → addresses` (host names compared case-insensitively).
    pub fn new<I, S>(answers: I) -> StaticLookup
    where
        I: IntoIterator<Item = (S, Vec<IpAddr>)>,
        S: Into<String>,
    {
        StaticLookup {
            answers: answers
                .into_iter()
                .map(|(host, ips)| (host.into().to_ascii_lowercase(), ips))
                .collect(),
        }
    }
}

impl Lookup for StaticLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let answer = self
            .answers
            .get(&host.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no DNS record for {host}"))
            });
        Box::pin(async move { answer })
    }
}

/// Resolution refused because every address of the host is private/loopback/reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves only to private or loopback addresses ({addrs}), which SIEM calls may not reach; use the SIEM's public address, or list the host in CLOUDPKI_EGRESS_ALLOW if this internal destination is intended.")]
pub struct ResolveDenied {
    pub host: String,
    pub addrs: String,
}

/// The [`ResolveDenied`] somewhere in an error's cause chain, if any.
///
/// `io::Error::source` skips the error it wraps, so wrapped errors are looked into explicitly.
pub fn find_resolve_denied<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ResolveDenied> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(denied) = e.downcast_ref::<ResolveDenied>() {
            return Some(denied);
        }
        let inner = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref());
        if let Some(denied) = inner.and_then(|i| i.downcast_ref::<ResolveDenied>()) {
            return Some(denied);
        }
        next = e.source();
    }
    None
}

/// See [`EgressPolicy::standing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// In `CLOUDPKI_EGRESS_ALLOW`: internal, and plaintext allowed.
    Listed,
    /// A private, loopback or reserved address that is not listed.
    Refused,
    /// Anything else: public, encrypted only.
    Open,
}

/// The reqwest resolver that enforces the egress policy on every resolved address.
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl GuardedResolver {
    /// A resolver that asks `lookup` and filters its answers through `policy`.
    pub fn new(policy: Arc<EgressPolicy>, lookup: Arc<dyn Lookup>) -> GuardedResolver {
        GuardedResolver { policy, lookup }
    }

    /// The addresses of `host` that may be connected to; an error if none may.
    pub async fn resolve_allowed(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        // An address is its own answer: no resolver (a test's included) is asked about it.
        let found = match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => vec![ip],
            Err(_) => self.lookup.lookup(host).await?,
        };
        let host_allowed = self.policy.allows_host(host);
        let allowed: Vec<IpAddr> = found
            .iter()
            .copied()
            .filter(|ip| host_allowed || is_public(*ip) || self.policy.allows_ip(*ip))
            .collect();
        if allowed.is_empty() {
            let addrs = found
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                ResolveDenied {
                    host: host.to_owned(),
                    addrs,
                },
            ));
        }
        Ok(allowed)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let lookup = Arc::clone(&self.lookup);
        Box::pin(async move {
            let guard = GuardedResolver { policy, lookup };
            let ips = guard.resolve_allowed(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Timeouts of the SIEM client; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: CONNECT_TIMEOUT,
            request: REQUEST_TIMEOUT,
        }
    }
}

/// The HTTP client could not be set up (the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("could not build the SIEM HTTP client")]
pub struct ClientBuildError(#[source] reqwest::Error);

/// The one client used for SIEM calls, by the forwarder and by Test Connection alike.
pub fn http_client(
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
) -> Result<reqwest::Client, ClientBuildError> {
    http_client_with_timeouts(policy, lookup, HttpTimeouts::default())
}

/// [`http_client`] with chosen timeouts.
pub fn http_client_with_timeouts(
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
    timeouts: HttpTimeouts,
) -> Result<reqwest::Client, ClientBuildError> {
    reqwest::Client::builder()
        .use_rustls_tls()
        // A redirect would be followed without passing `check_url` again.
        .redirect(reqwest::redirect::Policy::none())
        // An HTTP(S)_PROXY variable would send the request somewhere the checks never saw.
        .no_proxy()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .user_agent(USER_AGENT)
        .dns_resolver(Arc::new(GuardedResolver::new(policy, lookup)))
        .build()
        .map_err(ClientBuildError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test url")
    }

    #[test]
    fn public_addresses_are_told_from_reserved_ones() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(public)), "{public} is public");
        }
        for reserved in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            // Teredo: server 65.54.227.120, client 192.168.1.1 obfuscated; refused whole
            "2001:0:4136:e378:8000:63bf:3f57:fefe",
            "2001::1",
            "2001:2::1",
        ] {
            assert!(!is_public(ip(reserved)), "{reserved} is not public");
        }
    }

    #[test]
    fn policy_parses_hosts_ips_and_cidrs() {
        let policy = EgressPolicy::parse(" 127.0.0.1, 10.0.0.0/8 ,LocalHost,::1,, siem.internal ")
            .expect("valid policy");
        assert!(policy.allows_ip(ip("127.0.0.1")));
        assert!(!policy.allows_ip(ip("127.0.0.2")));
        assert!(policy.allows_ip(ip("10.200.0.1")));
        assert!(policy.allows_ip(ip("::ffff:10.0.0.1")));
        assert!(policy.allows_ip(ip("::1")));
        assert!(policy.allows_host("localhost"));
        assert!(policy.allows_host("SIEM.internal."));
        assert!(!policy.allows_host("evil.internal"));
        assert_eq!(
            EgressPolicy::parse("").expect("empty"),
            EgressPolicy::default()
        );
    }

    #[test]
    fn policy_names_the_bad_entry() {
        let err = EgressPolicy::parse("127.0.0.1, 10.0.0.0/33").expect_err("bad cidr");
        assert_eq!(err.entry, "10.0.0.0/33");
        let err = EgressPolicy::parse("http://x").expect_err("url is not a host");
        assert!(err.to_string().contains("\"http://x\""));
    }

    #[test]
    fn check_url_requires_https_and_public_ips_unless_allowed() {
        let none = EgressPolicy::default();
        assert_eq!(
            none.check_url(&url("https://http-intake.logs.datadoghq.com/api/v2/logs")),
            Ok(())
        );
        assert_eq!(none.check_url(&url("https://8.8.8.8/")), Ok(()));
        assert!(matches!(
            none.check_url(&url("http://http-intake.logs.datadoghq.com/")),
            Err(EgressError::PlainHttp { .. })
        ));
        for private in [
            "https://127.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://0x7f.1/",
            "http://10.0.0.1/",
        ] {
            assert!(
                matches!(
                    none.check_url(&url(private)),
                    Err(EgressError::PrivateAddress { .. })
                ),
                "{private}"
            );
        }
        assert!(matches!(
            none.check_url(&url("ftp://example.com/")),
            Err(EgressError::UnsupportedScheme { .. })
        ));

        let local = EgressPolicy::parse("127.0.0.1,proxy.internal").expect("valid policy");
        assert_eq!(local.check_url(&url("http://127.0.0.1:9000/x")), Ok(()));
        assert_eq!(local.check_url(&url("http://proxy.internal/x")), Ok(()));
        assert!(matches!(
            local.check_url(&url("http://127.0.0.2:9000/")),
            Err(EgressError::PrivateAddress { .. })
        ));
    }

    fn client(policy: &str, lookup: StaticLookup) -> reqwest::Client {
        http_client(
            Arc::new(EgressPolicy::parse(policy).expect("valid policy")),
            Arc::new(lookup),
        )
        .expect("client builds")
    }

    fn chain_has_resolve_denied(err: &reqwest::Error) -> bool {
        find_resolve_denied(err).is_some()
    }

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused_before_connecting() {
        for target in ["10.1.2.3", "169.254.169.254", "127.0.0.1"] {
            let lookup = StaticLookup::new([("intake.example.com", vec![ip(target)])]);
            let client = client("", lookup);
            let err = client
                .get("https://intake.example.com/api/v2/logs")
                .send()
                .await
                .expect_err("refused");
            assert!(chain_has_resolve_denied(&err), "{target}: {err:?}");
        }
    }

    #[tokio::test]
    async fn only_public_answers_are_kept_when_a_name_resolves_to_a_mix() {
        let policy = Arc::new(EgressPolicy::default());
        let lookup = Arc::new(StaticLookup::new([(
            "mixed.example.com",
            vec![ip("10.0.0.1"), ip("93.184.216.34")],
        )]));
        let resolver = GuardedResolver::new(policy, lookup);
        let kept = resolver
            .resolve_allowed("mixed.example.com")
            .await
            .expect("one public address");
        assert_eq!(kept, vec![ip("93.184.216.34")]);
    }

    #[tokio::test]
    async fn loopback_outside_the_allowed_ip_is_refused_without_a_packet() {
        // Nothing listens on this port: a connect attempt would say "connection refused".
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let policy = EgressPolicy::parse("127.0.0.1").expect("valid policy");
        let target = url(&format!("http://127.0.0.2:{port}/api/v2/logs"));
        assert!(matches!(
            policy.check_url(&target),
            Err(EgressError::PrivateAddress { .. })
        ));
        // And through the resolver, for a name that answers 127.0.0.2.
        let client = client(
            "127.0.0.1",
            StaticLookup::new([("sneaky.example.com", vec![ip("127.0.0.2")])]),
        );
        let err = client
            .get(format!("http://sneaky.example.com:{port}/"))
            .send()
            .await
            .expect_err("refused");
        assert!(chain_has_resolve_denied(&err), "{err:?}");
    }

    #[tokio::test]
    async fn an_allowed_cidr_reaches_a_real_loopback_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let client = client(
            "127.0.0.0/8",
            StaticLookup::new([("siem.test", vec![ip("127.0.0.1")])]),
        );
        let policy = EgressPolicy::parse("127.0.0.0/8").expect("valid policy");
        let target = url(&format!("http://siem.test:{port}/"));
        // The name is not listed, so plain http is refused ...
        assert!(matches!(
            policy.check_url(&target),
            Err(EgressError::PlainHttp { .. })
        ));
        // ... while the IP literal inside the allowed CIDR is fine over http.
        let target = url(&format!("http://127.0.0.1:{port}/"));
        assert_eq!(policy.check_url(&target), Ok(()));
        let response = client.get(target).send().await.expect("reaches the server");
        assert_eq!(response.status().as_u16(), 204);
    }

    #[tokio::test]
    async fn system_lookup_resolves_localhost() {
        let ips = SystemLookup
            .lookup("localhost")
            .await
            .expect("localhost resolves");
        assert!(ips.iter().all(|ip| ip.is_loopback()));
    }
}
