//! The delivery journal: every message and every change of a copy's delivery
//! state is written to PostgreSQL through one batching writer task.
//!
//! Callers await their write, so a copy is acknowledged to JetStream only
//! after its new state is stored (a crash never loses a `delivered`), while
//! concurrent writes share one transaction.

use std::collections::{BTreeMap, BTreeSet};
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
    // Set-based: a handful of statements per batch, whatever its size.
    let mut messages: BTreeMap<Uuid, &Envelope> = BTreeMap::new();
    let mut accepted: Vec<(&Envelope, DateTime<Utc>)> = Vec::new();
    let mut updates: BTreeMap<(Uuid, &str), MergedUpdate> = BTreeMap::new();
    for job in batch {
        match &job.op {
            Op::Record(envelope, accepted_at) => {
                messages.insert(envelope.id, envelope);
                accepted.push((envelope, *accepted_at));
            }
            Op::Delivery(update) => {
                if update.state.is_final() {
                    // The history row may be missing if the agent crashed
                    // between the JetStream ack and its record.
                    messages.insert(update.envelope.id, &update.envelope);
                }
                updates
                    .entry((update.envelope.id, update.recipient.as_str()))
                    .and_modify(|merged| merged.merge(update))
                    .or_insert_with(|| MergedUpdate::from(update));
            }
        }
    }
    let mut tx = pool.begin().await?;
    insert_messages(&mut tx, &messages).await?;
    insert_accepted(&mut tx, &accepted).await?;
    upsert_deliveries(&mut tx, &updates).await?;
    if !updates.is_empty() {
        let ids: Vec<String> = updates.keys().map(|(id, _)| id.to_string()).collect();
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

/// Several updates of one copy in one batch, folded into one row.
struct MergedUpdate {
    state: DeliveryState,
    attempts: u32,
    first_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    error: Option<String>,
    latency_ms: Option<f64>,
    accepted_at: DateTime<Utc>,
}

impl MergedUpdate {
    fn from(update: &DeliveryUpdate) -> Self {
        MergedUpdate {
            state: update.state,
            attempts: update.attempts,
            first_attempt_at: update.attempted_at,
            last_attempt_at: update.attempted_at,
            error: update.error.clone(),
            latency_ms: update.latency_ms,
            accepted_at: update.accepted_at,
        }
    }

    /// Folds a later update in; a final state is never replaced.
    fn merge(&mut self, later: &DeliveryUpdate) {
        if self.state.is_final() && !later.state.is_final() {
            return;
        }
        self.state = later.state;
        self.attempts = self.attempts.max(later.attempts);
        self.first_attempt_at = self.first_attempt_at.or(later.attempted_at);
        self.last_attempt_at = later.attempted_at.or(self.last_attempt_at);
        self.error = later.error.clone().or(self.error.take());
        self.latency_ms = later.latency_ms.or(self.latency_ms);
    }
}

fn enum_text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// New messages of one conversation in a batch: count, the earliest, the
/// latest instant and every participant.
type NewInConversation<'a> = (i32, &'a Envelope, DateTime<Utc>, BTreeSet<&'a str>);

/// Inserts the history rows not yet stored; counts the new ones in their
/// conversations.
async fn insert_messages(
    tx: &mut sqlx::PgConnection,
    messages: &BTreeMap<Uuid, &Envelope>,
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let list: Vec<&Envelope> = messages.values().copied().collect();
    let inserted: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO message_history (message_id, type, sender, recipients, subject, payload, status, \
           created_at, metadata, conversation_id, correlation_id, priority, expires_at) \
         SELECT id, typ, sender, recipients::jsonb, subject, payload::jsonb, 'accepted', created_at, \
                metadata::jsonb, conversation_id, correlation_id, priority, expires_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[]) \
           AS t(id, typ, sender, recipients, subject, payload, created_at, metadata, conversation_id, \
                correlation_id, priority, expires_at) \
         ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
    )
    .bind(list.iter().map(|e| e.id.to_string()).collect::<Vec<_>>())
    .bind(list.iter().map(|e| enum_text(e.message_type)).collect::<Vec<_>>())
    .bind(list.iter().map(|e| e.sender.clone()).collect::<Vec<_>>())
    .bind(list.iter().map(|e| json_text(&e.recipients)).collect::<Vec<_>>())
    .bind(list.iter().map(|e| e.subject.clone()).collect::<Vec<_>>())
    .bind(list.iter().map(|e| json_text(&e.payload)).collect::<Vec<_>>())
    .bind(list.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .bind(
        list.iter()
            .map(|e| (!e.metadata.is_empty()).then(|| json_text(&e.metadata)))
            .collect::<Vec<_>>(),
    )
    .bind(list.iter().map(|e| e.conversation_id.clone()).collect::<Vec<_>>())
    .bind(list.iter().map(|e| e.correlation_id.map(|c| c.to_string())).collect::<Vec<_>>())
    .bind(list.iter().map(|e| enum_text(e.priority)).collect::<Vec<_>>())
    .bind(list.iter().map(|e| e.expires_at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    // New messages per conversation: count, first and last instant, everyone seen.
    let mut conversations: BTreeMap<&str, NewInConversation<'_>> = BTreeMap::new();
    for (id,) in &inserted {
        let Some(envelope) = id.parse::<Uuid>().ok().and_then(|id| messages.get(&id)) else {
            continue;
        };
        let Some(conversation) = envelope.conversation_id.as_deref() else {
            continue;
        };
        let entry = conversations
            .entry(conversation)
            .or_insert_with(|| (0, *envelope, envelope.created_at, BTreeSet::new()));
        entry.0 += 1;
        if envelope.created_at < entry.1.created_at {
            entry.1 = envelope;
        }
        entry.2 = entry.2.max(envelope.created_at);
        entry.3.insert(envelope.sender.as_str());
        entry
            .3
            .extend(envelope.recipients.iter().map(String::as_str));
    }
    for (conversation, (count, first, last, participants)) in conversations {
        let participants: Vec<&str> = participants.into_iter().collect();
        sqlx::query(
            "INSERT INTO conversation_archive (conversation_id, participants, topic, message_count, created_at, last_activity) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (conversation_id) DO UPDATE SET \
               message_count = conversation_archive.message_count + EXCLUDED.message_count, \
               last_activity = GREATEST(conversation_archive.last_activity, EXCLUDED.last_activity), \
               created_at = LEAST(conversation_archive.created_at, EXCLUDED.created_at), \
               participants = (SELECT jsonb_agg(DISTINCT p ORDER BY p) FROM jsonb_array_elements_text( \
                   conversation_archive.participants || EXCLUDED.participants) AS p)",
        )
        .bind(conversation)
        .bind(Json(&participants))
        .bind(&first.subject)
        .bind(count)
        .bind(first.created_at)
        .bind(last)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One `accepted` delivery row per recipient of each recorded message.
async fn insert_accepted(
    tx: &mut sqlx::PgConnection,
    accepted: &[(&Envelope, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if accepted.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut recipients = Vec::new();
    let mut at = Vec::new();
    for (envelope, accepted_at) in accepted {
        for recipient in &envelope.recipients {
            ids.push(envelope.id.to_string());
            recipients.push(recipient.clone());
            at.push(*accepted_at);
        }
    }
    sqlx::query(
        "INSERT INTO message_deliveries (message_id, recipient, state, attempts, accepted_at) \
         SELECT id, recipient, 'accepted', 0, at \
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) AS t(id, recipient, at) \
         ON CONFLICT (message_id, recipient) DO NOTHING",
    )
    .bind(ids)
    .bind(recipients)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Stores each copy's new state; final states are never overwritten.
async fn upsert_deliveries(
    tx: &mut sqlx::PgConnection,
    updates: &BTreeMap<(Uuid, &str), MergedUpdate>,
) -> Result<(), sqlx::Error> {
    if updates.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<(&(Uuid, &str), &MergedUpdate)> = updates.iter().collect();
    sqlx::query(
        "INSERT INTO message_deliveries (message_id, recipient, state, attempts, accepted_at, \
           first_attempt_at, last_attempt_at, last_error, delivered_at, latency_ms, updated_at) \
         SELECT id, recipient, state, attempts, accepted_at, first_at, last_at, error, delivered_at, latency, now() \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::timestamptz[], \
                     $7::timestamptz[], $8::text[], $9::timestamptz[], $10::float8[]) \
           AS t(id, recipient, state, attempts, accepted_at, first_at, last_at, error, delivered_at, latency) \
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
    .bind(rows.iter().map(|((id, _), _)| id.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|((_, r), _)| (*r).to_owned()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, u)| u.state.as_str().to_owned()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, u)| i32::try_from(u.attempts).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, u)| u.accepted_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, u)| u.first_attempt_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, u)| u.last_attempt_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, u)| u.error.clone()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, u)| (u.state == DeliveryState::Delivered).then_some(now))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, u)| u.latency_ms).collect::<Vec<_>>())
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

#[cfg(test)]
mod tests {
    use super::*;
    use ymera_core::envelope::MessageType;

    fn update(state: DeliveryState, attempts: u32, error: Option<&str>) -> DeliveryUpdate {
        DeliveryUpdate {
            envelope: Arc::new(Envelope::new(
                MessageType::Event,
                "a",
                vec!["b".into()],
                "s",
                serde_json::Value::Null,
            )),
            recipient: "b".into(),
            state,
            attempts,
            attempted_at: Some(Utc::now()),
            error: error.map(str::to_owned),
            latency_ms: None,
            accepted_at: Utc::now(),
        }
    }

    #[test]
    fn states_parse_and_finality() {
        for state in [
            DeliveryState::Accepted,
            DeliveryState::Delivered,
            DeliveryState::Retrying,
            DeliveryState::Deferred,
            DeliveryState::DeadLettered,
            DeliveryState::Expired,
        ] {
            assert_eq!(DeliveryState::parse(state.as_str()), Some(state));
        }
        assert!(DeliveryState::Delivered.is_final());
        assert!(!DeliveryState::Retrying.is_final());
        assert_eq!(DeliveryState::parse("lost"), None);
    }

    #[test]
    fn merged_updates_keep_final_states_and_the_first_attempt() {
        let first = update(DeliveryState::Retrying, 1, Some("boom"));
        let mut merged = MergedUpdate::from(&first);
        merged.merge(&update(DeliveryState::Delivered, 2, None));
        assert_eq!(merged.state, DeliveryState::Delivered);
        assert_eq!(merged.attempts, 2);
        assert_eq!(merged.first_attempt_at, first.attempted_at);
        assert_eq!(merged.error.as_deref(), Some("boom"));
        merged.merge(&update(DeliveryState::Deferred, 0, None));
        assert_eq!(merged.state, DeliveryState::Delivered, "final state kept");
    }
}
