//! The writer shards: each takes everything queued (≤ [`MAX_BATCH`] jobs)
//! into one transaction of a fixed handful of set-based statements, and
//! holds new history rows back (≤ [`HOLD`]) to write them once, usually
//! already final.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use uuid::Uuid;
use ymera_core::envelope::Envelope;

use super::settle::Settle;
use super::sql::{ensure_history, insert_messages, upsert_deliveries};
use super::{DeliveryState, DeliveryUpdate, HOLD, Job, MAX_BATCH, MAX_HELD, Op};
use crate::model::MessageStatus;

/// Attempts at writing one batch before its callers get an error.
const WRITE_ATTEMPTS: u32 = 3;

/// History rows to write in one batch, with the status each is written with.
pub(super) type Released = BTreeMap<Uuid, (Arc<Envelope>, MessageStatus)>;

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
            let status = MessageStatus::of(envelope.recipients.len(), &[update.state]);
            released.insert(envelope.id, (envelope, status));
        }
    }

    /// Releases a row with no final copy yet: `accepted`.
    fn release(&mut self, id: Uuid, released: &mut Released) {
        if let Some(envelope) = self.rows.remove(&id) {
            released.insert(id, (envelope, MessageStatus::Accepted));
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

pub(super) async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Job>, settle: Settle) {
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
    let recorded: BTreeMap<Uuid, (&Envelope, MessageStatus)> = released
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

/// Several updates of one copy in one batch, folded into one row.
pub(super) struct MergedUpdate {
    pub(super) state: DeliveryState,
    pub(super) attempts: u32,
    pub(super) first_attempt_at: Option<DateTime<Utc>>,
    pub(super) last_attempt_at: Option<DateTime<Utc>>,
    pub(super) error: Option<String>,
    pub(super) latency_ms: Option<f64>,
    pub(super) accepted_at: DateTime<Utc>,
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
        assert_eq!(released[&delivered.envelope.id].1.as_str(), "delivered");
        holding.release_due(Instant::now(), &mut released);
        assert_eq!(released.len(), 1, "the hold has not ended");
        holding.release_due(Instant::now() + HOLD, &mut released);
        assert_eq!(released.len(), 3, "the hold ended");
        assert_eq!(released[&other.envelope.id].1.as_str(), "accepted");
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
