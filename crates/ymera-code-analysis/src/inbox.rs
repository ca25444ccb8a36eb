//! The agent inbox of `code-analysis` (DESIGN §3): routed chat messages arrive
//! as NATS requests on `agent.code-analysis.inbox` (queue group
//! `code-analysis`, so instances share the work). Each is acknowledged at
//! once with `{}`; then, for a `request`/`command` envelope whose payload is
//! `{"message": "<text>"}`, the agent answers through `communication.send`
//! with a `response` envelope to the sender: the Markdown report when
//! [`crate::can_handle`] accepts the message, else `{"success": false, "error"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use ymera_core::envelope::{Envelope, MessageType};
use ymera_core::runtime::RuntimeError;

use crate::AnalysisRequest;
use crate::service::{NAME, analyze_blocking, limits_for};

/// The inbox subject of this agent.
pub const INBOX_SUBJECT: &str = "agent.code-analysis.inbox";
/// Where answers go (the communication agent).
pub const SEND_SUBJECT: &str = "communication.send";
/// Most messages analysed at once per instance; more wait (the transport
/// acknowledgement is never delayed).
pub const MAX_CONCURRENT: usize = 8;
/// How long to wait for `communication.send` to accept an answer.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscribed inbox, ready to run.
pub struct Inbox {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    max_message_size: usize,
}

/// Subscribes to the inbox (before the service announces itself, so no
/// message routed after start-up is missed).
pub async fn subscribe(
    client: &async_nats::Client,
    max_message_size: usize,
) -> Result<Inbox, RuntimeError> {
    let subscriber = client
        .queue_subscribe(INBOX_SUBJECT, NAME.to_owned())
        .await
        .map_err(|e| RuntimeError::Register(format!("{INBOX_SUBJECT}: {e}")))?;
    Ok(Inbox {
        client: client.clone(),
        subscriber,
        max_message_size,
    })
}

impl Inbox {
    /// Handles messages until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                next = self.subscriber.next() => match next {
                    Some(message) => message,
                    None => break,
                },
            };
            if let Some(reply) = message.reply.clone()
                && let Err(err) = self.client.publish(reply, "{}".into()).await
            {
                tracing::warn!(error = %err, "cannot acknowledge an inbox message");
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let client = self.client.clone();
            let max = self.max_message_size;
            tokio::spawn(async move {
                handle(&client, &message.payload, max).await;
                drop(permit);
            });
        }
        if let Err(err) = self.subscriber.unsubscribe().await {
            tracing::debug!(error = %err, "inbox unsubscribe failed");
        }
    }
}

/// Answers one inbox message (after it was acknowledged).
async fn handle(client: &async_nats::Client, body: &[u8], max_message_size: usize) {
    let envelope: Envelope = match ymera_core::limits::parse_json(body, max_message_size) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::warn!(error = %err, "inbox message is not an envelope; dropped");
            return;
        }
    };
    // Responses and events are not questions: answering them could loop.
    if !matches!(
        envelope.message_type,
        MessageType::Request | MessageType::Command
    ) {
        tracing::debug!(id = %envelope.id, "inbox message is not a request; no answer");
        return;
    }
    let payload = answer(&envelope, max_message_size).await;
    let response = envelope.reply(NAME, payload);
    let bytes = match serde_json::to_vec(&response) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode the response envelope");
            return;
        }
    };
    let sent = tokio::time::timeout(
        SEND_TIMEOUT,
        client.request(SEND_SUBJECT, bytes::Bytes::from(bytes)),
    )
    .await;
    match sent {
        Ok(Ok(reply))
            if reply
                .headers
                .as_ref()
                .is_none_or(|h| h.get("Nats-Service-Error").is_none()) =>
        {
            tracing::debug!(id = %response.id, to = %envelope.sender, "response sent");
        }
        Ok(Ok(reply)) => tracing::warn!(
            id = %response.id,
            error = %String::from_utf8_lossy(&reply.payload),
            "communication.send refused the response"
        ),
        Ok(Err(err)) => tracing::warn!(id = %response.id, error = %err, "cannot send the response"),
        Err(_) => tracing::warn!(id = %response.id, "communication.send did not answer in time"),
    }
}

/// The response payload for a chat request.
async fn answer(envelope: &Envelope, max_message_size: usize) -> Value {
    let started = Instant::now();
    let Some(text) = envelope.payload.get("message").and_then(Value::as_str) else {
        return failure(
            "expected a payload {\"message\": \"<text>\"} with fenced code blocks to review",
        );
    };
    if !crate::can_handle(text) {
        return failure(
            "code-analysis reviews code: send a message asking for a review, with the code in fenced blocks (```python … ```)",
        );
    }
    let request = AnalysisRequest {
        files: Vec::new(),
        message: Some(text.to_owned()),
        language: envelope
            .payload
            .get("language")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    match analyze_blocking(request, limits_for(max_message_size)).await {
        Ok(report) => json!({
            "success": true,
            "agent": NAME,
            "response": report.to_markdown(),
            "processing_time": started.elapsed().as_secs_f64(),
        }),
        Err(err) => failure(&err.message),
    }
}

fn failure(message: &str) -> Value {
    json!({"success": false, "agent": NAME, "error": message})
}
