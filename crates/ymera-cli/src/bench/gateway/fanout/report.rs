//! The fan-out phase's report: per-target rows, memory, CPU, and the table.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::subscribers::{End, Outcome};

/// CPU used by the processes of the run while the events were published and
/// delivered, in cores (CPU seconds / wall seconds).
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// Wall seconds from the first publish until the last event arrived (or the wait ended).
    pub seconds: f64,
    /// The gateway.
    pub gateway_cores: Option<f64>,
    /// This process: the subscribers, the publisher and the baseline.
    pub client_cores: Option<f64>,
    /// The nats-server.
    pub nats_server_cores: Option<f64>,
}

/// Latency and delivery of one target.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub target: String,
    /// Subscribers of this target.
    pub subscribers: usize,
    /// Receive − send time percentiles in microseconds, over every (event, subscriber).
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// P99 relative to the baseline's.
    pub p99_vs_baseline: f64,
    /// Events × subscribers.
    pub expected: u64,
    /// (event, subscriber) pairs received at least once.
    pub received: u64,
    /// Pairs never received (including subscribers that never connected).
    pub missing: u64,
    /// Repeated receipts.
    pub duplicates: u64,
    /// Subscribers the gateway ended as `slow_consumer`.
    pub dropped_slow_consumer: usize,
    /// Subscribers whose stream ended otherwise before the end of the run.
    pub closed_early: usize,
    /// Subscribers that never connected.
    pub connect_failures: usize,
}

/// The gateway's resident memory (KiB) and what an idle subscriber costs.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Before any subscriber connected.
    pub rss_before_kib: Option<u64>,
    /// With the WebSocket subscribers connected and idle.
    pub rss_idle_ws_kib: Option<u64>,
    /// With every subscriber connected and idle.
    pub rss_idle_all_kib: Option<u64>,
    /// After the events, subscribers still connected.
    pub rss_end_kib: Option<u64>,
    /// (idle with WebSockets − before) / WebSocket subscribers.
    pub kib_per_idle_ws: Option<f64>,
    /// (idle with all − idle with WebSockets) / SSE subscribers.
    pub kib_per_idle_sse: Option<f64>,
    /// (idle with all − before) / subscribers.
    pub kib_per_idle_subscriber: Option<f64>,
}

/// The phase's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub subscribers: usize,
    pub websocket_subscribers: usize,
    pub sse_subscribers: usize,
    /// Events published.
    pub events: u64,
    /// Asked rate.
    pub event_rate_per_s: f64,
    /// Achieved publish rate.
    pub published_per_s: f64,
    pub subject: String,
    /// The gateway's `GATEWAY_EVENTS_FLUSH_INTERVAL`.
    pub flush_interval: String,
    /// How long connecting every subscriber took, in seconds.
    pub connect_seconds: f64,
    /// Baseline first, then WebSocket, SSE, and every gateway subscriber.
    pub results: Vec<Row>,
    pub memory: Memory,
    pub cpu: Cpu,
    /// Every event reached every subscriber (none missing, none connected late).
    pub every_event_delivered: bool,
    /// The gateway subscribers' P99 ≤ 50 ms.
    pub p99_target_met: bool,
}

pub(super) fn row(
    target: &str,
    outcomes: &[Outcome],
    histogram: &Histogram<u64>,
    events: u64,
) -> Row {
    let expected = events * outcomes.len() as u64;
    let received: u64 = outcomes.iter().map(|o| o.unique).sum();
    Row {
        target: target.to_owned(),
        subscribers: outcomes.len(),
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        p99_vs_baseline: 1.0,
        expected,
        received,
        missing: expected.saturating_sub(received),
        duplicates: outcomes.iter().map(|o| o.duplicates + o.strays).sum(),
        dropped_slow_consumer: outcomes
            .iter()
            .filter(|o| o.end == End::SlowConsumer)
            .count(),
        closed_early: outcomes
            .iter()
            .filter(|o| matches!(o.end, End::Closed(_)))
            .count(),
        connect_failures: outcomes
            .iter()
            .filter(|o| matches!(o.end, End::ConnectFailed(_)))
            .count(),
    }
}

/// Names on stderr the first few reasons subscribers failed or ended early.
pub(super) fn report_endings(outcomes: &[Outcome]) {
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for outcome in outcomes {
        let reason = match &outcome.end {
            End::Open => continue,
            End::SlowConsumer => "ended as slow_consumer".to_owned(),
            End::Closed(why) => format!("closed early: {why}"),
            End::ConnectFailed(why) => format!("never connected: {why}"),
        };
        match reasons.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => reasons.push((reason, 1)),
        }
    }
    for (reason, n) in reasons.iter().take(5) {
        eprintln!("{n} subscriber(s) {reason}");
    }
}

/// Prints the report as tables (JSON is printed by the caller).
pub fn print(report: &Report) {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "target",
        "subs",
        "p50",
        "p90",
        "p99",
        "max",
        "p99 vs base",
        "received / expected",
        "missing",
        "dup",
        "slow_consumer",
        "closed",
        "failed",
    ]);
    for r in &report.results {
        table.add_row(vec![
            r.target.clone(),
            r.subscribers.to_string(),
            ms(r.p50_us),
            ms(r.p90_us),
            ms(r.p99_us),
            ms(r.max_us),
            format!("{:.1}x", r.p99_vs_baseline),
            format!("{} / {}", r.received, r.expected),
            r.missing.to_string(),
            r.duplicates.to_string(),
            r.dropped_slow_consumer.to_string(),
            r.closed_early.to_string(),
            r.connect_failures.to_string(),
        ]);
    }
    println!("{table}");
    let kib = |v: Option<u64>| {
        v.map_or("n/a".to_owned(), |v| {
            format!("{:.1} MiB", v as f64 / 1024.0)
        })
    };
    let per = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} KiB"));
    let m = &report.memory;
    println!(
        "{} subscribers ({} WebSocket, {} SSE) connected in {:.1} s; {} events at {:.0}/s (asked {:.0}/s) on {}; flush interval {}",
        report.subscribers,
        report.websocket_subscribers,
        report.sse_subscribers,
        report.connect_seconds,
        report.events,
        report.published_per_s,
        report.event_rate_per_s,
        report.subject,
        report.flush_interval
    );
    println!(
        "gateway RSS: {} before, {} with the WebSockets idle, {} with all idle, {} at the end; per idle subscriber: {} (WebSocket {}, SSE {})",
        kib(m.rss_before_kib),
        kib(m.rss_idle_ws_kib),
        kib(m.rss_idle_all_kib),
        kib(m.rss_end_kib),
        per(m.kib_per_idle_subscriber),
        per(m.kib_per_idle_ws),
        per(m.kib_per_idle_sse)
    );
    let cores = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2}"));
    println!(
        "CPU while publishing and delivering ({:.1} s), in cores: gateway {}, this client {}, nats-server {} (of {} on this machine)",
        report.cpu.seconds,
        cores(report.cpu.gateway_cores),
        cores(report.cpu.client_cores),
        cores(report.cpu.nats_server_cores),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "targets: every event reaches every subscriber: {}; fan-out P99 ≤ 50 ms: {}",
        crate::bench::verdict(report.every_event_delivered),
        crate::bench::verdict(report.p99_target_met)
    );
}
