//! Configuration from the environment (DESIGN.md, "Contract: environment").
//!
//! Every variable is parsed into a typed value at start-up. A bad value stops start-up with one
//! line that names the variable, what is wrong with it and what a good value looks like.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use base64::Engine as _;
use url::Url;

use crate::crypto::MasterKey;

// Delivery defaults: the forwarder's tunables, here so that configuration depends on nothing
// above it.

/// How long a claim holds a destination without a renewal; a worker that dies releases it by
/// letting it expire. Renewed every third of it while sending.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How long one claim may go on reading new ranges before it gives the destination back.
pub const DEFAULT_CLAIM_BUDGET: Duration = Duration::from_secs(5);
/// First retry delay; doubles with each consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay for transient trouble.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Longest retry delay while the destination is misconfigured (bad key or URL).
pub const FAILING_RETRY_CAP: Duration = Duration::from_secs(600);
/// Transient failures turn a destination *failing* (and email its admins) once they have
/// lasted this long…
pub const FAILING_AFTER: Duration = Duration::from_secs(300);
/// …or after this many attempts in a row, whichever comes first.
pub const FAILING_AFTER_ATTEMPTS: i32 = 5;
/// Periodic sweep: retries that came due, and anything a lost notification left behind.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Destinations served at once per process.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Ranges of one destination in flight at once, at most.
pub const MAX_WINDOW: usize = 8;
/// Default period of the heartbeat log (`CLOUDPKI_HEARTBEAT_SECONDS`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);
/// How long SIGTERM waits for sends in flight before handing them back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Default address of the portal.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default retention of undelivered events, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 14;

/// A configuration value that is wrong. `Display` is the one line shown at start-up.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable (or flag) at fault.
    pub variable: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// The validated configuration of one cloudpki process.
#[derive(Clone)]
pub struct Config {
    /// `DATABASE_URL`; `None` means the embedded cluster under `data_dir/postgres`.
    pub database_url: Option<String>,
    /// `CLOUDPKI_DATA_DIR`.
    pub data_dir: PathBuf,
    /// `CLOUDPKI_LISTEN` (or `--listen`).
    pub listen: SocketAddr,
    /// `CLOUDPKI_MASTER_KEY`; `None` in embedded mode means "generate into the data dir".
    pub master_key: Option<MasterKey>,
    /// `CLOUDPKI_SMTP_URL`.
    pub smtp_url: Option<Url>,
    /// `CLOUDPKI_MAIL_FROM`.
    pub mail_from: String,
    /// `CLOUDPKI_PUBLIC_URL`; `None` means `http://` + the address actually bound.
    pub public_url: Option<Url>,
    /// `CLOUDPKI_RETENTION_DAYS`.
    pub retention_days: u32,
    /// `CLOUDPKI_EGRESS_ALLOW`, raw; parsed by the SIEM egress policy.
    pub egress_allow: String,
    /// `CLOUDPKI_WORKER_LEASE_SECONDS`: how long a worker holds a destination; after a crash,
    /// its batch is resent once the lease runs out.
    pub worker_lease: std::time::Duration,
    /// `CLOUDPKI_METRICS_LISTEN`: the Prometheus listener's address; `None`: no listener.
    pub metrics_listen: Option<SocketAddr>,
    /// `CLOUDPKI_SHUTDOWN_GRACE_SECONDS`: how long a stopping forwarder waits for its sends
    /// before handing them back.
    pub shutdown_grace: std::time::Duration,
    /// `CLOUDPKI_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `CLOUDPKI_HEARTBEAT_SECONDS`: period of the heartbeat log per enabled destination;
    /// `None` (`0`): no heartbeat.
    pub heartbeat: Option<std::time::Duration>,
    /// `CLOUDPKI_PAGE_CACHE`: whether the portal keeps pages in memory (`store::page_cache`);
    /// `off` for a database reached through a pooler that cannot `LISTEN`.
    pub page_cache: bool,
}

impl std::fmt::Debug for Config {
    // The database URL and the SMTP URL may carry passwords, the master key is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("master_key", &self.master_key.as_ref().map(|_| "<set>"))
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field("mail_from", &self.mail_from)
            .field("public_url", &self.public_url.as_ref().map(Url::as_str))
            .field("retention_days", &self.retention_days)
            .field("egress_allow", &self.egress_allow)
            .field("worker_lease", &self.worker_lease)
            .field("metrics_listen", &self.metrics_listen)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("heartbeat", &self.heartbeat)
            .field("page_cache", &self.page_cache)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

impl Config {
    /// Reads the process environment; `listen_flag` is `--listen`, which wins over the variable.
    pub fn from_env(listen_flag: Option<&str>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), listen_flag)
    }

    /// Builds the configuration from any variable lookup (tests pass a map).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        listen_flag: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let database_url = match get("DATABASE_URL") {
            Some(raw) => {
                let url = Url::parse(raw.trim()).map_err(|e| {
                    ConfigError::new(
                        "DATABASE_URL",
                        format!("not a URL ({e}); expected postgres://user@host:5432/dbname, or leave it unset for the embedded database"),
                    )
                })?;
                if !matches!(url.scheme(), "postgres" | "postgresql") {
                    return Err(ConfigError::new(
                        "DATABASE_URL",
                        format!(
                            "scheme `{}` is not supported; use postgres://user@host:5432/dbname",
                            url.scheme()
                        ),
                    ));
                }
                Some(raw.trim().to_owned())
            }
            None => None,
        };

        let data_dir = PathBuf::from(get("CLOUDPKI_DATA_DIR").unwrap_or_else(|| "./data".into()));

        let (listen_var, listen_raw) = match listen_flag {
            Some(flag) => ("--listen", flag.to_owned()),
            None => (
                "CLOUDPKI_LISTEN",
                get("CLOUDPKI_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
            ),
        };
        let listen: SocketAddr = listen_raw.trim().parse().map_err(|_| {
            ConfigError::new(
                listen_var,
                format!("`{listen_raw}` is not an address and port such as 127.0.0.1:8080 or [::1]:8080"),
            )
        })?;

        let previous_key = match get("CLOUDPKI_MASTER_KEY_PREVIOUS") {
            Some(raw) => Some(
                parse_master_key(&raw)
                    .map_err(|e| ConfigError::new("CLOUDPKI_MASTER_KEY_PREVIOUS", e.problem))?,
            ),
            None => None,
        };
        let master_key = match get("CLOUDPKI_MASTER_KEY") {
            Some(raw) => Some(match previous_key {
                Some(previous) => parse_master_key(&raw)?.with_previous(previous),
                None => parse_master_key(&raw)?,
            }),
            None if database_url.is_some() => {
                return Err(ConfigError::new(
                    "CLOUDPKI_MASTER_KEY",
                    "required when DATABASE_URL is set; generate one with `head -c 32 /dev/urandom | base64`",
                ))
            }
            None => None,
        };

        let smtp_url = match get("CLOUDPKI_SMTP_URL") {
            Some(raw) => {
                let url = Url::parse(raw.trim()).map_err(|e| {
                    ConfigError::new("CLOUDPKI_SMTP_URL", format!("not a URL ({e}); expected smtp://host:25, smtp://host:587?tls=starttls or smtps://user:pass@host"))
                })?;
                if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none() {
                    return Err(ConfigError::new(
                        "CLOUDPKI_SMTP_URL",
                        "expected smtp://host:port or smtps://user:pass@host:port",
                    ));
                }
                Some(url)
            }
            None => None,
        };

        let mail_from = get("CLOUDPKI_MAIL_FROM").unwrap_or_else(|| "cloudpki@localhost".into());
        let mail_from = mail_from.trim().to_owned();
        if !crate::domain::account::looks_like_mail_address(&mail_from) {
            return Err(ConfigError::new(
                "CLOUDPKI_MAIL_FROM",
                format!("`{mail_from}` is not an email address such as cloudpki@example.com"),
            ));
        }

        let public_url = match get("CLOUDPKI_PUBLIC_URL") {
            Some(raw) => {
                let url = Url::parse(raw.trim()).map_err(|e| {
                    ConfigError::new(
                        "CLOUDPKI_PUBLIC_URL",
                        format!("not a URL ({e}); expected the portal's base URL such as https://pki.example.com"),
                    )
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(ConfigError::new(
                        "CLOUDPKI_PUBLIC_URL",
                        "expected an http(s) base URL such as https://pki.example.com",
                    ));
                }
                Some(url)
            }
            None => None,
        };

        let retention_days = match get("CLOUDPKI_RETENTION_DAYS") {
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(days) if (1..=3650).contains(&days) => days,
                _ => {
                    return Err(ConfigError::new(
                        "CLOUDPKI_RETENTION_DAYS",
                        format!("`{raw}` is not a whole number of days between 1 and 3650"),
                    ))
                }
            },
            None => DEFAULT_RETENTION_DAYS,
        };

        let egress_allow = lookup("CLOUDPKI_EGRESS_ALLOW").unwrap_or_default();
        crate::siem::egress::EgressPolicy::parse(&egress_allow)
            .map_err(|e| ConfigError::new("CLOUDPKI_EGRESS_ALLOW", e.to_string()))?;

        let worker_lease = match get("CLOUDPKI_WORKER_LEASE_SECONDS") {
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(secs) if (1..=3600).contains(&secs) => std::time::Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::new(
                        "CLOUDPKI_WORKER_LEASE_SECONDS",
                        format!("`{raw}` is not a whole number of seconds between 1 and 3600"),
                    ))
                }
            },
            None => DEFAULT_LEASE,
        };

        let metrics_listen = match get("CLOUDPKI_METRICS_LISTEN") {
            Some(raw) => Some(raw.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "CLOUDPKI_METRICS_LISTEN",
                    format!("`{raw}` is not an address like 127.0.0.1:9090"),
                )
            })?),
            None => None,
        };
        let shutdown_grace = match get("CLOUDPKI_SHUTDOWN_GRACE_SECONDS") {
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(secs) if secs <= 300 => std::time::Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::new(
                        "CLOUDPKI_SHUTDOWN_GRACE_SECONDS",
                        format!("`{raw}` is not a whole number of seconds between 0 and 300"),
                    ))
                }
            },
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let heartbeat = match get("CLOUDPKI_HEARTBEAT_SECONDS") {
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(0) => None,
                Ok(secs) if (10..=86_400).contains(&secs) => {
                    Some(std::time::Duration::from_secs(secs))
                }
                _ => {
                    return Err(ConfigError::new(
                        "CLOUDPKI_HEARTBEAT_SECONDS",
                        format!(
                        "`{raw}` is not 0 (off) or a whole number of seconds between 10 and 86400"
                    ),
                    ))
                }
            },
            None => Some(DEFAULT_HEARTBEAT),
        };

        let page_cache = match get("CLOUDPKI_PAGE_CACHE").map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if v == "on" => true,
            Some(v) if v == "off" => false,
            Some(_) => {
                return Err(ConfigError::new(
                    "CLOUDPKI_PAGE_CACHE",
                    "use `on` (the default) or `off` (every page reads the database; for a pooler in transaction mode, which cannot LISTEN)",
                ))
            }
        };

        let mut trusted_proxies = Vec::new();
        for entry in get("CLOUDPKI_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let net = entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "CLOUDPKI_TRUSTED_PROXIES",
                        format!("`{entry}` is not an IP address or CIDR such as 10.0.0.0/8"),
                    )
                })?;
            trusted_proxies.push(net);
        }

        Ok(Self {
            database_url,
            data_dir,
            listen,
            master_key,
            smtp_url,
            mail_from,
            public_url,
            retention_days,
            egress_allow,
            worker_lease,
            metrics_listen,
            shutdown_grace,
            trusted_proxies,
            heartbeat,
            page_cache,
        })
    }

    /// The public base URL: `CLOUDPKI_PUBLIC_URL`, or `http://<bound address>`.
    pub fn effective_public_url(&self, bound: SocketAddr) -> Url {
        self.public_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://{bound}")).expect("a socket address forms a URL")
        })
    }
}

fn parse_master_key(raw: &str) -> Result<MasterKey, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| {
            ConfigError::new(
                "CLOUDPKI_MASTER_KEY",
                "not valid base64; generate one with `head -c 32 /dev/urandom | base64`",
            )
        })?;
    MasterKey::from_bytes(&bytes).ok_or_else(|| {
        ConfigError::new(
            "CLOUDPKI_MASTER_KEY",
            format!(
                "decodes to {} bytes but must be exactly 32; generate one with `head -c 32 /dev/urandom | base64`",
                bytes.len()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned(), None)
    }

    #[test]
    fn defaults_are_embedded_and_local() {
        let c = config(&[]).expect("defaults are valid");
        assert!(c.database_url.is_none());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.effective_public_url(c.listen).as_str(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(c.retention_days, 14);
        assert_eq!(c.heartbeat, Some(std::time::Duration::from_secs(300)));
    }

    #[test]
    fn the_page_cache_is_on_unless_switched_off() {
        assert!(config(&[]).expect("defaults").page_cache);
        assert!(
            config(&[("CLOUDPKI_PAGE_CACHE", "ON")])
                .expect("on")
                .page_cache
        );
        assert!(
            !config(&[("CLOUDPKI_PAGE_CACHE", "off")])
                .expect("off")
                .page_cache
        );
        let e = config(&[("CLOUDPKI_PAGE_CACHE", "no")]).expect_err("not on/off");
        assert!(e.to_string().contains("CLOUDPKI_PAGE_CACHE"));
    }

    #[test]
    fn a_heartbeat_period_of_zero_turns_the_heartbeat_off() {
        let c = config(&[("CLOUDPKI_HEARTBEAT_SECONDS", "0")]).expect("0 is valid");
        assert_eq!(c.heartbeat, None);
        let c = config(&[("CLOUDPKI_HEARTBEAT_SECONDS", "60")]).expect("60 is valid");
        assert_eq!(c.heartbeat, Some(std::time::Duration::from_secs(60)));
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases: &[(&str, &str)] = &[
            ("CLOUDPKI_LISTEN", "nonsense"),
            ("CLOUDPKI_MASTER_KEY", "not base64!!"),
            ("CLOUDPKI_MASTER_KEY", "AAAA"),
            ("CLOUDPKI_RETENTION_DAYS", "0"),
            ("CLOUDPKI_RETENTION_DAYS", "ten"),
            ("CLOUDPKI_HEARTBEAT_SECONDS", "5"),
            ("CLOUDPKI_HEARTBEAT_SECONDS", "-1"),
            ("CLOUDPKI_HEARTBEAT_SECONDS", "five minutes"),
            ("CLOUDPKI_PUBLIC_URL", "not a url"),
            ("CLOUDPKI_SMTP_URL", "http://mail"),
            ("CLOUDPKI_MAIL_FROM", "nobody"),
            ("DATABASE_URL", "mysql://x/y"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.variable, *var, "{err}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn database_url_requires_a_master_key() {
        let err = config(&[("DATABASE_URL", "postgres://localhost/x")]).expect_err("no key");
        assert_eq!(err.variable, "CLOUDPKI_MASTER_KEY");
    }

    #[test]
    fn public_url_overrides_the_listen_address() {
        let c = config(&[("CLOUDPKI_PUBLIC_URL", "https://pki.example.com")]).expect("valid");
        assert_eq!(
            c.effective_public_url(c.listen).as_str(),
            "https://pki.example.com/"
        );
    }
}
