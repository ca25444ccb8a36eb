//! Tunables of the communication agent, read from the environment.
//!
//! Every variable is optional; a malformed value stops the process at start
//! with one line naming it (exit 64), like the shared settings.

use std::time::Duration;

use ymera_core::config::ConfigError;
use ymera_core::config_watch::WatchOptions;
use ymera_core::env::Env;
use ymera_core::ratelimit::RateLimit;
use ymera_core::resilience::{BreakerConfig, RetryPolicy};

/// The settings the config manager may change while the agent runs (the
/// keys of its document: the variable names without `COMM_`, lower case).
/// The rest shape streams, consumers and breakers and are read at start.
pub const LIVE_KEYS: &[&str] = &[
    "rate_limit",
    "rate_period_ms",
    "max_attempts",
    "retry_base_ms",
    "retry_cap_ms",
    "inbox_timeout_ms",
];

/// Growth of the backoff between delivery attempts.
pub const RETRY_FACTOR: u32 = 3;
/// Most of a backoff delay the jitter takes off (20 %).
pub const RETRY_JITTER: f64 = 0.2;

/// Tunables of routing and delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct CommSettings {
    /// Sends allowed per sender per `rate_period` (`COMM_RATE_LIMIT`, default 100).
    pub rate_limit: u32,
    /// The rate-limit period (`COMM_RATE_PERIOD_MS`, default 1000).
    pub rate_period: Duration,
    /// Delivery attempts per copy before it is dead-lettered (`COMM_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Base of the backoff between attempts (`COMM_RETRY_BASE_MS`, default 2000): the
    /// delay before retry `n` (0-based) is `min(cap, base·3^n)` less up to 20 % jitter
    /// ([`CommSettings::retry_delay`]).
    pub retry_base: Duration,
    /// Cap of one backoff delay (`COMM_RETRY_CAP_MS`, default 60000).
    pub retry_cap: Duration,
    /// Undelivered copies allowed per recipient (`COMM_BACKLOG_LIMIT`, default 10000).
    pub backlog_limit: u32,
    /// How long a recipient has to answer one inbox request (`COMM_INBOX_TIMEOUT_MS`, default 5000).
    pub inbox_timeout: Duration,
    /// JetStream duplicate window for resends of one id (`COMM_DUPLICATE_WINDOW_S`, default 120).
    pub duplicate_window: Duration,
    /// How long a send waits for JetStream to acknowledge its copies before it keeps
    /// them in the PostgreSQL outbox instead (`COMM_PUBLISH_TIMEOUT_MS`, default 1000;
    /// [`crate::outbox`]).
    pub publish_timeout: Duration,
    /// Most messages waiting in the outbox; past it a send JetStream cannot store is
    /// answered 503 (`COMM_OUTBOX_LIMIT`, default 100000).
    pub outbox_limit: u64,
    /// Failures in a row that open a recipient's circuit (`COMM_BREAKER_FAILURES`, default 5).
    pub breaker_failures: u32,
    /// How long an open circuit stays open before a probe (`COMM_BREAKER_OPEN_MS`, default 30000).
    pub breaker_open: Duration,
    /// Copies of one recipient delivered concurrently (`COMM_DELIVERY_CONCURRENCY`, default 32).
    pub delivery_concurrency: usize,
    /// History older than this is moved to `message_history_archive` (`COMM_RETENTION_DAYS`, default 30).
    pub retention: Duration,
    /// How often the retention job runs (`COMM_RETENTION_INTERVAL_S`, default 3600).
    pub retention_interval: Duration,
    /// How the agent follows its document in the config manager
    /// (re-fetched every `CONFIG_CACHE_TTL`, default 300 s).
    pub watch: WatchOptions,
}

impl Default for CommSettings {
    fn default() -> Self {
        CommSettings {
            rate_limit: 100,
            rate_period: Duration::from_secs(1),
            max_attempts: 5,
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(60),
            backlog_limit: 10_000,
            inbox_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(1),
            outbox_limit: 100_000,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(30),
            delivery_concurrency: 32,
            retention: Duration::from_secs(30 * 86_400),
            retention_interval: Duration::from_secs(3600),
            watch: WatchOptions {
                resync_interval: ymera_core::config_watch::DEFAULT_CONFIG_CACHE_TTL,
            },
        }
    }
}

impl CommSettings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::from_process())
    }

    /// Reads settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::read(&Env::from_lookup(lookup))
    }

    /// Reads settings from `env`.
    pub fn read(env: &Env<'_>) -> Result<Self, ConfigError> {
        let d = CommSettings::default();
        Ok(CommSettings {
            rate_limit: env.number("COMM_RATE_LIMIT", d.rate_limit, 1..=1_000_000)?,
            rate_period: env.millis("COMM_RATE_PERIOD_MS", d.rate_period, 1..=86_400_000)?,
            max_attempts: env.number("COMM_MAX_ATTEMPTS", d.max_attempts, 1..=100)?,
            retry_base: env.millis("COMM_RETRY_BASE_MS", d.retry_base, 1..=600_000)?,
            retry_cap: env.millis("COMM_RETRY_CAP_MS", d.retry_cap, 1..=3_600_000)?,
            backlog_limit: env.number("COMM_BACKLOG_LIMIT", d.backlog_limit, 1..=10_000_000)?,
            inbox_timeout: env.millis("COMM_INBOX_TIMEOUT_MS", d.inbox_timeout, 10..=600_000)?,
            duplicate_window: env.seconds(
                "COMM_DUPLICATE_WINDOW_S",
                d.duplicate_window,
                1..=7 * 86_400,
            )?,
            publish_timeout: env.millis(
                "COMM_PUBLISH_TIMEOUT_MS",
                d.publish_timeout,
                10..=60_000,
            )?,
            outbox_limit: env.number("COMM_OUTBOX_LIMIT", d.outbox_limit, 1..=10_000_000)?,
            breaker_failures: env.number("COMM_BREAKER_FAILURES", d.breaker_failures, 1..=1000)?,
            breaker_open: env.millis("COMM_BREAKER_OPEN_MS", d.breaker_open, 1..=3_600_000)?,
            delivery_concurrency: env.number(
                "COMM_DELIVERY_CONCURRENCY",
                d.delivery_concurrency,
                1..=1024,
            )?,
            retention: Duration::from_secs(
                env.number(
                    "COMM_RETENTION_DAYS",
                    d.retention.as_secs() / 86_400,
                    1..=36_500,
                )? * 86_400,
            ),
            retention_interval: env.seconds(
                "COMM_RETENTION_INTERVAL_S",
                d.retention_interval,
                1..=86_400,
            )?,
            watch: WatchOptions::from_env(env)?,
        })
    }

    /// These settings with the config manager's document for agent
    /// `communication` applied over them: a JSON object whose keys
    /// are the [`LIVE_KEYS`] (`{"rate_limit": 500, "max_attempts": 3}`),
    /// checked with the same bounds as the variables. Any other key is an
    /// error, so a bad document never goes live.
    pub fn with_document(&self, document: &serde_json::Value) -> Result<Self, ConfigError> {
        let empty = serde_json::Map::new();
        let object = match document {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => &empty,
            _ => {
                return Err(ConfigError {
                    variable: "config",
                    reason: "the communication agent's configuration must be a JSON object".into(),
                });
            }
        };
        if let Some(key) = object.keys().find(|k| !LIVE_KEYS.contains(&k.as_str())) {
            return Err(ConfigError {
                variable: "config",
                reason: format!(
                    "{key:?} cannot be changed while the agent runs; the keys are {}",
                    LIVE_KEYS.join(", ")
                ),
            });
        }
        // The document's values, checked like the variables they stand for.
        let given = Self::from_lookup(|name| {
            let key = name
                .strip_prefix("COMM_")
                .unwrap_or(name)
                .to_ascii_lowercase();
            match object.get(&key)? {
                serde_json::Value::String(text) => Some(text.clone()),
                value => Some(value.to_string()),
            }
        })?;
        let mut out = self.clone();
        for key in object.keys() {
            match key.as_str() {
                "rate_limit" => out.rate_limit = given.rate_limit,
                "rate_period_ms" => out.rate_period = given.rate_period,
                "max_attempts" => out.max_attempts = given.max_attempts,
                "retry_base_ms" => out.retry_base = given.retry_base,
                "retry_cap_ms" => out.retry_cap = given.retry_cap,
                "inbox_timeout_ms" => out.inbox_timeout = given.inbox_timeout,
                _ => {}
            }
        }
        Ok(out)
    }

    /// The per-sender rate limit.
    pub fn rate(&self) -> RateLimit {
        RateLimit::new(self.rate_limit, self.rate_period)
    }

    /// The upper bound of the delay before retry `retry` (0-based): `min(cap, base·3^retry)`.
    pub fn retry_ceiling(&self, retry: u32) -> Duration {
        let factor = RETRY_FACTOR.checked_pow(retry.min(20)).unwrap_or(u32::MAX);
        self.retry_base.saturating_mul(factor).min(self.retry_cap)
    }

    /// The delay before retry `retry`: the ceiling less a jitter of up to
    /// [`RETRY_JITTER`] of it, so copies failing together spread out while the schedule
    /// keeps its length. With the defaults (2 s, ×3, cap 60 s, 5 attempts) the four
    /// delays are ~2, 6, 18 and 54 s: the last attempt comes 64–80 s after the first, so a
    /// recipient away or failing for up to 60 s loses nothing to the DLQ.
    pub fn retry_delay(&self, retry: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.retry_ceiling(retry);
        let cut: f64 = rng.random_range(0.0..=RETRY_JITTER);
        ceiling.mul_f64(1.0 - cut)
    }

    /// The shortest time from the first attempt to the last one (every delay at its
    /// lowest jitter; attempts themselves take no time).
    pub fn shortest_schedule(&self) -> Duration {
        (0..self.max_attempts.saturating_sub(1))
            .map(|n| self.retry_ceiling(n).mul_f64(1.0 - RETRY_JITTER))
            .sum()
    }

    /// The retry policy between delivery attempts, as a `RetryPolicy` (its ceilings are
    /// base·2^n; delivery itself uses [`CommSettings::retry_delay`]).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: self.retry_base,
            cap: self.retry_cap,
            max_attempts: self.max_attempts,
            max_elapsed: None,
            seed: None,
        }
    }

    /// The per-recipient circuit breaker settings.
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: self.breaker_failures,
            open_duration: self.breaker_open,
            ..BreakerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_default_schedule_outlasts_a_minute_of_absence() {
        let d = CommSettings::default();
        assert_eq!(d.max_attempts, 5);
        assert!(
            d.shortest_schedule() >= Duration::from_secs(60),
            "{:?}",
            d.shortest_schedule()
        );
        let ceilings: Vec<u64> = (0..4).map(|n| d.retry_ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [2, 6, 18, 54]);
        let mut rng = rand::rng();
        for n in 0..4 {
            for _ in 0..100 {
                let delay = d.retry_delay(n, &mut rng);
                assert!(delay <= d.retry_ceiling(n));
                assert!(delay >= d.retry_ceiling(n).mul_f64(0.8));
            }
        }
        assert_eq!(d.retry_ceiling(10), d.retry_cap);
    }

    #[test]
    fn defaults_and_overrides() {
        let empty = CommSettings::from_lookup(|_| None).unwrap();
        assert_eq!(empty, CommSettings::default());
        let vars: HashMap<&str, &str> =
            [("COMM_MAX_ATTEMPTS", "3"), ("COMM_BACKLOG_LIMIT", "50")].into();
        let s = CommSettings::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.backlog_limit, 50);
    }

    #[test]
    fn documents_override_live_settings_within_bounds() {
        let base = CommSettings {
            max_attempts: 7,
            backlog_limit: 9,
            ..CommSettings::default()
        };
        let doc = serde_json::json!({"rate_limit": 3, "retry_base_ms": "50"});
        let s = base.with_document(&doc).unwrap();
        assert_eq!((s.rate_limit, s.max_attempts, s.backlog_limit), (3, 7, 9));
        assert_eq!(s.retry_base, Duration::from_millis(50));
        assert_eq!(base.with_document(&serde_json::Value::Null).unwrap(), base);
        for bad in [
            serde_json::json!({"rate_limit": 0}),
            serde_json::json!({"max_attempts": "many"}),
            serde_json::json!({"backlog_limit": 5}),
            serde_json::json!({"colour": "blue"}),
            serde_json::json!([1, 2]),
        ] {
            assert!(base.with_document(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let err = CommSettings::from_lookup(|k| (k == "COMM_RATE_LIMIT").then(|| "lots".into()))
            .unwrap_err();
        assert_eq!(err.variable, "COMM_RATE_LIMIT");
        let err = CommSettings::from_lookup(|k| (k == "COMM_MAX_ATTEMPTS").then(|| "0".into()))
            .unwrap_err();
        assert_eq!(err.variable, "COMM_MAX_ATTEMPTS");
    }
}
