//! CLI commands of this area; being written (see the issue). Until then the
//! command group answers with a clear message.

use std::process::ExitCode;

use crate::context::Context;

/// Commands of this area.
#[derive(Debug, clap::Subcommand)]
pub enum SecurityCommand {}

/// Runs one command.
pub async fn run(command: SecurityCommand, _ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {}
}
