//! The agent card of a built-in agent (DESIGN §9): registered with
//! `communication.agents.register` at start, refreshed by
//! `communication.agents.heartbeat` every third of its TTL with the agent's own
//! metrics ([`InboxMetrics`]: requests handled, processing time, errors, state) under a
//! per-process `instance` id (the card sums its replicas' reports), and
//! registered again whenever the communication agent answers 404 (the card lapsed, or
//! the bucket was lost). Calls go with the service credential. Failures are logged and
//! retried; they never stop the service.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::AgentInbox;
use crate::client::ServiceClient;
use crate::envelope::Envelope;
use crate::error::ErrorKind;
use crate::runtime::{Runtime, RuntimeError};

/// Register subject.
pub const REGISTER_SUBJECT: &str = "communication.agents.register";
/// Heartbeat subject.
pub const HEARTBEAT_SUBJECT: &str = "communication.agents.heartbeat";

/// Counters of one agent's inbox (this process), as the heartbeat reports them.
#[derive(Debug, Default)]
pub struct InboxMetrics {
    handled: AtomicU64,
    errors: AtomicU64,
    processing_us: AtomicU64,
    busy: AtomicUsize,
}

impl InboxMetrics {
    /// A request started (state `processing` until it ends).
    pub fn start(&self) -> Instant {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// A request that started at `started` ended; `ok` false counts an error.
    pub fn finish(&self, started: Instant, ok: bool) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        self.handled.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.processing_us.fetch_add(micros, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The heartbeat's `metrics` object.
    pub fn report(&self) -> Value {
        let handled = self.handled.load(Ordering::Relaxed);
        let total_ms = self.processing_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let avg = if handled == 0 {
            0.0
        } else {
            total_ms / handled as f64
        };
        let state = if self.busy.load(Ordering::Relaxed) > 0 {
            "processing"
        } else {
            "idle"
        };
        json!({
            "requests_handled": handled,
            "processing_time_ms": (total_ms * 1000.0).round() / 1000.0,
            "avg_processing_time_ms": (avg * 1000.0).round() / 1000.0,
            "errors": self.errors.load(Ordering::Relaxed),
            "state": state,
        })
    }
}

/// Serves a built-in agent's inbox: subscribes `agent.<name>.inbox`, answers each envelope
/// with `answer`, counts it in the card's [`InboxMetrics`] (an answer whose `success` is
/// `false` counts as an error) and keeps `card` registered with those metrics
/// ([`keep_card`]).
pub async fn serve_inbox<F, Fut>(
    runtime: &Runtime,
    name: &str,
    card: Value,
    answer: F,
) -> Result<(), RuntimeError>
where
    F: Fn(Envelope) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Value> + Send + 'static,
{
    let inbox = AgentInbox::subscribe(runtime, name).await?;
    let metrics = Arc::new(InboxMetrics::default());
    let counted = metrics.clone();
    let answer = Arc::new(answer);
    tokio::spawn(inbox.run(runtime.shutdown_token(), move |envelope| {
        let metrics = counted.clone();
        let answer = answer.clone();
        async move {
            let started = metrics.start();
            let reply = answer(envelope).await;
            metrics.finish(started, reply["success"] != false);
            reply
        }
    }));
    keep_card(runtime, card, metrics);
    Ok(())
}

/// Registers `card` (a JSON agent card with `name` and `ttl_s`) and keeps it alive until
/// the runtime shuts down. The card is not deregistered at shutdown: other replicas of the
/// agent share it, and it lapses by itself within its TTL when none is left.
pub fn keep_card(runtime: &Runtime, card: Value, metrics: Arc<InboxMetrics>) {
    runtime.calls("communication");
    let client = ServiceClient::new(runtime.client().clone())
        .with_timeout(Duration::from_secs(5))
        .with_credential(runtime.config().service_credential.clone());
    let shutdown = runtime.shutdown_token();
    let name = card
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let ttl = card
        .get("ttl_s")
        .and_then(Value::as_u64)
        .unwrap_or(30)
        .max(3);
    let period = Duration::from_secs(ttl) / 3;
    // This replica's reports are kept apart from the other replicas' on the card, which
    // shows their sum.
    let instance = uuid::Uuid::now_v7().simple().to_string();
    tokio::spawn(async move {
        let mut registered = false;
        loop {
            let result = if registered {
                let beat = json!({"name": name, "instance": instance, "metrics": metrics.report()});
                client.request::<_, Value>(HEARTBEAT_SUBJECT, &beat).await
            } else {
                client.request::<_, Value>(REGISTER_SUBJECT, &card).await
            };
            let wait = match result {
                Ok(_) => {
                    if !registered {
                        tracing::info!(agent = %name, "agent card registered");
                    }
                    registered = true;
                    period
                }
                Err(err) if err.kind == ErrorKind::NotFound => {
                    registered = false;
                    Duration::ZERO
                }
                Err(err) => {
                    tracing::debug!(agent = %name, error = %err, "agent card not refreshed; retrying");
                    Duration::from_secs(2).min(period)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_requests_errors_and_state() {
        let metrics = InboxMetrics::default();
        let started = metrics.start();
        assert_eq!(metrics.report()["state"], "processing");
        metrics.finish(started, true);
        let started = metrics.start();
        metrics.finish(started, false);
        let report = metrics.report();
        assert_eq!(report["requests_handled"], 2);
        assert_eq!(report["errors"], 1);
        assert_eq!(report["state"], "idle");
    }
}
