//! The health reply of `<service>.health` (DESIGN §3).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Overall or per-dependency status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Works with reduced function (e.g. the optional Redis is down).
    Degraded,
    /// Cannot serve.
    Unhealthy,
}

/// One dependency's probe result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// healthy or unhealthy.
    pub status: HealthStatus,
    /// Probe round-trip time.
    pub latency_ms: f64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The reply of `<service>.health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Service (micro) name.
    pub service: String,
    /// This instance's id (the NATS Services API id).
    pub instance_id: String,
    /// Service version.
    pub version: String,
    /// Overall status.
    pub status: HealthStatus,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Per-dependency probes: nats, postgres, redis (when used).
    pub checks: BTreeMap<String, CheckResult>,
    /// When the report was made.
    pub timestamp: DateTime<Utc>,
}

impl HealthReport {
    /// Overall status from the checks: any required dependency down →
    /// unhealthy; only optional ones down → degraded.
    pub fn overall(checks: &BTreeMap<String, CheckResult>, optional: &[&str]) -> HealthStatus {
        let mut status = HealthStatus::Healthy;
        for (name, check) in checks {
            if check.status != HealthStatus::Healthy {
                let level = if optional.contains(&name.as_str()) {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Unhealthy
                };
                status = status.max(level);
            }
        }
        status
    }
}
