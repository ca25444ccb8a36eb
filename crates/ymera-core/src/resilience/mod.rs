//! Circuit breakers and retries.

pub mod breaker;
pub mod retry;

pub use breaker::{
    BreakerConfig, BreakerRegistry, BreakerState, CircuitBreaker, CircuitOpen, Clock, ManualClock,
    SystemClock,
};
pub use retry::{RetryBudget, RetryPolicy, Retryable, retry};
