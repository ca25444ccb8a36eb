//! Prometheus metrics: one recorder per process, rendered on `/metrics`.
//!
//! Metric names are catalogued in `deploy/METRICS.md`; histograms use the
//! buckets below so they render as Prometheus histograms, not summaries.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds (100 µs … 30 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the render handle.
/// If another recorder was installed first, a detached one is used, so
/// rendering still works but shows only what this crate recorded through it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if a recorder is already installed.
            let _ = metrics::set_global_recorder(recorder);
            describe_catalogue();
            spawn_upkeep(&handle);
            handle
        })
        .clone()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`] on the current
/// runtime. A recorder made with `build_recorder` keeps every sample until `/metrics` is
/// rendered, so a process nobody scrapes grew without bound under load (`ymera-config` by
/// ~1.6 MB/s at 90,000 requests/s). Without a runtime (tests), rendering still drains.
fn spawn_upkeep(handle: &PrometheusHandle) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let handle = handle.clone();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// The kind of a catalogued metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic counter.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution (rendered as a Prometheus histogram).
    Histogram,
}

/// Every metric of the platform with its help text (`deploy/METRICS.md`),
/// described when the recorder is installed so `/metrics` carries `# HELP`
/// lines and passes `promtool check metrics`.
pub const CATALOGUE: &[(&str, MetricKind, &str)] = &[
    (
        "ymera_requests_total",
        MetricKind::Counter,
        "requests handled by an endpoint",
    ),
    (
        "ymera_request_errors_total",
        MetricKind::Counter,
        "requests answered with an error reply (numeric code)",
    ),
    (
        "ymera_request_duration_seconds",
        MetricKind::Histogram,
        "handler time from receipt to reply",
    ),
    ("ymera_up", MetricKind::Gauge, "1 while the process runs"),
    (
        "ymera_dependency_up",
        MetricKind::Gauge,
        "1 while a dependency (nats, postgres, redis, a called service) answers its probe, 0 while it does not",
    ),
    (
        "ymera_build_info",
        MetricKind::Gauge,
        "1, carries the version",
    ),
    (
        "ymera_retention_deleted_total",
        MetricKind::Counter,
        "rows the retention job deleted",
    ),
    (
        "ymera_circuit_breaker_state",
        MetricKind::Gauge,
        "0 closed, 1 half-open, 2 open",
    ),
    (
        "ymera_circuit_breaker_transitions_total",
        MetricKind::Counter,
        "state changes of a breaker",
    ),
    (
        "ymera_retry_attempts_total",
        MetricKind::Counter,
        "retries (not first attempts) of an operation",
    ),
    (
        "ymera_retry_budget_exhausted_total",
        MetricKind::Counter,
        "operations that gave up after the last retry",
    ),
    (
        "ymera_comm_messages_sent_total",
        MetricKind::Counter,
        "envelopes accepted by communication.send",
    ),
    (
        "ymera_comm_messages_delivered_total",
        MetricKind::Counter,
        "per-recipient deliveries acknowledged by the recipient",
    ),
    (
        "ymera_comm_messages_failed_total",
        MetricKind::Counter,
        "per-recipient delivery attempts that failed",
    ),
    (
        "ymera_comm_platform_deferred_total",
        MetricKind::Counter,
        "delivery attempts not made or not counted because the platform itself failed",
    ),
    (
        "ymera_comm_messages_dead_lettered_total",
        MetricKind::Counter,
        "per-recipient copies moved to YMERA_DLQ",
    ),
    (
        "ymera_comm_messages_deduplicated_total",
        MetricKind::Counter,
        "sends dropped as duplicates of a known id",
    ),
    (
        "ymera_comm_rate_limited_total",
        MetricKind::Counter,
        "sends refused with 429 by the communication agent",
    ),
    (
        "ymera_comm_delivery_latency_seconds",
        MetricKind::Histogram,
        "time from accept to recipient acknowledgement",
    ),
    (
        "ymera_comm_journal_batch_seconds",
        MetricKind::Histogram,
        "time to write one batch of history and delivery rows to PostgreSQL",
    ),
    (
        "ymera_comm_backlog",
        MetricKind::Gauge,
        "undelivered messages queued for a recipient",
    ),
    (
        "ymera_comm_backlog_capacity",
        MetricKind::Gauge,
        "per-recipient queue capacity (10000)",
    ),
    (
        "ymera_comm_outbox_depth",
        MetricKind::Gauge,
        "messages in the send outbox waiting for JetStream (every replica's, as last counted)",
    ),
    (
        "ymera_comm_outbox_oldest_seconds",
        MetricKind::Gauge,
        "age of the oldest message in the send outbox",
    ),
    (
        "ymera_comm_outbox_written_total",
        MetricKind::Counter,
        "copies written to the send outbox because JetStream did not acknowledge them in time",
    ),
    (
        "ymera_comm_outbox_relayed_total",
        MetricKind::Counter,
        "outbox copies the relay had stored in JetStream",
    ),
    (
        "ymera_comm_outbox_skipped_total",
        MetricKind::Counter,
        "outbox copies older than the duplicate window found in the journal, not published again",
    ),
    (
        "ymera_comm_outbox_refused_total",
        MetricKind::Counter,
        "sends answered 503 because JetStream could not store them and the send outbox was full",
    ),
    (
        "ymera_config_cache_hits_total",
        MetricKind::Counter,
        "config.get answered from cache",
    ),
    (
        "ymera_config_cache_misses_total",
        MetricKind::Counter,
        "config.get that went to PostgreSQL",
    ),
    (
        "ymera_config_changes_total",
        MetricKind::Counter,
        "committed configuration versions",
    ),
    (
        "ymera_config_reload_failures_total",
        MetricKind::Counter,
        "hot reloads a client could not apply",
    ),
    (
        "ymera_security_events_total",
        MetricKind::Counter,
        "security events recorded (audit)",
    ),
    (
        "ymera_security_key_table_live",
        MetricKind::Gauge,
        "1 while the in-memory key table follows PostgreSQL notifications, 0 while keys are checked in PostgreSQL",
    ),
    (
        "ymera_security_key_table_size",
        MetricKind::Gauge,
        "API keys held in the in-memory key table",
    ),
    (
        "ymera_auth_failures_total",
        MetricKind::Counter,
        "rejected credentials (bad key, expired token, …)",
    ),
    (
        "ymera_auth_token_checks_total",
        MetricKind::Counter,
        "bearer tokens checked by a service's authorizer, locally against the JWKS or by the security service",
    ),
    (
        "ymera_rate_limited_total",
        MetricKind::Counter,
        "requests refused by the security rate limiter",
    ),
    (
        "ymera_drafting_collab_sessions",
        MetricKind::Gauge,
        "live collaboration sessions",
    ),
    (
        "ymera_drafting_revisions_total",
        MetricKind::Counter,
        "draft revisions stored",
    ),
    (
        "ymera_drafting_collab_rebuilds_total",
        MetricKind::Counter,
        "collaboration documents a replica rebuilt from the stored session",
    ),
    (
        "ymera_drafting_drafts_expired_total",
        MetricKind::Counter,
        "expired drafts the expiry job archived",
    ),
    (
        "ymera_analysis_files_total",
        MetricKind::Counter,
        "files analysed",
    ),
    (
        "ymera_analysis_findings_total",
        MetricKind::Counter,
        "findings reported",
    ),
];

fn describe_catalogue() {
    for (name, kind, help) in CATALOGUE {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(*name, *help),
            MetricKind::Gauge => metrics::describe_gauge!(*name, *help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
            }
        }
    }
}

/// Renders the current metrics in the Prometheus text format, followed by
/// the standard process metrics ([`process_text`]).
pub fn render() -> String {
    let mut text = install().render();
    text.push_str(&process_text());
    text
}

/// How often the runtime probes the dependencies behind
/// `ymera_dependency_up` (the scrape interval of the shipped Prometheus).
pub const DEPENDENCY_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);

/// Sets `ymera_dependency_up{service, dependency}` to 1 or 0.
pub fn set_dependency_up(service: &str, dependency: &str, up: bool) {
    metrics::gauge!(
        "ymera_dependency_up",
        "service" => service.to_owned(),
        "dependency" => dependency.to_owned()
    )
    .set(if up { 1.0 } else { 0.0 });
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every Linux architecture: the kernel scales to it for user space).
const USER_HZ: f64 = 100.0;

/// The process's own figures, read from `/proc/self` (Linux).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time in seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/{stat,status,fd,limits}` and `/proc/stat`; `None`
    /// where `/proc` is not mounted (not Linux).
    pub fn read() -> Option<ProcessStats> {
        Self::read_at("self")
    }

    /// The same figures of another process (a benchmark's gateway, say); `None` when
    /// it is gone or `/proc` is not mounted.
    pub fn of(pid: u32) -> Option<ProcessStats> {
        Self::read_at(&pid.to_string())
    }

    fn read_at(dir: &str) -> Option<ProcessStats> {
        let stat = std::fs::read_to_string(format!("/proc/{dir}/stat")).ok()?;
        let fields = parse_stat(&stat)?;
        let status = std::fs::read_to_string(format!("/proc/{dir}/status")).unwrap_or_default();
        let open_fds = std::fs::read_dir(format!("/proc/{dir}/fd"))
            .map(|dir| dir.count() as u64)
            .unwrap_or(0);
        let max_fds = std::fs::read_to_string(format!("/proc/{dir}/limits"))
            .ok()
            .and_then(|limits| parse_max_open_files(&limits));
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        Some(ProcessStats {
            cpu_seconds: (fields.utime + fields.stime) as f64 / USER_HZ,
            resident_bytes: status_kb(&status, "VmRSS:").map_or(0, |kb| kb * 1024),
            virtual_bytes: fields.vsize,
            open_fds,
            max_fds,
            start_time_seconds: boot_time
                .map(|boot| boot as f64 + fields.starttime as f64 / USER_HZ),
        })
    }
}

#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
}

/// Fields 14, 15, 22 and 23 of `/proc/<pid>/stat` (after the command in
/// parentheses, which may itself hold spaces and parentheses).
fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
    })
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The standard Prometheus process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`) in
/// the text format; empty where `/proc` is missing.
pub fn process_text() -> String {
    use std::fmt::Write;
    let Some(stats) = ProcessStats::read() else {
        return String::new();
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        );
    };
    metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        format!("{}", stats.cpu_seconds),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        stats.resident_bytes.to_string(),
    );
    metric(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        stats.virtual_bytes.to_string(),
    );
    metric(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        stats.open_fds.to_string(),
    );
    if let Some(max) = stats.max_fds {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
    if let Some(start) = stats.start_time_seconds {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{start}"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_matches_deploy_metrics_md() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/METRICS.md"
        ))
        .unwrap();
        for (name, _, _) in CATALOGUE {
            assert!(
                text.contains(&format!("`{name}`")),
                "{name} not in METRICS.md"
            );
        }
        // Metrics described by the crate that records them (the gateway's
        // `describe_metrics`, the CLI's `ymera backup schedule` exposition)
        // are checked by the live-binaries deployment check instead.
        const DESCRIBED_ELSEWHERE: &[&str] = &["ymera_gateway_", "ymera_backup_"];
        let listed: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| `ymera_"))
            .filter_map(|l| l.split('`').nth(1))
            .filter(|n| !DESCRIBED_ELSEWHERE.iter().any(|p| n.starts_with(p)))
            .collect();
        for name in &listed {
            assert!(
                CATALOGUE.iter().any(|(c, _, _)| c == name),
                "{name} is in METRICS.md but not in the catalogue"
            );
        }
        assert_eq!(
            listed.len(),
            CATALOGUE.len(),
            "METRICS.md and the catalogue list the same metrics"
        );
    }

    #[test]
    fn proc_stat_fields_are_parsed_past_the_command() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
                    250 50 0 0 20 0 9 0 12345 987654321 2048 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(StatFields {
                utime: 250,
                stime: 50,
                starttime: 12345,
                vsize: 987654321,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        assert_eq!(
            parse_boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1700000000)
        );
        assert_eq!(
            status_kb("Name:\tx\nVmRSS:\t  5120 kB\n", "VmRSS:"),
            Some(5120)
        );
    }

    #[test]
    fn process_metrics_are_rendered_from_proc() {
        let stats = ProcessStats::read().expect("/proc is mounted");
        assert!(stats.resident_bytes > 0, "{stats:?}");
        assert!(stats.open_fds > 0, "{stats:?}");
        let start = stats.start_time_seconds.expect("btime");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start}"
        );
        let text = render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }

    #[test]
    fn rendered_metrics_carry_help_lines() {
        install();
        metrics::counter!("ymera_requests_total", "service" => "t", "endpoint" => "t.x")
            .increment(1);
        let text = render();
        assert!(
            text.contains("# HELP ymera_requests_total requests handled by an endpoint"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE ymera_requests_total counter"),
            "{text}"
        );
    }
}
