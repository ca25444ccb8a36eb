//! Agent inboxes (DESIGN §3): an agent named `X` receives routed messages as
//! NATS requests on `agent.X.inbox` (queue group `X`, so instances share the
//! work). Each message is acknowledged at once with `{}`; then a `request` or
//! `command` envelope is answered with a new `response` envelope to its
//! sender, sent through `communication.send` with the service's credential
//! (`YMERA_SERVICE_API_KEY` / `YMERA_SERVICE_TOKEN`) so it passes
//! authorization when `YMERA_AUTH=required`. Responses and events are never
//! answered, so two agents cannot loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{Credential, ServiceClient};
use crate::envelope::{Envelope, MessageType};
use crate::resilience::{RetryBudget, RetryPolicy, retry};
use crate::runtime::{Runtime, RuntimeError};

/// Where answers go: the communication agent.
pub const SEND_SUBJECT: &str = "communication.send";

/// Bounds of one inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Messages answered at once per instance (default 8).
    pub max_concurrent: usize,
    /// Acknowledged messages waiting for an answer; beyond that the inbox
    /// stops reading, and so stops acknowledging (default 256).
    pub max_queued: usize,
    /// How long `communication.send` may take to accept an answer (default 10 s).
    pub send_timeout: Duration,
}

impl Default for InboxLimits {
    fn default() -> Self {
        InboxLimits {
            max_concurrent: 8,
            max_queued: 256,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// A subscribed agent inbox, ready to [`AgentInbox::run`].
pub struct AgentInbox {
    name: String,
    subscriber: async_nats::Subscriber,
    client: async_nats::Client,
    sender: ServiceClient,
    max_message_size: usize,
    limits: InboxLimits,
    /// Retries of `communication.send` for answers, shared by the inbox's
    /// tasks: transient failures (the communication agent restarting,
    /// no responders) are retried with full jitter while most sends succeed.
    retries: Arc<(RetryPolicy, RetryBudget)>,
}

impl AgentInbox {
    /// The inbox subject of agent `name`.
    pub fn subject(name: &str) -> String {
        format!("agent.{name}.inbox")
    }

    /// Subscribes (before the service announces itself, so no message routed
    /// after start-up is missed).
    pub async fn subscribe(runtime: &Runtime, name: &str) -> Result<AgentInbox, RuntimeError> {
        let subject = Self::subject(name);
        runtime.calls("communication");
        let client = runtime.client().clone();
        let subscriber = client
            .queue_subscribe(subject.clone(), name.to_owned())
            .await
            .map_err(|e| RuntimeError::Register(format!("{subject}: {e}")))?;
        let limits = InboxLimits::default();
        let sender = ServiceClient::new(client.clone())
            .with_timeout(limits.send_timeout)
            .with_credential(runtime.config().service_credential.clone());
        Ok(AgentInbox {
            name: name.to_owned(),
            subscriber,
            client,
            sender,
            max_message_size: runtime.config().max_message_size,
            limits,
            retries: Arc::new((RetryPolicy::default(), RetryBudget::default())),
        })
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: InboxLimits) -> Self {
        self.sender = self.sender.with_timeout(limits.send_timeout);
        self.limits = limits;
        self
    }

    /// Uses `credential` for `communication.send` instead of the configured one.
    pub fn with_credential(mut self, credential: Option<Credential>) -> Self {
        self.sender = self.sender.with_credential(credential);
        self
    }

    /// Handles messages until `shutdown`: acknowledges each, and answers
    /// requests and commands with the payload `answer` returns.
    pub async fn run<F, Fut>(mut self, shutdown: CancellationToken, answer: F)
    where
        F: Fn(Envelope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Value> + Send + 'static,
    {
        let answer = Arc::new(answer);
        let working = Arc::new(Semaphore::new(self.limits.max_concurrent.max(1)));
        let queue = Arc::new(Semaphore::new(self.limits.max_queued.max(1)));
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
                tracing::warn!(error = %err, agent = %self.name, "cannot acknowledge an inbox message");
            }
            let Some(envelope) = self.request_envelope(&message.payload) else {
                drop(queued);
                continue;
            };
            let (answer, working, sender, name, retries) = (
                answer.clone(),
                working.clone(),
                self.sender.clone(),
                self.name.clone(),
                self.retries.clone(),
            );
            tokio::spawn(async move {
                if let Ok(_permit) = working.acquire_owned().await {
                    let payload = answer(envelope.clone()).await;
                    send_response(&sender, &retries, &name, &envelope, payload).await;
                }
                drop(queued);
            });
        }
        if let Err(err) = self.subscriber.unsubscribe().await {
            tracing::debug!(error = %err, "inbox unsubscribe failed");
        }
    }

    /// The envelope if it is a request or command worth answering.
    fn request_envelope(&self, body: &[u8]) -> Option<Envelope> {
        let envelope: Envelope = match crate::limits::parse_json(body, self.max_message_size) {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::warn!(error = %err, agent = %self.name, "inbox message is not an envelope; dropped");
                return None;
            }
        };
        if matches!(
            envelope.message_type,
            MessageType::Request | MessageType::Command
        ) {
            Some(envelope)
        } else {
            tracing::debug!(id = %envelope.id, "inbox message is not a request; no answer");
            None
        }
    }
}

/// Sends `payload` as a `response` to the sender of `request`, retrying
/// transient failures (the response's envelope id makes a repeated send a
/// duplicate the communication agent drops, so a retry never doubles it).
async fn send_response(
    sender: &ServiceClient,
    retries: &(RetryPolicy, RetryBudget),
    name: &str,
    request: &Envelope,
    payload: Value,
) {
    let response = request.reply(name, payload);
    let (policy, budget) = retries;
    let sent = retry("agent.response", policy, Some(budget), || {
        sender.request::<_, Value>(SEND_SUBJECT, &response)
    })
    .await;
    match sent {
        Ok(_) => tracing::debug!(id = %response.id, to = %request.sender, "response sent"),
        Err(err) => tracing::warn!(
            id = %response.id,
            to = %request.sender,
            code = err.code(),
            error = %err.message,
            "communication.send refused or missed the response"
        ),
    }
}
