//! The in-memory API key table: what `security.authorize` checks a valid
//! key against without a PostgreSQL round trip.
//!
//! - Loaded at start (active keys, most recently used first, at most
//!   [`MAX_CACHED_KEYS`]) by a listener task that first runs
//!   `LISTEN ymera_api_keys`, so nothing committed after the load is missed.
//! - Every statement of this crate that creates or revokes a key sends
//!   `pg_notify('ymera_api_keys', …)` (the key id; `<key id>:<nonce>` for a
//!   revocation) in the same statement, so the notification is delivered
//!   at commit to every replica. The listener removes the entry at once (no
//!   await between receipt and removal), acknowledges it on the channel
//!   (`ack:<replica>:<payload>`), then re-reads the row and puts the fresh
//!   one back.
//! - `security.keys.revoke` and `security.tokens.revoke` answer only once
//!   every replica whose listener pinged recently has acknowledged the
//!   notification (at most [`crate::service::REVOCATION_SYNC_LIMIT`]; a
//!   warning is logged past it): when the call returns, the revocation is
//!   in effect on every replica that answers from memory; the others ask
//!   PostgreSQL.
//! - While the listener is not connected and loaded, the table answers
//!   nothing ([`KeyCache::get`] is `None`): every check goes to PostgreSQL.
//!   After a reconnect the table is reloaded whole (notifications sent
//!   while disconnected are lost). A full reload also runs every
//!   [`RELOAD_EVERY`]. Changes made outside this service (plain SQL) notify
//!   too: triggers on `api_keys` (creation, deletion, and updates of
//!   `revoked_at`, `expires_at`, `secret_hash`, `permissions`, `owner`,
//!   `tenant`) and `revoked_tokens` send the same payloads (migration
//!   `20261122030002_security_notify.sql`).
//! - Revoked token ids (`revoked_tokens`, unexpired, at most
//!   [`MAX_REVOKED_JTIS`]) are held the same way: loaded with the keys, and
//!   `security.tokens.revoke` notifies `jti:<exp>:<jti>` in its insert. A
//!   token is then checked against the deny-list and its key's revocation
//!   in memory ([`KeyCache::token_status`]) when the table is live and holds
//!   the token's key; otherwise by the Redis / PostgreSQL round trip.
//! - Only the listener writes the table; a lookup that misses goes to
//!   PostgreSQL and does not insert (so a row read just before a
//!   revocation can never be put back after it).
//!
//! There is deliberately no negative cache: every refused key takes the
//! same path (table, HMAC, constant-time comparison, then one PostgreSQL
//! lookup), so unknown ids and wrong secrets cost the same; a negative
//! cache would make repeated unknown ids cheaper than wrong secrets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::apikey::Digest;
use crate::keys::KeyRow;

/// The notification channel; the payload is a key id, or
/// [`JTI_PREFIX`]`<exp unix s>:<jti>` for a revoked token.
pub const CHANNEL: &str = "ymera_api_keys";
/// Payload prefix of a token revocation.
pub const JTI_PREFIX: &str = "jti:";
/// Most revoked token ids held in memory; beyond, the deny-list is asked
/// in Redis / PostgreSQL per call.
pub const MAX_REVOKED_JTIS: usize = 100_000;
/// Most keys held in memory (the rest are read from PostgreSQL per call).
pub const MAX_CACHED_KEYS: usize = 200_000;
/// Full reload period.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// How often the listener checks that it still receives: it sends itself a
/// notification on the channel ([`PING_PREFIX`]) and gives up on the
/// connection when the previous one has not come back within this period
/// (a silently dead connection would otherwise miss revocations).
pub const PING_EVERY: Duration = Duration::from_secs(5);
/// Payload prefix of the listeners' own pings (never a key id: ids are base62).
const PING_PREFIX: &str = "ping:";
/// Payload prefix of an acknowledgement: `ack:<replica>:<applied payload>`.
const ACK_PREFIX: &str = "ack:";
/// A replica whose ping was seen this recently is waited for by revocations.
const PEER_LIVE: Duration = Duration::from_secs(12);
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
#[derive(Debug)]
pub struct KeyCache {
    /// This replica's id in pings and acknowledgements.
    me: String,
    /// Other replicas' listeners, by the time their last ping was seen.
    peers: Mutex<HashMap<String, std::time::Instant>>,
    keys: RwLock<HashMap<String, Arc<CachedKey>>>,
    live: AtomicBool,
    /// Woken after each applied notification and each full load.
    applied: Notify,
    /// Full loads begun / completed (a load begun after a commit holds it).
    loads_begun: AtomicU64,
    loads_done: AtomicU64,
    /// Payloads a local caller is waiting for → the replicas (this one
    /// included) that have applied them.
    expected: Mutex<HashMap<String, HashSet<String>>>,
    /// Revoked token ids → their expiry (unix s); `None` when more than
    /// [`MAX_REVOKED_JTIS`] are revoked (the deny-list is then asked per call).
    revoked_jtis: RwLock<Option<HashMap<String, i64>>>,
}

/// What the table says about a token's revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Neither the token nor its key is revoked.
    Valid,
    /// The `jti` is on the deny-list.
    TokenRevoked,
    /// The API key it was issued from is revoked.
    KeyRevoked,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache {
            me: uuid::Uuid::now_v7().simple().to_string(),
            peers: Mutex::default(),
            keys: RwLock::default(),
            live: AtomicBool::default(),
            applied: Notify::default(),
            loads_begun: AtomicU64::default(),
            loads_done: AtomicU64::default(),
            expected: Mutex::default(),
            revoked_jtis: RwLock::default(),
        }
    }
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

    /// The revocation state of a token (its `jti` and the key it was issued
    /// from) from memory: `None` when the table cannot say for sure (not
    /// live, the key not held, or more revoked tokens than fit), and the
    /// deny-list must be asked.
    pub fn token_status(&self, jti: &str, key_id: &str) -> Option<TokenStatus> {
        if !self.is_live() {
            return None;
        }
        let key = self.get(key_id)?;
        let now = Utc::now().timestamp();
        let jti_revoked = self
            .revoked_jtis
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .get(jti)
            .is_some_and(|&exp| exp >= now);
        Some(match (jti_revoked, key.revoked_at.is_some()) {
            (true, _) => TokenStatus::TokenRevoked,
            (false, true) => TokenStatus::KeyRevoked,
            (false, false) => TokenStatus::Valid,
        })
    }

    fn replace_jtis(&self, rows: Vec<(String, DateTime<Utc>)>) {
        let fresh = (rows.len() <= MAX_REVOKED_JTIS).then(|| {
            rows.into_iter()
                .map(|(jti, exp)| (jti, exp.timestamp()))
                .collect::<HashMap<_, _>>()
        });
        *self.revoked_jtis.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    fn add_jti(&self, payload: &str) {
        let mut jtis = self.revoked_jtis.write().unwrap_or_else(|p| p.into_inner());
        let Some(map) = jtis.as_mut() else {
            return;
        };
        let parsed = payload
            .split_once(':')
            .and_then(|(exp, jti)| Some((exp.parse::<i64>().ok()?, jti)));
        match parsed {
            Some((exp, jti)) if map.len() < MAX_REVOKED_JTIS || map.contains_key(jti) => {
                let entry = map.entry(jti.to_owned()).or_insert(exp);
                *entry = (*entry).max(exp);
            }
            // Full or unreadable: stop answering from memory.
            _ => *jtis = None,
        }
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

    /// Marks that a notification for `key_id` is expected; call before the
    /// statement that sends it, then [`KeyCache::wait_seen`].
    pub fn expect(&self, key_id: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned(), HashSet::new());
    }

    /// Waits (at most `limit`) until every replica's table holds the change
    /// announced with [`KeyCache::expect`] and since committed. This
    /// replica: its notification was applied, or a full load that began
    /// after the commit has completed (after a reconnect, when the
    /// notification was lost). Every other replica whose listener pinged
    /// within the last [`PEER_LIVE`]: it acknowledged applying the
    /// notification (`ack:<replica>:<payload>` on the channel, sent once
    /// the stale entry is gone). A replica without a working listener does
    /// not use its table (it asks PostgreSQL), so it needs no waiting for.
    /// Returns whether everything was seen in time.
    pub async fn wait_seen(&self, key_id: &str, limit: Duration) -> bool {
        let base = self.loads_begun.load(Ordering::Acquire);
        let wait = async {
            loop {
                let notified = self.applied.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let peers: Vec<String> = {
                    let now = std::time::Instant::now();
                    self.peers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|(_, seen)| now.duration_since(**seen) < PEER_LIVE)
                        .map(|(id, _)| id.clone())
                        .collect()
                };
                let done = match self
                    .expected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(key_id)
                {
                    None => true,
                    Some(acked) => {
                        (acked.contains(&self.me) || self.loads_done.load(Ordering::Acquire) > base)
                            && peers.iter().all(|peer| acked.contains(peer))
                    }
                };
                if done {
                    return true;
                }
                notified.await;
            }
        };
        let seen = tokio::time::timeout(limit, wait).await.unwrap_or(false);
        self.forget(key_id);
        seen
    }

    /// Drops an [`KeyCache::expect`] whose statement failed.
    pub fn forget(&self, key_id: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }

    /// Records that `replica` has applied `payload`.
    fn acked(&self, replica: &str, payload: &str) {
        if let Some(acked) = self
            .expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(payload)
        {
            acked.insert(replica.to_owned());
        }
        self.applied.notify_waiters();
    }

    fn peer_seen(&self, replica: &str) {
        if replica != self.me {
            self.peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(replica.to_owned(), std::time::Instant::now());
        }
    }
}

/// The notification payload of one revocation of `key_id`:
/// `<key id>:<nonce>`, distinct from any other notification about the key
/// (so waiting for it is not satisfied by an earlier one).
pub fn revocation_payload(key_id: &str) -> String {
    format!("{key_id}:{}", uuid::Uuid::now_v7().simple())
}

/// Tells the other replicas that this one has applied `payload`.
fn acknowledge(pool: &PgPool, cache: &KeyCache, payload: &str) {
    cache.acked(&cache.me, payload);
    let pool = pool.clone();
    let ack = format!("{ACK_PREFIX}{}:{payload}", cache.me);
    tokio::spawn(async move {
        if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&ack)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %err, "cannot acknowledge a key table notification");
        }
    });
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

/// Unexpired revoked token ids (one more than fits, to detect overflow).
async fn load_jtis(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > now() LIMIT $1")
        .bind(MAX_REVOKED_JTIS as i64 + 1)
        .fetch_all(pool)
        .await
}

/// Loads keys and revoked token ids whole (notifications received
/// meanwhile wait in the listener and are applied afterwards).
async fn full_load(pool: &PgPool, cache: &KeyCache) -> Result<(), sqlx::Error> {
    let number = cache.loads_begun.fetch_add(1, Ordering::AcqRel) + 1;
    let keys = load_all(pool).await?;
    let jtis = load_jtis(pool).await?;
    cache.replace_all(keys);
    cache.replace_jtis(jtis);
    cache.loads_done.fetch_max(number, Ordering::AcqRel);
    cache.applied.notify_waiters();
    Ok(())
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
    full_load(pool, cache).await?;
    cache.set_live(true);
    tracing::info!(keys = cache.len(), "API key table loaded");
    let mut reload = tokio::time::interval(RELOAD_EVERY);
    reload.tick().await;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = cache.me.clone();
    let mut sequence = 0u64;
    let mut pending: Option<String> = None;
    loop {
        // Biased: buffered notifications (our own ping's echo included)
        // are drained before a ping or reload tick is looked at.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            received = listener.try_recv() => {
                let Some(notification) = received? else {
                    // Connection lost: notifications may be missing.
                    anyhow::bail!("connection lost");
                };
                let payload = notification.payload();
                if let Some(ping) = payload.strip_prefix(PING_PREFIX) {
                    if pending.as_deref() == Some(payload) {
                        pending = None;
                    }
                    if let Some((replica, _)) = ping.split_once(':') {
                        cache.peer_seen(replica);
                    }
                    continue;
                }
                if let Some(ack) = payload.strip_prefix(ACK_PREFIX) {
                    if let Some((replica, applied)) = ack.split_once(':') {
                        cache.acked(replica, applied);
                    }
                    continue;
                }
                if let Some(revoked) = payload.strip_prefix(JTI_PREFIX) {
                    cache.add_jti(revoked);
                    acknowledge(pool, cache, payload);
                    continue;
                }
                // A key id (`<id>` or `<id>:<nonce>`): drop the entry
                // (lookups go to PostgreSQL), say so, then put the fresh
                // row back. Notifications are applied one at a time in
                // commit order, so a re-read is never older than the change
                // it was sent for.
                let key_id = payload.split_once(':').map_or(payload, |(id, _)| id);
                cache.remove(key_id);
                acknowledge(pool, cache, payload);
                match crate::keys::find(pool, key_id).await {
                    Ok(Some(row)) => cache.put(row),
                    Ok(None) => {}
                    Err(err) => {
                        // The entry stays removed: lookups go to PostgreSQL.
                        tracing::warn!(error = %err, "cannot re-read a notified API key");
                    }
                }
            }
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
                full_load(pool, cache).await?;
            }
        }
    }
}
