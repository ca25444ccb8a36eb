//! The local stack: `ymera up` starts nats-server (JetStream), PostgreSQL and
//! Redis under `.ymera/`, applies migrations, starts every service binary of
//! the workspace and restarts a crashed one with backoff; Ctrl-C (or
//! `ymera down`) stops everything cleanly. Servers are managed by
//! ymera-testkit (kept directories, fixed ports).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use ymera_testkit::{NatsOptions, NatsServer, Postgres, PostgresOptions, Redis, RedisOptions};

use crate::context::state_dir;

/// The service binaries `ymera up` looks for next to the `ymera` binary.
pub const SERVICES: [&str; 5] = [
    "communication",
    "config",
    "drafting",
    "code-analysis",
    "security",
];

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
    /// PostgreSQL port.
    #[arg(long, default_value_t = 55432)]
    pub postgres_port: u16,
    /// Redis port.
    #[arg(long, default_value_t = 56379)]
    pub redis_port: u16,
    /// First HTTP side port; service i listens on base + i.
    #[arg(long, default_value_t = 9100)]
    pub http_base_port: u16,
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

/// What a running stack wrote to `<dir>/stack.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackInfo {
    /// PID of the `ymera up` supervisor.
    pub pid: u32,
    /// NATS URL.
    pub nats_url: String,
    /// PostgreSQL URL of the `ymera` database.
    pub postgres_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Services started, with their HTTP side ports.
    pub services: Vec<(String, u16)>,
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
    if let Some(info) = read_stack_info(&dir).filter(|i| process_alive(i.pid)) {
        anyhow::bail!(
            "a stack is already running from {} (pid {}); `ymera down` stops it",
            dir.display(),
            info.pid
        );
    }
    if args.detach {
        return detach(&args, &dir).await;
    }
    let servers = start_servers(&args, &dir).await?;
    let mut binaries = service_binaries(&args)?;
    // Security first: it creates the admin key the others may need.
    binaries.sort_by_key(|(name, _)| name != "security");
    let shutdown = CancellationToken::new();
    let mut supervisors = Vec::new();
    let mut services = Vec::new();
    for (i, (name, path)) in binaries.into_iter().enumerate() {
        let port = args
            .http_base_port
            .saturating_add(u16::try_from(i).unwrap_or(u16::MAX));
        let mut env = service_env(&servers, &args, port);
        if name == "security" {
            // The security service creates the development admin key (mode 0600)
            // that the CLI sends when no other credential is given.
            let key = std::fs::canonicalize(&dir)
                .unwrap_or_else(|_| dir.clone())
                .join("admin.key");
            env.push((
                "YMERA_BOOTSTRAP_ADMIN_KEY".into(),
                key.display().to_string(),
            ));
        } else if args.auth {
            // With authentication on, services that call others on their own
            // behalf (agents answering through communication.send) use the
            // development admin key.
            if let Some(key) = wait_for_admin_key(&dir, &servers.nats.url()).await {
                env.push(("YMERA_SERVICE_API_KEY".into(), key));
            }
        }
        services.push((name.clone(), port));
        let log = dir.join("logs").join(format!("{name}.log"));
        supervisors.push(tokio::spawn(supervise(
            name,
            path,
            env,
            log,
            shutdown.clone(),
        )));
    }
    let info = StackInfo {
        pid: std::process::id(),
        nats_url: servers.nats.url(),
        postgres_url: servers.postgres_url.clone(),
        redis_url: servers.redis.url(),
        services,
    };
    let info_path = dir.join("stack.json");
    std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)?;
    print_summary(&info, &dir);
    wait_for_signal().await;
    println!("stopping services …");
    shutdown.cancel();
    for supervisor in supervisors {
        let _ = supervisor.await;
    }
    servers.stop();
    let _ = std::fs::remove_file(&info_path);
    println!("stack stopped");
    Ok(ExitCode::SUCCESS)
}

struct Servers {
    nats: NatsServer,
    postgres: Postgres,
    postgres_url: String,
    redis: Redis,
}

impl Servers {
    fn stop(mut self) {
        for (name, result) in [
            ("redis", self.redis.stop()),
            ("postgres", self.postgres.stop()),
            ("nats", self.nats.stop()),
        ] {
            if let Err(err) = result {
                eprintln!("stopping {name}: {err}");
            }
        }
    }
}

async fn start_servers(args: &UpArgs, dir: &Path) -> anyhow::Result<Servers> {
    let (nats_dir, pg_dir, redis_dir) = (dir.join("nats"), dir.join("postgres"), dir.join("redis"));
    let nats_options = NatsOptions {
        dir: Some(nats_dir),
        port: Some(args.nats_port),
        monitor_port: Some(args.nats_monitor_port),
        ..Default::default()
    };
    let pg_options = PostgresOptions {
        dir: Some(pg_dir),
        port: Some(args.postgres_port),
    };
    let redis_options = RedisOptions {
        dir: Some(redis_dir),
        port: Some(args.redis_port),
    };
    // The testkit API is synchronous; start the three servers off the runtime.
    let (nats, postgres, redis) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let nats = NatsServer::start_with(nats_options).context("starting nats-server")?;
        println!("nats-server   ready on {}", nats.url());
        let postgres = Postgres::start_with(pg_options).context("starting PostgreSQL")?;
        println!("PostgreSQL    ready on port {}", postgres.port());
        let redis = Redis::start_with(redis_options).context("starting redis-server")?;
        println!("redis-server  ready on {}", redis.url());
        ensure_database(&postgres, "ymera")?;
        Ok((nats, postgres, redis))
    })
    .await??;
    let postgres_url = postgres.database_url("ymera");
    let pool = ymera_core::store::connect_postgres(&postgres_url, 2).await?;
    ymera_core::store::migrate(&pool)
        .await
        .context("applying migrations")?;
    pool.close().await;
    println!("migrations    applied");
    Ok(Servers {
        nats,
        postgres,
        postgres_url,
        redis,
    })
}

fn ensure_database(postgres: &Postgres, name: &str) -> anyhow::Result<()> {
    let exists = postgres
        .client_command("psql")
        .args([
            "-tAc",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
            "-d",
            &postgres.url(),
        ])
        .output()?;
    if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
        return Ok(());
    }
    let created = postgres
        .client_command("createdb")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &postgres.port().to_string(),
            "-U",
            "postgres",
            name,
        ])
        .output()?;
    anyhow::ensure!(
        created.status.success(),
        "createdb {name}: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    Ok(())
}

async fn wait_for_admin_key(dir: &Path, nats_url: &str) -> Option<String> {
    let path = dir.join("admin.key");
    // The security service bootstraps the key before it serves: once it
    // answers, the file holds the key it kept or made (a key left by an
    // earlier run may have been replaced).
    let healthy = match async_nats::connect(nats_url).await {
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
    let exe = std::env::current_exe().context("locating the ymera binary")?;
    let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
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
        let path = bin_dir.join(format!("ymera-{name}"));
        if path.is_file() {
            found.push((name, path));
        } else {
            println!(
                "{:<13} not built ({} missing); skipped",
                name,
                path.display()
            );
        }
    }
    Ok(found)
}

fn service_env(servers: &Servers, args: &UpArgs, http_port: u16) -> Vec<(String, String)> {
    let auth = if args.auth { "required" } else { "off" };
    vec![
        ("NATS_URL".into(), servers.nats.url()),
        ("POSTGRES_URL".into(), servers.postgres_url.clone()),
        ("REDIS_URL".into(), servers.redis.url()),
        ("ENVIRONMENT".into(), "development".into()),
        ("YMERA_AUTH".into(), auth.into()),
        ("YMERA_HTTP_ADDR".into(), format!("127.0.0.1:{http_port}")),
    ]
}

/// Runs one service, restarting it with exponential backoff (1 s … 30 s,
/// reset after a minute of uptime) until `shutdown`, then SIGTERM and wait.
async fn supervise(
    name: String,
    path: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut child = match spawn_service(&path, &env, &log) {
            Ok(child) => child,
            Err(err) => {
                eprintln!("{name}: cannot start: {err:#}");
                return;
            }
        };
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                eprintln!("{name}: exited ({status}); restarting in {backoff:?} (log: {})", log.display());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = shutdown.cancelled() => {
                terminate(&mut child).await;
                return;
            }
        }
    }
}

fn spawn_service(
    path: &Path,
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let mut command = tokio::process::Command::new(path);
    command
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

/// SIGTERM, then up to 15 s for a graceful exit, then SIGKILL.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        send_signal(pid, "TERM");
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
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
    table.add_row(vec![
        "nats-server (JetStream)".to_owned(),
        info.nats_url.clone(),
        dir.join("nats").display().to_string(),
    ]);
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
    for (name, port) in &info.services {
        table.add_row(vec![
            format!("ymera-{name}"),
            format!("http://127.0.0.1:{port}/health"),
            dir.join("logs")
                .join(format!("{name}.log"))
                .display()
                .to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "Try:  ymera health   ·   ymera services   (NATS_URL={})",
        info.nats_url
    );
    println!("Stop: Ctrl-C here, or `ymera down` from another terminal.");
}

fn read_stack_info(dir: &Path) -> Option<StackInfo> {
    let text = std::fs::read(dir.join("stack.json")).ok()?;
    serde_json::from_slice(&text).ok()
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
    let _ = std::fs::remove_file(dir.join("stack.json"));
    let child = std::process::Command::new(exe)
        .args(&forwarded)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(info) = read_stack_info(dir) {
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
    let Some(info) = read_stack_info(&dir) else {
        println!("no stack is running from {}", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    if !process_alive(info.pid) || !send_signal(info.pid, "TERM") {
        let _ = std::fs::remove_file(dir.join("stack.json"));
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
