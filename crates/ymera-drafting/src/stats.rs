//! This replica's counters for `drafting.metrics`: analysis latency (the
//! last [`LATENCY_WINDOW`] analyses) and the expiry job's archives.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Analyses whose latency the percentiles are computed over.
pub const LATENCY_WINDOW: usize = 1024;

#[derive(Debug, Default)]
struct Latencies {
    count: u64,
    total_us: u128,
    recent: VecDeque<u64>,
}

/// Counters of this process since it started.
#[derive(Debug, Default)]
pub struct Stats {
    analyses: Mutex<Latencies>,
    expired: AtomicU64,
    last_expiry_check: Mutex<Option<DateTime<Utc>>>,
}

/// Analysis latency as `drafting.metrics` reports it (milliseconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Analyses since start.
    pub count: u64,
    /// Mean over all of them.
    pub mean_ms: f64,
    /// Percentiles and maximum over the last [`LATENCY_WINDOW`].
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

impl Stats {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one analysis.
    pub fn analysis(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut l = Self::lock(&self.analyses);
        l.count += 1;
        l.total_us += u128::from(us);
        if l.recent.len() == LATENCY_WINDOW {
            l.recent.pop_front();
        }
        l.recent.push_back(us);
    }

    /// The analysis latency summary.
    pub fn analysis_latency(&self) -> LatencySummary {
        let l = Self::lock(&self.analyses);
        let mut sorted: Vec<u64> = l.recent.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            ms(sorted[i])
        };
        LatencySummary {
            count: l.count,
            mean_ms: if l.count == 0 {
                0.0
            } else {
                ms(u64::try_from(l.total_us / u128::from(l.count)).unwrap_or(u64::MAX))
            },
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: sorted.last().map_or(0.0, |u| ms(*u)),
        }
    }

    /// The expiry job archived `n` drafts (and ran now).
    pub fn expired(&self, n: u64) {
        self.expired.fetch_add(n, Ordering::Relaxed);
        *Self::lock(&self.last_expiry_check) = Some(Utc::now());
    }

    /// Drafts this replica's expiry job archived, and when it last ran.
    pub fn expiry(&self) -> (u64, Option<DateTime<Utc>>) {
        (
            self.expired.load(Ordering::Relaxed),
            *Self::lock(&self.last_expiry_check),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_window_and_the_mean_over_all() {
        let s = Stats::default();
        assert_eq!(s.analysis_latency().p99_ms, 0.0);
        for i in 1..=100 {
            s.analysis(Duration::from_millis(i));
        }
        let l = s.analysis_latency();
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p95_ms, 95.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(l.mean_ms, 50.5);
        for _ in 0..LATENCY_WINDOW {
            s.analysis(Duration::from_millis(1));
        }
        let l = s.analysis_latency();
        assert_eq!(l.max_ms, 1.0);
        assert_eq!(l.count, 100 + LATENCY_WINDOW as u64);
    }
}
