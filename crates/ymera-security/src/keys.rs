//! API key records in PostgreSQL and the batched usage counter.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Most distinct keys buffered between usage flushes.
pub const MAX_PENDING_USAGE: usize = 100_000;

/// A stored key, hash included (never leaves this crate).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub key_id: String,
    pub secret_hash: Vec<u8>,
    pub owner: String,
    pub tenant: String,
    pub permissions: Vec<String>,
    pub description: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
    pub usage_count: i64,
}

/// What `security.keys.list` shows of a key: never the secret or its hash.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct KeyInfo {
    pub key_id: String,
    pub owner: String,
    pub tenant: String,
    pub permissions: Vec<String>,
    pub description: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used: Option<DateTime<Utc>>,
    pub usage_count: i64,
    /// `active`, `expired` or `revoked`.
    pub status: String,
}

impl From<KeyRow> for KeyInfo {
    fn from(row: KeyRow) -> KeyInfo {
        let status = if row.revoked_at.is_some() {
            "revoked"
        } else if row.expires_at <= Utc::now() {
            "expired"
        } else {
            "active"
        };
        KeyInfo {
            key_id: row.key_id,
            owner: row.owner,
            tenant: row.tenant,
            permissions: row.permissions,
            description: row.description,
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used: row.last_used,
            usage_count: row.usage_count,
            status: status.to_owned(),
        }
    }
}

macro_rules! columns {
    () => {
        "key_id, secret_hash, owner, tenant, permissions, description, created_by, \
         created_at, expires_at, revoked_at, last_used, usage_count"
    };
}

/// One key by id (`None` when unknown).
pub async fn find(pool: &PgPool, key_id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE key_id = $1"
    ))
    .bind(key_id)
    .fetch_optional(pool)
    .await
}

/// Inserts a key and notifies every replica's key table
/// ([`crate::keycache::CHANNEL`], delivered at commit).
pub async fn insert(pool: &PgPool, row: &KeyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH inserted AS (INSERT INTO api_keys (key_id, secret_hash, owner, tenant, permissions, description, \
         created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING key_id) \
         SELECT pg_notify($10, key_id) FROM inserted",
    )
    .bind(&row.key_id)
    .bind(&row.secret_hash)
    .bind(&row.owner)
    .bind(&row.tenant)
    .bind(&row.permissions)
    .bind(&row.description)
    .bind(&row.created_by)
    .bind(row.created_at)
    .bind(row.expires_at)
    .bind(crate::keycache::CHANNEL)
    .execute(pool)
    .await
    .map(|_| ())
}

/// Keys of a tenant (all tenants when `None`), newest first.
pub async fn list(
    pool: &PgPool,
    tenant: Option<&str>,
    include_revoked: bool,
    limit: i64,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE ($1::text IS NULL OR tenant = $1) \
         AND ($2 OR revoked_at IS NULL) ORDER BY created_at DESC LIMIT $3"
    ))
    .bind(tenant)
    .bind(include_revoked)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks a key revoked (idempotent) and returns it; every replica's key
/// table is notified in the same statement (delivered at commit) with
/// `payload` (`<key id>:<nonce>`, see [`crate::keycache`]).
pub async fn revoke(
    pool: &PgPool,
    key_id: &str,
    payload: &str,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "WITH revoked AS (UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) \
         WHERE key_id = $1 RETURNING ",
        columns!(),
        ") SELECT *, pg_notify($2, $3) AS notified FROM revoked"
    ))
    .bind(key_id)
    .bind(crate::keycache::CHANNEL)
    .bind(payload)
    .fetch_optional(pool)
    .await
}

/// Usage counted in memory and written in batches.
#[derive(Debug, Default)]
pub struct UsageCounter {
    pending: Mutex<HashMap<String, (i64, DateTime<Utc>)>>,
}

impl UsageCounter {
    /// Counts one use of `key_id` now. Returns true when the buffer is
    /// full and should be flushed early.
    pub fn record(&self, key_id: &str) -> bool {
        let now = Utc::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // No allocation for a key already counted since the last flush.
        if let Some(entry) = pending.get_mut(key_id) {
            entry.0 += 1;
            entry.1 = now;
            return false;
        }
        pending.insert(key_id.to_owned(), (1, now));
        pending.len() >= MAX_PENDING_USAGE
    }

    /// Writes the pending counts in one statement.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let batch: Vec<(String, (i64, DateTime<Utc>))> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(batch.len());
        let mut counts = Vec::with_capacity(batch.len());
        let mut times = Vec::with_capacity(batch.len());
        for (id, (n, t)) in &batch {
            ids.push(id.clone());
            counts.push(*n);
            times.push(*t);
        }
        let result = sqlx::query(
            "UPDATE api_keys AS k SET usage_count = k.usage_count + d.n, \
             last_used = GREATEST(COALESCE(k.last_used, d.t), d.t) \
             FROM UNNEST($1::text[], $2::bigint[], $3::timestamptz[]) AS d(id, n, t) \
             WHERE k.key_id = d.id",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&times)
        .execute(pool)
        .await;
        if let Err(err) = result {
            // Put the counts back so they are not lost.
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (id, (n, t)) in batch {
                let entry = pending.entry(id).or_insert((0, t));
                entry.0 += n;
                entry.1 = entry.1.max(t);
            }
            return Err(err);
        }
        Ok(())
    }
}
