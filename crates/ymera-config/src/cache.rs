//! The read cache: an in-process map in front of a shared Redis cache in
//! front of PostgreSQL.
//!
//! Freshness does not depend on timing. Every committed change raises the
//! *floor* of the layer it changed: the lowest effective version a cached
//! snapshot of that layer may have. The writer raises the floor in Redis
//! (hash `ymera:config:rev:<agent>`, field per environment) before it
//! publishes the change event, and every replica raises its local floor when
//! the event arrives. A read looks up both floors (one Redis round trip), and
//! a cached snapshot older than either is a miss. A change to `base` raises
//! the floor of every environment of the agent. So once the event has been
//! published, no replica serves the old document, and a replica that missed
//! the event (NATS reconnect) still sees the Redis floor. Without Redis
//! (`REDIS_URL` unset, or Redis not answering) the local floor is all there
//! is: a replica serves the previous version until the change event reaches
//! it, which a read sent after the write's reply can overtake on another
//! route of a NATS cluster — read-your-writes across replicas needs Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ymera_core::Error;

use crate::model::Env;

/// Most snapshots kept in process.
pub const MAX_LOCAL_ENTRIES: usize = 10_000;
/// Most (agent, environment) floors kept in process.
pub const MAX_FLOORS: usize = 100_000;

/// One stored layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The document; `None` when the layer was deleted.
    pub document: Option<Value>,
    /// Its version.
    pub version: i64,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
    /// Who wrote it.
    pub updated_by: String,
}

/// What a read of (agent, environment) needs: both layers and the merge.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The base layer.
    pub base: Option<Layer>,
    /// The environment's layer (always `None` for `base`).
    pub layer: Option<Layer>,
    /// The effective document.
    pub effective: Option<Value>,
}

impl Snapshot {
    /// Builds the snapshot and its effective document.
    pub fn new(base: Option<Layer>, layer: Option<Layer>) -> Snapshot {
        let effective = crate::document::effective(
            base.as_ref().and_then(|l| l.document.as_ref()),
            layer.as_ref().and_then(|l| l.document.as_ref()),
        );
        Snapshot {
            base,
            layer,
            effective,
        }
    }

    /// The effective version: the newer of the two layers' versions.
    pub fn version(&self) -> i64 {
        self.newest().map_or(0, |l| l.version)
    }

    /// The layer written last.
    pub fn newest(&self) -> Option<&Layer> {
        match (&self.base, &self.layer) {
            (Some(b), Some(l)) => Some(if l.version > b.version { l } else { b }),
            (Some(b), None) => Some(b),
            (None, Some(l)) => Some(l),
            (None, None) => None,
        }
    }
}

struct LocalEntry {
    snapshot: Arc<Snapshot>,
    stored: Instant,
}

/// The two-level cache with version floors.
pub struct ConfigCache {
    /// Reads answered from the process or Redis, since start.
    hits: std::sync::atomic::AtomicU64,
    /// Reads that went to PostgreSQL, since start.
    misses: std::sync::atomic::AtomicU64,
    local: Mutex<HashMap<(String, Env), LocalEntry>>,
    floors: Mutex<HashMap<(String, Env), i64>>,
    redis: Option<ConnectionManager>,
    ttl: Duration,
}

const RAISE_FLOOR: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
";

fn rev_key(agent: &str) -> String {
    format!("ymera:config:rev:{agent}")
}

fn snap_key(agent: &str, env: Env) -> String {
    format!("ymera:config:snap:{agent}:{env}")
}

/// The environments whose effective document a change to `env` affects.
fn affected(env: Env) -> &'static [Env] {
    match env {
        Env::Base => &Env::ALL,
        Env::Development => &[Env::Development],
        Env::Staging => &[Env::Staging],
        Env::Production => &[Env::Production],
    }
}

impl ConfigCache {
    /// A cache whose entries live `ttl`; shared through `redis` when given.
    pub fn new(redis: Option<ConnectionManager>, ttl: Duration) -> ConfigCache {
        ConfigCache {
            hits: Default::default(),
            misses: Default::default(),
            local: Mutex::new(HashMap::new()),
            floors: Mutex::new(HashMap::new()),
            redis,
            ttl,
        }
    }

    /// (hits, misses) of this process since start.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Whether the cache is shared through Redis.
    pub fn shared(&self) -> bool {
        self.redis.is_some()
    }

    /// How long entries live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn hit(&self) {
        self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("ymera_config_cache_hits_total").increment(1);
    }

    fn ttl_secs(&self) -> u64 {
        self.ttl.as_secs().max(1)
    }

    /// The snapshot of (agent, env): from the process, from Redis, or from
    /// `load` (PostgreSQL), counting hits and misses.
    pub async fn get_or_load<F, Fut>(
        &self,
        agent: &str,
        env: Env,
        load: F,
    ) -> Result<Arc<Snapshot>, Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Snapshot, Error>>,
    {
        let (floor, redis_ok) = self.required_version(agent, env).await;
        if let Some(snapshot) = self.local_get(agent, env, floor) {
            self.hit();
            return Ok(snapshot);
        }
        if redis_ok && let Some(snapshot) = self.redis_get(agent, env, floor).await {
            self.hit();
            let snapshot = Arc::new(snapshot);
            self.local_put(agent, env, snapshot.clone());
            return Ok(snapshot);
        }
        self.misses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("ymera_config_cache_misses_total").increment(1);
        let snapshot = Arc::new(load().await?);
        if snapshot.newest().is_some() {
            self.local_put(agent, env, snapshot.clone());
            // An old read (racing a commit) is served once but not shared.
            if redis_ok && snapshot.version() >= floor {
                self.redis_put(agent, env, &snapshot).await;
            }
        }
        Ok(snapshot)
    }

    /// The lowest acceptable effective version, and whether Redis answered.
    async fn required_version(&self, agent: &str, env: Env) -> (i64, bool) {
        let local = {
            let floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
            let own = floors.get(&(agent.to_owned(), env)).copied().unwrap_or(0);
            let base = floors
                .get(&(agent.to_owned(), Env::Base))
                .copied()
                .unwrap_or(0);
            own.max(base)
        };
        let Some(redis) = &self.redis else {
            return (local, false);
        };
        let mut conn = redis.clone();
        let result: redis::RedisResult<Vec<Option<i64>>> = redis::cmd("HMGET")
            .arg(rev_key(agent))
            .arg(env.as_str())
            .arg(Env::Base.as_str())
            .query_async(&mut conn)
            .await;
        match result {
            Ok(values) => {
                let shared = values.into_iter().flatten().max().unwrap_or(0);
                (local.max(shared), true)
            }
            Err(err) => {
                tracing::debug!(error = %err, "Redis floor lookup failed; using the local cache only");
                (local, false)
            }
        }
    }

    fn local_get(&self, agent: &str, env: Env, floor: i64) -> Option<Arc<Snapshot>> {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let entry = local.get(&(agent.to_owned(), env))?;
        (entry.stored.elapsed() < self.ttl && entry.snapshot.version() >= floor)
            .then(|| entry.snapshot.clone())
    }

    fn local_put(&self, agent: &str, env: Env, snapshot: Arc<Snapshot>) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() >= MAX_LOCAL_ENTRIES {
            let ttl = self.ttl;
            local.retain(|_, e| e.stored.elapsed() < ttl);
            if local.len() >= MAX_LOCAL_ENTRIES {
                local.clear();
            }
        }
        local.insert(
            (agent.to_owned(), env),
            LocalEntry {
                snapshot,
                stored: Instant::now(),
            },
        );
    }

    async fn redis_get(&self, agent: &str, env: Env, floor: i64) -> Option<Snapshot> {
        let mut conn = self.redis.clone()?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(snap_key(agent, env))
            .query_async(&mut conn)
            .await
            .ok()?;
        let snapshot: Snapshot = serde_json::from_str(&raw?).ok()?;
        (snapshot.version() >= floor).then_some(snapshot)
    }

    async fn redis_put(&self, agent: &str, env: Env, snapshot: &Snapshot) {
        let (Some(redis), Ok(text)) = (&self.redis, serde_json::to_string(snapshot)) else {
            return;
        };
        let mut conn = redis.clone();
        let result: redis::RedisResult<()> = redis::cmd("SET")
            .arg(snap_key(agent, env))
            .arg(text)
            .arg("EX")
            .arg(self.ttl_secs())
            .query_async(&mut conn)
            .await;
        if let Err(err) = result {
            tracing::debug!(error = %err, "could not store a snapshot in Redis");
        }
    }

    /// A change to (agent, env) at `version` is known: raise the local floors
    /// and drop the local snapshots it affects. Called for every change event
    /// and by the writer itself.
    pub fn note_change(&self, agent: &str, env: Env, version: i64) {
        {
            let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
            if floors.len() >= MAX_FLOORS {
                // Forgetting floors is safe only together with the snapshots.
                floors.clear();
                self.local.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
            let floor = floors.entry((agent.to_owned(), env)).or_insert(0);
            *floor = (*floor).max(version);
        }
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        for e in affected(env) {
            local.remove(&(agent.to_owned(), *e));
        }
    }

    /// After a commit, before the change event: raise the shared floor in
    /// Redis and delete the snapshots the change affects, then the local ones.
    pub async fn committed(&self, agent: &str, env: Env, version: i64) {
        if let Some(redis) = &self.redis {
            let mut conn = redis.clone();
            let raise = redis::Script::new(RAISE_FLOOR);
            let mut script = raise.prepare_invoke();
            script.key(rev_key(agent));
            for e in affected(env) {
                script.key(snap_key(agent, *e));
            }
            script
                .arg(env.as_str())
                .arg(version)
                .arg(self.ttl_secs().saturating_mul(2).saturating_add(60));
            let result: redis::RedisResult<i64> = script.invoke_async(&mut conn).await;
            if let Err(err) = result {
                tracing::warn!(error = %err, agent, environment = %env, "could not invalidate the shared config cache");
            }
        }
        self.note_change(agent, env, version);
    }
}
