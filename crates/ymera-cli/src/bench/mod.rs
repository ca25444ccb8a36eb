//! `ymera bench …`: latency (HDR histogram) and throughput of Ymera
//! endpoints beside a raw baseline measured in the same run.
//!
//! This module holds `ymera bench health` and what the benchmarks share
//! (options, measuring loops, histograms, the report); each other
//! benchmark is a submodule.

mod analysis;
mod backup;
mod comm;
mod comm_cluster;
mod comm_stored;
mod config;
mod drafting;
mod gateway;
mod security;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use ymera_core::client::ServiceClient;
use ymera_core::config::ServiceConfig;
use ymera_core::runtime::Runtime;

use crate::context::Context;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Round-trip latency and throughput of `<service>.health` and an example
    /// endpoint, beside a raw NATS request/reply echo.
    Health(HealthBenchArgs),
    /// End-to-end message routing (send → recipient inbox) beside a raw
    /// JetStream publish → consume → ack baseline.
    Comm(comm::CommBenchArgs),
    /// `communication.send` on a private 3-node JetStream cluster (R3) beside raw R3
    /// JetStream, with the default fsync and with `sync_interval: always`.
    CommCluster(comm_cluster::CommClusterArgs),
    /// Cached `config.get` beside a raw NATS echo, set → change-event
    /// latency, and the cache hit rate.
    Config(config::ConfigBenchArgs),
    /// `security.authorize` with API keys and local JWT verification beside
    /// a raw NATS echo.
    Security(security::Args),
    /// Readability analysis of a 2,000-word document beside textstat, and
    /// collaborative-session broadcast latency.
    Drafting(drafting::Args),
    /// Code-analysis throughput (MB/s) beside lizard on the same files.
    Analysis(analysis::Args),
    /// `ymera backup create` / `restore` MB/s beside pg_dump / pg_restore alone.
    Backup(backup::Args),
    /// Cached `config.get` over HTTP through the gateway beside the same request over NATS,
    /// webhook intake, and (`--phase fanout`) event-stream fan-out to many subscribers.
    Gateway(gateway::Args),
}

/// Options shared by the benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Sequential requests per target for the latency histogram.
    #[arg(long, default_value_t = 5000)]
    pub requests: u64,
    /// Requests kept in flight for the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Length of the throughput phase per target, in seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Run against a private nats-server started for the benchmark instead of NATS_URL.
    #[arg(long)]
    pub private: bool,
}

/// Options of `ymera bench health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthBenchArgs {
    #[command(flatten)]
    pub options: BenchOptions,
}

/// One measured target.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// What was measured.
    pub target: String,
    /// Latency percentiles in microseconds (sequential requests).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Requests measured for latency.
    pub samples: u64,
    /// Completed requests per second with `concurrency` in flight.
    pub throughput_per_s: f64,
    /// Throughput relative to the baseline (the first target).
    pub ratio_to_baseline: f64,
    /// Requests that failed in either phase.
    pub errors: u64,
}

/// Runs one benchmark command.
pub async fn run(command: BenchCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Health(args) => bench_health(args, ctx).await,
        BenchCommand::Comm(args) => comm::run(args, ctx).await,
        BenchCommand::CommCluster(args) => comm_cluster::run(args).await,
        BenchCommand::Config(args) => config::run(args, ctx).await,
        BenchCommand::Security(args) => security::run(args, ctx).await,
        BenchCommand::Drafting(args) => drafting::run(args, ctx).await,
        BenchCommand::Analysis(args) => analysis::run(args, ctx).await,
        BenchCommand::Backup(args) => backup::run(args, ctx).await,
        BenchCommand::Gateway(args) => gateway::run(args, ctx).await,
    }
}

/// Where the benchmark's NATS is: the stack's, or a private server it owns.
pub struct BenchNats {
    /// The URL to connect to.
    pub url: String,
    _server: Option<ymera_devstack::NatsServer>,
}

impl BenchNats {
    /// Starts a private server if asked, else uses the context's URL.
    pub fn new(options: &BenchOptions, ctx: &Context) -> anyhow::Result<Self> {
        if options.private {
            let server = ymera_devstack::NatsServer::start()?;
            Ok(BenchNats {
                url: server.url(),
                _server: Some(server),
            })
        } else {
            Ok(BenchNats {
                url: ctx.args.nats_url.clone(),
                _server: None,
            })
        }
    }
}

async fn bench_health(args: HealthBenchArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let options = args.options;
    let nats = BenchNats::new(&options, ctx)?;
    let client = async_nats::connect(&nats.url).await?;

    let mut config = ServiceConfig::default();
    config.nats.url = nats.url.clone();
    log_in_process_service_to_file("bench-example")?;
    let runtime = Runtime::start("bench-example", config).await?;
    let shutdown = runtime.shutdown_token();
    let service = tokio::spawn(example_service("bench-example").serve(runtime));
    let service_client = ServiceClient::new(client.clone());
    wait_for(&service_client, "bench-example.health").await?;

    let mut results = vec![measure_raw_echo(&client, &options).await?];
    for (label, subject, body) in [
        (
            "bench-example.health (runtime, dependency probe)",
            "bench-example.health",
            Bytes::new(),
        ),
        (
            "bench-example.echo (runtime endpoint)",
            "bench-example.echo",
            Bytes::from_static(b"ping"),
        ),
    ] {
        let svc = service_client.clone();
        results.push(
            measure(label, &options, move || {
                let (svc, body) = (svc.clone(), body.clone());
                async move {
                    svc.request_bytes(subject, body)
                        .await
                        .map(|_| ())
                        .map_err(anyhow::Error::from)
                }
            })
            .await,
        );
    }
    shutdown.cancel();
    let _ = service.await;
    finish_ratios(&mut results);
    report(ctx, "health", &results)?;
    let p99_ok = results[1..].iter().all(|r| r.p99_us <= 2000);
    let throughput_ok = results[1..].iter().all(|r| r.ratio_to_baseline >= 0.5);
    if !ctx.json() {
        println!(
            "targets: P99 ≤ 2 ms: {}; throughput ≥ 50% of baseline: {}",
            verdict(p99_ok),
            verdict(throughput_ok)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the logs of a service this process runs itself (and of its NATS
/// client) to `<service logs>/<name>.log`, so the benchmark's output is its
/// tables: the runtime's own subscriber then finds one installed and keeps it.
fn log_in_process_service_to_file(name: &str) -> anyhow::Result<()> {
    let dir = crate::private_stack::log_dir();
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .try_init();
    Ok(())
}

fn example_service(name: &str) -> ymera_core::runtime::ServiceBuilder {
    ymera_core::runtime::ServiceBuilder::new(
        name,
        env!("CARGO_PKG_VERSION"),
        "benchmark echo service",
    )
    .route(&format!("{name}.echo"), &(), ymera_core::example::echo)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The NATS URL a benchmark uses: its private stack's, else the context's.
pub fn stack_url(stack: Option<&crate::private_stack::PrivateStack>, ctx: &Context) -> String {
    stack
        .map(crate::private_stack::PrivateStack::nats_url)
        .unwrap_or_else(|| ctx.args.nats_url.clone())
}

/// Connects to `url`, naming it in the error.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    use anyhow::Context as _;
    async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// The baseline of the request/reply benchmarks: a plain subscriber
/// echoing each request, measured like any target.
pub async fn measure_raw_echo(
    client: &async_nats::Client,
    options: &BenchOptions,
) -> anyhow::Result<BenchResult> {
    let subject = format!(
        "ymera.bench.echo.{}",
        client.new_inbox().replace("_INBOX.", "")
    );
    let echo = spawn_raw_echo(client.clone(), subject.clone()).await?;
    let raw = client.clone();
    let result = measure(
        "raw NATS request/reply echo (baseline)",
        options,
        move || {
            let (raw, subject) = (raw.clone(), subject.clone());
            async move {
                raw.request(subject, Bytes::from_static(b"ping"))
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        },
    )
    .await;
    echo.abort();
    Ok(result)
}

/// The text of a service's `/metrics` on 127.0.0.1:`port`.
pub async fn fetch_metrics(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// A plain subscriber that answers every request with its body.
pub async fn spawn_raw_echo(
    client: async_nats::Client,
    subject: String,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut sub = client.subscribe(subject).await?;
    client.flush().await?;
    Ok(tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = client.publish(reply, msg.payload).await;
            }
        }
    }))
}

/// Polls `subject` until it answers.
pub async fn wait_for(client: &ServiceClient, subject: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if client.request_bytes(subject, Bytes::new()).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("{subject} never answered")
}

/// Measures `call`: `options.requests` sequential calls into an HDR
/// histogram, then `options.seconds` with `options.concurrency` in flight.
pub async fn measure<F, Fut>(target: &str, options: &BenchOptions, call: F) -> BenchResult
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    let bar = ProgressBar::new(options.requests + options.seconds * 10);
    bar.set_style(
        ProgressStyle::with_template("{msg:48} [{bar:30}] {percent:>3}% {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(target.to_owned());
    let mut histogram = new_histogram();
    let mut errors = 0u64;
    // Warm-up.
    for _ in 0..options.requests.min(200) {
        let _ = call().await;
    }
    for _ in 0..options.requests {
        let started = Instant::now();
        if call().await.is_err() {
            errors += 1;
        }
        let _ = histogram.record(started.elapsed().as_micros().max(1) as u64);
        bar.inc(1);
    }
    let (completed, failed) = throughput(call, options, &bar).await;
    bar.finish_and_clear();
    BenchResult {
        target: target.to_owned(),
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        samples: histogram.len(),
        throughput_per_s: completed as f64 / options.seconds.max(1) as f64,
        ratio_to_baseline: 1.0,
        errors: errors + failed,
    }
}

async fn throughput<F, Fut>(call: Arc<F>, options: &BenchOptions, bar: &ProgressBar) -> (u64, u64)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(options.seconds.max(1));
    let mut workers = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                if call().await.is_ok() {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed)
        }));
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.inc(1);
            }
        })
    };
    let mut totals = (0, 0);
    for worker in workers {
        if let Ok((ok, failed)) = worker.await {
            totals.0 += ok;
            totals.1 += failed;
        }
    }
    ticker.abort();
    totals
}

/// A histogram of microseconds from 1 µs to 60 s, 3 significant digits.
/// A benchmark phase's progress bar: `message`, the bar, count and elapsed time.
pub fn progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:52} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

fn unreachable_histogram() -> Histogram<u64> {
    // new(3) only fails for sigfig > 5; kept total so no panic path exists.
    Histogram::new(2).unwrap_or_else(|_| unreachable_histogram())
}

/// Fills `ratio_to_baseline` from the first result's throughput.
pub fn finish_ratios(results: &mut [BenchResult]) {
    let Some(base) = results.first().map(|r| r.throughput_per_s) else {
        return;
    };
    for result in results.iter_mut() {
        result.ratio_to_baseline = if base > 0.0 {
            result.throughput_per_s / base
        } else {
            0.0
        };
    }
}

/// Prints results as a table (or JSON).
pub fn report(ctx: &Context, name: &str, results: &[BenchResult]) -> anyhow::Result<()> {
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"bench": name, "results": results}))?
        );
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "target",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "req/s",
        "vs baseline",
        "errors",
    ]);
    for r in results {
        table.add_row(vec![
            r.target.clone(),
            micros(r.p50_us),
            micros(r.p90_us),
            micros(r.p99_us),
            micros(r.p999_us),
            micros(r.max_us),
            format!("{:.0}", r.throughput_per_s),
            format!("{:.2}x", r.ratio_to_baseline),
            r.errors.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn micros(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}
