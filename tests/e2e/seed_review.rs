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
