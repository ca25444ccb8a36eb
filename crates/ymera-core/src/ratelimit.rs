//! GCRA rate limiting (the generic cell rate algorithm, as in redis-cell).
//!
//! A limit is `limit` requests per `period`, with a burst of `limit`. Each
//! key stores one number, its theoretical arrival time (TAT). With Redis the
//! check is one atomic Lua script using the Redis server's clock, so every
//! replica shares the limit; without Redis an in-process table is used (for a
//! single instance). When a configured Redis fails, the check falls back to
//! the in-process table for that call and logs a warning: limits are then
//! per replica until Redis returns, rather than refusing all traffic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Violation};

/// A limit: `limit` units per `period` (burst = `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Units allowed per period (≥ 1).
    pub limit: u32,
    /// The period (≥ 1 ms).
    pub period: Duration,
}

impl RateLimit {
    /// `limit` per `period`.
    pub fn new(limit: u32, period: Duration) -> Self {
        RateLimit { limit, period }
    }

    /// Checks `cost` against this limit: cost must be 1..=limit, limit ≥ 1,
    /// period between 1 ms and 1 day.
    pub fn validate(&self, cost: i64) -> Result<u32, Error> {
        let mut violations = Vec::new();
        if self.limit == 0 {
            violations.push(Violation::new("/limit", "must be at least 1"));
        }
        if self.period < Duration::from_millis(1) || self.period > Duration::from_secs(86_400) {
            violations.push(Violation::new(
                "/period_ms",
                "must be between 1 and 86400000",
            ));
        }
        if cost < 1 {
            violations.push(Violation::new("/cost", "must be at least 1"));
        } else if cost > i64::from(self.limit) {
            violations.push(Violation::new("/cost", "must not exceed the limit"));
        }
        if violations.is_empty() {
            Ok(u32::try_from(cost).unwrap_or(u32::MAX))
        } else {
            Err(Error::validation(violations))
        }
    }

    fn interval_us(&self) -> f64 {
        self.period.as_micros() as f64 / f64::from(self.limit.max(1))
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Units still available right now.
    pub remaining: u32,
    /// When refused: how long until `cost` units are available.
    pub retry_after_ms: u64,
    /// How long until the key is back to a full burst.
    pub reset_after_ms: u64,
}

impl RateDecision {
    /// `Err(429 rate_limited)` with `retry_after_ms` when refused.
    pub fn into_result(self) -> Result<RateDecision, Error> {
        if self.allowed {
            Ok(self)
        } else {
            Err(Error::rate_limited(self.retry_after_ms.max(1)))
        }
    }
}

/// The GCRA step shared by the in-process table (the Lua script mirrors it).
/// Times are microseconds. Returns the decision and the new TAT if allowed.
fn gcra(
    now: f64,
    stored_tat: Option<f64>,
    limit: RateLimit,
    cost: u32,
) -> (RateDecision, Option<f64>) {
    let interval = limit.interval_us();
    let burst_offset = limit.period.as_micros() as f64;
    let tat = stored_tat.unwrap_or(now).max(now);
    let new_tat = tat + interval * f64::from(cost);
    let allow_at = new_tat - burst_offset;
    let diff = now - allow_at;
    let ms = |us: f64| (us.max(0.0) / 1000.0).ceil() as u64;
    if diff < 0.0 {
        let remaining = ((now - (tat - burst_offset)) / interval).floor().max(0.0) as u32;
        return (
            RateDecision {
                allowed: false,
                remaining,
                retry_after_ms: ms(-diff),
                reset_after_ms: ms(tat - now),
            },
            None,
        );
    }
    (
        RateDecision {
            allowed: true,
            remaining: (diff / interval).floor() as u32,
            retry_after_ms: 0,
            reset_after_ms: ms(new_tat - now),
        },
        Some(new_tat),
    )
}

const GCRA_LUA: &str = r#"
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = period / limit
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local new_tat = tat + interval * cost
local diff = now - (new_tat - period)
if diff < 0 then
  local remaining = math.max(0, math.floor((now - (tat - period)) / interval))
  return {0, remaining, math.ceil(-diff / 1000), math.ceil((tat - now) / 1000)}
end
local ttl_ms = math.max(1, math.ceil((new_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
return {1, math.floor(diff / interval), 0, ttl_ms}
"#;

/// Most keys the in-process table holds; full keys are purged first.
pub const MAX_LOCAL_KEYS: usize = 100_000;

/// A GCRA limiter, shared through Redis when one is given.
pub struct RateLimiter {
    prefix: String,
    redis: Option<redis::aio::ConnectionManager>,
    script: redis::Script,
    local: Mutex<HashMap<String, f64>>,
    epoch: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.prefix)
            .field("shared", &self.redis.is_some())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter whose Redis keys start with `prefix` (e.g. `ymera:rl:comm:`).
    pub fn new(prefix: &str, redis: Option<redis::aio::ConnectionManager>) -> Self {
        RateLimiter {
            prefix: prefix.to_owned(),
            redis,
            script: redis::Script::new(GCRA_LUA),
            local: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// Whether the limit is shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Takes `cost` units for `key` if available. `cost` must be 1..=limit
    /// (use [`RateLimit::validate`] on untrusted input first).
    pub async fn check(&self, key: &str, limit: RateLimit, cost: u32) -> RateDecision {
        let cost = cost.clamp(1, limit.limit.max(1));
        if let Some(redis) = &self.redis {
            match self.check_redis(redis, key, limit, cost).await {
                Ok(decision) => return decision,
                Err(err) => {
                    tracing::warn!(error = %err, "Redis rate limit check failed; using the in-process limiter")
                }
            }
        }
        self.check_local(key, limit, cost)
    }

    async fn check_redis(
        &self,
        redis: &redis::aio::ConnectionManager,
        key: &str,
        limit: RateLimit,
        cost: u32,
    ) -> Result<RateDecision, redis::RedisError> {
        let mut conn = redis.clone();
        let mut invocation = self.script.key(format!("{}{key}", self.prefix));
        invocation
            .arg(limit.period.as_micros() as u64)
            .arg(limit.limit)
            .arg(cost);
        let (allowed, remaining, retry, reset): (i64, i64, i64, i64) =
            invocation.invoke_async(&mut conn).await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            retry_after_ms: u64::try_from(retry.max(0)).unwrap_or(0),
            reset_after_ms: u64::try_from(reset.max(0)).unwrap_or(0),
        })
    }

    fn check_local(&self, key: &str, limit: RateLimit, cost: u32) -> RateDecision {
        let now = self.epoch.elapsed().as_micros() as f64;
        self.check_local_at(now, key, limit, cost)
    }

    /// The in-process check at an explicit time (µs since the limiter's
    /// epoch), for deterministic tests.
    pub fn check_local_at(
        &self,
        now_us: f64,
        key: &str,
        limit: RateLimit,
        cost: u32,
    ) -> RateDecision {
        let mut table = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_LOCAL_KEYS && !table.contains_key(key) {
            // A TAT in the past means the key is back to a full burst.
            table.retain(|_, tat| *tat > now_us);
        }
        let (decision, new_tat) = gcra(now_us, table.get(key).copied(), limit, cost);
        if let Some(tat) = new_tat {
            table.insert(key.to_owned(), tat);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: f64 = 1_000_000.0;

    #[test]
    fn allows_a_burst_then_refuses_with_retry_after() {
        let rl = RateLimiter::new("t:", None);
        let limit = RateLimit::new(10, Duration::from_secs(1));
        for i in 0..10 {
            let d = rl.check_local_at(0.0, "k", limit, 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let d = rl.check_local_at(0.0, "k", limit, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 100);
        assert_eq!(d.reset_after_ms, 1000);
        // One interval later exactly one more is allowed.
        assert!(rl.check_local_at(0.1 * SEC, "k", limit, 1).allowed);
        assert!(!rl.check_local_at(0.1 * SEC, "k", limit, 1).allowed);
    }

    #[test]
    fn keys_are_independent() {
        let rl = RateLimiter::new("t:", None);
        let limit = RateLimit::new(1, Duration::from_secs(1));
        assert!(rl.check_local_at(0.0, "a", limit, 1).allowed);
        assert!(rl.check_local_at(0.0, "b", limit, 1).allowed);
        assert!(!rl.check_local_at(0.0, "a", limit, 1).allowed);
    }

    #[test]
    fn burst_at_a_window_boundary_does_not_exceed_the_limit() {
        // A fixed-window counter would allow 2x at the boundary; GCRA never
        // allows more than limit + elapsed/interval.
        let rl = RateLimiter::new("t:", None);
        let limit = RateLimit::new(100, Duration::from_secs(1));
        let mut allowed = 0;
        for step in 0..200 {
            let t = 0.99 * SEC + f64::from(step) * 100.0; // 0.99 s .. 1.01 s
            if rl.check_local_at(t, "k", limit, 1).allowed {
                allowed += 1;
            }
        }
        // Over 20 ms: the burst of 100 plus at most 2 refills.
        assert!(allowed <= 102, "{allowed}");
    }

    #[test]
    fn cost_is_validated() {
        let limit = RateLimit::new(5, Duration::from_secs(1));
        assert!(limit.validate(0).is_err());
        assert!(limit.validate(-3).is_err());
        assert!(limit.validate(6).is_err());
        assert_eq!(limit.validate(5).unwrap(), 5);
        assert!(
            RateLimit::new(0, Duration::from_secs(1))
                .validate(1)
                .is_err()
        );
    }

    #[test]
    fn larger_cost_takes_more_units() {
        let rl = RateLimiter::new("t:", None);
        let limit = RateLimit::new(10, Duration::from_secs(1));
        let d = rl.check_local_at(0.0, "k", limit, 7);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        let d = rl.check_local_at(0.0, "k", limit, 4);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 100);
    }
}
