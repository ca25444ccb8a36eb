//! Delivery counters and the latency histogram of this instance, mirrored to
//! Prometheus (names from deploy/METRICS.md) and served as JSON by
//! `communication.metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters and latency of this instance since it started.
#[derive(Debug)]
pub struct Stats {
    sent: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    deduplicated: AtomicU64,
    rate_limited: AtomicU64,
    expired: AtomicU64,
    platform_deferred: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

/// The counters as JSON.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Counters {
    /// Envelopes accepted by send.
    pub sent: u64,
    /// Copies acknowledged by their recipient.
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed: u64,
    /// Copies moved to the DLQ.
    pub dead_lettered: u64,
    /// Sends whose every copy was a duplicate of a known id.
    pub deduplicated: u64,
    /// Sends refused with 429.
    pub rate_limited: u64,
    /// Copies dropped because they expired.
    pub expired: u64,
    /// Attempts not made or not counted because the platform itself failed (its NATS
    /// connection down or reconnecting): no attempt was spent on the recipient.
    #[serde(default)]
    pub platform_deferred: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean delivery time (accept → acknowledgement), the seed's `avg_delivery_time`.
    #[serde(default)]
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            deduplicated: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            platform_deferred: AtomicU64::new(0),
            // 1 µs .. 1 h at 3 significant digits: a fixed ~200 KB.
            latency_us: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()),
        }
    }
}

impl Stats {
    /// Registers every counter at zero, so dashboards see them before the
    /// first event.
    pub fn register() {
        for name in [
            "ymera_comm_messages_sent_total",
            "ymera_comm_messages_delivered_total",
            "ymera_comm_messages_failed_total",
            "ymera_comm_messages_dead_lettered_total",
            "ymera_comm_messages_deduplicated_total",
            "ymera_comm_rate_limited_total",
        ] {
            metrics::counter!(name).increment(0);
        }
    }

    /// A send was accepted.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_messages_sent_total").increment(1);
    }

    /// A copy was delivered after `latency`.
    pub fn delivered(&self, latency: Duration) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_messages_delivered_total").increment(1);
        metrics::histogram!("ymera_comm_delivery_latency_seconds").record(latency.as_secs_f64());
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(h) = self
            .latency_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            h.saturating_record(us);
        }
    }

    /// An attempt failed.
    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_messages_failed_total").increment(1);
    }

    /// A copy was dead-lettered.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_messages_dead_lettered_total").increment(1);
    }

    /// A send was a duplicate.
    pub fn deduplicated(&self) {
        self.deduplicated.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_messages_deduplicated_total").increment(1);
    }

    /// A send was refused with 429.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_rate_limited_total").increment(1);
    }

    /// An attempt the platform itself lost (not spent on the recipient).
    pub fn platform_deferred(&self) {
        self.platform_deferred.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ymera_comm_platform_deferred_total").increment(1);
    }

    /// A copy expired before delivery.
    pub fn expired(&self) {
        self.expired.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        Counters {
            sent: self.sent.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            platform_deferred: self.platform_deferred.load(Ordering::Relaxed),
        }
    }

    /// Delivery latency percentiles.
    pub fn latency(&self) -> Latency {
        let guard = self.latency_us.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |us: u64| us as f64 / 1000.0;
        match guard.as_ref() {
            Some(h) if !h.is_empty() => Latency {
                count: h.len(),
                mean_ms: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
                p50_ms: ms(h.value_at_quantile(0.50)),
                p95_ms: ms(h.value_at_quantile(0.95)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
            },
            _ => Latency {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            },
        }
    }
}
