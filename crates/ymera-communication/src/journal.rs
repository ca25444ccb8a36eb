//! The delivery journal: every message and every change of a copy's delivery
//! state is written to PostgreSQL through one batching writer task.
//!
//! Delivery updates are awaited, so a copy is acknowledged to JetStream only
//! after its new state is stored (a crash never loses a `delivered`), while
//! concurrent writes share one transaction. The history row of a new message
//! is queued, not awaited: `communication.send` answers once JetStream holds
//! the copies, and a message whose row was lost (a crash between the two, or
//! PostgreSQL down) gets it with the first final state of one of its copies.
//!
//! A new message's history row is held back briefly ([`HOLD`]) so that it
//! is usually inserted once with its final status: a single-recipient
//! message delivered within the hold costs one insert, with no later status
//! update. The row is written in the same transaction as the first final
//! state of one of its copies (so an acknowledged copy always has its
//! history row), when the hold ends, or at a barrier ([`Journal::flush`]).
//!
//! The writer is sharded by message id: every write about one message goes
//! through the same shard, in order, so a message's row is always written
//! before (or in the same transaction as) its copies' final states, and
//! the overall status of a message with several recipients is computed by
//! one writer at a time. A copy without a row in `message_deliveries` is
//! `accepted` (nothing happened to it yet): acceptance is the history row.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::envelope::Envelope;

/// Most operations written in one transaction.
pub const MAX_BATCH: usize = 512;
/// Most operations queued for one writer shard (send waits when it is full).
pub const QUEUE_CAPACITY: usize = 8192;
/// Writer shards: concurrent transactions on separate connections.
pub const WRITERS: usize = 2;
/// Longest time a new message's history row waits for its copies' final
/// states before it is written as `accepted`.
pub const HOLD: Duration = Duration::from_millis(1000);
/// Most history rows held per shard; past it the oldest are written.
pub const MAX_HELD: usize = 20_000;
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
    Record(Arc<Envelope>),
    Delivery(DeliveryUpdate),
    /// Completes once every earlier operation of its shard is written.
    Barrier,
}

struct Job {
    op: Op,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the batching writers.
#[derive(Clone)]
pub struct Journal {
    shards: Arc<[mpsc::Sender<Job>]>,
    pool: PgPool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the writer tasks on `pool`; they end when every handle is dropped.
    pub fn start(pool: PgPool) -> Journal {
        let settle = Settle::default();
        let shards: Vec<mpsc::Sender<Job>> = (0..WRITERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                tokio::spawn(writer(pool.clone(), rx, settle.clone()));
                tx
            })
            .collect();
        tokio::spawn(settler(pool.clone(), settle));
        Journal {
            shards: shards.into(),
            pool,
        }
    }

    fn shard(&self, id: Uuid) -> &mpsc::Sender<Job> {
        // `start` always makes WRITERS (> 0) shards.
        &self.shards[(id.as_u128() % self.shards.len() as u128) as usize]
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Queues the history row of an accepted message (and its
    /// conversation); idempotent per id. Waits only while the shard's queue
    /// is full, not for the write.
    pub async fn record(&self, envelope: Arc<Envelope>) -> Result<(), Error> {
        let shard = self.shard(envelope.id);
        shard
            .send(Job {
                op: Op::Record(envelope),
                done: None,
            })
            .await
            .map_err(|_| Error::dependency_down("postgres"))
    }

    /// Stores a copy's new state (final states are never overwritten).
    pub async fn delivery(&self, update: DeliveryUpdate) -> Result<(), Error> {
        let shard = self.shard(update.envelope.id).clone();
        self.submit(&shard, Op::Delivery(update)).await
    }

    /// Waits until everything queued before this call is written (or failed).
    pub async fn flush(&self) -> Result<(), Error> {
        for shard in self.shards.iter() {
            self.submit(shard, Op::Barrier).await?;
        }
        Ok(())
    }

    async fn submit(&self, shard: &mpsc::Sender<Job>, op: Op) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        shard
            .send(Job {
                op,
                done: Some(done),
            })
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

/// History rows to write in one batch, with the status each is written with.
type Released = BTreeMap<Uuid, (Arc<Envelope>, &'static str)>;

/// The history rows a writer shard holds back (see [`HOLD`]).
#[derive(Default)]
struct Holding {
    rows: HashMap<Uuid, Arc<Envelope>>,
    /// Hold deadlines in arrival order (entries of released rows linger
    /// until their deadline and are skipped).
    order: VecDeque<(Instant, Uuid)>,
}

impl Holding {
    fn hold(&mut self, envelope: &Arc<Envelope>) {
        if self.rows.contains_key(&envelope.id) {
            return;
        }
        self.order.push_back((Instant::now() + HOLD, envelope.id));
        self.rows.insert(envelope.id, envelope.clone());
    }

    /// A copy's new state: the first final one releases its message's row,
    /// with the status that one final copy gives it.
    fn note(&mut self, update: &DeliveryUpdate, released: &mut Released) {
        if !update.state.is_final() {
            return;
        }
        if let Some(envelope) = self.rows.remove(&update.envelope.id) {
            let status = overall_status(envelope.recipients.len(), &[update.state]);
            released.insert(envelope.id, (envelope, status));
        }
    }

    /// Releases a row with no final copy yet: `accepted`.
    fn release(&mut self, id: Uuid, released: &mut Released) {
        if let Some(envelope) = self.rows.remove(&id) {
            released.insert(id, (envelope, "accepted"));
        }
    }

    fn release_all(&mut self, released: &mut Released) {
        let ids: Vec<Uuid> = self.rows.keys().copied().collect();
        for id in ids {
            self.release(id, released);
        }
        self.order.clear();
    }

    /// Releases the rows whose hold ended (and the oldest past [`MAX_HELD`]).
    fn release_due(&mut self, now: Instant, released: &mut Released) {
        while let Some(&(deadline, id)) = self.order.front() {
            if deadline > now && self.rows.len() <= MAX_HELD {
                break;
            }
            self.order.pop_front();
            self.release(id, released);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.order.front().map(|(deadline, _)| *deadline)
    }
}

/// A message's overall status from its copies' final states (one per
/// copy), as [`STATUS_SQL`] computes it from the stored rows.
fn overall_status(recipients: usize, finals: &[DeliveryState]) -> &'static str {
    if finals.len() < recipients {
        "accepted"
    } else if finals.iter().all(|s| *s == DeliveryState::Delivered) {
        "delivered"
    } else if finals.contains(&DeliveryState::DeadLettered) {
        "dead_lettered"
    } else {
        "expired"
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Job>, settle: Settle) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut holding = Holding::default();
    let mut open = true;
    while open || !holding.rows.is_empty() {
        let deadline = holding.next_deadline();
        tokio::select! {
            job = rx.recv(), if open => match job {
                Some(job) => batch.push(job),
                None => open = false,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut released = Released::new();
        for job in &batch {
            match &job.op {
                Op::Record(envelope) => holding.hold(envelope),
                Op::Delivery(update) => holding.note(update, &mut released),
                Op::Barrier => holding.release_all(&mut released),
            }
        }
        if open {
            holding.release_due(Instant::now(), &mut released);
        } else {
            holding.release_all(&mut released);
        }
        if batch.is_empty() && released.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let mut result = Err(String::new());
        for attempt in 0..WRITE_ATTEMPTS {
            result = write_batch(&pool, &batch, &released, &settle)
                .await
                .map_err(|e| e.to_string());
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        metrics::histogram!("ymera_comm_journal_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Err(reason) = &result
            && !released.is_empty()
        {
            tracing::warn!(error = %reason, messages = released.len(),
                "history rows not written; they are written with the copies' final states");
        }
        for job in batch.drain(..) {
            if let Some(done) = job.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

async fn write_batch(
    pool: &PgPool,
    batch: &[Job],
    released: &Released,
    settle: &Settle,
) -> Result<(), sqlx::Error> {
    // Set-based: a handful of statements per batch, whatever its size.
    let recorded: BTreeMap<Uuid, (&Envelope, &'static str)> = released
        .iter()
        .map(|(id, (envelope, status))| (*id, (&**envelope, *status)))
        .collect();
    // Messages with a copy newly final whose row is not written here: it
    // may be missing (ensure_history), and their status needs settling.
    let mut finished: BTreeMap<Uuid, &Envelope> = BTreeMap::new();
    let mut updates: BTreeMap<(Uuid, &str), MergedUpdate> = BTreeMap::new();
    for job in batch {
        match &job.op {
            Op::Record(_) | Op::Barrier => {}
            Op::Delivery(update) => {
                if update.state.is_final() && !released.contains_key(&update.envelope.id) {
                    finished.insert(update.envelope.id, &update.envelope);
                }
                updates
                    .entry((update.envelope.id, update.recipient.as_str()))
                    .and_modify(|merged| merged.merge(update))
                    .or_insert_with(|| MergedUpdate::from(update));
            }
        }
    }
    if recorded.is_empty() && updates.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let inserted = insert_messages(&mut tx, &recorded).await?;
    upsert_deliveries(&mut tx, &updates).await?;
    if !finished.is_empty() {
        ensure_history(&mut tx, &finished).await?;
    }
    tx.commit().await?;
    // A released row that was stored already (an id sent again after its
    // first row left the hold) kept its stored status: settle it too.
    let kept = recorded.keys().filter(|id| !inserted.contains(id));
    settle.add(finished.keys().chain(kept).copied());
    Ok(())
}

/// SQL for the overall status of the `message_history` row aliased `h`,
/// from its copies: `accepted` until every recipient's copy is final, then
/// `delivered` when all were, else `dead_lettered` when one was, else
/// `expired`. The one definition: the status and history endpoints compute
/// it live, the settler stores it in `message_history.status`.
pub const STATUS_SQL: &str = "(SELECT CASE \
    WHEN count(*) FILTER (WHERE d.state IN ('delivered', 'dead_lettered', 'expired')) \
         < jsonb_array_length(h.recipients) THEN 'accepted' \
    WHEN bool_and(d.state = 'delivered') THEN 'delivered' \
    WHEN bool_or(d.state = 'dead_lettered') THEN 'dead_lettered' \
    ELSE 'expired' END \
  FROM message_deliveries d WHERE d.message_id = h.message_id)";

/// Writes the history row of any message that has none (its record was
/// lost to a crash or a failed write) when one of its copies became final.
async fn ensure_history(
    tx: &mut sqlx::PgConnection,
    finished: &BTreeMap<Uuid, &Envelope>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = finished.keys().map(Uuid::to_string).collect();
    let existing: Vec<(String,)> =
        sqlx::query_as("SELECT message_id FROM message_history WHERE message_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
    let existing: BTreeSet<&str> = existing.iter().map(|(id,)| id.as_str()).collect();
    let missing: BTreeMap<Uuid, (&Envelope, &'static str)> = finished
        .iter()
        .zip(&ids)
        .filter(|(_, text)| !existing.contains(text.as_str()))
        .map(|((id, envelope), _)| (*id, (*envelope, "accepted")))
        .collect();
    insert_messages(&mut *tx, &missing).await.map(|_| ())
}

/// Most message ids waiting for the settler; past it the next run sweeps.
const MAX_UNSETTLED: usize = 200_000;
/// How often the settler stores overall statuses.
const SETTLE_EVERY: Duration = Duration::from_millis(500);
/// Most messages settled by one statement.
const SETTLE_CHUNK: usize = 5000;

/// Messages whose copies reached a final state since the settler last ran.
///
/// Storing the overall status is kept off the delivery path (a copy is
/// acknowledged once its own row is stored): the settler updates
/// `message_history.status` in bulk every [`SETTLE_EVERY`], and at start
/// sweeps every row still `accepted` (statuses a crash left unsettled).
#[derive(Clone, Default)]
struct Settle {
    inner: Arc<std::sync::Mutex<(BTreeSet<Uuid>, bool)>>,
}

impl Settle {
    fn add(&self, ids: impl Iterator<Item = Uuid>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if inner.0.len() >= MAX_UNSETTLED {
                inner.1 = true;
                break;
            }
            inner.0.insert(id);
        }
    }

    fn take(&self) -> (Vec<Uuid>, bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let ids = std::mem::take(&mut inner.0).into_iter().collect();
        (ids, std::mem::take(&mut inner.1))
    }
}

async fn settler(pool: PgPool, settle: Settle) {
    let mut sweep = true;
    // Runs while a writer (holding a clone) is alive.
    while Arc::strong_count(&settle.inner) > 1 {
        let (ids, overflowed) = settle.take();
        let result = if sweep || overflowed {
            settle_statuses(&pool, None).await
        } else {
            let mut result = Ok(());
            for chunk in ids.chunks(SETTLE_CHUNK) {
                result = settle_statuses(&pool, Some(chunk)).await;
                if result.is_err() {
                    break;
                }
            }
            result
        };
        sweep = match result {
            Ok(()) => false,
            Err(err) => {
                tracing::warn!(error = %err, "message statuses not stored; will sweep");
                true
            }
        };
        tokio::time::sleep(SETTLE_EVERY).await;
    }
}

/// Stores the overall status of `ids` (or of every row still `accepted`).
async fn settle_statuses(pool: &PgPool, ids: Option<&[Uuid]>) -> Result<(), sqlx::Error> {
    let filter = match ids {
        Some(_) => "h.message_id = ANY($1)",
        None => "h.status = 'accepted'",
    };
    let sql = format!(
        "UPDATE message_history m SET status = s.status FROM ( \
           SELECT h.message_id, {STATUS_SQL} AS status FROM message_history h WHERE {filter}) s \
         WHERE m.message_id = s.message_id AND s.status <> 'accepted' \
           AND m.status IS DISTINCT FROM s.status"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql));
    let query = match ids {
        Some(ids) => query.bind(ids.iter().map(Uuid::to_string).collect::<Vec<_>>()),
        None => query,
    };
    query.execute(pool).await.map(|_| ())
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

/// Inserts the history rows not yet stored and counts the new ones in their
/// conversations; returns the ids inserted.
async fn insert_messages(
    tx: &mut sqlx::PgConnection,
    messages: &BTreeMap<Uuid, (&Envelope, &'static str)>,
) -> Result<BTreeSet<Uuid>, sqlx::Error> {
    if messages.is_empty() {
        return Ok(BTreeSet::new());
    }
    let list: Vec<&Envelope> = messages.values().map(|(e, _)| *e).collect();
    let inserted: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO message_history (message_id, type, sender, recipients, subject, payload, status, \
           created_at, metadata, conversation_id, correlation_id, priority, expires_at) \
         SELECT id, typ, sender, recipients::jsonb, subject, payload::jsonb, status, created_at, \
                metadata::jsonb, conversation_id, correlation_id, priority, expires_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], \
                     $13::text[]) \
           AS t(id, typ, sender, recipients, subject, payload, created_at, metadata, conversation_id, \
                correlation_id, priority, expires_at, status) \
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
    .bind(messages.values().map(|(_, status)| *status).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    // New messages per conversation: count, first and last instant, everyone seen.
    let inserted: BTreeSet<Uuid> = inserted
        .iter()
        .filter_map(|(id,)| id.parse::<Uuid>().ok())
        .collect();
    let mut conversations: BTreeMap<&str, NewInConversation<'_>> = BTreeMap::new();
    for id in &inserted {
        let Some((envelope, _)) = messages.get(id) else {
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
            entry.1 = *envelope;
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
               topic = CASE WHEN EXCLUDED.created_at < conversation_archive.created_at \
                 THEN EXCLUDED.topic ELSE conversation_archive.topic END, \
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
    Ok(inserted)
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
    fn overall_status_matches_the_stored_definition() {
        use DeliveryState::*;
        assert_eq!(overall_status(2, &[Delivered]), "accepted");
        assert_eq!(overall_status(2, &[Delivered, Delivered]), "delivered");
        assert_eq!(overall_status(2, &[Expired, DeadLettered]), "dead_lettered");
        assert_eq!(overall_status(2, &[Delivered, Expired]), "expired");
    }

    #[test]
    fn held_rows_leave_with_their_first_final_copy_or_at_a_barrier() {
        let mut holding = Holding::default();
        let delivered = update(DeliveryState::Delivered, 1, None);
        let retrying = update(DeliveryState::Retrying, 1, Some("boom"));
        let other = update(DeliveryState::Retrying, 1, None);
        holding.hold(&delivered.envelope);
        holding.hold(&retrying.envelope);
        holding.hold(&other.envelope);
        let mut released = Released::new();
        holding.note(&retrying, &mut released);
        assert!(released.is_empty(), "a retry keeps the row held");
        holding.note(&delivered, &mut released);
        assert_eq!(released[&delivered.envelope.id].1, "delivered");
        holding.release_due(Instant::now(), &mut released);
        assert_eq!(released.len(), 1, "the hold has not ended");
        holding.release_due(Instant::now() + HOLD, &mut released);
        assert_eq!(released.len(), 3, "the hold ended");
        assert_eq!(released[&other.envelope.id].1, "accepted");
        assert!(holding.rows.is_empty() && holding.next_deadline().is_none());
        holding.hold(&other.envelope);
        holding.release_all(&mut released);
        assert!(holding.rows.is_empty() && holding.next_deadline().is_none());
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
