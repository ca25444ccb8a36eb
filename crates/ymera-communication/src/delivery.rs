//! Delivery: one durable pull consumer and one worker task per recipient.
//!
//! Each worker pulls its recipient's copies in small batches and delivers
//! them concurrently (up to `COMM_DELIVERY_CONCURRENCY`) as NATS requests to
//! `agent.<recipient>.inbox`. Recipients never wait for each other: a slow or
//! failing recipient only occupies its own worker.
//!
//! A failed attempt counts on the recipient's circuit breaker and is retried
//! by a NAK with a full-jitter delay; the last failed attempt moves the copy
//! to `YMERA_DLQ`. While the circuit is open the worker pulls nothing, and
//! copies already pulled are NAKed until the circuit's probe time without
//! spending an attempt (state `deferred`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::PublishMessage as Publish;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use ymera_core::Error;
use ymera_core::envelope::Envelope;
use ymera_core::error::{ERROR_CODE_HEADER, ERROR_HEADER};
use ymera_core::resilience::BreakerState;

use crate::journal::{self, DeliveryState, DeliveryUpdate};
use crate::streams::{
    self, ACCEPTED_AT_HEADER, ATTEMPTS_HEADER, LAST_ERROR_HEADER, MESSAGES_STREAM,
    RECIPIENT_HEADER, RELAYED_HEADER,
};
use crate::{Communication, MAX_RECIPIENTS_TRACKED};

/// Most copies pulled in one batch.
const MAX_PULL: usize = 64;
/// How long one pull waits for copies.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How often known consumers are re-listed and backlogs polled.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(2);
/// When a copy whose attempt the platform itself lost is tried again (no attempt spent).
const PLATFORM_RETRY: Duration = Duration::from_secs(1);
/// Longest error text stored and published.
const MAX_ERROR_CHARS: usize = 500;

/// Starts the consumer and worker of `recipient` unless this instance has one.
pub async fn ensure_worker(comm: &Arc<Communication>, recipient: &str) -> Result<(), Error> {
    {
        let workers = comm.workers.lock().unwrap_or_else(|p| p.into_inner());
        if workers.contains_key(recipient) {
            return Ok(());
        }
        if workers.len() >= MAX_RECIPIENTS_TRACKED {
            return Err(Error::new(
                ymera_core::error::ErrorKind::Unavailable,
                "this instance delivers to the most recipients it can track",
            )
            .with_detail("reason", "too_many_recipients"));
        }
    }
    let stream = comm
        .js
        .get_stream_no_info(MESSAGES_STREAM)
        .await
        .map_err(|_| Error::dependency_down("jetstream"))?;
    let consumer: PullConsumer = stream
        .create_consumer(streams::consumer_config(recipient, &comm.settings))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, recipient, "cannot create the delivery consumer");
            Error::dependency_down("jetstream")
        })?;
    let fresh = {
        let mut workers = comm.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.insert(recipient.to_owned(), ()).is_none()
    };
    if fresh {
        tokio::spawn(worker(comm.clone(), recipient.to_owned(), consumer));
    }
    Ok(())
}

/// Starts workers for every recipient that has a consumer (after a restart,
/// or copies sent through another instance).
pub async fn discover_recipients(comm: &Arc<Communication>) {
    let Ok(stream) = comm.js.get_stream_no_info(MESSAGES_STREAM).await else {
        return;
    };
    let mut names = stream.consumer_names();
    let mut found = Vec::new();
    while let Some(name) = names.next().await {
        match name {
            Ok(name) => {
                if let Some(recipient) = streams::recipient_of_consumer(&name) {
                    found.push(recipient.to_owned());
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "listing consumers failed");
                break;
            }
        }
        if found.len() >= MAX_RECIPIENTS_TRACKED {
            break;
        }
    }
    for recipient in found {
        if let Err(err) = ensure_worker(comm, &recipient).await {
            tracing::debug!(error = %err, recipient, "cannot start a worker");
        }
    }
}

/// Re-lists consumers and polls each recipient's backlog.
pub async fn maintenance_loop(comm: Arc<Communication>) {
    loop {
        tokio::select! {
            _ = comm.shutdown.cancelled() => return,
            _ = tokio::time::sleep(MAINTENANCE_EVERY) => {}
        }
        discover_recipients(&comm).await;
        let polled = poll_backlogs(&comm).await;
        comm.routed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        for (recipient, backlog) in polled {
            metrics::gauge!("ymera_comm_backlog", "recipient" => recipient.clone())
                .set(backlog as f64);
            let mut map = comm.backlog.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(recipient, backlog);
        }
    }
}

/// Undelivered copies per recipient this instance knows (pending + in flight).
pub async fn poll_backlogs(comm: &Communication) -> Vec<(String, u64)> {
    let recipients: Vec<String> = {
        let workers = comm.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.keys().cloned().collect()
    };
    let Ok(stream) = comm.js.get_stream_no_info(MESSAGES_STREAM).await else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        if let Ok(info) = stream
            .consumer_info(streams::consumer_name(&recipient))
            .await
        {
            let backlog = info.num_pending + info.num_ack_pending as u64;
            out.push((recipient, backlog));
        }
    }
    out
}

/// Undelivered copies of each of `recipients` (0 for one without a consumer), live from
/// JetStream.
pub async fn backlogs_of(
    comm: &Communication,
    recipients: &[String],
) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(stream) = comm.js.get_stream_no_info(MESSAGES_STREAM).await else {
        return out;
    };
    for recipient in recipients {
        if let Ok(info) = stream
            .consumer_info(streams::consumer_name(recipient))
            .await
        {
            out.insert(
                recipient.clone(),
                info.num_pending + info.num_ack_pending as u64,
            );
        }
    }
    out
}

async fn worker(comm: Arc<Communication>, recipient: String, consumer: PullConsumer) {
    let limit = Arc::new(Semaphore::new(comm.settings.delivery_concurrency));
    let min_pull = (comm.settings.delivery_concurrency / 4).clamp(1, MAX_PULL);
    let breaker = comm.breakers.get(&recipient);
    tracing::debug!(recipient, "delivery worker started");
    loop {
        if comm.shutdown.is_cancelled() {
            break;
        }
        let wait = breaker.retry_after();
        if !wait.is_zero() {
            // Open circuit: leave the copies in JetStream until the probe.
            tokio::select! {
                _ = comm.shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
            }
            continue;
        }
        // Pull in batches: when busy, wait until a quarter of the
        // concurrency is free rather than pulling copies one at a time (a
        // pull is a round trip to the server).
        let free = limit.available_permits();
        if free < min_pull {
            tokio::select! {
                _ = comm.shutdown.cancelled() => break,
                permits = limit.acquire_many(min_pull as u32) => drop(permits),
            }
            continue;
        }
        // Half-open: pull one copy, the probe, not a batch to defer again.
        let want = if breaker.state() == BreakerState::HalfOpen {
            1
        } else {
            free.min(MAX_PULL)
        };
        let batch = consumer
            .batch()
            .max_messages(want)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::debug!(error = %err, recipient, "pull failed; retrying");
                tokio::select! {
                    _ = comm.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = comm.shutdown.cancelled() => None,
                next = batch.next() => next,
            };
            let Some(message) = next else { break };
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::debug!(error = %err, recipient, "pull ended with an error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (comm2, recipient2) = (comm.clone(), recipient.clone());
            comm.tracker.spawn(async move {
                handle_copy(&comm2, &recipient2, message, permit).await;
            });
        }
    }
    tracing::debug!(recipient, "delivery worker stopped");
}

/// What to do with a copy once it was tried.
enum Outcome {
    Ack,
    Nak(Duration),
}

/// Tries one copy. `slot` (one of the recipient's concurrency permits) is
/// given back as soon as the inbox answered: storing the outcome and the
/// JetStream ack follow without it, bounded by the consumer's
/// `max_ack_pending`, so a slow journal batch does not hold back the next
/// deliveries.
async fn handle_copy(
    comm: &Arc<Communication>,
    recipient: &str,
    message: async_nats::jetstream::Message,
    slot: OwnedSemaphorePermit,
) {
    let outcome = match decide(comm, recipient, &message, slot).await {
        Ok(outcome) => outcome,
        Err(err) => {
            // The journal could not store the new state: try again later;
            // delivery is at least once.
            tracing::warn!(error = %err, recipient, "copy not settled; will be redelivered");
            Outcome::Nak(Duration::from_secs(1))
        }
    };
    let result = match outcome {
        Outcome::Ack => message.ack().await,
        Outcome::Nak(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, recipient, "ack failed; JetStream will redeliver");
    }
}

async fn decide(
    comm: &Arc<Communication>,
    recipient: &str,
    message: &async_nats::jetstream::Message,
    slot: OwnedSemaphorePermit,
) -> Result<Outcome, Error> {
    let envelope: Envelope = match serde_json::from_slice(&message.payload) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::error!(error = %err, recipient, "undecodable copy in YMERA_MESSAGES; dropping it");
            return Ok(Outcome::Ack);
        }
    };
    let envelope = Arc::new(envelope);
    // A repeat of a copy this instance is trying right now (a relayed copy whose first
    // publish was stored after all, a redelivery while the first attempt still runs) is
    // tried again once that attempt's state is stored: then the journal says delivered.
    let Some(_trying) = comm.try_copy(envelope.id, recipient) else {
        tracing::debug!(id = %envelope.id, recipient, "copy already being tried here; later");
        comm.stats.platform_deferred();
        return Ok(Outcome::Nak(PLATFORM_RETRY));
    };
    let accepted_at = accepted_at(message).unwrap_or(envelope.created_at);
    // A relayed copy is treated as a redelivery: past the duplicate window JetStream does
    // not drop a repeat of a copy whose first publish was stored after all, so the journal
    // says whether it was delivered already ([`crate::outbox`]).
    let redelivered = message.info().map(|i| i.delivered > 1).unwrap_or(true)
        || message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(RELAYED_HEADER).is_some());
    let mut attempts = comm.cached_attempts(envelope.id, recipient);
    if attempts.is_none() && redelivered {
        match journal::copy_state(comm.journal.pool(), envelope.id, recipient).await {
            Ok(Some((state, _))) if state.is_final() => return Ok(Outcome::Ack),
            Ok(Some((_, n))) => attempts = Some(n),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "cannot read a copy's attempts");
                return Err(Error::dependency_down("postgres"));
            }
        }
    }
    let attempts = attempts.unwrap_or(0);
    let update =
        |state, attempts, attempted_at, error: Option<String>, latency_ms| DeliveryUpdate {
            envelope: envelope.clone(),
            recipient: recipient.to_owned(),
            state,
            attempts,
            attempted_at,
            error,
            latency_ms,
            accepted_at,
        };
    if envelope.is_expired_at(Utc::now()) {
        comm.journal
            .delivery(update(DeliveryState::Expired, attempts, None, None, None))
            .await?;
        comm.stats.expired();
        comm.cache_attempts(envelope.id, recipient, None);
        return Ok(Outcome::Ack);
    }
    if attempts >= comm.live().max_attempts {
        let error = "attempts exhausted".to_owned();
        return dead_letter(
            comm,
            recipient,
            &envelope,
            message,
            attempts,
            error,
            accepted_at,
        )
        .await;
    }
    let breaker = comm.breakers.get(recipient);
    let permit = match breaker.try_acquire() {
        Ok(permit) => permit,
        Err(open) => {
            let jitter = Duration::from_millis(rand::rng().random_range(0..500));
            let delay = open.retry_after.max(Duration::from_millis(200)) + jitter;
            comm.journal
                .delivery(update(DeliveryState::Deferred, attempts, None, None, None))
                .await?;
            comm.cache_attempts(envelope.id, recipient, Some(attempts));
            return Ok(Outcome::Nak(delay));
        }
    };
    // An attempt is spent only on the recipient (DESIGN §11): with this instance's own
    // NATS connection down, nothing is tried.
    if comm.client.connection_state() != async_nats::connection::State::Connected {
        permit.abandon();
        comm.stats.platform_deferred();
        return Ok(Outcome::Nak(PLATFORM_RETRY));
    }
    let connects = comm.client.statistics().connects.load(Ordering::Relaxed);
    let attempt = attempts + 1;
    let attempted_at = Utc::now();
    let answer = call_inbox(comm, recipient, &message.payload, attempt, &envelope).await;
    drop(slot);
    let answer = match answer {
        Err(Failure::Other(error)) if own_connection_failed(comm, connects).await => {
            // The attempt failed on this side (connection dropped or stalled, nats-server
            // restarted meanwhile): not the recipient's fault, no attempt spent.
            tracing::debug!(error = %error, recipient, "attempt lost to the platform; not counted");
            permit.abandon();
            comm.stats.platform_deferred();
            return Ok(Outcome::Nak(PLATFORM_RETRY));
        }
        Err(Failure::Other(error) | Failure::Rejected(error)) => Err(error),
        Ok(()) => Ok(()),
    };
    match answer {
        Ok(()) => {
            permit.success();
            let latency = (Utc::now() - accepted_at).to_std().unwrap_or_default();
            let latency_ms = latency.as_secs_f64() * 1000.0;
            comm.journal
                .delivery(update(
                    DeliveryState::Delivered,
                    attempt,
                    Some(attempted_at),
                    None,
                    Some(latency_ms),
                ))
                .await?;
            comm.stats.delivered(latency);
            comm.cache_attempts(envelope.id, recipient, None);
            publish_event(
                comm,
                "events.communication.delivered",
                &DeliveredEvent {
                    id: envelope.id,
                    recipient,
                    sender: &envelope.sender,
                    attempts: attempt,
                    latency_ms,
                    at: Utc::now(),
                },
            )
            .await;
            Ok(Outcome::Ack)
        }
        Err(error) => {
            permit.failure();
            comm.stats.failed();
            if attempt >= comm.live().max_attempts {
                return dead_letter(
                    comm,
                    recipient,
                    &envelope,
                    message,
                    attempt,
                    error,
                    accepted_at,
                )
                .await;
            }
            let delay = comm.live().retry_delay(attempt - 1, &mut rand::rng());
            comm.journal
                .delivery(update(
                    DeliveryState::Retrying,
                    attempt,
                    Some(attempted_at),
                    Some(error.clone()),
                    None,
                ))
                .await?;
            comm.cache_attempts(envelope.id, recipient, Some(attempt));
            publish_event(
                comm,
                "events.communication.failed",
                &FailedEvent {
                    id: envelope.id,
                    recipient,
                    attempt,
                    error: &error,
                    retry_in_ms: delay.as_millis() as u64,
                    at: Utc::now(),
                },
            )
            .await;
            Ok(Outcome::Nak(delay))
        }
    }
}

fn accepted_at(message: &async_nats::jetstream::Message) -> Option<DateTime<Utc>> {
    let value = message.headers.as_ref()?.get(ACCEPTED_AT_HEADER)?;
    DateTime::parse_from_rfc3339(value.as_str())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Why an attempt failed.
enum Failure {
    /// The recipient answered with an error: its fault for sure.
    Rejected(String),
    /// No answer (timeout, no responders, the request failed): the recipient's fault
    /// unless this instance's own connection failed meanwhile ([`own_connection_failed`]).
    Other(String),
}

/// Whether this instance's own NATS connection failed during an attempt begun with
/// `connects_before` connects: it is down, it reconnected meanwhile (nats-server
/// restarted or the connection dropped), or its server (JetStream) does not answer a
/// round trip within 1 s (a stalled or overloaded server, JetStream unavailable).
async fn own_connection_failed(comm: &Communication, connects_before: u64) -> bool {
    if comm.client.connection_state() != async_nats::connection::State::Connected
        || comm.client.statistics().connects.load(Ordering::Relaxed) != connects_before
    {
        return true;
    }
    let probe = comm.client.request("$JS.API.INFO", Bytes::new());
    !matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(_))
    )
}

/// One attempt: a request to the inbox; any reply without an error header
/// acknowledges the copy.
async fn call_inbox(
    comm: &Communication,
    recipient: &str,
    body: &Bytes,
    attempt: u32,
    envelope: &Envelope,
) -> Result<(), Failure> {
    let inbox_timeout = comm.live().inbox_timeout;
    let mut headers = HeaderMap::new();
    headers.insert("Ymera-Message-Id", envelope.id.to_string().as_str());
    headers.insert(ATTEMPTS_HEADER, attempt.to_string().as_str());
    let request = async_nats::Request::new()
        .payload(body.clone())
        .headers(headers)
        .timeout(Some(inbox_timeout));
    let reply = comm
        .client
        .send_request(format!("agent.{recipient}.inbox"), request)
        .await
        .map_err(|e| {
            use async_nats::RequestErrorKind;
            match e.kind() {
                RequestErrorKind::NoResponders => {
                    format!("no agent answers on agent.{recipient}.inbox")
                }
                RequestErrorKind::TimedOut => format!(
                    "agent.{recipient}.inbox did not answer within {} ms",
                    inbox_timeout.as_millis()
                ),
                _ => format!("request to agent.{recipient}.inbox failed: {e}"),
            }
        })
        .map_err(Failure::Other)?;
    if let Some(headers) = &reply.headers {
        let message = headers.get(ERROR_HEADER).map(|v| v.as_str().to_owned());
        let code = headers
            .get(ERROR_CODE_HEADER)
            .map(|v| v.as_str().to_owned());
        if message.is_some() || code.is_some() {
            let text = format!(
                "recipient rejected the message: {} {}",
                code.unwrap_or_default(),
                message.unwrap_or_default()
            );
            return Err(Failure::Rejected(truncate(&text)));
        }
    }
    if let Some(status) = reply.status
        && status.as_u16() >= 400
    {
        return Err(Failure::Other(format!(
            "agent.{recipient}.inbox answered with status {status}"
        )));
    }
    Ok(())
}

async fn dead_letter(
    comm: &Arc<Communication>,
    recipient: &str,
    envelope: &Arc<Envelope>,
    message: &async_nats::jetstream::Message,
    attempts: u32,
    error: String,
    accepted_at: DateTime<Utc>,
) -> Result<Outcome, Error> {
    let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let publish = Publish::build()
        .payload(message.payload.clone())
        .message_id(format!("{}.{recipient}.{seq}", envelope.id))
        .header(RECIPIENT_HEADER, recipient)
        .header(ATTEMPTS_HEADER, attempts.to_string().as_str())
        .header(
            LAST_ERROR_HEADER,
            truncate(&error).replace(['\r', '\n'], " ").as_str(),
        )
        .header(ACCEPTED_AT_HEADER, accepted_at.to_rfc3339().as_str());
    let ack = comm
        .js
        .send_publish(streams::dlq_subject(recipient), publish)
        .await
        .map_err(|_| Error::dependency_down("jetstream"))?;
    ack.await.map_err(|_| Error::dependency_down("jetstream"))?;
    comm.journal
        .delivery(DeliveryUpdate {
            envelope: envelope.clone(),
            recipient: recipient.to_owned(),
            state: DeliveryState::DeadLettered,
            attempts,
            attempted_at: None,
            error: Some(truncate(&error)),
            latency_ms: None,
            accepted_at,
        })
        .await?;
    comm.stats.dead_lettered();
    comm.cache_attempts(envelope.id, recipient, None);
    publish_event(
        comm,
        "events.communication.dead_lettered",
        &DeadLetteredEvent {
            id: envelope.id,
            recipient,
            sender: &envelope.sender,
            attempts,
            last_error: &truncate(&error),
            at: Utc::now(),
        },
    )
    .await;
    Ok(Outcome::Ack)
}

/// `events.communication.delivered`.
#[derive(Serialize)]
struct DeliveredEvent<'a> {
    id: Uuid,
    recipient: &'a str,
    sender: &'a str,
    attempts: u32,
    latency_ms: f64,
    at: DateTime<Utc>,
}

/// `events.communication.failed`.
#[derive(Serialize)]
struct FailedEvent<'a> {
    id: Uuid,
    recipient: &'a str,
    attempt: u32,
    error: &'a str,
    retry_in_ms: u64,
    at: DateTime<Utc>,
}

/// `events.communication.dead_lettered`.
#[derive(Serialize)]
struct DeadLetteredEvent<'a> {
    id: Uuid,
    recipient: &'a str,
    sender: &'a str,
    attempts: u32,
    last_error: &'a str,
    at: DateTime<Utc>,
}

/// Publishes one delivery event (typed: encoded straight to bytes, no JSON tree).
async fn publish_event<T: Serialize>(comm: &Communication, subject: &'static str, body: &T) {
    let Ok(bytes) = serde_json::to_vec(body) else {
        return;
    };
    if let Err(err) = comm.client.publish(subject, Bytes::from(bytes)).await {
        tracing::debug!(error = %err, subject, "event not published");
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}
