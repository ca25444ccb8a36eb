//! Agent cards (`communication.agents.*`) and `skill:` routing against real
//! nats-server (per-message TTL in the KV bucket) and PostgreSQL.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::*;
use ymera_testkit::eventually;
use ymera_testkit::proto::{assert_refused, assert_valid, exchange};

async fn call(nats: &async_nats::Client, endpoint: &str, request: Value) -> Value {
    exchange(
        nats,
        "communication",
        &format!("agents.{endpoint}"),
        request,
    )
    .await
}

/// The error body of a refused request (any endpoint).
async fn refusal(nats: &async_nats::Client, subject: &str, body: Bytes) -> (String, Value) {
    let reply = nats.request(subject.to_owned(), body).await.unwrap();
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| panic!("{subject} accepted: {:?}", reply.payload));
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_valid("error.schema.json", &body);
    (code, body)
}

fn card(name: &str, skills: &[&str], ttl_s: u32) -> Value {
    json!({
        "name": name,
        "description": format!("{name} test agent"),
        "version": "1.0.0",
        "skills": skills.iter().map(|s| json!({"id": s, "name": s, "description": "", "tags": ["t"], "examples": ["e"]})).collect::<Vec<_>>(),
        "input_modes": ["application/json"],
        "output_modes": ["text/markdown"],
        "ttl_s": ttl_s,
    })
}

fn names(list: &Value) -> Vec<String> {
    list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn cards_register_list_heartbeat_and_deregister() {
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    let _reviewer = Recipient::start(&nats.url(), "reviewer", false).await;

    let registered = call(&raw, "register", card("reviewer", &["code_review"], 60)).await;
    assert_eq!(registered["status"], "registered");
    call(&raw, "register", card("writer", &["drafting"], 60)).await;
    let list = call(&raw, "list", Value::Null).await;
    assert_eq!(names(&list), ["reviewer", "writer"]);
    let only = call(&raw, "list", json!({"skill": "code_review"})).await;
    assert_eq!(names(&only), ["reviewer"]);

    // Traffic shows on the card: delivered count, latency, backlog.
    for i in 0..3 {
        client
            .request::<_, Value>(
                "communication.send",
                &envelope("alice", &["reviewer"], &format!("m{i}")),
            )
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "deliveries on the card", || {
        let raw = raw.clone();
        async move {
            let view = call(&raw, "get", json!({"name": "reviewer"})).await;
            view["delivery"]["delivered"] == 3
        }
    })
    .await;
    let view = call(&raw, "get", json!({"name": "reviewer"})).await;
    assert_eq!(view["live"], true);
    assert_eq!(view["backlog"], 0);
    assert_eq!(view["skills"][0]["id"], "code_review");
    assert!(view["delivery"]["mean_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(view["metrics"].is_null());

    // The heartbeat carries the agent's own metrics.
    let beat = call(
        &raw,
        "heartbeat",
        json!({"name": "reviewer", "metrics": {"requests_handled": 3, "processing_time_ms": 12.5,
               "avg_processing_time_ms": 4.2, "errors": 1, "state": "idle"}}),
    )
    .await;
    assert_eq!(beat["status"], "refreshed");
    let view = call(&raw, "get", json!({"name": "reviewer"})).await;
    assert_eq!(view["metrics"]["requests_handled"], 3);
    assert_eq!(view["metrics"]["state"], "idle");
    // Re-registering keeps the first registration time and the metrics.
    call(&raw, "register", card("reviewer", &["code_review"], 60)).await;
    let again = call(&raw, "get", json!({"name": "reviewer"})).await;
    assert_eq!(again["registered_at"], view["registered_at"]);
    assert_eq!(again["metrics"]["errors"], 1);

    // Two replicas naming their instance: the card shows the sum of their last reports,
    // and a replica's newer report replaces only its own.
    for (instance, handled, ms, state) in [
        ("replica-a", 10, 30.0, "idle"),
        ("replica-b", 5, 20.0, "processing"),
        ("replica-a", 12, 40.0, "idle"),
    ] {
        call(
            &raw,
            "heartbeat",
            json!({"name": "reviewer", "instance": instance,
                   "metrics": {"requests_handled": handled, "processing_time_ms": ms,
                               "avg_processing_time_ms": 1.0, "errors": 1, "state": state}}),
        )
        .await;
    }
    let summed = call(&raw, "get", json!({"name": "reviewer"})).await;
    assert_eq!(summed["metrics"]["requests_handled"], 17);
    assert_eq!(summed["metrics"]["errors"], 2);
    assert_eq!(summed["metrics"]["processing_time_ms"], 60.0);
    assert_eq!(summed["metrics"]["avg_processing_time_ms"], 3.529);
    assert_eq!(summed["metrics"]["state"], "processing");
    assert_refused(
        &raw,
        "communication",
        "agents.heartbeat",
        json!({"name": "reviewer", "instance": "has space"}),
        "validation_failed",
    )
    .await;

    let gone = call(&raw, "deregister", json!({"name": "writer"})).await;
    assert_eq!(gone["deregistered"], true);
    assert_eq!(names(&call(&raw, "list", json!({})).await), ["reviewer"]);
    assert_refused(
        &raw,
        "communication",
        "agents.get",
        json!({"name": "writer"}),
        "not_found",
    )
    .await;
    drop(agent);
}

#[tokio::test]
async fn bad_cards_are_refused_and_change_nothing() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    call(&raw, "register", card("keeper", &["keep"], 60)).await;
    let before = call(&raw, "get", json!({"name": "keeper"})).await;

    // Over the size limit: 413.
    let mut big = card("keeper", &["keep"], 60);
    big["description"] = json!("x".repeat(900));
    big["skills"][0]["examples"] = json!(vec!["y".repeat(900); 20]);
    let (code, body) = refusal(
        &raw,
        "communication.agents.register",
        Bytes::from(big.to_string()),
    )
    .await;
    assert_eq!(code, "413", "{body}");
    // Malformed: not JSON, unknown field → 400.
    let (code, _) = refusal(&raw, "communication.agents.register", "{nope".into()).await;
    assert_eq!(code, "400");
    let mut extra = card("keeper", &["keep"], 60);
    extra["owner"] = json!("mallory");
    let (code, _) = refusal(
        &raw,
        "communication.agents.register",
        Bytes::from(extra.to_string()),
    )
    .await;
    assert_eq!(code, "400");
    // Rules: every violation listed, 422.
    let bad = json!({"name": "Keeper!", "ttl_s": 1, "skills": [{"id": "BAD ID"}]});
    let (code, body) = refusal(
        &raw,
        "communication.agents.register",
        Bytes::from(bad.to_string()),
    )
    .await;
    assert_eq!(code, "422");
    let text = body.to_string();
    for path in ["/name", "/ttl_s", "/skills/0/id"] {
        assert!(text.contains(path), "{path} missing in {text}");
    }
    // Heartbeat / deregister of an unknown agent: 404.
    let (code, body) = refusal(
        &raw,
        "communication.agents.heartbeat",
        Bytes::from(json!({"name": "ghost"}).to_string()),
    )
    .await;
    assert_eq!(code, "404");
    assert_eq!(body["error"]["code"], "not_found");
    let (code, _) = refusal(
        &raw,
        "communication.agents.deregister",
        Bytes::from(json!({"name": "ghost"}).to_string()),
    )
    .await;
    assert_eq!(code, "404");
    // Bad metrics in a heartbeat: 422.
    let (code, _) = refusal(
        &raw,
        "communication.agents.heartbeat",
        Bytes::from(json!({"name": "keeper", "metrics": {"processing_time_ms": -1}}).to_string()),
    )
    .await;
    assert_eq!(code, "422");

    let list = call(&raw, "list", Value::Null).await;
    assert_eq!(names(&list), ["keeper"]);
    let after = call(&raw, "get", json!({"name": "keeper"})).await;
    assert_eq!(after["description"], before["description"]);
    assert_eq!(after["expires_at"], before["expires_at"]);
}

#[tokio::test]
async fn a_dead_agent_disappears_within_its_ttl() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    call(&raw, "register", card("mayfly", &["short"], 5)).await;
    call(&raw, "register", card("steady", &["short"], 60)).await;
    let registered = Instant::now();
    // A heartbeat keeps `steady`; `mayfly` never beats again.
    eventually(Duration::from_secs(10), "mayfly expired", || {
        let raw = raw.clone();
        async move { names(&call(&raw, "list", Value::Null).await) == ["steady"] }
    })
    .await;
    let elapsed = registered.elapsed();
    assert!(
        elapsed >= Duration::from_secs(4),
        "gone too early: {elapsed:?}"
    );
    assert!(elapsed <= Duration::from_secs(7), "gone late: {elapsed:?}");
    // And from the bucket itself (the server's per-message TTL), not only from the view.
    let js = async_nats::jetstream::new(raw.clone());
    let kv = js.get_key_value("YMERA_AGENTS").await.unwrap();
    eventually(Duration::from_secs(5), "the entry removed", || {
        let kv = kv.clone();
        async move { kv.get("mayfly").await.unwrap().is_none() }
    })
    .await;
    let (code, _) = refusal(
        &raw,
        "communication.agents.heartbeat",
        Bytes::from(json!({"name": "mayfly"}).to_string()),
    )
    .await;
    assert_eq!(code, "404");
}

async fn send(client: &ymera_core::client::ServiceClient, envelope: &Value) -> Value {
    client
        .request::<_, Value>("communication.send", envelope)
        .await
        .unwrap()
}

#[tokio::test]
async fn skill_recipients_resolve_to_live_agents_by_backlog_then_in_turn() {
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    let one = Recipient::start(&nats.url(), "rev-one", false).await;
    let two = Recipient::start(&nats.url(), "rev-two", false).await;
    call(&raw, "register", card("rev-one", &["review"], 60)).await;
    call(&raw, "register", card("rev-two", &["review", "triage"], 60)).await;
    call(&raw, "register", card("writer", &["prose"], 60)).await;

    // Ties spread over both; the reply and the history name the agent chosen.
    let mut chosen = Vec::new();
    for i in 0..20 {
        let reply = send(
            &client,
            &envelope("alice", &["skill:review"], &format!("r{i}")),
        )
        .await;
        assert_valid("communication/send.reply.schema.json", &reply);
        let agent = reply["recipients"][0].as_str().unwrap().to_owned();
        assert_eq!(reply["resolved"][0]["recipient"], "skill:review");
        assert_eq!(reply["resolved"][0]["agent"], agent.as_str());
        chosen.push(agent);
    }
    let ones = chosen.iter().filter(|a| *a == "rev-one").count();
    assert!((5..=15).contains(&ones), "rev-one got {ones} of 20");
    eventually(Duration::from_secs(10), "all delivered", || {
        let (one, two) = (one.inbox.clone(), two.inbox.clone());
        async move { one.lock().unwrap().ids.len() + two.lock().unwrap().ids.len() == 20 }
    })
    .await;
    let history: Value = client
        .request(
            "communication.history",
            &json!({"sender": "alice", "recipient": "rev-one"}),
        )
        .await
        .unwrap();
    assert_valid("communication/history.reply.schema.json", &history);
    assert_eq!(history["messages"].as_array().unwrap().len(), ones);
    // Each row names the resolved agent and the skill that was asked for.
    for message in history["messages"].as_array().unwrap() {
        assert_eq!(message["recipients"], json!(["rev-one"]));
        assert_eq!(
            message["resolved"],
            json!([{"recipient": "skill:review", "agent": "rev-one"}]),
            "{message}"
        );
        assert_eq!(
            message["metadata"]["ymera.resolved.skill:review"], "rev-one",
            "{message}"
        );
    }
    // A send naming its recipient records no resolution.
    send(&client, &envelope("dave", &["rev-one"], "named")).await;
    let named: Value = client
        .request("communication.history", &json!({"sender": "dave"}))
        .await
        .unwrap();
    assert_valid("communication/history.reply.schema.json", &named);
    assert_eq!(named["messages"][0]["resolved"], json!([]));
    // A skill resolving to an agent already named gives one copy.
    let both = send(
        &client,
        &envelope("alice", &["rev-two", "skill:triage"], "once"),
    )
    .await;
    assert_eq!(both["recipients"], json!(["rev-two"]));

    // No live agent with the skill: 422 no_capable_agent with the live agents; nothing stored.
    let (code, body) = refusal(
        &raw,
        "communication.send",
        Bytes::from(envelope("carol", &["skill:translation"], "x").to_string()),
    )
    .await;
    assert_eq!(code, "422");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["details"]["reason"], "no_capable_agent");
    let live: Vec<&str> = body["error"]["details"]["live_agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["rev-one", "rev-two", "writer"]);
    for bad in ["skill:", "skill:Bad Skill"] {
        let (code, body) = refusal(
            &raw,
            "communication.send",
            Bytes::from(envelope("carol", &[bad], "x").to_string()),
        )
        .await;
        assert_eq!(code, "422", "{bad}: {body}");
        assert!(body.to_string().contains("/recipients/0"), "{body}");
    }
    // The resolution keys are the platform's: a sender writing one is refused (422).
    let mut forged = envelope("carol", &["rev-one"], "x");
    forged["metadata"] = json!({"ymera.resolved.skill:review": "rev-two"});
    let (code, body) = refusal(&raw, "communication.send", Bytes::from(forged.to_string())).await;
    assert_eq!(code, "422", "{body}");
    assert!(
        body.to_string()
            .contains("/metadata/ymera.resolved.skill:review"),
        "{body}"
    );
    let carol: Value = client
        .request("communication.history", &json!({"sender": "carol"}))
        .await
        .unwrap();
    assert_eq!(carol["messages"], json!([]));
    drop(agent);
}

#[tokio::test]
async fn least_backlog_wins_and_a_dead_agent_is_no_longer_chosen() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    let _ok = Recipient::start(&nats.url(), "fine", false).await;
    // `stuck` has a card but no inbox: its copies pile up.
    call(&raw, "register", card("fine", &["triage"], 60)).await;
    call(&raw, "register", card("stuck", &["triage"], 5)).await;
    for i in 0..30 {
        send(
            &client,
            &envelope("alice", &["skill:triage"], &format!("a{i}")),
        )
        .await;
    }
    eventually(Duration::from_secs(10), "stuck's backlog seen", || {
        let raw = raw.clone();
        async move {
            call(&raw, "get", json!({"name": "stuck"})).await["backlog"]
                .as_u64()
                .unwrap()
                >= 11
        }
    })
    .await;
    // Let the agent's 2-s backlog poll see it too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..10 {
        let reply = send(
            &client,
            &envelope("alice", &["skill:triage"], &format!("b{i}")),
        )
        .await;
        assert_eq!(reply["recipients"], json!(["fine"]), "send {i}");
    }
    // Its card lapses (ttl 5 s): then every send goes to `fine`, whatever the backlog.
    eventually(Duration::from_secs(10), "stuck lapsed", || {
        let raw = raw.clone();
        async move { names(&call(&raw, "list", json!({"skill": "triage"})).await) == ["fine"] }
    })
    .await;
    for i in 0..20 {
        let reply = send(
            &client,
            &envelope("alice", &["skill:triage"], &format!("c{i}")),
        )
        .await;
        assert_eq!(reply["recipients"], json!(["fine"]));
    }
}

#[tokio::test]
async fn two_replicas_resolve_a_resend_to_the_same_agent() {
    let nats = nats();
    let db = database();
    let first = Agent::start(config(&nats, &db), fast_settings()).await;
    let second = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let raw = client.nats().clone();
    let _a = Recipient::start(&nats.url(), "twin-a", false).await;
    let _b = Recipient::start(&nats.url(), "twin-b", false).await;
    call(&raw, "register", card("twin-a", &["pair"], 60)).await;
    call(&raw, "register", card("twin-b", &["pair"], 60)).await;
    // Both replicas follow the bucket.
    for agent in [&first, &second] {
        let registry = agent.comm.agents().unwrap().clone();
        eventually(Duration::from_secs(5), "cards seen by the replica", || {
            let registry = registry.clone();
            async move { registry.capable("pair", chrono::Utc::now()).len() == 2 }
        })
        .await;
    }
    for i in 0..10 {
        let message = envelope("alice", &["skill:pair"], &format!("p{i}"));
        let envelope_value = message.clone();
        let by_first = ymera_communication::send::send(
            &first.comm,
            serde_json::from_value(envelope_value.clone()).unwrap(),
        )
        .await
        .unwrap();
        let by_second = ymera_communication::send::send(
            &second.comm,
            serde_json::from_value(envelope_value).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(by_first.recipients, by_second.recipients, "message {i}");
        assert!(
            by_second.duplicate,
            "message {i}: the resend stored nothing new"
        );
    }
}
