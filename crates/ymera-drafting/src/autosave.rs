//! Auto-save: updates marked `autosave` are acknowledged at once, buffered
//! (Redis when configured, else process memory) and persisted at most once
//! per `AUTO_SAVE_INTERVAL` per draft (the config manager can change the
//! interval while the service runs, see [`live_interval`]). Everything buffered is flushed at
//! shutdown. What a crash can lose: with Redis, nothing Redis kept (the
//! buffer survives the process and is flushed by the next instance at
//! start); in memory, the changes acknowledged since the last persist of
//! that draft, so at most one interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use ymera_core::Error;

/// The one key of agent `drafting`'s document in the config manager.
pub const LIVE_KEY: &str = "auto_save_interval_ms";
/// Bounds of the auto-save interval set through the config manager.
pub const INTERVAL_BOUNDS_MS: (u64, u64) = (50, 86_400_000);

/// The auto-save interval a config-manager document asks for, over the one
/// read at start (`AUTO_SAVE_INTERVAL`): `{"auto_save_interval_ms": N}` with
/// N within [`INTERVAL_BOUNDS_MS`]; no document keeps `start`. Any other key
/// or value is refused with the reason.
pub fn live_interval(start: &Duration, document: &serde_json::Value) -> Result<Duration, String> {
    let object = match document {
        serde_json::Value::Null => return Ok(*start),
        serde_json::Value::Object(map) => map,
        _ => return Err("the drafting agent's configuration must be a JSON object".into()),
    };
    if let Some(key) = object.keys().find(|k| k.as_str() != LIVE_KEY) {
        return Err(format!(
            "{key:?} is not a setting of the drafting agent; the only key is {LIVE_KEY:?}"
        ));
    }
    let Some(value) = object.get(LIVE_KEY) else {
        return Ok(*start);
    };
    let (low, high) = INTERVAL_BOUNDS_MS;
    match value.as_u64() {
        Some(ms) if (low..=high).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{LIVE_KEY} must be a whole number of milliseconds from {low} to {high}, not {value}"
        )),
    }
}

/// One buffered auto-save (the latest wins).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingSave {
    /// The draft.
    pub draft_id: String,
    /// Who typed it.
    pub author_id: String,
    /// New title, if changed.
    pub title: Option<String>,
    /// New content.
    pub content: String,
}

const PENDING_SET: &str = "ymera:drafting:autosave:pending";

fn key(draft_id: &str) -> String {
    format!("ymera:drafting:autosave:{draft_id}")
}

/// Set (for one interval) when a draft's save was persisted, so every
/// replica sharing the Redis buffer waits the same interval.
fn persisted_key(draft_id: &str) -> String {
    format!("ymera:drafting:autosave:persisted:{draft_id}")
}

/// Where auto-saves wait, as `drafting.update` replies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// In Redis (survives a restart).
    Redis,
    /// In the process (lost on a crash).
    Memory,
}

/// Where auto-saves wait.
#[derive(Clone)]
pub enum Buffer {
    /// Shared across instances and restarts.
    Redis(redis::aio::ConnectionManager),
    /// This process only.
    Memory(Arc<Mutex<HashMap<String, PendingSave>>>),
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Buffer::Redis(_) => "Buffer::Redis",
            Buffer::Memory(_) => "Buffer::Memory",
        })
    }
}

fn redis_err(err: redis::RedisError) -> Error {
    tracing::warn!(error = %err, "redis");
    Error::dependency_down("redis")
}

/// The auto-save buffer and the per-draft persist clock.
#[derive(Debug, Clone)]
pub struct AutoSave {
    buffer: Buffer,
    interval: watch::Receiver<Duration>,
    last_persist: Arc<Mutex<HashMap<String, Instant>>>,
    /// Drafts whose save this process has taken out of the buffer and not
    /// yet committed (or put back): still pending to a reader.
    in_flight: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl AutoSave {
    /// A buffer persisting each draft at most once per `interval`.
    pub fn new(redis: Option<redis::aio::ConnectionManager>, interval: Duration) -> Self {
        Self::following(redis, watch::channel(interval).1)
    }

    /// A buffer whose interval follows `interval` (e.g. the config manager).
    pub fn following(
        redis: Option<redis::aio::ConnectionManager>,
        interval: watch::Receiver<Duration>,
    ) -> Self {
        AutoSave {
            buffer: match redis {
                Some(r) => Buffer::Redis(r),
                None => Buffer::Memory(Arc::default()),
            },
            interval,
            last_persist: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// The interval in force now.
    pub fn interval(&self) -> Duration {
        *self.interval.borrow()
    }

    /// A receiver that changes when the interval does.
    pub fn interval_receiver(&self) -> watch::Receiver<Duration> {
        self.interval.clone()
    }

    /// Where saves wait: Redis or memory.
    pub fn backend(&self) -> BufferKind {
        match self.buffer {
            Buffer::Redis(_) => BufferKind::Redis,
            Buffer::Memory(_) => BufferKind::Memory,
        }
    }

    /// Buffers a save (replacing an older one of the same draft).
    pub async fn put(&self, save: PendingSave) -> Result<(), Error> {
        self.store(save, true).await
    }

    /// Buffers `save`; with `replace` false, only when no save of the draft
    /// is buffered (atomically: `SET NX` in Redis).
    async fn store(&self, save: PendingSave, replace: bool) -> Result<(), Error> {
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                let json = serde_json::to_string(&save).map_err(Error::internal)?;
                let mut set = redis::cmd("SET");
                set.arg(key(&save.draft_id)).arg(json);
                if !replace {
                    set.arg("NX");
                }
                let stored: Option<String> = set.query_async(&mut conn).await.map_err(redis_err)?;
                if stored.is_some() {
                    let _: () = conn
                        .sadd(PENDING_SET, &save.draft_id)
                        .await
                        .map_err(redis_err)?;
                }
            }
            Buffer::Memory(map) => {
                let mut map = map.lock().await;
                if replace || !map.contains_key(&save.draft_id) {
                    map.insert(save.draft_id.clone(), save);
                }
            }
        }
        Ok(())
    }

    /// Whether a save of the draft waits in the buffer (without reading it).
    pub async fn is_buffered(&self, draft_id: &str) -> Result<bool, Error> {
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                conn.exists(key(draft_id)).await.map_err(redis_err)
            }
            Buffer::Memory(map) => Ok(map.lock().await.contains_key(draft_id)),
        }
    }

    /// Drops a buffered save (a committed update supersedes it).
    pub async fn discard(&self, draft_id: &str) -> Result<(), Error> {
        if self.take(draft_id).await?.is_some() {
            self.settled(draft_id);
        }
        Ok(())
    }

    /// Whether a save of the draft waits in the buffer or is being
    /// committed by this process. Ask it before reading the draft: a
    /// `false` then means the draft read afterwards holds every save
    /// taken so far.
    pub async fn pending(&self, draft_id: &str) -> Result<bool, Error> {
        // The buffer first: `take` marks a save in flight before it leaves
        // the buffer, so a save is always visible in one of the two.
        Ok(self.is_buffered(draft_id).await? || self.is_in_flight(draft_id))
    }

    fn is_in_flight(&self, draft_id: &str) -> bool {
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.contains_key(draft_id)
    }

    fn begin(&self, draft_id: &str) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *in_flight.entry(draft_id.to_owned()).or_default() += 1;
    }

    /// A save returned by [`take`](Self::take) or [`due`](Self::due) was
    /// committed, dropped or put back: it is no longer in flight.
    pub fn settled(&self, draft_id: &str) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = in_flight.get_mut(draft_id) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(draft_id);
            }
        }
    }

    /// The backlog: saves waiting in the buffer (all replicas when it is
    /// Redis), and those this process is committing now.
    pub async fn backlog(&self) -> Result<(u64, u64), Error> {
        let buffered = match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                conn.scard(PENDING_SET).await.map_err(redis_err)?
            }
            Buffer::Memory(map) => map.lock().await.len() as u64,
        };
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        Ok((buffered, in_flight.values().map(|n| *n as u64).sum()))
    }

    async fn pending_ids(&self) -> Result<Vec<String>, Error> {
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                conn.smembers(PENDING_SET).await.map_err(redis_err)
            }
            Buffer::Memory(map) => Ok(map.lock().await.keys().cloned().collect()),
        }
    }

    /// Takes a draft's buffered save out of the buffer; a save returned is
    /// in flight until [`settled`](Self::settled).
    pub async fn take(&self, draft_id: &str) -> Result<Option<PendingSave>, Error> {
        self.begin(draft_id);
        let taken = self.take_buffered(draft_id).await;
        if !matches!(taken, Ok(Some(_))) {
            self.settled(draft_id);
        }
        taken
    }

    async fn take_buffered(&self, draft_id: &str) -> Result<Option<PendingSave>, Error> {
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                // Remove from the set first: a save arriving in between
                // re-adds the id, and its key is read below or next time.
                let _: () = conn.srem(PENDING_SET, draft_id).await.map_err(redis_err)?;
                let json: Option<String> = redis::cmd("GETDEL")
                    .arg(key(draft_id))
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err)?;
                Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
            }
            Buffer::Memory(map) => Ok(map.lock().await.remove(draft_id)),
        }
    }

    /// Takes the saves that are due: every one when `force`, else those whose
    /// draft was last persisted at least one interval ago.
    pub async fn due(&self, force: bool) -> Result<Vec<PendingSave>, Error> {
        let (now, interval) = (Instant::now(), self.interval());
        let mut due = Vec::new();
        for id in self.pending_ids().await? {
            if !force && self.recently_persisted(&id, now, interval).await {
                continue;
            }
            match self.take(&id).await {
                Ok(Some(save)) => due.push(save),
                Ok(None) => {}
                // Saves already taken must still reach the caller.
                Err(err) if due.is_empty() => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err.message, "auto-save buffer unavailable; persisting what was taken");
                    break;
                }
            }
        }
        Ok(due)
    }

    /// Puts a save back after a failed persist (unless a newer one arrived).
    pub async fn restore(&self, save: PendingSave) -> Result<(), Error> {
        self.store(save, false).await
    }

    /// Whether the draft was persisted less than `interval` ago (by any
    /// replica, with Redis; a Redis error counts as not, so nothing waits
    /// longer than it should).
    async fn recently_persisted(&self, draft_id: &str, now: Instant, interval: Duration) -> bool {
        let last = self.last_persist.lock().await.get(draft_id).copied();
        if last.is_some_and(|t| now.duration_since(t) < interval) {
            return true;
        }
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                conn.exists(persisted_key(draft_id)).await.unwrap_or(false)
            }
            Buffer::Memory(_) => false,
        }
    }

    /// Records that a draft was persisted now.
    pub async fn persisted(&self, draft_id: &str) {
        if let Buffer::Redis(conn) = &self.buffer {
            let mut conn = conn.clone();
            let ms = u64::try_from(self.interval().as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let set: Result<(), _> = redis::cmd("SET")
                .arg(persisted_key(draft_id))
                .arg(1)
                .arg("PX")
                .arg(ms)
                .query_async(&mut conn)
                .await;
            if let Err(e) = set {
                tracing::debug!(error = %e, "recording the persist time in redis");
            }
        }
        let mut last = self.last_persist.lock().await;
        last.insert(draft_id.to_owned(), Instant::now());
        if last.len() > 100_000 {
            let horizon = self.interval() * 2;
            last.retain(|_, t| t.elapsed() < horizon);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_set_the_interval_within_bounds() {
        let start = Duration::from_secs(30);
        assert_eq!(live_interval(&start, &serde_json::Value::Null), Ok(start));
        assert_eq!(live_interval(&start, &json!({})), Ok(start));
        assert_eq!(
            live_interval(&start, &json!({"auto_save_interval_ms": 250})),
            Ok(Duration::from_millis(250))
        );
        for bad in [
            json!({"auto_save_interval_ms": 0}),
            json!({"auto_save_interval_ms": -5}),
            json!({"auto_save_interval_ms": "fast"}),
            json!({"auto_save_interval_ms": 86_400_001u64}),
            json!({"auto_save_interval": 5}),
            json!([1]),
        ] {
            let err = live_interval(&start, &bad).unwrap_err();
            assert!(!err.is_empty(), "{bad} was accepted");
        }
    }

    #[tokio::test]
    async fn a_taken_save_stays_pending_until_settled() {
        let autosave = AutoSave::new(None, Duration::from_secs(30));
        let save = PendingSave {
            draft_id: "d".into(),
            author_id: "ann".into(),
            title: None,
            content: "v2".into(),
        };
        assert!(!autosave.pending("d").await.unwrap());
        autosave.put(save).await.unwrap();
        assert!(autosave.pending("d").await.unwrap());
        // Out of the buffer but not committed yet: still pending to readers.
        let taken = autosave.due(true).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert!(!autosave.is_buffered("d").await.unwrap());
        assert!(autosave.pending("d").await.unwrap());
        autosave.settled("d");
        assert!(!autosave.pending("d").await.unwrap());
        // Taking nothing leaves nothing in flight; discard settles itself.
        assert!(autosave.take("d").await.unwrap().is_none());
        assert!(!autosave.pending("d").await.unwrap());
        autosave
            .put(taken.into_iter().next().unwrap())
            .await
            .unwrap();
        autosave.discard("d").await.unwrap();
        assert!(!autosave.pending("d").await.unwrap());
    }
}
