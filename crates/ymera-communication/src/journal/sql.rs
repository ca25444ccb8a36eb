//! The journal's SQL: the set-based batch statements (`INSERT … SELECT
//! FROM UNNEST(…)`), [`STATUS_SQL`], and the direct queries (a copy's
//! stored state, the DLQ replay reset, retention).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;
use ymera_core::envelope::Envelope;

use super::DeliveryState;
use super::writer::MergedUpdate;
use crate::model::MessageStatus;

/// SQL for the overall status of the `message_history` row aliased `h`,
/// from its copies: `accepted` until every recipient's copy is final, then
/// `delivered` when all were, else `dead_lettered` when one was, else
/// `expired`. The one definition: the status and history endpoints compute
/// it live, the settler stores it in `message_history.status`; held rows
/// get it from [`MessageStatus::of`], its mirror.
pub const STATUS_SQL: &str = "(SELECT CASE \
    WHEN count(*) FILTER (WHERE d.state IN ('delivered', 'dead_lettered', 'expired')) \
         < jsonb_array_length(h.recipients) THEN 'accepted' \
    WHEN bool_and(d.state = 'delivered') THEN 'delivered' \
    WHEN bool_or(d.state = 'dead_lettered') THEN 'dead_lettered' \
    ELSE 'expired' END \
  FROM message_deliveries d WHERE d.message_id = h.message_id)";

/// Writes the history row of any message that has none (its record was
/// lost to a crash or a failed write) when one of its copies became final.
pub(super) async fn ensure_history(
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
    let missing: BTreeMap<Uuid, (&Envelope, MessageStatus)> = finished
        .iter()
        .zip(&ids)
        .filter(|(_, text)| !existing.contains(text.as_str()))
        .map(|((id, envelope), _)| (*id, (*envelope, MessageStatus::Accepted)))
        .collect();
    insert_messages(&mut *tx, &missing).await.map(|_| ())
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
pub(super) async fn insert_messages(
    tx: &mut sqlx::PgConnection,
    messages: &BTreeMap<Uuid, (&Envelope, MessageStatus)>,
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
    .bind(messages.values().map(|(_, status)| status.as_str()).collect::<Vec<_>>())
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
pub(super) async fn upsert_deliveries(
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
