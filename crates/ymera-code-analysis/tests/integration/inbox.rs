//! The agent inbox over a real nats-server. The test plays the communication
//! agent: it delivers envelopes to `agent.code-analysis.inbox` as NATS
//! requests and accepts what the agent sends on `communication.send`.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::envelope::{Envelope, MessageType};

use crate::common::start_service;

/// Plays `communication.send`: accepts every envelope and yields it.
async fn communication_agent(nats: &async_nats::Client) -> tokio::sync::mpsc::Receiver<Envelope> {
    let mut sub = nats.subscribe("communication.send").await.unwrap();
    nats.flush().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let nats = nats.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let envelope: Envelope = serde_json::from_slice(&msg.payload).unwrap();
            if let Some(reply) = msg.reply {
                let ack = json!({"id": envelope.id, "status": "accepted"});
                nats.publish(reply, serde_json::to_vec(&ack).unwrap().into())
                    .await
                    .unwrap();
            }
            if tx.send(envelope).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Delivers `envelope` to the inbox like the communication agent does and
/// returns the acknowledgement body.
async fn deliver(nats: &async_nats::Client, envelope: &Envelope) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        nats.request(
            "agent.code-analysis.inbox",
            serde_json::to_vec(envelope).unwrap().into(),
        ),
    )
    .await
    .expect("inbox acknowledges in time")
    .expect("inbox answers");
    assert!(
        reply
            .headers
            .is_none_or(|h| h.get("Nats-Service-Error").is_none())
    );
    serde_json::from_slice(&reply.payload).unwrap()
}

async fn next_response(rx: &mut tokio::sync::mpsc::Receiver<Envelope>) -> Envelope {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a response is sent in time")
        .expect("the channel is open")
}

fn chat(sender: &str, message: &str) -> Envelope {
    let mut envelope = Envelope::new(
        MessageType::Request,
        sender,
        vec!["code-analysis".to_owned()],
        "code review",
        json!({ "message": message }),
    );
    envelope.conversation_id = Some("conv-1".to_owned());
    envelope
}

#[tokio::test]
async fn chat_review_is_answered_through_communication_send() {
    let svc = start_service(1024 * 1024).await;
    let nats = svc.client.nats().clone();
    let mut sent = communication_agent(&nats).await;

    let request = chat(
        "alice",
        "Can you review this code?\n```python\ndef run(cmd):\n    return eval(cmd)\n```\n",
    );
    assert_eq!(deliver(&nats, &request).await, json!({}));

    let response = next_response(&mut sent).await;
    response.validate().unwrap();
    assert_eq!(response.message_type, MessageType::Response);
    assert_eq!(response.sender, "code-analysis");
    assert_eq!(response.recipients, ["alice"]);
    assert_eq!(response.correlation_id, Some(request.id));
    assert_eq!(response.conversation_id.as_deref(), Some("conv-1"));
    assert_eq!(response.payload["success"], true);
    assert_eq!(response.payload["agent"], "code-analysis");
    assert!(response.payload["processing_time"].as_f64().unwrap() >= 0.0);
    let markdown = response.payload["response"].as_str().unwrap();
    assert!(markdown.contains("Code Analysis Report"), "{markdown}");
    assert!(markdown.contains("B307"), "{markdown}");
}

#[tokio::test]
async fn unhandled_message_gets_a_failure_response() {
    let svc = start_service(1024 * 1024).await;
    let nats = svc.client.nats().clone();
    let mut sent = communication_agent(&nats).await;

    let request = chat("bob", "What is the weather like today?");
    assert_eq!(deliver(&nats, &request).await, json!({}));
    let response = next_response(&mut sent).await;
    assert_eq!(response.message_type, MessageType::Response);
    assert_eq!(response.recipients, ["bob"]);
    assert_eq!(response.correlation_id, Some(request.id));
    assert_eq!(response.payload["success"], false);
    assert!(
        response.payload["error"]
            .as_str()
            .unwrap()
            .contains("review")
    );

    // A review request in an unsupported language fails with the reason.
    let request = chat("bob", "please review\n```cobol\nDISPLAY 'HI'.\n```\n");
    deliver(&nats, &request).await;
    let response = next_response(&mut sent).await;
    assert_eq!(response.correlation_id, Some(request.id));
    assert_eq!(response.payload["success"], false);
    let error = response.payload["error"].as_str().unwrap();
    assert!(
        error.contains("cobol") && error.contains("python"),
        "{error}"
    );

    // A response envelope is acknowledged but never answered (no loops);
    // the next request's answer is the next thing sent.
    let mut not_a_question = request.reply("bob", json!({"success": true}));
    not_a_question.recipients = vec!["code-analysis".to_owned()];
    deliver(&nats, &not_a_question).await;
    let followup = chat("carol", "review:\n```go\nfunc f() {}\n```\n");
    deliver(&nats, &followup).await;
    let response = next_response(&mut sent).await;
    assert_eq!(response.correlation_id, Some(followup.id));
    assert_eq!(response.payload["success"], true);
}

#[tokio::test]
async fn the_seeds_security_question_is_answered_and_a_message_without_code_declined() {
    let svc = start_service(1024 * 1024).await;
    let nats = svc.client.nats().clone();
    let mut sent = communication_agent(&nats).await;

    // The seed's own request, with the seed's remaining patterns in it.
    let request = chat(
        "dana",
        "any security bugs here?\n```python\nimport subprocess\n\ndef deploy(branch):\n    subprocess.call(['git', 'checkout', branch])\n    token = input('GitHub password: ')\n    return token\n```\n",
    );
    deliver(&nats, &request).await;
    let response = next_response(&mut sent).await;
    assert_eq!(response.correlation_id, Some(request.id));
    assert_eq!(response.payload["success"], true, "{}", response.payload);
    let markdown = response.payload["response"].as_str().unwrap();
    for id in ["B603", "B607", "PY001"] {
        assert!(markdown.contains(id), "{id} missing from:\n{markdown}");
    }
    assert!(markdown.contains("getpass"), "{markdown}");

    // Other seed triggers: "performance", "bugs", "code quality", and code
    // shown by `class ` or `function ` without a fence.
    for message in [
        "Any performance problems in\nclass Cache:\n    def get(self, k):\n        return self.d[k]\n",
        "code quality of function add(a, b) { return a + b }",
        "bugs? def f(x): return eval(x)",
    ] {
        assert!(ymera_code_analysis::can_handle(message), "{message}");
    }

    // A question without code is declined politely, saying what the agent does.
    let request = chat("dana", "Can you check my security setup?");
    deliver(&nats, &request).await;
    let response = next_response(&mut sent).await;
    assert_eq!(response.correlation_id, Some(request.id));
    assert_eq!(response.payload["success"], false);
    let error = response.payload["error"].as_str().unwrap();
    assert!(error.starts_with("Sorry"), "{error}");
    assert!(error.contains("didn't find any code"), "{error}");
    assert!(error.contains("any security bugs here?"), "{error}");
    let capabilities = response.payload["capabilities"].as_array().unwrap();
    assert_eq!(
        capabilities.len(),
        ymera_code_analysis::inbox::CAPABILITIES.len()
    );
    assert!(
        capabilities
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("security"))
    );
    assert!(
        capabilities
            .iter()
            .any(|c| c.as_str().unwrap().contains("Rust"))
    );

    // Code without a question: asked what to look for.
    let request = chat("dana", "```python\nx = 1\n```\n");
    deliver(&nats, &request).await;
    let response = next_response(&mut sent).await;
    assert_eq!(response.payload["success"], false);
    let error = response.payload["error"].as_str().unwrap();
    assert!(error.contains("tell me what to look for"), "{error}");
}
