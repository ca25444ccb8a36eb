//! Acceptance: every accepted message reaches its recipient and ends
//! `delivered` while, in turn, the recipient, nats-server (kill -9) and the
//! communication agent itself (runtime dropped) go down mid-run: the
//! issue's 10,000 messages per scenario, the recipient down for 5 s.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ymera_core::client::ServiceClient;

use ymera_testkit::eventually;

use crate::common::{
    Agent, Recipient, client, config, database, envelope, fast_settings, nats, pool,
    send_until_accepted, states,
};

/// Messages per scenario (3 scenarios: 30,000 in all).
const MESSAGES: usize = 10_000;
/// Concurrent senders (a divisor of `MESSAGES`).
const SENDERS: usize = 40;

async fn send_many(
    client: ServiceClient,
    recipient: &'static str,
    progress: Arc<AtomicUsize>,
) -> HashSet<String> {
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (client, progress) = (client.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..MESSAGES / SENDERS {
                let env = envelope(&format!("sender-{s}"), &[recipient], &format!("m{s}-{i}"));
                ids.push(send_until_accepted(&client, &env).await);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

async fn wait_progress(progress: &AtomicUsize, at_least: usize) {
    eventually(Duration::from_secs(120), "senders progress", || async {
        progress.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

/// The fault must hit mid-run, not after the last send.
fn assert_mid_run(progress: &AtomicUsize) {
    let sent = progress.load(Ordering::Relaxed);
    assert!(sent < MESSAGES, "the fault came after every send ({sent})");
    eprintln!("fault injected after {sent} of {MESSAGES} sends");
}

async fn assert_all_delivered(
    recipient: &Recipient,
    name: &str,
    db: &str,
    accepted: &HashSet<String>,
) {
    assert_eq!(accepted.len(), MESSAGES);
    eventually(
        Duration::from_secs(120),
        "every accepted id received",
        || async { recipient.distinct().is_superset(accepted) },
    )
    .await;
    assert_eq!(
        &recipient.distinct(),
        accepted,
        "received ids = accepted ids"
    );
    let pool = pool(db).await;
    eventually(
        Duration::from_secs(120),
        "every copy recorded delivered",
        || async { states(&pool, name).await.get("delivered").copied() == Some(MESSAGES as i64) },
    )
    .await;
    let states = states(&pool, name).await;
    assert_eq!(states.len(), 1, "only delivered copies: {states:?}");
    // The stored overall status follows (the settler writes it in bulk).
    eventually(Duration::from_secs(30), "every message's stored status delivered", || async {
        let statuses: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM message_history WHERE status = 'delivered' AND recipients @> jsonb_build_array($1::text)",
        )
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
        statuses == MESSAGES as i64
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipient_outage_loses_nothing() {
    let nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let mut recipient = Recipient::start(&nats.url(), "outage-recipient", false).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(send_many(client, "outage-recipient", progress.clone()));
    wait_progress(&progress, MESSAGES / 3).await;
    recipient.down().await;
    assert_mid_run(&progress);
    tokio::time::sleep(Duration::from_secs(5)).await;
    recipient.up().await;
    let accepted = sender.await.unwrap();
    assert_all_delivered(&recipient, "outage-recipient", &db, &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_crash_loses_nothing() {
    let mut nats = nats();
    let db = database();
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let recipient = Recipient::start(&nats.url(), "crash-nats", false).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(send_many(client, "crash-nats", progress.clone()));
    wait_progress(&progress, MESSAGES / 3).await;
    nats.kill().unwrap();
    assert_mid_run(&progress);
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().unwrap();
    let accepted = sender.await.unwrap();
    assert_all_delivered(&recipient, "crash-nats", &db, &accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_crash_loses_nothing() {
    let nats = nats();
    let db = database();
    let agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let client = client(&nats.url()).await;
    let recipient = Recipient::start(&nats.url(), "crash-agent", false).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(send_many(client, "crash-agent", progress.clone()));
    wait_progress(&progress, MESSAGES / 3).await;
    agent.kill();
    assert_mid_run(&progress);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _agent = Agent::start(config(&nats, &db), fast_settings()).await;
    let accepted = sender.await.unwrap();
    assert_all_delivered(&recipient, "crash-agent", &db, &accepted).await;
}
