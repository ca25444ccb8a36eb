//! `ymera bench security` (being written).

use std::process::ExitCode;

use crate::bench::BenchOptions;
use crate::context::Context;

/// Options of `ymera bench security`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: BenchOptions,
}

/// Runs the benchmark.
pub async fn run(_args: Args, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ymera bench security is not written yet")
}
