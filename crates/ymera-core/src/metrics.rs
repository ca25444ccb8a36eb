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
            handle
        })
        .clone()
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
        "ymera_build_info",
        MetricKind::Gauge,
        "1, carries the version",
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

/// Renders the current metrics in the Prometheus text format.
pub fn render() -> String {
    install().render()
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
        let listed = text.lines().filter(|l| l.starts_with("| `ymera_")).count();
        assert_eq!(
            listed,
            CATALOGUE.len(),
            "METRICS.md and the catalogue list the same metrics"
        );
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
