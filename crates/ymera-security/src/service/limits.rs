//! `security.ratelimit.check`: the platform's shared rate limiter.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ymera_core::error::Violation;
use ymera_core::ratelimit::RateLimit;
use ymera_core::{Error, Result};

use super::Caller;
use crate::events::SecurityEvent;
use crate::state::SharedState;

/// `security.ratelimit.check` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRequest {
    /// What is limited, e.g. `user:alice` (≤ 256 characters).
    pub key: String,
    pub limit: u32,
    pub period_ms: u64,
    /// Units taken (1..=limit; default 1).
    #[serde(default = "one")]
    pub cost: i64,
}

fn one() -> i64 {
    1
}

/// `security.ratelimit.check` reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct RateLimitReply {
    /// Whether the units were taken.
    pub allowed: bool,
    /// The key asked about.
    pub key: String,
    /// Units still available right now.
    pub remaining: u32,
    /// How long until the key is back to a full burst.
    pub reset_after_ms: u64,
    /// When refused: how long until `cost` units are available.
    pub retry_after_ms: u64,
    /// Whether the count is shared by every replica (Redis) or this one's.
    pub shared: bool,
}

pub(super) async fn check(
    state: SharedState,
    _: Caller,
    body: RateLimitRequest,
) -> Result<RateLimitReply> {
    let limit = RateLimit::new(body.limit, Duration::from_millis(body.period_ms));
    let mut violations = Vec::new();
    if body.key.is_empty()
        || body.key.chars().count() > 256
        || body.key.chars().any(char::is_control)
    {
        violations.push(Violation::new(
            "/key",
            "1-256 characters, no control characters",
        ));
    }
    let cost = match limit.validate(body.cost) {
        Ok(cost) => Some(cost),
        Err(err) => {
            if violations.is_empty() {
                return Err(err);
            }
            None
        }
    };
    if !violations.is_empty() {
        return Err(Error::validation(violations));
    }
    let cost = cost.unwrap_or(1);
    let decision = state.limiter.check(&body.key, limit, cost).await;
    if !decision.allowed {
        metrics::counter!("ymera_rate_limited_total", "scope" => "check").increment(1);
        state
            .record(SecurityEvent::new(
                "rate_limit_exceeded",
                serde_json::json!({"key": body.key, "limit": body.limit, "period_ms": body.period_ms}),
            ))
            .await;
    }
    Ok(RateLimitReply {
        allowed: decision.allowed,
        key: body.key,
        remaining: decision.remaining,
        reset_after_ms: decision.reset_after_ms,
        retry_after_ms: decision.retry_after_ms,
        shared: state.limiter.is_shared(),
    })
}
