//! The seed's code review over the real services (000 `can_handle`): an
//! agent asks `code-analysis` "any security bugs here?" with a code block
//! through `communication.send` and gets the report back in its inbox (the
//! seed's subprocess and password-prompt patterns found); a message without
//! code gets a polite refusal listing what the agent can do.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use ymera_testkit::Servers;

use crate::services::{spawn, spawn_security, wait_healthy};

#[tokio::test]
async fn the_seeds_security_question_is_answered_through_the_communication_agent() {
    let servers = Servers::start();
    let base = servers.env();
    let client = servers.client().await;
    let (_security, admin_key) = spawn_security(&client, &base).await;
    let mut agent_env = base.clone();
    agent_env.push(("YMERA_SERVICE_API_KEY", &admin_key));
    let _communication = spawn("communication", &base);
    let _analysis = spawn("code-analysis", &agent_env);
    for service in ["communication", "code-analysis"] {
        wait_healthy(&client, service).await;
    }
    let mut inbox = client.subscribe("agent.reviewer.inbox").await.unwrap();
    client.flush().await.unwrap();

    let question = "any security bugs here?\n```python\nimport subprocess\n\ndef deploy(branch):\n    subprocess.call(['git', 'checkout', branch])\n    return input('Password for the deploy key: ')\n```";
    let mut ids = Vec::new();
    for message in [question, "Hi! What can you do for me?"] {
        let request = json!({
            "type": "request", "sender": "reviewer", "recipients": ["code-analysis"],
            "subject": "review", "payload": {"message": message}
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-API-Key", admin_key.as_str());
        let reply = client
            .request_with_headers(
                "communication.send",
                headers,
                Bytes::from(request.to_string()),
            )
            .await
            .unwrap();
        let accepted: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(accepted["status"], "accepted", "{accepted}");
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }

    let mut answers = std::collections::HashMap::new();
    while answers.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(60), inbox.next())
            .await
            .expect("code-analysis answers within 60 s")
            .unwrap();
        if let Some(reply) = message.reply.clone() {
            client
                .publish(reply, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(envelope["type"], "response");
        answers.insert(
            envelope["correlation_id"].as_str().unwrap().to_owned(),
            envelope,
        );
    }
    let review = &answers[&ids[0]]["payload"];
    assert_eq!(review["success"], true, "{review}");
    let markdown = review["response"].as_str().unwrap();
    for id in ["B603", "B607", "PY001"] {
        assert!(markdown.contains(id), "{id} in:\n{markdown}");
    }
    let declined = &answers[&ids[1]]["payload"];
    assert_eq!(declined["success"], false, "{declined}");
    assert!(
        declined["error"].as_str().unwrap().starts_with("Sorry"),
        "{declined}"
    );
    assert!(
        declined["capabilities"].as_array().unwrap().len() >= 4,
        "{declined}"
    );
}

/// The same question with no named recipient (`ymera send --skill code_review …`): the
/// communication agent routes `skill:code_review` to the live card of `code-analysis`
/// (registered by the service itself at start), the history records it, the answer comes
/// back, and the card counts the inbox traffic in the agent's reported metrics. A skill
/// nobody has is refused with `no_capable_agent` and the live agents.
#[tokio::test]
async fn the_seeds_review_by_skill_reaches_the_capable_agent() {
    let servers = Servers::start();
    let base = servers.env();
    let client = servers.client().await;
    let (_security, admin_key) = spawn_security(&client, &base).await;
    let mut agent_env = base.clone();
    agent_env.push(("YMERA_SERVICE_API_KEY", &admin_key));
    let _communication = spawn("communication", &base);
    let _analysis = spawn("code-analysis", &agent_env);
    for service in ["communication", "code-analysis"] {
        wait_healthy(&client, service).await;
    }
    let call = |subject: &'static str, body: Value| {
        let (client, key) = (client.clone(), admin_key.clone());
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("X-API-Key", key.as_str());
            let reply = client
                .request_with_headers(subject, headers, Bytes::from(body.to_string()))
                .await
                .unwrap();
            let error = reply
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Service-Error-Code"))
                .map(|v| v.as_str().to_owned());
            (
                error,
                serde_json::from_slice::<Value>(&reply.payload).unwrap(),
            )
        }
    };
    // The built-in agent's card appears.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = call("communication.agents.list", json!({"skill": "code_review"})).await;
        if list["agents"][0]["name"] == "code-analysis" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no card for code-analysis: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut inbox = client.subscribe("agent.reviewer.inbox").await.unwrap();
    client.flush().await.unwrap();
    let question = "any security bugs here?\n```python\nimport subprocess\n\ndef deploy(branch):\n    subprocess.call(['git', 'checkout', branch])\n    return input('Password for the deploy key: ')\n```";
    let (error, accepted) = call(
        "communication.send",
        json!({"type": "request", "sender": "reviewer", "recipients": ["skill:code_review"],
               "subject": "review", "payload": {"message": question}}),
    )
    .await;
    assert!(error.is_none(), "{accepted}");
    assert_eq!(
        accepted["recipients"],
        json!(["code-analysis"]),
        "{accepted}"
    );
    assert_eq!(accepted["resolved"][0]["agent"], "code-analysis");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let answer = loop {
        let message = tokio::time::timeout(Duration::from_secs(60), inbox.next())
            .await
            .expect("code-analysis answers within 60 s")
            .unwrap();
        if let Some(reply) = message.reply.clone() {
            client
                .publish(reply, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        if envelope["correlation_id"] == id.as_str() {
            break envelope;
        }
    };
    assert_eq!(answer["sender"], "code-analysis");
    assert_eq!(answer["payload"]["success"], true, "{answer}");
    assert!(
        answer["payload"]["response"]
            .as_str()
            .unwrap()
            .contains("B603")
    );
    let (_, history) = call(
        "communication.history",
        json!({"sender": "reviewer", "recipient": "code-analysis"}),
    )
    .await;
    assert_eq!(history["messages"][0]["id"], id.as_str(), "{history}");

    // The next heartbeat (every 10 s) reports the request handled.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, card) = call("communication.agents.get", json!({"name": "code-analysis"})).await;
        if card["metrics"]["requests_handled"].as_u64() >= Some(1)
            && card["delivery"]["delivered"].as_u64() >= Some(1)
        {
            assert_eq!(card["live"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "card never counted the request: {card}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (error, refused) = call(
        "communication.send",
        json!({"type": "request", "sender": "reviewer", "recipients": ["skill:translation"],
               "subject": "x", "payload": {"message": "hola"}}),
    )
    .await;
    assert_eq!(error.as_deref(), Some("422"), "{refused}");
    assert_eq!(refused["error"]["details"]["reason"], "no_capable_agent");
    assert!(
        refused["error"]["details"]["live_agents"]
            .to_string()
            .contains("code-analysis"),
        "{refused}"
    );
}
