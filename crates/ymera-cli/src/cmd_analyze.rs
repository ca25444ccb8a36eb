//! `ymera analyze`: being written (see issue 6).

use std::process::ExitCode;

use crate::context::Context;

/// Options of `ymera analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {}

/// Runs `ymera analyze`.
pub async fn run(_args: AnalyzeArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("ymera analyze is not available yet")
}
