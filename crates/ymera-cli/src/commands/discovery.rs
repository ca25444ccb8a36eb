//! `ymera health` and `ymera services`: find every service instance with the
//! NATS Services API and show its health, INFO and STATS.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::service::{Info, PingResponse, Stats};
use bytes::Bytes;
use comfy_table::{Cell, Color, Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use serde::Serialize;
use ymera_core::client::ServiceClient;
use ymera_core::health::{HealthReport, HealthStatus};

use crate::context::Context;

/// Options of `ymera health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// How long to wait for discovery replies, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub wait_ms: u64,
    /// Exit non-zero unless every instance is healthy and at least this many answer.
    #[arg(long, default_value_t = 1)]
    pub expect: usize,
}

/// Options of `ymera services`.
#[derive(Debug, clap::Args)]
pub struct ServicesArgs {
    /// How long to wait for discovery replies, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub wait_ms: u64,
}

/// Sends `subject` to every instance and gathers replies until `quiet` passes
/// without one (at most 200 replies).
pub async fn gather(
    client: &async_nats::Client,
    subject: &str,
    quiet: Duration,
) -> anyhow::Result<Vec<async_nats::Message>> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subject.to_owned(), inbox, Bytes::new())
        .await?;
    client.flush().await?;
    let mut replies = Vec::new();
    while replies.len() < 200 {
        match tokio::time::timeout(quiet, sub.next()).await {
            Ok(Some(msg)) => replies.push(msg),
            _ => break,
        }
    }
    Ok(replies)
}

#[derive(Debug, Serialize)]
struct InstanceHealth {
    service: String,
    instance: String,
    version: String,
    status: String,
    rtt_ms: f64,
    checks: Option<std::collections::BTreeMap<String, ymera_core::health::CheckResult>>,
    error: Option<String>,
}

/// `ymera health`.
pub async fn health(args: HealthArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client().await?;
    let pings = gather(
        client.nats(),
        "$SRV.PING",
        Duration::from_millis(args.wait_ms),
    )
    .await?;
    let mut instances: Vec<PingResponse> = pings
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect();
    instances.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let mut rows = Vec::new();
    for instance in &instances {
        rows.push(probe_instance(&client, instance).await);
    }
    let stack = super::stack_health::probe_local_stack().await;
    let stack_healthy = stack.iter().flatten().all(|probe| probe.healthy());
    let all_healthy =
        rows.len() >= args.expect && rows.iter().all(|r| r.status == "healthy") && stack_healthy;
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!(
            "No services answered $SRV.PING on {}. Is the stack up? (scripts/up)",
            ctx.args.nats_url
        );
    } else {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "service",
            "instance",
            "status",
            "version",
            "rtt",
            "dependencies",
        ]);
        for row in &rows {
            let color = match row.status.as_str() {
                "healthy" => Color::Green,
                "degraded" => Color::Yellow,
                _ => Color::Red,
            };
            let deps = match (&row.checks, &row.error) {
                (Some(checks), _) => checks
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", status_word(v.status)))
                    .collect::<Vec<_>>()
                    .join(" "),
                (None, Some(err)) => err.clone(),
                (None, None) => String::new(),
            };
            table.add_row(vec![
                Cell::new(&row.service),
                Cell::new(&row.instance),
                Cell::new(&row.status).fg(color),
                Cell::new(&row.version),
                Cell::new(format!("{:.2} ms", row.rtt_ms)),
                Cell::new(deps),
            ]);
        }
        println!("{table}");
    }
    if let Some(probes) = stack.filter(|_| !ctx.json()) {
        super::stack_health::print(&probes);
    }
    Ok(if all_healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn probe_instance(client: &ServiceClient, instance: &PingResponse) -> InstanceHealth {
    let subject = format!("{}.health.{}", instance.name, instance.id);
    let started = Instant::now();
    let result: Result<HealthReport, _> = client.request(&subject, &serde_json::json!({})).await;
    let rtt_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(report) => InstanceHealth {
            service: instance.name.clone(),
            instance: instance.id.clone(),
            version: report.version,
            status: status_word(report.status).to_owned(),
            rtt_ms,
            checks: Some(report.checks),
            error: None,
        },
        Err(err) => InstanceHealth {
            service: instance.name.clone(),
            instance: instance.id.clone(),
            version: instance.version.clone(),
            status: "unhealthy".into(),
            rtt_ms,
            checks: None,
            error: Some(err.message),
        },
    }
}

fn status_word(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

#[derive(Serialize)]
struct ServiceView {
    info: Info,
    stats: Option<Stats>,
}

/// `ymera services`.
pub async fn services(args: ServicesArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let nats = ctx.nats().await?;
    let quiet = Duration::from_millis(args.wait_ms);
    let infos: Vec<Info> = gather(&nats, "$SRV.INFO", quiet)
        .await?
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect();
    let mut views = Vec::new();
    for info in infos {
        let subject = format!("$SRV.STATS.{}.{}", info.name, info.id);
        let stats = nats
            .request(subject.clone(), Bytes::new())
            .await
            .with_context(|| format!("{subject} did not answer"))
            .ok()
            .and_then(|m| serde_json::from_slice::<Stats>(&m.payload).ok());
        views.push(ServiceView { info, stats });
    }
    views.sort_by(|a, b| (&a.info.name, &a.info.id).cmp(&(&b.info.name, &b.info.id)));
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!("No services answered $SRV.INFO on {}.", ctx.args.nats_url);
        return Ok(ExitCode::FAILURE);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "service",
        "instance",
        "version",
        "endpoint",
        "subject",
        "permission",
        "requests",
        "errors (5xx)",
        "rejected (4xx)",
        "avg",
    ]);
    for view in &views {
        let mut endpoints = view.info.endpoints.clone();
        endpoints.sort_by(|a, b| a.subject.cmp(&b.subject));
        for endpoint in endpoints {
            let stat = view
                .stats
                .as_ref()
                .and_then(|s| s.endpoints.iter().find(|e| e.subject == endpoint.subject));
            // The runtime counts failures (5xx) and refusals (4xx: a 404 for a
            // document that does not exist yet, bad input) apart.
            let count = |key: &str| {
                stat.and_then(|s| s.data.as_ref())
                    .and_then(|d| d.get(key))
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            };
            let permission = endpoint
                .metadata
                .get("permission")
                .cloned()
                .unwrap_or_else(|| "open".to_owned());
            table.add_row(vec![
                view.info.name.clone(),
                view.info.id.clone(),
                view.info.version.clone(),
                endpoint.name.clone(),
                endpoint.subject.clone(),
                permission,
                stat.map(|s| s.requests.to_string()).unwrap_or_default(),
                count("errors").to_string(),
                count("rejected").to_string(),
                stat.map(|s| format!("{:.2?}", s.average_processing_time))
                    .unwrap_or_default(),
            ]);
        }
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}
