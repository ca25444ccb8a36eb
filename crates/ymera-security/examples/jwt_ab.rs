//! A/B of local JWT verification in one process, interleaved in 0.5 s turns
//! so both see the same machine load: the former path (`check_header` then
//! `jsonwebtoken::decode` with a `DecodingKey` built from the raw public key)
//! against `JwksVerifier` (ed25519-dalek with the key decompressed once).
//! Prints verifications per CPU-second of this thread for each.
//! `cargo run --release -p ymera-security --example jwt_ab [rounds, default 10]`
#![allow(clippy::unwrap_used, clippy::expect_used)]
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::time::{Duration, Instant};
use ymera_security::token::{self, Claims, JwksVerifier};

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn main() {
    let seed = [7u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "ymera-security".into(),
        aud: "ymera".into(),
        sub: "bench".into(),
        tenant: "acme".into(),
        key_id: "AbCdEfGhIjKl".into(),
        permissions: vec!["config:read".into()],
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: "01a2062f-7179-710f-8c56-bec73264d9be".into(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed-0123456789abcdef0123456789abcdef".into());
    header.typ = Some("JWT".into());
    let tok = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap();
    let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "ed-0123456789abcdef0123456789abcdef", "x": URL_SAFE_NO_PAD.encode(public)}]});
    let v = JwksVerifier::from_jwks(&jwks).unwrap();
    let dk = DecodingKey::from_ed_der(&public);
    let old = |t: &str| -> bool {
        let _kid = token::check_header(t).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&["ymera-security"]);
        validation.set_audience(&["ymera"]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<Claims>(t, &dk, &validation).is_ok()
    };
    assert!(old(&tok));
    assert!(v.verify(&tok).is_ok());
    let rounds: usize = std::env::args().nth(1).map_or(10, |a| a.parse().unwrap());
    let (mut on, mut oc, mut nn, mut nc) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..rounds {
        for which in 0..2 {
            let c0 = cpu_ns();
            let end = Instant::now() + Duration::from_millis(500);
            let mut n = 0u64;
            while Instant::now() < end {
                for _ in 0..32 {
                    let ok = if which == 0 {
                        old(std::hint::black_box(&tok))
                    } else {
                        v.verify(std::hint::black_box(&tok)).is_ok()
                    };
                    assert!(ok);
                    n += 1;
                }
            }
            let c = cpu_ns() - c0;
            if which == 0 {
                on += n;
                oc += c
            } else {
                nn += n;
                nc += c
            }
        }
    }
    println!(
        "old (check_header + jsonwebtoken::decode): {:.0} verifications per CPU-second ({:.1} µs each)",
        on as f64 / (oc as f64 / 1e9),
        oc as f64 / on as f64 / 1e3
    );
    println!(
        "new (JwksVerifier, ed25519-dalek direct):  {:.0} verifications per CPU-second ({:.1} µs each)",
        nn as f64 / (nc as f64 / 1e9),
        nc as f64 / nn as f64 / 1e3
    );
}
