//! The send outbox: `communication.send` stays available while JetStream
//! cannot acknowledge a copy (a `YMERA_MESSAGES` leader election after the
//! leading nats-server died — 4–9 s, fixed by nats-server's RAFT election
//! timer — or this instance's NATS connection reconnecting).
//!
//! Send publishes every copy as usual and waits at most
//! `COMM_PUBLISH_TIMEOUT_MS` for JetStream's acknowledgements. A copy that
//! was not acknowledged in time, or failed in a way that says "no leader
//! now" (no responders, a 503 cluster error, a broken connection), is
//! written with the envelope to the table `message_outbox` in one
//! transaction, and only then is the send answered `accepted`: an accepted
//! copy is always in JetStream or in PostgreSQL. A refusal that will not go
//! away by waiting (the recipient's backlog full, a store failure) is
//! answered as before and nothing is written.
//!
//! The relay ([`relay_loop`], one per replica) claims due rows with
//! `FOR UPDATE SKIP LOCKED` for a lease (so replicas never publish the same
//! row at once, and a replica that dies mid-pass leaves its rows to the
//! others when the lease ends), makes sure each recipient's consumer exists,
//! publishes every pending copy with the same `Nats-Msg-Id`
//! (`<id>.<recipient>`) and `Ymera-Accepted-At` as the direct publish, and
//! removes the acknowledged copies (a row goes when none is left). A copy the
//! first publish did store after all (its acknowledgement lost in the election)
//! is caught three ways: the relay first checks the journal (a copy with any
//! delivery state was in the stream and is not published again); JetStream's
//! duplicate window drops a repeat of a copy still stored (not one already
//! delivered and removed from the work queue: a new leader rebuilds its duplicate
//! ids from the messages it still holds); and relayed copies carry
//! `Ymera-Relayed: 1`, so the delivery worker reads the journal before trying one
//! (as for a redelivery) and waits while this instance is trying the same copy
//! ([`crate::delivery`]). A repeat is delivered twice only when both copies are
//! tried at once by two replicas (at least once, DESIGN §11).
//!
//! A resend of an id while its row waits (the client's retry) adds the
//! recipients not there yet and is answered `accepted` with `duplicate: true`
//! when every copy was waiting already; it is never refused for a full outbox.
//!
//! Bounded: a new row is written only while fewer than `COMM_OUTBOX_LIMIT`
//! rows wait, counted by the insert itself (shared by every replica; sends in
//! flight at once can overshoot it by their number). Past it the send is
//! answered 503 `unavailable` with `details.outbox = "full"` and nothing is
//! written (no row, no history); the direct publish may still be committed by a
//! leader that regains its quorum (a 503 is "not accepted", and the client's
//! resend of the same id is deduplicated). A relay pass claims at most [`RELAY_BATCH`]
//! rows, and every JetStream wait has the publish timeout.
//!
//! Not covered: copies of a multi-recipient message that JetStream did store
//! before another copy was refused (full backlog, full outbox) stay stored, as
//! without the outbox; the client's resend of the same id completes it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use ymera_core::Error;
use ymera_core::error::ErrorKind;

use crate::Communication;
use crate::streams::{ACCEPTED_AT_HEADER, RELAYED_HEADER, message_subject};

/// Most outbox rows one relay pass claims.
pub const RELAY_BATCH: i64 = 64;
/// How often an idle relay looks for rows written by other replicas.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How soon a relay looks again while rows are waiting.
const BUSY_POLL: Duration = Duration::from_millis(200);
/// Longest pause before a row whose copies were not stored is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause before a row whose copy JetStream refused (the recipient's backlog
/// full: it drains only as fast as the recipient takes its messages) is tried again.
/// The copy was accepted, so it is never dropped; `ymera_comm_outbox_oldest_seconds`
/// and the `YmeraSendOutboxStuck` alert show a row that waits.
const MAX_REFUSED_BACKOFF: Duration = Duration::from_secs(30);
/// Longest error text kept on a row.
const MAX_ERROR_CHARS: usize = 500;

/// What one copy's publish came to.
#[derive(Debug)]
pub(crate) enum CopyResult {
    /// JetStream acknowledged it (`duplicate`: it held that `Nats-Msg-Id` already).
    Stored { duplicate: bool },
    /// Not acknowledged in time, or JetStream has no leader for it now: worth waiting.
    Pending(String),
    /// Refused for a reason waiting does not cure (the error to answer).
    Refused(Error),
}

/// The `Nats-Msg-Id` of a copy (DESIGN §4).
pub(crate) fn message_id(id: &str, recipient: &str) -> String {
    format!("{id}.{recipient}")
}

/// One copy as published, by send and by the relay alike.
pub(crate) fn copy(id: &str, recipient: &str, body: Bytes, accepted_at: DateTime<Utc>) -> Publish {
    Publish::build()
        .payload(body)
        .message_id(message_id(id, recipient))
        .header(ACCEPTED_AT_HEADER, accepted_at.to_rfc3339().as_str())
}

/// Publishes every copy, then waits for their acknowledgements, all by `deadline`.
pub(crate) async fn publish_all(
    js: &jetstream::Context,
    copies: Vec<(String, Publish)>,
    deadline: Instant,
) -> Vec<CopyResult> {
    let mut results: Vec<Option<CopyResult>> = Vec::with_capacity(copies.len());
    let mut acks = Vec::with_capacity(copies.len());
    for (index, (recipient, publish)) in copies.into_iter().enumerate() {
        let sent = tokio::time::timeout_at(
            deadline,
            js.send_publish(message_subject(&recipient), publish),
        )
        .await;
        match sent {
            Ok(Ok(ack)) => {
                results.push(None);
                acks.push((index, recipient, ack));
            }
            Ok(Err(err)) => results.push(Some(classify(&recipient, &err))),
            Err(_) => results.push(Some(CopyResult::Pending(
                "JetStream did not take the publish in time".to_owned(),
            ))),
        }
    }
    for (index, recipient, ack) in acks {
        let result = match tokio::time::timeout_at(deadline, ack).await {
            Ok(Ok(ack)) => CopyResult::Stored {
                duplicate: ack.duplicate,
            },
            Ok(Err(err)) => classify(&recipient, &err),
            Err(_) => CopyResult::Pending("no JetStream acknowledgement in time".to_owned()),
        };
        results[index] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| CopyResult::Pending("not published".to_owned())))
        .collect()
}

/// Sorts a publish failure: waiting cures a missing leader, a lost connection or a
/// timeout; it does not cure a full backlog or a refused store.
pub(crate) fn classify(recipient: &str, err: &PublishError) -> CopyResult {
    let text = err.to_string();
    match err.kind() {
        PublishErrorKind::StreamNotFound
        | PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => CopyResult::Pending(text),
        PublishErrorKind::Other => {
            let api = std::error::Error::source(err)
                .and_then(|source| source.downcast_ref::<jetstream::Error>());
            match api {
                // No API error: the request never got an answer from a stream (client side).
                None => CopyResult::Pending(text),
                Some(api) if transient_api_error(api) => CopyResult::Pending(text),
                Some(_) => CopyResult::Refused(refusal(recipient, &text)),
            }
        }
        _ => CopyResult::Refused(refusal(recipient, &text)),
    }
}

/// The cluster is between leaders or not answering (503 / "not leader"), as opposed to
/// a stream that answered and refused (store failed, limits). Also 409 "duplicate
/// message id is in process" (10158): a publish with this `Nats-Msg-Id` was proposed and
/// is not committed yet — a leader without quorum holds it — so a resend while the first
/// copy waits, and the relay, get it; waiting cures it (the first commits and the repeat
/// is a duplicate, or it is dropped and the repeat is stored).
fn transient_api_error(api: &jetstream::Error) -> bool {
    let code = api.error_code();
    if code == ErrorCode::STREAM_STORE_FAILED {
        return false;
    }
    code == ErrorCode::CLUSTER_NOT_AVAILABLE
        || code == ErrorCode::CLUSTER_NOT_LEADER
        || code == ErrorCode::JETSTREAM_NOT_ENABLED
        || code == ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
        || api.code() == 503
}

/// The answer to a copy JetStream refused (as before the outbox).
pub(crate) fn refusal(recipient: &str, message: &str) -> Error {
    if message.contains("maximum messages per subject") {
        return crate::send::backlog_full(recipient, None);
    }
    tracing::warn!(error = %message, recipient, "JetStream did not store a copy");
    Error::dependency_down("jetstream")
}

/// The answer to a send JetStream could not store while the outbox is full: 503
/// unavailable, `details.reason = "dependency_down"`, `details.dependency = "jetstream"`,
/// `details.outbox = "full"`, `details.limit`.
pub fn outbox_full(limit: u64) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "jetstream is unavailable and the send outbox holds {limit} messages, the most allowed; retry later"
        ),
    )
    .with_detail("reason", "dependency_down")
    .with_detail("dependency", "jetstream")
    .with_detail("outbox", "full")
    .with_detail("limit", limit)
}

/// Counters of the outbox of this instance.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Messages waiting in the outbox (every replica's), as last counted.
    pub depth: u64,
    /// Copies this instance wrote to the outbox.
    pub written: u64,
    /// Copies this instance's relay had acknowledged by JetStream.
    pub relayed: u64,
    /// Copies the relay found in the journal already (older than the duplicate
    /// window) and did not publish again.
    pub skipped: u64,
    /// Sends this instance refused because the outbox was full.
    pub refused: u64,
}

/// The outbox of one instance: the table, and its relay's wake-up.
#[derive(Debug)]
pub struct Outbox {
    pool: PgPool,
    notify: Notify,
    depth: AtomicU64,
    written: AtomicU64,
    relayed: AtomicU64,
    skipped: AtomicU64,
    refused: AtomicU64,
}

impl Outbox {
    /// The outbox on `pool` (its table comes with the migrations).
    pub fn new(pool: PgPool) -> Outbox {
        Outbox {
            pool,
            notify: Notify::new(),
            depth: AtomicU64::new(0),
            written: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Makes the outbox series present from the start (their help text is in the
    /// `ymera_core::metrics` catalogue, `deploy/METRICS.md`).
    pub fn register() {
        for name in [
            "ymera_comm_outbox_written_total",
            "ymera_comm_outbox_relayed_total",
            "ymera_comm_outbox_skipped_total",
            "ymera_comm_outbox_refused_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        metrics::gauge!("ymera_comm_outbox_depth").set(0.0);
        metrics::gauge!("ymera_comm_outbox_oldest_seconds").set(0.0);
    }

    /// The counters now.
    pub fn counters(&self) -> OutboxCounters {
        OutboxCounters {
            depth: self.depth.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            relayed: self.relayed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Stores the copies of `recipients` in one statement (a resend of the id while its
    /// row waits adds the recipients not there yet), then wakes this instance's relay.
    /// Returns whether every one of `recipients` was waiting already (a resend: the reply
    /// says `duplicate`).
    ///
    /// Bounded: a new row is written only while fewer than `limit` rows wait, counted in
    /// the same statement (so every replica sees the same bound; concurrent sends can
    /// overshoot it by the sends in flight at once). Past it nothing is written and the
    /// send is answered 503 with `details.outbox = "full"`. A resend of an id whose row
    /// waits is never refused: that message is accepted already.
    pub(crate) async fn store(
        &self,
        id: &str,
        body: &Bytes,
        recipients: &[String],
        accepted_at: DateTime<Utc>,
        reason: &str,
        limit: u64,
    ) -> Result<bool, Error> {
        let cap = i64::try_from(limit).unwrap_or(i64::MAX);
        let stored: Result<Option<(Option<Vec<String>>,)>, sqlx::Error> = sqlx::query_as(
            "WITH old AS (SELECT recipients FROM message_outbox WHERE message_id = $1), \
             room AS (SELECT EXISTS (SELECT 1 FROM old) \
               OR (SELECT count(*) FROM (SELECT 1 FROM message_outbox LIMIT $6) AS w) < $6 AS ok) \
             INSERT INTO message_outbox (message_id, body, recipients, accepted_at, last_error) \
             SELECT $1, $2, $3, $4, $5 FROM room WHERE room.ok \
             ON CONFLICT (message_id) DO UPDATE SET recipients = ARRAY( \
               SELECT DISTINCT r FROM unnest(message_outbox.recipients || EXCLUDED.recipients) AS r) \
             RETURNING (SELECT recipients FROM old)",
        )
        .bind(id)
        .bind(body.as_ref())
        .bind(recipients)
        .bind(accepted_at)
        .bind(truncate(reason))
        .bind(cap)
        .fetch_optional(&self.pool)
        .await;
        let before = match stored {
            Ok(Some((before,))) => before,
            Ok(None) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ymera_comm_outbox_refused_total").increment(1);
                tracing::warn!(limit, "the send outbox is full; refusing the send");
                return Err(outbox_full(limit));
            }
            Err(err) => {
                tracing::warn!(error = %err, "JetStream and the send outbox both failed");
                return Err(Error::dependency_down("jetstream"));
            }
        };
        let known = before
            .as_ref()
            .is_some_and(|b| recipients.iter().all(|r| b.contains(r)));
        if before.is_none() {
            self.depth.fetch_add(1, Ordering::Relaxed);
        }
        self.written
            .fetch_add(recipients.len() as u64, Ordering::Relaxed);
        metrics::counter!("ymera_comm_outbox_written_total").increment(recipients.len() as u64);
        metrics::gauge!("ymera_comm_outbox_depth").set(self.depth.load(Ordering::Relaxed) as f64);
        tracing::info!(
            id,
            copies = recipients.len(),
            resend = known,
            reason,
            "copies kept in the send outbox"
        );
        self.notify.notify_one();
        Ok(known)
    }

    async fn refresh_depth(&self) {
        let row: Result<(i64, Option<f64>), sqlx::Error> = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM message_outbox",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((depth, oldest)) = row {
            let depth = u64::try_from(depth).unwrap_or(0);
            self.depth.store(depth, Ordering::Relaxed);
            metrics::gauge!("ymera_comm_outbox_depth").set(depth as f64);
            metrics::gauge!("ymera_comm_outbox_oldest_seconds").set(oldest.unwrap_or(0.0));
        }
    }
}

/// Publishes the outbox's copies until shutdown (every replica runs one).
pub async fn relay_loop(comm: Arc<Communication>) {
    let outbox = &comm.outbox;
    outbox.refresh_depth().await;
    let mut idle_polls = 0u32;
    loop {
        let waiting = outbox.depth.load(Ordering::Relaxed) > 0;
        let pause = if waiting { BUSY_POLL } else { IDLE_POLL };
        tokio::select! {
            _ = comm.shutdown.cancelled() => return,
            _ = outbox.notify.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        if comm.client.connection_state() != async_nats::connection::State::Connected {
            continue;
        }
        loop {
            match relay_pass(&comm).await {
                Ok(claimed) if claimed as i64 == RELAY_BATCH && !comm.shutdown.is_cancelled() => {
                    continue;
                }
                Ok(0) => {
                    idle_polls += 1;
                    // A depth seen > 0 (or now and then) is counted again: rows may
                    // have gone through other replicas.
                    if waiting || idle_polls.is_multiple_of(10) {
                        outbox.refresh_depth().await;
                    }
                }
                Ok(_) => outbox.refresh_depth().await,
                Err(err) => tracing::warn!(error = %err, "send outbox relay pass failed"),
            }
            break;
        }
    }
}

#[derive(sqlx::FromRow)]
struct Claimed {
    message_id: String,
    body: Vec<u8>,
    recipients: Vec<String>,
    accepted_at: DateTime<Utc>,
    attempts: i32,
}

/// One pass: claim due rows, publish their copies, record the outcome. Returns the
/// rows claimed.
async fn relay_pass(comm: &Arc<Communication>) -> Result<usize, sqlx::Error> {
    let pool = &comm.outbox.pool;
    let timeout = comm.settings.publish_timeout;
    // Long enough for this pass (consumers, then publishes, each within the timeout).
    let lease = timeout * 4 + Duration::from_secs(5);
    let rows: Vec<Claimed> = sqlx::query_as(
        "UPDATE message_outbox SET next_attempt_at = now() + make_interval(secs => $2) \
         WHERE message_id IN (SELECT message_id FROM message_outbox WHERE next_attempt_at <= now() \
           ORDER BY next_attempt_at, created_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING message_id, body, recipients, accepted_at, attempts",
    )
    .bind(RELAY_BATCH)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let claimed = rows.len();
    let no_consumer = ensure_consumers(comm, &rows, Instant::now() + timeout).await;
    let known = already_in_stream(comm, &rows).await?;
    let mut done: Vec<(String, String)> = Vec::new();
    // Row → (last error, refused): a refusal (full backlog) waits longer than a
    // missing leader.
    let mut failed: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut copies = Vec::new();
    let mut keys = Vec::new();
    for row in &rows {
        let body = Bytes::from(row.body.clone());
        for recipient in &row.recipients {
            let key = (row.message_id.clone(), recipient.clone());
            if known.contains(&key) {
                comm.outbox.skipped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ymera_comm_outbox_skipped_total").increment(1);
                done.push(key);
            } else if no_consumer.contains(recipient) {
                failed.insert(
                    row.message_id.clone(),
                    (
                        format!("cannot create the delivery consumer of {recipient}"),
                        false,
                    ),
                );
            } else {
                let publish = copy(&row.message_id, recipient, body.clone(), row.accepted_at)
                    .header(RELAYED_HEADER, "1");
                copies.push((recipient.clone(), publish));
                keys.push(key);
            }
        }
    }
    let results = publish_all(&comm.js, copies, Instant::now() + timeout).await;
    let mut relayed = 0u64;
    for (key, result) in keys.into_iter().zip(results) {
        match result {
            CopyResult::Stored { .. } => {
                relayed += 1;
                done.push(key);
            }
            CopyResult::Pending(reason) => {
                failed.entry(key.0).or_insert((reason, false));
            }
            CopyResult::Refused(err) => {
                tracing::warn!(
                    id = %key.0,
                    recipient = %key.1,
                    error = %err.message,
                    "JetStream refused an outbox copy; kept, tried again later"
                );
                failed.insert(key.0, (err.message, true));
            }
        }
    }
    let attempts: BTreeMap<&str, i32> = rows
        .iter()
        .map(|r| (r.message_id.as_str(), r.attempts))
        .collect();
    settle(pool, &done, &failed, &attempts).await?;
    comm.outbox.relayed.fetch_add(relayed, Ordering::Relaxed);
    metrics::counter!("ymera_comm_outbox_relayed_total").increment(relayed);
    if !failed.is_empty() {
        tracing::debug!(
            pending = failed.len(),
            relayed,
            "outbox copies still not stored in JetStream"
        );
    }
    Ok(claimed)
}

/// Makes sure each recipient of `rows` has its delivery consumer (the send that wrote a
/// row may not have been able to create it); returns the recipients without one.
async fn ensure_consumers(
    comm: &Arc<Communication>,
    rows: &[Claimed],
    deadline: Instant,
) -> HashSet<String> {
    let recipients: HashSet<&String> = rows.iter().flat_map(|r| &r.recipients).collect();
    let mut missing = HashSet::new();
    for recipient in recipients {
        let made =
            tokio::time::timeout_at(deadline, crate::delivery::ensure_worker(comm, recipient))
                .await;
        if !matches!(made, Ok(Ok(()))) {
            missing.insert(recipient.clone());
        }
    }
    missing
}

/// Copies of `rows` that the journal has a state for: JetStream held them (the first
/// publish was stored after all, and a delivery worker took it), so they are not
/// published again. The duplicate window does not cover this: `YMERA_MESSAGES` is a work
/// queue, so a copy already delivered and acknowledged is gone from the stream, and a
/// leader elected since rebuilt its duplicate ids from the messages still stored.
async fn already_in_stream(
    comm: &Communication,
    rows: &[Claimed],
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    let ids: Vec<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT message_id, recipient FROM message_deliveries WHERE message_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&comm.outbox.pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// Removes the stored copies (and rows with none left) and puts off the rest, in one
/// transaction.
async fn settle(
    pool: &PgPool,
    done: &[(String, String)],
    failed: &BTreeMap<String, (String, bool)>,
    attempts: &BTreeMap<&str, i32>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !done.is_empty() {
        let ids: Vec<&str> = done.iter().map(|(id, _)| id.as_str()).collect();
        let recipients: Vec<&str> = done.iter().map(|(_, r)| r.as_str()).collect();
        sqlx::query(
            "WITH stored AS (SELECT m, array_agg(r) AS rs FROM unnest($1::text[], $2::text[]) AS t(m, r) \
               GROUP BY m) \
             UPDATE message_outbox o SET recipients = ARRAY( \
               SELECT x FROM unnest(o.recipients) AS x WHERE x <> ALL(stored.rs)) \
             FROM stored WHERE o.message_id = stored.m",
        )
        .bind(&ids)
        .bind(&recipients)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM message_outbox WHERE message_id = ANY($1) AND cardinality(recipients) = 0",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    }
    if !failed.is_empty() {
        let ids: Vec<&str> = failed.keys().map(String::as_str).collect();
        let errors: Vec<String> = failed.values().map(|(e, _)| truncate(e)).collect();
        let delays: Vec<f64> = failed
            .iter()
            .map(|(id, (_, refused))| {
                let attempts = attempts.get(id.as_str()).copied().unwrap_or(0);
                backoff(attempts, *refused).as_secs_f64()
            })
            .collect();
        sqlx::query(
            "UPDATE message_outbox o SET attempts = o.attempts + 1, last_error = t.e, \
               next_attempt_at = now() + make_interval(secs => t.d) \
             FROM unnest($1::text[], $2::text[], $3::float8[]) AS t(m, e, d) WHERE o.message_id = t.m",
        )
        .bind(&ids)
        .bind(&errors)
        .bind(&delays)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The pause before a row is tried again after `attempts` passes left copies pending:
/// 100 ms doubling, at most [`MAX_BACKOFF`] (a leader election lasts seconds); after a
/// refusal (`refused`: the recipient's backlog full) at most [`MAX_REFUSED_BACKOFF`].
fn backoff(attempts: i32, refused: bool) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 10)).unwrap_or(0);
    let cap = if refused {
        MAX_REFUSED_BACKOFF
    } else {
        MAX_BACKOFF
    };
    Duration::from_millis(100u64 << exponent).min(cap)
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second_or_thirty_after_a_refusal() {
        assert_eq!(backoff(0, false), Duration::from_millis(100));
        assert_eq!(backoff(2, false), Duration::from_millis(400));
        assert_eq!(backoff(4, false), MAX_BACKOFF);
        assert_eq!(backoff(1000, false), MAX_BACKOFF);
        assert_eq!(backoff(-3, false), Duration::from_millis(100));
        assert_eq!(backoff(4, true), Duration::from_millis(1600));
        assert_eq!(backoff(1000, true), MAX_REFUSED_BACKOFF);
    }

    #[test]
    fn waiting_cures_a_missing_leader_but_not_a_full_backlog() {
        for kind in [
            PublishErrorKind::StreamNotFound,
            PublishErrorKind::TimedOut,
            PublishErrorKind::BrokenPipe,
        ] {
            assert!(matches!(
                classify("r", &PublishError::new(kind)),
                CopyResult::Pending(_)
            ));
        }
        let in_process: jetstream::Error = serde_json::from_str(
            r#"{"code":409,"err_code":10158,"description":"duplicate message id is in process"}"#,
        )
        .unwrap();
        assert!(transient_api_error(&in_process));
        let store_failed: jetstream::Error =
            serde_json::from_str(r#"{"code":503,"err_code":10077,"description":"store failed"}"#)
                .unwrap();
        assert!(!transient_api_error(&store_failed));
        let oversized = PublishError::new(PublishErrorKind::MaxPayloadExceeded);
        assert!(matches!(classify("r", &oversized), CopyResult::Refused(_)));
        let full = refusal("r", "maximum messages per subject exceeded");
        assert_eq!(full.details["reason"], "backlog_full");
        assert_eq!(message_id("0190", "bob"), "0190.bob");
    }
}
