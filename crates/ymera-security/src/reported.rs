//! Security events other services report: today the gateway's webhook
//! refusals (`events.security.webhook_refused`, crates/ymera-gateway
//! `webhooks.rs`), which must land in `security_events` like this
//! service's own.
//!
//! The gateway publishes them into the JetStream stream `YMERA_EVENTS`
//! (it owns that stream; `events.>`). Every security replica pulls from one
//! shared durable consumer ([`CONSUMER`], filtered on [`SUBJECTS`]), so each
//! event is handed to one replica at a time; a batch is acknowledged only
//! after its insert succeeded, and a redelivery (a replica died between
//! insert and ack) is a no-op because the row id is the event's own id
//! (`ON CONFLICT (id) DO NOTHING`). Nothing is re-published: the events
//! are already on their subject.
//!
//! Input is validated: at most [`MAX_EVENT_BYTES`], a UUID id, the
//! `event_type` its subject names, details a JSON object (scrubbed and
//! bounded like every event's); anything else is terminated (never
//! redelivered) and counted in `ymera_security_reported_invalid_total`.
//! Without the stream (no gateway deployed) the task waits and retries.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::events::{SecurityEvent, try_write};

/// The stream the reports are in (created by the gateway).
pub const STREAM: &str = "YMERA_EVENTS";
/// The shared durable consumer of every security replica.
pub const CONSUMER: &str = "security_reported_events";
/// The reported subjects and the event type each carries.
pub const SUBJECTS: [(&str, &str); 1] = [("events.security.webhook_refused", "webhook_refused")];
/// Largest accepted report.
pub const MAX_EVENT_BYTES: usize = 8 * 1024;
/// Most events per pull (one insert).
const PULL: usize = 500;
/// How long an unacknowledged report waits before JetStream hands it out again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Retry interval while the stream does not exist or a pull fails.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
struct Report {
    id: uuid::Uuid,
    event_type: String,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    details: Value,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

/// Validates one report on `subject` into the event to store.
pub fn parse(subject: &str, payload: &[u8]) -> Result<SecurityEvent, String> {
    let Some((_, event_type)) = SUBJECTS.iter().find(|(s, _)| *s == subject) else {
        return Err(format!("{subject} is not a reported subject"));
    };
    if payload.len() > MAX_EVENT_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_EVENT_BYTES}",
            payload.len()
        ));
    }
    let report: Report = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if report.event_type != *event_type {
        return Err(format!(
            "event_type {:?} on {subject}",
            report.event_type.chars().take(64).collect::<String>()
        ));
    }
    if !(report.details.is_object() || report.details.is_null()) {
        return Err("details is not an object".to_owned());
    }
    let now = Utc::now();
    // The reporter's clock, unless it is absurd (then the time it arrived).
    let created_at = report
        .created_at
        .filter(|t| (*t - now).num_seconds().abs() < 86_400)
        .unwrap_or(now);
    let mut event = SecurityEvent::new(event_type, report.details).with_principal(
        report.principal.as_deref(),
        report.tenant.as_deref(),
        report.key_id.as_deref(),
    );
    event.id = report.id;
    event.created_at = created_at;
    Ok(event)
}

/// The consumer's configuration.
pub fn consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some(
            "security events reported by other services, into security_events".to_owned(),
        ),
        filter_subjects: SUBJECTS.iter().map(|(s, _)| (*s).to_owned()).collect(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: i64::try_from(PULL * 4).unwrap_or(2000),
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// Stores reported events until `shutdown` (spawned by every replica).
pub async fn run(nats: async_nats::Client, pool: PgPool, shutdown: CancellationToken) {
    let js = jetstream::new(nats);
    let mut announced = false;
    loop {
        let consumer = match open(&js).await {
            Ok(consumer) => consumer,
            Err(err) => {
                if !announced {
                    tracing::info!(error = %err, "reported security events: waiting for the stream {STREAM}");
                    announced = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        tracing::info!("storing reported security events from {STREAM}");
        if !drain(&consumer, &pool, &shutdown).await {
            return;
        }
    }
}

async fn open(js: &jetstream::Context) -> Result<consumer::PullConsumer, String> {
    let stream = js
        .get_stream_no_info(STREAM)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .get_or_create_consumer(CONSUMER, consumer_config())
        .await
        .map_err(|e| e.to_string())
}

/// Pulls and stores batches; `false` on shutdown, `true` to reopen the consumer.
async fn drain(
    consumer: &consumer::PullConsumer,
    pool: &PgPool,
    shutdown: &CancellationToken,
) -> bool {
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() {
            return false;
        }
        let batch = consumer
            .batch()
            .max_messages(PULL)
            .expires(Duration::from_secs(5))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::debug!(error = %err, "pull of reported security events failed");
                failures += 1;
                if failures > 3 {
                    return true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        let mut messages = Vec::new();
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => None,
                next = batch.next() => next,
            };
            match next {
                Some(Ok(message)) => messages.push(message),
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "pull of reported security events ended");
                    break;
                }
                None => break,
            }
        }
        if messages.is_empty() {
            continue;
        }
        failures = 0;
        let mut events = Vec::with_capacity(messages.len());
        let mut valid = Vec::with_capacity(messages.len());
        for message in messages {
            match parse(message.subject.as_str(), &message.payload) {
                Ok(event) => {
                    events.push(event);
                    valid.push(message);
                }
                Err(reason) => {
                    tracing::warn!(subject = %message.subject, %reason, "invalid reported security event dropped");
                    metrics::counter!("ymera_security_reported_invalid_total").increment(1);
                    let _ = message.ack_with(AckKind::Term).await;
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        match try_write(pool, &events).await {
            Ok(()) => {
                for event in &events {
                    metrics::counter!("ymera_security_events_total", "type" => event.event_type)
                        .increment(1);
                }
                for message in valid {
                    if let Err(err) = message.ack().await {
                        tracing::debug!(error = %err, "ack failed; the report will be redelivered (stored once)");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, count = valid.len(), "reported security events not stored; will retry");
                for message in valid {
                    let _ = message.ack_with(AckKind::Nak(Some(RETRY))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_validated() {
        let id = uuid::Uuid::now_v7();
        let good = serde_json::json!({
            "id": id, "event_type": "webhook_refused", "principal": null,
            "details": {"source": "billing", "reason": "bad\nsignature"},
            "created_at": Utc::now(),
        })
        .to_string();
        let event = parse("events.security.webhook_refused", good.as_bytes()).unwrap();
        assert_eq!(event.id, id);
        assert_eq!(event.event_type, "webhook_refused");
        assert_eq!(event.details["reason"], "badsignature");
        assert!(parse("events.security.key_created", good.as_bytes()).is_err());
        let wrong_type = good.replace("webhook_refused", "key_created");
        assert!(parse("events.security.webhook_refused", wrong_type.as_bytes()).is_err());
        assert!(parse("events.security.webhook_refused", b"not json").is_err());
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_EVENT_BYTES));
        assert!(parse("events.security.webhook_refused", big.as_bytes()).is_err());
        let details =
            serde_json::json!({"id": id, "event_type": "webhook_refused", "details": [1]});
        assert!(
            parse(
                "events.security.webhook_refused",
                details.to_string().as_bytes()
            )
            .is_err()
        );
    }
}
