//! The agent inbox of `drafting` (DESIGN §3): routed chat messages arrive as
//! NATS requests on `agent.drafting.inbox` (queue group `drafting`). Each is
//! acknowledged at once with `{}`; a `request`/`command` envelope with payload
//! `{"message": "<text>"}` is answered through `communication.send` with a
//! `response` envelope whose payload is `{"success", "agent", "response"
//! (Markdown analysis of the text: the fenced blocks when there are any,
//! else the whole message), "processing_time"}` or `{"success": false, "error"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use ymera_core::envelope::{Envelope, MessageType};
use ymera_core::runtime::RuntimeError;

use crate::service::{Analysis, NAME, analyze_text};

/// The inbox subject of this agent.
pub const INBOX_SUBJECT: &str = "agent.drafting.inbox";
/// Where answers go (the communication agent).
pub const SEND_SUBJECT: &str = "communication.send";
/// Most messages analysed at once per instance.
pub const MAX_CONCURRENT: usize = 8;
/// How long to wait for `communication.send`.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscribed inbox.
pub struct Inbox {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    max_message_size: usize,
}

/// Subscribes before the service announces itself.
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
            let Ok(permit) = permits.clone().acquire_owned().await else {
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

async fn handle(client: &async_nats::Client, body: &[u8], max: usize) {
    let envelope: Envelope = match ymera_core::limits::parse_json(body, max) {
        Ok(envelope) => envelope,
        Err(err) => {
            tracing::warn!(error = %err, "inbox message is not an envelope; dropped");
            return;
        }
    };
    if !matches!(
        envelope.message_type,
        MessageType::Request | MessageType::Command
    ) {
        return;
    }
    let payload = answer(&envelope, max).await;
    let response = envelope.reply(NAME, payload);
    let Ok(bytes) = serde_json::to_vec(&response) else {
        return;
    };
    match tokio::time::timeout(SEND_TIMEOUT, client.request(SEND_SUBJECT, bytes.into())).await {
        Ok(Ok(_)) => tracing::debug!(id = %response.id, "response sent"),
        Ok(Err(err)) => tracing::warn!(error = %err, "cannot send the response"),
        Err(_) => tracing::warn!("communication.send did not answer in time"),
    }
}

/// The text to analyse: the fenced blocks of the message, else all of it.
fn text_of(message: &str) -> String {
    let mut blocks = Vec::new();
    let mut inside: Option<Vec<&str>> = None;
    for line in message.lines() {
        if line.trim_start().starts_with("```") {
            match inside.take() {
                Some(lines) => blocks.push(lines.join("\n")),
                None => inside = Some(Vec::new()),
            }
        } else if let Some(lines) = inside.as_mut() {
            lines.push(line);
        }
    }
    if blocks.is_empty() {
        message.to_owned()
    } else {
        blocks.join("\n\n")
    }
}

async fn answer(envelope: &Envelope, max: usize) -> Value {
    let started = Instant::now();
    let Some(message) = envelope.payload.get("message").and_then(Value::as_str) else {
        return json!({"success": false, "agent": NAME, "error": "expected a payload {\"message\": \"<text>\"}"});
    };
    if message.len() > max {
        return json!({"success": false, "agent": NAME, "error": "message too large"});
    }
    let text = text_of(message);
    let tone = envelope
        .payload
        .get("tone")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let audience = envelope
        .payload
        .get("target_audience")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let analysis = tokio::task::spawn_blocking(move || {
        analyze_text(&text, tone.as_deref(), audience.as_deref())
    })
    .await;
    match analysis {
        Ok(a) => json!({
            "success": true, "agent": NAME, "response": to_markdown(&a),
            "processing_time": started.elapsed().as_secs_f64(),
        }),
        Err(_) => json!({"success": false, "agent": NAME, "error": "analysis failed"}),
    }
}

/// A Markdown report of an analysis (findings capped at 50).
pub fn to_markdown(a: &Analysis) -> String {
    let r = &a.readability;
    let mut out = format!(
        "## Writing analysis\n\n{} words, {} sentences, {} paragraphs, about {:.0} s to read.\n\n\
         | score | value |\n|---|---|\n| Flesch reading ease | {:.1} |\n| Flesch–Kincaid grade | {:.1} |\n\
         | Gunning fog | {:.1} |\n| SMOG | {:.1} |\n| Coleman–Liau | {:.1} |\n| ARI | {:.1} |\n| Dale–Chall | {:.1} |\n",
        a.words,
        a.sentences,
        a.paragraphs,
        a.reading_time_seconds,
        r.flesch_reading_ease,
        r.flesch_kincaid_grade,
        r.gunning_fog,
        r.smog_index,
        r.coleman_liau_index,
        r.automated_readability_index,
        r.dale_chall_readability_score
    );
    if !a.findings.is_empty() {
        out.push_str("\n### Style\n\n");
        for f in a.findings.iter().take(50) {
            out.push_str(&format!(
                "- line {}, column {}: {} — {} (`{}`)\n",
                f.line, f.column, f.message, f.suggestion, f.rule_id
            ));
        }
    }
    if !a.suggestions.is_empty() {
        out.push_str("\n### Suggestions\n\n");
        for s in &a.suggestions {
            out.push_str(&format!("- {s}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_blocks_are_what_is_analysed() {
        assert_eq!(
            text_of("check this:\n```\nHello there.\n```\n"),
            "Hello there."
        );
        assert_eq!(text_of("Plain words."), "Plain words.");
    }
}
