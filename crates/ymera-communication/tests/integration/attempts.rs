//! Delivery attempts (DESIGN §11, issue 15 item 4): an attempt is spent only on the
//! recipient (error reply, timeout, no responder); the platform's own faults (its NATS
//! connection down, PostgreSQL down, its own crash) spend none. The default schedule
//! spans ≥ 60 s (`settings::tests::the_default_schedule_outlasts_a_minute_of_absence`);
//! here the same shape scaled down 20×: base 100 ms, ×3, cap 3 s → the last of 5 attempts
//! comes 3.2–4.0 s after the first, and a recipient away or failing for 3 s loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use ymera_communication::settings::CommSettings;
use ymera_testkit::{Postgres, eventually};

use crate::common::*;

/// The default schedule's shape, 20× shorter; the breaker mostly out of the way (it only
/// ever defers, which spends nothing, and would hide the schedule).
fn scaled() -> CommSettings {
    CommSettings {
        rate_limit: 100_000,
        max_attempts: 5,
        retry_base: Duration::from_millis(100),
        retry_cap: Duration::from_secs(3),
        inbox_timeout: Duration::from_millis(500),
        breaker_failures: 1000,
        breaker_open: Duration::from_millis(200),
        ..CommSettings::default()
    }
}

async fn send_all(client: &ymera_core::client::ServiceClient, to: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        // Resend the same id until accepted (the agent may be reconnecting).
        let message = envelope("alice", &[to], &format!("{to}-{i}"));
        let mut tries = 0;
        let reply: Value = loop {
            match client.request("communication.send", &message).await {
                Ok(reply) => break reply,
                Err(err) => {
                    tries += 1;
                    assert!(tries < 100, "send never accepted: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        ids.push(reply["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn states(db: &str, recipient: &str) -> HashMap<String, (i64, i64)> {
    let pool = pool(db).await;
    let rows: Vec<(String, i64, Option<i32>)> = sqlx::query_as(
        "SELECT state, count(*), max(attempts) FROM message_deliveries WHERE recipient = $1 GROUP BY state",
    )
    .bind(recipient)
    .fetch_all(&pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(s, n, a)| (s, (n, i64::from(a.unwrap_or(0)))))
        .collect()
}

async fn all_delivered(recipient: &Recipient, db: &str, name: &str, ids: &[String]) {
    let want: HashSet<String> = ids.iter().cloned().collect();
    eventually(Duration::from_secs(30), "every id received", || async {
        recipient.distinct().is_superset(&want)
    })
    .await;
    eventually(Duration::from_secs(30), "every copy delivered", || async {
        states(db, name).await.get("delivered").map(|s| s.0) == Some(ids.len() as i64)
    })
    .await;
    let states = states(db, name).await;
    assert_eq!(states.len(), 1, "only delivered copies: {states:?}");
}

#[tokio::test]
async fn the_scaled_schedule_has_the_default_shape() {
    let s = scaled();
    assert!(s.shortest_schedule() >= Duration::from_millis(3200));
    let d = CommSettings::default();
    for n in 0..4 {
        assert_eq!(d.retry_ceiling(n), s.retry_ceiling(n) * 20);
    }
}

#[tokio::test]
async fn a_recipient_away_for_most_of_the_schedule_loses_nothing() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), scaled()).await;
    let client = client(&nats.url()).await;
    // Away for 3 s (60 s at the default scale) from the first send: no responders.
    let mut recipient = Recipient::start(&nats.url(), "away", false).await;
    recipient.down().await;
    let ids = send_all(&client, "away", 20).await;
    // The control: away for good (beyond the schedule) is dead-lettered after 5 attempts.
    let gone = send_all(&client, "gone", 3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    recipient.up().await;
    all_delivered(&recipient, &db, "away", &ids).await;
    eventually(
        Duration::from_secs(15),
        "the control dead-lettered",
        || async {
            states(&db, "gone").await.get("dead_lettered").map(|s| s.0) == Some(gone.len() as i64)
        },
    )
    .await;
    assert_eq!(
        states(&db, "gone").await,
        HashMap::from([("dead_lettered".to_owned(), (gone.len() as i64, 5))])
    );
}

#[tokio::test]
async fn a_recipient_failing_for_most_of_the_schedule_loses_nothing() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), scaled()).await;
    let client = client(&nats.url()).await;
    // Error replies for 3 s, then a healthy instance of the same agent.
    let failing = Recipient::start(&nats.url(), "flaky", true).await;
    let ids = send_all(&client, "flaky", 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(failing);
    let healthy = Recipient::start(&nats.url(), "flaky", false).await;
    all_delivered(&healthy, &db, "flaky", &ids).await;
    let attempts = states(&db, "flaky").await["delivered"].1;
    assert!(
        (2..=5).contains(&attempts),
        "failed attempts were counted: {attempts}"
    );
}

/// One attempt allowed: any attempt the platform spent on its own fault would
/// dead-letter a copy.
fn one_attempt() -> CommSettings {
    CommSettings {
        max_attempts: 1,
        ..scaled()
    }
}

/// A recipient that answers each copy after `delay` (so attempts are in flight when a
/// fault strikes) and records the ids it saw.
async fn slow_recipient(url: &str, name: &str, delay: Duration) -> Arc<Mutex<HashSet<String>>> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let nats = client(url).await.nats().clone();
    let mut sub = nats.subscribe(format!("agent.{name}.inbox")).await.unwrap();
    nats.flush().await.unwrap();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let (nats, seen) = (nats.clone(), seen.clone());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
                seen.lock()
                    .unwrap()
                    .insert(envelope["id"].as_str().unwrap().to_owned());
                if let Some(reply) = message.reply {
                    let _ = nats.publish(reply, Bytes::from_static(b"{}")).await;
                }
            });
        }
    });
    out
}

async fn delivered_all(db: &str, name: &str, ids: &[String], seen: &Arc<Mutex<HashSet<String>>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let states = states(db, name).await;
        if states.get("delivered").map(|s| s.0) == Some(ids.len() as i64) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all {} delivered: {states:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let states = states(db, name).await;
    assert_eq!(states.len(), 1, "only delivered copies: {states:?}");
    let seen = seen.lock().unwrap();
    assert!(ids.iter().all(|id| seen.contains(id)));
}

#[tokio::test]
async fn its_own_nats_connection_down_spends_no_attempt() {
    // A 3-server cluster: the agent on server 0, the recipient on server 1, so the recipient
    // never goes away while the agent's own server is killed with attempts in flight (the
    // agent reconnects to another server; streams are R3).
    let mut cluster = ymera_devstack::NatsCluster::start(3).unwrap();
    let urls = cluster.url_list();
    let db = database();
    let config = ymera_communication_config(&urls[0], &db);
    let settings = CommSettings {
        inbox_timeout: Duration::from_secs(5),
        ..one_attempt()
    };
    let agent = Agent::start(config, settings).await;
    let seen = slow_recipient(&urls[1], "steady", Duration::from_secs(1)).await;
    let client = client(&urls[2]).await;
    let mut ids = send_all(&client, "steady", 40).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(0).unwrap();
    ids.extend(send_all(&client, "steady", 20).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart(0).unwrap();
    delivered_all(&db, "steady", &ids, &seen).await;
    drop(agent);
}

#[tokio::test]
async fn its_own_nats_server_stalled_spends_no_attempt() {
    // SIGSTOP of the agent's nats-server for 2 s with attempts in flight: they time out
    // (500 ms), and the agent's own connection does not answer a PING either — the
    // platform's fault, so no attempt is spent (one allowed, none dead-lettered).
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), one_attempt()).await;
    let seen = slow_recipient(&nats.url(), "stalled", Duration::from_millis(300)).await;
    let client = client(&nats.url()).await;
    let ids = send_all(&client, "stalled", 40).await;
    let pid = nats.pid().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal("-CONT");
    delivered_all(&db, "stalled", &ids, &seen).await;
    assert!(
        agent.comm.stats().counters().platform_deferred > 0,
        "no attempt was caught by the stall"
    );
}

#[tokio::test]
async fn postgres_down_spends_no_attempt() {
    let nats = nats();
    let mut postgres = Postgres::start().unwrap();
    let db = postgres.create_database().unwrap();
    let _agent = Agent::start(config(&nats, &db), one_attempt()).await;
    let client = client(&nats.url()).await;
    let recipient = Recipient::start(&nats.url(), "patient", false).await;
    // Stored in JetStream while PostgreSQL is away: delivered, but the outcome cannot be
    // recorded, so each copy is tried again once it can — never dead-lettered.
    postgres.kill().unwrap();
    let ids = send_all(&client, "patient", 10).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.restart().unwrap();
    all_delivered(&recipient, &db, "patient", &ids).await;
}

#[tokio::test]
async fn its_own_crash_spends_no_attempt() {
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), one_attempt()).await;
    let client = client(&nats.url()).await;
    // A slow recipient: attempts are in flight when the agent dies.
    let seen = slow_recipient(&nats.url(), "slowpoke", Duration::from_millis(300)).await;
    let ids = send_all(&client, "slowpoke", 30).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    agent.kill();
    let _agent = Agent::start(config(&nats, &db), one_attempt()).await;
    delivered_all(&db, "slowpoke", &ids, &seen).await;
}

fn ymera_communication_config(url: &str, db: &str) -> ymera_core::config::ServiceConfig {
    let mut config = ymera_core::config::ServiceConfig::default();
    config.nats.url = url.to_owned();
    config.postgres_url = Some(db.to_owned());
    config.log_filter = "warn".into();
    config.auth = ymera_core::config::AuthMode::Off;
    config
}
