//! The delivery journal: every message and every change of a copy's delivery
//! state is written to PostgreSQL through batching writer tasks (shards).
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
//!
//! Modules: [`writer`] (the shard tasks: batching, the history hold),
//! [`settle`] (storing overall statuses off the delivery path) and [`sql`]
//! (the statements, and the journal's direct queries).

mod settle;
mod sql;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::envelope::Envelope;

pub use crate::model::DeliveryState;
pub use sql::{STATUS_SQL, archive_older_than, copy_state, reset_for_replay};

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

pub(crate) enum Op {
    Record(Arc<Envelope>),
    Delivery(DeliveryUpdate),
    /// Completes once every earlier operation of its shard is written.
    Barrier,
}

pub(crate) struct Job {
    pub(crate) op: Op,
    pub(crate) done: Option<oneshot::Sender<Result<(), String>>>,
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
        let settle = settle::Settle::default();
        let shards: Vec<mpsc::Sender<Job>> = (0..WRITERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                tokio::spawn(writer::writer(pool.clone(), rx, settle.clone()));
                tx
            })
            .collect();
        tokio::spawn(settle::settler(pool.clone(), settle));
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
