//! `ymera`: client commands, the local stack (`ymera up`) and benchmarks.

mod backup;
mod bench;
mod chaos;
mod commands;
mod context;
mod private_stack;
mod stack;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{agents, analyze, comm, config, discovery, draft, rollout, security};
use crate::context::{Context, GlobalArgs};

#[derive(Debug, Parser)]
#[command(
    name = "ymera",
    version,
    about = "Ymera: cooperating agent microservices over NATS"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Discover services ($SRV.PING) and show each instance's health.
    Health(discovery::HealthArgs),
    /// Show the NATS Services API INFO and STATS of every instance.
    Services(discovery::ServicesArgs),
    /// List the live agent cards: skills, liveness, backlog, deliveries, reported metrics.
    Agents(agents::AgentsArgs),
    /// Canary gate: instances grouped by version ($SRV.INFO/$SRV.STATS), and
    /// `check` exiting non-zero when the canary is worse than the stable version.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Apply the platform's PostgreSQL migrations.
    Migrate(stack::MigrateArgs),
    /// Start the local stack: nats-server, PostgreSQL, Redis and every service.
    Up(stack::UpArgs),
    /// Stop a local stack started with `ymera up --detach`.
    Down(stack::DownArgs),
    /// Fault-injection suite on a private 3-node JetStream cluster with 2 replicas of
    /// every service (DESIGN §11); exits non-zero on any loss.
    Chaos(chaos::ChaosArgs),
    /// Backups: create, verify and restore archives of the whole platform (DESIGN §10).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Benchmarks (latency histograms and throughput beside a raw baseline).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Analyse source files for complexity and security, performance and smell findings.
    Analyze(analyze::AnalyzeArgs),
    /// Configuration commands.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Drafting commands.
    #[command(subcommand)]
    Draft(draft::DraftCommand),
    #[command(flatten)]
    Comm(comm::CommCommand),
    #[command(flatten)]
    Security(security::SecurityCommand),
}

/// `ymera … | head` closes stdout early: std's `print!` then panics with "failed printing
/// to stdout: Broken pipe". Such a reader wanted no more output, so the command ends there,
/// quietly and with 0, as `ymera analyze` does for its report; every other panic keeps the
/// default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// mimalloc: the benchmarks' clients (thousands of sockets, many small
/// buffers) should not measure glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let ctx = Context { args: cli.global };
    let result = match cli.command {
        Command::Health(args) => discovery::health(args, &ctx).await,
        Command::Services(args) => discovery::services(args, &ctx).await,
        Command::Agents(args) => agents::run(args, &ctx).await,
        Command::Rollout(cmd) => rollout::run(cmd, &ctx).await,
        Command::Migrate(args) => stack::migrate(args).await,
        Command::Up(args) => stack::up(args).await,
        Command::Down(args) => stack::down(args).await,
        Command::Backup(cmd) => backup::run(cmd, &ctx).await,
        Command::Bench(cmd) => bench::run(cmd, &ctx).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Analyze(args) => analyze::run(args, &ctx).await,
        Command::Config(cmd) => config::run(cmd, &ctx).await,
        Command::Draft(cmd) => draft::run(cmd, &ctx).await,
        Command::Comm(cmd) => comm::run(cmd, &ctx).await,
        Command::Security(cmd) => security::run(cmd, &ctx).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("ymera: {err:#}");
            ExitCode::FAILURE
        }
    }
}
