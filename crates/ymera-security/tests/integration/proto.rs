//! The wire contract in `proto/`: every request this test sends to the running
//! service, every reply, error body and published security event validates
//! against `proto/schemas/security/*`, so the schemas and the code cannot
//! drift apart.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::client::Credential;

use crate::common::{SecurityService, service_config, start_security};
use ymera_testkit::Servers;
use ymera_testkit::proto::{assert_invalid, assert_valid, request_raw};

/// Sends `body` raw to `security.<endpoint>` with `credential`; returns the
/// error code header (None on success) and the reply body.
async fn call(
    svc: &SecurityService,
    endpoint: &str,
    credential: Option<Credential>,
    body: &Value,
) -> (Option<String>, Value) {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(credential) = credential {
        credential.apply(&mut headers);
    }
    request_raw(
        svc.client.nats(),
        &format!("security.{endpoint}"),
        headers,
        body,
    )
    .await
}

/// Validates `body` against the endpoint's request schema, calls it and
/// validates the reply against its reply schema.
async fn exchange(
    svc: &SecurityService,
    endpoint: &str,
    credential: Option<Credential>,
    body: Value,
) -> Value {
    assert_valid(&format!("security/{endpoint}.request.schema.json"), &body);
    let (error, reply) = call(svc, endpoint, credential, &body).await;
    assert_eq!(error, None, "security.{endpoint} {body} -> {reply}");
    assert_valid(&format!("security/{endpoint}.reply.schema.json"), &reply);
    reply
}

/// Sends a request the schema refuses and checks the code refuses it too,
/// with an error body that follows error.schema.json.
async fn refused(
    svc: &SecurityService,
    endpoint: &str,
    credential: Option<Credential>,
    body: Value,
    code: &str,
) {
    assert_invalid(&format!("security/{endpoint}.request.schema.json"), &body);
    let (error, reply) = call(svc, endpoint, credential, &body).await;
    assert_eq!(error.as_deref(), Some(code), "{endpoint} {body} -> {reply}");
    assert_valid("error.schema.json", &reply);
}

#[tokio::test]
async fn every_endpoint_and_event_follows_the_schemas() {
    let servers = Servers::start();
    let svc = start_security(service_config(&servers)).await;
    let mut events = svc
        .client
        .nats()
        .subscribe("events.security.>")
        .await
        .unwrap();
    svc.client.nats().flush().await.unwrap();
    let admin = || Some(Credential::ApiKey(svc.admin_key.clone()));

    let created = exchange(
        &svc,
        "keys.create",
        admin(),
        json!({"owner": "alice@example.com", "tenant": "acme", "permissions": ["config:read", "comm:send"],
               "expires_in_days": 7, "description": "proto test"}),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let alice = || Some(Credential::ApiKey(key.clone()));
    exchange(
        &svc,
        "keys.create",
        admin(),
        json!({"owner": "bob", "permissions": []}),
    )
    .await;

    let list = exchange(&svc, "keys.list", admin(), json!({})).await;
    assert!(list["keys"].as_array().unwrap().len() >= 2, "{list}");
    exchange(
        &svc,
        "keys.list",
        admin(),
        json!({"tenant": "acme", "include_revoked": true, "limit": 10}),
    )
    .await;

    let granted = exchange(
        &svc,
        "authorize",
        None,
        json!({"credential": key, "permission": "config:read", "tenant": "acme"}),
    )
    .await;
    assert_eq!(granted["allowed"], true, "{granted}");
    let denied = exchange(
        &svc,
        "authorize",
        None,
        json!({"credential": key, "permission": "config:write"}),
    )
    .await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let unknown = exchange(
        &svc,
        "authorize",
        None,
        json!({"credential": "ymk_nonsense", "permission": "config:read"}),
    )
    .await;
    assert_eq!(unknown["principal"], Value::Null, "{unknown}");

    let issued = exchange(
        &svc,
        "tokens.issue",
        alice(),
        json!({"permissions": ["config:read"], "ttl_seconds": 120}),
    )
    .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    exchange(&svc, "tokens.issue", alice(), json!({})).await;
    let verified = exchange(&svc, "tokens.verify", None, json!({"token": token})).await;
    assert_eq!(verified["claims"]["jti"], issued["jti"]);
    let by_token = exchange(
        &svc,
        "authorize",
        None,
        json!({"credential": format!("Bearer {token}"), "permission": "config:read"}),
    )
    .await;
    assert_eq!(by_token["principal"]["kind"], "token", "{by_token}");

    let jwks = exchange(&svc, "jwks", None, json!({})).await;
    assert!(!jwks["keys"].as_array().unwrap().is_empty(), "{jwks}");

    let check = json!({"key": "user:alice", "limit": 2, "period_ms": 60_000, "cost": 2});
    let first = exchange(&svc, "ratelimit.check", None, check.clone()).await;
    assert_eq!(first["allowed"], true, "{first}");
    let second = exchange(&svc, "ratelimit.check", None, check).await;
    assert_eq!(second["allowed"], false, "{second}");

    exchange(&svc, "tokens.revoke", None, json!({"token": token})).await;
    exchange(
        &svc,
        "tokens.revoke",
        admin(),
        json!({"jti": issued["jti"].clone()}),
    )
    .await;
    let revoked = exchange(&svc, "keys.revoke", admin(), json!({"key_id": key_id})).await;
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let deny_list = exchange(&svc, "tokens.revoked", None, json!({})).await;
    assert_eq!(deny_list["complete"], true, "{deny_list}");
    assert!(
        deny_list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["jti"] == issued["jti"]),
        "{deny_list}"
    );
    assert!(
        deny_list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == json!(key_id)),
        "{deny_list}"
    );

    let report = exchange(&svc, "events.report", admin(), json!({})).await;
    assert!(
        report["security_events_24h"].as_i64().unwrap() > 0,
        "{report}"
    );
    exchange(&svc, "events.report", admin(), json!({"tenant": "acme"})).await;

    // Refused requests: the schema refuses them too, and the error bodies
    // follow error.schema.json.
    refused(
        &svc,
        "keys.create",
        admin(),
        json!({"owner": "carol", "permissions": [], "colour": "red"}),
        "400",
    )
    .await;
    refused(
        &svc,
        "keys.create",
        admin(),
        json!({"owner": "carol", "permissions": ["config"]}),
        "422",
    )
    .await;
    refused(
        &svc,
        "keys.revoke",
        admin(),
        json!({"key_id": "short"}),
        "422",
    )
    .await;
    refused(
        &svc,
        "ratelimit.check",
        None,
        json!({"key": "k", "limit": 0, "period_ms": 1000}),
        "422",
    )
    .await;
    refused(
        &svc,
        "tokens.issue",
        alice(),
        json!({"ttl_seconds": 5}),
        "422",
    )
    .await;
    refused(&svc, "tokens.revoke", None, json!({}), "422").await;
    // Valid by shape, refused for the caller: still an error.schema.json body.
    let (error, body) = call(&svc, "keys.list", None, &json!({})).await;
    assert_eq!(error.as_deref(), Some("401"), "{body}");
    assert_valid("error.schema.json", &body);
    let (error, body) = call(&svc, "tokens.verify", None, &json!({"token": token})).await;
    assert_eq!(error.as_deref(), Some("401"), "{body}");
    assert_valid("error.schema.json", &body);

    // Every published event follows event.schema.json and its subject ends
    // with its event_type.
    let mut seen = std::collections::BTreeSet::new();
    let wanted = [
        "key_created",
        "token_issued",
        "token_revoked",
        "key_revoked",
        "insufficient_permissions",
        "invalid_api_key",
        "rate_limit_exceeded",
    ];
    while !wanted.iter().all(|t| seen.contains(*t)) {
        let msg = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("events seen so far: {seen:?}"))
            .unwrap();
        let event: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_valid("security/event.schema.json", &event);
        let event_type = event["event_type"].as_str().unwrap().to_owned();
        assert_eq!(
            msg.subject.as_str(),
            format!("events.security.{event_type}")
        );
        seen.insert(event_type);
    }
    svc.stop().await;
}

/// The endpoint registry (what the gateway generates routes from): every
/// subject, open to the runtime (this service checks credentials itself),
/// with a request and reply schema in `proto/`.
#[tokio::test]
async fn the_registry_lists_every_endpoint_with_its_schemas() {
    let servers = Servers::start();
    let svc = start_security(service_config(&servers)).await;
    let endpoints = ymera_security::service::service(svc.state.clone()).endpoints();
    let subjects: Vec<&str> = endpoints.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "security.keys.create",
            "security.keys.list",
            "security.keys.revoke",
            "security.authorize",
            "security.tokens.issue",
            "security.tokens.verify",
            "security.tokens.revoke",
            "security.jwks",
            "security.tokens.revoked",
            "security.ratelimit.check",
            "security.events.report",
        ]
    );
    for info in &endpoints {
        assert_eq!(info.permission, None, "{}", info.subject);
        for file in [info.request_schema(), info.reply_schema()] {
            ymera_testkit::proto::assert_schema_file(&file.unwrap());
        }
    }
    svc.stop().await;
}
