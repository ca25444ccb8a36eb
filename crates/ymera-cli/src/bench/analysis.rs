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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use ymera_code_analysis::{Language, Limits, analyze_file};

use crate::bench::BenchOptions;
use crate::context::Context;

/// The lizard release the metrics follow (and the one timed).
const LIZARD_VERSION: &str = "1.24.3";
/// Target: engine MB/s on one thread over lizard's.
const TARGET_RATIO_ONE_THREAD: f64 = 3.0;
/// Target: two-thread MB/s over one-thread MB/s ("near-linear").
const TARGET_SPEEDUP_TWO_THREADS: f64 = 1.7;
/// Most files taken into the corpus.
const MAX_CORPUS_FILES: usize = 100_000;

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

fn progress(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:44} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
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

/// Times `python -m lizard -f LIST` (single process, its default; the
/// report goes to /dev/null).
fn time_lizard(
    python: &Path,
    files: &[CorpusFile],
    summary: &CorpusSummary,
    rounds: usize,
) -> anyhow::Result<Measured> {
    let list = tempfile_path("lizard-files.txt");
    let mut text = String::new();
    for f in files {
        text.push_str(&f.path.to_string_lossy());
        text.push('\n');
    }
    std::fs::write(&list, text).with_context(|| format!("writing {}", list.display()))?;
    let rounds = rounds.clamp(1, 20);
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!(
        "lizard {LIZARD_VERSION} (python -m lizard, 1 process) on {} files",
        files.len()
    ));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut outcome = Ok(());
    for _ in 0..rounds {
        let cpu_before = cpu_seconds(true);
        let started = Instant::now();
        let out = Command::new(python)
            .args(["-m", "lizard", "-f"])
            .arg(&list)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let elapsed = started.elapsed();
        match out {
            // lizard exits 1 when it printed warnings (CCN over 15, …).
            Ok(o) if o.status.code().is_some_and(|c| c == 0 || c == 1) => {
                times.push(elapsed);
                cpu.push(cpu_before.zip(cpu_seconds(true)).map(|(a, b)| b - a));
            }
            Ok(o) => {
                outcome = Err(anyhow::anyhow!(
                    "lizard failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                break;
            }
            Err(e) => {
                outcome = Err(anyhow::anyhow!("cannot run {}: {e}", python.display()));
                break;
            }
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_file(&list);
    outcome?;
    Ok(measured(
        format!("lizard {LIZARD_VERSION} (python -m lizard)"),
        1,
        &times,
        &cpu,
        summary,
        0,
        0,
    ))
}

fn tempfile_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ymera-bench-{}-{name}", std::process::id()))
}

/// The workspace root (the directory holding scripts/compare-lizard), from
/// the current directory or the binary's location.
fn workspace_root() -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    starts.into_iter().find_map(|start| {
        start
            .ancestors()
            .find(|d| d.join("scripts/compare-lizard").is_file())
            .map(Path::to_path_buf)
    })
}

/// The Python with lizard 1.24.3: the workspace .venv (as scripts/compare-lizard
/// makes it), created and provisioned from PyPI when missing.
fn lizard_python(quiet: bool) -> anyhow::Result<PathBuf> {
    let venv = match workspace_root() {
        Some(root) => root.join(".venv"),
        None => {
            let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
            home.join(".cache/ymera/venv")
        }
    };
    let python = venv.join("bin/python");
    let check = format!("import lizard, sys; sys.exit(lizard.version != '{LIZARD_VERSION}')");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", &check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && ready(&python) {
        return Ok(python);
    }
    if !quiet {
        eprintln!(
            "installing lizard=={LIZARD_VERSION} into {}",
            venv.display()
        );
    }
    if !python.is_file() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .context("running python3 -m venv (is python3 installed?)")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", &format!("lizard=={LIZARD_VERSION}")])
        .status()
        .context("running pip")?;
    if !status.success() || !ready(&python) {
        bail!("could not install lizard=={LIZARD_VERSION}; pass --python or --no-lizard");
    }
    Ok(python)
}

/// The corpus scripts/compare-lizard fetches (same file selection), if present.
fn default_corpus() -> Option<(String, Vec<PathBuf>)> {
    let base = PathBuf::from(std::env::var_os("CORPUS").unwrap_or_else(|| "/work/corpus".into()));
    let mut roots = Vec::new();
    let glob_dirs = |dir: &Path, sub: &str| -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(sub))
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        out
    };
    // Python: sdists of requests and flask (src/ and tests/).
    roots.extend(glob_dirs(&base.join("py"), "src"));
    roots.extend(glob_dirs(&base.join("py"), "tests"));
    // JavaScript: lodash from npm.
    roots.push(base.join("js/package"));
    // Go: Debian's golang source, the packages compare-lizard uses.
    for src in glob_dirs(&base.join("x/go/usr/share"), "src") {
        for pkg in [
            "net/http",
            "strings",
            "encoding/json",
            "fmt",
            "bufio",
            "sort",
            "time",
            "os",
            "go/parser",
            "regexp",
        ] {
            roots.push(src.join(pkg));
        }
    }
    // Java: Debian's openjdk source.
    for pkg in ["util", "io", "lang"] {
        roots.push(base.join("x/javasrc/java.base/java").join(pkg));
    }
    roots.retain(|p| p.exists());
    // Rust: crate sources in the cargo registry.
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        for registry in std::fs::read_dir(home.join("registry/src"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for krate in [
                "serde_json-1",
                "anyhow-1",
                "bytes-1",
                "chrono-0.4",
                "itoa-1",
                "uuid-1",
            ] {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(registry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(krate))
                    .map(|e| e.path().join("src"))
                    .filter(|p| p.is_dir())
                    .collect();
                dirs.sort();
                roots.extend(dirs.pop());
            }
        }
    }
    let has_non_rust = roots.iter().any(|p| p.starts_with(&base));
    has_non_rust.then(|| {
        (
            format!("{} (scripts/compare-lizard corpus)", base.display()),
            roots,
        )
    })
}

/// Walks the roots; takes files per language (sorted paths, balanced by
/// bytes) up to `max_bytes`. Minified JavaScript and files over 1 MiB or not UTF-8 are
/// left out (the engine refuses the latter two).
fn collect(
    source: &str,
    roots: &[PathBuf],
    max_bytes: u64,
) -> anyhow::Result<(Vec<CorpusFile>, CorpusSummary)> {
    let Some((first, rest)) = roots.split_first() else {
        bail!("no corpus");
    };
    let mut walk = ignore::WalkBuilder::new(first);
    for root in rest {
        walk.add(root);
    }
    walk.require_git(false).sort_by_file_path(Path::cmp);
    let mut per_language: BTreeMap<Language, Vec<CorpusFile>> = BTreeMap::new();
    let mut skipped = 0;
    let mut seen = 0usize;
    for entry in walk.build() {
        let entry = entry.context("walking the corpus")?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.path().to_string_lossy().into_owned();
        let Some(language) = Language::from_path(&name) else {
            continue;
        };
        seen += 1;
        if seen > MAX_CORPUS_FILES {
            bail!("more than {MAX_CORPUS_FILES} source files; pass a smaller --corpus");
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let utf8 = std::fs::read(entry.path()).is_ok_and(|b| std::str::from_utf8(&b).is_ok());
        if name.ends_with(".min.js") || bytes > ymera_code_analysis::MAX_FILE_BYTES as u64 || !utf8
        {
            skipped += 1;
            continue;
        }
        per_language.entry(language).or_default().push(CorpusFile {
            path: entry.path().to_path_buf(),
            language,
            bytes,
        });
    }
    // Balanced by bytes (next file from the language with the fewest bytes
    // taken so far) so a cap keeps every language in proportion.
    let mut queues: Vec<(u64, std::collections::VecDeque<CorpusFile>)> = per_language
        .into_values()
        .map(|files| (0, files.into()))
        .collect();
    let mut files = Vec::new();
    let mut total = 0u64;
    while total < max_bytes {
        let Some((taken, queue)) = queues
            .iter_mut()
            .filter(|(_, q)| !q.is_empty())
            .min_by_key(|(taken, _)| *taken)
        else {
            break;
        };
        let Some(file) = queue.pop_front() else {
            break;
        };
        *taken += file.bytes;
        total += file.bytes;
        files.push(file);
    }
    let mut by_language = BTreeMap::new();
    for f in &files {
        let e: &mut (usize, u64) = by_language.entry(f.language.name().to_owned()).or_default();
        e.0 += 1;
        e.1 += f.bytes;
    }
    let summary = CorpusSummary {
        source: source.to_owned(),
        files: files.len(),
        bytes: total,
        by_language,
        skipped,
    };
    Ok((files, summary))
}

/// A small generated multi-language corpus (used when no real corpus exists).
fn generate_corpus() -> anyhow::Result<tempfile_dir::TempDir> {
    let dir = tempfile_dir::TempDir::new()?;
    for i in 0..40 {
        let mut py = String::from("import os\n\n\nclass Store:\n");
        let mut js = String::from("'use strict';\n\n");
        let mut java = format!("package gen;\n\npublic class Gen{i} {{\n");
        let mut go = String::from("package gen\n\nimport \"fmt\"\n\n");
        let mut rs = String::from("use std::collections::HashMap;\n\n");
        for j in 0..25 {
            py.push_str(&format!(
                "    def method_{j}(self, items, limit={j}):\n        total = 0\n        for item in items:\n            if item > limit and item % 2 == 0:\n                total += item\n            elif item < 0 or item == {j}:\n                total -= 1\n        return os.path.join(str(total), 'x')\n\n"
            ));
            js.push_str(&format!(
                "function f{j}(items, limit) {{\n  let total = 0;\n  for (const item of items) {{\n    if (item > limit && item % 2 === 0) {{\n      total += item;\n    }} else if (item < 0 || item === {j}) {{\n      total -= 1;\n    }}\n  }}\n  return items.map((x) => x * {j}).filter((x) => x > total);\n}}\n\n"
            ));
            java.push_str(&format!(
                "    public int m{j}(int[] items, int limit) {{\n        int total = 0;\n        for (int item : items) {{\n            if (item > limit && item % 2 == 0) {{\n                total += item;\n            }} else if (item < 0 || item == {j}) {{\n                total -= 1;\n            }}\n        }}\n        return total;\n    }}\n\n"
            ));
            go.push_str(&format!(
                "func F{j}(items []int, limit int) (int, error) {{\n\ttotal := 0\n\tfor _, item := range items {{\n\t\tif item > limit && item%2 == 0 {{\n\t\t\ttotal += item\n\t\t}} else if item < 0 || item == {j} {{\n\t\t\ttotal--\n\t\t}}\n\t}}\n\tif total < 0 {{\n\t\treturn 0, fmt.Errorf(\"negative %d\", total)\n\t}}\n\treturn total, nil\n}}\n\n"
            ));
            rs.push_str(&format!(
                "pub fn f{j}(items: &[i64], limit: i64, seen: &mut HashMap<i64, u32>) -> i64 {{\n    let mut total = 0;\n    for &item in items {{\n        if item > limit && item % 2 == 0 {{\n            total += item;\n        }} else if item < 0 || item == {j} {{\n            total -= 1;\n        }}\n        *seen.entry(item).or_insert(0) += 1;\n    }}\n    match total {{\n        0 => 1,\n        n if n < 0 => -n,\n        n => n,\n    }}\n}}\n\n"
            ));
        }
        java.push_str("}\n");
        for (ext, text) in [
            ("py", py),
            ("js", js),
            ("java", java),
            ("go", go),
            ("rs", rs),
        ] {
            std::fs::write(dir.path().join(format!("gen{i:02}.{ext}")), text)?;
        }
    }
    Ok(dir)
}

/// A temporary directory removed on drop (no extra dependency for the CLI).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<TempDir> {
            let path = std::env::temp_dir().join(format!(
                "ymera-bench-analysis-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ));
            std::fs::create_dir_all(&path)?;
            Ok(TempDir(path))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
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
