//! Hot reload across processes (issue: the platform's own services read
//! their tunables through `ConfigWatcher`): the communication agent follows
//! its document in the config manager. A rate limit written with
//! `config.set` takes effect on `communication.send` without a restart; a
//! document with a key that cannot change at run time is refused and the
//! last good settings stay.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use ymera_testkit::{NatsServer, Postgres};

use crate::services::{spawn, wait_healthy};

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

async fn set_config(client: &async_nats::Client, key: &str, config: Value) {
    let reply = call(
        client,
        key,
        "config.set",
        json!({"agent": "communication", "environment": "development", "config": config}),
    )
    .await;
    assert!(reply["version"].as_i64().is_some(), "config.set: {reply}");
}

#[tokio::test]
async fn communication_follows_its_rate_limit_in_the_config_manager() {
    let nats = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let db = pg.create_database().unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("admin.key");
    let key_str = key_path.display().to_string();
    let url = nats.url();
    let base = vec![("NATS_URL", url.as_str()), ("POSTGRES_URL", db.as_str())];
    let mut security_env = base.clone();
    security_env.push(("YMERA_BOOTSTRAP_ADMIN_KEY", &key_str));
    let _security = spawn("security", &security_env);
    let client = async_nats::connect(nats.url()).await.unwrap();
    wait_healthy(&client, "security").await;
    let key = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_owned();
    let mut service_env = base.clone();
    service_env.push(("YMERA_SERVICE_API_KEY", &key));
    let _config = spawn("config", &service_env);
    let _communication = spawn("communication", &service_env);
    wait_healthy(&client, "config").await;
    wait_healthy(&client, "communication").await;

    // Default limit (100 per second): three sends pass.
    assert!(!third_send_limited(&client, &key, "before").await);

    // Two per minute: the third send of a sender is refused, no restart.
    set_config(
        &client,
        &key,
        json!({"rate_limit": 2, "rate_period_ms": 60000}),
    )
    .await;
    let mut limited = false;
    for i in 0..100 {
        if third_send_limited(&client, &key, &format!("tight-{i}")).await {
            limited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(limited, "the new rate limit never took effect");

    // A document with a start-only key is refused: the limit stays.
    set_config(
        &client,
        &key,
        json!({"rate_limit": 1000, "backlog_limit": 5}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(third_send_limited(&client, &key, "after-bad").await);

    // A valid change lifts it again.
    set_config(&client, &key, json!({"rate_limit": 1000})).await;
    let mut lifted = false;
    for i in 0..100 {
        if !third_send_limited(&client, &key, &format!("loose-{i}")).await {
            lifted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lifted, "the raised rate limit never took effect");
}
