//! Sending: one connection per batch, through the egress guard, over TLS (RFC 5425) or plain
//! TCP (RFC 6587), the batch's octet-counted messages written and the connection closed
//! cleanly (TLS `close_notify`). Syslog acknowledges nothing: a batch written and closed
//! without an error is delivered; an error after the first byte left is "maybe sent".

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::domain::syslog::{SyslogHost, SyslogTransport};
use crate::siem::egress::{EgressPolicy, GuardedResolver, Lookup};

/// How long connecting (and the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long writing one batch (and closing) may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how messages go.
#[derive(Clone)]
pub struct Endpoint {
    pub host: SyslogHost,
    pub port: u16,
    pub transport: SyslogTransport,
    /// TLS: the server's certificate is checked against these roots (the public ones and a
    /// configured CA), and a client certificate is shown when configured.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why a batch did not go out.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    /// The outbound policy refused every address of the host: nothing was sent.
    #[error("{0}")]
    Denied(String),
    /// Nothing was sent: the destination's settings or the network (retry later).
    #[error("{detail}")]
    NotSent { why: Unreached, detail: String },
    /// The server's certificate was refused, or it refused ours: a settings problem.
    #[error("{0}")]
    Tls(String),
    /// The connection broke after bytes left: the receiver may have some of the batch. Over
    /// RELP it acknowledged the first `acknowledged` messages (plain syslog acknowledges none).
    #[error("{reason}")]
    MaybeSent { acknowledged: usize, reason: String },
    /// The receiver refused the RELP session (its answer says why): a settings problem.
    #[error("{0}")]
    Refused(String),
}

/// Why the receiver was not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreached {
    /// Nothing listens on the port (the connection was refused).
    Refused,
    /// Connecting or the TLS handshake took too long.
    TimedOut,
    /// The host name has no address.
    Unresolved,
    /// Connecting failed otherwise (an unreachable network, …).
    Failed,
}

impl SyslogError {
    pub(super) fn not_sent(why: Unreached, detail: String) -> SyslogError {
        SyslogError::NotSent { why, detail }
    }
}

/// Which part of the TLS settings is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPart {
    /// The CA certificate.
    Ca,
    /// The client certificate or its key.
    Client,
    /// TLS itself could not be set up (not the settings' fault).
    Library,
}

/// Why the TLS settings cannot be used: the part at fault, in words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TlsSetupError {
    pub part: TlsPart,
    pub message: String,
}

/// The TLS client settings: the public roots plus `ca_pem`'s certificates, and a client
/// certificate (chain and key, PEM) for mutual TLS.
pub fn tls_config(
    ca_pem: Option<&str>,
    client_pair: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let ca = |message| TlsSetupError {
        part: TlsPart::Ca,
        message,
    };
    let client = |message| TlsSetupError {
        part: TlsPart::Client,
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|_| ca("the CA certificate is not valid PEM".to_owned()))?;
            roots
                .add(cert)
                .map_err(|e| ca(format!("the CA certificate cannot be used ({e})")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca(
                "the CA field holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError {
            part: TlsPart::Library,
            message: format!("TLS cannot be set up ({e})"),
        })?
        .with_root_certificates(roots);
    match client_pair {
        None => Ok(builder.with_no_client_auth()),
        Some((chain_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|_| client("the client certificate is not valid PEM".to_owned()))?;
            if chain.is_empty() {
                return Err(client(
                    "the client certificate field holds no PEM certificate".into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
                client(
                    "the client key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                client(format!(
                    "the client certificate and key do not go together ({e})"
                ))
            })
        }
    }
}

/// Connects to the first address of the host that the egress policy allows.
async fn connect(
    endpoint: &Endpoint,
    egress: &EgressPolicy,
    lookup: Arc<dyn Lookup>,
) -> Result<TcpStream, SyslogError> {
    let host = endpoint.host.as_str();
    let resolver = GuardedResolver::new(Arc::new(egress.clone()), lookup);
    let addrs = resolver.resolve_allowed(host).await.map_err(|e| {
        match crate::siem::egress::find_resolve_denied(&e) {
            Some(denied) => SyslogError::Denied(format!(
                "{host} resolves only to addresses this server's outbound policy blocks ({}); nothing was sent",
                denied.addrs
            )),
            None => SyslogError::not_sent(
                Unreached::Unresolved,
                format!("{host} could not be resolved ({e})"),
            ),
        }
    })?;
    let mut last = (Unreached::Unresolved, format!("{host} has no address"));
    for ip in addrs {
        let addr = SocketAddr::new(ip, endpoint.port);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = (
                    Unreached::Refused,
                    format!(
                        "{addr} refused the connection (nothing listens on port {})",
                        endpoint.port
                    ),
                );
            }
            Ok(Err(e)) => {
                last = (
                    Unreached::Failed,
                    format!("connecting to {addr} failed ({e})"),
                )
            }
            Err(_) => {
                last = (
                    Unreached::TimedOut,
                    format!(
                        "connecting to {addr} timed out after {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            }
        }
    }
    Err(SyslogError::not_sent(last.0, last.1))
}

/// How long the receiver has to close its side after ours, or to say it refused us (a TLS
/// alert after the handshake, as a server that requires a client certificate sends in TLS 1.3).
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Writes the framed messages, closes our side cleanly, then reads until the receiver closes
/// its side: an alert arriving there means the receiver refused the session, not that it
/// stored the batch.
async fn write_all<S: Closing>(
    stream: &mut S,
    framed: &[u8],
    host: &SyslogHost,
) -> Result<(), SyslogError> {
    let written = async {
        stream.write_all(framed).await?;
        stream.flush().await?;
        stream.close().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, written).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            if is_tls_alert(&e) {
                return Err(SyslogError::Tls(explain_tls(host, &e)));
            }
            // A receiver that refused the session (a client certificate it requires) sends its
            // alert and closes; our write can fail first. The alert may still be there to read.
            if let Err(alert) = drain(stream).await {
                return Err(SyslogError::Tls(explain_tls(host, &alert)));
            }
            return Err(SyslogError::MaybeSent {
                acknowledged: 0,
                reason: format!("the connection broke while sending ({e}); the receiver may have part of the batch"),
            });
        }
        Err(_) => {
            return Err(SyslogError::MaybeSent {
                acknowledged: 0,
                reason: format!(
                    "sending did not finish within {} s; the receiver may have part of the batch",
                    WRITE_TIMEOUT.as_secs()
                ),
            })
        }
    }
    // The receiver closed, reset after reading, or kept its side open: what we wrote and
    // closed cleanly went out, unless what it sent back is a TLS alert.
    drain(stream)
        .await
        .map_err(|alert| SyslogError::Tls(explain_tls(host, &alert)))
}

/// Reads what the receiver still sends until it closes (at most [`CLOSE_WAIT`]): `Err` with
/// the error when that is a TLS alert, else `Ok`.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(), std::io::Error> {
    let mut buf = [0u8; 512];
    let drained = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(CLOSE_WAIT, drained).await {
        Ok(Err(e)) if is_tls_alert(&e) => Err(e),
        _ => Ok(()),
    }
}

/// How our side of a connection ends once the batch is written.
pub(super) trait Closing: AsyncRead + AsyncWrite + Unpin {
    async fn close(&mut self) -> std::io::Result<()>;
}

impl Closing for TcpStream {
    /// Plain TCP: our side shut (FIN); the receiver reads to the end, then closes.
    async fn close(&mut self) -> std::io::Result<()> {
        self.shutdown().await
    }
}

impl Closing for tokio_rustls::client::TlsStream<&mut TcpStream> {
    /// TLS: `close_notify`, but the socket left open: a receiver that meets the end of the
    /// stream while records still wait in its TLS buffer can drop them (rsyslog's OpenSSL
    /// driver did, now and then); it closes the connection itself once it has read our
    /// `close_notify`, and [`drain`] waits for that.
    async fn close(&mut self) -> std::io::Result<()> {
        self.get_mut().1.send_close_notify();
        self.flush().await
    }
}

/// Whether an I/O error is the peer's TLS alert (or a TLS protocol failure).
pub(super) fn is_tls_alert(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// Sends one batch of framed messages on a connection of its own.
pub async fn send_framed(
    endpoint: &Endpoint,
    egress: &EgressPolicy,
    lookup: Arc<dyn Lookup>,
    framed: &[u8],
) -> Result<(), SyslogError> {
    let mut tcp = connect(endpoint, egress, lookup).await?;
    match (&endpoint.transport, &endpoint.tls) {
        (SyslogTransport::Tls | SyslogTransport::Relp, Some(config)) => {
            let name = ServerName::try_from(endpoint.host.as_str().to_owned()).map_err(|_| {
                SyslogError::Tls(format!("{} is not a name TLS can check", endpoint.host))
            })?;
            let (config, asked) = noting_certificate_requests(config);
            let connector = tokio_rustls::TlsConnector::from(config);
            let handshake = connector.connect(name, &mut tcp);
            let mut tls = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return Err(SyslogError::Tls(explain_tls(&endpoint.host, &e))),
                Err(_) => {
                    return Err(SyslogError::not_sent(
                        Unreached::TimedOut,
                        format!(
                            "the TLS handshake with {} did not finish within {} s",
                            endpoint.host,
                            CONNECT_TIMEOUT.as_secs()
                        ),
                    ))
                }
            };
            // Over RELP every message is acknowledged, so a receiver that asks for a certificate
            // and takes the session without one proves or refuses delivery itself (a GnuTLS
            // imrelp asks whenever it has a certificate of its own, whatever it checks).
            let asked = asked.filter(|_| endpoint.transport == SyslogTransport::Tls);
            if asked.is_some_and(|asked| asked.0.load(Ordering::Acquire)) {
                // Syslog acknowledges nothing: a receiver that wants a certificate and drops a
                // session without one (GnuTLS receivers close without an alert) would look
                // like a delivery. Nothing is written to it.
                return Err(SyslogError::Tls(format!(
                    "{} asks for a client certificate and none is set, so nothing was sent (a receiver that asks usually drops a session without one, silently). Paste the client certificate and its key (PEM) into the settings",
                    endpoint.host
                )));
            }
            match endpoint.transport {
                SyslogTransport::Relp => {
                    super::relp::exchange(&mut tls, framed, &endpoint.host).await
                }
                _ => write_all(&mut tls, framed, &endpoint.host).await,
            }
        }
        (SyslogTransport::Tls | SyslogTransport::Relp, None) => Err(SyslogError::Tls(
            "TLS is chosen but not set up; save the settings again".into(),
        )),
        (SyslogTransport::Tcp, _) => write_all(&mut tcp, framed, &endpoint.host).await,
    }
}

/// Notes that the server asked for a client certificate, where none is configured (it answers
/// with none, as rustls' own resolver does).
#[derive(Debug, Default)]
struct CertificateAsked(AtomicBool);

impl rustls::client::ResolvesClientCert for CertificateAsked {
    fn resolve(
        &self,
        _acceptable_issuers: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.store(true, Ordering::Release);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// The TLS settings for one connection: without a client certificate, a copy that notes
/// whether the server asks for one (this connection's own note, so parallel batches never mix
/// them up).
fn noting_certificate_requests(
    config: &Arc<rustls::ClientConfig>,
) -> (Arc<rustls::ClientConfig>, Option<Arc<CertificateAsked>>) {
    if config.client_auth_cert_resolver.has_certs() {
        return (config.clone(), None);
    }
    let asked = Arc::new(CertificateAsked::default());
    let mut own = (**config).clone();
    own.client_auth_cert_resolver = asked.clone();
    // A resumed session has no certificate request to note: every connection shakes hands in
    // full.
    own.resumption = rustls::client::Resumption::disabled();
    (Arc::new(own), Some(asked))
}

/// The TLS failure in plain words: the certificate's name, its issuer, or the server's view of
/// ours.
pub(super) fn explain_tls(host: &SyslogHost, e: &std::io::Error) -> String {
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as Tls};
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>());
    match tls {
        Some(Tls::InvalidCertificate(
            Cert::NotValidForName | Cert::NotValidForNameContext { .. },
        )) => format!("the server's certificate is not issued for {host}; connect with the name in its certificate, or give the receiver a certificate for {host}"),
        Some(Tls::InvalidCertificate(Cert::UnknownIssuer)) => format!("the server's certificate for {host} is issued by a CA this server does not trust; paste that CA's certificate (PEM) into the CA field"),
        Some(Tls::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. })) => {
            format!("the server's certificate for {host} has expired")
        }
        Some(Tls::AlertReceived(
            Alert::CertificateRequired | Alert::HandshakeFailure | Alert::BadCertificate,
        )) => format!("{host} refused the TLS handshake ({e}); if it requires a client certificate, give one and its key"),
        _ => format!("the TLS handshake with {host} failed ({e})"),
    }
}
