//! NATS JWTs (nats-io/jwt v2): `base64url(header).base64url(claims).base64url(sig)`, header
//! `{"typ":"JWT","alg":"ed25519-nkey"}`, the signature an Ed25519 signature by the issuer's
//! nkey over the first two parts. Only what the auth callout needs: decoding and verifying
//! the server's authorization request, encoding the user and response claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The only algorithm of v2 NATS JWTs.
pub const ALGORITHM: &str = "ed25519-nkey";
/// Largest authorization request accepted (the server's are a few KiB; TLS chains more).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why a NATS JWT was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON, or over [`MAX_REQUEST_BYTES`].
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// Header not `ed25519-nkey`.
    #[error("unsupported JWT algorithm")]
    Algorithm,
    /// The issuer is not a public key of the expected kind.
    #[error("JWT issuer is not a {0} public key")]
    Issuer(&'static str),
    /// The signature does not verify with the issuer's key.
    #[error("JWT signature does not verify")]
    Signature,
    /// Expired, or not of the expected type or audience.
    #[error("JWT claims refused: {0}")]
    Claims(&'static str),
    /// Signing failed (the issuer key has no seed).
    #[error("cannot sign the JWT")]
    Sign,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Decodes `token`, checks its header, that `iss` is a public key whose first letter is
/// `issuer_prefix` (`'N'` server, `'A'` account) and that the signature verifies with it.
/// Returns the claims.
pub fn decode_verified<T: DeserializeOwned>(
    token: &str,
    issuer_prefix: char,
    issuer_kind: &'static str,
) -> Result<(String, T), JwtError> {
    if token.len() > MAX_REQUEST_BYTES {
        return Err(JwtError::Malformed("too large"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected 3 parts"));
    };
    let header: Header = serde_json::from_slice(&decode_part(header)?)
        .map_err(|_| JwtError::Malformed("header is not JSON"))?;
    if header.alg != ALGORITHM {
        return Err(JwtError::Algorithm);
    }
    let claims_json = decode_part(claims)?;
    let issuer: IssuerOnly = serde_json::from_slice(&claims_json)
        .map_err(|_| JwtError::Malformed("claims are not JSON"))?;
    if !issuer.iss.starts_with(issuer_prefix) {
        return Err(JwtError::Issuer(issuer_kind));
    }
    let key = KeyPair::from_public_key(&issuer.iss).map_err(|_| JwtError::Issuer(issuer_kind))?;
    let signature = decode_part(signature)?;
    let signed_len = token.len() - signature_part_len(token);
    key.verify(&token.as_bytes()[..signed_len], &signature)
        .map_err(|_| JwtError::Signature)?;
    let claims = serde_json::from_slice(&claims_json)
        .map_err(|_| JwtError::Malformed("claims do not have the expected fields"))?;
    Ok((issuer.iss, claims))
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: String,
}

/// Length of the signature part plus its separating dot.
fn signature_part_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed("not base64url"))
}

/// Encodes and signs `claims` (a JSON object) with `issuer`: sets `iss` to its public key,
/// `iat` to `now`, and `jti` to a random id.
pub fn encode(issuer: &KeyPair, mut claims: Value, now: i64) -> Result<String, JwtError> {
    if let Some(map) = claims.as_object_mut() {
        map.insert("iss".into(), issuer.public_key().into());
        map.insert("iat".into(), now.into());
        map.insert(
            "jti".into(),
            uuid::Uuid::now_v7().simple().to_string().into(),
        );
    }
    let header = URL_SAFE_NO_PAD.encode(json!({"typ": "JWT", "alg": ALGORITHM}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).map_err(|_| JwtError::Sign)?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Claims {
        sub: String,
    }

    #[test]
    fn round_trip_verifies_and_tampering_fails() {
        let account = KeyPair::new_account();
        let token = encode(&account, json!({"sub": "UABC"}), 1_700_000_000).unwrap();
        let (iss, claims): (String, Claims) = decode_verified(&token, 'A', "account").unwrap();
        assert_eq!(iss, account.public_key());
        assert_eq!(claims.sub, "UABC");

        let forged = encode(&KeyPair::new_account(), json!({"sub": "UXYZ"}), 1).unwrap();
        let body = forged.split('.').nth(1).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = body;
        assert_eq!(
            decode_verified::<Claims>(&parts.join("."), 'A', "account").err(),
            Some(JwtError::Signature)
        );
        assert_eq!(
            decode_verified::<Claims>(&token, 'N', "server").err(),
            Some(JwtError::Issuer("server"))
        );
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(matches!(
                decode_verified::<Claims>(bad, 'A', "account"),
                Err(JwtError::Malformed(_))
            ));
        }
    }
}
