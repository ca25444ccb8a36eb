//! The chaos suite's traffic: one worker per kind of request, outside agents that
//! acknowledge every copy, and the ledger of what was answered, accepted and received.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The kinds of request, one worker each (communication: one per outside agent).
pub const KINDS: [&str; 5] = [
    "communication",
    "config",
    "drafting",
    "security",
    "code-analysis",
];
/// The outside agents the sends go to.
const AGENTS: [&str; 3] = ["chaos-a", "chaos-b", "chaos-c"];
/// One attempt's timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one logical request may be resent (same id) before it counts as failed.
const REQUEST_BUDGET: Duration = Duration::from_secs(8);
/// Pause between two requests of one worker (the machine has two cores).
const PACE: Duration = Duration::from_millis(25);
/// Most operations kept in the ledger.
const MAX_OPS: usize = 2_000_000;
/// How long to wait for the last accepted messages to be delivered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

/// One logical request.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// Which service it went to.
    pub kind: &'static str,
    /// When it was first sent.
    pub started: Instant,
    /// When its answer came (or it was given up).
    pub done: Instant,
    /// Answered successfully (possibly after resends).
    pub ok: bool,
}

/// What the traffic saw.
#[derive(Debug, Default)]
pub struct Ledger {
    ops: Mutex<Vec<Op>>,
    /// Envelope id → number of copies the outside agents received.
    received: Mutex<HashMap<String, u32>>,
    /// Envelope ids `communication.send` accepted.
    accepted: Mutex<Vec<(String, Instant)>>,
    /// The last config value whose `config.set` was acknowledged.
    config_acked: Mutex<Option<u64>>,
    /// Drafts whose `drafting.create` was acknowledged.
    drafts: Mutex<Vec<(String, Instant)>>,
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ledger {
    fn record(&self, kind: &'static str, started: Instant, ok: bool) {
        let mut ops = guard(&self.ops);
        if ops.len() < MAX_OPS {
            ops.push(Op {
                kind,
                started,
                done: Instant::now(),
                ok,
            });
        }
    }

    /// The operations answered between `from` and `to`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Op> {
        guard(&self.ops)
            .iter()
            .filter(|op| op.done >= from && op.done <= to)
            .copied()
            .collect()
    }

    /// True when every kind had a successful request after `since`.
    pub fn all_succeeded_since(&self, since: Instant) -> bool {
        let ops = guard(&self.ops);
        KINDS.iter().all(|kind| {
            ops.iter()
                .rev()
                .take_while(|op| op.done >= since)
                .any(|op| op.kind == *kind && op.ok)
        })
    }
}

/// The final accounting.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub config_writes: u64,
    pub config_lost: usize,
    pub drafts: usize,
    pub drafts_lost: usize,
    /// When each lost message was accepted.
    pub lost_at: Vec<Instant>,
    /// When each duplicated message was accepted, once per extra copy.
    pub duplicated_at: Vec<Instant>,
    /// When each lost draft was acknowledged.
    pub drafts_lost_at: Vec<Instant>,
}

/// The running traffic.
pub struct Traffic {
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
    agents: Vec<JoinHandle<()>>,
    agents_stop: CancellationToken,
    ledger: Arc<Ledger>,
}

/// A request and its answer: `Err` on an error header, a timeout or no responder.
async fn call(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    key: Option<&str>,
) -> Result<Value, String> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(key) = key {
        headers.insert("X-API-Key", key);
    }
    let payload = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let request = client.request_with_headers(subject.to_owned(), headers, payload);
    let reply = match tokio::time::timeout(ATTEMPT_TIMEOUT, request).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err("timeout".to_owned()),
    };
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned());
    let value: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
    match code {
        None => Ok(value),
        Some(code) => Err(format!("{code}: {value}")),
    }
}

/// `call` resent (the same body: every request of the suite is idempotent) until it
/// succeeds or [`REQUEST_BUDGET`] passes; `accept` may turn an error into success (a
/// resend refused as a duplicate of the first attempt).
async fn resend(
    client: &async_nats::Client,
    subject: &str,
    body: &Value,
    key: Option<&str>,
    accept: impl Fn(&str) -> bool,
) -> Result<Value, String> {
    let deadline = Instant::now() + REQUEST_BUDGET;
    let mut first = true;
    loop {
        match call(client, subject, body, key).await {
            Ok(value) => return Ok(value),
            Err(err) if !first && accept(&err) => return Ok(Value::Null),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => {
                first = false;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn never(_: &str) -> bool {
    false
}

impl Traffic {
    /// Starts the outside agents and one worker per kind of request.
    pub async fn start(
        urls: Vec<String>,
        admin_key: &str,
        ledger: Arc<Ledger>,
    ) -> anyhow::Result<Self> {
        // The platform's connect (`ymera_core::client::connect_nats`), as every service, the
        // gateway and the CLI use it: a client of a nats-server cut off from the cluster's
        // majority moves to a server that reaches one.
        let settings = ymera_core::config::NatsSettings {
            url: urls.join(","),
            ..ymera_core::config::NatsSettings::default()
        };
        let client = ymera_core::client::connect_nats(&settings, "chaos-traffic").await?;
        let agents_stop = CancellationToken::new();
        let mut agents = Vec::new();
        for agent in AGENTS {
            let agent_client =
                ymera_core::client::connect_nats(&settings, &format!("chaos-agent-{agent}"))
                    .await?;
            let mut inbox = agent_client
                .subscribe(format!("agent.{agent}.inbox"))
                .await?;
            agent_client.flush().await?;
            let (ledger, stop) = (Arc::clone(&ledger), agents_stop.clone());
            agents.push(tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => return,
                        message = inbox.next() => message,
                    };
                    let Some(message) = message else { return };
                    if let Some(reply) = message.reply.clone() {
                        let _ = agent_client.publish(reply, Bytes::from_static(b"{}")).await;
                    }
                    let id = serde_json::from_slice::<Value>(&message.payload)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned));
                    if let Some(id) = id {
                        *guard(&ledger.received).entry(id).or_default() += 1;
                    }
                }
            }));
        }
        let key = call(
            &client,
            "security.keys.create",
            &json!({"owner": "chaos", "permissions": ["config:read"]}),
            Some(admin_key),
        )
        .await
        .map_err(|err| anyhow::anyhow!("creating the traffic's API key: {err}"))?["key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();

        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for agent in AGENTS {
            let (client, ledger, stop) = (client.clone(), Arc::clone(&ledger), stop.clone());
            workers.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let id = uuid::Uuid::now_v7().to_string();
                    let envelope = json!({"id": id, "type": "event", "sender": "chaos",
                        "recipients": [agent], "subject": "chaos", "payload": {}});
                    let started = Instant::now();
                    let ok = resend(&client, "communication.send", &envelope, None, never)
                        .await
                        .is_ok();
                    if ok {
                        guard(&ledger.accepted).push((id, Instant::now()));
                    }
                    ledger.record("communication", started, ok);
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        {
            let (client, ledger, stop) = (client.clone(), Arc::clone(&ledger), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut n: u64 = 0;
                while !stop.is_cancelled() {
                    n += 1;
                    let set = json!({"agent": "chaos", "environment": "base", "config": {"n": n}});
                    let started = Instant::now();
                    let mut ok = resend(&client, "config.set", &set, None, never)
                        .await
                        .is_ok();
                    if ok {
                        *guard(&ledger.config_acked) = Some(n);
                        let get = json!({"agent": "chaos", "environment": "base"});
                        ok = resend(&client, "config.get", &get, None, never)
                            .await
                            .is_ok_and(|v| v["config"]["n"].as_u64() == Some(n));
                    }
                    ledger.record("config", started, ok);
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        {
            let (client, ledger, stop) = (client.clone(), Arc::clone(&ledger), stop.clone());
            workers.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let id = uuid::Uuid::now_v7().to_string();
                    let create = json!({"draft_id": id, "author_id": "chaos", "title": "chaos",
                                        "content": "Written while servers die."});
                    let started = Instant::now();
                    // A resend after a lost answer finds the draft made: 409 is success.
                    let ok = resend(&client, "drafting.create", &create, None, |e| {
                        e.starts_with("409")
                    })
                    .await
                    .is_ok();
                    if ok {
                        guard(&ledger.drafts).push((id, Instant::now()));
                    }
                    ledger.record("drafting", started, ok);
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        {
            let (client, ledger, stop) = (client.clone(), Arc::clone(&ledger), stop.clone());
            workers.push(tokio::spawn(async move {
                let body = json!({"credential": key, "permission": "config:read"});
                while !stop.is_cancelled() {
                    let started = Instant::now();
                    let ok = resend(&client, "security.authorize", &body, None, never)
                        .await
                        .is_ok_and(|v| v["allowed"] == true);
                    ledger.record("security", started, ok);
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        {
            let (client, ledger, stop) = (client.clone(), Arc::clone(&ledger), stop.clone());
            workers.push(tokio::spawn(async move {
                let body = json!({"files": [{"path": "a.py", "content": "def f(x):\n    return eval(x)\n"}]});
                while !stop.is_cancelled() {
                    let started = Instant::now();
                    let ok = resend(&client, "code-analysis.analyze", &body, None, never)
                        .await
                        .is_ok();
                    ledger.record("code-analysis", started, ok);
                    tokio::time::sleep(PACE).await;
                }
            }));
        }
        Ok(Self {
            stop,
            workers,
            agents,
            agents_stop,
            ledger,
        })
    }

    /// Stops the workers, waits for every accepted message to arrive, checks the
    /// committed writes, and stops the agents.
    pub async fn finish(self, client: &async_nats::Client, admin_key: &str) -> Outcome {
        let _ = admin_key;
        self.stop.cancel();
        for worker in self.workers {
            let _ = worker.await;
        }
        let ledger = &self.ledger;
        let accepted = guard(&ledger.accepted).clone();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        loop {
            let missing = {
                let received = guard(&ledger.received);
                accepted
                    .iter()
                    .filter(|(id, _)| !received.contains_key(id))
                    .count()
            };
            if missing == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Copies that come later than this are duplicates too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.agents_stop.cancel();
        for agent in self.agents {
            let _ = agent.await;
        }
        let received = guard(&ledger.received).clone();
        let lost_at: Vec<Instant> = accepted
            .iter()
            .filter(|(id, _)| !received.contains_key(id))
            .map(|(_, at)| *at)
            .collect();
        let delivered = accepted.len() - lost_at.len();
        let mut duplicated_at = Vec::new();
        for (id, at) in &accepted {
            let extra = received.get(id).copied().unwrap_or(0).saturating_sub(1);
            duplicated_at.extend(std::iter::repeat_n(*at, extra as usize));
        }
        let duplicates = duplicated_at.len();

        let acked = *guard(&ledger.config_acked);
        let get = json!({"agent": "chaos", "environment": "base"});
        let config_lost = match acked {
            None => 0,
            Some(n) => match resend(client, "config.get", &get, None, never).await {
                Ok(value) if value["config"]["n"].as_u64().is_some_and(|got| got >= n) => 0,
                _ => 1,
            },
        };
        let drafts = guard(&ledger.drafts).clone();
        let mut drafts_lost_at = Vec::new();
        for (id, at) in &drafts {
            let body = json!({"draft_id": id});
            if resend(client, "drafting.get", &body, None, never)
                .await
                .is_err()
            {
                drafts_lost_at.push(*at);
            }
        }
        Outcome {
            accepted: accepted.len(),
            delivered,
            lost: lost_at.len(),
            duplicates,
            config_writes: acked.unwrap_or(0),
            config_lost,
            drafts: drafts.len(),
            drafts_lost: drafts_lost_at.len(),
            lost_at,
            duplicated_at,
            drafts_lost_at,
        }
    }
}
