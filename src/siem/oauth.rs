//! OAuth2 client-credentials tokens (RFC 6749, section 4.4), cached per credentials and shared
//! by every destination of the process: Sentinel signs in to Microsoft Entra ID with them. The
//! provider says who it is ([`ClientCredentials::identity`]) and how to ask for a token
//! ([`ClientCredentials::request`], with its own error wording); the cache does the rest.

use crate::domain::secret::Secret;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::siem::egress::BoxFuture;
use crate::siem::SendError;

/// How long before expiry a cached token is renewed, by default.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Who asks for tokens, as far as the cache key goes.
pub struct Identity<'a> {
    /// The sign-in service (token endpoint base).
    pub issuer: &'a str,
    pub tenant: &'a str,
    pub client_id: &'a str,
    pub scope: &'static str,
    /// Only hashed into the key, with this process's random keys.
    pub secret: &'a str,
}

/// A client that can obtain tokens with the client-credentials grant.
pub trait ClientCredentials: Sync {
    /// Who is asking.
    fn identity(&self) -> Identity<'_>;
    /// One token request: the token and how long it lives (clamped by the provider). Never
    /// logs the secret or the token.
    fn request<'a>(
        &'a self,
        client: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<(AccessToken, Duration), TokenError>>;
}

/// A bearer token. Never printed (nothing of it identifies anything to a reader); shared by
/// every request while it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken(Arc<Secret>);

impl AccessToken {
    /// A token as the token endpoint issued it.
    pub fn new(token: &str) -> Self {
        Self(Arc::new(Secret::password(token)))
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// What a cached token belongs to: issuer (sign-in URL), tenant, client, scope and (a keyed hash
/// of) the secret, so a changed secret never reuses a token obtained with the old one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    issuer: String,
    tenant: String,
    client_id: String,
    scope: &'static str,
    /// SipHash with this process's random keys: not reversible offline, never stored.
    secret_hash: u64,
}

struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
}

/// Why no token could be had, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    WrongTenant,
    WrongClientId,
    WrongSecret,
    ExpiredSecret,
    WrongScope,
    WrongLoginUrl,
    Other,
}

/// A failed token request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No HTTP answer from the sign-in service.
    #[error(transparent)]
    Transport(#[from] SendError),
    /// The identity provider refused the credentials: a settings problem, shown to the user.
    #[error("{reason}")]
    Refused {
        kind: TokenRefusal,
        status: u16,
        reason: String,
    },
    /// The sign-in service is throttling, failing or answered nonsense: retry later.
    #[error("{reason}")]
    Unavailable {
        after: Option<Duration>,
        reason: String,
    },
}

/// OAuth2 client-credentials tokens, shared by every destination of the process that signs in.
///
/// One fetch at a time per key (concurrent senders wait for it instead of each asking the
/// identity provider), cached until the margin before expiry (or half the lifetime of a token
/// that lives less than twice the margin).
pub struct TokenCache {
    hasher: RandomState,
    margin: Duration,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    fetch_locks: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_margin(DEFAULT_REFRESH_MARGIN)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("cached", &lock(&self.tokens).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not poison token handling for every destination.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenCache {
    /// An empty cache that renews tokens `margin` before they expire.
    pub fn with_margin(margin: Duration) -> TokenCache {
        TokenCache {
            hasher: RandomState::new(),
            margin,
            tokens: Mutex::default(),
            fetch_locks: Mutex::default(),
        }
    }

    /// The cache key of a destination's credentials.
    pub fn key(&self, cfg: &impl ClientCredentials) -> TokenKey {
        let id = cfg.identity();
        TokenKey {
            issuer: id.issuer.to_owned(),
            tenant: id.tenant.to_owned(),
            client_id: id.client_id.to_owned(),
            scope: id.scope,
            secret_hash: self.hasher.hash_one(id.secret),
        }
    }

    /// A valid token for `cfg`: the cached one, or a new one from the token endpoint.
    /// The caller has checked the token URL against the egress policy.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        cfg: &impl ClientCredentials,
    ) -> Result<AccessToken, TokenError> {
        let key = self.key(cfg);
        if let Some(token) = self.cached(&key) {
            return Ok(token);
        }
        let fetch_lock = self.fetch_lock(&key);
        let _guard = fetch_lock.lock().await;
        // Another sender may have fetched it while this one waited.
        if let Some(token) = self.cached(&key) {
            return Ok(token);
        }
        self.fetch_and_store(client, cfg, key).await
    }

    /// A brand-new token for `cfg`, replacing any cached one (Test Connection uses this so a
    /// green test proves the credentials now).
    pub async fn refresh(
        &self,
        client: &reqwest::Client,
        cfg: &impl ClientCredentials,
    ) -> Result<AccessToken, TokenError> {
        let key = self.key(cfg);
        let fetch_lock = self.fetch_lock(&key);
        let _guard = fetch_lock.lock().await;
        self.fetch_and_store(client, cfg, key).await
    }

    /// Forgets the cached token of `key` (after Azure Monitor refused it with 401).
    pub fn invalidate(&self, key: &TokenKey) {
        lock(&self.tokens).remove(key);
    }

    /// Forgets the cached token of `key` only if it is still `used`, so that a token another
    /// sender already renewed is not thrown away too.
    pub fn invalidate_if_current(&self, key: &TokenKey, used: &AccessToken) {
        let mut tokens = lock(&self.tokens);
        if tokens.get(key).is_some_and(|cached| &cached.token == used) {
            tokens.remove(key);
        }
    }

    fn cached(&self, key: &TokenKey) -> Option<AccessToken> {
        lock(&self.tokens)
            .get(key)
            .filter(|cached| Instant::now() < cached.refresh_at)
            .map(|cached| cached.token.clone())
    }

    fn fetch_lock(&self, key: &TokenKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.fetch_locks);
        // Drop the locks nobody holds or waits for, so old keys do not pile up.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    async fn fetch_and_store(
        &self,
        client: &reqwest::Client,
        cfg: &impl ClientCredentials,
        key: TokenKey,
    ) -> Result<AccessToken, TokenError> {
        let (token, lifetime) = cfg.request(client).await?;
        let keep = if lifetime > self.margin * 2 {
            lifetime - self.margin
        } else {
            lifetime / 2
        };
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        tokens.retain(|_, cached| now < cached.refresh_at);
        // Checked: a lifetime from outside must never overflow the clock.
        if let Some(refresh_at) = now.checked_add(keep) {
            tokens.insert(
                key,
                CachedToken {
                    token: token.clone(),
                    refresh_at,
                },
            );
        }
        Ok(token)
    }
}
