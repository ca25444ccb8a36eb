//! `ymera bench gateway`: the gateway's REST and webhook paths, each beside
//! its NATS baseline in the same run.
//!
//! - REST: cached `config.get` through the gateway (`POST /v1/config/get`)
//!   beside the same request over NATS.
//! - Webhooks (`--private` only: the source's secret is in the gateway's
//!   environment): signed Standard Webhooks deliveries accepted per second
//!   beside `communication.send` over NATS, and the exactly-once check of
//!   the recipient's inbox ([`webhooks`]).
//! - Fan-out (`--phase fanout`, not part of `all`): `--subscribers` live
//!   WebSocket and SSE event streams on one gateway, events published on
//!   NATS at `--event-rate`, per (event, subscriber) latency beside a NATS
//!   core subscriber, delivery checked, memory per idle subscriber ([`fanout`]).
//!
//! The HTTP client is [`http::HttpPool`]: HTTP/1.1 keep-alive on hyper's
//! connection API, one connection per request in flight.

mod fanout;
mod http;
mod webhooks;

use std::process::ExitCode;

use bytes::Bytes;
use serde_json::{Value, json};
use ymera_core::client::ServiceClient;

use crate::bench::{BenchOptions, finish_ratios, measure, report};
use crate::context::Context;
use crate::private_stack::PrivateStack;

use self::http::HttpPool;

/// Which parts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// REST and webhooks.
    All,
    /// `POST /v1/config/get` only.
    Rest,
    /// Webhook intake only (needs `--private`).
    Webhooks,
    /// Event-stream fan-out to many WebSocket and SSE subscribers (not part of `all`).
    Fanout,
}

/// Options of `ymera bench gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: BenchOptions,
    /// The gateway's URL when not `--private` (default http://127.0.0.1:8088).
    #[arg(long, default_value = "http://127.0.0.1:8088")]
    pub gateway_url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Fan-out: live event-stream subscribers on the gateway.
    #[arg(long, default_value_t = 5000)]
    pub subscribers: usize,
    /// Fan-out: events published per second (for `--seconds`).
    #[arg(long, default_value_t = 200.0)]
    pub event_rate: f64,
    /// Fan-out: the share of subscribers on the WebSocket (0–1); the rest use SSE.
    #[arg(long, default_value_t = 0.5)]
    pub ws_share: f64,
    /// Fan-out with `--private`: the gateway's GATEWAY_EVENTS_FLUSH_INTERVAL in
    /// milliseconds (default: the gateway's default, 50 ms).
    #[arg(long)]
    pub flush_interval_ms: Option<u64>,
}

/// Runs the benchmark.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    if args.phase == Phase::Fanout {
        return run_fanout(args, ctx).await;
    }
    let port = ymera_devstack::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let secret = webhooks::new_secret();
    let (stack, base) = if args.options.private {
        let env = [
            ("GATEWAY_ADDR", addr.as_str()),
            // The benchmark is one client: no rate limit in the way.
            ("GATEWAY_RATE_LIMIT", "10000000"),
            ("GATEWAY_RATE_PERIOD", "1s"),
            (webhooks::SECRET_ENV, secret.as_str()),
            // communication's per-sender limit (100/s) would cap the
            // webhook phase (every envelope's sender is `gateway`).
            ("COMM_RATE_LIMIT", "1000000"),
        ];
        let services: &[&str] = match args.phase {
            Phase::Rest => &["config", "gateway"],
            _ => &["config", "communication", "gateway"],
        };
        let stack = PrivateStack::start(services, &env).await?;
        (Some(stack), format!("http://{addr}"))
    } else {
        (None, args.gateway_url.clone())
    };
    let nats = crate::bench::connect(&crate::bench::stack_url(stack.as_ref(), ctx)).await?;
    let credential = ctx.credential();
    let client = ServiceClient::new(nats.clone()).with_credential(credential.clone());
    let http = HttpPool::new(&base)?;
    let mut verified = true;
    if matches!(args.phase, Phase::All | Phase::Rest) {
        rest(&args.options, &http, &client, credential, &base, ctx).await?;
    }
    if matches!(args.phase, Phase::All | Phase::Webhooks) {
        if stack.is_some() {
            let (mut results, checks) = webhooks::run(
                &args.options,
                http.clone(),
                nats.clone(),
                client.clone(),
                secret,
            )
            .await?;
            finish_ratios(&mut results);
            report(ctx, "gateway-webhooks", &results)?;
            verified = checks.iter().all(webhooks::Verification::ok);
            if ctx.json() {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"bench": "gateway-webhooks", "inbox": checks})
                    )?
                );
            } else {
                for c in &checks {
                    println!(
                        "{}: {} accepted, {} received exactly once, {} missing, {} duplicated, {} received without a 2xx",
                        c.target,
                        c.accepted,
                        c.received_once,
                        c.missing,
                        c.duplicated,
                        c.unacknowledged
                    );
                }
                let rate = results.get(1).map(|r| r.throughput_per_s).unwrap_or(0.0);
                println!(
                    "targets: webhook intake ≥ 2,000/s: {} ({rate:.0}/s); every accepted delivery in the inbox exactly once: {}",
                    crate::bench::verdict(rate >= 2000.0),
                    crate::bench::verdict(verified)
                );
            }
        } else if !ctx.json() {
            println!(
                "webhook phase skipped: it needs --private (the source's secret is set in the gateway's environment)"
            );
        }
    }
    drop(stack);
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--phase fanout`: its own stack (config and the gateway; the event
/// streams need nothing else with `YMERA_AUTH=off`).
async fn run_fanout(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    anyhow::ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    anyhow::ensure!(
        args.event_rate > 0.0 && args.event_rate.is_finite(),
        "--event-rate must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.ws_share),
        "--ws-share must be between 0 and 1"
    );
    // Two descriptors per subscriber (client and gateway side) when the
    // gateway is ours, plus what the servers hold.
    let open_files = fanout::raise_open_files_limit()?;
    let needed = args.subscribers as u64 * if args.options.private { 2 } else { 1 } + 512;
    if open_files < needed {
        eprintln!(
            "warning: RLIMIT_NOFILE is {open_files}, {needed} descriptors are needed for {} subscribers",
            args.subscribers
        );
    }
    let flush = args.flush_interval_ms.map(|ms| format!("{ms}ms"));
    let (stack, base) = if args.options.private {
        let port = ymera_devstack::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut env = vec![("GATEWAY_ADDR", addr.as_str())];
        if let Some(flush) = &flush {
            env.push(("GATEWAY_EVENTS_FLUSH_INTERVAL", flush.as_str()));
        }
        let stack = PrivateStack::start(&["config", "gateway"], &env)
            .await
            .context("starting the private stack")?;
        (Some(stack), format!("http://{addr}"))
    } else {
        (None, args.gateway_url.clone())
    };
    let nats_url = crate::bench::stack_url(stack.as_ref(), ctx);
    let nats = crate::bench::connect(&nats_url).await?;
    let plan = fanout::Plan {
        subscribers: args.subscribers,
        ws_share: args.ws_share,
        event_rate: args.event_rate,
        seconds: args.options.seconds.max(1),
        base,
        gateway_pid: stack.as_ref().and_then(|s| s.service_pid("gateway")),
        nats_pid: stack.as_ref().map(PrivateStack::nats_pid),
        flush_interval: match (&flush, args.options.private) {
            (Some(_), _) => format!("{} ms", args.flush_interval_ms.unwrap_or_default()),
            (None, true) => "50 ms (gateway default)".to_owned(),
            (None, false) => "the gateway's".to_owned(),
        },
        credential: if args.options.private {
            None
        } else {
            ctx.credential()
        },
    };
    let report = fanout::run(&plan, &nats, &nats_url).await?;
    if ctx.json() {
        let mut value = serde_json::to_value(&report)?;
        if let Value::Object(map) = &mut value {
            map.insert("bench".to_owned(), json!("gateway-fanout"));
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        fanout::print(&report);
    }
    drop(nats);
    drop(stack);
    Ok(if report.every_event_delivered {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn rest(
    options: &BenchOptions,
    http: &HttpPool,
    client: &ServiceClient,
    credential: Option<ymera_core::client::Credential>,
    base: &str,
    ctx: &Context,
) -> anyhow::Result<()> {
    let agent = "bench-gateway";
    let document =
        json!({"rate_limit": {"requests": 100, "period_ms": 1000}, "features": ["a", "b"]});
    let _: Value = client
        .request(
            "config.set",
            &json!({"agent": agent, "environment": "base", "config": document, "actor": "bench"}),
        )
        .await?;
    let path = "/v1/config/get";
    let body = Bytes::from(json!({"agent": agent, "environment": "production"}).to_string());
    let header = credential.map(|c| match c {
        ymera_core::client::Credential::ApiKey(key) => ("X-API-Key", key),
        ymera_core::client::Credential::Bearer(token) => {
            ("Authorization", format!("Bearer {token}"))
        }
    });
    // The gateway learns its routes from $SRV.INFO: wait until it routes config.get.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = http
            .post(path, &[], body.clone())
            .await
            .map(|r| r.status.as_u16());
        if matches!(status, Ok(200) | Ok(401)) {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the gateway at {base} does not route config.get ({status:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let over_nats = client.clone();
    let mut results = vec![
        measure("config.get over NATS (baseline)", options, move || {
            let c = over_nats.clone();
            async move {
                let _: Value = c
                    .request(
                        "config.get",
                        &json!({"agent": agent, "environment": "production"}),
                    )
                    .await?;
                Ok(())
            }
        })
        .await,
    ];
    let http = http.clone();
    results.push(
        measure("POST /v1/config/get (gateway)", options, move || {
            let (http, body, header) = (http.clone(), body.clone(), header.clone());
            async move {
                let headers: Vec<(&str, &str)> = header
                    .as_ref()
                    .map(|(name, value)| vec![(*name, value.as_str())])
                    .unwrap_or_default();
                let reply = http.post(path, &headers, body).await?;
                anyhow::ensure!(reply.status.is_success(), "HTTP {}", reply.status);
                Ok(())
            }
        })
        .await,
    );
    finish_ratios(&mut results);
    report(ctx, "gateway", &results)?;
    Ok(())
}
