//! The wire contract in `proto/`: every endpoint is called with a valid
//! request, and the request sent, the reply received, the events published and
//! the refusals are validated against the schemas, so code and `proto/`
//! cannot drift apart.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::*;
use ymera_testkit::eventually;
use ymera_testkit::proto::{assert_invalid, assert_refused, assert_valid, exchange};

/// `ymera_testkit::proto::exchange` on `communication.<endpoint>`.
async fn call(nats: &async_nats::Client, endpoint: &str, request: Value) -> Value {
    exchange(nats, "communication", endpoint, request).await
}

/// `ymera_testkit::proto::assert_refused` on `communication.<endpoint>`.
async fn refused(nats: &async_nats::Client, endpoint: &str, request: Value, code: &str) {
    assert_refused(nats, "communication", endpoint, request, code).await
}

#[tokio::test]
async fn endpoints_and_events_match_the_proto_schemas() {
    let nats = nats();
    let db = database();
    let settings = ymera_communication::settings::CommSettings {
        max_attempts: 2,
        ..fast_settings()
    };
    let _agent = Agent::start(config(&nats, &db), settings).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    let mut events = raw.subscribe("events.communication.>").await.unwrap();
    raw.flush().await.unwrap();
    let _bob = Recipient::start(&nats.url(), "bob", false).await;
    let _dead = Recipient::start(&nats.url(), "dead", true).await;

    // send: a full envelope to a recipient that acknowledges.
    let mut full = envelope("alice", &["bob"], "proto check");
    full["conversation_id"] = json!("conv-proto");
    full["priority"] = json!("high");
    full["metadata"] = json!({"trace": "t-1"});
    let sent = call(&raw, "send", full.clone()).await;
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(id, full["id"]);
    // A resend of the same id is a duplicate, still a valid reply.
    let again = call(&raw, "send", full).await;
    assert_eq!(again["duplicate"], true);

    // status: until delivered.
    let status_request = json!({"id": id});
    eventually(Duration::from_secs(10), "bob acknowledged", || {
        let raw = raw.clone();
        let req = status_request.clone();
        async move { call(&raw, "status", req).await["status"] == "delivered" }
    })
    .await;

    let history = call(
        &raw,
        "history",
        json!({"sender": "alice", "recipient": "bob", "conversation_id": "conv-proto",
               "since": "2020-01-01T00:00:00Z", "limit": 10}),
    )
    .await;
    assert_eq!(history["messages"][0]["id"], id.as_str());
    call(&raw, "history", Value::Null).await;
    let conversations = call(
        &raw,
        "conversations",
        json!({"participant": "alice", "limit": 5}),
    )
    .await;
    assert_eq!(
        conversations["conversations"][0]["conversation_id"],
        "conv-proto"
    );
    call(&raw, "conversations", Value::Null).await;

    // A recipient that always fails: retried once, then dead-lettered.
    let doomed = envelope("alice", &["dead"], "doomed");
    let doomed_id = call(&raw, "send", doomed).await["id"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let page = loop {
        let page = call(&raw, "dlq.list", json!({"recipient": "dead", "limit": 10})).await;
        if page["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copy never reached the DLQ"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(page["dead_letters"][0]["envelope"]["id"], doomed_id);
    call(&raw, "dlq.list", Value::Null).await;
    let metrics = call(&raw, "metrics", Value::Null).await;
    assert!(metrics["counters"]["dead_lettered"].as_u64().unwrap() >= 1);
    let sequence = page["dead_letters"][0]["sequence"].clone();
    let replayed = call(&raw, "dlq.replay", json!({"sequences": [sequence]})).await;
    assert_eq!(replayed["replayed"], 1);

    // Every kind of event was published, each matching its schema.
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        let message = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("all three event kinds")
            .unwrap();
        let kind = message
            .subject
            .as_str()
            .strip_prefix("events.communication.")
            .unwrap()
            .to_owned();
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_valid(&format!("communication/event.{kind}.schema.json"), &body);
        seen.insert(kind);
    }

    // Refusals carry error.schema.json bodies.
    refused(
        &raw,
        "status",
        json!({"id": uuid::Uuid::now_v7()}),
        "not_found",
    )
    .await;
    refused(&raw, "history", json!({"limit": 0}), "validation_failed").await;
    refused(&raw, "history", json!({"bogus": 1}), "invalid_request").await;
    refused(
        &raw,
        "send",
        json!({"type": "event", "sender": "Bad Name", "recipients": ["bob"], "subject": ""}),
        "validation_failed",
    )
    .await;
    refused(&raw, "dlq.replay", json!({}), "validation_failed").await;
}

/// What the schemas refuse, the endpoints refuse too (the request side of
/// the contract is not looser than the code).
#[test]
fn request_schemas_refuse_what_the_code_refuses() {
    let cases = [
        ("history", json!({"limit": 0})),
        ("history", json!({"limit": 1001})),
        ("history", json!({"sender": "Bad Name"})),
        ("history", json!({"bogus": 1})),
        ("conversations", json!({"participant": "-x"})),
        ("status", json!({})),
        ("dlq.list", json!({"limit": 2000})),
        ("dlq.replay", json!({})),
        ("dlq.replay", json!({"sequences": []})),
    ];
    for (endpoint, request) in cases {
        assert_invalid(
            &format!("communication/{endpoint}.request.schema.json"),
            &request,
        );
    }
}

/// The endpoint registry (what the gateway generates routes from): every
/// subject with its permission, typed request and reply, and their schemas
/// in `proto/`.
#[tokio::test]
async fn the_registry_lists_every_endpoint_with_its_permission_and_schemas() {
    use ymera_communication::auth::{ReadMessages, SendMessages};
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let endpoints = ymera_communication::service(agent.comm.clone()).endpoints();
    let sends = [
        "send",
        "dlq.replay",
        "agents.register",
        "agents.heartbeat",
        "agents.deregister",
    ];
    let reads = [
        "status",
        "history",
        "conversations",
        "metrics",
        "dlq.list",
        "agents.list",
        "agents.get",
    ];
    assert_eq!(endpoints.len(), sends.len() + reads.len());
    for info in &endpoints {
        let name = info.subject.strip_prefix("communication.").unwrap();
        let expected = if sends.contains(&name) {
            SendMessages::PERMISSION
        } else {
            assert!(reads.contains(&name), "{}", info.subject);
            ReadMessages::PERMISSION
        };
        assert_eq!(info.permission, Some(expected), "{}", info.subject);
        assert_ne!(info.reply, "untyped", "{}", info.subject);
        for file in [info.request_schema(), info.reply_schema()] {
            ymera_testkit::proto::assert_schema_file(&file.unwrap());
        }
    }
}
