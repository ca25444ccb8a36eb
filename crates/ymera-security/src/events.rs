//! The audit trail: every security-relevant event is counted
//! (`ymera_security_events_total{type}`), published on
//! `events.security.<type>` and persisted in `security_events` by a
//! background writer in batches (so a flood of bad credentials costs one
//! insert per batch, not one per request). Strings are scrubbed first:
//! control characters removed, length bounded, anything that looks like an
//! API key or a JWT replaced by its public part or `[redacted]`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apikey;

/// Capacity of the writer queue; when full, events are counted and published
/// but not persisted (an error is logged with the count).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Most events per insert.
pub const BATCH: usize = 500;
/// Longest scrubbed string.
pub const MAX_FIELD_CHARS: usize = 256;

/// One security event.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityEvent {
    /// UUID v7.
    pub id: uuid::Uuid,
    /// `invalid_api_key`, `key_created`, …
    pub event_type: &'static str,
    /// The owner of the credential, when known.
    pub principal: Option<String>,
    /// The tenant, when known.
    pub tenant: Option<String>,
    /// The public key id, when known.
    pub key_id: Option<String>,
    /// Scrubbed details.
    pub details: Value,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

impl SecurityEvent {
    /// A new event of `event_type` with `details` (scrubbed here).
    pub fn new(event_type: &'static str, details: Value) -> SecurityEvent {
        SecurityEvent {
            id: uuid::Uuid::now_v7(),
            event_type,
            principal: None,
            tenant: None,
            key_id: None,
            details: scrub_value(details, 0),
            created_at: Utc::now(),
        }
    }

    /// Sets who it concerns.
    pub fn with_principal(
        mut self,
        principal: Option<&str>,
        tenant: Option<&str>,
        key_id: Option<&str>,
    ) -> SecurityEvent {
        self.principal = principal.map(scrub);
        self.tenant = tenant.map(scrub);
        self.key_id = key_id.map(scrub);
        self
    }
}

/// Removes control characters, bounds the length and redacts credentials.
pub fn scrub(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FIELD_CHARS)
        .collect();
    cleaned
        .split(' ')
        .map(|word| {
            if word.starts_with(apikey::PREFIX) {
                apikey::redact(word)
            } else if word.starts_with("eyJ") || word.len() > 64 && !word.contains('/') {
                "[redacted]".to_owned()
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn scrub_value(value: Value, depth: usize) -> Value {
    if depth > 4 {
        return Value::Null;
    }
    match value {
        Value::String(s) => Value::String(scrub(&s)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .take(64)
                .map(|v| scrub_value(v, depth + 1))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .take(64)
                .map(|(k, v)| (scrub(&k), scrub_value(v, depth + 1)))
                .collect(),
        ),
        other => other,
    }
}

/// Records events: metric, NATS publish, and the batched writer.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    nats: async_nats::Client,
    queue: mpsc::Sender<SecurityEvent>,
}

impl EventRecorder {
    /// A recorder and the writer task's receiving end.
    pub fn new(nats: async_nats::Client) -> (EventRecorder, mpsc::Receiver<SecurityEvent>) {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        (EventRecorder { nats, queue }, rx)
    }

    /// Records one event.
    pub async fn record(&self, event: SecurityEvent) {
        metrics::counter!("ymera_security_events_total", "type" => event.event_type).increment(1);
        tracing::info!(
            event_type = event.event_type,
            principal = event.principal.as_deref().unwrap_or("-"),
            tenant = event.tenant.as_deref().unwrap_or("-"),
            key_id = event.key_id.as_deref().unwrap_or("-"),
            "security event"
        );
        match serde_json::to_vec(&event) {
            Ok(body) => {
                let subject = format!("events.security.{}", event.event_type);
                if let Err(err) = self.nats.publish(subject, body.into()).await {
                    tracing::warn!(error = %err, "cannot publish a security event");
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot encode a security event"),
        }
        let event_type = event.event_type;
        if self.queue.try_send(event).is_err() {
            tracing::error!(
                event_type,
                "security event queue full; event published but not persisted"
            );
        }
    }
}

/// The writer: drains the queue into `security_events` in batches until
/// shutdown, then flushes what is left.
pub async fn run_writer(
    pool: PgPool,
    mut rx: mpsc::Receiver<SecurityEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            event = rx.recv() => event,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        write_batch(&pool, &batch).await;
    }
    rx.close();
    let mut rest = Vec::new();
    while let Ok(event) = rx.try_recv() {
        rest.push(event);
        if rest.len() == BATCH {
            write_batch(&pool, &rest).await;
            rest.clear();
        }
    }
    if !rest.is_empty() {
        write_batch(&pool, &rest).await;
    }
}

/// Persists events right away (for callers without a recorder, e.g. the bootstrap).
pub async fn write_now(pool: &PgPool, events: &[SecurityEvent]) {
    write_batch(pool, events).await;
}

/// Inserts `batch` once (an id already stored is skipped), reporting failure
/// to the caller (the reported-events consumer acknowledges only after it).
pub async fn try_write(pool: &PgPool, batch: &[SecurityEvent]) -> Result<(), sqlx::Error> {
    insert_query(batch).build().execute(pool).await.map(|_| ())
}

fn insert_query(batch: &[SecurityEvent]) -> sqlx::QueryBuilder<sqlx::Postgres> {
    let mut builder = sqlx::QueryBuilder::new(
        "INSERT INTO security_events (id, event_type, principal, tenant, key_id, details, created_at) ",
    );
    builder.push_values(batch, |mut row, e| {
        row.push_bind(e.id)
            .push_bind(e.event_type)
            .push_bind(&e.principal)
            .push_bind(&e.tenant)
            .push_bind(&e.key_id)
            .push_bind(&e.details)
            .push_bind(e.created_at);
    });
    builder.push(" ON CONFLICT (id) DO NOTHING");
    builder
}

async fn write_batch(pool: &PgPool, batch: &[SecurityEvent]) {
    for attempt in 0..3u64 {
        match insert_query(batch).build().execute(pool).await {
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, attempt, "cannot persist security events");
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    tracing::error!(
        dropped = batch.len(),
        "security events not persisted after 3 attempts"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_control_characters_and_secrets() {
        let pepper = apikey::Pepper::new(vec![1u8; 32]).unwrap();
        let key = apikey::generate(&pepper);
        let text = format!("user\n\u{1b}[31mevil key {} token eyJhbGciOi.x.y", key.full);
        let out = scrub(&text);
        assert!(!out.contains('\n') && !out.contains('\u{1b}'));
        assert!(!out.contains(&key.full));
        assert!(out.contains(&key.key_id));
        assert!(out.contains("[redacted]"));
        assert!(scrub(&"a".repeat(1000)).chars().count() <= MAX_FIELD_CHARS);
    }

    #[test]
    fn scrub_value_walks_nested_json() {
        let v = scrub_value(serde_json::json!({"a\u{0}": ["x\u{7}y"]}), 0);
        assert_eq!(v, serde_json::json!({"a": ["xy"]}));
    }
}
