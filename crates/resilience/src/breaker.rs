//! A circuit breaker: closed, open, half-open.
//!
//! Closed, it counts the outcomes of the last `window` calls; once at least `minimum_calls`
//! are in and the failure rate (or the slow-call rate) reaches its threshold, it opens. Open,
//! it rejects every call for `open_for`, doubled at each consecutive opening up to
//! `max_open_for`. Then it lets `half_open_probes` calls through: if all succeed it closes,
//! if one fails it opens again for longer. Every transition is logged and exported as
//! `atalaya_circuit_state{breaker}` (0 closed, 1 half-open, 2 open).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use atalaya_telemetry::names;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Outcomes kept in the sliding window.
    pub window: usize,
    /// Calls needed in the window before rates are judged.
    pub minimum_calls: usize,
    /// Opens when this share of the window failed (0.0–1.0).
    pub failure_rate: f64,
    /// Opens when this share of the window was slower than `slow_call` (1.0 with a huge
    /// `slow_call` turns it off).
    pub slow_call_rate: f64,
    pub slow_call: Duration,
    /// The first opening lasts this long; each consecutive one twice as long as the last.
    pub open_for: Duration,
    pub max_open_for: Duration,
    /// Calls let through while half-open; all must succeed to close.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 20,
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call: Duration::from_secs(60),
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(300),
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }

    /// The value of `atalaya_circuit_state`.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open => 2.0,
        }
    }
}

/// A call was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// How long until the breaker lets a probe through (zero while half-open probes run).
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    Slow,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    window: VecDeque<Outcome>,
    /// Openings in a row without closing in between.
    openings: u32,
}

#[derive(Debug)]
#[repr(align(64))]
struct CacheLine<T>(T);

/// One breaker; share it with `Arc`.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Mirrors `Phase::Closed` (written under the lock), so routing can ask many breakers
    /// "would you let a call through?" without taking their locks in the common case. On a
    /// cache line of its own: the lock beside it is written on every call, this rarely.
    closed: CacheLine<AtomicBool>,
    gauge: metrics::Gauge,
    /// Told of every state change (the live event feed, alerts).
    listener: ListenerSlot,
}

#[derive(Default)]
struct ListenerSlot(std::sync::OnceLock<TransitionListener>);

impl std::fmt::Debug for ListenerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "ListenerSlot(set)"
        } else {
            "ListenerSlot(empty)"
        })
    }
}

/// A breaker's change of state, as told to its listener.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub breaker: &'a str,
    pub from: State,
    pub to: State,
    pub reason: &'a str,
    /// How long an opened breaker stays open.
    pub open_for: Option<Duration>,
}

pub type TransitionListener = Arc<dyn Fn(&Transition<'_>) + Send + Sync>;

/// Permission for one call. Report how it went with [`Permit::success`] or
/// [`Permit::failure`]; dropping it unreported (the caller gave up) counts for nothing.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    started: Instant,
    reported: bool,
}

impl CircuitBreaker {
    /// `name` identifies the breaker in logs and in the metric's `breaker` label; keep the set
    /// of names bounded.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Arc<Self> {
        let name = name.into();
        let gauge = metrics::gauge!(names::CIRCUIT_STATE, "breaker" => name.clone());
        gauge.set(State::Closed.gauge());
        Arc::new(CircuitBreaker {
            name,
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window: VecDeque::new(),
                openings: 0,
            }),
            closed: CacheLine(AtomicBool::new(true)),
            gauge,
            listener: ListenerSlot::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets who hears of state changes; only the first listener set is kept. It is called
    /// outside the breaker's lock, on the thread whose call changed the state.
    pub fn set_listener(&self, listener: TransitionListener) {
        let _ = self.listener.0.set(listener);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state now (an open breaker whose time is up reports half-open).
    pub fn state(&self) -> State {
        match self.lock().phase {
            Phase::Closed => State::Closed,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::Open { until } if Instant::now() >= until => State::HalfOpen,
            Phase::Open { .. } => State::Open,
        }
    }

    /// When an open breaker will let a probe through.
    pub fn open_until(&self) -> Option<Instant> {
        match self.lock().phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Whether a call would be let through now, without taking a permit.
    pub fn is_permitted(&self) -> bool {
        if self.closed.0.load(Ordering::Relaxed) {
            return true;
        }
        let inner = self.lock();
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { until } => Instant::now() >= until,
            Phase::HalfOpen { in_flight, .. } => in_flight < self.config.half_open_probes,
        }
    }

    /// Asks to make a call.
    pub fn acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } if now < until => {
                return Err(Rejected {
                    retry_in: until - now,
                });
            }
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen {
                    in_flight: 1,
                    succeeded: 0,
                };
                drop(inner);
                self.announce(
                    State::Open,
                    State::HalfOpen,
                    "the open period is over; probing",
                    None,
                );
                return Ok(Permit {
                    breaker: self.clone(),
                    probe: true,
                    started: now,
                    reported: false,
                });
            }
            Phase::HalfOpen {
                ref mut in_flight, ..
            } => {
                if *in_flight >= self.config.half_open_probes {
                    return Err(Rejected {
                        retry_in: Duration::ZERO,
                    });
                }
                *in_flight += 1;
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            probe,
            started: now,
            reported: false,
        })
    }

    fn record(&self, probe: bool, outcome: Option<Outcome>) {
        let now = Instant::now();
        let mut inner = self.lock();
        match (&mut inner.phase, probe) {
            (
                Phase::HalfOpen {
                    in_flight,
                    succeeded,
                },
                true,
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                match outcome {
                    None => {}
                    Some(Outcome::Success) => {
                        *succeeded += 1;
                        if *succeeded >= self.config.half_open_probes {
                            inner.phase = Phase::Closed;
                            self.closed.0.store(true, Ordering::Relaxed);
                            inner.window.clear();
                            inner.openings = 0;
                            drop(inner);
                            self.announce(
                                State::HalfOpen,
                                State::Closed,
                                "the probes succeeded",
                                None,
                            );
                        }
                    }
                    Some(Outcome::Failure | Outcome::Slow) => {
                        let reason = if outcome == Some(Outcome::Slow) {
                            "a probe was slow"
                        } else {
                            "a probe failed"
                        };
                        let open_for = self.open(&mut inner, now);
                        drop(inner);
                        self.announce(State::HalfOpen, State::Open, reason, Some(open_for));
                    }
                }
            }
            (Phase::Closed, false) => {
                let Some(outcome) = outcome else {
                    return;
                };
                inner.window.push_back(outcome);
                while inner.window.len() > self.config.window {
                    inner.window.pop_front();
                }
                let calls = inner.window.len();
                if calls < self.config.minimum_calls.max(1) {
                    return;
                }
                let failures = inner
                    .window
                    .iter()
                    .filter(|o| **o == Outcome::Failure)
                    .count();
                let slow = inner.window.iter().filter(|o| **o == Outcome::Slow).count();
                let failure_rate = failures as f64 / calls as f64;
                let slow_rate = slow as f64 / calls as f64;
                let reason = if failure_rate >= self.config.failure_rate {
                    format!("{failures} of the last {calls} calls failed")
                } else if slow_rate >= self.config.slow_call_rate {
                    format!(
                        "{slow} of the last {calls} calls took longer than {} ms",
                        self.config.slow_call.as_millis()
                    )
                } else {
                    return;
                };
                let open_for = self.open(&mut inner, now);
                drop(inner);
                self.announce(State::Closed, State::Open, &reason, Some(open_for));
            }
            // A call that began in another phase ended late; it says nothing about now.
            _ => {}
        }
    }

    /// Opens the breaker; returns for how long.
    fn open(&self, inner: &mut Inner, now: Instant) -> Duration {
        let factor = 2u32.saturating_pow(inner.openings.min(16));
        let open_for = self
            .config
            .open_for
            .saturating_mul(factor)
            .min(self.config.max_open_for);
        inner.phase = Phase::Open {
            until: now + open_for,
        };
        self.closed.0.store(false, Ordering::Relaxed);
        inner.openings += 1;
        inner.window.clear();
        open_for
    }

    /// Logs and exports a transition. Called without the lock held.
    fn announce(&self, from: State, to: State, reason: &str, open_for: Option<Duration>) {
        self.gauge.set(to.gauge());
        if let Some(listener) = self.listener.0.get() {
            listener(&Transition {
                breaker: &self.name,
                from,
                to,
                reason,
                open_for,
            });
        }
        let open_ms = open_for.map(|d| d.as_millis() as u64);
        match to {
            State::Open => tracing::warn!(
                breaker = %self.name,
                from = from.as_str(),
                to = to.as_str(),
                reason,
                open_ms,
                "Circuit breaker opened."
            ),
            _ => tracing::info!(
                breaker = %self.name,
                from = from.as_str(),
                to = to.as_str(),
                reason,
                "Circuit breaker changed state."
            ),
        }
    }
}

impl Permit {
    /// The call succeeded; it counts as slow if it took longer than `slow_call`.
    pub fn success(mut self) {
        self.reported = true;
        let outcome = if self.started.elapsed() > self.breaker.config.slow_call {
            Outcome::Slow
        } else {
            Outcome::Success
        };
        self.breaker.record(self.probe, Some(outcome));
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, Some(Outcome::Failure));
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.record(self.probe, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Arc<CircuitBreaker> {
        CircuitBreaker::new(
            "test",
            BreakerConfig {
                window: 10,
                minimum_calls: 4,
                failure_rate: 0.5,
                open_for: Duration::from_secs(10),
                max_open_for: Duration::from_secs(25),
                half_open_probes: 2,
                ..BreakerConfig::default()
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_the_failure_rate_once_enough_calls_are_in() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.acquire().unwrap().failure();
        }
        assert_eq!(
            breaker.state(),
            State::Closed,
            "3 calls are below the minimum"
        );
        breaker.acquire().unwrap().failure();
        assert_eq!(breaker.state(), State::Open);
        let rejected = breaker.acquire().unwrap_err();
        assert_eq!(rejected.retry_in, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_listener_hears_every_transition() {
        let breaker = breaker();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = heard.clone();
        breaker.set_listener(Arc::new(move |t: &Transition<'_>| {
            sink.lock()
                .unwrap()
                .push((t.breaker.to_owned(), t.from, t.to, t.open_for));
        }));
        for _ in 0..4 {
            breaker.acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        breaker.acquire().unwrap().success();
        breaker.acquire().unwrap().success();
        let heard = heard.lock().unwrap().clone();
        assert_eq!(
            heard,
            [
                (
                    "test".to_owned(),
                    State::Closed,
                    State::Open,
                    Some(Duration::from_secs(10))
                ),
                ("test".to_owned(), State::Open, State::HalfOpen, None),
                ("test".to_owned(), State::HalfOpen, State::Closed, None),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn successes_keep_it_closed() {
        let breaker = breaker();
        for index in 0..40 {
            let permit = breaker.acquire().unwrap();
            if index % 3 == 2 {
                permit.failure();
            } else {
                permit.success();
            }
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_probes_close_it_or_open_it_for_longer() {
        let breaker = breaker();
        for _ in 0..4 {
            breaker.acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.state(), State::HalfOpen);
        let first = breaker.acquire().unwrap();
        let second = breaker.acquire().unwrap();
        assert!(first.is_probe() && second.is_probe());
        assert!(breaker.acquire().is_err(), "only two probes at a time");
        first.success();
        second.failure();
        assert_eq!(breaker.state(), State::Open);
        // The second opening lasts twice as long.
        assert_eq!(
            breaker.acquire().unwrap_err().retry_in,
            Duration::from_secs(20)
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        breaker.acquire().unwrap().failure();
        // Capped at max_open_for.
        assert_eq!(
            breaker.acquire().unwrap_err().retry_in,
            Duration::from_secs(25)
        );
        tokio::time::advance(Duration::from_secs(25)).await;
        breaker.acquire().unwrap().success();
        breaker.acquire().unwrap().success();
        assert_eq!(breaker.state(), State::Closed);
        // Closing resets the doubling.
        for _ in 0..4 {
            breaker.acquire().unwrap().failure();
        }
        assert_eq!(
            breaker.acquire().unwrap_err().retry_in,
            Duration::from_secs(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probes_free_their_slot() {
        let breaker = breaker();
        for _ in 0..4 {
            breaker.acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        let first = breaker.acquire().unwrap();
        let second = breaker.acquire().unwrap();
        drop(first);
        drop(second);
        assert!(breaker.acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_open_it_too() {
        let breaker = CircuitBreaker::new(
            "slow",
            BreakerConfig {
                minimum_calls: 2,
                slow_call_rate: 0.5,
                slow_call: Duration::from_secs(1),
                ..BreakerConfig::default()
            },
        );
        for _ in 0..2 {
            let permit = breaker.acquire().unwrap();
            tokio::time::advance(Duration::from_secs(2)).await;
            permit.success();
        }
        assert_eq!(breaker.state(), State::Open);
    }
}
