//! The endpoints: send, status, history, conversations, metrics, and the
//! DLQ tools `communication.dlq.list` / `communication.dlq.replay`.

use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage as Publish;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::envelope::{Envelope, validate_agent_name};
use ymera_core::error::Violation;
use ymera_core::runtime::{Reply, ServiceBuilder, ServiceRequest};

use crate::journal::STATUS_SQL;
use crate::stats::{Counters, Latency};
use crate::streams::{self, ATTEMPTS_HEADER, DLQ_STREAM, LAST_ERROR_HEADER, RECIPIENT_HEADER};
use crate::{Communication, auth};

/// Most rows one history, conversations or DLQ page holds.
pub const MAX_PAGE: u32 = 1000;
/// Rows per page when the request gives no limit.
pub const DEFAULT_PAGE: u32 = 100;

/// Registers `$subject`, checked for `$permission` by the runtime, whose
/// reply is the JSON of `$call` (an expression over `$comm` and `$req`).
macro_rules! route {
    ($builder:expr, $shared:expr, $subject:literal, $permission:expr,
     |$comm:ident, $req:ident| $call:expr) => {{
        let shared = $shared.clone();
        $builder.secured($subject, $permission, move |$req: ServiceRequest| {
            let $comm = shared.clone();
            async move { Reply::json(&$call) }
        })
    }};
}

/// Registers every endpoint on `builder`.
pub fn endpoints(builder: ServiceBuilder, comm: Arc<Communication>) -> ServiceBuilder {
    let b = builder;
    let b = route!(b, comm, "communication.send", auth::SEND, |c, req| {
        crate::send::send(&c, auth::check_sender(&req, req.json()?)?).await?
    });
    let b = route!(b, comm, "communication.status", auth::READ, |c, req| {
        status(&c, req.json()?).await?
    });
    let b = route!(b, comm, "communication.history", auth::READ, |c, req| {
        history(&c, req.json_or_default()?).await?
    });
    let b = route!(
        b,
        comm,
        "communication.conversations",
        auth::READ,
        |c, req| { conversations(&c, req.json_or_default()?).await? }
    );
    let b = route!(b, comm, "communication.metrics", auth::READ, |c, _req| {
        metrics_snapshot(&c).await
    });
    let b = route!(b, comm, "communication.dlq.list", auth::READ, |c, req| {
        dlq_list(&c, req.json_or_default()?).await?
    });
    route!(b, comm, "communication.dlq.replay", auth::SEND, |c, req| {
        dlq_replay(&c, req.json()?).await?
    })
}

// ---------------------------------------------------------------- status

/// `communication.status` request.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The message id.
    pub id: Uuid,
}

/// One recipient's copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CopyStatus {
    /// The recipient.
    pub recipient: String,
    /// accepted, delivered, retrying, deferred, dead_lettered or expired.
    pub state: String,
    /// Attempts spent.
    pub attempts: i32,
    /// When the first attempt was made.
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When the recipient acknowledged it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Accept-to-acknowledgement time.
    pub latency_ms: Option<f64>,
}

/// `communication.status` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReply {
    /// The message id.
    pub id: Uuid,
    /// Overall: accepted (in progress), delivered, dead_lettered or expired.
    pub status: String,
    /// The sender.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// When the sender created it.
    pub created_at: Option<DateTime<Utc>>,
    /// One entry per recipient.
    pub recipients: Vec<CopyStatus>,
}

type CopyRow = (
    String,
    String,
    i32,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<f64>,
);

type HeadRow = (String, String, String, DateTime<Utc>, Json<Vec<String>>);

async fn status(comm: &Communication, req: StatusRequest) -> Result<StatusReply, Error> {
    let id = req.id.to_string();
    let (mut head, mut rows) = status_rows(comm, &id).await?;
    if head.is_none() {
        // Read your own send: its history row may still be queued.
        comm.journal().flush().await?;
        (head, rows) = status_rows(comm, &id).await?;
    }
    if head.is_none() && rows.is_empty() {
        return Err(Error::not_found(format!("no message with id {id}")));
    }
    let mut recipients: Vec<CopyStatus> = rows
        .into_iter()
        .map(|r| CopyStatus {
            recipient: r.0,
            state: r.1,
            attempts: r.2,
            first_attempt_at: r.3,
            last_attempt_at: r.4,
            last_error: r.5,
            delivered_at: r.6,
            latency_ms: r.7,
        })
        .collect();
    let (status, sender, subject, created_at) = match head {
        Some((s, sender, subject, created, Json(all))) => {
            // A copy nothing happened to yet has no row: it is accepted.
            for recipient in all {
                if !recipients.iter().any(|c| c.recipient == recipient) {
                    recipients.push(CopyStatus {
                        recipient,
                        state: "accepted".to_owned(),
                        attempts: 0,
                        first_attempt_at: None,
                        last_attempt_at: None,
                        last_error: None,
                        delivered_at: None,
                        latency_ms: None,
                    });
                }
            }
            recipients.sort_by(|a, b| a.recipient.cmp(&b.recipient));
            (s, Some(sender), Some(subject), Some(created))
        }
        None => ("accepted".to_owned(), None, None, None),
    };
    Ok(StatusReply {
        id: req.id,
        status,
        sender,
        subject,
        created_at,
        recipients,
    })
}

async fn status_rows(
    comm: &Communication,
    id: &str,
) -> Result<(Option<HeadRow>, Vec<CopyRow>), Error> {
    let pool = comm.journal().pool();
    let head: Option<HeadRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STATUS_SQL}, sender, subject, created_at, recipients \
         FROM message_history h WHERE message_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let rows: Vec<CopyRow> = sqlx::query_as(
        "SELECT recipient, state, attempts, first_attempt_at, last_attempt_at, last_error, delivered_at, latency_ms \
         FROM message_deliveries WHERE message_id = $1 ORDER BY recipient",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    Ok((head, rows))
}

// ---------------------------------------------------------------- history

/// `communication.history` request: every filter optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// Only messages from this sender.
    pub sender: Option<String>,
    /// Only messages to this recipient.
    pub recipient: Option<String>,
    /// Only messages of this conversation.
    pub conversation_id: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One message in history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// The id.
    pub id: String,
    /// The type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The sender.
    pub sender: String,
    /// The recipients.
    pub recipients: Value,
    /// The subject.
    pub subject: String,
    /// The payload.
    pub payload: Value,
    /// Overall status.
    pub status: String,
    /// When the sender created it.
    pub created_at: DateTime<Utc>,
    /// The conversation.
    pub conversation_id: Option<String>,
    /// The id it answers.
    pub correlation_id: Option<String>,
    /// The priority.
    pub priority: Option<String>,
    /// The metadata.
    pub metadata: Option<Value>,
}

/// A page of history, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryPage {
    /// The messages.
    pub messages: Vec<HistoryEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

type HistoryRow = (
    String,
    String,
    String,
    Json<Value>,
    String,
    Json<Value>,
    String,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Json<Value>>,
);

fn page_limit(limit: Option<u32>) -> Result<u32, Error> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(Error::validation(vec![Violation::new(
            "/limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )])),
    }
}

fn check_name(violations: &mut Vec<Violation>, path: &str, name: Option<&str>) {
    if let Some(name) = name
        && let Err(msg) = validate_agent_name(name)
    {
        violations.push(Violation::new(path, msg));
    }
}

/// Cursor: `<created_at in µs since the epoch>:<id>`.
fn encode_cursor(at: DateTime<Utc>, key: &str) -> String {
    format!("{}:{key}", at.timestamp_micros())
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), Error> {
    let bad = || {
        Error::validation(vec![Violation::new(
            "/cursor",
            "not a cursor from a previous page",
        )])
    };
    let (micros, key) = cursor.split_once(':').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
    if key.is_empty() || key.len() > 255 {
        return Err(bad());
    }
    Ok((at, key.to_owned()))
}

async fn history(comm: &Communication, req: HistoryRequest) -> Result<HistoryPage, Error> {
    let limit = page_limit(req.limit)?;
    let mut violations = Vec::new();
    check_name(&mut violations, "/sender", req.sender.as_deref());
    check_name(&mut violations, "/recipient", req.recipient.as_deref());
    if req.conversation_id.as_ref().is_some_and(|c| c.len() > 255) {
        violations.push(Violation::new(
            "/conversation_id",
            "longer than 255 characters",
        ));
    }
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let cursor = req.cursor.as_deref().map(decode_cursor).transpose()?;
    // Read your own sends: their history rows may still be queued.
    comm.journal().flush().await?;
    let rows: Vec<HistoryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT message_id, type, sender, recipients, subject, payload, {STATUS_SQL}, created_at, \
                conversation_id, correlation_id, priority, metadata \
         FROM message_history h \
         WHERE ($1::text IS NULL OR sender = $1) \
           AND ($2::text IS NULL OR recipients @> jsonb_build_array($2::text)) \
           AND ($3::text IS NULL OR conversation_id = $3) \
           AND ($4::timestamptz IS NULL OR created_at >= $4) \
           AND ($5::timestamptz IS NULL OR created_at < $5) \
           AND ($6::timestamptz IS NULL OR (created_at, message_id) < ($6, $7::text)) \
         ORDER BY created_at DESC, message_id DESC LIMIT $8"
    )))
    .bind(req.sender.as_deref())
    .bind(req.recipient.as_deref())
    .bind(req.conversation_id.as_deref())
    .bind(req.since)
    .bind(req.until)
    .bind(cursor.as_ref().map(|c| c.0))
    .bind(cursor.as_ref().map(|c| c.1.clone()))
    .bind(i64::from(limit) + 1)
    .fetch_all(comm.journal().pool())
    .await
    .map_err(db_error)?;
    let more = rows.len() > limit as usize;
    let messages: Vec<HistoryEntry> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| HistoryEntry {
            id: r.0,
            message_type: r.1,
            sender: r.2,
            recipients: r.3.0,
            subject: r.4,
            payload: r.5.0,
            status: r.6,
            created_at: r.7,
            conversation_id: r.8,
            correlation_id: r.9,
            priority: r.10,
            metadata: r.11.map(|m| m.0),
        })
        .collect();
    let next_cursor = if more {
        messages.last().map(|m| encode_cursor(m.created_at, &m.id))
    } else {
        None
    };
    Ok(HistoryPage {
        messages,
        next_cursor,
    })
}

// ---------------------------------------------------------- conversations

/// `communication.conversations` request.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsRequest {
    /// Only conversations this agent takes part in.
    pub participant: Option<String>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    /// The id.
    pub conversation_id: String,
    /// Every sender and recipient seen.
    pub participants: Value,
    /// The subject of its first message.
    pub topic: Option<String>,
    /// Messages in it.
    pub message_count: i32,
    /// Its first message.
    pub created_at: DateTime<Utc>,
    /// Its latest message.
    pub last_activity: DateTime<Utc>,
}

/// A page of conversations, most recently active first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConversationsPage {
    /// The conversations.
    pub conversations: Vec<Conversation>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

type ConversationRow = (
    String,
    Json<Value>,
    Option<String>,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
);

async fn conversations(
    comm: &Communication,
    req: ConversationsRequest,
) -> Result<ConversationsPage, Error> {
    let limit = page_limit(req.limit)?;
    let mut violations = Vec::new();
    check_name(&mut violations, "/participant", req.participant.as_deref());
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let cursor = req.cursor.as_deref().map(decode_cursor).transpose()?;
    // Read your own sends: their history rows may still be queued.
    comm.journal().flush().await?;
    let rows: Vec<ConversationRow> = sqlx::query_as(
        "SELECT conversation_id, participants, topic, message_count, created_at, last_activity \
         FROM conversation_archive \
         WHERE ($1::text IS NULL OR participants @> jsonb_build_array($1::text)) \
           AND ($2::timestamptz IS NULL OR (last_activity, conversation_id) < ($2, $3::text)) \
         ORDER BY last_activity DESC, conversation_id DESC LIMIT $4",
    )
    .bind(req.participant.as_deref())
    .bind(cursor.as_ref().map(|c| c.0))
    .bind(cursor.as_ref().map(|c| c.1.clone()))
    .bind(i64::from(limit) + 1)
    .fetch_all(comm.journal().pool())
    .await
    .map_err(db_error)?;
    let more = rows.len() > limit as usize;
    let conversations: Vec<Conversation> = rows
        .into_iter()
        .take(limit as usize)
        .map(|r| Conversation {
            conversation_id: r.0,
            participants: r.1.0,
            topic: r.2,
            message_count: r.3,
            created_at: r.4,
            last_activity: r.5,
        })
        .collect();
    let next_cursor = if more {
        conversations
            .last()
            .map(|c| encode_cursor(c.last_activity, &c.conversation_id))
    } else {
        None
    };
    Ok(ConversationsPage {
        conversations,
        next_cursor,
    })
}

// ---------------------------------------------------------------- metrics

/// One recipient's queue and circuit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecipientMetrics {
    /// The recipient.
    pub recipient: String,
    /// Undelivered copies (pending + in flight).
    pub backlog: u64,
    /// closed, open or half_open.
    pub breaker: String,
}

/// `communication.metrics` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsReply {
    /// Counters of this instance since it started.
    pub counters: Counters,
    /// Delivery latency (accept to acknowledgement) of this instance.
    pub delivery_latency: Latency,
    /// Per-recipient backlog bound.
    pub backlog_capacity: u32,
    /// Every recipient this instance delivers to.
    pub recipients: Vec<RecipientMetrics>,
}

async fn metrics_snapshot(comm: &Communication) -> MetricsReply {
    let breakers: std::collections::HashMap<String, &'static str> = comm
        .breakers()
        .states()
        .into_iter()
        .map(|(k, s)| (k, s.as_str()))
        .collect();
    let mut recipients: Vec<RecipientMetrics> = crate::delivery::poll_backlogs(comm)
        .await
        .into_iter()
        .map(|(recipient, backlog)| RecipientMetrics {
            breaker: breakers
                .get(&recipient)
                .copied()
                .unwrap_or("closed")
                .to_owned(),
            recipient,
            backlog,
        })
        .collect();
    recipients.sort_by(|a, b| a.recipient.cmp(&b.recipient));
    MetricsReply {
        counters: comm.stats().counters(),
        delivery_latency: comm.stats().latency(),
        backlog_capacity: comm.settings().backlog_limit,
        recipients,
    }
}

// -------------------------------------------------------------------- DLQ

/// `communication.dlq.list` request.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DlqListRequest {
    /// Only dead letters of this recipient.
    pub recipient: Option<String>,
    /// Start at this DLQ sequence (default: the oldest).
    pub from_sequence: Option<u64>,
    /// Page size (1..=1000, default 100).
    pub limit: Option<u32>,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Its sequence in `YMERA_DLQ` (the handle for replay).
    pub sequence: u64,
    /// The recipient that never acknowledged it.
    pub recipient: String,
    /// Attempts spent.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// The message.
    pub envelope: Value,
}

/// A page of dead letters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DlqPage {
    /// The dead letters, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `from_sequence` for the next page.
    pub next_sequence: Option<u64>,
}

async fn dlq_list(comm: &Communication, req: DlqListRequest) -> Result<DlqPage, Error> {
    let limit = page_limit(req.limit)?;
    let mut violations = Vec::new();
    check_name(&mut violations, "/recipient", req.recipient.as_deref());
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let subject = req
        .recipient
        .as_deref()
        .map(streams::dlq_subject)
        .unwrap_or_else(|| "ymera.dlq.>".to_owned());
    let stream = comm
        .js
        .get_stream_no_info(DLQ_STREAM)
        .await
        .map_err(|_| Error::dependency_down("jetstream"))?;
    let mut next = req.from_sequence.unwrap_or(1).max(1);
    let mut dead_letters = Vec::new();
    let mut more = false;
    loop {
        let message = match stream
            .direct_get_next_for_subject(subject.as_str(), Some(next))
            .await
        {
            Ok(message) => message,
            Err(err) => {
                use async_nats::jetstream::stream::DirectGetErrorKind;
                if matches!(err.kind(), DirectGetErrorKind::NotFound) {
                    break;
                }
                return Err(Error::dependency_down("jetstream"));
            }
        };
        if dead_letters.len() >= limit as usize {
            more = true;
            next = message.sequence;
            break;
        }
        next = message.sequence + 1;
        dead_letters.push(dead_letter_of(&message));
    }
    Ok(DlqPage {
        dead_letters,
        next_sequence: more.then_some(next),
    })
}

fn dead_letter_of(message: &async_nats::jetstream::message::StreamMessage) -> DeadLetter {
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    DeadLetter {
        sequence: message.sequence,
        recipient: header(RECIPIENT_HEADER).unwrap_or_default(),
        attempts: header(ATTEMPTS_HEADER)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        last_error: header(LAST_ERROR_HEADER),
        envelope: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
    }
}

/// `communication.dlq.replay` request: the dead letters to deliver again.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DlqReplayRequest {
    /// These DLQ sequences (from `dlq.list`), at most 1000.
    #[serde(default)]
    pub sequences: Vec<u64>,
    /// Or every dead letter of this recipient (up to `limit`).
    pub recipient: Option<String>,
    /// Most replayed by a recipient-wide replay (default 100, ≤ 1000).
    pub limit: Option<u32>,
}

/// `communication.dlq.replay` reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DlqReplayReply {
    /// Copies put back into `YMERA_MESSAGES` (attempts reset to 0).
    pub replayed: u32,
    /// Their message ids and recipients.
    pub messages: Vec<Value>,
}

async fn dlq_replay(
    comm: &Arc<Communication>,
    req: DlqReplayRequest,
) -> Result<DlqReplayReply, Error> {
    if req.sequences.len() > MAX_PAGE as usize {
        return Err(Error::validation(vec![Violation::new(
            "/sequences",
            "at most 1000",
        )]));
    }
    if req.sequences.is_empty() && req.recipient.is_none() {
        return Err(Error::validation(vec![Violation::new(
            "/sequences",
            "give sequences or a recipient",
        )]));
    }
    let stream = comm
        .js
        .get_stream_no_info(DLQ_STREAM)
        .await
        .map_err(|_| Error::dependency_down("jetstream"))?;
    let mut letters = Vec::new();
    if req.sequences.is_empty() {
        let page = dlq_list(
            comm,
            DlqListRequest {
                recipient: req.recipient.clone(),
                from_sequence: None,
                limit: req.limit,
            },
        )
        .await?;
        letters = page.dead_letters;
    } else {
        for seq in &req.sequences {
            match stream.get_raw_message(*seq).await {
                Ok(message) => letters.push(dead_letter_of(&message)),
                Err(_) => {
                    return Err(Error::not_found(format!(
                        "no dead letter with sequence {seq}"
                    )));
                }
            }
        }
    }
    let mut messages = Vec::new();
    for letter in letters {
        let Ok(envelope) = serde_json::from_value::<Envelope>(letter.envelope.clone()) else {
            continue;
        };
        if validate_agent_name(&letter.recipient).is_err() {
            continue;
        }
        crate::delivery::ensure_worker(comm, &letter.recipient).await?;
        crate::journal::reset_for_replay(
            comm.journal().pool(),
            &envelope.id.to_string(),
            &letter.recipient,
        )
        .await
        .map_err(db_error)?;
        let body = serde_json::to_vec(&envelope).map_err(Error::internal)?;
        let publish = Publish::build()
            .payload(body.into())
            .message_id(format!(
                "{}.{}.replay.{}",
                envelope.id, letter.recipient, letter.sequence
            ))
            .header(
                streams::ACCEPTED_AT_HEADER,
                Utc::now().to_rfc3339().as_str(),
            );
        let ack = comm
            .js
            .send_publish(streams::message_subject(&letter.recipient), publish)
            .await
            .map_err(|_| Error::dependency_down("jetstream"))?;
        ack.await.map_err(|_| Error::dependency_down("jetstream"))?;
        let _ = stream.delete_message(letter.sequence).await;
        messages.push(serde_json::json!({"id": envelope.id, "recipient": letter.recipient, "sequence": letter.sequence}));
    }
    Ok(DlqReplayReply {
        replayed: u32::try_from(messages.len()).unwrap_or(u32::MAX),
        messages,
    })
}

fn db_error(err: sqlx::Error) -> Error {
    tracing::warn!(error = %err, "PostgreSQL query failed");
    Error::dependency_down("postgres")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let cursor = encode_cursor(at, "abc:def");
        assert_eq!(decode_cursor(&cursor).unwrap(), (at, "abc:def".to_owned()));
        for bad in [
            "",
            "x",
            "12",
            "12:",
            "abc:def",
            &format!("1:{}", "k".repeat(300)),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_limits_are_bounded() {
        assert_eq!(page_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_limit(Some(1000)).unwrap(), 1000);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(1001)).is_err());
    }
}
