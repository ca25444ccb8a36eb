//! YMERA_AUTH=required: permissions come from security.authorize, and the
//! audit trail records the verified owner.

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_config::Settings;
use ymera_core::ErrorKind;
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::AuthMode;
use ymera_testkit::NatsServer;

use crate::common::*;

/// A stand-in security service on real NATS: key `writer` holds
/// config:read and config:write (owner alice), key `reader` only config:read.
async fn security_service(nats: &NatsServer) {
    let conn = async_nats::connect(nats.url()).await.unwrap();
    let mut requests = conn.subscribe("security.authorize").await.unwrap();
    conn.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let body: Value = serde_json::from_slice(&msg.payload).unwrap();
            let (owner, perms): (&str, &[&str]) = match body["credential"].as_str() {
                Some("writer") => ("alice", &["config:read", "config:write"]),
                Some("reader") => ("bob", &["config:read"]),
                _ => ("", &[]),
            };
            let permission = body["permission"].as_str().unwrap_or("");
            let reply = if owner.is_empty() {
                json!({"allowed": false, "reason": "unknown_key", "permissions": []})
            } else if perms.contains(&permission) {
                json!({"allowed": true, "reason": "granted", "permissions": perms, "principal": {"owner": owner}})
            } else {
                json!({"allowed": false, "reason": "insufficient_permissions", "permissions": perms, "principal": {"owner": owner}})
            };
            if let Some(reply_to) = msg.reply {
                conn.publish(reply_to, reply.to_string().into())
                    .await
                    .unwrap();
            }
        }
    });
}

#[tokio::test]
async fn permissions_are_checked_and_the_audit_records_the_verified_owner() {
    let nats = NatsServer::start().unwrap();
    let db = postgres().create_database().unwrap();
    let mut cfg = config(&nats, &db, None);
    cfg.auth = AuthMode::Required;
    let replica = start_replica(cfg, Settings::default()).await;
    let anonymous = client(&nats).await;
    let with = |key: &str| {
        ServiceClient::new(anonymous.nats().clone())
            .with_credential(Some(Credential::ApiKey(key.into())))
    };
    let body =
        json!({"agent": "secure", "environment": "base", "config": {"a": 1}, "actor": "mallory"});

    fails(
        &anonymous,
        "config.set",
        body.clone(),
        ErrorKind::Unauthenticated,
    )
    .await;
    // The security service is not there yet: 503, not a silent pass.
    fails(
        &with("writer"),
        "config.set",
        body.clone(),
        ErrorKind::Unavailable,
    )
    .await;

    security_service(&nats).await;
    fails(
        &with("nobody"),
        "config.set",
        body.clone(),
        ErrorKind::Unauthenticated,
    )
    .await;
    fails(
        &with("reader"),
        "config.set",
        body.clone(),
        ErrorKind::Forbidden,
    )
    .await;
    let written = ok(&with("writer"), "config.set", body).await;
    assert_eq!(
        written["updated_by"], "alice",
        "the verified owner, not the claimed actor"
    );
    let got = ok(
        &with("reader"),
        "config.get",
        json!({"agent": "secure", "environment": "base"}),
    )
    .await;
    assert_eq!(got["config"], json!({"a": 1}));
    let history = ok(
        &with("reader"),
        "config.history",
        json!({"agent": "secure", "environment": "base"}),
    )
    .await;
    assert_eq!(history["audit"][0]["actor"], "alice");
    replica.stop().await;
}
