//! Revoking an API key stops the tokens issued from it, on every replica,
//! with and without Redis; local JWKS verification (which sees no deny-list)
//! still accepts them, and the `key_revoked` event a local verifier would
//! listen to carries the key id.

use std::time::Duration;

use serde_json::{Value, json};
use ymera_security::token::{JwksVerifier, TokenRejection};
use ymera_testkit::NatsServer;
use ymera_testkit::{Servers, ServersOptions};

use crate::common::{
    SecurityService, authorize_read, code_and_reason, service_config, service_config_on,
    start_security, subscribe_events,
};

pub async fn issue(svc: &SecurityService, key: &str) -> String {
    let issued: Value = svc
        .with_key(key)
        .request("security.tokens.issue", &json!({"ttl_seconds": 600}))
        .await
        .unwrap();
    issued["token"].as_str().unwrap().to_owned()
}

async fn verify(svc: &SecurityService, token: &str) -> Result<Value, ymera_core::Error> {
    svc.client
        .request("security.tokens.verify", &json!({"token": token}))
        .await
}

/// Each replica sits on its own NATS server, so a call through a replica's
/// client is answered by that replica.
async fn check_revocation(with_redis: bool) {
    let servers = Servers::start_with(ServersOptions {
        redis: with_redis,
        ..ServersOptions::default()
    });
    let nats_b = NatsServer::start().unwrap();
    let a = start_security(service_config(&servers)).await;
    let b = start_security(service_config_on(&servers, &nats_b)).await;
    let (key, key_id) = a.create_key("carol", "acme", &["config:read"]).await;
    let (other_key, _) = a.create_key("dave", "acme", &["config:read"]).await;
    let token = issue(&a, &key).await;
    let other_token = issue(&a, &other_key).await;
    for svc in [&a, &b] {
        assert_eq!(verify(svc, &token).await.unwrap()["valid"], true);
        assert_eq!(
            authorize_read(svc, &format!("Bearer {token}")).await["allowed"],
            true
        );
    }
    let jwks: Value = a.client.request("security.jwks", &json!({})).await.unwrap();
    let local = JwksVerifier::from_jwks(&jwks).unwrap();
    assert_eq!(local.verify(&token).unwrap().key_id, key_id);

    let mut events = subscribe_events(&a.client).await;
    let revoked: Value = a
        .admin()
        .request("security.keys.revoke", &json!({"key_id": key_id}))
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked");

    // At once, on both replicas: the token of the revoked key is refused by
    // verify (401 revoked_key) and authorize; the key itself too.
    for svc in [&a, &b] {
        let err = verify(svc, &token).await.unwrap_err();
        assert_eq!(
            code_and_reason(&err),
            (401, Some("revoked_key".to_owned())),
            "redis: {with_redis}"
        );
        let answer = authorize_read(svc, &format!("Bearer {token}")).await;
        assert_eq!(answer["allowed"], false);
        assert_eq!(answer["reason"], "revoked_key");
        assert_eq!(answer["principal"], Value::Null);
        let answer = authorize_read(svc, &key).await;
        assert_eq!(answer["reason"], "revoked_key");
        // Another key's token is untouched.
        assert_eq!(verify(svc, &other_token).await.unwrap()["valid"], true);
    }
    // Revoking again is idempotent and keeps refusing.
    let again: Value = a
        .admin()
        .request("security.keys.revoke", &json!({"key_id": key_id}))
        .await
        .unwrap();
    assert_eq!(again["status"], "revoked");
    assert!(verify(&b, &token).await.is_err());

    // Local verification has no deny-list: the signature is still good. A
    // local verifier learns of the revocation from this event.
    assert_eq!(local.verify(&token).unwrap().key_id, key_id);
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = events.recv().await {
            if e["subject"] == "events.security.key_revoked" {
                return e;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("a key_revoked event is published");
    assert_eq!(event["event"]["key_id"], key_id.as_str());
    // The refusals are audited as revoked_token with reason revoked_key.
    let stored = a.wait_for_event("revoked_token").await;
    assert_eq!(stored["details"]["reason"], "revoked_key");

    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn revoking_a_key_stops_its_tokens_on_every_replica_with_redis() {
    check_revocation(true).await;
}

#[tokio::test]
async fn revoking_a_key_stops_its_tokens_without_redis() {
    check_revocation(false).await;
}

#[tokio::test]
async fn local_jwks_verifier_refuses_what_the_service_refuses() {
    let servers = Servers::start();
    let svc = start_security(service_config(&servers)).await;
    let (key, _) = svc.create_key("erin", "acme", &["config:read"]).await;
    let token = issue(&svc, &key).await;
    let jwks: Value = svc
        .client
        .request("security.jwks", &json!({}))
        .await
        .unwrap();
    let local = JwksVerifier::from_jwks(&jwks).unwrap();
    let claims = local.verify(&token).unwrap();
    assert_eq!(claims.sub, "erin");
    assert_eq!(claims.permissions, vec!["config:read".to_owned()]);

    // Tampered signature and payload, alg none, an unknown kid.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut tampered_sig = parts.clone();
    // Change a middle character: every value there decodes (the last one
    // of a 64-byte signature carries padding bits and may not).
    let mut sig: Vec<char> = tampered_sig[2].chars().collect();
    sig[10] = if sig[10] == 'A' { 'B' } else { 'A' };
    tampered_sig[2] = sig.into_iter().collect();
    assert_eq!(
        local.verify(&tampered_sig.join(".")),
        Err(TokenRejection::BadSignature)
    );
    parts[1] = parts[1].replace('e', "f");
    assert!(local.verify(&parts.join(".")).is_err());
    let none = format!(
        "{}.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#
        ),
        token.split('.').nth(1).unwrap()
    );
    assert!(local.verify(&none).is_err());
    svc.state.key_ring().rotate().await.unwrap();
    let newer = issue(&svc, &key).await;
    assert_eq!(local.verify(&newer), Err(TokenRejection::UnknownKey));
    let jwks: Value = svc
        .client
        .request("security.jwks", &json!({}))
        .await
        .unwrap();
    let refreshed = JwksVerifier::from_jwks(&jwks).unwrap();
    assert!(refreshed.verify(&newer).is_ok());
    // The old token keeps verifying after rotation (its key is still in the JWKS).
    assert!(refreshed.verify(&token).is_ok());
    assert!(JwksVerifier::from_jwks(&json!({"keys": []})).is_none());
    assert!(
        JwksVerifier::from_jwks(&json!({"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]}))
            .is_none()
    );
    svc.stop().await;
}
