//! The PostgreSQL reads behind `communication.status`, `history` and
//! `conversations` (the writes are the [`journal`](crate::journal)'s).
//! Overall statuses are computed live with [`STATUS_SQL`].

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use ymera_core::Error;

use crate::journal::STATUS_SQL;
use crate::model::{Conversation, CopyStatus, HistoryEntry, MessageStatus};

/// Maps a failed query to 503 `dependency_down` (the cause is logged).
pub fn db_error(err: sqlx::Error) -> Error {
    tracing::warn!(error = %err, "PostgreSQL query failed");
    Error::dependency_down("postgres")
}

/// A message's history row, as `communication.status` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageHead {
    /// Overall status, computed from its copies.
    pub status: MessageStatus,
    /// The sender.
    pub sender: String,
    /// The subject.
    pub subject: String,
    /// When the sender created it.
    pub created_at: DateTime<Utc>,
    /// Every recipient.
    #[sqlx(json)]
    pub recipients: Vec<String>,
}

/// The history row of message `id`, if stored, and the rows of its copies
/// (a copy nothing happened to yet has none), by recipient.
pub async fn message(
    pool: &PgPool,
    id: &str,
) -> Result<(Option<MessageHead>, Vec<CopyStatus>), Error> {
    let head: Option<MessageHead> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {STATUS_SQL} AS status, sender, subject, created_at, recipients \
         FROM message_history h WHERE message_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(db_error)?;
    let copies: Vec<CopyStatus> = sqlx::query_as(
        "SELECT recipient, state, attempts, first_attempt_at, last_attempt_at, last_error, delivered_at, latency_ms \
         FROM message_deliveries WHERE message_id = $1 ORDER BY recipient",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    Ok((head, copies))
}

/// Where a page starts: after the row at (`at`, `key`) in its order.
pub type After = (DateTime<Utc>, String);

/// The filters of a history page (all optional).
#[derive(Debug, Default)]
pub struct HistoryFilter<'a> {
    /// Only messages from this sender.
    pub sender: Option<&'a str>,
    /// Only messages to this recipient.
    pub recipient: Option<&'a str>,
    /// Only messages of this conversation.
    pub conversation_id: Option<&'a str>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
}

/// Up to `rows` messages matching `filter`, newest first (by
/// `(created_at, message_id)`), after `after`.
pub async fn history(
    pool: &PgPool,
    filter: &HistoryFilter<'_>,
    after: Option<&After>,
    rows: i64,
) -> Result<Vec<HistoryEntry>, Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT message_id, type, sender, recipients, subject, payload, {STATUS_SQL} AS status, created_at, \
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
    .bind(filter.sender)
    .bind(filter.recipient)
    .bind(filter.conversation_id)
    .bind(filter.since)
    .bind(filter.until)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1.as_str()))
    .bind(rows)
    .fetch_all(pool)
    .await
    .map(|rows: Vec<HistoryEntry>| {
        rows.into_iter()
            .map(|mut row| {
                row.resolved = crate::agents::resolved_from(row.metadata.as_ref());
                row
            })
            .collect()
    })
    .map_err(db_error)
}

/// Up to `rows` conversations `participant` (if given) takes part in, most
/// recently active first (by `(last_activity, conversation_id)`), after `after`.
pub async fn conversations(
    pool: &PgPool,
    participant: Option<&str>,
    after: Option<&After>,
    rows: i64,
) -> Result<Vec<Conversation>, Error> {
    sqlx::query_as(
        "SELECT conversation_id, participants, topic, message_count, created_at, last_activity \
         FROM conversation_archive \
         WHERE ($1::text IS NULL OR participants @> jsonb_build_array($1::text)) \
           AND ($2::timestamptz IS NULL OR (last_activity, conversation_id) < ($2, $3::text)) \
         ORDER BY last_activity DESC, conversation_id DESC LIMIT $4",
    )
    .bind(participant)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1.as_str()))
    .bind(rows)
    .fetch_all(pool)
    .await
    .map_err(db_error)
}
