//! The wire contract in `proto/`: every endpoint is called with a valid
//! request, and the request sent, the reply received, the events published and
//! the refusals are validated against the schemas, so code and `proto/`
//! cannot drift apart.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::*;
use ymera_testkit::proto::{assert_invalid, assert_refused, assert_valid, exchange};

/// `ymera_testkit::proto::exchange` on `config.<endpoint>`.
async fn call(nats: &async_nats::Client, endpoint: &str, request: Value) -> Value {
    exchange(nats, "config", endpoint, request).await
}

/// `ymera_testkit::proto::assert_refused` on `config.<endpoint>`.
async fn refused(nats: &async_nats::Client, endpoint: &str, request: Value, code: &str) {
    assert_refused(nats, "config", endpoint, request, code).await
}

#[tokio::test]
async fn endpoints_and_events_match_the_proto_schemas() {
    let stack = stack().await;
    let raw = stack.client.nats().clone();
    let mut events = raw.subscribe("config.changed.>").await.unwrap();
    raw.flush().await.unwrap();

    let schema =
        json!({"type": "object", "properties": {"pool": {"type": "integer", "minimum": 1}}});
    let s = call(
        &raw,
        "schema.set",
        json!({"agent": "svc", "schema": schema, "expected_version": 0, "actor": "ops"}),
    )
    .await;
    assert_eq!(s["version"], 1);
    assert_eq!(
        call(&raw, "schema.get", json!({"agent": "svc"})).await["schema"],
        schema
    );

    let w = call(
        &raw,
        "set",
        json!({"agent": "svc", "environment": "base", "config": {"pool": 5, "name": "a"}}),
    )
    .await;
    assert_eq!(w["version"], 1);
    call(
        &raw,
        "set",
        json!({"agent": "svc", "environment": "production", "config": 10,
                             "pointer": "/pool", "expected_version": 0, "actor": "ops"}),
    )
    .await;
    call(
        &raw,
        "set",
        json!({"agent": "svc", "environment": "base", "config": {"name": "b"}, "merge": true}),
    )
    .await;
    let got = call(
        &raw,
        "get",
        json!({"agent": "svc", "environment": "production"}),
    )
    .await;
    assert_eq!(got["config"], json!({"pool": 10, "name": "b"}));
    let one = call(
        &raw,
        "get",
        json!({"agent": "svc", "environment": "production", "raw": true, "pointer": "/pool"}),
    )
    .await;
    assert_eq!(one["config"], 10);
    call(&raw, "get", json!({"agent": "svc"})).await;

    let history = call(
        &raw,
        "history",
        json!({"agent": "svc", "environment": "base", "limit": 10, "documents": true}),
    )
    .await;
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    let (newest, oldest) = (
        versions[0]["version"].clone(),
        versions[1]["version"].clone(),
    );
    let diff = call(
        &raw,
        "diff",
        json!({"agent": "svc", "environment": "base", "from_version": oldest}),
    )
    .await;
    assert_eq!(diff["to_version"], newest);
    call(
        &raw,
        "diff",
        json!({"agent": "svc", "environment": "base", "from_version": oldest, "to_version": newest}),
    )
    .await;
    let back = call(
        &raw,
        "rollback",
        json!({"agent": "svc", "environment": "base", "to_version": oldest,
               "expected_version": newest, "actor": "ops"}),
    )
    .await;
    assert_eq!(back["previous_version"], newest);
    assert_eq!(back["changed"], true);
    call(
        &raw,
        "delete",
        json!({"agent": "svc", "environment": "production", "pointer": "/pool"}),
    )
    .await;
    call(
        &raw,
        "delete",
        json!({"agent": "svc", "environment": "production"}),
    )
    .await;

    let t = call(
        &raw,
        "template.set",
        json!({"name": "tpl", "template": {"pool": "${n}", "tag": "x"},
                                              "description": "a pool", "actor": "ops"}),
    )
    .await;
    assert_eq!(t["variables"], json!(["n"]));
    call(
        &raw,
        "template.apply",
        json!({"template": "tpl", "agent": "svc2", "environment": "staging",
                                        "vars": {"n": "3"}, "expected_version": 0}),
    )
    .await;

    let bundle = call(&raw, "export", json!({"environment": "staging"})).await;
    assert!(!bundle["agents"].as_array().unwrap().is_empty());
    let dry = call(
        &raw,
        "import",
        json!({"bundle": bundle, "dry_run": true, "actor": "ops"}),
    )
    .await;
    assert_eq!(dry["applied"], false);
    let mut changed = bundle.clone();
    changed["agents"][0]["layers"]["staging"] = json!({"pool": 7});
    let applied = call(&raw, "import", json!({"bundle": changed})).await;
    assert_eq!(applied["applied"], true);

    // Change events: at least one per committed layer change, each valid.
    let mut seen = 0;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await
    {
        let body: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_valid("config/event.changed.schema.json", &body);
        assert_eq!(
            message.subject.as_str(),
            format!(
                "config.changed.{}.{}",
                body["agent"].as_str().unwrap(),
                body["environment"].as_str().unwrap()
            )
        );
        seen += 1;
    }
    assert!(seen >= 8, "{seen} change events");

    // Refusals carry error.schema.json bodies.
    refused(&raw, "get", json!({"agent": "nobody"}), "not_found").await;
    refused(
        &raw,
        "get",
        json!({"agent": "svc", "bogus": 1}),
        "invalid_request",
    )
    .await;
    refused(
        &raw,
        "set",
        json!({"agent": "svc", "environment": "base", "config": {"pool": 0}}),
        "validation_failed",
    )
    .await;
    refused(
        &raw,
        "set",
        json!({"agent": "svc", "environment": "base", "config": {}, "expected_version": 99}),
        "conflict",
    )
    .await;
}

/// What the schemas refuse, the endpoints refuse too (the request side of
/// the contract is not looser than the code).
#[test]
fn request_schemas_refuse_what_the_code_refuses() {
    let cases = [
        ("get", json!({"agent": "Bad Name"})),
        ("get", json!({"agent": "a", "environment": "qa"})),
        ("get", json!({"agent": "a", "bogus": 1})),
        ("set", json!({"agent": "a", "environment": "base"})),
        (
            "history",
            json!({"agent": "a", "environment": "base", "limit": 0}),
        ),
        (
            "history",
            json!({"agent": "a", "environment": "base", "limit": 1001}),
        ),
        ("schema.get", json!({})),
        (
            "import",
            json!({"bundle": {"format": "other/1", "agents": []}}),
        ),
        (
            "template.set",
            json!({"name": "t", "template": 1, "description": "d".repeat(4097)}),
        ),
    ];
    for (endpoint, request) in cases {
        assert_invalid(&format!("config/{endpoint}.request.schema.json"), &request);
    }
}

/// The endpoint registry (what the gateway generates routes from): every
/// subject with its permission, and a request and reply schema in `proto/`.
#[tokio::test]
async fn the_registry_lists_every_endpoint_with_its_permission_and_schemas() {
    let stack = stack().await;
    let endpoints = ymera_config::builder(&stack.replica.manager).endpoints();
    let reads = ["get", "history", "diff", "schema.get", "export", "metrics"];
    let writes = [
        "set",
        "delete",
        "rollback",
        "schema.set",
        "import",
        "template.set",
        "template.apply",
    ];
    assert_eq!(endpoints.len(), reads.len() + writes.len());
    for info in &endpoints {
        let name = info.subject.strip_prefix("config.").unwrap();
        let expected = if reads.contains(&name) {
            ymera_config::auth::Read::PERMISSION
        } else {
            assert!(writes.contains(&name), "{}", info.subject);
            ymera_config::auth::Write::PERMISSION
        };
        assert_eq!(info.permission, Some(expected), "{}", info.subject);
        for file in [info.request_schema(), info.reply_schema()] {
            ymera_testkit::proto::assert_schema_file(&file.unwrap());
        }
    }
    stack.replica.stop().await;
}
