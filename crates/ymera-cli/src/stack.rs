//! The local stack: `ymera up` starts nats-server (JetStream), PostgreSQL and
//! Redis under `.ymera/`, applies migrations, starts every service binary of
//! the workspace and restarts a crashed one with backoff; Ctrl-C (or
//! `ymera down`) stops everything cleanly. Every process is started by
//! ymera-devstack (`Stack`: kept directories, fixed ports, service logs under
//! `<dir>/logs/`) under a parent-death signal, so a `kill -9` of `ymera up`
//! takes the servers and services with it.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use ymera_devstack::{
    Backoff, DevstackError, ServiceOptions, Stack, StackInfo, StackOptions, service_binary,
};

use crate::context::state_dir;

/// The service binaries `ymera up` looks for next to the `ymera` binary.
pub const SERVICES: [&str; 6] = [
    "communication",
    "config",
    "drafting",
    "code-analysis",
    "security",
    "gateway",
];

/// The gateway's public HTTP port under `ymera up` (replica r: + r).
pub const GATEWAY_PORT: u16 = 8088;

/// Options of `ymera up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// State directory (data, logs, admin key).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// NATS client port.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// NATS monitoring port.
    #[arg(long, default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// Run a JetStream cluster of this many nats-servers on loopback (node i on
    /// `--nats-port + i`, `--nats-monitor-port + i`, `--nats-route-port + i`) instead of one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=7))]
    pub cluster: u16,
    /// First route (cluster) port of the JetStream cluster.
    #[arg(long, default_value_t = 6222)]
    pub nats_route_port: u16,
    /// `sync_interval: always` on the cluster's servers (fsync before every acknowledgement).
    #[arg(long)]
    pub nats_sync_always: bool,
    /// Instances of every service (each its own HTTP port).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub replicas: u16,
    /// PostgreSQL port.
    #[arg(long, default_value_t = 55432)]
    pub postgres_port: u16,
    /// Redis port.
    #[arg(long, default_value_t = 56379)]
    pub redis_port: u16,
    /// First HTTP side port; instance r of service i listens on base + i × replicas + r.
    #[arg(long, default_value_t = 9100)]
    pub http_base_port: u16,
    /// The gateway's public HTTP port (replica r: + r); when it is taken, the
    /// gateway gets a free one (its log names it).
    #[arg(long, default_value_t = GATEWAY_PORT)]
    pub gateway_port: u16,
    /// Start only these services (default: every service binary found).
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
    /// Run authentication checks (YMERA_AUTH=required) instead of development mode.
    #[arg(long)]
    pub auth: bool,
    /// Start in the background and return once the stack is up.
    #[arg(long)]
    pub detach: bool,
}

/// Options of `ymera down`.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// State directory of the stack.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Options of `ymera migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "POSTGRES_URL")]
    pub database_url: Option<String>,
}

/// `ymera migrate`.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let url = args
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .context("no database: set POSTGRES_URL or pass --database-url")?;
    let pool = ymera_core::store::connect_postgres(&url, 2).await?;
    ymera_core::store::migrate(&pool).await?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await?;
    for (version, description) in &applied {
        println!("applied {version} {description}");
    }
    println!("{} migrations applied; database is current", applied.len());
    Ok(ExitCode::SUCCESS)
}

/// `ymera up`.
pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(state_dir);
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    if let Some(info) = StackInfo::read(&dir).filter(|i| process_alive(i.pid)) {
        anyhow::bail!(
            "a stack is already running from {} (pid {}); `ymera down` stops it",
            dir.display(),
            info.pid
        );
    }
    if args.detach {
        return detach(&args, &dir).await;
    }
    let mut stack = start_servers(&args, &dir).await?;
    let mut binaries = service_binaries(&args)?;
    // Security first: it creates the admin key the others may need.
    binaries.sort_by_key(|(name, _)| name != "security");
    let mut services = Vec::new();
    let replicas = usize::from(args.replicas);
    let side_ports = u16::try_from(binaries.len() * replicas).unwrap_or(u16::MAX);
    let http_base_port = side_port_block(args.http_base_port, side_ports)?;
    if http_base_port != args.http_base_port {
        println!(
            "side ports    {}–{} are not all free; using {http_base_port}–{} (below the ephemeral range)",
            args.http_base_port,
            args.http_base_port
                .saturating_add(side_ports.saturating_sub(1)),
            http_base_port.saturating_add(side_ports.saturating_sub(1))
        );
    }
    for (i, (name, path)) in binaries.into_iter().enumerate() {
        for instance in 0..replicas {
            let offset = i * replicas + instance;
            let port = http_base_port.saturating_add(u16::try_from(offset).unwrap_or(u16::MAX));
            start_instance(&mut stack, &args, &name, &path, instance, port).await?;
            services.push((name.clone(), port));
        }
    }
    let info = StackInfo {
        pid: std::process::id(),
        nats_url: stack.nats_url(),
        postgres_url: stack.database_url().to_owned(),
        redis_url: stack.redis_url(),
        services,
        nats_servers: stack.nats_node_infos(),
        pids: stack.pids(),
    };
    info.write(&dir)?;
    print_summary(&info, &dir);
    wait_for_signal().await;
    println!("stopping services …");
    let failures = tokio::task::spawn_blocking(move || stack.stop()).await?;
    for (component, err) in failures {
        eprintln!("stopping {component}: {err}");
    }
    StackInfo::remove(&dir);
    println!("stack stopped");
    Ok(ExitCode::SUCCESS)
}

/// The first of `n` consecutive ports for the services' side HTTP ports.
///
/// `wanted..wanted + n` when every one of them can be bound on 127.0.0.1 now;
/// otherwise a block of `n` free ports below the kernel's ephemeral range
/// ([`ymera_devstack::free_port_block`]), so that no outgoing connection and no
/// `bind(0)` can take one of them while the stack runs (a port given to an outgoing
/// connection cannot be bound by a listener: the service there would crash-loop).
/// Errors when no such block is free.
fn side_port_block(wanted: u16, n: u16) -> anyhow::Result<u16> {
    let n = n.max(1);
    if (0..n).all(|i| wanted.checked_add(i).is_some_and(port_is_free)) {
        return Ok(wanted);
    }
    ymera_devstack::free_port_block(n).map_err(|_| {
        anyhow::anyhow!(
            "side ports {wanted}–{} are taken and no block of {n} free ports is left below {}; \
             pass a free --http-base-port",
            wanted.saturating_add(n - 1),
            ymera_devstack::ephemeral_low()
        )
    })
}

/// Whether a listener can bind `port` on 127.0.0.1 now (as the services do).
fn port_is_free(port: u16) -> bool {
    port != 0 && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts instance `instance` (0-based) of service `name` on HTTP port `port`.
async fn start_instance(
    stack: &mut Stack,
    args: &UpArgs,
    name: &str,
    path: &Path,
    instance: usize,
    port: u16,
) -> anyhow::Result<()> {
    {
        let mut options = ServiceOptions::new(name, path)
            .envs(service_env(stack, args, port))
            .restart(Backoff::default());
        if name == "gateway" {
            let wanted = args
                .gateway_port
                .saturating_add(u16::try_from(instance).unwrap_or(0));
            // A busy port (another stack) would make the gateway crash-loop.
            let public = match std::net::TcpListener::bind(("127.0.0.1", wanted)) {
                Ok(_) => wanted,
                Err(_) => {
                    println!(
                        "gateway       port {wanted} is taken; using a free port (see its log)"
                    );
                    0
                }
            };
            options = options
                .env("GATEWAY_ADDR", format!("127.0.0.1:{public}"))
                .env("GATEWAY_CORS_ORIGINS", "*");
        }
        if name == "security" {
            // The security service creates the development admin key (mode 0600)
            // that the CLI sends when no other credential is given.
            options = options.env(
                "YMERA_BOOTSTRAP_ADMIN_KEY",
                stack.admin_key_path().into_os_string(),
            );
        } else if args.auth {
            // With authentication on, services that call others on their own
            // behalf (agents answering through communication.send) use the
            // development admin key.
            if let Some(key) = wait_for_admin_key(stack).await {
                options = options.env("YMERA_SERVICE_API_KEY", key);
            }
        }
        if args.replicas > 1 {
            stack
                .start_service_instance(options, instance + 1)
                .with_context(|| format!("starting ymera-{name} #{}", instance + 1))?;
        } else {
            stack
                .start_service(options)
                .with_context(|| format!("starting ymera-{name}"))?;
        }
    }
    Ok(())
}

async fn start_servers(args: &UpArgs, dir: &Path) -> anyhow::Result<Stack> {
    let options = StackOptions {
        nats_port: Some(args.nats_port),
        nats_monitor_port: Some(args.nats_monitor_port),
        nats_cluster: usize::from(args.cluster),
        nats_route_port: Some(args.nats_route_port),
        nats_sync_always: args.nats_sync_always,
        postgres_port: Some(args.postgres_port),
        redis_port: Some(args.redis_port),
        ..StackOptions::new(dir)
    };
    // Starting the servers blocks (initdb on a first run); keep it off the runtime.
    let stack = tokio::task::spawn_blocking(move || Stack::start(options))
        .await?
        .context("starting the servers")?;
    match stack.nats_cluster() {
        Some(cluster) => println!(
            "nats-server   JetStream cluster of {} ready on {}",
            cluster.len(),
            stack.nats_url()
        ),
        None => println!("nats-server   ready on {}", stack.nats_url()),
    }
    println!("PostgreSQL    ready on port {}", stack.postgres().port());
    println!("redis-server  ready on {}", stack.redis_url());
    let pool = ymera_core::store::connect_postgres(stack.database_url(), 2).await?;
    ymera_core::store::migrate(&pool)
        .await
        .context("applying migrations")?;
    pool.close().await;
    println!("migrations    applied");
    Ok(stack)
}

async fn wait_for_admin_key(stack: &Stack) -> Option<String> {
    let path = stack.admin_key_path();
    // The security service bootstraps the key before it serves: once it
    // answers, the file holds the key it kept or made (a key left by an
    // earlier run may have been replaced).
    let urls: Vec<String> = stack.nats_url().split(',').map(str::to_owned).collect();
    let healthy = match async_nats::connect(urls).await {
        Ok(client) => crate::private_stack::wait_healthy(&client, "security").await,
        Err(err) => Err(err.into()),
    };
    if let Err(err) = healthy {
        eprintln!("{err}; reading the admin key as it is");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(key) = std::fs::read_to_string(&path)
            && !key.trim().is_empty()
        {
            return Some(key.trim().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "no admin key at {} after 60 s; services start without a service credential",
        path.display()
    );
    None
}

fn service_binaries(args: &UpArgs) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let wanted: Vec<String> = if args.services.is_empty() {
        SERVICES.iter().map(|s| s.to_string()).collect()
    } else {
        args.services.clone()
    };
    let mut found = Vec::new();
    for name in wanted {
        anyhow::ensure!(
            SERVICES.contains(&name.as_str()),
            "unknown service {name:?}; known: {}",
            SERVICES.join(", ")
        );
        match service_binary(&name) {
            Ok(path) => found.push((name, path)),
            Err(DevstackError::NotBuilt { path }) => println!(
                "{:<13} not built ({} missing); skipped",
                name,
                path.display()
            ),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(found)
}

fn service_env(stack: &Stack, args: &UpArgs, http_port: u16) -> Vec<(String, String)> {
    let auth = if args.auth { "required" } else { "off" };
    vec![
        ("NATS_URL".into(), stack.nats_url()),
        ("POSTGRES_URL".into(), stack.database_url().to_owned()),
        ("REDIS_URL".into(), stack.redis_url()),
        ("ENVIRONMENT".into(), "development".into()),
        ("YMERA_AUTH".into(), auth.into()),
        ("YMERA_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")),
    ]
}

/// Sends a signal with the `kill` command (no `unsafe` libc call).
fn send_signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn print_summary(info: &StackInfo, dir: &Path) {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["component", "address", "log"]);
    if info.nats_servers.len() > 1 {
        for node in &info.nats_servers {
            table.add_row(vec![
                format!("nats-server {} (JetStream cluster)", node.name),
                node.url.clone(),
                dir.join("nats").join(&node.name).display().to_string(),
            ]);
        }
    } else {
        table.add_row(vec![
            "nats-server (JetStream)".to_owned(),
            info.nats_url.clone(),
            dir.join("nats").display().to_string(),
        ]);
    }
    table.add_row(vec![
        "PostgreSQL".to_owned(),
        info.postgres_url.clone(),
        dir.join("postgres").display().to_string(),
    ]);
    table.add_row(vec![
        "Redis".to_owned(),
        info.redis_url.clone(),
        dir.join("redis").display().to_string(),
    ]);
    let several = |name: &str| info.services.iter().filter(|(n, _)| n == name).count() > 1;
    let mut seen: Vec<&str> = Vec::new();
    for (name, port) in &info.services {
        seen.push(name);
        let (label, log) = if several(name) {
            let instance = seen.iter().filter(|n| **n == name.as_str()).count();
            (
                format!("ymera-{name} #{instance}"),
                format!("{name}-{instance}.log"),
            )
        } else {
            (format!("ymera-{name}"), format!("{name}.log"))
        };
        table.add_row(vec![
            label,
            format!("http://127.0.0.1:{port}/health"),
            dir.join("logs").join(log).display().to_string(),
        ]);
    }
    println!("{table}");
    if info.services.iter().any(|(n, _)| n == "gateway") {
        println!(
            "HTTP API:  http://127.0.0.1:{GATEWAY_PORT}/openapi.json (default port; curl examples: crates/ymera-gateway/README.md)"
        );
    }
    println!(
        "Try:  ymera health   ·   ymera services   (NATS_URL={})",
        info.nats_url
    );
    println!("Stop: Ctrl-C here, or `ymera down` from another terminal.");
}

/// Re-runs `ymera up` without `--detach` in its own process group, logging to
/// `<dir>/logs/stack.log`, and returns once it has written `stack.json`.
async fn detach(args: &UpArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs").join("stack.log"))?;
    let forwarded: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    StackInfo::remove(dir);
    let child = std::process::Command::new(exe)
        .args(&forwarded)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(info) = StackInfo::read(dir) {
            print_summary(&info, dir);
            println!(
                "running in the background (pid {}); log: {}",
                child.id(),
                dir.join("logs/stack.log").display()
            );
            let _ = args;
            return Ok(ExitCode::SUCCESS);
        }
        if !process_alive(child.id()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "the stack did not come up; see {}",
        dir.join("logs/stack.log").display()
    )
}

/// `ymera down`.
pub async fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(state_dir);
    let Some(info) = StackInfo::read(&dir) else {
        println!("no stack is running from {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    if !process_alive(info.pid) || !send_signal(info.pid, "TERM") {
        StackInfo::remove(&dir);
        println!("the stack (pid {}) was not running; cleaned up", info.pid);
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while process_alive(info.pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::ensure!(
        !process_alive(info.pid),
        "the stack (pid {}) did not stop within 60 s",
        info.pid
    );
    println!("stack stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_port_block_keeps_a_free_block_and_leaves_a_taken_one() {
        // A block with one port held by a listener (the middle one) is left for a
        // block below the ephemeral range whose every port binds.
        let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        let wanted = taken - 3;
        let start = side_port_block(wanted, 8).unwrap();
        assert_ne!(start, wanted, "a block holding a bound port was kept");
        assert!(
            start >= ymera_devstack::PORT_BLOCK_LOW && start + 8 <= ymera_devstack::ephemeral_low(),
            "fallback {start} is not below the ephemeral range"
        );
        assert!(!(start..start + 8).contains(&taken));
        let listeners: Vec<_> = (start..start + 8)
            .map(|p| std::net::TcpListener::bind(("127.0.0.1", p)))
            .collect();
        assert!(listeners.iter().all(Result::is_ok), "{listeners:?}");
        drop(listeners);
        // A free block is kept as asked.
        assert_eq!(side_port_block(start, 8).unwrap(), start);
    }
}
