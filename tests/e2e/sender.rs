//! The communication agent ties an envelope's `sender` to the credential
//! (auth required): an agent may send only as itself, with an API key or
//! a bearer token, unless it holds `comm:send_as` (the bootstrap admin and
//! the platform's agents answering with the service credential do).

use serde_json::{Value, json};
use ymera_testkit::proto::request_raw;

use ymera_testkit::Servers;

use crate::services::{spawn, spawn_security, wait_healthy};

async fn send(
    client: &async_nats::Client,
    header: (&str, &str),
    sender: &str,
) -> (Option<String>, Value) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header.0, header.1);
    let envelope = json!({"type": "event", "sender": sender, "recipients": ["nobody"],
                          "subject": "who is speaking", "payload": {}});
    request_raw(client, "communication.send", headers, &envelope).await
}

#[tokio::test]
async fn an_agent_sends_only_as_itself_unless_it_may_send_as_others() {
    let servers = Servers::start();
    let client = &servers.client().await;
    let (_security, admin) = spawn_security(client, &servers.env()).await;
    let _communication = spawn("communication", &servers.env());
    wait_healthy(client, "communication").await;

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-API-Key", admin.as_str());
    let (code, created) = request_raw(
        client,
        "security.keys.create",
        headers,
        &json!({"owner": "alice", "permissions": ["comm:send"]}),
    )
    .await;
    assert_eq!(code, None, "{created}");
    let alice = created["key"].as_str().unwrap().to_owned();

    // As herself: accepted. As bob: 403 sender_mismatch, nothing stored.
    let (code, reply) = send(client, ("X-API-Key", &alice), "alice").await;
    assert_eq!(code, None, "{reply}");
    let (code, reply) = send(client, ("X-API-Key", &alice), "bob").await;
    assert_eq!(code.as_deref(), Some("403"), "{reply}");
    assert_eq!(
        reply["error"]["details"]["reason"], "sender_mismatch",
        "{reply}"
    );

    // The same with a bearer token issued from her key.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-API-Key", alice.as_str());
    let (_, issued) = request_raw(client, "security.tokens.issue", headers, &json!({})).await;
    let bearer = format!("Bearer {}", issued["token"].as_str().unwrap());
    let (code, reply) = send(client, ("Authorization", &bearer), "alice").await;
    assert_eq!(code, None, "{reply}");
    let (code, reply) = send(client, ("Authorization", &bearer), "bob").await;
    assert_eq!(code.as_deref(), Some("403"), "{reply}");

    // The bootstrap admin holds comm:send_as.
    let (code, reply) = send(client, ("X-API-Key", &admin), "bob").await;
    assert_eq!(code, None, "{reply}");
}
