//! Resilience primitives for every outbound dependency: a circuit breaker, retry backoff with
//! full jitter, and a retry budget.
//!
//! Generic on purpose: the gateway puts one breaker in front of each deployment, and later the
//! database, Redis, channels and webhooks use the same types. Nothing here knows what is being
//! called; callers say what succeeded, failed or was slow. Time is tokio's, so tests run on a
//! paused clock.

pub mod breaker;
pub mod retry;

pub use breaker::{
    BreakerConfig, CircuitBreaker, Permit, Rejected, State, Transition, TransitionListener,
};
pub use retry::{Backoff, RetryBudget};
