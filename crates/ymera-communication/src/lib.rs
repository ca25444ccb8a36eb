//! The communication agent: reliable message routing between agents.
//!
//! An agent hands an envelope to `communication.send`; the agent stores one
//! copy per recipient in the JetStream stream `YMERA_MESSAGES` and answers
//! only after JetStream acknowledged every copy. Durable pull consumers (one
//! per recipient, see [`delivery`]) then deliver each copy as a NATS request
//! to `agent.<recipient>.inbox`, retrying with full-jitter backoff behind a
//! per-recipient circuit breaker, and dead-letter it to `YMERA_DLQ` after the
//! last attempt. Every state change is written to PostgreSQL ([`journal`]).
//!
//! When JetStream cannot acknowledge a copy within `COMM_PUBLISH_TIMEOUT_MS` (a
//! `YMERA_MESSAGES` leader election, a reconnect), send keeps it in the PostgreSQL
//! outbox instead and a relay publishes it later with the same `Nats-Msg-Id`
//! ([`outbox`]).
//!
//! Invariants:
//! - a send is answered `accepted` only after every copy is stored: in JetStream, or
//!   (committed) in the outbox, which leaves a copy only once JetStream acknowledged it;
//! - a copy is acknowledged to JetStream only after its final state is stored;
//! - a final state (delivered, dead_lettered, expired) is never overwritten;
//! - the communication agent never depends on another service's crate.

pub mod agents;
pub mod api;
pub mod auth;
pub mod delivery;
pub mod dlq;
pub mod journal;
pub mod model;
pub mod outbox;
pub mod queries;
pub mod send;
pub mod settings;
pub mod stats;
pub mod store;
pub mod streams;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use ymera_core::config::ServiceConfig;
use ymera_core::config_watch::follow_settings;
use ymera_core::ratelimit::RateLimiter;
use ymera_core::resilience::{BreakerRegistry, SystemClock};
use ymera_core::runtime::{Runtime, RuntimeError, ServiceBuilder};

use crate::journal::Journal;
use crate::settings::CommSettings;
use crate::stats::Stats;

/// The micro-service name.
pub const NAME: &str = "communication";
/// Most recipients this instance runs delivery workers for.
pub const MAX_RECIPIENTS_TRACKED: usize = 10_000;
/// Most attempt counts cached in memory (the journal has the rest).
const MAX_CACHED_ATTEMPTS: usize = 100_000;

/// Runs the communication agent until shutdown.
pub async fn run(config: ServiceConfig, settings: CommSettings) -> Result<(), RuntimeError> {
    let runtime = Runtime::start(NAME, config).await?;
    ymera_core::retention::start(&runtime, &[ymera_core::retention::MESSAGE_ARCHIVE])?;
    let comm = Communication::start(&runtime, settings).await?;
    let result = service(comm.clone()).serve(runtime).await;
    // Let deliveries in flight settle (ack or NAK) before the process ends;
    // anything cut short is redelivered by JetStream after its ack wait.
    let deadline = comm.settings.inbox_timeout + Duration::from_secs(2);
    if tokio::time::timeout(deadline, comm.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("deliveries still in flight at exit; JetStream will redeliver them");
    }
    result
}

/// The service with its endpoints.
pub fn service(comm: Arc<Communication>) -> ServiceBuilder {
    api::endpoints(
        ServiceBuilder::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "Reliable message routing between agents",
        ),
        comm,
    )
}

/// Shared state of one communication agent instance.
pub struct Communication {
    settings: CommSettings,
    live: watch::Receiver<CommSettings>,
    client: async_nats::Client,
    js: jetstream::Context,
    journal: Journal,
    outbox: outbox::Outbox,
    limiter: RateLimiter,
    breakers: BreakerRegistry,
    stats: Stats,
    workers: Mutex<HashMap<String, ()>>,
    attempts: Mutex<HashMap<(Uuid, String), u32>>,
    /// Copies this instance is trying now (envelope id, recipient): a repeat of one (a
    /// relayed or redelivered copy) waits until its state is stored. At most the copies
    /// in flight (`max_ack_pending` per recipient).
    trying: Mutex<HashSet<(Uuid, String)>>,
    backlog: Mutex<HashMap<String, u64>>,
    /// Copies routed by `skill:` resolution since the last backlog poll (added to the
    /// polled backlog when choosing among agents; never used to refuse a send).
    routed: Mutex<HashMap<String, u64>>,
    agents: Option<Arc<agents::Registry>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Communication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communication")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Communication {
    /// Sets up the streams, the journal writer, delivery workers for every
    /// known recipient and the background jobs. Needs PostgreSQL.
    pub async fn start(
        runtime: &Runtime,
        settings: CommSettings,
    ) -> Result<Arc<Communication>, RuntimeError> {
        let pool = runtime.postgres().cloned().ok_or(RuntimeError::Config {
            variable: "POSTGRES_URL",
            reason: "the communication agent needs PostgreSQL".into(),
        })?;
        let client = runtime.client().clone();
        let js = jetstream::new(client.clone());
        let mut last_error = String::new();
        let mut ready = false;
        for attempt in 0..20u32 {
            match streams::ensure_streams(&js, &settings).await {
                Ok(()) => {
                    ready = true;
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "JetStream not ready");
                    last_error = err;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        if !ready {
            return Err(RuntimeError::Register(format!("JetStream: {last_error}")));
        }
        let replicas = streams::replicas(&js)
            .await
            .map_err(|e| RuntimeError::Register(format!("JetStream: {e}")))?;
        let registry = agents::Registry::start(&js, replicas)
            .await
            .map_err(|e| RuntimeError::Register(format!("JetStream: {e}")))?;
        Stats::register();
        outbox::Outbox::register();
        metrics::gauge!("ymera_comm_backlog_capacity").set(f64::from(settings.backlog_limit));
        let live = follow_settings(
            runtime,
            NAME,
            settings.watch.clone(),
            settings.clone(),
            |start, document| start.with_document(document).map_err(|err| err.reason),
        )
        .await;
        let comm = Arc::new(Communication {
            live,
            limiter: RateLimiter::new("ymera:rl:comm:", runtime.redis().cloned()),
            breakers: BreakerRegistry::new(
                "communication",
                settings.breaker(),
                Arc::new(SystemClock),
            ),
            settings,
            client,
            js,
            outbox: outbox::Outbox::new(pool.clone()),
            journal: Journal::start(pool),
            stats: Stats::default(),
            workers: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            trying: Mutex::new(HashSet::new()),
            backlog: Mutex::new(HashMap::new()),
            routed: Mutex::new(HashMap::new()),
            agents: Some(registry.clone()),
            tracker: TaskTracker::new(),
            shutdown: runtime.shutdown_token(),
        });
        tokio::spawn(registry.follow(comm.shutdown.clone()));
        delivery::discover_recipients(&comm).await;
        tokio::spawn(delivery::maintenance_loop(comm.clone()));
        tokio::spawn(retention_loop(comm.clone()));
        tokio::spawn(outbox::relay_loop(comm.clone()));
        Ok(comm)
    }

    /// The tunables read at start.
    pub fn settings(&self) -> &CommSettings {
        &self.settings
    }

    /// The tunables now: those read at start with the config manager's
    /// document for this agent applied (see [`settings::LIVE_KEYS`]).
    pub fn live(&self) -> CommSettings {
        self.live.borrow().clone()
    }

    /// The journal (PostgreSQL).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The send outbox of this instance.
    pub fn outbox(&self) -> &outbox::Outbox {
        &self.outbox
    }

    /// The counters of this instance.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The per-recipient circuit breakers.
    pub fn breakers(&self) -> &BreakerRegistry {
        &self.breakers
    }

    /// Waits until every delivery in flight has finished (after shutdown).
    pub async fn wait_idle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Marks the copy `(id, recipient)` as being tried by this instance until the guard
    /// drops; `None` when it is being tried already.
    fn try_copy(&self, id: Uuid, recipient: &str) -> Option<TryingGuard<'_>> {
        let key = (id, recipient.to_owned());
        let mut set = self.trying.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(key.clone()) {
            return None;
        }
        Some(TryingGuard { comm: self, key })
    }

    fn cached_attempts(&self, id: Uuid, recipient: &str) -> Option<u32> {
        let map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(id, recipient.to_owned())).copied()
    }

    fn cache_attempts(&self, id: Uuid, recipient: &str, attempts: Option<u32>) {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        match attempts {
            Some(n) => {
                if map.len() >= MAX_CACHED_ATTEMPTS {
                    map.clear();
                }
                map.insert((id, recipient.to_owned()), n);
            }
            None => {
                map.remove(&(id, recipient.to_owned()));
            }
        }
    }

    fn known_backlog(&self, recipient: &str) -> u64 {
        let map = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        map.get(recipient).copied().unwrap_or(0)
    }

    /// Counts one more copy routed to `recipient` until the next backlog poll (so skill
    /// resolutions between polls spread by backlog too).
    fn count_backlog(&self, recipient: &str) {
        let mut map = self.routed.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() < MAX_RECIPIENTS_TRACKED || map.contains_key(recipient) {
            *map.entry(recipient.to_owned()).or_insert(0) += 1;
        }
    }

    /// The backlog `skill:` resolution compares: the last polled backlog plus the copies
    /// routed to the agent since.
    fn routing_backlog(&self, recipient: &str) -> u64 {
        let routed = {
            let map = self.routed.lock().unwrap_or_else(|p| p.into_inner());
            map.get(recipient).copied().unwrap_or(0)
        };
        self.known_backlog(recipient).saturating_add(routed)
    }

    /// The agent card registry (`None` only before start-up finished).
    pub fn agents(&self) -> Option<&Arc<agents::Registry>> {
        self.agents.as_ref()
    }
}

async fn retention_loop(comm: Arc<Communication>) {
    let mut tick = tokio::time::interval(comm.settings.retention_interval);
    loop {
        tokio::select! {
            _ = comm.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        loop {
            match journal::archive_older_than(comm.journal.pool(), comm.settings.retention, 5000)
                .await
            {
                Ok(0) => break,
                Ok(n) => tracing::info!(archived = n, "moved old message history to the archive"),
                Err(err) => {
                    tracing::warn!(error = %err, "retention job failed");
                    break;
                }
            }
        }
    }
}

/// A copy this instance is trying ([`Communication::try_copy`]).
struct TryingGuard<'a> {
    comm: &'a Communication,
    key: (Uuid, String),
}

impl Drop for TryingGuard<'_> {
    fn drop(&mut self) {
        let mut set = self.comm.trying.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}
