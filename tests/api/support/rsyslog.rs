//! A real rsyslog (Debian's `rsyslog` and `rsyslog-openssl`, installed by `.ci/setup --test`)
//! listening for RFC 5425 TLS on a loopback port with a test CA, writing every message it
//! receives, raw, one per line, to a file the test reads back.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A test CA, a server certificate for `localhost` and a client certificate, in PEM.
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cloudpki syslog test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) =
            leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert_pem, client_key_pem) =
            leaf("cloudpki.test", ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca_pem: ca_cert.pem(),
            server_cert_pem,
            server_key_pem,
            client_cert_pem,
            client_key_pem,
        }
    }

    /// A TLS acceptor with the server certificate for `localhost`, for a receiver of our own.
    /// `asks_for_client_cert`: it asks for a client certificate (issued by the test CA) but lets
    /// the session through without one.
    pub fn acceptor(&self, asks_for_client_cert: bool) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if asks_for_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }
}

/// A running rsyslogd; killed when dropped.
pub struct Rsyslog {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    out: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd with TLS on a free loopback port; `require_client_cert`: mutual TLS
    /// (`x509/certvalid`: a client certificate issued by the test CA).
    pub async fn start(pki: &Pki, require_client_cert: bool) -> Rsyslog {
        let auth = if require_client_cert {
            "x509/certvalid"
        } else {
            "anon"
        };
        Rsyslog::start_with(pki, Some(auth)).await
    }

    /// Starts rsyslogd for plain TCP (RFC 6587 octet counting), no TLS.
    pub async fn start_plain_tcp(pki: &Pki) -> Rsyslog {
        Rsyslog::start_with(pki, None).await
    }

    /// Starts rsyslogd with a RELP input (imrelp) over TLS (OpenSSL) on a free loopback port;
    /// `require_client_cert`: the client must show a certificate issued by the test CA.
    pub async fn start_relp(pki: &Pki, require_client_cert: bool) -> Rsyslog {
        assert!(
            std::path::Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so").exists(),
            "rsyslog's RELP input is installed (bash .ci/setup --test installs rsyslog-relp)"
        );
        // imrelp cannot write down a port it picked: hand it one outside the kernel's ephemeral
        // range, which no other test's listener (port 0) or outgoing connection can take.
        let port = super::ports::outside_the_ephemeral_range();
        let auth = if require_client_cert {
            r#" tls.authMode="certvalid""#
        } else {
            ""
        };
        let input = format!(
            r#"module(load="imrelp" tls.tlslib="openssl")
input(type="imrelp" port="{port}" address="127.0.0.1" ruleset="received" tls="on"
      tls.caCert="{{dir}}/ca.pem" tls.myCert="{{dir}}/server.pem" tls.myPrivKey="{{dir}}/server.key"{auth})"#
        );
        let mut started = Rsyslog::launch(pki, &input).await;
        // Listening once the kernel lists the socket. No probe connection: a bare one that never
        // speaks TLS is what made rsyslog's OpenSSL stream driver misbehave (see `start_with`).
        let deadline = Instant::now() + Duration::from_secs(15);
        while !super::ports::listening_on(port) {
            assert!(
                Instant::now() < deadline,
                "imrelp listens on {port}: {}",
                started.complaints()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.port = port;
        started
    }

    /// `tls_auth`: the OpenSSL driver's authMode, or `None` for plain TCP.
    async fn start_with(pki: &Pki, tls_auth: Option<&str>) -> Rsyslog {
        let module = match tls_auth {
            Some(auth) => format!(
                r#"module(load="imtcp" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="{auth}")"#
            ),
            None => r#"module(load="imtcp")"#.to_owned(),
        };
        let input = format!(
            r#"{module}
input(type="imtcp" port="0" listenPortFileName="{{dir}}/port" address="127.0.0.1" ruleset="received")"#
        );
        let mut started = Rsyslog::launch(pki, &input).await;
        // rsyslogd picks a free port itself and writes it down: no other test's receiver can
        // take it between a probe and the start.
        let port_file = started.dir.path().join("port");
        let begun = Instant::now();
        started.port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break port;
            }
            assert!(
                begun.elapsed() < Duration::from_secs(15),
                "rsyslogd wrote its port: {}",
                started.complaints()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // No probe connection: a bare TCP connection that never speaks TLS makes rsyslog's
        // OpenSSL driver close a descriptor twice now and then (seen here: its output file's
        // writes then failed with EPIPE and messages were lost inside rsyslog). The port file is
        // written once it listens.
        started
    }

    /// Writes the test PKI and a configuration with `input` (its `{dir}` is the receiver's
    /// folder) feeding the output file, and starts rsyslogd on it (`port` still 0).
    async fn launch(pki: &Pki, input: &str) -> Rsyslog {
        assert!(
            std::path::Path::new("/usr/sbin/rsyslogd").exists(),
            "rsyslogd is installed (bash .ci/setup --test installs rsyslog and rsyslog-openssl)"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(path("server.pem"), &pki.server_cert_pem).unwrap();
        std::fs::write(path("server.key"), &pki.server_key_pem).unwrap();
        let out = path("received.log");
        let conf = format!(
            r#"global(workDirectory="{dir}" maxMessageSize="64k"
       defaultNetstreamDriver="ossl"
       defaultNetstreamDriverCAFile="{dir}/ca.pem"
       defaultNetstreamDriverCertFile="{dir}/server.pem"
       defaultNetstreamDriverKeyFile="{dir}/server.key")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="received") {{
  action(type="omfile" file="{out}" template="raw")
}}
{input}
"#,
            dir = dir.path().display(),
            out = out.display(),
            input = input.replace("{dir}", &dir.path().display().to_string()),
        );
        std::fs::write(path("rsyslog.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(path("rsyslog.conf"))
            .arg("-i")
            .arg(path("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Its complaints (refused handshakes the tests provoke) go to a file beside its
            // config, not into the test output.
            .stderr(std::fs::File::create(path("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd starts");
        Rsyslog {
            child,
            dir,
            port: 0,
            out,
        }
    }

    /// What rsyslogd said on stderr (for a failing test's message).
    pub fn complaints(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.err")).unwrap_or_default()
    }

    /// The messages received so far, once at least `n` arrived (or after 10 s).
    pub async fn received(&self, n: usize) -> Vec<String> {
        self.received_within(n, Duration::from_secs(10)).await
    }

    /// The messages received so far, once at least `n` arrived (or after `wait`).
    pub async fn received_within(&self, n: usize, wait: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n || started.elapsed() > wait {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
