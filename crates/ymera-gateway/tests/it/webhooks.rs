//! Webhook intake across two gateway replicas, signed by the
//! `standardwebhooks` PyPI library and GitHub's scheme; refusals end up in
//! the security service's `security_events` (two security replicas).

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{Stack, venv_python};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const GITHUB_SECRET: &str = "gh-secret-for-tests";

/// Standard Webhooks headers from the reference library: (id, timestamp, signature).
fn sign(id: &str, timestamp: i64, body: &str) -> (String, String, String) {
    let script = "import sys, datetime\nfrom standardwebhooks import Webhook\n\
        ts = datetime.datetime.fromtimestamp(int(sys.argv[2]), tz=datetime.timezone.utc)\n\
        print(Webhook(sys.argv[3]).sign(sys.argv[1], ts, sys.stdin.read()))";
    let mut child = Command::new(venv_python())
        .args(["-c", script, id, &timestamp.to_string(), SECRET])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let sig = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (id.to_owned(), timestamp.to_string(), sig)
}

async fn deliver(url: &str, source: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v1/webhooks/{source}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn signed_deliveries_are_sent_once_and_refusals_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let gh_file = dir.path().join("github.secret");
    std::fs::write(&gh_file, GITHUB_SECRET).unwrap();
    let env = [("GW_TEST_WEBHOOK_SECRET", SECRET)];
    let mut stack = Stack::start(&["config", "communication"], 1, &env).await;
    stack.add_gateway(&env).await;
    let (a, b) = (stack.urls[0].clone(), stack.urls[1].clone());

    // The agent the envelopes go to: acknowledges every inbox request.
    let mut inbox = stack.client.subscribe("agent.ci-bot.inbox").await.unwrap();
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let acker = stack.client.clone();
    tokio::spawn(async move {
        while let Some(msg) = inbox.next().await {
            if let Some(reply) = msg.reply.clone() {
                let _ = acker.publish(reply, "{}".into()).await;
            }
            let _ = tx.send(serde_json::from_slice(&msg.payload).unwrap_or(Value::Null));
        }
    });
    let mut refusals = stack
        .client
        .subscribe("events.security.webhook_refused")
        .await
        .unwrap();

    // The sources, in the config manager.
    let config = json!({"webhooks": {
        "billing": {"kind": "standard", "secret_env": "GW_TEST_WEBHOOK_SECRET", "agent": "ci-bot"},
        "github": {"kind": "github", "secret_file": gh_file.display().to_string(), "agent": "ci-bot", "subject": "github.push"},
    }});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-API-Key", stack.admin.as_str());
    let set = json!({"agent": "gateway", "environment": "base", "config": config});
    let reply = stack
        .client
        .request_with_headers("config.set", headers, set.to_string().into())
        .await
        .unwrap();
    assert!(
        reply.headers.is_none(),
        "{}",
        String::from_utf8_lossy(&reply.payload)
    );
    // Both replicas follow the change.
    for url in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while deliver(url, "billing", &[], "{}").await.0 == 404 {
            assert!(
                std::time::Instant::now() < deadline,
                "{url} never saw the sources"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Those probes were refusals (missing headers); drain (and count) their events.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0usize;
    while tokio::time::timeout(Duration::from_millis(50), refusals.next())
        .await
        .is_ok()
    {
        refused += 1;
    }
    // A second security replica: the refusals are stored once, not once per replica.
    let mut security_env = stack.servers.env();
    security_env.push(("YMERA_SERVICE_API_KEY", stack.admin.as_str()));
    stack
        .services
        .push(crate::common::spawn("security", &security_env));
    if let Some(replica) = stack.services.last() {
        replica
            .wait_healthy(&stack.client, crate::common::HEALTH_TIMEOUT)
            .await
            .unwrap();
    }

    // A signed delivery: 202 after communication.send accepted it.
    let body = json!({"type": "invoice.paid", "amount": 12, "note": "Grüße 🎉"}).to_string();
    let (id, ts, sig) = sign("msg_gateway_test_1", now(), &body);
    let signed = [
        ("webhook-id", id.as_str()),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let (status, reply) = deliver(&a, "billing", &signed, &body).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["duplicate"], false);
    // The same delivery again, to the other replica: accepted once.
    let (status, reply) = deliver(&b, "billing", &signed, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["duplicate"], true);
    let (status, _) = deliver(&a, "billing", &signed, &body).await;
    assert_eq!(status, 200);

    let envelope = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(envelope["type"], "event", "{envelope}");
    assert_eq!(envelope["subject"], "webhook.billing");
    assert_eq!(envelope["payload"]["event"], "invoice.paid");
    assert_eq!(envelope["payload"]["body"]["note"], "Grüße 🎉");
    assert_eq!(envelope["payload"]["webhook_id"], "msg_gateway_test_1");

    // GitHub's scheme.
    let gh_body = json!({"ref": "refs/heads/main", "commits": []}).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(gh_body.as_bytes());
    let gh_sig = format!(
        "sha256={}",
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let gh = [
        ("X-Hub-Signature-256", gh_sig.as_str()),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-GitHub-Event", "push"),
    ];
    let (status, reply) = deliver(&b, "github", &gh, &gh_body).await;
    assert_eq!(status, 202, "{reply}");
    let envelope = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(envelope["subject"], "github.push");
    assert_eq!(envelope["payload"]["event"], "push");

    // Refusals: each a clear error and a security event; nothing sent.
    let stale = sign("msg_stale", now() - 600, &body);
    let future = sign("msg_future", now() + 600, &body);
    let other = sign("msg_other", now(), "{\"tampered\":true}");
    let not_json = sign("msg_not_json", now(), "not json");
    let big_body = format!("{{\"x\":\"{}\"}}", "y".repeat(2 * 1024 * 1024));
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "billing",
            vec![
                ("webhook-id", stale.0.clone()),
                ("webhook-timestamp", stale.1.clone()),
                ("webhook-signature", stale.2.clone()),
            ],
            body.clone(),
            401,
            "stale_timestamp",
        ),
        (
            "billing",
            vec![
                ("webhook-id", future.0.clone()),
                ("webhook-timestamp", future.1.clone()),
                ("webhook-signature", future.2.clone()),
            ],
            body.clone(),
            401,
            "stale_timestamp",
        ),
        (
            "billing",
            vec![
                ("webhook-id", other.0.clone()),
                ("webhook-timestamp", other.1.clone()),
                ("webhook-signature", other.2.clone()),
            ],
            body.clone(),
            401,
            "bad_signature",
        ),
        (
            "billing",
            vec![
                ("webhook-id", not_json.0.clone()),
                ("webhook-timestamp", not_json.1.clone()),
                ("webhook-signature", not_json.2.clone()),
            ],
            "not json".to_owned(),
            400,
            "malformed_json",
        ),
        ("billing", vec![], body.clone(), 401, "missing_headers"),
        (
            "github",
            vec![
                ("X-Hub-Signature-256", "sha256=00".to_owned()),
                ("X-GitHub-Delivery", "d2".to_owned()),
            ],
            gh_body.clone(),
            401,
            "bad_signature",
        ),
        ("nope", vec![], body.clone(), 404, "unknown_source"),
        ("billing", vec![], big_body, 413, "payload_too_large"),
    ];
    let count = cases.len();
    for (source, headers, body, want, reason) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, reply) = deliver(&a, source, &headers, &body).await;
        assert_eq!(status, want, "{source} {reason}: {reply}");
        assert_eq!(reply["error"]["details"]["reason"], reason, "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    for _ in 0..count {
        let event = tokio::time::timeout(Duration::from_secs(5), refusals.next())
            .await
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(event["event_type"], "webhook_refused");
    }
    refused += count;
    // Every refusal is a row of security_events (the security service's
    // consumer of YMERA_EVENTS), counted by security.events.report — once,
    // with two security replicas.
    let report = || async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-API-Key", stack.admin.as_str());
        let reply = stack
            .client
            .request_with_headers("security.events.report", headers, "{}".into())
            .await
            .unwrap();
        let report: Value = serde_json::from_slice(&reply.payload).unwrap();
        report["event_breakdown"]["webhook_refused"]
            .as_u64()
            .unwrap_or(0) as usize
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut stored = report().await;
    while stored < refused && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stored = report().await;
    }
    assert_eq!(stored, refused, "webhook refusals in security_events");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(report().await, refused, "stored once");
    // Nothing else reached the agent.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), received.recv())
            .await
            .is_err()
    );
}
