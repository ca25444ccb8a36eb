//! Shared helpers: real servers, the agent in its own tokio runtime (so a
//! test can crash it), and scripted recipient agents.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use ymera_communication::settings::CommSettings;
use ymera_communication::{Communication, service};
use ymera_core::client::ServiceClient;
use ymera_core::config::ServiceConfig;
use ymera_core::runtime::Runtime;
use ymera_testkit::{NatsServer, shared_postgres, wait_until_serving};

/// A fresh database on the binary's shared PostgreSQL cluster.
pub fn database() -> String {
    shared_postgres()
        .create_database()
        .expect("create database")
}

/// nats-server with an 8 MiB max_payload (so the agent's own 1 MiB limit is what refuses).
pub use ymera_testkit::nats_large_payload as nats;

/// Settings for fast tests: quick retries and probes, a generous rate limit.
pub fn fast_settings() -> CommSettings {
    CommSettings {
        rate_limit: 100_000,
        max_attempts: 50,
        retry_base: Duration::from_millis(50),
        retry_cap: Duration::from_millis(500),
        inbox_timeout: Duration::from_millis(1000),
        breaker_failures: 5,
        breaker_open: Duration::from_millis(500),
        ..CommSettings::default()
    }
}

pub fn config(nats: &NatsServer, db: &str) -> ServiceConfig {
    config_at(&nats.url(), db)
}

/// [`config`] for a server (or cluster member) given by its URL.
pub fn config_at(url: &str, db: &str) -> ServiceConfig {
    let mut config = ServiceConfig::default();
    config.nats.url = url.to_owned();
    config.postgres_url = Some(db.to_owned());
    config.log_filter = "warn".into();
    config.auth = ymera_core::config::AuthMode::Off;
    config
}

/// The communication agent in its own tokio runtime; `kill` drops that
/// runtime abruptly (every task, in-flight delivery and buffered write dies).
pub struct Agent {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    pub comm: Arc<Communication>,
}

impl Agent {
    pub async fn start(config: ServiceConfig, settings: CommSettings) -> Agent {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let url = config.nats.url.clone();
        runtime.spawn(async move {
            let rt = Runtime::start("communication", config)
                .await
                .expect("runtime");
            let comm = Communication::start(&rt, settings)
                .await
                .expect("agent starts");
            let _ = tx.send((rt.shutdown_token(), comm.clone()));
            service(comm).serve(rt).await
        });
        let (shutdown, comm) = rx.await.expect("agent started");
        let client = client(&url).await;
        wait_until_serving(client.nats(), "communication.health").await;
        Agent {
            runtime: Some(runtime),
            shutdown,
            comm,
        }
    }

    /// Crash: no graceful shutdown.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub async fn client(url: &str) -> ServiceClient {
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url)
        .await
        .unwrap();
    ServiceClient::new(nats).with_timeout(Duration::from_secs(5))
}

pub async fn pool(db: &str) -> PgPool {
    ymera_core::store::connect_postgres(db, 4).await.unwrap()
}

pub fn envelope(sender: &str, recipients: &[&str], subject: &str) -> Value {
    json!({
        "id": uuid::Uuid::now_v7(),
        "type": "request",
        "sender": sender,
        "recipients": recipients,
        "subject": subject,
        "payload": {"n": subject},
    })
}

/// What a scripted recipient saw.
#[derive(Default)]
pub struct Inbox {
    /// Every delivery, in arrival order (ids, with repeats).
    pub deliveries: Vec<String>,
    /// Distinct ids.
    pub ids: HashSet<String>,
}

/// A scripted agent answering on `agent.<name>.inbox`.
pub struct Recipient {
    pub inbox: Arc<Mutex<Inbox>>,
    stop: Option<CancellationToken>,
    name: String,
    url: String,
    fail: bool,
}

impl Recipient {
    pub async fn start(url: &str, name: &str, fail: bool) -> Recipient {
        let mut r = Recipient {
            inbox: Arc::new(Mutex::new(Inbox::default())),
            stop: None,
            name: name.to_owned(),
            url: url.to_owned(),
            fail,
        };
        r.up().await;
        r
    }

    /// (Re)subscribes.
    pub async fn up(&mut self) {
        let client = client(&self.url).await.nats().clone();
        let mut sub = client
            .subscribe(format!("agent.{}.inbox", self.name))
            .await
            .unwrap();
        client.flush().await.unwrap();
        let stop = CancellationToken::new();
        self.stop = Some(stop.clone());
        let inbox = self.inbox.clone();
        let fail = self.fail;
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = sub.next() => match m { Some(m) => m, None => break },
                };
                let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
                let id = envelope["id"].as_str().unwrap().to_owned();
                {
                    let mut inbox = inbox.lock().unwrap();
                    inbox.deliveries.push(id.clone());
                    inbox.ids.insert(id);
                }
                let Some(reply) = message.reply else { continue };
                if fail {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Service-Error", "always failing");
                    headers.insert("Nats-Service-Error-Code", "500");
                    let _ = client
                        .publish_with_headers(reply, headers, Bytes::new())
                        .await;
                } else {
                    let _ = client.publish(reply, Bytes::from_static(b"{}")).await;
                }
            }
            let _ = sub.unsubscribe().await;
            let _ = client.flush().await;
        });
    }

    /// Unsubscribes: the agent is down.
    pub async fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pub fn distinct(&self) -> HashSet<String> {
        self.inbox.lock().unwrap().ids.clone()
    }

    pub fn count(&self) -> usize {
        self.inbox.lock().unwrap().deliveries.len()
    }

    pub fn count_of(&self, id: &str) -> usize {
        self.inbox
            .lock()
            .unwrap()
            .deliveries
            .iter()
            .filter(|d| *d == id)
            .count()
    }
}

impl Drop for Recipient {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}

/// Sends until accepted, resending the same id after any failure (the
/// client's half of at-least-once: JetStream dedupes the resends).
pub async fn send_until_accepted(client: &ServiceClient, envelope: &Value) -> String {
    for _ in 0..600 {
        match client
            .request::<_, Value>("communication.send", envelope)
            .await
        {
            Ok(reply) => {
                assert_eq!(reply["status"], "accepted");
                return reply["id"].as_str().unwrap().to_owned();
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("send never accepted");
}

/// Delivery state counts of one recipient in PostgreSQL.
pub async fn states(pool: &PgPool, recipient: &str) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM message_deliveries WHERE recipient = $1 GROUP BY state",
    )
    .bind(recipient)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}
