//! Status, history, conversations, metrics, retention and DLQ replay.

use std::time::Duration;

use serde_json::{Value, json};
use ymera_communication::settings::CommSettings;

use ymera_testkit::eventually;

use crate::common::{
    Agent, Recipient, client, config, database, envelope, fast_settings, nats, pool, states,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_history_conversations_and_metrics() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let _alice = Recipient::start(&nats.url(), "alice", false).await;
    let _bob = Recipient::start(&nats.url(), "bob", false).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        let mut env = envelope(from, &[to], &format!("topic {i}"));
        env["conversation_id"] = json!("conv-1");
        let reply: Value = client.request("communication.send", &env).await.unwrap();
        assert_eq!(reply["recipients"], json!([to]));
        ids.push(reply["id"].as_str().unwrap().to_owned());
    }
    // An envelope without an id gets a UUID v7.
    let mut anonymous = envelope("carol", &["alice", "bob"], "no id");
    anonymous.as_object_mut().unwrap().remove("id");
    let reply: Value = client
        .request("communication.send", &anonymous)
        .await
        .unwrap();
    let assigned: uuid::Uuid = reply["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(assigned.get_version_num(), 7);

    let pool = pool(&db).await;
    eventually(Duration::from_secs(30), "all delivered", || async {
        states(&pool, "alice").await.get("delivered") == Some(&2)
            && states(&pool, "bob").await.get("delivered") == Some(&3)
    })
    .await;

    let status: Value = client
        .request("communication.status", &json!({"id": assigned}))
        .await
        .unwrap();
    assert_eq!(status["status"], "delivered");
    assert_eq!(status["sender"], "carol");
    let copies = status["recipients"].as_array().unwrap();
    assert_eq!(copies.len(), 2);
    for copy in copies {
        assert_eq!(copy["state"], "delivered");
        assert_eq!(copy["attempts"], 1);
        assert!(copy["first_attempt_at"].is_string());
        assert!(copy["last_attempt_at"].is_string());
        assert!(copy["latency_ms"].as_f64().unwrap() >= 0.0);
    }

    // History: filters and cursor pagination.
    let page: Value = client
        .request(
            "communication.history",
            &json!({"conversation_id": "conv-1", "limit": 2}),
        )
        .await
        .unwrap();
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(page["messages"][0]["id"], ids[2].as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2: Value = client
        .request(
            "communication.history",
            &json!({"conversation_id": "conv-1", "limit": 2, "cursor": cursor}),
        )
        .await
        .unwrap();
    assert_eq!(page2["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page2["messages"][0]["id"], ids[0].as_str());
    assert!(page2["next_cursor"].is_null());
    let from_bob: Value = client
        .request("communication.history", &json!({"sender": "bob"}))
        .await
        .unwrap();
    assert_eq!(from_bob["messages"].as_array().unwrap().len(), 1);
    let to_alice: Value = client
        .request("communication.history", &json!({"recipient": "alice"}))
        .await
        .unwrap();
    assert_eq!(to_alice["messages"].as_array().unwrap().len(), 2);
    let future: Value = client
        .request(
            "communication.history",
            &json!({"since": "2999-01-01T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert!(future["messages"].as_array().unwrap().is_empty());
    assert_eq!(to_alice["messages"][0]["status"], "delivered");

    // Conversations.
    let convs: Value = client
        .request(
            "communication.conversations",
            &json!({"participant": "alice"}),
        )
        .await
        .unwrap();
    let list = convs["conversations"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["conversation_id"], "conv-1");
    assert_eq!(list[0]["message_count"], 3);
    assert_eq!(list[0]["participants"], json!(["alice", "bob"]));
    assert_eq!(list[0]["topic"], "topic 0");

    // Metrics as JSON and on /metrics.
    let metrics: Value = client
        .request("communication.metrics", &json!({}))
        .await
        .unwrap();
    assert_eq!(metrics["counters"]["sent"], 4);
    assert_eq!(metrics["counters"]["delivered"], 5);
    assert_eq!(metrics["delivery_latency"]["count"], 5);
    assert!(metrics["delivery_latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(metrics["backlog_capacity"], 10_000);
    let recipients = metrics["recipients"].as_array().unwrap();
    assert!(
        recipients
            .iter()
            .any(|r| r["recipient"] == "alice" && r["breaker"] == "closed")
    );
    let text = ymera_core::metrics::render();
    for name in [
        "ymera_comm_messages_sent_total",
        "ymera_comm_messages_delivered_total",
        "ymera_comm_delivery_latency_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }

    // Retention: everything older than "now" moves to the archive.
    let moved = ymera_communication::journal::archive_older_than(&pool, Duration::ZERO, 1000)
        .await
        .unwrap();
    assert_eq!(moved, 4);
    let left: Value = client
        .request("communication.history", &json!({}))
        .await
        .unwrap();
    assert!(left["messages"].as_array().unwrap().is_empty());
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM message_history_archive")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(archived, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_replayed() {
    let nats = nats();
    let db = database();
    let settings = CommSettings {
        max_attempts: 2,
        ..fast_settings()
    };
    let _agent = Agent::start(config(&nats, &db), settings).await;
    let client = client(&nats.url()).await;
    let env = envelope("tester", &["sleepy"], "wake up");
    let id = env["id"].as_str().unwrap().to_owned();
    let _: Value = client.request("communication.send", &env).await.unwrap();
    let pool = pool(&db).await;
    eventually(
        Duration::from_secs(30),
        "dead-lettered (nobody listens)",
        || async { states(&pool, "sleepy").await.get("dead_lettered") == Some(&1) },
    )
    .await;
    let recipient = Recipient::start(&nats.url(), "sleepy", false).await;
    let replay: Value = client
        .request("communication.dlq.replay", &json!({"recipient": "sleepy"}))
        .await
        .unwrap();
    assert_eq!(replay["replayed"], 1);
    eventually(
        Duration::from_secs(30),
        "replayed copy delivered",
        || async {
            recipient.count_of(&id) == 1
                && states(&pool, "sleepy").await.get("delivered") == Some(&1)
        },
    )
    .await;
    let page: Value = client
        .request("communication.dlq.list", &json!({"recipient": "sleepy"}))
        .await
        .unwrap();
    assert!(page["dead_letters"].as_array().unwrap().is_empty());
}
