//! `ymera rollout status` and `ymera rollout check`: the canary gate.
//!
//! Every instance's version comes from `$SRV.INFO`, its request, error and
//! latency figures from `$SRV.STATS` (the health endpoints left out, so
//! probes do not dilute the rates). Instances are grouped by (service,
//! version). `--window-s N` takes two snapshots N seconds apart and uses the
//! difference, so a stable version's long history does not hide what it
//! does now; without it the figures are since each instance started.
//!
//! `check` exits 0 when the canary is no worse than the stable version
//! within the thresholds, 1 when it is worse, 2 when the gate cannot decide
//! (a version has no instance, or the canary has too few requests).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use async_nats::service::{Info, Stats};
use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::discovery::gather;
use crate::context::Context;

/// `ymera rollout …`.
#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Instances grouped by version: count, requests, error rate, latency.
    Status(StatusArgs),
    /// Compare a canary version with the stable one; exit 1 when it is worse.
    Check(CheckArgs),
}

/// Options shared by both subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct Scope {
    /// Only this service (micro name, e.g. `communication`).
    #[arg(long)]
    pub service: Option<String>,
    /// How long to wait for discovery replies, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub wait_ms: u64,
    /// Measure over this many seconds (two snapshots) instead of since start.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub window_s: Option<u64>,
}

/// Options of `ymera rollout status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub scope: Scope,
}

/// Options of `ymera rollout check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// The version serving most traffic now.
    #[arg(long)]
    pub stable: String,
    /// The version being rolled out.
    #[arg(long)]
    pub canary: String,
    /// Largest allowed canary error rate as a multiple of the stable one.
    #[arg(long, default_value_t = 2.0)]
    pub max_error_rate_ratio: f64,
    /// Error rate the canary may always have, even when the stable version has none.
    #[arg(long, default_value_t = 0.01)]
    pub error_rate_floor: f64,
    /// Largest allowed canary mean latency as a multiple of the stable one.
    #[arg(long, default_value_t = 1.5)]
    pub max_latency_ratio: f64,
    /// Fewest canary requests for a verdict (fewer: exit 2).
    #[arg(long, default_value_t = 20)]
    pub min_requests: u64,
}

/// Figures of one version of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VersionStats {
    /// Service (micro) name.
    pub service: String,
    /// Version from `$SRV.INFO`.
    pub version: String,
    /// Instances answering with this version.
    pub instances: usize,
    /// Requests handled (health endpoints excluded).
    pub requests: u64,
    /// Requests answered with a server error (5xx, `errors` in STATS data).
    pub errors: u64,
    /// Requests refused as the caller's mistake (4xx, `rejected`).
    pub rejected: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Mean handler time in milliseconds (0 without requests).
    pub mean_latency_ms: f64,
    #[serde(skip)]
    processing: Duration,
}

/// One instance's totals.
#[derive(Debug, Clone, Default)]
struct Counts {
    service: String,
    version: String,
    requests: u64,
    errors: u64,
    rejected: u64,
    processing: Duration,
}

fn data_count(stat: &async_nats::service::endpoint::Stats, key: &str) -> u64 {
    stat.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

fn is_health(service: &str, subject: &str) -> bool {
    let health = format!("{service}.health");
    subject == health || subject.starts_with(&format!("{health}."))
}

/// Totals per instance id from `$SRV.INFO` + `$SRV.STATS`.
async fn snapshot(
    nats: &async_nats::Client,
    scope: &Scope,
) -> anyhow::Result<HashMap<String, Counts>> {
    let quiet = Duration::from_millis(scope.wait_ms);
    let subject = match &scope.service {
        Some(service) => format!("$SRV.INFO.{service}"),
        None => "$SRV.INFO".to_owned(),
    };
    let infos: Vec<Info> = gather(nats, &subject, quiet)
        .await?
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect();
    let mut out = HashMap::new();
    for info in infos {
        let subject = format!("$SRV.STATS.{}.{}", info.name, info.id);
        let reply =
            tokio::time::timeout(Duration::from_secs(2), nats.request(subject, Bytes::new())).await;
        let Some(stats) = reply
            .ok()
            .and_then(Result::ok)
            .and_then(|m| serde_json::from_slice::<Stats>(&m.payload).ok())
        else {
            continue;
        };
        let mut counts = Counts {
            service: info.name.clone(),
            version: info.version.clone(),
            ..Counts::default()
        };
        for endpoint in stats
            .endpoints
            .iter()
            .filter(|e| !is_health(&info.name, &e.subject))
        {
            counts.requests += endpoint.requests as u64;
            counts.errors += data_count(endpoint, "errors");
            counts.rejected += data_count(endpoint, "rejected");
            counts.processing += endpoint.processing_time;
        }
        out.insert(info.id, counts);
    }
    Ok(out)
}

/// Groups instance totals by (service, version); with `before`, the
/// difference since then (instances new since then count from zero).
fn group(
    now: &HashMap<String, Counts>,
    before: Option<&HashMap<String, Counts>>,
) -> Vec<VersionStats> {
    let mut groups: BTreeMap<(String, String), VersionStats> = BTreeMap::new();
    for (id, c) in now {
        let base = before.and_then(|b| b.get(id)).cloned().unwrap_or_default();
        let entry = groups
            .entry((c.service.clone(), c.version.clone()))
            .or_insert_with(|| VersionStats {
                service: c.service.clone(),
                version: c.version.clone(),
                ..VersionStats::default()
            });
        entry.instances += 1;
        entry.requests += c.requests.saturating_sub(base.requests);
        entry.errors += c.errors.saturating_sub(base.errors);
        entry.rejected += c.rejected.saturating_sub(base.rejected);
        entry.processing += c.processing.saturating_sub(base.processing);
    }
    groups
        .into_values()
        .map(|mut v| {
            if v.requests > 0 {
                v.error_rate = v.errors as f64 / v.requests as f64;
                v.mean_latency_ms = v.processing.as_secs_f64() * 1000.0 / v.requests as f64;
            }
            v
        })
        .collect()
}

async fn measure(ctx: &Context, scope: &Scope) -> anyhow::Result<Vec<VersionStats>> {
    let nats = ctx.nats().await?;
    let first = snapshot(&nats, scope).await?;
    Ok(match scope.window_s {
        Some(window) => {
            tokio::time::sleep(Duration::from_secs(window)).await;
            let second = snapshot(&nats, scope).await?;
            group(&second, Some(&first))
        }
        None => group(&first, None),
    })
}

fn table(rows: &[VersionStats]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "service",
        "version",
        "instances",
        "requests",
        "errors (5xx)",
        "rejected (4xx)",
        "error rate",
        "mean latency",
    ]);
    for r in rows {
        table.add_row(vec![
            r.service.clone(),
            r.version.clone(),
            r.instances.to_string(),
            r.requests.to_string(),
            r.errors.to_string(),
            r.rejected.to_string(),
            format!("{:.2} %", r.error_rate * 100.0),
            format!("{:.2} ms", r.mean_latency_ms),
        ]);
    }
    table
}

/// Runs a `ymera rollout` subcommand.
pub async fn run(cmd: RolloutCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    match cmd {
        RolloutCommand::Status(args) => status(args, ctx).await,
        RolloutCommand::Check(args) => check(args, ctx).await,
    }
}

async fn status(args: StatusArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let rows = measure(ctx, &args.scope).await?;
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("No services answered $SRV.INFO on {}.", ctx.args.nats_url);
    } else {
        println!("{}", table(&rows));
    }
    Ok(if rows.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The gate's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: &'static str,
    /// Why, one line per failed or undecidable check.
    pub reasons: Vec<String>,
    /// The stable version's figures (summed over services in scope).
    pub stable: Option<VersionStats>,
    /// The canary's.
    pub canary: Option<VersionStats>,
}

/// Sums the groups of `version` (over the services in scope).
fn total(rows: &[VersionStats], version: &str) -> Option<VersionStats> {
    let mut matching = rows.iter().filter(|r| r.version == version).peekable();
    matching.peek()?;
    let mut sum = VersionStats {
        version: version.to_owned(),
        ..VersionStats::default()
    };
    let mut services = Vec::new();
    for r in matching {
        services.push(r.service.clone());
        sum.instances += r.instances;
        sum.requests += r.requests;
        sum.errors += r.errors;
        sum.rejected += r.rejected;
        sum.processing += r.processing;
    }
    sum.service = services.join(",");
    if sum.requests > 0 {
        sum.error_rate = sum.errors as f64 / sum.requests as f64;
        sum.mean_latency_ms = sum.processing.as_secs_f64() * 1000.0 / sum.requests as f64;
    }
    Some(sum)
}

/// Compares the canary's figures with the stable ones under `args`.
pub fn decide(rows: &[VersionStats], args: &CheckArgs) -> Verdict {
    let stable = total(rows, &args.stable);
    let canary = total(rows, &args.canary);
    let mut verdict = Verdict {
        verdict: "pass",
        reasons: Vec::new(),
        stable: stable.clone(),
        canary: canary.clone(),
    };
    let (Some(stable), Some(canary)) = (stable, canary) else {
        verdict.verdict = "inconclusive";
        for (name, v) in [("stable", &args.stable), ("canary", &args.canary)] {
            if total(rows, v).is_none() {
                verdict
                    .reasons
                    .push(format!("no instance of the {name} version {v} answered"));
            }
        }
        return verdict;
    };
    if canary.requests < args.min_requests {
        verdict.verdict = "inconclusive";
        verdict.reasons.push(format!(
            "the canary handled {} requests, fewer than --min-requests {}",
            canary.requests, args.min_requests
        ));
        return verdict;
    }
    let allowed_errors = (stable.error_rate * args.max_error_rate_ratio).max(args.error_rate_floor);
    if canary.error_rate > allowed_errors {
        verdict.verdict = "fail";
        verdict.reasons.push(format!(
            "canary error rate {:.2} % > {:.2} % allowed (stable {:.2} % × {}, floor {:.2} %)",
            canary.error_rate * 100.0,
            allowed_errors * 100.0,
            stable.error_rate * 100.0,
            args.max_error_rate_ratio,
            args.error_rate_floor * 100.0
        ));
    }
    if stable.requests > 0 {
        let allowed_latency = stable.mean_latency_ms * args.max_latency_ratio;
        if canary.mean_latency_ms > allowed_latency {
            verdict.verdict = "fail";
            verdict.reasons.push(format!(
                "canary mean latency {:.2} ms > {:.2} ms allowed (stable {:.2} ms × {})",
                canary.mean_latency_ms,
                allowed_latency,
                stable.mean_latency_ms,
                args.max_latency_ratio
            ));
        }
    }
    verdict
}

async fn check(args: CheckArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.max_error_rate_ratio > 0.0 && args.max_latency_ratio > 0.0,
        "--max-error-rate-ratio and --max-latency-ratio must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.error_rate_floor),
        "--error-rate-floor must be between 0 and 1"
    );
    let rows = measure(ctx, &args.scope).await?;
    let verdict = decide(&rows, &args);
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        let shown: Vec<VersionStats> = rows
            .iter()
            .filter(|r| r.version == args.stable || r.version == args.canary)
            .cloned()
            .collect();
        println!("{}", table(&shown));
        println!(
            "canary {} against stable {}: {}",
            args.canary, args.stable, verdict.verdict
        );
        for reason in &verdict.reasons {
            println!("  - {reason}");
        }
    }
    Ok(match verdict.verdict {
        "pass" => ExitCode::SUCCESS,
        "fail" => ExitCode::from(1),
        _ => ExitCode::from(2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(service: &str, version: &str, requests: u64, errors: u64, ms: u64) -> Counts {
        Counts {
            service: service.into(),
            version: version.into(),
            requests,
            errors,
            rejected: 0,
            processing: Duration::from_millis(ms),
        }
    }

    fn args(stable: &str, canary: &str) -> CheckArgs {
        CheckArgs {
            scope: Scope {
                service: None,
                wait_ms: 500,
                window_s: None,
            },
            stable: stable.into(),
            canary: canary.into(),
            max_error_rate_ratio: 2.0,
            error_rate_floor: 0.01,
            max_latency_ratio: 1.5,
            min_requests: 20,
        }
    }

    #[test]
    fn groups_by_version_and_subtracts_the_first_snapshot() {
        let before = HashMap::from([
            ("a".to_owned(), counts("svc", "1.0.0", 1000, 10, 1000)),
            ("b".to_owned(), counts("svc", "1.0.0", 500, 0, 500)),
        ]);
        let now = HashMap::from([
            ("a".to_owned(), counts("svc", "1.0.0", 1100, 11, 1100)),
            ("b".to_owned(), counts("svc", "1.0.0", 600, 1, 600)),
            ("c".to_owned(), counts("svc", "1.1.0", 100, 50, 500)),
        ]);
        let rows = group(&now, Some(&before));
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].version.as_str(), rows[0].instances), ("1.0.0", 2));
        assert_eq!((rows[0].requests, rows[0].errors), (200, 2));
        assert!((rows[0].error_rate - 0.01).abs() < 1e-9);
        assert!((rows[0].mean_latency_ms - 1.0).abs() < 1e-9);
        assert_eq!((rows[1].requests, rows[1].errors), (100, 50));
        assert!((rows[1].mean_latency_ms - 5.0).abs() < 1e-9);
    }

    #[test]
    fn the_gate_fails_a_worse_canary_and_passes_an_equal_one() {
        let rows = group(
            &HashMap::from([
                ("a".to_owned(), counts("svc", "1.0.0", 1000, 5, 1000)),
                ("b".to_owned(), counts("svc", "1.1.0", 100, 1, 120)),
                ("c".to_owned(), counts("svc", "1.2.0", 100, 30, 100)),
                ("d".to_owned(), counts("svc", "1.3.0", 100, 0, 900)),
                ("e".to_owned(), counts("svc", "1.4.0", 5, 0, 5)),
            ]),
            None,
        );
        assert_eq!(decide(&rows, &args("1.0.0", "1.1.0")).verdict, "pass");
        let failing = decide(&rows, &args("1.0.0", "1.2.0"));
        assert_eq!(failing.verdict, "fail");
        assert!(failing.reasons[0].contains("error rate"), "{failing:?}");
        let slow = decide(&rows, &args("1.0.0", "1.3.0"));
        assert_eq!(slow.verdict, "fail");
        assert!(slow.reasons[0].contains("latency"), "{slow:?}");
        assert_eq!(
            decide(&rows, &args("1.0.0", "1.4.0")).verdict,
            "inconclusive"
        );
        assert_eq!(
            decide(&rows, &args("1.0.0", "9.9.9")).verdict,
            "inconclusive"
        );
        assert!(is_health("svc", "svc.health"));
        assert!(is_health("svc", "svc.health.ABC"));
        assert!(!is_health("svc", "svc.healthy"));
    }
}
