//! `ymera bench comm`: the communication agent end to end
//! (`communication.send` → JetStream → `agent.<name>.inbox`) beside a raw
//! JetStream publish → consume → ack baseline, in the same run.
//!
//! Two phases per target: a burst of `--messages` sent by `--concurrency`
//! senders (sustained throughput: messages received per second), then an
//! open-loop run at `--rate` messages/s for `--seconds` (latency from the
//! start of the send to the moment the recipient receives the message).
//!
//! `--compression s2|none|both` (with `--private`) starts the agent with
//! `YMERA_STREAM_COMPRESSION` set (both: one private stack each, one after the
//! other) and adds a stored-bytes phase: with the recipient's delivery consumer
//! paused, `--stored-messages` envelopes are sent and the size of `YMERA_MESSAGES`
//! is read twice: JetStream's `state.bytes` (the messages' own size, the same
//! either way) and the stream's files on disk (what S2 shrinks: sealed blocks
//! are compressed, the tail block is not). The consumer is then resumed and every
//! message must arrive. `--payload-bytes` adds a realistic JSON body of about
//! that size (order-like objects: repeated keys, words, numbers) to every
//! message of every phase, the baseline's included.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;
use ymera_core::client::ServiceClient;

use super::comm_stored::{StoredResult, print_stored, stored_bytes};
use crate::bench::{new_histogram, progress};
use crate::context::Context;
use crate::private_stack::PrivateStack;

/// Options of `ymera bench comm`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommBenchArgs {
    /// Messages in the throughput burst.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Concurrent senders in the burst.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Offered load of the latency phase, messages per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Length of the latency phase, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Start a private nats-server, PostgreSQL and communication agent
    /// (rate limit raised) instead of using the running stack.
    #[arg(long)]
    pub private: bool,
    /// Also send to `skill:<id>` (DESIGN §9: resolved at send time to the bench agent's
    /// card) in the same run, and print its cost beside the named send (target ≤ 10 %).
    #[arg(long)]
    pub skill: bool,
    /// Stream compression the private agent runs with (`YMERA_STREAM_COMPRESSION`), or
    /// `both` (two runs); adds the stored-bytes phase. Needs `--private`.
    #[arg(long, value_enum)]
    pub compression: Option<CompressionChoice>,
    /// Add a realistic JSON body of about this many bytes to every message (0: only the
    /// timestamp, as the earlier records).
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Messages of the stored-bytes phase (`--compression`).
    #[arg(long, default_value_t = 30_000)]
    pub stored_messages: u64,
}

/// `--compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressionChoice {
    /// S2 (the default of the agent).
    S2,
    /// Uncompressed.
    None,
    /// One run with each.
    Both,
}

#[derive(Debug, Serialize)]
struct PhaseResult {
    target: String,
    phase: String,
    sent: u64,
    received: u64,
    lost: u64,
    errors: u64,
    seconds: f64,
    per_second: f64,
    /// Sends answered per second, until the last send's answer (the burst; in the paced
    /// phase the offered rate bounds it): beside `per_second` it says whether sending or
    /// delivering is the limit.
    answered_per_second: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Shared receive-side state: distinct ids and latency.
pub(super) struct Receiver {
    epoch: Instant,
    seen: Mutex<HashSet<String>>,
    latency: Mutex<Histogram<u64>>,
}

impl Receiver {
    pub(super) fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(Receiver {
            epoch,
            seen: Mutex::new(HashSet::new()),
            latency: Mutex::new(new_histogram()),
        })
    }

    pub(super) fn record(&self, id: String, sent_at_us: u64) {
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.insert(id) {
            let mut h = self.latency.lock().unwrap_or_else(|p| p.into_inner());
            let _ = h.record(now.saturating_sub(sent_at_us).max(1));
        }
    }

    pub(super) fn count(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    pub(super) fn reset(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
    }
}

/// Runs the benchmark.
pub async fn run(args: CommBenchArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let modes: Vec<Option<&str>> = match args.compression {
        None => vec![None],
        Some(_) if !args.private => {
            anyhow::bail!(
                "--compression needs --private: it starts the agent with YMERA_STREAM_COMPRESSION"
            )
        }
        Some(CompressionChoice::S2) => vec![Some("s2")],
        Some(CompressionChoice::None) => vec![Some("none")],
        Some(CompressionChoice::Both) => vec![Some("none"), Some("s2")],
    };
    let mut runs = Vec::new();
    for mode in modes {
        runs.push(run_once(&args, ctx, mode).await?);
    }
    if ctx.json() {
        let runs: Vec<_> = runs
            .iter()
            .map(|(mode, results, stored)| {
                json!({"compression": mode, "results": results, "stored": stored})
            })
            .collect();
        let first = runs.first().cloned().unwrap_or(serde_json::Value::Null);
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"bench": "comm", "results": first["results"], "runs": runs})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut lost = false;
    for (mode, results, _) in &runs {
        if let Some(mode) = mode {
            println!("YMERA_STREAM_COMPRESSION={mode}");
        }
        print_results(&args, results);
    }
    let stored: Vec<&StoredResult> = runs.iter().filter_map(|(_, _, s)| s.as_ref()).collect();
    if !stored.is_empty() {
        print_stored(&stored);
        lost = stored.iter().any(|s| s.received < s.messages);
    }
    Ok(if lost {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `--payload-bytes`: the size of the realistic body each message gets.
pub(super) struct BodySize(pub(super) usize);

type Run = (Option<String>, Vec<PhaseResult>, Option<StoredResult>);

async fn run_once(
    args: &CommBenchArgs,
    ctx: &Context,
    compression: Option<&str>,
) -> anyhow::Result<Run> {
    let stack = if args.private {
        let mut env = vec![
            ("COMM_RATE_LIMIT", "1000000"),
            ("COMM_DELIVERY_CONCURRENCY", "256"),
        ];
        if let Some(mode) = compression {
            // The stored-bytes phase parks its messages in one recipient's backlog.
            env.push(("YMERA_STREAM_COMPRESSION", mode));
            env.push(("COMM_BACKLOG_LIMIT", "1000000"));
        }
        Some(PrivateStack::start(&["communication"], &env).await?)
    } else {
        None
    };
    let client = crate::bench::connect(&crate::bench::stack_url(stack.as_ref(), ctx)).await?;
    let epoch = Instant::now();
    let body = Arc::new(BodySize(args.payload_bytes));
    let mut results = Vec::new();

    let raw = RawJetStream::new(client.clone(), epoch, body.clone()).await?;
    results.push(
        burst(
            "raw JetStream publish→consume→ack (baseline)",
            args,
            &raw.receiver,
            |i| raw.send(i),
        )
        .await,
    );
    results.push(
        paced(
            "raw JetStream publish→consume→ack (baseline)",
            args,
            &raw.receiver,
            |i| raw.send(i),
        )
        .await,
    );
    raw.stop().await;

    let ymera = YmeraPath::new(client.clone(), epoch, ctx, body.clone()).await?;
    results.push(
        burst(
            "communication.send → agent inbox",
            args,
            &ymera.receiver,
            |i| ymera.send(i),
        )
        .await,
    );
    results.push(
        paced(
            "communication.send → agent inbox",
            args,
            &ymera.receiver,
            |i| ymera.send(i),
        )
        .await,
    );
    if args.skill {
        let skill = ymera.register_skill().await?;
        let recipient = format!("skill:{skill}");
        let target = format!("communication.send {recipient} → agent inbox");
        results.push(
            burst(&target, args, &ymera.receiver, |i| {
                ymera.send_to(i, &recipient)
            })
            .await,
        );
        results.push(
            paced(&target, args, &ymera.receiver, |i| {
                ymera.send_to(i, &recipient)
            })
            .await,
        );
        ymera.deregister().await;
    }
    let stored = match (compression, &stack) {
        (Some(mode), Some(stack)) => Some(
            stored_bytes(
                args,
                ctx,
                &client,
                stack.nats_store_dir(),
                epoch,
                body.clone(),
                mode,
            )
            .await?,
        ),
        _ => None,
    };
    drop(stack);
    Ok((compression.map(str::to_owned), results, stored))
}

/// About `bytes` of order-like JSON (repeated keys, words, prices), different values for
/// every `seed` (message index), so that S2 finds only what real traffic repeats; `Null`
/// for 0.
fn realistic_body(bytes: usize, seed: u64) -> serde_json::Value {
    if bytes == 0 {
        return serde_json::Value::Null;
    }
    const WORDS: &[&str] = &[
        "invoice",
        "shipping",
        "express",
        "warehouse",
        "customer",
        "priority",
        "refund",
        "delivered",
        "pending",
        "review",
        "account",
        "premium",
        "backorder",
        "discount",
        "quarterly",
        "report",
        "analysis",
        "contract",
        "renewal",
        "support",
    ];
    // xorshift64: varied but reproducible values, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ 1;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below.max(1)
    };
    let words = |n: usize, next: &mut dyn FnMut(u64) -> u64| {
        (0..n)
            .map(|_| WORDS[next(WORDS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut body = json!({
        "order_id": format!("ORD-{:08}", next(100_000_000)),
        "customer": {
            "id": format!("cus_{:016x}", next(u64::MAX)),
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "tier": "premium",
        },
        "note": words(12, &mut next),
        "items": [],
    });
    let mut items = Vec::new();
    while body.to_string().len() < bytes {
        items.push(json!({
            "sku": format!("SKU-{:05}", next(100_000)),
            "name": words(3, &mut next),
            "qty": 1 + next(9),
            "unit_price": (100 + next(99_900)) as f64 / 100.0,
            "warehouse": format!("WH-{}", 1 + next(19)),
        }));
        body["items"] = serde_json::Value::Array(items.clone());
    }
    body
}

/// Sends `args.messages` with `args.concurrency` in flight and waits until
/// they are all received (or 60 s pass without progress).
async fn burst<F, Fut>(
    target: &str,
    args: &CommBenchArgs,
    receiver: &Arc<Receiver>,
    send: F,
) -> PhaseResult
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    receiver.reset();
    let bar = progress(args.messages, &format!("{target}: burst"));
    let started = Instant::now();
    let errors = send_all(args.messages, args.concurrency, &bar, send).await;
    let answered = started.elapsed().as_secs_f64();
    let expected = args.messages - errors;
    let received = wait_received(receiver, expected, &bar).await;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    phase_result(
        target,
        "burst",
        (args.messages, received, errors),
        (seconds, answered),
        receiver,
    )
}

/// Open-loop: starts `args.rate` sends per second regardless of how long
/// each takes (at most 4,096 outstanding), for `args.seconds`.
async fn paced<F, Fut>(
    target: &str,
    args: &CommBenchArgs,
    receiver: &Arc<Receiver>,
    send: F,
) -> PhaseResult
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    receiver.reset();
    let total = args.rate * args.seconds;
    let bar = progress(total, &format!("{target}: {} msg/s", args.rate));
    let outstanding = Arc::new(Semaphore::new(4096));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let Ok(permit) = outstanding.clone().acquire_owned().await else {
            break;
        };
        let fut = send(i);
        let (errors, bar) = (errors.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            if fut.await.is_err() {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            bar.inc(1);
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let answered = started.elapsed().as_secs_f64();
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let received = wait_received(receiver, total - errors, &bar).await;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    phase_result(
        target,
        &format!("{} msg/s", args.rate),
        (total, received, errors),
        (seconds, answered),
        receiver,
    )
}

pub(super) async fn wait_received(receiver: &Receiver, expected: u64, bar: &ProgressBar) -> u64 {
    let mut last = (receiver.count(), Instant::now());
    loop {
        let now = receiver.count();
        if now >= expected {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            return now;
        }
        bar.set_message(format!("waiting for deliveries: {now}/{expected}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `counts`: sent, received, errors; `times`: until the last delivery, until the last
/// send's answer (seconds from the phase's start).
fn phase_result(
    target: &str,
    phase: &str,
    counts: (u64, u64, u64),
    times: (f64, f64),
    receiver: &Receiver,
) -> PhaseResult {
    let ((sent, received, errors), (seconds, answered)) = (counts, times);
    let h = receiver.latency.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    PhaseResult {
        target: target.to_owned(),
        phase: phase.to_owned(),
        sent,
        received,
        lost: (sent - errors).saturating_sub(received),
        errors,
        seconds,
        per_second: received as f64 / seconds.max(1e-9),
        answered_per_second: (sent - errors) as f64 / answered.max(1e-9),
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
    }
}

/// Sends messages `0..count` with `concurrency` in flight, one step of `bar` each;
/// returns how many sends failed.
pub(super) async fn send_all<F, Fut>(
    count: u64,
    concurrency: usize,
    bar: &ProgressBar,
    send: F,
) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    futures::stream::iter(0..count)
        .map(|i| {
            let fut = send(i);
            let bar = bar.clone();
            async move {
                let failed = fut.await.is_err();
                bar.inc(1);
                u64::from(failed)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .fold(0u64, |acc, e| async move { acc + e })
        .await
}

/// The baseline: a stream, a pull consumer that acks, publishes awaiting the
/// JetStream ack.
struct RawJetStream {
    js: jetstream::Context,
    stream: String,
    subject: String,
    epoch: Instant,
    receiver: Arc<Receiver>,
    body: Arc<BodySize>,
    consumer_task: tokio::task::JoinHandle<()>,
}

impl RawJetStream {
    async fn new(
        client: async_nats::Client,
        epoch: Instant,
        body: Arc<BodySize>,
    ) -> anyhow::Result<Self> {
        let js = jetstream::new(client.clone());
        let token = client.new_inbox().replace("_INBOX.", "").replace('.', "");
        let stream = format!("BENCH_RAW_{token}");
        let subject = format!("bench.raw.{token}");
        let created = js
            .create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![subject.clone()],
                retention: jetstream::stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await?;
        let consumer = created
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("bench".into()),
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
        let receiver = Receiver::new(epoch);
        let rx = receiver.clone();
        let mut messages = consumer.messages().await?;
        let consumer_task = tokio::spawn(async move {
            while let Some(Ok(msg)) = messages.next().await {
                if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
                    let id = body["i"].to_string();
                    rx.record(id, body["t"].as_u64().unwrap_or(0));
                }
                let _ = msg.ack().await;
            }
        });
        Ok(RawJetStream {
            js,
            stream,
            subject,
            epoch,
            receiver,
            body,
            consumer_task,
        })
    }

    fn send(
        &self,
        i: u64,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        let (js, subject) = (self.js.clone(), self.subject.clone());
        let t = self.epoch.elapsed().as_micros() as u64;
        let body = realistic_body(self.body.0, i);
        async move {
            let mut message = json!({"i": i, "t": t});
            if !body.is_null() {
                message["body"] = body;
            }
            let body = Bytes::from(message.to_string());
            js.publish(subject, body).await?.await?;
            Ok(())
        }
    }

    async fn stop(self) {
        self.consumer_task.abort();
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// The Ymera path: `communication.send` to an agent whose inbox records receipt.
pub(super) struct YmeraPath {
    pub(super) client: ServiceClient,
    pub(super) agent: String,
    pub(super) epoch: Instant,
    pub(super) receiver: Arc<Receiver>,
    pub(super) body: Arc<BodySize>,
    pub(super) _inbox_task: tokio::task::JoinHandle<()>,
}

impl YmeraPath {
    pub(super) async fn new(
        nats: async_nats::Client,
        epoch: Instant,
        ctx: &Context,
        body: Arc<BodySize>,
    ) -> anyhow::Result<Self> {
        let agent = format!(
            "bench-{}",
            &nats.new_inbox().replace("_INBOX.", "").to_lowercase()[..12]
        )
        .replace('.', "");
        let receiver = Receiver::new(epoch);
        let rx = receiver.clone();
        let mut inbox = nats.subscribe(format!("agent.{agent}.inbox")).await?;
        let replier = nats.clone();
        let inbox_task = tokio::spawn(async move {
            while let Some(msg) = inbox.next().await {
                if let Ok(envelope) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
                    let id = envelope["id"].as_str().unwrap_or_default().to_owned();
                    rx.record(id, envelope["payload"]["t"].as_u64().unwrap_or(0));
                }
                if let Some(reply) = msg.reply {
                    let _ = replier.publish(reply, Bytes::from_static(b"{}")).await;
                }
            }
        });
        nats.flush().await?;
        let client = ServiceClient::new(nats)
            .with_timeout(Duration::from_secs(30))
            .with_credential(ctx.credential());
        let path = YmeraPath {
            client,
            agent,
            epoch,
            receiver,
            body,
            _inbox_task: inbox_task,
        };
        // The agent discovers a new recipient's consumer within seconds: warm up.
        path.send(u64::MAX).await?;
        let warm = Instant::now();
        while path.receiver.count() == 0 {
            anyhow::ensure!(
                warm.elapsed() < Duration::from_secs(30),
                "the warm-up message was not delivered within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(path)
    }

    /// Registers the bench agent's card with one skill of its own; returns the skill id.
    pub(super) async fn register_skill(&self) -> anyhow::Result<String> {
        let skill = self.agent.replace('-', "_");
        let card = json!({
            "name": self.agent, "description": "ymera bench comm recipient",
            "skills": [{"id": skill, "name": "bench"}], "ttl_s": 600,
        });
        let _: serde_json::Value = self
            .client
            .request("communication.agents.register", &card)
            .await?;
        Ok(skill)
    }

    pub(super) async fn deregister(&self) {
        let _ = self
            .client
            .request::<_, serde_json::Value>(
                "communication.agents.deregister",
                &json!({ "name": self.agent }),
            )
            .await;
    }

    pub(super) fn send(
        &self,
        i: u64,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        self.send_to(i, &self.agent)
    }

    pub(super) fn send_to(
        &self,
        i: u64,
        recipient: &str,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        let client = self.client.clone();
        let t = self.epoch.elapsed().as_micros() as u64;
        let mut payload = json!({"t": t});
        let body = realistic_body(self.body.0, i);
        if !body.is_null() {
            payload["body"] = body;
        }
        let envelope = json!({
            "type": "event",
            "sender": format!("bench-sender-{}", i % 64),
            "recipients": [recipient],
            "subject": "bench",
            "payload": payload,
        });
        async move {
            let _: serde_json::Value = client.request("communication.send", &envelope).await?;
            Ok(())
        }
    }
}

fn print_results(args: &CommBenchArgs, results: &[PhaseResult]) {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header([
            "target",
            "phase",
            "sent",
            "received",
            "lost",
            "errors",
            "msg/s",
            "answered/s",
            "p50",
            "p95",
            "p99",
            "max",
        ]);
    for r in results {
        table.add_row(vec![
            r.target.clone(),
            r.phase.clone(),
            r.sent.to_string(),
            r.received.to_string(),
            r.lost.to_string(),
            r.errors.to_string(),
            format!("{:.0}", r.per_second),
            format!("{:.0}", r.answered_per_second),
            format!("{:.2} ms", r.p50_ms),
            format!("{:.2} ms", r.p95_ms),
            format!("{:.2} ms", r.p99_ms),
            format!("{:.2} ms", r.max_ms),
        ]);
    }
    println!("{table}");
    if let (Some(base), Some(ymera)) = (results.first(), results.get(2)) {
        println!(
            "sustained throughput: {:.0} msg/s = {:.2}x the raw JetStream baseline (target ≥ 10,000 msg/s)",
            ymera.per_second,
            ymera.per_second / base.per_second.max(1e-9)
        );
    }
    if let Some(paced) = results.get(3) {
        println!(
            "P99 send→delivered at {} msg/s: {:.2} ms (target ≤ 25 ms)",
            args.rate, paced.p99_ms
        );
    }
    if let (Some(named), Some(skill), Some(named_paced), Some(skill_paced)) = (
        results.get(2),
        results.get(4),
        results.get(3),
        results.get(5),
    ) {
        let cost = |named: f64, skill: f64| (skill / named.max(1e-9) - 1.0) * 100.0;
        println!(
            "skill: send vs named send: throughput {:.0} vs {:.0} msg/s ({:+.1} % time per message); \
             P50 {:.2} vs {:.2} ms ({:+.1} %), P99 {:.2} vs {:.2} ms at {} msg/s (target ≤ +10 %)",
            skill.per_second,
            named.per_second,
            cost(skill.per_second, named.per_second),
            skill_paced.p50_ms,
            named_paced.p50_ms,
            cost(named_paced.p50_ms, skill_paced.p50_ms),
            skill_paced.p99_ms,
            named_paced.p99_ms,
            args.rate,
        );
    }
}
