//! The send outbox (issue 15, DESIGN §11) on a real 3-node JetStream cluster: while
//! `YMERA_MESSAGES` has no leader (two of three servers killed: no quorum; or its leader
//! killed: an election), `communication.send` answers `accepted` from the PostgreSQL
//! outbox, and once a leader exists the relay hands every copy to JetStream, each
//! delivered exactly once — also with two replicas relaying the same table. A full
//! outbox answers 503 `details.outbox = "full"` and stores nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use sqlx::PgPool;
use ymera_communication::settings::CommSettings;
use ymera_communication::streams::{MESSAGES_STREAM, ensure_streams};
use ymera_core::client::ServiceClient;
use ymera_core::error::ErrorKind;
use ymera_testkit::{NatsCluster, eventually};

use crate::common::{Agent, Recipient, client, config_at, database, envelope, fast_settings, pool};

/// A short publish timeout: a leaderless send is answered after ~300 ms.
fn outbox_settings() -> CommSettings {
    CommSettings {
        publish_timeout: Duration::from_millis(300),
        ..fast_settings()
    }
}

/// One send, no retry: what the caller is answered.
async fn send_once(client: &ServiceClient, message: &Value) -> Result<Value, ymera_core::Error> {
    client.request("communication.send", message).await
}

async fn accepted(client: &ServiceClient, message: &Value) -> Value {
    let started = Instant::now();
    let reply = send_once(client, message)
        .await
        .unwrap_or_else(|err| panic!("send refused while leaderless: {err:?}"));
    assert_eq!(reply["status"], "accepted");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    reply
}

async fn outbox_ids(pool: &PgPool) -> HashSet<String> {
    sqlx::query_scalar::<_, String>("SELECT message_id FROM message_outbox")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn delivered(pool: &PgPool, recipient: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM message_deliveries WHERE recipient = $1 AND state = 'delivered'",
    )
    .bind(recipient)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Kills two of the three servers (never `keep`): no quorum, so no stream or meta leader.
fn lose_quorum(cluster: &mut NatsCluster, keep: usize) {
    for i in (0..3).filter(|i| *i != keep) {
        cluster.kill(i).unwrap();
    }
}

fn regain_quorum(cluster: &mut NatsCluster, keep: usize) {
    for i in (0..3).filter(|i| *i != keep) {
        cluster.restart(i).unwrap();
    }
}

/// Every id in `ids` reached `recipient` exactly once, and nothing else did.
async fn exactly_once(recipient: &Recipient, ids: &[String], also: usize) {
    let want: HashSet<String> = ids.iter().cloned().collect();
    eventually(
        Duration::from_secs(90),
        "every accepted id delivered",
        || async { recipient.distinct().is_superset(&want) },
    )
    .await;
    // Room for a repeat to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in ids {
        assert_eq!(recipient.count_of(id), 1, "{id} delivered more than once");
    }
    assert_eq!(recipient.count(), ids.len() + also, "deliveries");
}

/// Creates the platform's streams and returns the index of the server leading
/// `YMERA_MESSAGES`.
async fn stream_leader(cluster: &NatsCluster, settings: &CommSettings) -> usize {
    let js = jetstream::new(
        async_nats::connect(cluster.url_list()[0].as_str())
            .await
            .unwrap(),
    );
    ensure_streams(&js, settings).await.unwrap();
    let leader = js
        .get_stream(MESSAGES_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("YMERA_MESSAGES has a leader");
    cluster.index_of(&leader).unwrap()
}

async fn warm_up(client: &ServiceClient, recipient: &Recipient, name: &str) -> String {
    let reply = send_once(client, &envelope("alice", &[name], "warm-up"))
        .await
        .unwrap();
    let id = reply["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "the warm-up delivered", || async {
        recipient.count_of(&id) == 1
    })
    .await;
    id
}

/// (a) Two of three servers down: sends to a recipient with a delivery worker and to a
/// new one are accepted from the outbox; once quorum returns each copy is delivered once.
/// A resend of a waiting id is accepted as a duplicate and adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_without_a_stream_leader_are_accepted_and_delivered_once() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let url = cluster.url_list()[0].clone();
    let db = database();
    let agent = Agent::start(config_at(&url, &db), outbox_settings()).await;
    let pool = pool(&db).await;
    let client = client(&url).await;
    let known = Recipient::start(&url, "known", false).await;
    let fresh = Recipient::start(&url, "fresh", false).await;
    warm_up(&client, &known, "known").await;

    lose_quorum(&mut cluster, 0);
    let mut to_known = Vec::new();
    let mut to_fresh = Vec::new();
    for i in 0..12 {
        let reply = accepted(&client, &envelope("alice", &["known"], &format!("k{i}"))).await;
        assert_eq!(reply["duplicate"], false);
        to_known.push(reply["id"].as_str().unwrap().to_owned());
    }
    for i in 0..4 {
        let reply = accepted(&client, &envelope("alice", &["fresh"], &format!("f{i}"))).await;
        to_fresh.push(reply["id"].as_str().unwrap().to_owned());
    }
    // One message to both: two copies in one row.
    let both = envelope("alice", &["known", "fresh"], "both");
    let reply = accepted(&client, &both).await;
    let both_id = reply["id"].as_str().unwrap().to_owned();
    to_known.push(both_id.clone());
    to_fresh.push(both_id.clone());
    // The client's resend of a waiting id: accepted, a duplicate, no new row.
    let resend = accepted(&client, &both).await;
    assert_eq!(resend["id"].as_str().unwrap(), both_id);
    assert_eq!(resend["duplicate"], true);

    let waiting = outbox_ids(&pool).await;
    let all: HashSet<String> = to_known.iter().chain(&to_fresh).cloned().collect();
    assert_eq!(waiting, all, "every accepted message waits in the outbox");
    let counters = agent.comm.outbox().counters();
    assert_eq!(counters.written, 12 + 4 + 2 + 2, "copies written");
    // Nothing can be delivered without a stream leader.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(known.count(), 1, "only the warm-up");
    assert_eq!(fresh.count(), 0);

    regain_quorum(&mut cluster, 0);
    exactly_once(&known, &to_known, 1).await;
    exactly_once(&fresh, &to_fresh, 0).await;
    eventually(Duration::from_secs(10), "the outbox drained", || async {
        outbox_ids(&pool).await.is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "every copy journaled delivered",
        || async {
            delivered(&pool, "known").await == to_known.len() as i64 + 1
                && delivered(&pool, "fresh").await == to_fresh.len() as i64
        },
    )
    .await;
    let counters = agent.comm.outbox().counters();
    // A copy the surviving leader had proposed is stored once quorum returns: the relay
    // finds it in the journal and skips it (delivered once either way, checked above).
    assert_eq!(
        counters.relayed + counters.skipped,
        12 + 4 + 2,
        "each copy relayed or skipped once: {counters:?}"
    );
    assert_eq!(counters.depth, 0);
}

/// (a) kill -9 of the server leading `YMERA_MESSAGES` under steady traffic (agent,
/// senders and recipient on another server): no send waits long for the election (the
/// issue's target: recovery ≤ 5 s), and every accepted message is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_stream_leader_does_not_stall_sends() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let urls = cluster.url_list();
    let db = database();
    // Create the streams first to learn the leader, and run everything elsewhere.
    let leader = stream_leader(&cluster, &CommSettings::default()).await;
    let url = urls[(leader + 1) % 3].clone();
    let agent = Agent::start(config_at(&url, &db), CommSettings::default()).await;
    let client = client(&url).await;
    let recipient = Recipient::start(&url, "busy", false).await;
    warm_up(&client, &recipient, "busy").await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (client, stop) = (client.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut longest = Duration::ZERO;
            let mut last = Instant::now();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let message = envelope("alice", &["busy"], &format!("s{s}-{i}"));
                i += 1;
                // Resend the same id until accepted, as the contract allows.
                let id = loop {
                    match send_once(&client, &message).await {
                        Ok(reply) => break reply["id"].as_str().unwrap().to_owned(),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                longest = longest.max(last.elapsed());
                last = Instant::now();
                ids.push(id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ids, longest)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(leader).unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ids = Vec::new();
    let mut longest = Duration::ZERO;
    for sender in senders {
        let (mine, gap) = sender.await.unwrap();
        ids.extend(mine);
        longest = longest.max(gap);
    }
    eprintln!(
        "{} sends accepted; longest gap between accepts {longest:?}; outbox {:?}",
        ids.len(),
        agent.comm.outbox().counters()
    );
    assert!(
        longest <= Duration::from_secs(5),
        "sends stalled for {longest:?}"
    );
    cluster.restart(leader).unwrap();
    exactly_once(&recipient, &ids, 1).await;
}

/// (b) Two replicas of the agent write and relay the same outbox: every row is relayed by
/// one of them (rows are claimed with `FOR UPDATE SKIP LOCKED` for a lease), every copy
/// delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_relay_every_outbox_row_once() {
    const MESSAGES: usize = 150;
    let mut cluster = NatsCluster::start(3).unwrap();
    let url = cluster.url_list()[0].clone();
    let db = database();
    let first = Agent::start(config_at(&url, &db), outbox_settings()).await;
    let second = Agent::start(config_at(&url, &db), outbox_settings()).await;
    let pool = pool(&db).await;
    let client = client(&url).await;
    let recipient = Recipient::start(&url, "shared", false).await;
    warm_up(&client, &recipient, "shared").await;

    lose_quorum(&mut cluster, 0);
    let mut tasks = Vec::new();
    for s in 0..15 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..MESSAGES / 15 {
                let message = envelope("alice", &["shared"], &format!("s{s}-{i}"));
                let reply = accepted(&client, &message).await;
                ids.push(reply["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    assert_eq!(outbox_ids(&pool).await.len(), MESSAGES);
    let (a, b) = (
        first.comm.outbox().counters(),
        second.comm.outbox().counters(),
    );
    assert_eq!(a.written + b.written, MESSAGES as u64);
    assert!(
        a.written > 0 && b.written > 0,
        "both replicas took sends: {a:?} {b:?}"
    );

    regain_quorum(&mut cluster, 0);
    exactly_once(&recipient, &ids, 1).await;
    eventually(Duration::from_secs(10), "the outbox drained", || async {
        outbox_ids(&pool).await.is_empty()
    })
    .await;
    let (a, b) = (
        first.comm.outbox().counters(),
        second.comm.outbox().counters(),
    );
    eprintln!("first {a:?}, second {b:?}");
    assert_eq!(
        a.relayed + b.relayed + a.skipped + b.skipped,
        MESSAGES as u64,
        "no row relayed by both replicas"
    );
    eventually(
        Duration::from_secs(30),
        "every copy journaled delivered",
        || async { delivered(&pool, "shared").await == MESSAGES as i64 + 1 },
    )
    .await;
}

/// (c) With `COMM_OUTBOX_LIMIT` messages waiting, a new send JetStream cannot store is
/// answered 503 `details.outbox = "full"` and leaves nothing behind (no outbox row, no
/// history, no delivery); a resend of a waiting id is still accepted; once quorum returns
/// the waiting messages are delivered, and the refused one when sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_answers_503_and_stores_nothing() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let db = database();
    let settings = CommSettings {
        outbox_limit: 3,
        ..outbox_settings()
    };
    // Keep a server that does not lead YMERA_MESSAGES, so no publish is proposed while
    // quorum is lost. (With the leader kept, it holds the refused send's proposal and
    // commits it when quorum returns: a 503 is "not accepted", and a resend of the same
    // id is what the client does next — DESIGN §11.)
    let keep = (stream_leader(&cluster, &settings).await + 1) % 3;
    let url = cluster.url_list()[keep].clone();
    let agent = Agent::start(config_at(&url, &db), settings).await;
    let pool = pool(&db).await;
    let client = client(&url).await;
    let recipient = Recipient::start(&url, "patient", false).await;
    warm_up(&client, &recipient, "patient").await;

    lose_quorum(&mut cluster, keep);
    let mut ids = Vec::new();
    let mut first = None;
    for i in 0..3 {
        let message = envelope("alice", &["patient"], &format!("p{i}"));
        let reply = accepted(&client, &message).await;
        ids.push(reply["id"].as_str().unwrap().to_owned());
        first.get_or_insert(message);
    }
    let refused = envelope("alice", &["patient"], "one too many");
    let refused_id = refused["id"].as_str().unwrap().to_owned();
    let err = send_once(&client, &refused).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert_eq!(err.details["outbox"], "full", "{err:?}");
    assert_eq!(err.details["reason"], "dependency_down");
    assert_eq!(err.details["dependency"], "jetstream");
    assert_eq!(err.details["limit"], 3);
    // A resend of a waiting message is not refused: it is accepted already.
    let resend = accepted(&client, first.as_ref().unwrap()).await;
    assert_eq!(resend["duplicate"], true);
    assert_eq!(
        outbox_ids(&pool).await,
        ids.iter().cloned().collect::<HashSet<_>>()
    );
    assert_eq!(agent.comm.outbox().counters().refused, 1);
    agent.comm.journal().flush().await.unwrap();
    let history: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_history WHERE message_id = $1")
            .bind(&refused_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(history, 0, "the refused send left a history row");

    regain_quorum(&mut cluster, keep);
    exactly_once(&recipient, &ids, 1).await;
    assert_eq!(
        recipient.count_of(&refused_id),
        0,
        "the refused send was delivered"
    );
    // Sent again once JetStream is back: accepted and delivered.
    let reply = send_once(&client, &refused).await.unwrap();
    assert_eq!(reply["status"], "accepted");
    ids.push(refused_id);
    exactly_once(&recipient, &ids, 1).await;
}

/// (d) A relayed copy JetStream refuses because its recipient's backlog is full (the
/// recipient away) is
/// accepted already, so it is kept (with the refusal as its `last_error`) and relayed
/// once the backlog has room: every message delivered once, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_copy_refused_for_a_full_backlog_waits_for_room() {
    const LIMIT: u32 = 4;
    const MESSAGES: usize = 7;
    let mut cluster = NatsCluster::start(3).unwrap();
    let urls = cluster.url_list();
    let db = database();
    let settings = CommSettings {
        backlog_limit: LIMIT,
        // The recipient is away for the whole test: no copy may run out of attempts.
        max_attempts: 100_000,
        ..outbox_settings()
    };
    // Keep a server that does not lead YMERA_MESSAGES: with the leader gone there is
    // none, so every publish waits (a leader that lost its quorum would still count its
    // proposals against the backlog and refuse the sends over it at once).
    let keep = (stream_leader(&cluster, &settings).await + 1) % 3;
    let url = urls[keep].clone();
    let agent = Agent::start(config_at(&url, &db), settings).await;
    let pool = pool(&db).await;
    let client = client(&url).await;
    let mut recipient = Recipient::start(&url, "parked", false).await;
    warm_up(&client, &recipient, "parked").await;
    // The recipient away: what JetStream stores stays in its backlog, retried.
    recipient.down().await;

    lose_quorum(&mut cluster, keep);
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let reply = accepted(&client, &envelope("alice", &["parked"], &format!("b{i}"))).await;
        ids.push(reply["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(outbox_ids(&pool).await.len(), MESSAGES);
    regain_quorum(&mut cluster, keep);

    // LIMIT copies fit the backlog; the others are refused and kept.
    let refused = MESSAGES - LIMIT as usize;
    eventually(
        Duration::from_secs(60),
        "the copies over the backlog kept with the refusal",
        || async {
            let errors: Vec<Option<String>> =
                sqlx::query_scalar("SELECT last_error FROM message_outbox")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            errors.len() == refused
                && errors.iter().all(|e| {
                    e.as_deref()
                        .is_some_and(|e| e.contains("most undelivered messages"))
                })
        },
    )
    .await;
    let counters = agent.comm.outbox().counters();
    assert_eq!(counters.relayed + counters.skipped, u64::from(LIMIT));
    assert_eq!(recipient.count(), 1, "only the warm-up while away");

    recipient.up().await;
    exactly_once(&recipient, &ids, 1).await;
    eventually(Duration::from_secs(60), "the outbox drained", || async {
        outbox_ids(&pool).await.is_empty()
    })
    .await;
    let counters = agent.comm.outbox().counters();
    assert_eq!(counters.relayed + counters.skipped, MESSAGES as u64);
}
