//! JWT verification shared by the security service and every other service:
//! the access-token [`Claims`], why a token is refused ([`TokenRejection`]),
//! and [`JwksVerifier`], which checks a token against the public keys of a
//! `security.jwks` answer without a network round trip.
//!
//! Verification refuses, before any signature work: tokens over 8 KiB, not
//! three base64url segments, a header that is not a small JSON object, any
//! `alg` other than exactly `EdDSA` (so `none`, `None`, `HS256` signed with
//! the public key, … are refused), a missing or malformed `kid`, a `kid` not
//! among the known keys, and a `crit` header. `jku`, `x5u`, `jwk` and `x5c`
//! are never read: keys come only from the security service. Then the
//! signature is checked with ed25519-dalek against the key's decompressed
//! point (built once per key, not per token), and only then are the claims
//! decoded: `exp`, `nbf` (numeric only: a string `exp` is refused), `iss`,
//! `aud` and the required claims.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The `iss` of every token.
pub const ISSUER: &str = "ymera-security";
/// The `aud` of every token.
pub const AUDIENCE: &str = "ymera";
/// Largest accepted token (the same bound as the credential header).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp` / `nbf`, seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// Longest token lifetime the security service issues, seconds (so a
/// revoked key's tokens are all expired this long after the revocation).
pub const MAX_TTL_SECONDS: i64 = 3600;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the key's owner.
    pub sub: String,
    /// The tenant of the key.
    pub tenant: String,
    /// The API key the token was exchanged for.
    pub key_id: String,
    /// Granted permissions (a subset of the key's).
    pub permissions: Vec<String>,
    /// Issued at (s).
    pub iat: i64,
    /// Not before (s).
    pub nbf: i64,
    /// Expiry (s).
    pub exp: i64,
    /// Token id (UUID v7), the deny-list key.
    pub jti: String,
}

/// Why a token was refused. `as_str` is the reason on the wire and in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// Over [`MAX_TOKEN_LEN`].
    TooLong,
    /// Not a well-formed JWS compact token.
    Malformed,
    /// `alg` is not `EdDSA`.
    BadAlgorithm,
    /// `kid` missing, malformed or unknown.
    UnknownKey,
    /// Signature does not verify.
    BadSignature,
    /// `exp` passed.
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// Wrong `iss`.
    WrongIssuer,
    /// Wrong `aud`.
    WrongAudience,
    /// Claims missing or of the wrong type.
    BadClaims,
    /// The `jti` is on the deny-list.
    Revoked,
    /// The API key the token was issued from is revoked.
    KeyRevoked,
}

impl TokenRejection {
    /// The reason slug.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRejection::TooLong => "token_too_long",
            TokenRejection::Malformed => "malformed_token",
            TokenRejection::BadAlgorithm => "algorithm_not_allowed",
            TokenRejection::UnknownKey => "unknown_kid",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::Expired => "expired_token",
            TokenRejection::NotYetValid => "token_not_yet_valid",
            TokenRejection::WrongIssuer => "wrong_issuer",
            TokenRejection::WrongAudience => "wrong_audience",
            TokenRejection::BadClaims => "bad_claims",
            TokenRejection::Revoked => "revoked_token",
            TokenRejection::KeyRevoked => "revoked_key",
        }
    }

    /// The security event type recorded for this rejection.
    pub fn event_type(self) -> &'static str {
        match self {
            TokenRejection::Revoked | TokenRejection::KeyRevoked => "revoked_token",
            TokenRejection::Expired => "expired_token",
            _ => "invalid_token",
        }
    }
}

pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The three segments of a compact JWS after the shape checks: size,
/// exactly three non-empty base64url segments, a header of at most 1 KiB.
struct Segments<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn segments(token: &str) -> Result<Segments<'_>, TokenRejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenRejection::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !b64url(header) || !b64url(payload) || !b64url(signature) || header.len() > 1024 {
        return Err(TokenRejection::Malformed);
    }
    Ok(Segments {
        header,
        payload,
        signature,
    })
}

/// The `kid` of a base64url header segment, after the header checks.
fn header_kid(header: &str) -> Result<String, TokenRejection> {
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejection::Malformed)?;
    let value: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|_| TokenRejection::Malformed)?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(TokenRejection::Malformed);
    };
    // Exactly "EdDSA": case-sensitive, a JSON string.
    if object.get("alg").and_then(|a| a.as_str()) != Some("EdDSA") {
        return Err(TokenRejection::BadAlgorithm);
    }
    if object.contains_key("crit") {
        return Err(TokenRejection::Malformed);
    }
    if let Some(typ) = object.get("typ")
        && typ.as_str() != Some("JWT")
    {
        return Err(TokenRejection::Malformed);
    }
    // Header parameters we never use must still have their registered
    // types (as jsonwebtoken's header parsing required).
    let strings = ["cty", "jku", "x5u", "x5t", "x5t#S256"];
    if strings
        .iter()
        .any(|name| object.get(*name).is_some_and(|v| !v.is_string()))
        || object.get("jwk").is_some_and(|v| !v.is_object())
        || object.get("x5c").is_some_and(|v| {
            v.as_array()
                .is_none_or(|items| items.iter().any(|i| !i.is_string()))
        })
    {
        return Err(TokenRejection::Malformed);
    }
    match object.remove("kid") {
        Some(serde_json::Value::String(kid)) if valid_kid(&kid) => Ok(kid),
        _ => Err(TokenRejection::UnknownKey),
    }
}

/// Checks the header alone: returns the `kid`.
pub fn check_header(token: &str) -> Result<String, TokenRejection> {
    header_kid(segments(token)?.header)
}

/// The checks after the header: signature with `key`, numeric `exp`/`nbf`
/// (with [`LEEWAY_SECONDS`]), `iss`, `aud` and the required claims. Call
/// [`check_header`] first (it picks the key); [`JwksVerifier::verify`]
/// and the security service's key ring both do.
pub fn verify_signed(token: &str, key: &VerifyingKey) -> Result<Claims, TokenRejection> {
    verify_segments(token, &segments(token)?, key)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn expired_at(exp: u64, now: u64) -> bool {
    exp < now.saturating_sub(LEEWAY_SECONDS)
}

impl Claims {
    /// Whether the token has expired by now (with [`LEEWAY_SECONDS`]), the
    /// check a token verified earlier must pass again on every use.
    pub fn expired(&self) -> bool {
        u64::try_from(self.exp).map_or(true, |exp| expired_at(exp, now_seconds()))
    }
}

/// Signature first (over the untouched `header.payload` text, with the
/// decompressed key: no per-call point decompression), then the payload is
/// decoded once and deserialized once into [`Claims`] (every field
/// required, `exp`/`nbf`/`iat` integers: a string `exp` is refused), then
/// `exp`, `nbf`, `iss`, `aud`. The same order and outcomes as
/// jsonwebtoken's `decode` with `Validation::new(EdDSA)`, the spec claims
/// `exp nbf iss aud sub` required and [`LEEWAY_SECONDS`] of leeway, which
/// this replaces on the hot path.
fn verify_segments(
    token: &str,
    parts: &Segments<'_>,
    key: &VerifyingKey,
) -> Result<Claims, TokenRejection> {
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| TokenRejection::Malformed)?;
    let signature = Signature::from_slice(&signature).map_err(|_| TokenRejection::BadSignature)?;
    let signed = &token[..parts.header.len() + 1 + parts.payload.len()];
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| TokenRejection::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(parts.payload)
        .map_err(|_| TokenRejection::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenRejection::BadClaims)?;
    // Negative times are not NumericDates.
    let (Ok(exp), Ok(nbf)) = (u64::try_from(claims.exp), u64::try_from(claims.nbf)) else {
        return Err(TokenRejection::BadClaims);
    };
    let now = now_seconds();
    if expired_at(exp, now) {
        return Err(TokenRejection::Expired);
    }
    if nbf > now.saturating_add(LEEWAY_SECONDS) {
        return Err(TokenRejection::NotYetValid);
    }
    if claims.iss != ISSUER {
        return Err(TokenRejection::WrongIssuer);
    }
    if claims.aud != AUDIENCE {
        return Err(TokenRejection::WrongAudience);
    }
    Ok(claims)
}

/// Most keys a [`JwksVerifier`] takes from one JWKS document.
pub const MAX_JWKS_KEYS: usize = 64;

/// Local verification for other services: the public keys of a
/// `security.jwks` answer, and exactly the checks the security service
/// makes ([`check_header`] then [`verify_signed`]), without a network round
/// trip. Each key is decompressed once, when the verifier is built. It does
/// not see the deny-list (revoked `jti`s, revoked keys):
/// callers that must honour revocation within less than the token lifetime
/// subscribe to `events.security.token_revoked` / `events.security.key_revoked`
/// or ask `security.authorize` (see the README). Rebuild it from a fresh
/// JWKS when [`verify`](JwksVerifier::verify) answers
/// [`TokenRejection::UnknownKey`] (rate-limit those refetches).
#[derive(Clone)]
pub struct JwksVerifier {
    keys: Vec<(String, VerifyingKey)>,
}

impl std::fmt::Debug for JwksVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksVerifier")
            .field(
                "kids",
                &self.keys.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl JwksVerifier {
    /// The Ed25519 keys (`kty` `OKP`, `crv` `Ed25519`, 32-byte `x` that is
    /// a valid curve point, a well-formed `kid`) of a JWKS document; other
    /// entries are skipped. `None` when the document is not a JWKS or holds
    /// no usable key.
    pub fn from_jwks(jwks: &serde_json::Value) -> Option<JwksVerifier> {
        let entries = jwks.get("keys")?.as_array()?;
        let mut keys = Vec::new();
        for entry in entries.iter().take(MAX_JWKS_KEYS) {
            let field = |name: &str| entry.get(name).and_then(|v| v.as_str());
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                continue;
            }
            if field("alg").is_some_and(|alg| alg != "EdDSA") {
                continue;
            }
            let (Some(kid), Some(x)) = (field("kid"), field("x")) else {
                continue;
            };
            let Ok(public) = URL_SAFE_NO_PAD.decode(x) else {
                continue;
            };
            let Ok(public) = <[u8; 32]>::try_from(public.as_slice()) else {
                continue;
            };
            let Ok(key) = VerifyingKey::from_bytes(&public) else {
                continue;
            };
            if !valid_kid(kid) {
                continue;
            }
            keys.push((kid.to_owned(), key));
        }
        (!keys.is_empty()).then_some(JwksVerifier { keys })
    }

    /// The key ids held.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    /// Verifies `token` locally: every check but the deny-list.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenRejection> {
        let parts = segments(token)?;
        let kid = header_kid(parts.header)?;
        let key = self
            .keys
            .iter()
            .find(|(k, _)| *k == kid)
            .map(|(_, key)| key)
            .ok_or(TokenRejection::UnknownKey)?;
        verify_segments(token, &parts, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn header_checks_refuse_bad_algorithms_and_shapes() {
        let body = enc(&serde_json::json!({"sub": "x"}));
        for (header, want) in [
            (
                serde_json::json!({"alg": "none", "kid": "k"}),
                TokenRejection::BadAlgorithm,
            ),
            (
                serde_json::json!({"alg": "None", "kid": "k"}),
                TokenRejection::BadAlgorithm,
            ),
            (
                serde_json::json!({"alg": "HS256", "kid": "k"}),
                TokenRejection::BadAlgorithm,
            ),
            (
                serde_json::json!({"alg": "eddsa", "kid": "k"}),
                TokenRejection::BadAlgorithm,
            ),
            (
                serde_json::json!({"alg": "EdDSA"}),
                TokenRejection::UnknownKey,
            ),
            (
                serde_json::json!({"alg": "EdDSA", "kid": "../../etc/passwd"}),
                TokenRejection::UnknownKey,
            ),
            (
                serde_json::json!({"alg": "EdDSA", "kid": "k", "crit": ["x"]}),
                TokenRejection::Malformed,
            ),
        ] {
            let token = format!("{}.{body}.c2ln", enc(&header));
            assert_eq!(check_header(&token), Err(want), "{header}");
        }
        assert_eq!(check_header("a.b"), Err(TokenRejection::Malformed));
        assert_eq!(check_header("a.b.c.d"), Err(TokenRejection::Malformed));
        assert_eq!(
            check_header(&"a".repeat(9000)),
            Err(TokenRejection::TooLong)
        );
        let ok = format!(
            "{}.{body}.c2ln",
            enc(&serde_json::json!({"alg": "EdDSA", "kid": "ed-1", "jku": "http://evil"}))
        );
        assert_eq!(check_header(&ok), Ok("ed-1".to_owned()));
    }

    #[test]
    fn a_remembered_token_expires_like_a_verified_one() {
        let now = now_seconds() as i64;
        let claims = |exp: i64| Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "alice".into(),
            tenant: "acme".into(),
            key_id: "k".into(),
            permissions: vec![],
            iat: now,
            nbf: now,
            exp,
            jti: "j".into(),
        };
        assert!(!claims(now + 60).expired());
        // The same leeway as verification.
        assert!(!claims(now - LEEWAY_SECONDS as i64 + 2).expired());
        assert!(claims(now - LEEWAY_SECONDS as i64 - 2).expired());
        assert!(claims(-1).expired());
    }
}
