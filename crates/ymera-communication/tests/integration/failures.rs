//! Retries, dead letters, circuit breakers and duplicate suppression.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use ymera_communication::settings::CommSettings;

use ymera_testkit::eventually;

use crate::common::{
    Agent, Recipient, client, config, database, envelope, fast_settings, nats, pool, states,
};

/// A breaker transition counter from the Prometheus text.
fn transitions(key: &str, from: &str, to: &str) -> u64 {
    let text = ymera_core::metrics::render();
    text.lines()
        .filter(|l| l.starts_with("ymera_circuit_breaker_transitions_total{"))
        .filter(|l| {
            l.contains("breaker=\"communication\"")
                && l.contains(&format!("key=\"{key}\""))
                && l.contains(&format!("from=\"{from}\""))
                && l.contains(&format!("to=\"{to}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_recipient_is_dead_lettered_and_isolated() {
    let nats = nats();
    let db = database();
    let settings = CommSettings {
        max_attempts: 3,
        breaker_failures: 3,
        breaker_open: Duration::from_millis(700),
        retry_base: Duration::from_millis(20),
        retry_cap: Duration::from_millis(100),
        ..fast_settings()
    };
    let _agent = Agent::start(config(&nats, &db), settings).await;
    let client = client(&nats.url()).await;
    let broken = Recipient::start(&nats.url(), "broken", true).await;
    let healthy = Recipient::start(&nats.url(), "healthy", false).await;
    let mut events = client
        .nats()
        .subscribe("events.communication.dead_lettered")
        .await
        .unwrap();
    client.nats().flush().await.unwrap();

    let mut broken_ids = Vec::new();
    let mut healthy_ids = Vec::new();
    for i in 0..6 {
        let env = envelope("tester", &["broken", "healthy"], &format!("both {i}"));
        let reply: Value = client.request("communication.send", &env).await.unwrap();
        broken_ids.push(reply["id"].as_str().unwrap().to_owned());
        healthy_ids.push(reply["id"].as_str().unwrap().to_owned());
    }
    for i in 0..24 {
        let env = envelope("tester", &["healthy"], &format!("only {i}"));
        let reply: Value = client.request("communication.send", &env).await.unwrap();
        healthy_ids.push(reply["id"].as_str().unwrap().to_owned());
    }

    let pool = pool(&db).await;
    eventually(
        Duration::from_secs(60),
        "broken copies dead-lettered",
        || async { states(&pool, "broken").await.get("dead_lettered").copied() == Some(6) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "healthy copies delivered",
        || async { states(&pool, "healthy").await.get("delivered").copied() == Some(30) },
    )
    .await;

    // Exactly max_attempts per copy, recorded and seen by the recipient.
    let attempts: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "SELECT message_id, attempts, last_error FROM message_deliveries WHERE recipient = 'broken'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts.len(), 6);
    for (id, n, error) in &attempts {
        assert_eq!(*n, 3, "{id}");
        assert!(
            error.as_deref().unwrap().contains("always failing"),
            "{error:?}"
        );
        assert_eq!(broken.count_of(id), 3, "{id} reached the recipient 3 times");
    }
    assert_eq!(broken.count(), 18);

    // One dead_lettered event per copy.
    let mut per_id: HashMap<String, usize> = HashMap::new();
    while per_id.values().sum::<usize>() < 6 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("dead_lettered event")
            .unwrap();
        let event: Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(event["recipient"], "broken");
        assert_eq!(event["attempts"], 3);
        *per_id
            .entry(event["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &broken_ids {
        assert_eq!(per_id.get(id), Some(&1), "{id}");
    }

    // The breaker opened; once open, the only attempts were half-open
    // probes (one per open period), so the recipient was not hammered:
    // attempts = those in flight when it opened (3..=6) + one per probe.
    let opened = transitions("broken", "closed", "open");
    let probes = transitions("broken", "open", "half_open");
    assert!(opened >= 1, "the breaker never opened");
    let outside_probes = broken.count() as u64 - probes.min(broken.count() as u64);
    assert!(
        (2..=6).contains(&outside_probes),
        "{} attempts, {probes} probes: attempts were made while the circuit was open",
        broken.count()
    );
    let metrics: Value = client
        .request("communication.metrics", &json!({}))
        .await
        .unwrap();
    let entry = metrics["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["recipient"] == "broken")
        .unwrap();
    assert_ne!(entry["breaker"], "closed");
    assert_eq!(metrics["counters"]["dead_lettered"], 6);
    assert_eq!(metrics["counters"]["failed"], 18);

    // The healthy recipient was unaffected: every copy on the first attempt.
    let healthy_attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM message_deliveries WHERE recipient = 'healthy'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(healthy_attempts.len(), 30);
    assert!(healthy_attempts.iter().all(|n| *n == 1));
    assert_eq!(healthy.distinct().len(), 30);

    // The dead letters are in YMERA_DLQ and can be replayed.
    let page: Value = client
        .request("communication.dlq.list", &json!({"recipient": "broken"}))
        .await
        .unwrap();
    let letters = page["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 6);
    assert!(
        letters
            .iter()
            .all(|l| l["attempts"] == 3 && l["recipient"] == "broken")
    );
    let status: Value = client
        .request("communication.status", &json!({"id": broken_ids[0]}))
        .await
        .unwrap();
    let copy = status["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["recipient"] == "broken")
        .unwrap();
    assert_eq!(copy["state"], "dead_lettered");
    assert_eq!(copy["attempts"], 3);
    assert_eq!(status["status"], "dead_lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_an_id_delivers_nothing_new() {
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let recipient = Recipient::start(&nats.url(), "dedupe", false).await;
    let env = envelope("tester", &["dedupe"], "once");
    let id = env["id"].as_str().unwrap().to_owned();
    let first: Value = client.request("communication.send", &env).await.unwrap();
    assert_eq!(first["duplicate"], false);
    eventually(Duration::from_secs(20), "first copy received", || async {
        recipient.count_of(&id) == 1
    })
    .await;
    let pool = pool(&db).await;
    eventually(Duration::from_secs(20), "delivered recorded", || async {
        states(&pool, "dedupe").await.get("delivered") == Some(&1)
    })
    .await;

    for _ in 0..3 {
        let again: Value = client.request("communication.send", &env).await.unwrap();
        assert_eq!(again["status"], "accepted");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["id"], id.as_str());
    }
    // A later message arrives; the resends never do.
    let later = envelope("tester", &["dedupe"], "later");
    let later_id = later["id"].as_str().unwrap().to_owned();
    let _: Value = client.request("communication.send", &later).await.unwrap();
    eventually(
        Duration::from_secs(20),
        "later message received",
        || async { recipient.count_of(&later_id) == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recipient.count_of(&id), 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM message_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    assert_eq!(agent.comm.stats().counters().deduplicated, 3);
    let status: Value = client
        .request("communication.status", &json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(status["recipients"][0]["state"], "delivered");
    assert_eq!(status["recipients"][0]["attempts"], 1);
}
