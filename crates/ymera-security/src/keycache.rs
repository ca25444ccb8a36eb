//! The in-memory API key table: what `security.authorize` checks a valid
//! key against without a PostgreSQL round trip.
//!
//! - Loaded at start (active keys, most recently used first, at most
//!   [`MAX_CACHED_KEYS`]) by a listener task that first runs
//!   `LISTEN ymera_api_keys`, so nothing committed after the load is missed.
//! - Every statement of this crate that creates or revokes a key sends
//!   `pg_notify('ymera_api_keys', key_id)` in the same statement, so the
//!   notification is delivered at commit to every replica. The listener
//!   removes the entry at once (no await between receipt and removal), then
//!   re-reads the row and puts the fresh one back.
//! - While the listener is not connected and loaded, the table answers
//!   nothing ([`KeyCache::get`] is `None`): every check goes to PostgreSQL.
//!   After a reconnect the table is reloaded whole (notifications sent
//!   while disconnected are lost). A full reload also runs every
//!   [`RELOAD_EVERY`], which bounds how long a change made outside this
//!   service (plain SQL without `pg_notify`) can go unseen.
//! - Only the listener writes the table; a lookup that misses goes to
//!   PostgreSQL and does not insert (so a row read just before a
//!   revocation can never be put back after it).
//!
//! There is deliberately no negative cache: every refused key takes the
//! same path (table, HMAC, constant-time comparison, then one PostgreSQL
//! lookup), so unknown ids and wrong secrets cost the same; a negative
//! cache would make repeated unknown ids cheaper than wrong secrets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apikey::Digest;
use crate::keys::KeyRow;

/// The notification channel; the payload is the key id.
pub const CHANNEL: &str = "ymera_api_keys";
/// Most keys held in memory (the rest are read from PostgreSQL per call).
pub const MAX_CACHED_KEYS: usize = 200_000;
/// Full reload period.
pub const RELOAD_EVERY: Duration = Duration::from_secs(300);
/// How often the listener checks that it still receives: it sends itself a
/// notification on the channel ([`PING_PREFIX`]) and gives up on the
/// connection when the previous one has not come back within this period
/// (a silently dead connection would otherwise miss revocations).
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Payload prefix of the listeners' own pings (never a key id: ids are base62).
const PING_PREFIX: &str = "ping:";
/// Pause before reconnecting a lost listener.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// What authorize needs of a key row (never the secret itself: only the HMAC).
#[derive(Debug, Clone)]
pub struct CachedKey {
    pub key_id: String,
    pub secret_hash: Digest,
    pub owner: String,
    pub tenant: String,
    pub permissions: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl CachedKey {
    /// The entry of a row (`None` when the stored hash is not 32 bytes).
    pub(crate) fn of(row: KeyRow) -> Option<CachedKey> {
        Some(CachedKey {
            secret_hash: <[u8; 32]>::try_from(row.secret_hash.as_slice()).ok()?,
            key_id: row.key_id,
            owner: row.owner,
            tenant: row.tenant,
            permissions: row.permissions,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// The table, shared by the handlers (readers) and the listener (writer).
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, Arc<CachedKey>>>,
    live: AtomicBool,
    /// Woken after each applied notification.
    applied: Notify,
    /// Key ids whose notification a local caller is waiting for.
    expected: Mutex<HashSet<String>>,
}

impl KeyCache {
    /// The entry for `key_id`, when the table is live and holds it.
    pub fn get(&self, key_id: &str) -> Option<Arc<CachedKey>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
            .cloned()
    }

    /// Whether the listener is connected and the table loaded.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        metrics::gauge!("ymera_security_key_table_live").set(if live { 1.0 } else { 0.0 });
    }

    fn remove(&self, key_id: &str) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    /// Replaces the entry of `row.key_id` (when room is left).
    fn put(&self, row: KeyRow) {
        let Some(key) = CachedKey::of(row) else {
            return;
        };
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.len() < MAX_CACHED_KEYS || keys.contains_key(&key.key_id) {
            keys.insert(key.key_id.clone(), Arc::new(key));
        }
    }

    fn replace_all(&self, rows: Vec<KeyRow>) {
        let mut fresh = HashMap::with_capacity(rows.len());
        for row in rows {
            if let Some(key) = CachedKey::of(row) {
                fresh.insert(key.key_id.clone(), Arc::new(key));
            }
        }
        metrics::gauge!("ymera_security_key_table_size").set(fresh.len() as f64);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Applies this replica's own change to `row` at once (the notification
    /// will re-read it too).
    pub fn apply_local(&self, row: &KeyRow) {
        self.remove(&row.key_id);
        self.put(row.clone());
    }

    /// Marks that a notification for `key_id` is expected; call before the
    /// statement that sends it, then [`KeyCache::wait_seen`].
    pub fn expect(&self, key_id: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned());
    }

    /// Waits (at most `limit`) until the listener has applied the
    /// notification for `key_id` announced with [`KeyCache::expect`].
    /// PostgreSQL delivers it to every listening replica at commit, so once
    /// this replica has it, the others have been sent it at the same
    /// moment. Returns whether it was seen (false at once when the table is
    /// not live: lookups then go to PostgreSQL anyway).
    pub async fn wait_seen(&self, key_id: &str, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.applied.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !self
                    .expected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(key_id)
                {
                    return true;
                }
                if !self.is_live() {
                    return false;
                }
                notified.await;
            }
        };
        let seen = tokio::time::timeout(limit, wait).await.unwrap_or(false);
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
        seen
    }

    fn mark_seen(&self, key_id: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
        self.applied.notify_waiters();
    }
}

/// Active keys for the initial and periodic loads.
async fn load_all(pool: &PgPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, secret_hash, owner, tenant, permissions, description, created_by, \
         created_at, expires_at, revoked_at, last_used, usage_count FROM api_keys \
         WHERE revoked_at IS NULL AND expires_at > now() \
         ORDER BY last_used DESC NULLS LAST, created_at DESC LIMIT $1",
    )
    .bind(MAX_CACHED_KEYS as i64)
    .fetch_all(pool)
    .await
}

/// Keeps `cache` current until shutdown (see the module docs).
pub async fn run_listener(pool: PgPool, cache: Arc<KeyCache>, shutdown: CancellationToken) {
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        match listen_once(&pool, &cache, &shutdown).await {
            Ok(()) => break,
            Err(err) => {
                cache.set_live(false);
                tracing::warn!(error = %err, "API key table listener lost; checking keys in PostgreSQL until it is back");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
            }
        }
    }
    cache.set_live(false);
}

/// One listener connection: LISTEN, load, then apply notifications until
/// the connection fails (Err) or shutdown (Ok).
async fn listen_once(
    pool: &PgPool,
    cache: &KeyCache,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    cache.replace_all(load_all(pool).await?);
    cache.set_live(true);
    tracing::info!(keys = cache.len(), "API key table loaded");
    let mut reload = tokio::time::interval(RELOAD_EVERY);
    reload.tick().await;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = uuid::Uuid::now_v7().simple().to_string();
    let mut sequence = 0u64;
    let mut pending: Option<String> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ping.tick() => {
                if pending.is_some() {
                    anyhow::bail!("own notification not received within {PING_EVERY:?}");
                }
                sequence += 1;
                let payload = format!("{PING_PREFIX}{me}:{sequence}");
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(pool)
                    .await?;
                pending = Some(payload);
            }
            _ = reload.tick() => {
                // Notifications received meanwhile wait in the listener and
                // are applied after the swap.
                cache.replace_all(load_all(pool).await?);
            }
            received = listener.try_recv() => {
                let Some(notification) = received? else {
                    // Connection lost: notifications may be missing.
                    anyhow::bail!("connection lost");
                };
                let key_id = notification.payload();
                if key_id.starts_with(PING_PREFIX) {
                    if pending.as_deref() == Some(key_id) {
                        pending = None;
                    }
                    continue;
                }
                cache.remove(key_id);
                match crate::keys::find(pool, key_id).await {
                    Ok(Some(row)) => cache.put(row),
                    Ok(None) => {}
                    Err(err) => {
                        // The entry stays removed: lookups go to PostgreSQL.
                        tracing::warn!(error = %err, "cannot re-read a notified API key");
                    }
                }
                cache.mark_seen(key_id);
            }
        }
    }
}
