//! Retries: `backon` drives the loop with our full-jitter exponential policy
//! (AWS "full jitter": sleep = U(0, min(cap, base·2^n))), only retryable
//! errors are retried, and a [`RetryBudget`] (gRPC retry throttling) stops
//! retries when most recent calls fail, so an outage is not multiplied.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, Retryable as _};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::error::{Error, ErrorKind};

/// Whether an error is worth retrying.
pub trait Retryable {
    /// True for transient failures (timeouts, unavailable dependencies,
    /// internal errors); false for client errors (4xx) and open circuits.
    fn is_retryable(&self) -> bool;
}

impl Retryable for Error {
    fn is_retryable(&self) -> bool {
        match self.kind {
            ErrorKind::Unavailable => !self.is_circuit_open(),
            ErrorKind::Internal => true,
            _ => false,
        }
    }
}

/// Full-jitter exponential backoff with attempt and elapsed-time limits.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Base delay (default 100 ms).
    pub base: Duration,
    /// Upper bound of any one delay (default 10 s).
    pub cap: Duration,
    /// Total attempts including the first (default 5).
    pub max_attempts: u32,
    /// No retry starts after this much time since the first attempt (default 60 s).
    pub max_elapsed: Option<Duration>,
    /// Fixed RNG seed, for reproducible tests; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            max_attempts: 5,
            max_elapsed: Some(Duration::from_secs(60)),
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay before retry number `retry` (0-based):
    /// `min(cap, base·2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.checked_pow(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A full-jitter delay for retry number `retry`, drawn from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

/// The backoff iterator `backon` consumes.
#[derive(Debug)]
pub struct FullJitterBackoff {
    policy: RetryPolicy,
    retry: u32,
    started: tokio::time::Instant,
    elapsed_delays: Duration,
    rng: StdRng,
}

impl BackoffBuilder for RetryPolicy {
    type Backoff = FullJitterBackoff;

    fn build(self) -> FullJitterBackoff {
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        FullJitterBackoff {
            policy: self,
            retry: 0,
            started: tokio::time::Instant::now(),
            elapsed_delays: Duration::ZERO,
            rng,
        }
    }
}

impl Iterator for FullJitterBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retry + 1 >= self.policy.max_attempts {
            return None;
        }
        let delay = self.policy.delay(self.retry, &mut self.rng);
        if let Some(max) = self.policy.max_elapsed {
            let elapsed = self.started.elapsed().max(self.elapsed_delays);
            if elapsed + delay > max {
                return None;
            }
        }
        self.retry += 1;
        self.elapsed_delays += delay;
        Some(delay)
    }
}

/// A token bucket that allows retries only while most calls succeed
/// (gRPC retry throttling): each failure takes one token, each success
/// returns `token_ratio`; retries are allowed while tokens > max/2.
/// [`RetryBudget::default`] holds 10 tokens and returns 0.1 per success.
#[derive(Debug)]
pub struct RetryBudget {
    max_tokens: f64,
    token_ratio: f64,
    tokens: Mutex<f64>,
}

impl Default for RetryBudget {
    /// 10 tokens, 0.1 returned per success.
    fn default() -> Self {
        RetryBudget::new(10.0, 0.1)
    }
}

impl RetryBudget {
    /// A full bucket of `max_tokens`, refilled by `token_ratio` per success.
    pub fn new(max_tokens: f64, token_ratio: f64) -> Self {
        RetryBudget {
            max_tokens,
            token_ratio,
            tokens: Mutex::new(max_tokens),
        }
    }

    /// Records a successful call.
    pub fn on_success(&self) {
        let mut tokens = self.lock();
        *tokens = (*tokens + self.token_ratio).min(self.max_tokens);
    }

    /// Records a failed call; returns whether a retry is allowed now.
    pub fn on_failure(&self) -> bool {
        let mut tokens = self.lock();
        *tokens = (*tokens - 1.0).max(0.0);
        *tokens > self.max_tokens / 2.0
    }

    /// Current token count.
    pub fn tokens(&self) -> f64 {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, f64> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `operation` with retries per `policy`: only errors that are
/// [`Retryable`] are retried, and only while `budget` (if given) allows.
/// `name` labels the `ymera_retry_attempts_total` metric.
pub async fn retry<T, E, F, Fut>(
    name: &str,
    policy: &RetryPolicy,
    budget: Option<&RetryBudget>,
    operation: F,
) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let label = name.to_owned();
    let result = operation
        .retry(policy.clone())
        .sleep(tokio::time::sleep)
        .when(|err: &E| {
            if !err.is_retryable() {
                return false;
            }
            match budget {
                Some(budget) if !budget.on_failure() => {
                    metrics::counter!("ymera_retry_budget_exhausted_total", "operation" => label.clone())
                        .increment(1);
                    false
                }
                _ => true,
            }
        })
        .notify(|err: &E, delay: Duration| {
            tracing::debug!(operation = %label, error = %err, ?delay, "retrying");
            metrics::counter!("ymera_retry_attempts_total", "operation" => label.clone()).increment(1);
        })
        .await;
    if result.is_ok()
        && let Some(budget) = budget
    {
        budget.on_success();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn seeded() -> RetryPolicy {
        RetryPolicy {
            seed: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn ceilings_grow_exponentially_to_the_cap() {
        let p = RetryPolicy::default();
        let ceilings: Vec<u128> = (0..10).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000]
        );
        assert_eq!(p.ceiling(1000), p.cap);
    }

    #[test]
    fn delays_are_within_zero_and_ceiling_and_spread() {
        let p = seeded();
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (0..1000).map(|_| p.delay(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(800)));
        let mean = delays.iter().map(|d| d.as_secs_f64()).sum::<f64>() / 1000.0;
        assert!(
            (0.35..0.45).contains(&mean),
            "mean {mean} should be near 0.4 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_yields_max_attempts_minus_one_delays() {
        let delays: Vec<Duration> = seeded().build().collect();
        assert_eq!(delays.len(), 4);
        for (n, d) in delays.iter().enumerate() {
            assert!(*d <= seeded().ceiling(n as u32));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn max_elapsed_stops_the_backoff() {
        let policy = RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(10),
            max_attempts: 100,
            max_elapsed: Some(Duration::from_secs(35)),
            seed: Some(3),
        };
        let total: Duration = policy.build().sum();
        assert!(total <= Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, Error> = retry("t", &seeded(), None, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                Err(Error::dependency_down("db"))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = retry("t", &seeded(), None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::dependency_down("db"))
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_client_errors_or_open_circuits() {
        for err in [
            Error::invalid_request("bad"),
            Error::not_found("x"),
            Error::rate_limited(10),
            Error::circuit_open("bob", 1000),
        ] {
            let calls = AtomicU32::new(0);
            let _: Result<(), Error> = retry("t", &seeded(), None, || {
                calls.fetch_add(1, Ordering::SeqCst);
                let err = err.clone();
                async move { Err(err) }
            })
            .await;
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{err}");
        }
    }

    #[test]
    fn budget_throttles_when_most_calls_fail() {
        let budget = RetryBudget::new(10.0, 0.1);
        // 4 failures leave 6 tokens (> 5): retries still allowed.
        for _ in 0..4 {
            assert!(budget.on_failure());
        }
        // The 5th leaves 5 tokens: not above half, throttled.
        assert!(!budget.on_failure());
        // 10 successes refill one token: allowed again for one failure... no:
        for _ in 0..20 {
            budget.on_success();
        }
        assert!((budget.tokens() - 7.0).abs() < 1e-9);
        assert!(budget.on_failure());
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_outage_is_not_multiplied() {
        let budget = RetryBudget::default();
        let calls = AtomicU32::new(0);
        for _ in 0..100 {
            let _: Result<(), Error> = retry("t", &seeded(), Some(&budget), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::dependency_down("db"))
            })
            .await;
        }
        // Without the budget: 500 calls. With it: the first operation retries
        // until the bucket reaches half, then every later one runs once.
        let total = calls.load(Ordering::SeqCst);
        assert!(total <= 106, "{total} calls");
    }
}
