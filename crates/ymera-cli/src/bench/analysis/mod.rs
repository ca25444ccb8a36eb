//! `ymera bench analysis`: throughput of the code-analysis engine (in this
//! process, one thread and then N threads pulling files from a shared queue)
//! beside lizard 1.24.3 (`python -m lizard`, one process, its default) on the
//! same files in the same run.
//!
//! Corpus: `--corpus DIR…` (walked like `ymera analyze`, .gitignore
//! respected), else the real-code corpus `scripts/compare-lizard` fetches
//! into `$CORPUS` (default `/work/corpus`), else a generated multi-language
//! corpus in a temporary directory. Files are taken per language, balanced by
//! bytes, up to `--max-mb`, so every language counts.
//!
//! Here: the options, [`run`] and the engine's measuring; `corpus` chooses
//! the files, `lizard` times lizard.

mod corpus;
mod lizard;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::ProgressBar;
use serde::Serialize;
use ymera_code_analysis::{Language, Limits, analyze_file};

use self::corpus::{collect, default_corpus, generate_corpus, tempfile_dir};
use self::lizard::{lizard_python, time_lizard};
use crate::bench::{BenchOptions, progress};
use crate::context::Context;

/// The lizard release the metrics follow (and the one timed).
const LIZARD_VERSION: &str = "1.24.3";
/// Target: engine MB/s on one thread over lizard's.
const TARGET_RATIO_ONE_THREAD: f64 = 3.0;
/// Target: two-thread MB/s over one-thread MB/s ("near-linear").
const TARGET_SPEEDUP_TWO_THREADS: f64 = 1.7;

/// Options of `ymera bench analysis`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: BenchOptions,
    /// Corpus directories or files (repeatable). Default: the compare-lizard
    /// corpus in $CORPUS (/work/corpus) when present, else a generated one.
    #[arg(long = "corpus", value_name = "DIR")]
    pub corpus: Vec<PathBuf>,
    /// Thread counts to measure, comma-separated; the first is the reference
    /// for the speed-up.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Timed rounds per thread count (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Timed lizard runs (the median is reported).
    #[arg(long, default_value_t = 1)]
    pub lizard_rounds: usize,
    /// Largest corpus in MB (files taken per language, balanced by bytes).
    #[arg(long, default_value_t = 8.0)]
    pub max_mb: f64,
    /// Python interpreter to run lizard with (default: the workspace's
    /// .venv, created and given lizard 1.24.3 like scripts/compare-lizard).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Measure the engine only.
    #[arg(long)]
    pub no_lizard: bool,
}

#[derive(Debug, Clone)]
struct CorpusFile {
    path: PathBuf,
    language: Language,
    bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
struct CorpusSummary {
    source: String,
    files: usize,
    bytes: u64,
    by_language: BTreeMap<String, (usize, u64)>,
    skipped: usize,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    target: String,
    threads: usize,
    rounds: usize,
    median_s: f64,
    best_s: f64,
    mb_per_s: f64,
    files_per_s: f64,
    functions: u64,
    errors: u64,
    ratio_to_lizard: Option<f64>,
    /// CPU seconds (user + system, all threads; lizard: the child process)
    /// of the median round.
    cpu_s: Option<f64>,
    /// MB per CPU-second: throughput independent of how much of the machine
    /// the scheduler gave us (the machine may be shared).
    mb_per_cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct Verdict {
    target: String,
    value: Option<f64>,
    met: bool,
}

/// Runs the benchmark.
pub async fn run(args: Args, ctx: &Context) -> anyhow::Result<ExitCode> {
    let json = ctx.json();
    tokio::task::spawn_blocking(move || run_blocking(args, json))
        .await
        .context("benchmark thread")?
}

fn run_blocking(args: Args, json: bool) -> anyhow::Result<ExitCode> {
    if args.threads.is_empty() || args.threads.iter().any(|&t| t == 0 || t > 256) {
        bail!("--threads takes counts between 1 and 256");
    }
    if !(args.max_mb > 0.0 && args.max_mb <= 1024.0) {
        bail!("--max-mb must be in (0, 1024]");
    }
    let rounds = args.rounds.clamp(1, 100);
    let load_before = load_average();
    // Keeps a generated corpus alive for the whole run.
    let mut _generated: Option<tempfile_dir::TempDir> = None;
    let (source, roots) = if args.corpus.is_empty() {
        match default_corpus() {
            Some(found) => found,
            None => {
                let dir = generate_corpus()?;
                let path = dir.path().to_path_buf();
                _generated = Some(dir);
                ("generated".to_owned(), vec![path])
            }
        }
    } else {
        (
            args.corpus
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            args.corpus.clone(),
        )
    };
    let (files, summary) = collect(&source, &roots, (args.max_mb * 1e6) as u64)?;
    if files.is_empty() {
        bail!("no Python, JavaScript, Java, Go or Rust files under {source}");
    }
    if !json {
        eprintln!(
            "corpus: {} files, {:.2} MB ({}) from {}",
            summary.files,
            summary.bytes as f64 / 1e6,
            summary
                .by_language
                .iter()
                .map(|(l, (n, b))| format!("{l} {n} files {:.2} MB", *b as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(", "),
            summary.source
        );
    }

    // The workers take files largest first, so no thread is left with one big
    // file at the end while the others idle (on 2 threads a 0.5 MB file last
    // would cap the speed-up near 1.8×).
    let mut queue = files.clone();
    queue.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));

    // Warm-up: page cache, allocator, grammar tables.
    let bar = progress(files.len() as u64, "warm-up (1 thread, untimed)");
    let _ = analyse_all(&queue, 1, &bar);
    bar.finish_and_clear();

    let mut results = Vec::new();
    for &threads in &args.threads {
        let label = format!("ymera-code-analysis, {threads} thread(s)");
        let bar = progress(files.len() as u64 * rounds as u64, &label);
        let mut times = Vec::with_capacity(rounds);
        let mut cpu = Vec::with_capacity(rounds);
        let (mut functions, mut errors) = (0, 0);
        for _ in 0..rounds {
            let cpu_before = cpu_seconds(false);
            let started = Instant::now();
            let (f, e) = analyse_all(&queue, threads, &bar);
            times.push(started.elapsed());
            cpu.push(cpu_before.zip(cpu_seconds(false)).map(|(a, b)| b - a));
            (functions, errors) = (f, e);
        }
        bar.finish_and_clear();
        results.push(measured(
            label, threads, &times, &cpu, &summary, functions, errors,
        ));
    }

    let lizard = if args.no_lizard {
        None
    } else {
        let python = match &args.python {
            Some(p) => p.clone(),
            None => lizard_python(json)?,
        };
        Some(time_lizard(&python, &files, &summary, args.lizard_rounds)?)
    };
    if let Some(lizard) = &lizard {
        for r in &mut results {
            r.ratio_to_lizard = (lizard.mb_per_s > 0.0).then(|| r.mb_per_s / lizard.mb_per_s);
        }
    }
    let load_after = load_average();

    let one = results.iter().find(|r| r.threads == 1);
    let two = results.iter().find(|r| r.threads == 2);
    let ratio_one = one.and_then(|r| r.ratio_to_lizard);
    let ratio_two = two.and_then(|r| r.ratio_to_lizard);
    let speedup = match (one, two) {
        (Some(a), Some(b)) if a.mb_per_s > 0.0 => Some(b.mb_per_s / a.mb_per_s),
        _ => None,
    };
    let per_cpu_vs_lizard = match (
        one.and_then(|r| r.mb_per_cpu_s),
        lizard.as_ref().and_then(|l| l.mb_per_cpu_s),
    ) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let per_cpu_two_vs_one = match (
        one.and_then(|r| r.mb_per_cpu_s),
        two.and_then(|r| r.mb_per_cpu_s),
    ) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    };
    let cpu_parallelism = two.and_then(|r| r.cpu_s.map(|c| c / r.median_s));
    let verdicts = vec![
        Verdict {
            target: format!("one thread ≥ {TARGET_RATIO_ONE_THREAD}× lizard (MB/s)"),
            value: ratio_one,
            met: ratio_one.is_some_and(|r| r >= TARGET_RATIO_ONE_THREAD),
        },
        Verdict {
            target: format!("two threads ≥ {TARGET_SPEEDUP_TWO_THREADS}× one thread (near-linear)"),
            value: speedup,
            met: speedup.is_some_and(|s| s >= TARGET_SPEEDUP_TWO_THREADS),
        },
    ];

    if json {
        let out = serde_json::json!({
            "bench": "analysis",
            "corpus": summary,
            "results": results,
            "lizard": lizard,
            "ratio_to_lizard_one_thread": ratio_one,
            "ratio_to_lizard_two_threads": ratio_two,
            "two_thread_speedup": speedup,
            "per_cpu_second_vs_lizard": per_cpu_vs_lizard,
            "per_cpu_second_two_threads_vs_one": per_cpu_two_vs_one,
            "two_thread_cpu_parallelism": cpu_parallelism,
            "targets": verdicts,
            "load_average_before": load_before,
            "load_average_after": load_after,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "target",
        "threads",
        "rounds",
        "median",
        "best",
        "MB/s",
        "files/s",
        "functions",
        "errors",
        "vs lizard",
        "CPU s",
        "MB/CPU-s",
    ]);
    for r in lizard.iter().chain(results.iter()) {
        table.add_row(vec![
            r.target.clone(),
            r.threads.to_string(),
            r.rounds.to_string(),
            format!("{:.3} s", r.median_s),
            format!("{:.3} s", r.best_s),
            format!("{:.2}", r.mb_per_s),
            format!("{:.0}", r.files_per_s),
            r.functions.to_string(),
            r.errors.to_string(),
            r.ratio_to_lizard
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
            r.cpu_s
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
            r.mb_per_cpu_s
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
        ]);
    }
    println!("{table}");
    let show = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}×"));
    println!(
        "vs lizard: one thread {}, two threads {}; two-thread speed-up {}",
        show(ratio_one),
        show(ratio_two),
        show(speedup)
    );
    println!(
        "per CPU-second: one thread {} lizard; two threads do {} of one thread's work per CPU-second; \
         the two-thread run got {} CPUs on average (below 2 = the machine was shared)",
        show(per_cpu_vs_lizard),
        show(per_cpu_two_vs_one),
        cpu_parallelism.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.2}"))
    );
    for v in &verdicts {
        println!(
            "target {}: {} — {}",
            v.target,
            show(v.value),
            if v.met { "met" } else { "NOT met" }
        );
    }
    println!(
        "load average (1/5/15 min): before {}, after {}",
        load_before.as_deref().unwrap_or("n/a"),
        load_after.as_deref().unwrap_or("n/a")
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads and analyses every file once with `threads` workers pulling from a
/// shared index; returns (functions found, files that failed).
fn analyse_all(files: &[CorpusFile], threads: usize, bar: &ProgressBar) -> (u64, u64) {
    let next = AtomicUsize::new(0);
    let limits = Limits::default();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let (mut functions, mut errors) = (0u64, 0u64);
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(index) else {
                            break;
                        };
                        let outcome = std::fs::read(&file.path).ok().and_then(|bytes| {
                            let text = String::from_utf8_lossy(&bytes);
                            let path = file.path.to_string_lossy();
                            analyze_file(&path, file.language, &text, &limits).ok()
                        });
                        match outcome {
                            Some(report) => functions += report.functions.len() as u64,
                            None => errors += 1,
                        }
                        bar.inc(1);
                    }
                    (functions, errors)
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().ok())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

fn measured(
    target: String,
    threads: usize,
    times: &[Duration],
    cpu: &[Option<f64>],
    summary: &CorpusSummary,
    functions: u64,
    errors: u64,
) -> Measured {
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|a, b| times[*a].cmp(&times[*b]));
    let secs: Vec<f64> = order.iter().map(|i| times[*i].as_secs_f64()).collect();
    let median_index = order.get(order.len() / 2).copied();
    let median = secs.get(secs.len() / 2).copied().unwrap_or(0.0).max(1e-9);
    let best = secs.first().copied().unwrap_or(0.0);
    let cpu_s = median_index
        .and_then(|i| cpu.get(i).copied().flatten())
        .filter(|c| *c > 0.0);
    Measured {
        target,
        threads,
        rounds: secs.len(),
        median_s: median,
        best_s: best,
        mb_per_s: summary.bytes as f64 / 1e6 / median,
        files_per_s: summary.files as f64 / median,
        functions,
        errors,
        ratio_to_lizard: None,
        cpu_s,
        mb_per_cpu_s: cpu_s.map(|c| summary.bytes as f64 / 1e6 / c),
    }
}

/// CPU seconds (user + system) of this process's threads, or of its waited-for
/// children, from /proc/self/stat (Linux; clock ticks at the usual 100 Hz).
fn cpu_seconds(children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let (user, system) = if children { (13, 14) } else { (11, 12) };
    let ticks = fields.get(user)?.parse::<u64>().ok()? + fields.get(system)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// /proc/loadavg's first three fields (Linux), for the report.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}
