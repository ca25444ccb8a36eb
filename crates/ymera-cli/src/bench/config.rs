//! `ymera bench config`: cached `config.get` latency and throughput beside a
//! raw NATS request/reply echo, the set → `config.changed` notification
//! latency a watcher sees, and the cache hit rate of a read-heavy run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use serde_json::{Value, json};
use ymera_core::client::ServiceClient;

use crate::bench::{BenchOptions, finish_ratios, measure, measure_raw_echo, new_histogram, report};
use crate::context::Context;
use crate::private_stack::PrivateStack;

/// Options of `ymera bench config`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigBenchArgs {
    #[command(flatten)]
    pub options: BenchOptions,
    /// Sequential set → notification round trips.
    #[arg(long, default_value_t = 500)]
    pub notifications: u64,
}

/// Runs the benchmark.
pub async fn run(args: ConfigBenchArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let http_port = ymera_devstack::free_port()?;
    let http_addr = format!("127.0.0.1:{http_port}");
    let stack = if args.options.private {
        Some(PrivateStack::start(&["config"], &[("YMERA_HTTP_ADDR", http_addr.as_str())]).await?)
    } else {
        None
    };
    let nats = crate::bench::connect(&crate::bench::stack_url(stack.as_ref(), ctx)).await?;
    let client = ServiceClient::new(nats.clone()).with_credential(ctx.credential());
    let agent = "bench-config";
    let document = json!({"rate_limit": {"requests": 100, "period_ms": 1000}, "retry": {"max_attempts": 5}, "features": ["a", "b", "c"]});
    let _: Value = client
        .request(
            "config.set",
            &json!({"agent": agent, "environment": "base", "config": document, "actor": "bench"}),
        )
        .await?;

    let mut results = vec![measure_raw_echo(&nats, &args.options).await?];
    let get = client.clone();
    results.push(
        measure(
            "config.get (cached, effective document)",
            &args.options,
            move || {
                let get = get.clone();
                async move {
                    let _: Value = get
                        .request(
                            "config.get",
                            &json!({"agent": agent, "environment": "production"}),
                        )
                        .await?;
                    Ok(())
                }
            },
        )
        .await,
    );
    finish_ratios(&mut results);
    report(ctx, "config", &results)?;

    let notify = notification_latency(&nats, &client, agent, args.notifications).await?;
    let hit_rate = if stack.is_some() {
        cache_hit_rate(http_port).await.ok()
    } else {
        None
    };
    drop(stack);
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"notification": notify, "cache_hit_rate": hit_rate})
            )?
        );
    } else {
        println!(
            "set → config.changed notification over {} sets: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 ≤ 50 ms)",
            args.notifications,
            notify["p50_ms"],
            notify["p95_ms"],
            notify["p99_ms"],
            notify["max_ms"]
        );
        match hit_rate {
            Some(rate) => println!(
                "cache hit rate of this run: {:.2} % (target ≥ 95 %)",
                rate * 100.0
            ),
            None => println!(
                "cache hit rate: read /metrics of the config service (only measured with --private)"
            ),
        }
        let get = &results[1];
        println!(
            "cached get: p99 {:.2} ms, {:.0} gets/s = {:.2}x the raw baseline (targets p99 ≤ 2 ms, ≥ 20,000 gets/s)",
            get.p99_us as f64 / 1000.0,
            get.throughput_per_s,
            get.ratio_to_baseline
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Time from the start of a `config.set` to the `config.changed` event a
/// subscriber receives, over `count` sequential sets.
async fn notification_latency(
    nats: &async_nats::Client,
    client: &ServiceClient,
    agent: &str,
    count: u64,
) -> anyhow::Result<Value> {
    let mut events = nats.subscribe(format!("config.changed.{agent}.>")).await?;
    nats.flush().await?;
    let mut histogram = new_histogram();
    for i in 0..count {
        let started = Instant::now();
        let _: Value = client
            .request("config.set", &json!({"agent": agent, "environment": "development", "config": {"iteration": i}, "actor": "bench"}))
            .await?;
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .context("no config.changed event within 5 s")?;
        let _ = histogram.record(started.elapsed().as_micros().max(1) as u64);
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(
        json!({"count": count, "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": histogram.max() as f64 / 1000.0}),
    )
}

/// hits / (hits + misses) from the service's `/metrics`.
async fn cache_hit_rate(port: u16) -> anyhow::Result<f64> {
    let text = crate::bench::fetch_metrics(port).await?;
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (hits, misses) = (
        value("ymera_config_cache_hits_total"),
        value("ymera_config_cache_misses_total"),
    );
    anyhow::ensure!(hits + misses > 0.0, "no cache counters on /metrics");
    Ok(hits / (hits + misses))
}
