//! Circuit breakers: closed → open → half-open → closed, one per key.
//!
//! A breaker trips when `consecutive_failures` calls in a row fail, or when the
//! failure rate over the last `window_size` calls reaches
//! `failure_rate_threshold` once at least `minimum_calls` were seen. It stays
//! open for `open_duration`, then admits exactly `half_open_max_calls` probe
//! calls: if all succeed it closes, the first failure opens it again.
//!
//! Each field of [`BreakerConfig`] documents its default. A [`CallPermit`]
//! dropped without an outcome counts as a failure (the call was abandoned),
//! and the outcome of a call admitted before the breaker's last state change
//! is ignored: it says nothing about the current state. The state is
//! exported as the gauge `ymera_circuit_breaker_state` (0 closed, 1
//! half-open, 2 open; see [`BreakerState::gauge_value`]).
//!
//! Time comes from a [`Clock`], so tests drive transitions with a
//! [`ManualClock`] instead of sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;

/// A source of monotonic time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl ManualClock {
    /// A clock frozen at the current instant.
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.now);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *lock(&self.now)
    }
}

/// Tunables of a breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (default 5).
    pub consecutive_failures: u32,
    /// Trip when the failure ratio over the window reaches this (default 0.5).
    pub failure_rate_threshold: f64,
    /// Number of most recent calls the failure rate is computed over (default 20).
    pub window_size: usize,
    /// The rate rule applies only once the window holds this many calls (default 10).
    pub minimum_calls: usize,
    /// How long the breaker stays open before probing (default 30 s).
    pub open_duration: Duration,
    /// Probe calls admitted while half-open (K, default 1).
    pub half_open_max_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate_threshold: 0.5,
            window_size: 20,
            minimum_calls: 10,
            open_duration: Duration::from_secs(30),
            half_open_max_calls: 1,
        }
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// A limited number of probe calls are admitted.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `ymera_circuit_breaker_state` gauge.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    /// Lower-case name for labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Refusal of a call because the breaker is open (or half-open and full).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit {key} is open; retry after {retry_after:?}")]
pub struct CircuitOpen {
    /// The breaker's key.
    pub key: String,
    /// How long until the breaker will admit a probe (zero when half-open and full).
    pub retry_after: Duration,
}

impl From<CircuitOpen> for Error {
    fn from(open: CircuitOpen) -> Self {
        let ms = u64::try_from(open.retry_after.as_millis()).unwrap_or(u64::MAX);
        Error::circuit_open(&open.key, ms)
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    generation: u64,
    consecutive_failures: u32,
    window: VecDeque<bool>,
    opened_at: Option<Instant>,
    half_open_admitted: u32,
    half_open_succeeded: u32,
}

/// One circuit breaker.
pub struct CircuitBreaker {
    name: String,
    key: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("state", &self.state())
            .finish()
    }
}

/// Permission to make one call; report its outcome with
/// [`CallPermit::success`] or [`CallPermit::failure`]. Dropping it without a
/// report counts as a failure (the call was abandoned).
#[must_use = "report the outcome with success() or failure()"]
pub struct CallPermit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    reported: bool,
}

impl CallPermit<'_> {
    /// The call succeeded.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.generation, true);
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.generation, false);
    }

    /// The call never reached the callee (the caller's own fault, such as its
    /// connection dropping): no outcome is recorded, and a half-open probe slot
    /// is given back for another probe.
    pub fn abandon(mut self) {
        self.reported = true;
        let mut inner = lock(&self.breaker.inner);
        if inner.generation == self.generation && inner.state == BreakerState::HalfOpen {
            inner.half_open_admitted = inner.half_open_admitted.saturating_sub(1);
        }
    }
}

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(self.generation, false);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the metric's `breaker` label) for `key`.
    pub fn new(name: &str, key: &str, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        let breaker = CircuitBreaker {
            name: name.to_owned(),
            key: key.to_owned(),
            config,
            clock,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                consecutive_failures: 0,
                window: VecDeque::new(),
                opened_at: None,
                half_open_admitted: 0,
                half_open_succeeded: 0,
            }),
        };
        breaker.publish_state(BreakerState::Closed);
        breaker
    }

    /// The key this breaker guards (e.g. a recipient name).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The current state (an open breaker whose period ended reads half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = lock(&self.inner);
        self.refresh(&mut inner);
        inner.state
    }

    /// Asks to make a call.
    pub fn try_acquire(&self) -> Result<CallPermit<'_>, CircuitOpen> {
        let mut inner = lock(&self.inner);
        self.refresh(&mut inner);
        match inner.state {
            BreakerState::Closed => Ok(self.permit(inner.generation)),
            BreakerState::Open => Err(CircuitOpen {
                key: self.key.clone(),
                retry_after: self.remaining_open(&inner),
            }),
            BreakerState::HalfOpen => {
                if inner.half_open_admitted < self.config.half_open_max_calls {
                    inner.half_open_admitted += 1;
                    Ok(self.permit(inner.generation))
                } else {
                    Err(CircuitOpen {
                        key: self.key.clone(),
                        retry_after: Duration::ZERO,
                    })
                }
            }
        }
    }

    /// Time until an open breaker admits a probe (zero unless open).
    pub fn retry_after(&self) -> Duration {
        let mut inner = lock(&self.inner);
        self.refresh(&mut inner);
        if inner.state == BreakerState::Open {
            self.remaining_open(&inner)
        } else {
            Duration::ZERO
        }
    }

    fn permit(&self, generation: u64) -> CallPermit<'_> {
        CallPermit {
            breaker: self,
            generation,
            reported: false,
        }
    }

    fn remaining_open(&self, inner: &Inner) -> Duration {
        let opened = inner.opened_at.unwrap_or_else(|| self.clock.now());
        (opened + self.config.open_duration).saturating_duration_since(self.clock.now())
    }

    /// Moves an open breaker whose period has ended to half-open.
    fn refresh(&self, inner: &mut Inner) {
        if inner.state == BreakerState::Open && self.remaining_open(inner).is_zero() {
            self.transition(inner, BreakerState::HalfOpen);
        }
    }

    fn record(&self, generation: u64, success: bool) {
        let mut inner = lock(&self.inner);
        if generation != inner.generation {
            // The outcome of a call admitted under an earlier state says
            // nothing about the current one.
            return;
        }
        match inner.state {
            BreakerState::Closed => self.record_closed(&mut inner, success),
            BreakerState::HalfOpen => {
                if success {
                    inner.half_open_succeeded += 1;
                    if inner.half_open_succeeded >= self.config.half_open_max_calls {
                        self.transition(&mut inner, BreakerState::Closed);
                    }
                } else {
                    self.transition(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::Open => {}
        }
    }

    fn record_closed(&self, inner: &mut Inner, success: bool) {
        inner.window.push_back(success);
        while inner.window.len() > self.config.window_size.max(1) {
            inner.window.pop_front();
        }
        if success {
            inner.consecutive_failures = 0;
            return;
        }
        inner.consecutive_failures += 1;
        let failures = inner.window.iter().filter(|ok| !**ok).count();
        let calls = inner.window.len();
        let rate_tripped = calls >= self.config.minimum_calls.max(1)
            && failures as f64 / calls as f64 >= self.config.failure_rate_threshold;
        if inner.consecutive_failures >= self.config.consecutive_failures || rate_tripped {
            self.transition(inner, BreakerState::Open);
        }
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState) {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.half_open_admitted = 0;
        inner.half_open_succeeded = 0;
        match to {
            BreakerState::Open => inner.opened_at = Some(self.clock.now()),
            BreakerState::Closed => {
                inner.opened_at = None;
                inner.consecutive_failures = 0;
                inner.window.clear();
            }
            BreakerState::HalfOpen => {}
        }
        tracing::info!(breaker = %self.name, key = %self.key, from = from.as_str(), to = to.as_str(), "circuit breaker transition");
        metrics::counter!(
            "ymera_circuit_breaker_transitions_total",
            "breaker" => self.name.clone(),
            "key" => self.key.clone(),
            "from" => from.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        self.publish_state(to);
    }

    fn publish_state(&self, state: BreakerState) {
        metrics::gauge!(
            "ymera_circuit_breaker_state",
            "breaker" => self.name.clone(),
            "key" => self.key.clone()
        )
        .set(state.gauge_value());
    }
}

/// One breaker per key (e.g. per recipient), created on first use.
pub struct BreakerRegistry {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    max_keys: usize,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl BreakerRegistry {
    /// Default bound on the number of keys tracked at once.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// A registry whose breakers share `config` and `clock`.
    pub fn new(name: &str, config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        BreakerRegistry {
            name: name.to_owned(),
            config,
            clock,
            max_keys: Self::DEFAULT_MAX_KEYS,
            breakers: Mutex::new(HashMap::new()),
        }
    }

    /// The breaker for `key`. When the registry is full, closed breakers
    /// (which hold no state worth keeping) are dropped first.
    pub fn get(&self, key: &str) -> Arc<CircuitBreaker> {
        let mut map = lock(&self.breakers);
        if let Some(existing) = map.get(key) {
            return existing.clone();
        }
        if map.len() >= self.max_keys {
            map.retain(|_, b| b.state() != BreakerState::Closed);
        }
        let breaker = Arc::new(CircuitBreaker::new(
            &self.name,
            key,
            self.config.clone(),
            self.clock.clone(),
        ));
        map.insert(key.to_owned(), breaker.clone());
        breaker
    }

    /// Snapshot of every tracked key and its state.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let map = lock(&self.breakers);
        let mut states: Vec<_> = map.iter().map(|(k, b)| (k.clone(), b.state())).collect();
        states.sort();
        states
    }
}

impl PartialOrd for BreakerState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BreakerState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Locks a mutex, recovering the data if a holder panicked (the state kept
/// here is always consistent between statements).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new();
        (
            CircuitBreaker::new("test", "k", config, Arc::new(clock.clone())),
            clock,
        )
    }

    fn fail(b: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            b.try_acquire().unwrap().failure();
        }
    }

    #[test]
    fn trips_after_consecutive_failures() {
        let (b, _) = breaker(BreakerConfig::default());
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        let err = b.try_acquire().err().unwrap();
        assert_eq!(err.retry_after, Duration::from_secs(30));
    }

    #[test]
    fn success_resets_consecutive_count() {
        let (b, _) = breaker(BreakerConfig {
            minimum_calls: 1000,
            ..Default::default()
        });
        for _ in 0..10 {
            fail(&b, 4);
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn trips_on_failure_rate_once_minimum_calls_reached() {
        let (b, _) = breaker(BreakerConfig {
            consecutive_failures: 100,
            failure_rate_threshold: 0.5,
            window_size: 10,
            minimum_calls: 10,
            ..Default::default()
        });
        // Alternate: 50% failures, but not before 10 calls.
        for i in 0..9 {
            let p = b.try_acquire().unwrap();
            if i % 2 == 0 { p.success() } else { p.failure() }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn open_then_half_open_then_closed() {
        let (b, clock) = breaker(BreakerConfig {
            half_open_max_calls: 2,
            ..Default::default()
        });
        fail(&b, 5);
        clock.advance(Duration::from_secs(29));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.retry_after(), Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only K probes admitted");
        p1.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        p2.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_failure_reopens() {
        let (b, clock) = breaker(BreakerConfig::default());
        fail(&b, 5);
        clock.advance(Duration::from_secs(30));
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.retry_after(), Duration::from_secs(30));
    }

    #[test]
    fn abandoned_permit_counts_as_failure() {
        let (b, _) = breaker(BreakerConfig {
            consecutive_failures: 1,
            ..Default::default()
        });
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn stale_outcomes_are_ignored() {
        let (b, clock) = breaker(BreakerConfig::default());
        let slow = b.try_acquire().unwrap();
        fail(&b, 5);
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        slow.success(); // admitted while closed: must not close the half-open breaker
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn exactly_k_probes_under_concurrency() {
        let k = 3;
        let (b, clock) = breaker(BreakerConfig {
            half_open_max_calls: k,
            ..Default::default()
        });
        fail(&b, 5);
        clock.advance(Duration::from_secs(30));
        let b = Arc::new(b);
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let admitted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (b, barrier, admitted) = (b.clone(), barrier.clone(), admitted.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    if let Ok(permit) = b.try_acquire() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::mem::forget(permit); // hold the probe slot
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(std::sync::atomic::Ordering::SeqCst), k);
    }

    #[test]
    fn registry_keeps_one_breaker_per_key() {
        let reg = BreakerRegistry::new("delivery", BreakerConfig::default(), Arc::new(SystemClock));
        let a = reg.get("alice");
        for _ in 0..5 {
            a.try_acquire().unwrap().failure();
        }
        assert_eq!(reg.get("alice").state(), BreakerState::Open);
        assert_eq!(reg.get("bob").state(), BreakerState::Closed);
        assert_eq!(
            reg.states(),
            vec![
                ("alice".into(), BreakerState::Open),
                ("bob".into(), BreakerState::Closed)
            ]
        );
    }
}
