//! `ymera chaos`: the fault model of DESIGN §11 on a private `--cluster 3 --replicas 2`
//! stack (3-node JetStream cluster, PostgreSQL, Redis, 2 processes of every service), with
//! traffic on every service at once, and a verdict per fault.
//!
//! Traffic (one logical request may be resent idempotently, as the contract allows: the
//! same envelope id, the same draft id, the same config value): sends through
//! `communication.send` to three outside agents that acknowledge every copy, config
//! set + get, `drafting.create`, `security.authorize`, `code-analysis.analyze`.
//!
//! Faults, one at a time, each followed by a wait until every service answers again:
//! kill -9 of the nats-server leading `YMERA_MESSAGES` (restarted 2 s later); kill -9 of
//! one replica of each service (the supervisor restarts it); SIGSTOP of a communication
//! replica for 5 s; a rolling restart of every instance (SIGTERM, the supervisor starts
//! the new one, next instance once it serves); kill -9 of PostgreSQL and its restart; the
//! nats-server leading `YMERA_MESSAGES` partitioned from the other two for 10 s (nftables
//! rules inside a network namespace the suite makes for itself, see [`partition`]).
//!
//! Per fault it prints requests, failed, availability, the longest gap between two
//! successful answers of one service, and the time to recover (from the injection to the
//! last failed request, until every service answered a request sent after the
//! injection, and at least the longest gap); at the end the accepted messages never delivered, duplicates,
//! and committed writes lost (config's last acknowledged value, every acknowledged draft).
//! Exits 1 on any loss or when a fault's availability is under the target.

mod partition;
mod traffic;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use ymera_devstack::{Backoff, ServiceOptions, Stack, StackOptions, service_binary};

use self::traffic::{Ledger, Traffic};

/// The services of the stack, each with `--replicas` processes.
const SERVICES: [&str; 5] = [
    "security",
    "communication",
    "config",
    "drafting",
    "code-analysis",
];
/// Availability a single fault must keep (DESIGN §11 / issue 15).
const TARGET_AVAILABILITY: f64 = 99.9;
/// How long a fault's window stays open after every service answers again.
const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for the stack to answer again after a fault.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the partitioned nats-server stays cut off.
const PARTITION_FOR: Duration = Duration::from_secs(10);

/// Options of `ymera chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// `short` (every fault once, about two minutes: CI) or `full` (the schedule three
    /// times).
    #[arg(long, default_value = "short", value_parser = ["short", "full"])]
    pub schedule: String,
    /// Instances of every service.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=4))]
    pub replicas: u16,
    /// Seconds of traffic before the first fault (the baseline window).
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Skip the partition fault (which needs root, unshare and nft) and run on the host's
    /// loopback.
    #[arg(long)]
    pub no_partition: bool,
    /// Run the nats-servers with `sync_interval: always`, as deploy/ and k8s/ ship them
    /// (default: nats-server's default fsync, faster).
    #[arg(long)]
    pub sync_always: bool,
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillNatsLeader,
    KillReplicas,
    StopReplica,
    RollingRestart,
    KillPostgres,
    PartitionNats,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::KillNatsLeader => "kill -9 nats-server leading YMERA_MESSAGES",
            Fault::KillReplicas => "kill -9 one replica of each service",
            Fault::StopReplica => "SIGSTOP a communication replica 5 s",
            Fault::RollingRestart => "rolling restart of every service",
            Fault::KillPostgres => "kill -9 PostgreSQL, restart",
            Fault::PartitionNats => "partition YMERA_MESSAGES leader's nats-server 10 s",
        }
    }
}

/// What one fault's window measured.
#[derive(Debug, Clone)]
struct FaultReport {
    label: String,
    /// The fault of the window (`None`: the baseline).
    fault: Option<Fault>,
    from: Instant,
    to: Instant,
    lost: usize,
    writes_lost: usize,
    duplicates: usize,
    requests: usize,
    failed: usize,
    longest_gap: Duration,
    gap_service: &'static str,
    recovery: Duration,
}

impl FaultReport {
    fn availability(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            100.0 * (self.requests - self.failed) as f64 / self.requests as f64
        }
    }
}

/// `ymera chaos`.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let partitions = match partition::enter(args.no_partition).await? {
        partition::Entry::Reexecuted(code) => return Ok(code),
        partition::Entry::Inside => true,
        partition::Entry::Without(reason) => {
            println!("chaos: the partition fault is skipped: {reason}");
            false
        }
    };
    let dir = StackDir::create()?;
    let replicas = usize::from(args.replicas);
    println!(
        "chaos: 3-node JetStream cluster ({} fsync), {replicas} replicas of every service, logs in {}",
        if args.sync_always {
            "sync_interval: always"
        } else {
            "default"
        },
        dir.path().join("logs").display()
    );
    let stack = start_stack(dir.path(), replicas, partitions, args.sync_always).await?;
    let nats_url = stack.nats_url();
    let stack = Arc::new(Mutex::new(stack));
    let urls: Vec<String> = nats_url.split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls.clone()).await?;
    for service in SERVICES {
        wait_instances(&client, service, replicas, RECOVER_TIMEOUT).await?;
    }
    let admin_key = std::fs::read_to_string(dir.path().join("admin.key"))
        .context("reading the bootstrap admin key")?
        .trim()
        .to_owned();

    let ledger = Arc::new(Ledger::default());
    let traffic = Traffic::start(urls, &admin_key, Arc::clone(&ledger)).await?;
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let mut reports = vec![window_report(
        &ledger,
        "baseline (no fault)",
        Instant::now() - Duration::from_secs(args.warmup_secs),
        Instant::now(),
        None,
    )];

    let replication = replication_check(&client).await;
    println!("replication: {}", replication.summary);

    let rounds = if args.schedule == "full" { 3 } else { 1 };
    let mut schedule = vec![
        Fault::KillNatsLeader,
        Fault::KillReplicas,
        Fault::StopReplica,
        Fault::RollingRestart,
        Fault::KillPostgres,
    ];
    if partitions {
        schedule.push(Fault::PartitionNats);
    }
    for round in 0..rounds {
        for &fault in &schedule {
            let label = if rounds > 1 {
                format!("{} (round {})", fault.label(), round + 1)
            } else {
                fault.label().to_owned()
            };
            println!("fault: {label}");
            let started = Instant::now();
            inject(fault, &stack, &client, replicas).await?;
            for service in SERVICES {
                wait_instances(&client, service, replicas, RECOVER_TIMEOUT).await?;
            }
            wait_all_answering(&ledger, Instant::now(), RECOVER_TIMEOUT).await;
            tokio::time::sleep(SETTLE).await;
            let mut report = window_report(&ledger, &label, started, Instant::now(), Some(started));
            report.fault = Some(fault);
            reports.push(report);
        }
    }

    println!("stopping traffic, waiting for every accepted message to be delivered …");
    let outcome = traffic.finish(&client, &admin_key).await;
    for report in &mut reports {
        let (from, to) = (report.from, report.to);
        let inside = |at: &&Instant| **at >= from && **at <= to;
        report.lost = outcome.lost_at.iter().filter(inside).count();
        report.duplicates = outcome.duplicated_at.iter().filter(inside).count();
        report.writes_lost = outcome.drafts_lost_at.iter().filter(inside).count();
    }
    print_reports(&reports);
    println!(
        "accepted messages: {}, delivered: {}, lost: {}, duplicates: {}",
        outcome.accepted, outcome.delivered, outcome.lost, outcome.duplicates
    );
    println!(
        "committed writes: config {} (lost {}), drafts {} (lost {})",
        outcome.config_writes, outcome.config_lost, outcome.drafts, outcome.drafts_lost
    );
    let stack = Arc::try_unwrap(stack)
        .map_err(|_| anyhow::anyhow!("the stack is still shared"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("the stack lock was poisoned"))?;
    let _ = tokio::task::spawn_blocking(move || stack.stop()).await;

    let lost = outcome.lost + outcome.config_lost + outcome.drafts_lost;
    let below: Vec<&FaultReport> = reports
        .iter()
        .filter(|r| r.availability() < TARGET_AVAILABILITY)
        .collect();
    if lost > 0 {
        println!("FAIL: {lost} accepted messages or committed writes lost");
        return Ok(ExitCode::FAILURE);
    }
    if !replication.ok {
        println!("FAIL: replication: {}", replication.summary);
        return Ok(ExitCode::FAILURE);
    }
    if !below.is_empty() {
        for report in below {
            println!(
                "FAIL: {}: availability {:.3} % < {TARGET_AVAILABILITY} %",
                report.label,
                report.availability()
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    println!("ok: nothing lost, every fault ≥ {TARGET_AVAILABILITY} % available");
    Ok(ExitCode::SUCCESS)
}

/// The stack's directory under the temporary directory, removed at the end.
struct StackDir(std::path::PathBuf);

impl StackDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("ymera-chaos-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        // PostgreSQL runs as `postgres` when this runs as root: it must reach its directory.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for StackDir {
    fn drop(&mut self) {
        if std::env::var_os("YMERA_CHAOS_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The stack: cluster, PostgreSQL, Redis, migrations, `replicas` of every service
/// (security first: its first replica writes the admin key).
async fn start_stack(
    dir: &std::path::Path,
    replicas: usize,
    node_groups: bool,
    sync_always: bool,
) -> anyhow::Result<Stack> {
    let options = StackOptions {
        nats_cluster: 3,
        nats_sync_always: sync_always,
        nats_node_group_base: node_groups.then_some(partition::NODE_GROUP_BASE),
        ..StackOptions::new(dir)
    };
    let mut stack = tokio::task::spawn_blocking(move || Stack::start(options))
        .await?
        .context("starting the servers")?;
    let pool = ymera_core::store::connect_postgres(stack.database_url(), 2).await?;
    ymera_core::store::migrate(&pool).await?;
    pool.close().await;
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(10),
    };
    let urls: Vec<String> = stack.nats_url().split(',').map(str::to_owned).collect();
    let client = async_nats::connect(urls).await?;
    for service in SERVICES {
        let program = service_binary(service)
            .with_context(|| format!("{service} (cargo build --workspace --bins)"))?;
        for instance in 1..=replicas {
            let mut options = ServiceOptions::new(service, &program)
                .env("NATS_URL", stack.nats_url())
                .env("POSTGRES_URL", stack.database_url())
                .env("REDIS_URL", stack.redis_url())
                .env("ENVIRONMENT", "development")
                .env("YMERA_AUTH", "off")
                .env("LOG_LEVEL", "warn")
                .env("YMERA_HTTP_ADDR", "127.0.0.1:0")
                // Every security replica must open the others' signing keys.
                .env(
                    "YMERA_MASTER_KEY",
                    "Y2hhb3MtbWFzdGVyLWtleS0zMi1ieXRlcy0wMDAwMDA=",
                )
                .restart(backoff);
            if service == "security" && instance == 1 {
                options = options.env("YMERA_BOOTSTRAP_ADMIN_KEY", stack.admin_key_path());
            }
            stack.start_service_instance(options, instance)?;
            if service == "security" && instance == 1 {
                let first = stack.services().len() - 1;
                stack.services()[first]
                    .wait_healthy(&client, RECOVER_TIMEOUT)
                    .await?;
            }
        }
    }
    Ok(stack)
}

/// Injects `fault` and heals it (blocking steps off the runtime).
async fn inject(
    fault: Fault,
    stack: &Arc<Mutex<Stack>>,
    client: &async_nats::Client,
    replicas: usize,
) -> anyhow::Result<()> {
    match fault {
        Fault::KillNatsLeader => {
            let leader = messages_leader(client).await?;
            let stack = Arc::clone(stack);
            println!("  leader of YMERA_MESSAGES: {leader}");
            blocking(move || {
                let index = {
                    let mut stack = lock(&stack)?;
                    let cluster = stack
                        .nats_cluster_mut()
                        .context("the stack runs no cluster")?;
                    let index = cluster
                        .index_of(&leader)
                        .context("the leader is not a node of the stack")?;
                    cluster.kill(index)?;
                    index
                };
                std::thread::sleep(Duration::from_secs(2));
                lock(&stack)?
                    .nats_cluster_mut()
                    .context("the stack runs no cluster")?
                    .restart(index)?;
                Ok(())
            })
            .await
        }
        Fault::KillReplicas => {
            for service in SERVICES {
                signal_instance(stack, service, 0, "KILL")?;
            }
            Ok(())
        }
        Fault::StopReplica => {
            signal_instance(stack, "communication", 0, "STOP")?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            signal_instance(stack, "communication", 0, "CONT")?;
            Ok(())
        }
        Fault::RollingRestart => {
            for service in SERVICES {
                for instance in 0..replicas {
                    let old = signal_instance(stack, service, instance, "TERM")?;
                    let deadline = Instant::now() + RECOVER_TIMEOUT;
                    loop {
                        let now = instance_pid(stack, service, instance)?;
                        if now.is_some_and(|pid| Some(pid) != old) {
                            break;
                        }
                        anyhow::ensure!(
                            Instant::now() < deadline,
                            "{service} #{} did not come back",
                            instance + 1
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    wait_instances(client, service, replicas, RECOVER_TIMEOUT).await?;
                }
            }
            Ok(())
        }
        Fault::PartitionNats => {
            let leader = messages_leader(client).await?;
            let (index, route, group, others, monitor) = {
                let stack = lock(stack)?;
                let cluster = stack.nats_cluster().context("the stack runs no cluster")?;
                let index = cluster
                    .index_of(&leader)
                    .context("the leader is not a node of the stack")?;
                let others: Vec<u16> = (0..cluster.len())
                    .filter(|i| *i != index)
                    .filter_map(|i| cluster.route_port(i))
                    .collect();
                (
                    index,
                    cluster.route_port(index).context("no route port")?,
                    cluster
                        .node_group(index)
                        .context("the nodes run without groups")?,
                    others,
                    cluster.node(index).map(|n| n.monitor_port()),
                )
            };
            let clients = monitor.map(connections_on).unwrap_or_default();
            println!(
                "  cut off: {leader} (route port {route}, group {group}); its clients: {}",
                if clients.is_empty() {
                    "none".to_owned()
                } else {
                    clients
                }
            );
            partition::cut(route, group, &others)?;
            tokio::time::sleep(PARTITION_FOR).await;
            partition::heal()?;
            let stack = Arc::clone(stack);
            blocking(move || {
                let mut stack = lock(&stack)?;
                let cluster = stack
                    .nats_cluster_mut()
                    .context("the stack runs no cluster")?;
                anyhow::ensure!(
                    cluster.wait_healthy(RECOVER_TIMEOUT),
                    "node {} is not healthy again after the partition",
                    index + 1
                );
                Ok(())
            })
            .await
        }
        Fault::KillPostgres => {
            let stack = Arc::clone(stack);
            blocking(move || {
                lock(&stack)?.postgres_mut().kill()?;
                std::thread::sleep(Duration::from_secs(1));
                lock(&stack)?.postgres_mut().restart()?;
                Ok(())
            })
            .await
        }
    }
}

/// The client connections of the nats-server with monitoring port `port`, counted by
/// connection name (`service×2, (unnamed)×1`), from its `/connz`.
fn connections_on(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let fetch = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /connz?limit=1024 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    };
    let Ok(text) = fetch() else {
        return String::new();
    };
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let Ok(connz) = serde_json::from_str::<serde_json::Value>(body) else {
        return String::new();
    };
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for conn in connz["connections"].as_array().into_iter().flatten() {
        let name = conn["name"].as_str().filter(|n| !n.is_empty());
        *counts
            .entry(name.unwrap_or("(unnamed)").to_owned())
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, n)| format!("{name}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`replication_check`] found.
struct Replication {
    ok: bool,
    summary: String,
}

/// Every platform stream and KV bucket (`YMERA_*`, `KV_YMERA_*`) at R3 with two followers,
/// and every consumer of `YMERA_MESSAGES` replicated with it (DESIGN §11 on 3 servers).
async fn replication_check(client: &async_nats::Client) -> Replication {
    use futures::TryStreamExt as _;
    let js = async_nats::jetstream::new(client.clone());
    let mut problems = Vec::new();
    let (mut streams, mut consumers) = (0, 0);
    let infos: Vec<async_nats::jetstream::stream::Info> = match js.streams().try_collect().await {
        Ok(infos) => infos,
        Err(err) => {
            return Replication {
                ok: false,
                summary: format!("listing streams: {err}"),
            };
        }
    };
    for info in infos {
        let name = &info.config.name;
        if !(name.starts_with("YMERA_") || name.starts_with("KV_YMERA_")) {
            continue;
        }
        streams += 1;
        let followers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
        if info.config.num_replicas != 3 || followers != 2 {
            problems.push(format!(
                "{name}: R{} with {followers} followers",
                info.config.num_replicas
            ));
        }
    }
    match js.get_stream("YMERA_MESSAGES").await {
        Ok(stream) => match stream.consumers().try_collect::<Vec<_>>().await {
            Ok(list) => {
                for info in list {
                    consumers += 1;
                    let followers = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
                    if followers != 2 {
                        problems.push(format!("consumer {}: {followers} followers", info.name));
                    }
                }
            }
            Err(err) => problems.push(format!("listing consumers: {err}")),
        },
        Err(err) => problems.push(format!("YMERA_MESSAGES: {err}")),
    }
    if consumers == 0 {
        problems.push("YMERA_MESSAGES has no consumer".to_owned());
    }
    let ok = problems.is_empty();
    let summary = if ok {
        format!(
            "{streams} platform streams/buckets at R3 (2 followers each), \
             {consumers} YMERA_MESSAGES consumers replicated with it"
        )
    } else {
        problems.join("; ")
    };
    Replication { ok, summary }
}

/// The `server_name` of the nats-server leading `YMERA_MESSAGES`.
async fn messages_leader(client: &async_nats::Client) -> anyhow::Result<String> {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream("YMERA_MESSAGES")
        .await?
        .info()
        .await?
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .context("YMERA_MESSAGES has no leader")
}

fn lock(stack: &Arc<Mutex<Stack>>) -> anyhow::Result<std::sync::MutexGuard<'_, Stack>> {
    stack
        .lock()
        .map_err(|_| anyhow::anyhow!("the stack lock was poisoned"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work).await?
}

/// The PID of instance `instance` (0-based) of `service`, while it runs.
fn instance_pid(
    stack: &Arc<Mutex<Stack>>,
    service: &str,
    instance: usize,
) -> anyhow::Result<Option<u32>> {
    let stack = lock(stack)?;
    let found = stack
        .services()
        .iter()
        .filter(|s| s.name() == service)
        .nth(instance)
        .with_context(|| format!("no instance {} of {service}", instance + 1))?;
    Ok(found.pid())
}

/// Sends `signal` to instance `instance` of `service`; returns the PID it had.
fn signal_instance(
    stack: &Arc<Mutex<Stack>>,
    service: &str,
    instance: usize,
    signal: &str,
) -> anyhow::Result<Option<u32>> {
    let pid = instance_pid(stack, service, instance)?;
    if let Some(pid) = pid {
        std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .with_context(|| format!("kill -{signal} {pid}"))?;
    }
    Ok(pid)
}

/// Waits until `$SRV.PING.<service>` gets `count` answers.
async fn wait_instances(
    client: &async_nats::Client,
    service: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let replies = crate::commands::discovery::gather(
            client,
            &format!("$SRV.PING.{service}"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_or_default();
        if replies.len() >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{service}: {} of {count} instances answer after {} s",
            replies.len(),
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every traffic kind has succeeded once after `since`.
async fn wait_all_answering(ledger: &Ledger, since: Instant, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ledger.all_succeeded_since(since) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn window_report(
    ledger: &Ledger,
    label: &str,
    from: Instant,
    to: Instant,
    fault_at: Option<Instant>,
) -> FaultReport {
    let ops = ledger.between(from, to);
    let failed = ops.iter().filter(|op| !op.ok).count();
    let mut last_ok: HashMap<&'static str, Instant> = HashMap::new();
    let (mut longest_gap, mut gap_service) = (Duration::ZERO, "");
    for op in ops.iter().filter(|op| op.ok) {
        let previous = last_ok.insert(op.kind, op.done).unwrap_or(from);
        let gap = op.done.saturating_duration_since(previous);
        if gap > longest_gap {
            longest_gap = gap;
            gap_service = op.kind;
        }
    }
    // Recovery: until every service has answered a request sent after the injection,
    // the last failed request (if any) is over, and no service is without an answer
    // for longer (the longest gap).
    let recovery = match fault_at {
        Some(at) => {
            let answered_again = traffic::KINDS
                .iter()
                .filter_map(|kind| {
                    ops.iter()
                        .filter(|op| op.kind == *kind && op.ok && op.started >= at)
                        .map(|op| op.done)
                        .min()
                })
                .max()
                .unwrap_or(to);
            let last_failure = ops
                .iter()
                .filter(|op| !op.ok)
                .map(|op| op.done)
                .max()
                .unwrap_or(at);
            // A service that kept failing over (resends absorbed it) shows as a gap.
            answered_again
                .max(last_failure)
                .saturating_duration_since(at)
                .max(longest_gap)
        }
        None => Duration::ZERO,
    };
    FaultReport {
        label: label.to_owned(),
        fault: None,
        from,
        to,
        lost: 0,
        writes_lost: 0,
        duplicates: 0,
        requests: ops.len(),
        failed,
        longest_gap,
        gap_service,
        recovery,
    }
}

fn print_reports(reports: &[FaultReport]) {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "fault",
        "requests",
        "failed",
        "availability",
        "longest gap",
        "msgs lost",
        "writes lost",
        "duplicates",
        "recovery",
    ]);
    for report in reports {
        table.add_row(vec![
            report.label.clone(),
            report.requests.to_string(),
            report.failed.to_string(),
            format!("{:.3} %", report.availability()),
            format!(
                "{:.2} s ({})",
                report.longest_gap.as_secs_f64(),
                report.gap_service
            ),
            report.lost.to_string(),
            report.writes_lost.to_string(),
            report.duplicates.to_string(),
            format!("{:.2} s", report.recovery.as_secs_f64()),
        ]);
    }
    println!("{table}");
}
