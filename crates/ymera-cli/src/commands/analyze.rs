//! `ymera analyze PATH…`: analyse source trees with the code-analysis engine.
//!
//! Walks the paths (respecting .gitignore, .ignore and hidden-file rules),
//! keeps the files of a supported language, analyses them through the
//! `code-analysis.analyze` service in batches under the request limit (or
//! in-process with `--local`), and prints a summary table and the findings, or
//! JSON / SARIF / Markdown. With `--fail-on SEVERITY` the exit code is 1 when a
//! finding is at or above that severity, so it gates CI; 2 means the analysis
//! could not run (unreadable path, service unreachable).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use comfy_table::{Cell, Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use ymera_code_analysis::{
    FileReport, Language, Limits, MAX_FILE_BYTES, MAX_REQUEST_BYTES, Report, Severity, SourceFile,
};

use crate::context::Context;

/// Most files one invocation analyses.
const MAX_FILES: usize = 100_000;
/// Default batch size: the services' default MAX_MESSAGE_SIZE (1 MiB).
const DEFAULT_BATCH_BYTES: usize = 1024 * 1024;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Summary table and findings, for people.
    Text,
    /// The JSON report (DESIGN §4 field names).
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
    /// The Markdown "Code Analysis Report".
    Markdown,
}

/// Severity threshold of `--fail-on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    Low,
    Medium,
    High,
    Critical,
}

impl FailOn {
    fn severity(self) -> Severity {
        match self {
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

/// Options of `ymera analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// Files or directories to analyse (directories are walked, honouring .gitignore).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format (`--json` implies json).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Exit with code 1 when any finding is at or above this severity.
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
    /// Run the engine in this process instead of calling the code-analysis service.
    #[arg(long)]
    pub local: bool,
    /// Largest request sent to the service, in bytes (≤ the service's MAX_MESSAGE_SIZE).
    #[arg(long, default_value_t = DEFAULT_BATCH_BYTES)]
    pub batch_bytes: usize,
}

/// A file that was found but not analysed, and why.
struct Skipped {
    path: String,
    reason: String,
}

/// Exit code when the analysis itself could not run (1 means findings at or
/// above `--fail-on`, so CI can tell the two apart).
const EXIT_ERROR: u8 = 2;

/// Runs `ymera analyze`: exit 0 clean, 1 findings at or above `--fail-on`,
/// 2 the analysis could not run.
pub async fn run(args: AnalyzeArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    match analyze(args, ctx).await {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("ymera: {err:#}");
            Ok(ExitCode::from(EXIT_ERROR))
        }
    }
}

async fn analyze(args: AnalyzeArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let format = if ctx.json() {
        OutputFormat::Json
    } else {
        args.format
    };
    let (sources, mut skipped) = collect(&args.paths)?;
    let progress = progress_bar(sources.len());
    let mut files = if args.local {
        analyze_local(sources, &progress, &mut skipped).await?
    } else {
        let budget = args.batch_bytes.clamp(64 * 1024, MAX_REQUEST_BYTES);
        analyze_remote(ctx, sources, budget, &progress, &mut skipped).await?
    };
    progress.finish_and_clear();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let report = Report::new(files);
    print_report(&report, &skipped, format)?;
    let failing = args.fail_on.map(FailOn::severity).is_some_and(|threshold| {
        report
            .files
            .iter()
            .flat_map(|f| &f.findings)
            .any(|f| f.severity >= threshold)
    });
    Ok(if failing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Walks the paths and reads every file of a supported language.
fn collect(paths: &[PathBuf]) -> anyhow::Result<(Vec<SourceFile>, Vec<Skipped>)> {
    let Some((first, rest)) = paths.split_first() else {
        bail!("no paths given");
    };
    let mut walk = ignore::WalkBuilder::new(first);
    for path in rest {
        walk.add(path);
    }
    // .gitignore counts even outside a git repository (a fresh checkout, a tarball).
    walk.require_git(false).sort_by_file_path(Path::cmp);
    let mut sources = Vec::new();
    let mut skipped = Vec::new();
    for entry in walk.build() {
        let entry = entry.context("walking the paths")?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let display = path.display().to_string();
        if Language::from_path(&display).is_none() {
            continue;
        }
        if sources.len() >= MAX_FILES {
            bail!("more than {MAX_FILES} source files; analyse a smaller tree");
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if size > MAX_FILE_BYTES as u64 {
            skipped.push(Skipped {
                path: display,
                reason: format!("{size} bytes, over the {MAX_FILE_BYTES}-byte limit"),
            });
            continue;
        }
        match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(content) => sources.push(SourceFile {
                    path: display,
                    language: None,
                    content,
                }),
                Err(_) => skipped.push(Skipped {
                    path: display,
                    reason: "not UTF-8".to_owned(),
                }),
            },
            Err(err) => skipped.push(Skipped {
                path: display,
                reason: err.to_string(),
            }),
        }
    }
    Ok((sources, skipped))
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} analysing {pos}/{len} files {wide_bar} {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

/// Analyses in this process, on the blocking pool.
async fn analyze_local(
    sources: Vec<SourceFile>,
    progress: &ProgressBar,
    skipped: &mut Vec<Skipped>,
) -> anyhow::Result<Vec<FileReport>> {
    let bar = progress.clone();
    let results = tokio::task::spawn_blocking(move || {
        let limits = Limits::default();
        sources
            .into_iter()
            .map(|source| {
                let result = match Language::from_path(&source.path) {
                    Some(language) => ymera_code_analysis::analyze_file(
                        &source.path,
                        language,
                        &source.content,
                        &limits,
                    )
                    .map_err(|e| e.to_string()),
                    None => Err("unsupported language".to_owned()),
                };
                bar.inc(1);
                (source.path, result)
            })
            .collect::<Vec<_>>()
    })
    .await
    .context("the analysis task failed")?;
    let mut files = Vec::with_capacity(results.len());
    for (path, result) in results {
        match result {
            Ok(file) => files.push(file),
            Err(reason) => skipped.push(Skipped { path, reason }),
        }
    }
    Ok(files)
}

/// The size of a file in a request body.
fn wire_size(file: &SourceFile) -> usize {
    serde_json::to_vec(file).map_or(file.content.len() * 6, |v| v.len()) + 1
}

/// Splits files into batches whose request body stays under `budget` bytes
/// (a file larger than the budget travels alone).
fn batches(sources: Vec<SourceFile>, budget: usize) -> Vec<Vec<SourceFile>> {
    const ENVELOPE: usize = 64;
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut size = ENVELOPE;
    for file in sources {
        let n = wire_size(&file);
        if !current.is_empty() && size + n > budget {
            batches.push(std::mem::take(&mut current));
            size = ENVELOPE;
        }
        size += n;
        current.push(file);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Analyses through `code-analysis.analyze`; a batch the service refuses as
/// too large is split in half and retried.
async fn analyze_remote(
    ctx: &Context,
    sources: Vec<SourceFile>,
    budget: usize,
    progress: &ProgressBar,
    skipped: &mut Vec<Skipped>,
) -> anyhow::Result<Vec<FileReport>> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    let client = ctx.client().await?;
    let mut queue = batches(sources, budget);
    queue.reverse();
    let mut files = Vec::new();
    while let Some(batch) = queue.pop() {
        let count = batch.len() as u64;
        let body = json!({"files": batch, "format": "json"});
        match client
            .request::<_, Report>("code-analysis.analyze", &body)
            .await
        {
            Ok(report) => {
                files.extend(report.files);
                progress.inc(count);
            }
            Err(err) if err.code() == 413 && batch.len() > 1 => {
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                queue.push(second);
                queue.push(first);
            }
            Err(err) if batch.len() == 1 && matches!(err.code(), 413 | 422) => {
                progress.inc(1);
                skipped.extend(batch.into_iter().map(|f| Skipped {
                    path: f.path,
                    reason: err.message.clone(),
                }));
            }
            Err(err) if matches!(err.code(), 413 | 422) => {
                // One file spoils the batch: analyse its files one by one.
                queue.extend(batch.into_iter().rev().map(|f| vec![f]));
            }
            Err(err) => {
                return Err(anyhow::anyhow!("code-analysis.analyze: {err}")
                    .context("is the code-analysis service running? (or use --local)"));
            }
        }
    }
    Ok(files)
}

fn print_report(report: &Report, skipped: &[Skipped], format: OutputFormat) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(&report.to_json())? + "\n",
        OutputFormat::Sarif => serde_json::to_string_pretty(&report.to_sarif())? + "\n",
        OutputFormat::Markdown => report.to_markdown() + "\n",
        OutputFormat::Text => render_text(report),
    };
    // A closed pipe (`ymera analyze … | head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(err).context("writing the report");
        }
        _ => {}
    }
    for skip in skipped {
        eprintln!("skipped {}: {}", skip.path, skip.reason);
    }
    Ok(())
}

fn count(file: &FileReport, severity: Severity) -> usize {
    file.findings
        .iter()
        .filter(|f| f.severity == severity)
        .count()
}

fn render_text(report: &Report) -> String {
    let mut out = String::new();
    if report.files.is_empty() {
        return "No source files of a supported language (python, javascript, java, go, rust).\n"
            .to_owned();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "file",
        "language",
        "functions",
        "max CCN",
        "critical",
        "high",
        "medium",
        "low",
    ]);
    for file in &report.files {
        table.add_row(vec![
            Cell::new(&file.path),
            Cell::new(file.language.name()),
            Cell::new(file.summary.function_count),
            Cell::new(file.summary.max_ccn),
            Cell::new(count(file, Severity::Critical)),
            Cell::new(count(file, Severity::High)),
            Cell::new(count(file, Severity::Medium)),
            Cell::new(count(file, Severity::Low)),
        ]);
    }
    let _ = writeln!(out, "{table}");
    let mut findings: Vec<(&str, &ymera_code_analysis::Finding)> = report
        .files
        .iter()
        .flat_map(|f| f.findings.iter().map(move |x| (f.path.as_str(), x)))
        .collect();
    findings.sort_by(|a, b| {
        b.1.severity
            .cmp(&a.1.severity)
            .then(a.0.cmp(b.0))
            .then(a.1.line.cmp(&b.1.line))
    });
    if !findings.is_empty() {
        out.push('\n');
        for (path, finding) in findings {
            let _ = writeln!(
                out,
                "{path}:{}:{}  {:<8} {:<6} {}",
                finding.line,
                finding.column,
                finding.severity.name(),
                finding.rule_id,
                finding.message
            );
        }
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} files, {} functions, max CCN {}, {} findings ({} critical, {} high, {} medium, {} low)",
        s.file_count,
        s.function_count,
        s.max_ccn,
        s.finding_count,
        s.findings_by_severity.critical,
        s.findings_by_severity.high,
        s.findings_by_severity.medium,
        s.findings_by_severity.low
    );
    out
}
