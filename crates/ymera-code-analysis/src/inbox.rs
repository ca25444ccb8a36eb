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
/// Most messages analysed at once per instance; more wait in a queue.
pub const MAX_CONCURRENT: usize = 8;
/// Most acknowledged messages waiting for analysis; beyond that the inbox
/// stops reading (and so stops acknowledging) until one finishes.
pub const MAX_QUEUED: usize = 256;
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
        let queue = Arc::new(Semaphore::new(MAX_QUEUED));
        loop {
            let Ok(queued) = queue.clone().acquire_owned().await else {
                break;
            };
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
            let client = self.client.clone();
            let max = self.max_message_size;
            let permits = permits.clone();
            tokio::spawn(async move {
                if let Ok(_permit) = permits.acquire_owned().await {
                    handle(&client, &message.payload, max).await;
                }
                drop(queued);
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
            started,
        );
    };
    if !crate::can_handle(text) {
        return failure(
            "code-analysis reviews code: send a message asking for a review, with the code in fenced blocks (```python … ```)",
            started,
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
            "response": fit(report.to_markdown(), max_message_size / 2),
            "processing_time": started.elapsed().as_secs_f64(),
        }),
        Err(err) => failure(&err.message, started),
    }
}

/// The seed's failure shape: `{"success": false, "error", "agent", "processing_time"}`.
fn failure(message: &str, started: Instant) -> Value {
    json!({
        "success": false,
        "agent": NAME,
        "error": message,
        "processing_time": started.elapsed().as_secs_f64(),
    })
}

/// Cuts a Markdown report to at most `limit` bytes (on a line boundary) so the
/// response envelope stays under the transport's message size.
fn fit(mut markdown: String, limit: usize) -> String {
    const NOTE: &str = "\n\n_(report truncated: too large for one message; use `code-analysis.analyze` for the full report)_\n";
    if markdown.len() <= limit {
        return markdown;
    }
    let mut cut = limit.saturating_sub(NOTE.len());
    while cut > 0 && !markdown.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = markdown[..cut].rfind('\n').unwrap_or(cut);
    markdown.truncate(cut);
    markdown.push_str(NOTE);
    markdown
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_keeps_small_reports_and_cuts_large_ones_on_a_line() {
        assert_eq!(fit("## a\nb\n".to_owned(), 100), "## a\nb\n");
        let long = "| `f` | é |\n".repeat(1000);
        let cut = fit(long, 2000);
        assert!(cut.len() <= 2000);
        assert!(cut.ends_with("full report)_\n"));
        assert!(cut.contains("| `f` | é |\n\n_(report truncated"));
    }
}
