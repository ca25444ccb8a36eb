//! CLI commands of this area; being written (see the issue). Until then the
//! command group answers with a clear message.

use std::process::ExitCode;

use crate::context::Context;

/// Commands of this area.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {}

/// Runs one command.
pub async fn run(command: ConfigCommand, _ctx: &Context) -> anyhow::Result<ExitCode> {
    match command {}
}
