//! Auto-save: updates marked `autosave` are acknowledged at once, buffered
//! (Redis when configured, else process memory) and persisted at most once
//! per `AUTO_SAVE_INTERVAL` per draft. Everything buffered is flushed at
//! shutdown. What a crash can lose: with Redis, nothing Redis kept (the
//! buffer survives the process and is flushed by the next instance at
//! start); in memory, the changes acknowledged since the last persist of
//! that draft, so at most one interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use ymera_core::Error;

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
    interval: Duration,
    last_persist: Arc<Mutex<HashMap<String, Instant>>>,
}

impl AutoSave {
    /// A buffer persisting each draft at most once per `interval`.
    pub fn new(redis: Option<redis::aio::ConnectionManager>, interval: Duration) -> Self {
        AutoSave {
            buffer: match redis {
                Some(r) => Buffer::Redis(r),
                None => Buffer::Memory(Arc::default()),
            },
            interval,
            last_persist: Arc::default(),
        }
    }

    /// "redis" or "memory".
    pub fn backend(&self) -> &'static str {
        match self.buffer {
            Buffer::Redis(_) => "redis",
            Buffer::Memory(_) => "memory",
        }
    }

    /// Buffers a save (replacing an older one of the same draft).
    pub async fn put(&self, save: PendingSave) -> Result<(), Error> {
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                let json = serde_json::to_string(&save).map_err(Error::internal)?;
                let _: () = conn
                    .set(key(&save.draft_id), json)
                    .await
                    .map_err(redis_err)?;
                let _: () = conn
                    .sadd(PENDING_SET, &save.draft_id)
                    .await
                    .map_err(redis_err)?;
            }
            Buffer::Memory(map) => {
                map.lock().await.insert(save.draft_id.clone(), save);
            }
        }
        Ok(())
    }

    /// The buffered save of a draft, if any.
    pub async fn peek(&self, draft_id: &str) -> Result<Option<PendingSave>, Error> {
        match &self.buffer {
            Buffer::Redis(conn) => {
                let mut conn = conn.clone();
                let json: Option<String> = conn.get(key(draft_id)).await.map_err(redis_err)?;
                Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
            }
            Buffer::Memory(map) => Ok(map.lock().await.get(draft_id).cloned()),
        }
    }

    /// Drops a buffered save (a committed update supersedes it).
    pub async fn discard(&self, draft_id: &str) -> Result<(), Error> {
        self.take(draft_id).await.map(|_| ())
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

    /// Takes a draft's buffered save out of the buffer.
    pub async fn take(&self, draft_id: &str) -> Result<Option<PendingSave>, Error> {
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
        let now = Instant::now();
        let mut due = Vec::new();
        for id in self.pending_ids().await? {
            if !force {
                let last = self.last_persist.lock().await.get(&id).copied();
                if last.is_some_and(|t| now.duration_since(t) < self.interval) {
                    continue;
                }
            }
            if let Some(save) = self.take(&id).await? {
                due.push(save);
            }
        }
        Ok(due)
    }

    /// Puts a save back after a failed persist (unless a newer one arrived).
    pub async fn restore(&self, save: PendingSave) -> Result<(), Error> {
        if self.peek(&save.draft_id).await?.is_none() {
            self.put(save).await?;
        }
        Ok(())
    }

    /// Records that a draft was persisted now.
    pub async fn persisted(&self, draft_id: &str) {
        let mut last = self.last_persist.lock().await;
        last.insert(draft_id.to_owned(), Instant::now());
        if last.len() > 100_000 {
            let horizon = self.interval * 2;
            last.retain(|_, t| t.elapsed() < horizon);
        }
    }
}
