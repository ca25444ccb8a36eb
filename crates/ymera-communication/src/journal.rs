//! The delivery journal: every message and every change of a copy's delivery
//! state is written to PostgreSQL through one batching writer task.
//!
//! Callers await their write, so a copy is acknowledged to JetStream only
//! after its new state is stored (a crash never loses a `delivered`), while
//! concurrent writes share one transaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::envelope::Envelope;

/// Most operations written in one transaction.
pub const MAX_BATCH: usize = 256;
/// Most operations queued for the writer.
pub const QUEUE_CAPACITY: usize = 8192;
/// Attempts at writing one batch before its callers get an error.
const WRITE_ATTEMPTS: u32 = 3;

/// Where a copy of a message (one recipient) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Stored in JetStream, not yet attempted.
    Accepted,
    /// The recipient acknowledged it.
    Delivered,
    /// An attempt failed; another is scheduled.
    Retrying,
    /// Waiting for the recipient's circuit to close; no attempt spent.
    Deferred,
    /// Moved to `YMERA_DLQ` after the last attempt failed.
    DeadLettered,
    /// Its `expires_at` passed before delivery.
    Expired,
}

impl DeliveryState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Accepted => "accepted",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Deferred => "deferred",
            DeliveryState::DeadLettered => "dead_lettered",
            DeliveryState::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            DeliveryState::Accepted,
            DeliveryState::Delivered,
            DeliveryState::Retrying,
            DeliveryState::Deferred,
            DeliveryState::DeadLettered,
            DeliveryState::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Final states never change again (except by an explicit DLQ replay).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered | DeliveryState::DeadLettered | DeliveryState::Expired
        )
    }
}

/// A new state of one copy.
#[derive(Debug, Clone)]
pub struct DeliveryUpdate {
    /// The message.
    pub envelope: Arc<Envelope>,
    /// The recipient of this copy.
    pub recipient: String,
    /// The new state.
    pub state: DeliveryState,
    /// Attempts spent so far.
    pub attempts: u32,
    /// When an attempt was just made (None for deferrals and expiry).
    pub attempted_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub error: Option<String>,
    /// Accept-to-acknowledgement time, for deliveries.
    pub latency_ms: Option<f64>,
    /// When the copy was accepted.
    pub accepted_at: DateTime<Utc>,
}

enum Op {
    Record(Arc<Envelope>, DateTime<Utc>),
    Delivery(DeliveryUpdate),
}

struct Job {
    op: Op,
    done: oneshot::Sender<Result<(), String>>,
}

/// Handle to the batching writer.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Job>,
    pool: PgPool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the writer task on `pool`; it ends when every handle is dropped.
    pub fn start(pool: PgPool) -> Journal {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(writer(pool.clone(), rx));
        Journal { tx, pool }
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records an accepted message: its history row, one `accepted` delivery
    /// row per recipient and its conversation. Idempotent per id.
    pub async fn record(
        &self,
        envelope: Arc<Envelope>,
        accepted_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        self.submit(Op::Record(envelope, accepted_at)).await
    }

    /// Stores a copy's new state (final states are never overwritten).
    pub async fn delivery(&self, update: DeliveryUpdate) -> Result<(), Error> {
        self.submit(Op::Delivery(update)).await
    }

    async fn submit(&self, op: Op) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job { op, done })
            .await
            .map_err(|_| Error::dependency_down("postgres"))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => {
                tracing::warn!(error = %reason, "journal write failed");
                Err(Error::dependency_down("postgres"))
            }
            Err(_) => Err(Error::dependency_down("postgres")),
        }
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut result = Err(String::new());
        for attempt in 0..WRITE_ATTEMPTS {
            result = write_batch(&pool, &batch).await.map_err(|e| e.to_string());
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        for job in batch.drain(..) {
            let _ = job.done.send(result.clone());
        }
    }
}

async fn write_batch(pool: &PgPool, batch: &[Job]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut touched = BTreeSet::new();
    for job in batch {
        match &job.op {
            Op::Record(envelope, accepted_at) => {
                insert_message(&mut tx, envelope).await?;
                sqlx::query(
                    "INSERT INTO message_deliveries (message_id, recipient, state, attempts, accepted_at) \
                     SELECT $1, r, 'accepted', 0, $3 FROM UNNEST($2::text[]) AS r \
                     ON CONFLICT (message_id, recipient) DO NOTHING",
                )
                .bind(envelope.id.to_string())
                .bind(&envelope.recipients)
                .bind(accepted_at)
                .execute(&mut *tx)
                .await?;
            }
            Op::Delivery(update) => {
                if update.state.is_final() {
                    // The history row may be missing if the agent crashed
                    // between the JetStream ack and its record.
                    insert_message(&mut tx, &update.envelope).await?;
                }
                upsert_delivery(&mut tx, update).await?;
                touched.insert(update.envelope.id.to_string());
            }
        }
    }
    if !touched.is_empty() {
        let ids: Vec<String> = touched.into_iter().collect();
        sqlx::query(
            "UPDATE message_history h SET status = s.status FROM ( \
               SELECT message_id, CASE \
                 WHEN bool_and(state = 'delivered') THEN 'delivered' \
                 WHEN bool_and(state IN ('delivered','dead_lettered','expired')) AND bool_or(state = 'dead_lettered') THEN 'dead_lettered' \
                 WHEN bool_and(state IN ('delivered','dead_lettered','expired')) THEN 'expired' \
                 ELSE 'accepted' END AS status \
               FROM message_deliveries WHERE message_id = ANY($1) GROUP BY message_id) s \
             WHERE h.message_id = s.message_id AND h.status IS DISTINCT FROM s.status",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Inserts the history row once; on the first insert also counts the
/// message in its conversation.
async fn insert_message(
    tx: &mut sqlx::PgConnection,
    envelope: &Envelope,
) -> Result<(), sqlx::Error> {
    let message_type = serde_json::to_value(envelope.message_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let priority = serde_json::to_value(envelope.priority)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let metadata = (!envelope.metadata.is_empty()).then_some(Json(&envelope.metadata));
    let inserted = sqlx::query(
        "INSERT INTO message_history (message_id, type, sender, recipients, subject, payload, status, \
           created_at, metadata, conversation_id, correlation_id, priority, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'accepted', $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(envelope.id.to_string())
    .bind(message_type)
    .bind(&envelope.sender)
    .bind(Json(&envelope.recipients))
    .bind(&envelope.subject)
    .bind(Json(&envelope.payload))
    .bind(envelope.created_at)
    .bind(metadata)
    .bind(envelope.conversation_id.as_deref())
    .bind(envelope.correlation_id.map(|c| c.to_string()))
    .bind(priority)
    .bind(envelope.expires_at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(());
    }
    if let Some(conversation) = &envelope.conversation_id {
        let mut participants = vec![envelope.sender.clone()];
        participants.extend(envelope.recipients.iter().cloned());
        sqlx::query(
            "INSERT INTO conversation_archive (conversation_id, participants, topic, message_count, created_at, last_activity) \
             VALUES ($1, $2, $3, 1, $4, $4) \
             ON CONFLICT (conversation_id) DO UPDATE SET \
               message_count = conversation_archive.message_count + 1, \
               last_activity = GREATEST(conversation_archive.last_activity, EXCLUDED.last_activity), \
               created_at = LEAST(conversation_archive.created_at, EXCLUDED.created_at), \
               participants = (SELECT jsonb_agg(DISTINCT p ORDER BY p) FROM jsonb_array_elements_text( \
                   conversation_archive.participants || EXCLUDED.participants) AS p)",
        )
        .bind(conversation)
        .bind(Json(&participants))
        .bind(&envelope.subject)
        .bind(envelope.created_at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn upsert_delivery(
    tx: &mut sqlx::PgConnection,
    update: &DeliveryUpdate,
) -> Result<(), sqlx::Error> {
    let delivered_at = (update.state == DeliveryState::Delivered).then(Utc::now);
    sqlx::query(
        "INSERT INTO message_deliveries (message_id, recipient, state, attempts, accepted_at, \
           first_attempt_at, last_attempt_at, last_error, delivered_at, latency_ms, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, now()) \
         ON CONFLICT (message_id, recipient) DO UPDATE SET \
           state = EXCLUDED.state, \
           attempts = GREATEST(message_deliveries.attempts, EXCLUDED.attempts), \
           first_attempt_at = COALESCE(message_deliveries.first_attempt_at, EXCLUDED.first_attempt_at), \
           last_attempt_at = COALESCE(EXCLUDED.last_attempt_at, message_deliveries.last_attempt_at), \
           last_error = COALESCE(EXCLUDED.last_error, message_deliveries.last_error), \
           delivered_at = COALESCE(EXCLUDED.delivered_at, message_deliveries.delivered_at), \
           latency_ms = COALESCE(EXCLUDED.latency_ms, message_deliveries.latency_ms), \
           updated_at = now() \
         WHERE message_deliveries.state NOT IN ('delivered', 'dead_lettered', 'expired')",
    )
    .bind(update.envelope.id.to_string())
    .bind(&update.recipient)
    .bind(update.state.as_str())
    .bind(i32::try_from(update.attempts).unwrap_or(i32::MAX))
    .bind(update.accepted_at)
    .bind(update.attempted_at)
    .bind(update.error.as_deref())
    .bind(delivered_at)
    .bind(update.latency_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The stored state and attempts of one copy, if any.
pub async fn copy_state(
    pool: &PgPool,
    id: Uuid,
    recipient: &str,
) -> Result<Option<(DeliveryState, u32)>, sqlx::Error> {
    let row: Option<(String, i32)> = sqlx::query_as(
        "SELECT state, attempts FROM message_deliveries WHERE message_id = $1 AND recipient = $2",
    )
    .bind(id.to_string())
    .bind(recipient)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(state, attempts)| {
        DeliveryState::parse(&state).map(|s| (s, u32::try_from(attempts.max(0)).unwrap_or(0)))
    }))
}

/// Resets a dead-lettered copy for a replay from the DLQ.
pub async fn reset_for_replay(pool: &PgPool, id: &str, recipient: &str) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE message_deliveries SET state = 'accepted', attempts = 0, updated_at = now() \
         WHERE message_id = $1 AND recipient = $2",
    )
    .bind(id)
    .bind(recipient)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE message_history SET status = 'accepted' WHERE message_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Moves history older than `age` (and its delivery rows) to
/// `message_history_archive`, at most `limit` messages; returns how many.
pub async fn archive_older_than(
    pool: &PgPool,
    age: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    let mut tx = pool.begin().await?;
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT message_id FROM message_history WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(cutoff)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
    let moved = sqlx::query(
        "WITH moved AS (DELETE FROM message_history WHERE message_id = ANY($1) RETURNING *) \
         INSERT INTO message_history_archive SELECT moved.*, now() FROM moved \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM message_deliveries WHERE message_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(moved)
}
