//! YMERA_AUTH=required: permissions come from security.authorize, and the
//! audit trail records the verified owner.

use serde_json::json;
use ymera_config::Settings;
use ymera_core::ErrorKind;
use ymera_core::client::{Credential, ServiceClient};
use ymera_core::config::AuthMode;
use ymera_testkit::{FakeAuthorizer, NatsServer, shared_postgres};

use crate::common::*;

#[tokio::test]
async fn permissions_are_checked_and_the_audit_records_the_verified_owner() {
    let nats = NatsServer::start().unwrap();
    let db = shared_postgres().create_database().unwrap();
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

    // A stand-in security service: key `writer` holds config:read and
    // config:write (owner alice), key `reader` only config:read.
    let _security = FakeAuthorizer::start(
        anonymous.nats(),
        &[
            ("writer", "alice", &["config:read", "config:write"]),
            ("reader", "bob", &["config:read"]),
        ],
    )
    .await;
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
