//! Ed25519 signing keys for JWTs: generation, rotation and sealing.
//!
//! Each key has a `kid`, a public half (stored in clear; it is public), and a
//! private half sealed with ChaCha20-Poly1305 under `YMERA_MASTER_KEY` (the
//! `kid` is the associated data, so a sealed key cannot be swapped between
//! rows). A key signs new tokens until `retire_at`, then only verifies until
//! `expires_at` = `retire_at` + the longest token lifetime, so rotation
//! never invalidates a token that is still live. Every replica reloads the
//! key ring from PostgreSQL periodically, so a key created by one replica
//! verifies on all.

use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::RngCore;
use sqlx::PgPool;

use crate::SecurityError;

/// The 32-byte master key that seals private signing keys.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

const NONCE_LEN: usize = 12;

impl MasterKey {
    /// From exactly 32 bytes.
    pub fn new(bytes: &[u8]) -> Option<MasterKey> {
        <[u8; 32]>::try_from(bytes).ok().map(MasterKey)
    }

    /// From base64 (standard or URL-safe) of 32 bytes.
    pub fn from_base64(text: &str) -> Option<MasterKey> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .ok()?;
        MasterKey::new(&bytes)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    /// nonce ‖ ciphertext of `plain`, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| SecurityError::Crypto("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] produced (fails on a wrong key or tampering).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let (nonce, ct) = sealed
            .split_at_checked(NONCE_LEN)
            .ok_or(SecurityError::Crypto("sealed key too short"))?;
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| SecurityError::Crypto("cannot open a sealed signing key"))
    }
}

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410); followed by the 32-byte seed.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// One signing key as the ring holds it.
#[derive(Clone)]
pub struct SigningKey {
    /// Key id (the JWT `kid`).
    pub kid: String,
    /// Raw 32-byte public key.
    pub public: [u8; 32],
    /// The public key decompressed once, for verification.
    pub verifying: ed25519_dalek::VerifyingKey,
    /// PKCS#8 DER of the private key, when it could be opened.
    pkcs8: Option<Vec<u8>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// No new tokens after this.
    pub retire_at: DateTime<Utc>,
    /// No verification after this.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("can_sign", &self.pkcs8.is_some())
            .field("retire_at", &self.retire_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl SigningKey {
    /// The encoding key for jsonwebtoken.
    pub fn encoding_key(&self) -> Option<jsonwebtoken::EncodingKey> {
        self.pkcs8
            .as_deref()
            .map(jsonwebtoken::EncodingKey::from_ed_der)
    }

    /// The JWK of the public half.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            alg: "EdDSA",
            crv: "Ed25519",
            kid: self.kid.clone(),
            kty: "OKP",
            key_use: "sig",
            x: URL_SAFE_NO_PAD.encode(self.public),
        }
    }
}

/// A public signing key as a JWK (RFC 7517 / RFC 8037: `OKP`, `Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Jwk {
    /// `EdDSA`.
    pub alg: &'static str,
    /// `Ed25519`.
    pub crv: &'static str,
    /// The key id tokens name in their header.
    pub kid: String,
    /// `OKP`.
    pub kty: &'static str,
    /// `sig`.
    #[serde(rename = "use")]
    pub key_use: &'static str,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
}

/// The JWKS document (`security.jwks` reply).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Jwks {
    /// Every unexpired public key.
    pub keys: Vec<Jwk>,
}

#[derive(sqlx::FromRow)]
struct SigningKeyRow {
    kid: String,
    public_key: Vec<u8>,
    private_key_sealed: Vec<u8>,
    created_at: DateTime<Utc>,
    retire_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// The signing keys of all replicas, reloaded from PostgreSQL.
#[derive(Debug)]
pub struct KeyRing {
    pool: PgPool,
    master: MasterKey,
    /// How long a key signs before the next one takes over.
    pub rotation: ChronoDuration,
    /// How long a key keeps verifying after it retires (≥ longest token).
    pub verify_grace: ChronoDuration,
    keys: RwLock<Vec<SigningKey>>,
    last_miss_reload: std::sync::Mutex<Option<std::time::Instant>>,
}

/// A signing key is replaced this long before it retires.
pub const ROTATE_AHEAD: ChronoDuration = ChronoDuration::minutes(5);

/// Most keys kept in the ring (older expired keys are dropped first).
pub const MAX_KEYS: usize = 64;

impl KeyRing {
    /// An empty ring; call [`KeyRing::refresh`].
    pub fn new(
        pool: PgPool,
        master: MasterKey,
        rotation: ChronoDuration,
        verify_grace: ChronoDuration,
    ) -> KeyRing {
        KeyRing {
            pool,
            master,
            rotation,
            verify_grace,
            keys: RwLock::new(Vec::new()),
            last_miss_reload: std::sync::Mutex::new(None),
        }
    }

    /// Reloads unexpired keys and creates a new signing key when none can
    /// sign or the current one retires within [`ROTATE_AHEAD`] (so there is
    /// never a gap without a signing key between two upkeep ticks).
    pub async fn refresh(&self) -> Result<(), SecurityError> {
        self.reload().await?;
        let horizon = Utc::now() + ROTATE_AHEAD;
        if self.signer().is_none_or(|k| k.retire_at <= horizon) {
            self.rotate().await?;
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), SecurityError> {
        let rows: Vec<SigningKeyRow> = sqlx::query_as(
            "SELECT kid, public_key, private_key_sealed, created_at, retire_at, expires_at \
             FROM signing_keys WHERE expires_at > now() ORDER BY created_at DESC LIMIT $1",
        )
        .bind(MAX_KEYS as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let Some((public, verifying)) = <[u8; 32]>::try_from(row.public_key.as_slice())
                .ok()
                .and_then(|p| Some((p, ed25519_dalek::VerifyingKey::from_bytes(&p).ok()?)))
            else {
                tracing::warn!(kid = %row.kid, "signing key with a malformed public key skipped");
                continue;
            };
            let pkcs8 = match self
                .master
                .open(&row.private_key_sealed, row.kid.as_bytes())
            {
                Ok(seed) if seed.len() == 32 => {
                    let mut der = PKCS8_ED25519_PREFIX.to_vec();
                    der.extend_from_slice(&seed);
                    Some(der)
                }
                _ => {
                    // Another master key sealed it: it still verifies.
                    tracing::warn!(kid = %row.kid, "cannot open the private signing key (different YMERA_MASTER_KEY?); verify-only");
                    None
                }
            };
            keys.push(SigningKey {
                kid: row.kid,
                public,
                verifying,
                pkcs8,
                created_at: row.created_at,
                retire_at: row.retire_at,
                expires_at: row.expires_at,
            });
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    /// Generates a new signing key, stores it sealed and makes it current.
    /// Older keys keep verifying until they expire.
    pub async fn rotate(&self) -> Result<String, SecurityError> {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let kid = format!("ed-{}", uuid::Uuid::now_v7().simple());
        let sealed = self.master.seal(&seed, kid.as_bytes())?;
        let now = Utc::now();
        let retire_at = now + self.rotation;
        let expires_at = retire_at + self.verify_grace;
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, private_key_sealed, created_at, retire_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&kid)
        .bind(public.as_slice())
        .bind(&sealed)
        .bind(now)
        .bind(retire_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        // Keys created before now retire now: the new key takes over signing.
        // They keep verifying for the longest token lifetime, then expire.
        sqlx::query(
            "UPDATE signing_keys SET retire_at = $1, expires_at = LEAST(expires_at, $3) \
             WHERE kid <> $2 AND retire_at > $1",
        )
        .bind(now)
        .bind(&kid)
        .bind(now + self.verify_grace)
        .execute(&self.pool)
        .await?;
        self.reload().await?;
        tracing::info!(kid = %kid, "new JWT signing key");
        Ok(kid)
    }

    /// The key that signs new tokens: the newest unretired key we can open.
    pub fn signer(&self) -> Option<SigningKey> {
        let now = Utc::now();
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|k| k.pkcs8.is_some() && k.retire_at > now)
            .max_by_key(|k| k.created_at)
            .cloned()
    }

    /// `pick` of the unexpired key `kid`, if there is one.
    fn unexpired<T>(&self, kid: &str, pick: impl FnOnce(&SigningKey) -> T) -> Option<T> {
        let now = Utc::now();
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|k| k.kid == kid && k.expires_at > now)
            .map(pick)
    }

    /// An unexpired key by id.
    pub fn verifier(&self, kid: &str) -> Option<SigningKey> {
        self.unexpired(kid, SigningKey::clone)
    }

    /// The verifying key of an unexpired key by id (no clone of the rest).
    pub fn verifying_key(&self, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
        self.unexpired(kid, |k| k.verifying)
    }

    /// The verifying key of an unexpired key by id; on a miss for a
    /// well-formed id (a key another replica created a moment ago), reloads
    /// the ring — at most once a second, so unknown `kid`s cannot flood
    /// PostgreSQL.
    pub async fn verifying_key_or_reload(&self, kid: &str) -> Option<ed25519_dalek::VerifyingKey> {
        if let Some(key) = self.verifying_key(kid) {
            return Some(key);
        }
        if !(kid.starts_with("ed-") && kid.len() == 35) {
            return None;
        }
        let due = {
            let mut last = self
                .last_miss_reload
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due && self.reload().await.is_ok() {
            return self.verifying_key(kid);
        }
        None
    }

    /// The JWKS document: every unexpired public key.
    pub fn jwks(&self) -> Jwks {
        let now = Utc::now();
        let keys: Vec<Jwk> = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|k| k.expires_at > now)
            .map(SigningKey::jwk)
            .collect();
        Jwks { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_detect_tampering() {
        let key = MasterKey::new(&[9u8; 32]).unwrap();
        let sealed = key.seal(b"secret seed", b"kid-1").unwrap();
        assert_eq!(key.open(&sealed, b"kid-1").unwrap(), b"secret seed");
        assert!(key.open(&sealed, b"kid-2").is_err());
        let other = MasterKey::new(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed, b"kid-1").is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(key.open(&tampered, b"kid-1").is_err());
        assert!(key.open(&[1, 2, 3], b"kid-1").is_err());
    }

    #[test]
    fn master_key_from_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(MasterKey::from_base64(&b64).is_some());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_none());
        assert!(MasterKey::from_base64("not base64!").is_none());
    }
}
