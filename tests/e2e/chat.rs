//! The chat path across real services with authentication on (DESIGN §3):
//! an agent sends `{"message": …}` to the built-in agents `code-analysis`
//! and `drafting` through `communication.send`; each answers with a
//! `response` envelope (correlation_id = the request's id) delivered back to
//! the sender's inbox by the communication agent. Every service runs as its
//! own process; the built-in agents use the service credential
//! (`YMERA_SERVICE_API_KEY`) so their answers pass `security.authorize`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use ymera_testkit::Servers;

use crate::services::{spawn, spawn_security, wait_healthy};

#[tokio::test]
async fn built_in_agents_answer_chat_requests_through_the_communication_agent() {
    let servers = Servers::start();
    let base = servers.env();
    let client = servers.client().await;
    let (_security, admin_key) = spawn_security(&client, &base).await;

    let mut agent_env = base.clone();
    agent_env.push(("YMERA_SERVICE_API_KEY", &admin_key));
    let _communication = spawn("communication", &base);
    let _analysis = spawn("code-analysis", &agent_env);
    let _drafting = spawn("drafting", &agent_env);
    for service in ["communication", "code-analysis", "drafting"] {
        wait_healthy(&client, service).await;
    }

    // The user agent "demo" listens on its inbox and acknowledges.
    let mut inbox = client.subscribe("agent.demo.inbox").await.unwrap();
    client.flush().await.unwrap();

    let code_request = json!({
        "type": "request", "sender": "demo", "recipients": ["code-analysis"], "subject": "review",
        "payload": {"message": "Please review this code:\n```python\ndef run(cmd):\n    return eval(cmd)\n```"}
    });
    let text_request = json!({
        "type": "request", "sender": "demo", "recipients": ["drafting"], "subject": "analyse",
        "payload": {"message": "Please analyse this text. It was written quickly. There are many reasons why it is very good."}
    });
    let mut sent = Vec::new();
    for request in [code_request, text_request] {
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
        assert!(
            reply.headers.is_none(),
            "send refused: {}",
            String::from_utf8_lossy(&reply.payload)
        );
        let accepted: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(accepted["status"], "accepted");
        sent.push(accepted["id"].as_str().unwrap().to_owned());
    }

    let mut answers = std::collections::HashMap::new();
    while answers.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(60), inbox.next())
            .await
            .expect("both agents answer within 60 s")
            .unwrap();
        if let Some(reply) = message.reply.clone() {
            client
                .publish(reply, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(envelope["type"], "response");
        assert_eq!(envelope["recipients"], json!(["demo"]));
        answers.insert(envelope["sender"].as_str().unwrap().to_owned(), envelope);
    }
    let analysis = &answers["code-analysis"];
    assert_eq!(analysis["correlation_id"], sent[0].as_str());
    assert_eq!(analysis["payload"]["success"], true, "{analysis}");
    let markdown = analysis["payload"]["response"].as_str().unwrap();
    assert!(
        markdown.contains("B307"),
        "the eval finding is reported: {markdown}"
    );
    let drafting = &answers["drafting"];
    assert_eq!(drafting["correlation_id"], sent[1].as_str());
    assert_eq!(drafting["payload"]["success"], true, "{drafting}");
    assert!(
        drafting["payload"]["response"]
            .as_str()
            .unwrap()
            .contains("Flesch"),
        "{drafting}"
    );
}
