//! `ymera bench comm-cluster`: `communication.send → agent inbox` on a private 3-node
//! JetStream cluster (the platform's streams at R3) beside raw R3 JetStream
//! publish → consume → ack, in the same run, once with nats-server's default fsync
//! (`sync_interval` two minutes) and once with `sync_interval: always`: the numbers
//! behind the fsync choice in `deploy/nats.conf` and `k8s/base/nats/nats.conf`.
//!
//! Each target: a burst of `--messages` with `--concurrency` in flight; throughput is
//! messages received (distinct ids) per second from the first send to the last receipt.

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use ymera_devstack::{
    HEALTH_TIMEOUT, NatsCluster, NatsClusterOptions, Postgres, Service, ServiceOptions,
};

/// Options of `ymera bench comm-cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommClusterArgs {
    /// Messages per burst.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Messages in flight.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
}

/// Most seconds a burst may go without a new receipt.
const STALL: Duration = Duration::from_secs(30);

struct Burst {
    mode: &'static str,
    target: &'static str,
    received: u64,
    errors: u64,
    seconds: f64,
}

impl Burst {
    fn per_second(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }
}

/// Distinct ids received.
#[derive(Default)]
struct Seen(Mutex<HashSet<String>>);

impl Seen {
    fn insert(&self, id: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }
    fn len(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len() as u64
    }
}

/// Runs the benchmark.
pub async fn run(args: CommClusterArgs) -> anyhow::Result<ExitCode> {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let mut results = Vec::new();
    for (mode, sync_always) in [("default fsync", false), ("sync_interval: always", true)] {
        let cluster = tokio::task::spawn_blocking(move || {
            NatsCluster::start_with(NatsClusterOptions {
                sync_always,
                ..NatsClusterOptions::new(3)
            })
        })
        .await??;
        let client = async_nats::connect(cluster.url_list()).await?;
        results.push(raw_r3(&client, &args, mode).await?);
        let database = postgres.create_database()?;
        let service = Service::start(
            ServiceOptions::binary("communication")
                .context("communication (cargo build --release --workspace --bins)")?
                .env("NATS_URL", cluster.urls())
                .env("POSTGRES_URL", &database)
                .env("ENVIRONMENT", "development")
                .env("YMERA_AUTH", "off")
                .env("LOG_LEVEL", "warn")
                .env("COMM_RATE_LIMIT", "1000000")
                .env("COMM_DELIVERY_CONCURRENCY", "256"),
        )?;
        service.wait_healthy(&client, HEALTH_TIMEOUT).await?;
        results.push(platform(&client, &args, mode).await?);
        drop(service);
        drop(cluster);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "fsync",
        "target",
        "received",
        "errors",
        "seconds",
        "msg/s",
        "× raw R3 (same fsync)",
    ]);
    for result in &results {
        let raw = results
            .iter()
            .find(|r| r.mode == result.mode && r.target.starts_with("raw"))
            .map_or(0.0, Burst::per_second);
        table.add_row(vec![
            result.mode.to_owned(),
            result.target.to_owned(),
            result.received.to_string(),
            result.errors.to_string(),
            format!("{:.2}", result.seconds),
            format!("{:.0}", result.per_second()),
            format!("{:.2}", result.per_second() / raw.max(1e-9)),
        ]);
    }
    println!(
        "3-node JetStream cluster on loopback, {} messages, {} in flight",
        args.messages, args.concurrency
    );
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Sends `messages` with `send` (`concurrency` in flight) and waits until `seen` holds
/// them all or receipts stall.
async fn burst<F, Fut>(args: &CommClusterArgs, seen: &Arc<Seen>, send: F) -> (u64, u64, f64)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    for i in 0..args.messages {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (errors, future) = (Arc::clone(&errors), send(i));
        tokio::spawn(async move {
            if future.await.is_err() {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let expected = args.messages - errors.load(std::sync::atomic::Ordering::Relaxed);
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let now = seen.len();
        if now >= expected {
            break;
        }
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last_change.elapsed() > STALL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (
        seen.len(),
        errors.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
    )
}

/// Raw JetStream: an R3 work-queue stream, a pull consumer that acks, publishes that
/// await the JetStream ack.
async fn raw_r3(
    client: &async_nats::Client,
    args: &CommClusterArgs,
    mode: &'static str,
) -> anyhow::Result<Burst> {
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "BENCH_RAW_R3".into(),
            subjects: vec!["bench.raw.r3".into()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            num_replicas: 3,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("bench".into()),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let seen = Arc::new(Seen::default());
    let mut messages = consumer.messages().await?;
    let rx = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            rx.insert(String::from_utf8_lossy(&message.payload).into_owned());
            let _ = message.ack().await;
        }
    });
    let (received, errors, seconds) = burst(args, &seen, |i| {
        let js = js.clone();
        async move {
            js.publish("bench.raw.r3", Bytes::from(i.to_string()))
                .await?
                .await?;
            Ok(())
        }
    })
    .await;
    task.abort();
    let _ = js.delete_stream("BENCH_RAW_R3").await;
    Ok(Burst {
        mode,
        target: "raw R3 JetStream publish→consume→ack (baseline)",
        received,
        errors,
        seconds,
    })
}

/// The platform: `communication.send` to an agent whose inbox acknowledges.
async fn platform(
    client: &async_nats::Client,
    args: &CommClusterArgs,
    mode: &'static str,
) -> anyhow::Result<Burst> {
    let js = jetstream::new(client.clone());
    let replicas = js
        .get_stream("YMERA_MESSAGES")
        .await?
        .info()
        .await?
        .config
        .num_replicas;
    anyhow::ensure!(replicas == 3, "YMERA_MESSAGES is R{replicas}, not R3");
    let seen = Arc::new(Seen::default());
    let mut inbox = client.subscribe("agent.bench-cluster.inbox").await?;
    client.flush().await?;
    let (rx, replier) = (Arc::clone(&seen), client.clone());
    let task = tokio::spawn(async move {
        while let Some(message) = inbox.next().await {
            if let Some(reply) = message.reply.clone() {
                let _ = replier.publish(reply, Bytes::from_static(b"{}")).await;
            }
            if let Ok(envelope) = serde_json::from_slice::<Value>(&message.payload)
                && let Some(id) = envelope["id"].as_str()
            {
                rx.insert(id.to_owned());
            }
        }
    });
    let (received, errors, seconds) = burst(args, &seen, |i| {
        let client = client.clone();
        async move {
            let envelope = json!({"type": "event", "sender": "bench", "recipients": ["bench-cluster"],
                                  "subject": "bench", "payload": {"i": i}});
            let reply = client
                .request("communication.send", Bytes::from(envelope.to_string()))
                .await?;
            anyhow::ensure!(
                reply
                    .headers
                    .as_ref()
                    .is_none_or(|h| h.get("Nats-Service-Error-Code").is_none()),
                "refused: {}",
                String::from_utf8_lossy(&reply.payload)
            );
            Ok(())
        }
    })
    .await;
    task.abort();
    Ok(Burst {
        mode,
        target: "communication.send → agent inbox (YMERA_MESSAGES R3)",
        received,
        errors,
        seconds,
    })
}
