//! Platform-wide enforcement as another service sees it: a service built on
//! the ymera-core runtime with permission-typed endpoints and `YMERA_AUTH=required`
//! verifies bearer tokens itself against the cached JWKS, follows
//! revocations, reports its refusals as security events, and keeps
//! accepting valid tokens while the security service is down.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::{AuthMode, ServiceConfig};
use ymera_core::runtime::{Call, Open, Permission, Raw, Runtime, ServiceBuilder};
use ymera_testkit::{Servers, wait_until_serving};

use crate::common::{SecurityService, code_and_reason, service_config, start_security};
use crate::revocation::issue;

ymera_core::permission!(
    /// The probe's read endpoint.
    ProbeRead = "config:read"
);
ymera_core::permission!(
    /// The probe's write endpoint.
    ProbeWrite = "config:write"
);

/// Who called a probe endpoint.
#[derive(Serialize)]
struct Who {
    kind: String,
    owner: String,
}

/// `probe.open` reply.
#[derive(Serialize)]
struct Opened {
    open: bool,
}

async fn who<P: Permission>(_: (), call: Call<P>, _: Raw) -> Result<Who, ymera_core::Error> {
    let principal = call.principal().unwrap();
    Ok(Who {
        kind: principal.kind.clone(),
        owner: principal.owner.clone(),
    })
}

async fn open(_: (), _: Call<Open>, _: Raw) -> Result<Opened, ymera_core::Error> {
    Ok(Opened { open: true })
}

/// A service with one endpoint per permission that answers who called.
async fn start_probe(servers: &Servers) -> tokio_util::sync::CancellationToken {
    let mut config = ServiceConfig::default();
    config.nats.url = servers.nats.url();
    config.auth = AuthMode::Required;
    let runtime = Runtime::start("probe", config).await.unwrap();
    let shutdown = runtime.shutdown_token();
    let builder = ServiceBuilder::new("probe", "0.0.1", "permission probe")
        .route("probe.read", &(), who::<ProbeRead>)
        .route("probe.write", &(), who::<ProbeWrite>)
        .route("probe.open", &(), open);
    assert_eq!(
        builder
            .endpoints()
            .iter()
            .find(|e| e.subject == "probe.write")
            .map(|e| e.permission),
        Some(Some("config:write"))
    );
    tokio::spawn(builder.serve(runtime));
    shutdown
}

fn as_bearer(client: &ServiceClient, token: &str) -> ServiceClient {
    client
        .clone()
        .with_credential(Some(Credential::Bearer(token.to_owned())))
}

async fn call(client: &ServiceClient, subject: &str) -> Result<Value, ymera_core::Error> {
    client.request(subject, &json!({})).await
}

/// Calls until the probe has loaded the JWKS and the deny-list (a token is
/// then checked locally, which shows in the metric).
async fn wait_until_local(svc: &SecurityService, token: &str) {
    for _ in 0..200 {
        let _ = call(&as_bearer(&svc.client, token), "probe.read").await;
        let local = ymera_core::metrics::render()
            .lines()
            .any(|l| l.starts_with("ymera_auth_token_checks_total{path=\"local\"}"));
        if local {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the probe never checked a token locally");
}

#[tokio::test]
async fn services_verify_tokens_locally_and_follow_revocations() {
    let servers = Servers::start();
    let svc = start_security(service_config(&servers)).await;
    let probe = start_probe(&servers).await;
    wait_until_serving(svc.client.nats(), "probe.open").await;
    let (key, _) = svc.create_key("alice", "acme", &["config:read"]).await;
    let token = issue(&svc, &key).await;
    wait_until_local(&svc, &token).await;

    // Open endpoints need nothing; secured ones a credential (401) holding
    // the declared permission (403).
    assert_eq!(call(&svc.client, "probe.open").await.unwrap()["open"], true);
    let err = call(&svc.client, "probe.read").await.unwrap_err();
    assert_eq!(err.code(), 401);
    let ok = call(&as_bearer(&svc.client, &token), "probe.read")
        .await
        .unwrap();
    assert_eq!(ok, json!({"owner": "alice", "kind": "token"}));
    let err = call(&as_bearer(&svc.client, &token), "probe.write")
        .await
        .unwrap_err();
    assert_eq!(
        code_and_reason(&err),
        (403, Some("insufficient_permissions".into()))
    );
    svc.wait_for_event("insufficient_permissions").await;
    let ok = call(&svc.with_key(&key), "probe.read").await.unwrap();
    assert_eq!(ok, json!({"owner": "alice", "kind": "api_key"}));

    // Every forgery gets the security service's own refusal reason, and
    // the refusal is recorded as an event.
    let kid = ymera_security::token::check_header(&token).unwrap();
    let jwk = crate::tokens::jwk_of(&svc, &kid).await;
    let invalid_before = svc.event_count("invalid_token").await;
    let cases = crate::tokens::forged_tokens(&svc, &token, &kid, &jwk);
    for (name, forged, want) in &cases {
        let err = call(&as_bearer(&svc.client, forged), "probe.read")
            .await
            .unwrap_err();
        assert_eq!(
            code_and_reason(&err),
            (401, Some((*want).to_owned())),
            "{name}"
        );
    }
    let invalid = cases.iter().filter(|c| c.2 != "expired_token").count() as i64;
    svc.wait_for_events("invalid_token", invalid_before + invalid)
        .await;
    // An Authorization header over 8 KiB is refused before any crypto.
    let huge = format!("{}.{}.x", "e".repeat(10), "A".repeat(9000));
    let err = call(&as_bearer(&svc.client, &huge), "probe.read")
        .await
        .unwrap_err();
    assert_eq!(err.code(), 401);

    // A revoked token is refused by the very next request, every time.
    for _ in 0..20 {
        let fresh = issue(&svc, &key).await;
        call(&as_bearer(&svc.client, &fresh), "probe.read")
            .await
            .unwrap();
        let _: Value = svc
            .client
            .request("security.tokens.revoke", &json!({"token": fresh}))
            .await
            .unwrap();
        let err = call(&as_bearer(&svc.client, &fresh), "probe.read")
            .await
            .unwrap_err();
        assert_eq!(code_and_reason(&err), (401, Some("revoked_token".into())));
    }
    svc.wait_for_event("revoked_token").await;
    // So are the tokens of a revoked key, at once.
    let (key_b, key_b_id) = svc.create_key("bob", "acme", &["config:read"]).await;
    let token_b = issue(&svc, &key_b).await;
    call(&as_bearer(&svc.client, &token_b), "probe.read")
        .await
        .unwrap();
    let _: Value = svc
        .admin()
        .request("security.keys.revoke", &json!({"key_id": key_b_id}))
        .await
        .unwrap();
    let err = call(&as_bearer(&svc.client, &token_b), "probe.read")
        .await
        .unwrap_err();
    assert_eq!(code_and_reason(&err), (401, Some("revoked_key".into())));

    // The deny-list endpoint lists both.
    let list: Value = svc
        .client
        .request("security.tokens.revoked", &json!({}))
        .await
        .unwrap();
    assert_eq!(list["complete"], true);
    assert!(list["tokens"].as_array().unwrap().len() >= 20, "{list}");
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == json!(key_b_id)),
        "{list}"
    );

    // A token signed with a key rotated in after the probe loaded the JWKS
    // is accepted (the unknown kid makes the probe fetch the keys again).
    let new_kid = svc.state.key_ring().rotate().await.unwrap();
    let rotated = issue(&svc, &key).await;
    assert_eq!(
        ymera_security::token::check_header(&rotated).unwrap(),
        new_kid
    );
    tokio::time::sleep(ymera_core::auth::JWKS_REFETCH_MIN).await;
    call(&as_bearer(&svc.client, &rotated), "probe.read")
        .await
        .unwrap();

    // With the security service gone, tokens are still verified (locally)
    // while API keys cannot be checked (503).
    // (A key the probe has never seen: no cached grant.)
    let (unseen_key, _) = svc.create_key("carol", "acme", &["config:read"]).await;
    let client = svc.client.clone();
    let with_key = svc.with_key(&unseen_key);
    svc.stop().await;
    for valid in [&token, &rotated] {
        let ok = call(&as_bearer(&client, valid), "probe.read")
            .await
            .unwrap();
        assert_eq!(ok["owner"], "alice");
    }
    let err = call(&as_bearer(&client, &token), "probe.write")
        .await
        .unwrap_err();
    assert_eq!(err.code(), 403);
    let err = call(&with_key, "probe.read").await.unwrap_err();
    assert_eq!(err.code(), 503, "{err:?}");
    probe.cancel();
}
