//! JWTs: signing access tokens with the key ring, and verifying them
//! against it. The checks themselves live in [`ymera_core::jwt`] so every
//! service verifies exactly as the security service does.

use jsonwebtoken::{Algorithm, Header};

use crate::signing::KeyRing;

pub use ymera_core::jwt::{
    AUDIENCE, Claims, ISSUER, JwksVerifier, LEEWAY_SECONDS, MAX_JWKS_KEYS, MAX_TOKEN_LEN,
    TokenRejection, check_header, verify_signed,
};

/// Default token lifetime, seconds.
pub const DEFAULT_TTL_SECONDS: i64 = 900;
/// Longest token lifetime, seconds.
pub const MAX_TTL_SECONDS: i64 = ymera_core::jwt::MAX_TTL_SECONDS;
/// Shortest token lifetime, seconds.
pub const MIN_TTL_SECONDS: i64 = 60;

/// Signs `claims` with the ring's current key.
pub fn sign(ring: &KeyRing, claims: &Claims) -> Result<String, crate::SecurityError> {
    let key = ring
        .signer()
        .ok_or(crate::SecurityError::Crypto("no signing key available"))?;
    let encoding = key
        .encoding_key()
        .ok_or(crate::SecurityError::Crypto("signing key cannot sign"))?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, &encoding)
        .map_err(|_| crate::SecurityError::Crypto("signing failed"))
}

/// Verifies everything but the deny-list, with the key ring (reloaded on
/// an unknown `kid`).
pub async fn verify(ring: &KeyRing, token: &str) -> Result<Claims, TokenRejection> {
    let kid = check_header(token)?;
    let key = ring
        .verifying_key_or_reload(&kid)
        .await
        .ok_or(TokenRejection::UnknownKey)?;
    verify_signed(token, &key)
}
