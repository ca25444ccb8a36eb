//! Hot reload across processes (issue: the platform's own services read
//! their tunables through `ConfigWatcher`): the communication agent and the
//! drafting agent follow their documents in the config manager. A rate
//! limit written with `config.set` takes effect on `communication.send`, and
//! an auto-save interval on drafting's buffered saves, without a restart; a
//! document with a key that cannot change at run time is refused and the
//! last good settings stay.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use ymera_testkit::Servers;

use crate::services::{spawn, spawn_security, wait_healthy};

async fn call(client: &async_nats::Client, key: &str, subject: &str, body: Value) -> Value {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-API-Key", key);
    let reply = client
        .request_with_headers(subject.to_owned(), headers, Bytes::from(body.to_string()))
        .await
        .unwrap();
    let mut value: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
    {
        value["refused_with"] = json!(code.as_str());
    }
    value
}

/// Sends three messages as a fresh sender; true when the third is refused
/// with 429.
async fn third_send_limited(client: &async_nats::Client, key: &str, sender: &str) -> bool {
    let mut last = Value::Null;
    for i in 0..3 {
        let envelope = json!({"type": "event", "sender": sender, "recipients": ["nobody"],
                              "subject": format!("probe {i}"), "payload": {}});
        last = call(client, key, "communication.send", envelope).await;
    }
    last["refused_with"] == "429"
}

async fn set_config(client: &async_nats::Client, key: &str, agent: &str, config: Value) {
    let reply = call(
        client,
        key,
        "config.set",
        json!({"agent": agent, "environment": "development", "config": config}),
    )
    .await;
    assert!(reply["version"].as_i64().is_some(), "config.set: {reply}");
}

/// Security (with a bootstrap admin key), the config manager and `service`
/// as processes with authentication required, each service with the key.
struct Stack {
    _children: Vec<ymera_devstack::Service>,
    _servers: Servers,
    client: async_nats::Client,
    key: String,
}

impl Stack {
    async fn start(service: &str, extra_env: &[(&str, &str)]) -> Stack {
        let servers = Servers::start();
        let client = servers.client().await;
        let (security, key) = spawn_security(&client, &servers.env()).await;
        let mut service_env = servers.env();
        service_env.push(("YMERA_SERVICE_API_KEY", &key));
        let config = spawn("config", &service_env);
        service_env.extend_from_slice(extra_env);
        let child = spawn(service, &service_env);
        wait_healthy(&client, "config").await;
        wait_healthy(&client, service).await;
        drop(service_env);
        Stack {
            _children: vec![security, config, child],
            _servers: servers,
            client,
            key,
        }
    }
}

#[tokio::test]
async fn communication_follows_its_rate_limit_in_the_config_manager() {
    let stack = Stack::start("communication", &[]).await;
    let (client, key) = (&stack.client, stack.key.as_str());

    // Default limit (100 per second): three sends pass.
    assert!(!third_send_limited(client, key, "before").await);

    // Two per minute: the third send of a sender is refused, no restart.
    set_config(
        client,
        key,
        "communication",
        json!({"rate_limit": 2, "rate_period_ms": 60000}),
    )
    .await;
    let mut limited = false;
    for i in 0..100 {
        if third_send_limited(client, key, &format!("tight-{i}")).await {
            limited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(limited, "the new rate limit never took effect");

    // A document with a start-only key is refused: the limit stays.
    set_config(
        client,
        key,
        "communication",
        json!({"rate_limit": 1000, "backlog_limit": 5}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(third_send_limited(client, key, "after-bad").await);

    // A valid change lifts it again.
    set_config(client, key, "communication", json!({"rate_limit": 1000})).await;
    let mut lifted = false;
    for i in 0..100 {
        if !third_send_limited(client, key, &format!("loose-{i}")).await {
            lifted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lifted, "the raised rate limit never took effect");
}

/// True while drafting holds an acknowledged auto-save of `draft` that it
/// has not written to PostgreSQL yet.
async fn autosave_pending(client: &async_nats::Client, key: &str, draft: &str) -> bool {
    let reply = call(client, key, "drafting.get", json!({"draft_id": draft})).await;
    reply["autosave_pending"]
        .as_bool()
        .unwrap_or_else(|| panic!("drafting.get: {reply}"))
}

async fn autosave(client: &async_nats::Client, key: &str, draft: &str, content: &str) {
    let ack = call(
        client,
        key,
        "drafting.update",
        json!({"draft_id": draft, "content": content, "autosave": true}),
    )
    .await;
    assert_eq!(ack["accepted"], true, "autosave: {ack}");
}

/// Polls for up to `limit` until no auto-save of `draft` is pending.
async fn persisted_within(
    client: &async_nats::Client,
    key: &str,
    draft: &str,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if !autosave_pending(client, key, draft).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn drafting_follows_its_auto_save_interval_in_the_config_manager() {
    // An hour between two persists of one draft, from the environment.
    let stack = Stack::start("drafting", &[("AUTO_SAVE_INTERVAL", "3600")]).await;
    let (client, key) = (&stack.client, stack.key.as_str());
    let created = call(
        client,
        key,
        "drafting.create",
        json!({"draft_id": "live", "title": "Live", "author_id": "ann", "content": "v0"}),
    )
    .await;
    assert_eq!(created["version"], 1, "create: {created}");
    // The first auto-save of a draft is persisted at the next tick; the
    // next one waits for the interval.
    autosave(client, key, "live", "v1").await;
    assert!(persisted_within(client, key, "live", Duration::from_secs(15)).await);
    autosave(client, key, "live", "v2").await;
    assert!(!persisted_within(client, key, "live", Duration::from_secs(1)).await);

    // A document with an unknown key is refused: the hour stays.
    set_config(
        client,
        key,
        "drafting",
        json!({"auto_save_interval_ms": 100, "collab_limit": 3}),
    )
    .await;
    assert!(!persisted_within(client, key, "live", Duration::from_millis(1500)).await);

    // 100 ms: the waiting save is written without a restart.
    set_config(
        client,
        key,
        "drafting",
        json!({"auto_save_interval_ms": 100}),
    )
    .await;
    assert!(
        persisted_within(client, key, "live", Duration::from_secs(10)).await,
        "the new auto-save interval never took effect"
    );
    let draft = call(client, key, "drafting.get", json!({"draft_id": "live"})).await;
    assert_eq!(draft["content"], "v2", "get: {draft}");
    // The bootstrap admin holds drafting:admin: a hard delete goes through.
    let deleted = call(
        client,
        key,
        "drafting.delete",
        json!({"draft_id": "live", "hard": true}),
    )
    .await;
    assert_eq!(deleted["deleted"], true, "hard delete: {deleted}");
}
