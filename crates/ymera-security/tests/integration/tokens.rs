//! Tokens: issue, verify, revoke, rotation, and the adversarial cases.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use ymera_testkit::Servers;

use crate::common::{SecurityService, code_and_reason, service_config, start_security};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Signs `header.payload` with the service's current Ed25519 key (as if the
/// service had issued it), so claim checks can be probed one at a time.
fn sign_with_service_key(svc: &SecurityService, header: &Value, payload: &Value) -> String {
    let key = svc.state.key_ring().signer().unwrap();
    let mut header = header.clone();
    header["kid"] = json!(key.kid);
    let input = format!("{}.{}", b64(&header), b64(payload));
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.encoding_key().unwrap(),
        jsonwebtoken::Algorithm::EdDSA,
    )
    .unwrap();
    format!("{input}.{sig}")
}

fn claims(now: i64) -> Value {
    json!({"iss": "ymera-security", "aud": "ymera", "sub": "eve", "tenant": "acme", "key_id": "AAAAAAAAAAAA",
           "permissions": ["security:admin"], "iat": now, "nbf": now, "exp": now + 600, "jti": uuid::Uuid::now_v7().to_string()})
}

async fn verify_reason(svc: &SecurityService, token: &str) -> (u16, Option<String>) {
    let err = svc
        .client
        .request::<_, Value>("security.tokens.verify", &json!({"token": token}))
        .await
        .expect_err("token must be refused");
    code_and_reason(&err)
}

async fn authorize_reason(svc: &SecurityService, token: &str) -> String {
    let reply: Value = svc
        .client
        .request(
            "security.authorize",
            &json!({"credential": format!("Bearer {token}"), "permission": "config:read"}),
        )
        .await
        .unwrap();
    assert_eq!(reply["allowed"], false, "{reply}");
    reply["reason"].as_str().unwrap().to_owned()
}

/// The JWK of `kid` in the service's `security.jwks` answer.
pub async fn jwk_of(svc: &SecurityService, kid: &str) -> Value {
    let jwks: Value = svc
        .client
        .request("security.jwks", &json!({}))
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == json!(kid))
        .unwrap()
        .clone()
}

/// Forgeries of `token` (issued by `svc`, signed with `kid`, whose JWK is
/// `jwk`) and of tokens signed with the service's real key, each with the
/// reason it must be refused with: alg none / None, HS256 keyed with the
/// public key, unknown and injected `kid`s, attacker keys in `jwk` / `jku` /
/// `x5u` headers, expired, `nbf` in the future, `exp` as a string, wrong
/// `aud` / `iss`, no `exp`, tampered payload and signature, garbage.
pub fn forged_tokens(
    svc: &SecurityService,
    token: &str,
    kid: &str,
    jwk: &Value,
) -> Vec<(&'static str, String, &'static str)> {
    let parts: Vec<&str> = token.split('.').collect();
    let payload_b64 = parts[1];
    let now = chrono::Utc::now().timestamp();
    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    // alg none / None, with and without a signature.
    for alg in ["none", "None", "NONE"] {
        cases.push((
            "alg none",
            format!("{}.{payload_b64}.", b64(&json!({"alg": alg, "kid": kid}))),
            "malformed_token",
        ));
        cases.push((
            "alg none signed",
            format!(
                "{}.{payload_b64}.{}",
                b64(&json!({"alg": alg, "kid": kid})),
                parts[2]
            ),
            "algorithm_not_allowed",
        ));
    }
    // Algorithm confusion: HS256 keyed with the public key (raw and as its JWK x).
    let public = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    for secret in [
        public.clone(),
        jwk["x"].as_str().unwrap().as_bytes().to_vec(),
    ] {
        let input = format!(
            "{}.{payload_b64}",
            b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}))
        );
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret).unwrap();
        mac.update(input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        cases.push((
            "HS256 with the public key",
            format!("{input}.{sig}"),
            "algorithm_not_allowed",
        ));
    }
    // Unknown and injected kid.
    for bad_kid in [
        json!("ed-00000000000000000000000000000000"),
        json!("../../../dev/null"),
        json!("' OR '1'='1"),
        json!(null),
        json!(42),
    ] {
        cases.push((
            "bad kid",
            format!(
                "{}.{payload_b64}.{}",
                b64(&json!({"alg": "EdDSA", "kid": bad_kid})),
                parts[2]
            ),
            "unknown_kid",
        ));
    }
    // jku / x5u / jwk headers are ignored: an attacker's own key embedded or
    // linked never verifies; only our ring's keys count.
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let attacker_x = URL_SAFE_NO_PAD.encode(attacker.verifying_key().to_bytes());
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[7u8; 32]);
    let attacker_key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    for (extra_name, extra) in [
        (
            "jwk",
            json!({"kty": "OKP", "crv": "Ed25519", "x": attacker_x, "kid": "evil"}),
        ),
        ("jku", json!("http://attacker.invalid/jwks.json")),
        ("x5u", json!("http://attacker.invalid/cert.pem")),
    ] {
        for header_kid in [json!(kid), json!("evil")] {
            let mut header = json!({"alg": "EdDSA", "typ": "JWT", "kid": header_kid});
            header[extra_name] = extra.clone();
            let input = format!("{}.{payload_b64}", b64(&header));
            let sig = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &attacker_key,
                jsonwebtoken::Algorithm::EdDSA,
            )
            .unwrap();
            let want = if header_kid == json!(kid) {
                "bad_signature"
            } else {
                "unknown_kid"
            };
            cases.push(("attacker key in header", format!("{input}.{sig}"), want));
        }
    }
    // Claim checks on tokens signed with the service's real key.
    let header = json!({"alg": "EdDSA", "typ": "JWT"});
    let mut expired = claims(now);
    expired["exp"] = json!(now - 3600);
    expired["nbf"] = json!(now - 7200);
    cases.push((
        "expired",
        sign_with_service_key(svc, &header, &expired),
        "expired_token",
    ));
    let mut future = claims(now);
    future["nbf"] = json!(now + 3600);
    future["exp"] = json!(now + 7200);
    cases.push((
        "nbf in the future",
        sign_with_service_key(svc, &header, &future),
        "token_not_yet_valid",
    ));
    let mut string_exp = claims(now);
    string_exp["exp"] = json!((now + 600).to_string());
    cases.push((
        "exp as a string",
        sign_with_service_key(svc, &header, &string_exp),
        "bad_claims",
    ));
    let mut wrong_aud = claims(now);
    wrong_aud["aud"] = json!("someone-else");
    cases.push((
        "wrong aud",
        sign_with_service_key(svc, &header, &wrong_aud),
        "wrong_audience",
    ));
    let mut wrong_iss = claims(now);
    wrong_iss["iss"] = json!("https://evil.example");
    cases.push((
        "wrong iss",
        sign_with_service_key(svc, &header, &wrong_iss),
        "wrong_issuer",
    ));
    let mut no_exp = claims(now);
    no_exp.as_object_mut().unwrap().remove("exp");
    cases.push((
        "no exp",
        sign_with_service_key(svc, &header, &no_exp),
        "bad_claims",
    ));
    // Tampered payload (escalated permissions) and tampered signature.
    let mut escalated: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload_b64).unwrap()).unwrap();
    escalated["permissions"] = json!(["security:admin"]);
    cases.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&escalated), parts[2]),
        "bad_signature",
    ));
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    cases.push((
        "tampered signature",
        format!("{}.{payload_b64}.{}", parts[0], URL_SAFE_NO_PAD.encode(sig)),
        "bad_signature",
    ));
    cases.push(("garbage", "not-a-jwt".into(), "malformed_token"));
    cases
}

#[tokio::test]
async fn tokens_issue_verify_revoke_rotate_and_refuse_forgeries() {
    let servers = Servers::with_redis();
    let svc = start_security(service_config(&servers)).await;
    let (key, key_id) = svc
        .create_key("alice", "acme", &["config:read", "config:write"])
        .await;

    // Issue: permissions ⊆ the key's.
    let issued: Value = svc
        .with_key(&key)
        .request(
            "security.tokens.issue",
            &json!({"permissions": ["config:read"], "ttl_seconds": 300}),
        )
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(issued["permissions"], json!(["config:read"]));
    let err = svc
        .with_key(&key)
        .request::<_, Value>(
            "security.tokens.issue",
            &json!({"permissions": ["security:admin"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), 403);
    let err = svc
        .client
        .request::<_, Value>("security.tokens.issue", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401);

    // Verify and authorize with the token.
    let verified: Value = svc
        .client
        .request("security.tokens.verify", &json!({"token": token}))
        .await
        .unwrap();
    assert_eq!(verified["valid"], true);
    let claims_v = &verified["claims"];
    assert_eq!(claims_v["sub"], "alice");
    assert_eq!(claims_v["key_id"], json!(key_id));
    assert_eq!(claims_v["iss"], "ymera-security");
    assert_eq!(claims_v["aud"], "ymera");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let kid = header["kid"].as_str().unwrap().to_owned();
    let ok: Value = svc
        .client
        .request(
            "security.authorize",
            &json!({"credential": token, "permission": "config:read", "tenant": "acme"}),
        )
        .await
        .unwrap();
    assert_eq!(ok["allowed"], true, "{ok}");
    assert_eq!(ok["principal"]["kind"], "token");
    let no: Value = svc
        .client
        .request(
            "security.authorize",
            &json!({"credential": token, "permission": "config:write"}),
        )
        .await
        .unwrap();
    assert_eq!(no["reason"], "insufficient_permissions");

    // JWKS publishes the public key (OKP / Ed25519) and nothing private.
    let jwk = jwk_of(&svc, &kid).await;
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert!(jwk.get("d").is_none());

    // ---- adversarial cases
    let cases = forged_tokens(&svc, &token, &kid, &jwk);

    for (name, forged, want) in &cases {
        assert_eq!(
            verify_reason(&svc, forged).await,
            (401, Some((*want).to_owned())),
            "{name}"
        );
        assert_eq!(authorize_reason(&svc, forged).await, *want, "{name}");
        let err = svc
            .with_token(forged)
            .request::<_, Value>("security.keys.list", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 401, "{name}");
    }
    let invalid = cases.iter().filter(|c| c.2 != "expired_token").count() as i64;
    svc.wait_for_events("invalid_token", 3 * invalid).await;
    svc.wait_for_events("expired_token", 3).await;

    // Authorization header over 8 KiB: refused before any crypto, with an event.
    let parts: Vec<&str> = token.split('.').collect();
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    let before = svc.event_count("invalid_credential").await;
    let err = svc
        .with_token(&huge)
        .request::<_, Value>("security.keys.list", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401);
    svc.wait_for_events("invalid_credential", before + 1).await;

    // Revocation takes effect at once (deny-list in Redis here).
    let revoked: Value = svc
        .client
        .request("security.tokens.revoke", &json!({"token": token}))
        .await
        .unwrap();
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        verify_reason(&svc, &token).await,
        (401, Some("revoked_token".into()))
    );
    assert_eq!(authorize_reason(&svc, &token).await, "revoked_token");
    svc.wait_for_event("revoked_token").await;
    svc.wait_for_event("token_revoked").await;
    // Revoking by jti needs security:admin.
    let err = svc
        .client
        .request::<_, Value>("security.tokens.revoke", &json!({"jti": "x"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401);

    // Rotation: the old key keeps verifying its tokens; new tokens use the new key.
    let before_rotation: Value = svc
        .with_key(&key)
        .request("security.tokens.issue", &json!({}))
        .await
        .unwrap();
    let new_kid = svc.state.key_ring().rotate().await.unwrap();
    assert_ne!(new_kid, kid);
    let after_rotation: Value = svc
        .with_key(&key)
        .request("security.tokens.issue", &json!({}))
        .await
        .unwrap();
    let t_old = before_rotation["token"].as_str().unwrap();
    let t_new = after_rotation["token"].as_str().unwrap();
    for t in [t_old, t_new] {
        let v: Value = svc
            .client
            .request("security.tokens.verify", &json!({"token": t}))
            .await
            .unwrap();
        assert_eq!(v["valid"], true);
    }
    let new_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(t_new.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(new_header["kid"], json!(new_kid));
    let jwks: Value = svc
        .client
        .request("security.jwks", &json!({}))
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    // The private halves are stored sealed, never in clear.
    let sealed_len: i32 =
        sqlx::query_scalar("SELECT length(private_key_sealed) FROM signing_keys WHERE kid = $1")
            .bind(&new_kid)
            .fetch_one(&svc.pool)
            .await
            .unwrap();
    assert_eq!(sealed_len, 12 + 32 + 16);

    // A token whose key was revoked in the meantime still verifies until it
    // expires (short-lived by design), but the key itself no longer issues.
    svc.admin()
        .request::<_, Value>("security.keys.revoke", &json!({"key_id": key_id}))
        .await
        .unwrap();
    let err = svc
        .with_key(&key)
        .request::<_, Value>("security.tokens.issue", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&err), (401, Some("revoked_key".into())));

    svc.stop().await;
}
