//! Retry pacing and limits: exponential backoff with full jitter, and a budget that keeps
//! retries to a share of requests so an outage never becomes a retry storm.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// `delay(n)` is uniform in `[0, min(max, base · 2ⁿ)]` ("full jitter"), so retries from many
/// clients spread out instead of arriving together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The ceiling of the `retry`-th delay (0-based): base, 2·base, 4·base, ...
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max)
    }

    /// The delay before the `retry`-th retry, `random` drawn uniformly from [0, 1).
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        self.ceiling(retry).mul_f64(random.clamp(0.0, 1.0))
    }

    /// The delay, but never shorter than what the server asked for (`Retry-After`), up to
    /// `cap`.
    pub fn delay_honouring(
        &self,
        retry: u32,
        random: f64,
        retry_after: Option<Duration>,
        cap: Duration,
    ) -> Duration {
        let delay = self.delay(retry, random);
        match retry_after {
            Some(asked) => delay.max(asked.min(cap)),
            None => delay,
        }
    }
}

/// Retries allowed while `retries ≤ ratio · requests + floor` over the last `window`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    /// Retries always allowed per window, so a quiet service can still retry.
    floor: u32,
    window: Duration,
    /// Per-second buckets of (requests, retries).
    buckets: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl RetryBudget {
    pub fn new(ratio: f64, floor: u32, window: Duration) -> Self {
        RetryBudget {
            ratio,
            floor,
            window,
            buckets: Mutex::new(VecDeque::new()),
        }
    }

    fn with_bucket<T>(&self, f: impl FnOnce(&mut VecDeque<(Instant, u64, u64)>) -> T) -> T {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while buckets
            .front()
            .is_some_and(|(start, _, _)| now.duration_since(*start) >= self.window)
        {
            buckets.pop_front();
        }
        let fresh = buckets
            .back()
            .is_none_or(|(start, _, _)| now.duration_since(*start) >= Duration::from_secs(1));
        if fresh {
            buckets.push_back((now, 0, 0));
        }
        f(&mut buckets)
    }

    /// Counts a first attempt.
    pub fn record_request(&self) {
        self.with_bucket(|buckets| {
            if let Some(last) = buckets.back_mut() {
                last.1 += 1;
            }
        });
    }

    /// Takes one retry from the budget if there is room.
    pub fn try_retry(&self) -> bool {
        self.with_bucket(|buckets| {
            let requests: u64 = buckets.iter().map(|b| b.1).sum();
            let retries: u64 = buckets.iter().map(|b| b.2).sum();
            let allowed = (requests as f64 * self.ratio) as u64 + u64::from(self.floor);
            if retries >= allowed {
                return false;
            }
            if let Some(last) = buckets.back_mut() {
                last.2 += 1;
            }
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_jitter_below_the_ceiling() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(1), Duration::from_millis(200));
        assert_eq!(backoff.ceiling(2), Duration::from_millis(400));
        assert_eq!(backoff.ceiling(30), Duration::from_secs(5));
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff.delay(2, 0.0), Duration::ZERO);
        let honoured = backoff.delay_honouring(
            0,
            0.1,
            Some(Duration::from_secs(2)),
            Duration::from_secs(10),
        );
        assert_eq!(honoured, Duration::from_secs(2));
        let capped = backoff.delay_honouring(
            0,
            0.1,
            Some(Duration::from_secs(60)),
            Duration::from_secs(10),
        );
        assert_eq!(capped, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_retries_to_a_share_of_requests() {
        let budget = RetryBudget::new(0.2, 2, Duration::from_secs(10));
        for _ in 0..100 {
            budget.record_request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 22, "20 % of 100 requests plus the floor of 2");
        // Old traffic leaves the window, and with it the room it made.
        tokio::time::advance(Duration::from_secs(11)).await;
        let granted = (0..10).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 2);
    }
}
