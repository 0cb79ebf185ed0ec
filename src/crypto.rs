//! Password hashing (argon2id) and sealing of secrets at rest (AES-256-GCM).
//!
//! Passwords: argon2id with the OWASP minimum parameters (19 MiB, 2 passes, 1 lane), hashed on a
//! blocking thread so the async workers never stall. Secrets (SIEM credentials) are sealed under
//! the master key with a fresh 96-bit nonce each time; the associated data binds a sealed value to
//! its subscription and field, so a ciphertext copied to another tenant does not open. Every
//! sealed value records the id of the key that sealed it, so the master key can be rotated.

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Memory cost of argon2id in KiB (OWASP: 19 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Passes of argon2id (OWASP: 2).
pub const ARGON2_PASSES: u32 = 2;
/// Lanes of argon2id (OWASP: 1).
pub const ARGON2_LANES: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, None)
        .expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string. CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with valid parameters cannot fail")
        .to_string()
}

/// Checks a password against a PHC string. CPU-heavy: call from a blocking thread.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Password hashes computed at once, at most: each takes 19 MiB and a core for a while, so an
/// unbounded burst of sign-ins would be a memory and CPU denial of service.
pub const MAX_CONCURRENT_HASHES: usize = 4;
/// How long a request waits for a hashing slot before it is told to come back.
pub const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Of those, kept for trusted callers (a signed-in user, a browser that signed in to the
/// account before, a holder of a one-time link), so a flood of anonymous guesses cannot keep them all at 503.
pub const RESERVED_HASHES: usize = 1;

static HASH_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HASHES - RESERVED_HASHES);
static RESERVED_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RESERVED_HASHES);

/// Who asks for a hash: anyone takes a shared slot; a trusted caller also the reserved ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// An anonymous guess.
    Anyone,
    /// A signed-in user, a browser that signed in to this account before (its known-device
    /// cookie), a one-time link's holder.
    Trusted,
}

/// Every hashing slot stayed taken for [`HASH_QUEUE_WAIT`]: answer 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy checking passwords; try again in a moment")]
pub struct HashingBusy;

async fn hashing_slot(
    caller: Caller,
) -> Result<tokio::sync::SemaphorePermit<'static>, HashingBusy> {
    let wait = async {
        match caller {
            Caller::Anyone => HASH_SLOTS.acquire().await,
            Caller::Trusted => tokio::select! {
                permit = HASH_SLOTS.acquire() => permit,
                permit = RESERVED_SLOTS.acquire() => permit,
            },
        }
    };
    match tokio::time::timeout(HASH_QUEUE_WAIT, wait).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(HashingBusy),
    }
}

/// Hashes on a blocking thread, within the hashing bound. Every caller holds a credential
/// (a session, a one-time link, the command line), so it may use the reserved slots.
pub async fn hash_password_blocking(password: String) -> Result<String, HashingBusy> {
    let _slot = hashing_slot(Caller::Trusted).await?;
    Ok(
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .expect("hashing thread panicked"),
    )
}

/// Verifies on a blocking thread, within the hashing bound. With `phc = None` (unknown
/// account) it still spends the same time on a dummy hash, so the answer's timing does not
/// tell whether the account exists.
pub async fn verify_password_blocking(
    password: String,
    phc: Option<String>,
    caller: Caller,
) -> Result<bool, HashingBusy> {
    let _slot = hashing_slot(caller).await?;
    Ok(tokio::task::spawn_blocking(move || match phc {
        Some(phc) => verify_password(&password, &phc),
        None => {
            let _ = verify_password(&password, dummy_hash());
            false
        }
    })
    .await
    .expect("verification thread panicked"))
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("cloudpki-dummy-password-for-timing"))
}

/// A random token, URL-safe base64 of 32 bytes.
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token: what the database stores instead of the token itself.
pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Constant-time comparison of two strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The 256-bit key that seals SIEM credentials. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    id: String,
    /// During a rotation: the key being replaced, which still opens what it sealed.
    previous: Option<std::sync::Arc<MasterKey>>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={})", self.id)
    }
}

impl MasterKey {
    /// HMAC-SHA256 of `data` under this key, for `purpose` (domain-separated): a value the
    /// server can recognise later and nobody else can make.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.bytes)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Wraps exactly 32 bytes; anything else is `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        // The key id is a short digest of the key: stable, public, and not enough to guess it.
        let digest = Sha256::digest([b"cloudpki-key-id:".as_slice(), &bytes].concat());
        let id = hex::encode(&digest[..4]);
        Some(Self {
            bytes,
            id,
            previous: None,
        })
    }

    /// This key, also opening what `previous` sealed (`CLOUDPKI_MASTER_KEY_PREVIOUS` during a
    /// rotation). It seals with itself only.
    pub fn with_previous(mut self, previous: MasterKey) -> Self {
        if previous.id != self.id {
            self.previous = Some(std::sync::Arc::new(MasterKey {
                previous: None,
                ..previous
            }));
        }
        self
    }

    /// The id of the key being replaced, during a rotation.
    pub fn previous_id(&self) -> Option<&str> {
        self.previous.as_deref().map(MasterKey::id)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(&bytes).expect("32 bytes")
    }

    /// Base64 of the key, for writing the generated key file.
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    /// The public id recorded next to every value this key seals.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext`; `context` (e.g. "subscription-id/datadog_api_key") must be given again
    /// to open it.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Sealed {
        let cipher = Aes256Gcm::new((&self.bytes).into());
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        Sealed {
            key_id: self.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a sealed value; `None` when the key id, the context or the bytes do not match.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Option<Vec<u8>> {
        if let Some(previous) = self.previous.as_deref().filter(|p| p.id == sealed.key_id) {
            return previous.open(sealed, context);
        }
        if sealed.key_id != self.id || sealed.nonce.len() != 12 {
            return None;
        }
        let cipher = Aes256Gcm::new((&self.bytes).into());
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .ok()
    }
}

/// A value sealed with AES-256-GCM, as stored in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the master key that sealed it.
    pub key_id: String,
    /// 96-bit nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with the 128-bit tag appended.
    pub ciphertext: Vec<u8>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rotating_key_opens_what_the_previous_one_sealed_and_seals_with_itself() {
        let old = MasterKey::generate();
        let sealed_by_old = old.seal(b"secret", "ctx");
        let new = MasterKey::generate().with_previous(old.clone());
        assert_eq!(
            new.open(&sealed_by_old, "ctx").as_deref(),
            Some(&b"secret"[..])
        );
        assert_eq!(new.open(&sealed_by_old, "other"), None);
        let resealed = new.seal(b"secret", "ctx");
        assert_eq!(resealed.key_id, new.id());
        assert_eq!(old.open(&resealed, "ctx"), None);
        assert_eq!(new.previous_id(), Some(old.id()));
    }

    use super::*;

    #[test]
    fn password_hash_is_argon2id_and_verifies() {
        let phc = hash_password("correct horse battery staple");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }

    #[test]
    fn sealed_value_opens_only_with_same_key_and_context() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"0123456789abcdef0123456789abcdef", "sub-a/api_key");
        assert!(!sealed.ciphertext.windows(8).any(|w| w == b"01234567"));
        assert_eq!(
            key.open(&sealed, "sub-a/api_key").as_deref(),
            Some(b"0123456789abcdef0123456789abcdef".as_slice())
        );
        assert_eq!(key.open(&sealed, "sub-b/api_key"), None);
        assert_eq!(MasterKey::generate().open(&sealed, "sub-a/api_key"), None);
    }

    #[test]
    fn master_key_debug_shows_only_its_id() {
        let key = MasterKey::generate();
        let printed = format!("{key:?}");
        assert!(!printed.contains(&key.to_base64()));
        assert!(printed.contains(key.id()));
    }

    #[tokio::test]
    async fn hashing_past_the_bound_answers_busy_instead_of_queueing_without_limit() {
        let held = HASH_SLOTS
            .acquire_many((MAX_CONCURRENT_HASHES - RESERVED_HASHES) as u32)
            .await
            .expect("slots");
        assert_eq!(
            verify_password_blocking("pw".into(), None, Caller::Anyone).await,
            Err(HashingBusy)
        );
        // A flood of anonymous guesses holds every shared slot: trusted callers still get in.
        assert_eq!(
            verify_password_blocking("pw".into(), None, Caller::Trusted).await,
            Ok(false)
        );
        let reserved = RESERVED_SLOTS
            .acquire_many(RESERVED_HASHES as u32)
            .await
            .expect("reserved");
        assert_eq!(
            verify_password_blocking("pw".into(), None, Caller::Trusted).await,
            Err(HashingBusy)
        );
        drop((held, reserved));
        assert_eq!(
            verify_password_blocking("pw".into(), None, Caller::Anyone).await,
            Ok(false)
        );
    }
}
