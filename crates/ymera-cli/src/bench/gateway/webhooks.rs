//! The webhook phase of `ymera bench gateway`: signed Standard Webhooks
//! deliveries, each with its own `webhook-id`, `--concurrency` in flight,
//! against a configured source; a 2xx means `communication.send` accepted
//! the envelope. Baseline (same run, same concurrency): the same envelope
//! sent with `communication.send` over NATS. Afterwards, the target agent's
//! inbox must have received every accepted delivery exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use ymera_core::client::ServiceClient;

use super::http::HttpPool;
use crate::bench::{BenchOptions, BenchResult, measure};

/// The variable of the gateway's environment holding the source's secret.
pub const SECRET_ENV: &str = "YMERA_BENCH_WEBHOOK_SECRET";
/// The benchmark's source name.
pub const SOURCE: &str = "bench";

/// A fresh `whsec_` secret (32 random bytes).
pub fn new_secret() -> String {
    // UUID v7s carry 74 random bits each: hashed, a key no one guesses.
    let mut seed = Sha256::new();
    for _ in 0..4 {
        seed.update(uuid::Uuid::now_v7().as_bytes());
    }
    seed.update(std::process::id().to_le_bytes());
    let key = seed.finalize();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The Standard Webhooks signature header value of a delivery:
/// `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// What the recipient received, by delivery key.
#[derive(Default)]
struct Inbox {
    seen: Mutex<HashMap<String, u32>>,
}

impl Inbox {
    fn record(&self, key: String) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen.entry(key).or_default() += 1;
        }
    }

    fn total(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// The exactly-once check of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub target: String,
    /// Deliveries answered 2xx.
    pub accepted: usize,
    /// Accepted deliveries the inbox got exactly once.
    pub received_once: usize,
    /// Accepted deliveries the inbox never got.
    pub missing: usize,
    /// Accepted deliveries the inbox got more than once.
    pub duplicated: usize,
    /// Deliveries the inbox got whose request was not answered 2xx (timeouts).
    pub unacknowledged: usize,
}

impl Verification {
    /// Every accepted delivery arrived exactly once.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.accepted > 0
    }
}

/// Subscribes `agent.<agent>.inbox`, answers every delivery, records its key.
async fn spawn_inbox(
    nats: &async_nats::Client,
    agent: &str,
    key: fn(&Value) -> Option<String>,
) -> anyhow::Result<(Arc<Inbox>, tokio::task::JoinHandle<()>)> {
    let inbox = Arc::new(Inbox::default());
    let mut sub = nats.subscribe(format!("agent.{agent}.inbox")).await?;
    nats.flush().await?;
    let (record, replier) = (inbox.clone(), nats.clone());
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Ok(envelope) = serde_json::from_slice::<Value>(&msg.payload)
                && let Some(k) = key(&envelope)
            {
                record.record(k);
            }
            if let Some(reply) = msg.reply {
                let _ = replier.publish(reply, Bytes::from_static(b"{}")).await;
            }
        }
    });
    Ok((inbox, task))
}

/// Waits until `inbox` holds every accepted key (or 60 s pass without
/// progress), then compares.
async fn verify(target: &str, inbox: &Inbox, accepted: &Mutex<HashSet<String>>) -> Verification {
    let want = accepted.lock().map(|a| a.len()).unwrap_or(0);
    let mut last = (inbox.total(), Instant::now());
    while inbox.total() < want && last.1.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = inbox.total();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    // Late duplicates (a redelivery) would arrive shortly after.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = accepted.lock().map(|a| a.clone()).unwrap_or_default();
    let seen = inbox.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let mut v = Verification {
        target: target.to_owned(),
        accepted: accepted.len(),
        received_once: 0,
        missing: 0,
        duplicated: 0,
        unacknowledged: 0,
    };
    for id in &accepted {
        match seen.get(id).copied().unwrap_or(0) {
            0 => v.missing += 1,
            1 => v.received_once += 1,
            _ => v.duplicated += 1,
        }
    }
    v.unacknowledged = seen.keys().filter(|k| !accepted.contains(*k)).count();
    v
}

/// Runs the phase on a stack whose gateway has `secret` in [`SECRET_ENV`].
pub async fn run(
    options: &BenchOptions,
    http: HttpPool,
    nats: async_nats::Client,
    client: ServiceClient,
    secret: String,
) -> anyhow::Result<(Vec<BenchResult>, Vec<Verification>)> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let tag = &run_id[run_id.len() - 8..];
    let target_agent = format!("bench-webhook-{tag}");
    let baseline_agent = format!("bench-webhook-base-{tag}");
    let (hook_inbox, hook_task) = spawn_inbox(&nats, &target_agent, |e| {
        e["payload"]["webhook_id"].as_str().map(str::to_owned)
    })
    .await?;
    let (base_inbox, base_task) = spawn_inbox(&nats, &baseline_agent, |e| {
        e["id"].as_str().map(str::to_owned)
    })
    .await?;

    // The source, in the gateway's document in the config manager.
    let document = json!({"webhooks": {SOURCE: {
        "kind": "standard", "secret_env": SECRET_ENV, "agent": target_agent,
    }}});
    let _: Value = client
        .request(
            "config.set",
            &json!({"agent": "gateway", "environment": "base", "config": document, "actor": "bench"}),
        )
        .await?;
    let path = format!("/v1/webhooks/{SOURCE}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Unsigned: 401 once the gateway knows the source (404 before).
        let status = http
            .post(&path, &[], Bytes::from_static(b"{}"))
            .await
            .map(|r| r.status.as_u16());
        if matches!(status, Ok(401)) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway never saw the webhook source ({status:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let envelope = move |id: String, recipient: &str, n: u64| {
        json!({
            "id": id,
            "type": "event",
            "sender": "gateway",
            "recipients": [recipient],
            "subject": format!("webhook.{SOURCE}"),
            "payload": {"source": SOURCE, "webhook_id": id, "event": "invoice.paid",
                        "body": {"type": "invoice.paid", "n": n}},
            "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    };

    // Baseline: the same envelope straight to communication.send.
    let base_accepted = Arc::new(Mutex::new(HashSet::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let baseline = {
        let (client, accepted, counter, agent) = (
            client.clone(),
            base_accepted.clone(),
            counter.clone(),
            baseline_agent.clone(),
        );
        measure(
            "communication.send over NATS (baseline)",
            options,
            move || {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let id = uuid::Uuid::now_v7().to_string();
                let body = envelope(id.clone(), &agent, n);
                let (client, accepted) = (client.clone(), accepted.clone());
                async move {
                    let _: Value = client.request("communication.send", &body).await?;
                    if let Ok(mut a) = accepted.lock() {
                        a.insert(id);
                    }
                    Ok(())
                }
            },
        )
        .await
    };

    let hook_accepted = Arc::new(Mutex::new(HashSet::new()));
    let target = {
        let (accepted, counter, secret, http, path) = (
            hook_accepted.clone(),
            counter.clone(),
            Arc::new(secret),
            http.clone(),
            Arc::new(path),
        );
        let run_id = Arc::new(run_id.clone());
        measure(
            "POST /v1/webhooks/bench (signed) → send accepted",
            options,
            move || {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let id = format!("msg_{run_id}_{n}");
                let body = json!({"type": "invoice.paid", "n": n}).to_string();
                let (accepted, secret, http, path) =
                    (accepted.clone(), secret.clone(), http.clone(), path.clone());
                async move {
                    let ts = chrono::Utc::now().timestamp();
                    let signature = sign(&secret, &id, ts, body.as_bytes())?;
                    let ts = ts.to_string();
                    let headers = [
                        ("webhook-id", id.as_str()),
                        ("webhook-timestamp", ts.as_str()),
                        ("webhook-signature", signature.as_str()),
                    ];
                    let reply = http.post(&path, &headers, Bytes::from(body)).await?;
                    anyhow::ensure!(
                        reply.status.as_u16() == 202,
                        "HTTP {}: {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                    if let Ok(mut a) = accepted.lock() {
                        a.insert(id);
                    }
                    Ok(())
                }
            },
        )
        .await
    };
    let checks = vec![
        verify(
            "communication.send over NATS (baseline)",
            &base_inbox,
            &base_accepted,
        )
        .await,
        verify("POST /v1/webhooks/bench", &hook_inbox, &hook_accepted).await,
    ];
    hook_task.abort();
    base_task.abort();
    Ok((vec![baseline, target], checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
