//! Rate limits: requests and tokens per minute, per key and per team, with GCRA.
//!
//! GCRA keeps one number per bucket — the theoretical arrival time (TAT) — so a limit of N per
//! minute admits at most N at once and then one every 60/N s: no fixed-window doubling at a
//! window's edge. A request reserves its estimated tokens before the upstream call and settles
//! the real count afterwards (refunding or charging the difference), so concurrent requests
//! cannot overshoot a token limit together.
//!
//! The buckets live behind [`RateStore`]: in process here, in Redis when several replicas
//! share limits (a later backend).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atalaya_store::KeyRecord;
use atalaya_telemetry::names;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::error::ApiError;

/// One bucket's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub allowed: bool,
    /// Units left after this take (0 when refused).
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: until the take would succeed.
    pub retry_after: Duration,
}

/// Where buckets live.
pub trait RateStore: Send + Sync {
    /// Takes `cost` units from bucket `key` holding `per_minute` units per minute.
    fn take(&self, key: &str, cost: u64, per_minute: u64) -> Outcome;
    /// Gives back (`delta` < 0) or charges more (`delta` > 0) after the fact.
    fn settle(&self, key: &str, delta: i64, per_minute: u64);
}

/// Buckets in this process.
pub struct LocalRates {
    epoch: Instant,
    tats: Mutex<HashMap<String, f64>>,
}

impl Default for LocalRates {
    fn default() -> Self {
        LocalRates {
            epoch: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }
}

const WINDOW: f64 = 60.0;

impl LocalRates {
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }
}

impl RateStore for LocalRates {
    fn take(&self, key: &str, cost: u64, per_minute: u64) -> Outcome {
        let interval = WINDOW / per_minute.max(1) as f64;
        let now = self.now();
        let Ok(mut tats) = self.tats.lock() else {
            // A poisoned lock: admit rather than refuse everyone.
            return Outcome {
                allowed: true,
                remaining: per_minute,
                reset: Duration::ZERO,
                retry_after: Duration::ZERO,
            };
        };
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let next = tat + cost as f64 * interval;
        // A little slack for float rounding: N takes of 1 in one instant must all pass.
        if next - now > WINDOW + 1e-9 {
            return Outcome {
                allowed: false,
                remaining: 0,
                reset: Duration::from_secs_f64(tat - now),
                retry_after: Duration::from_secs_f64((next - WINDOW - now).max(0.0)),
            };
        }
        tats.insert(key.to_owned(), next);
        Outcome {
            allowed: true,
            remaining: ((WINDOW - (next - now)) / interval + 1e-9).floor().max(0.0) as u64,
            reset: Duration::from_secs_f64(next - now),
            retry_after: Duration::ZERO,
        }
    }

    fn settle(&self, key: &str, delta: i64, per_minute: u64) {
        let interval = WINDOW / per_minute.max(1) as f64;
        if let Ok(mut tats) = self.tats.lock()
            && let Some(tat) = tats.get_mut(key)
        {
            *tat += delta as f64 * interval;
        }
    }
}

/// Limits of one team, from the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamLimits {
    pub name: String,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
}

/// The request's claim on the token buckets, settled when its usage is known.
#[derive(Debug, Clone)]
pub(crate) struct Reservation {
    buckets: Vec<(String, u64)>,
    estimate: u64,
}

/// Every limit the gateway enforces.
pub struct Limits {
    store: Arc<dyn RateStore>,
    teams: HashMap<String, TeamLimits>,
}

/// One limit that applies to a request.
struct Bucket {
    id: String,
    per_minute: u64,
    scope: &'static str,
}

impl Limits {
    pub fn new(store: Arc<dyn RateStore>, teams: &[TeamLimits]) -> Limits {
        Limits {
            store,
            teams: teams.iter().map(|t| (t.name.clone(), t.clone())).collect(),
        }
    }

    fn buckets(&self, key: &KeyRecord, kind: &str) -> Vec<Bucket> {
        let pick = |rpm: Option<u64>, tpm: Option<u64>| if kind == "requests" { rpm } else { tpm };
        let mut buckets = Vec::new();
        let positive = |limit: Option<i64>| limit.and_then(|v| u64::try_from(v).ok());
        if let Some(per_minute) = pick(positive(key.rpm_limit), positive(key.tpm_limit)) {
            buckets.push(Bucket {
                id: format!("key:{}:{kind}", key.id),
                per_minute,
                scope: "key",
            });
        }
        if let Some(team) = key.team.as_ref().and_then(|t| self.teams.get(t))
            && let Some(per_minute) = pick(team.rpm_limit, team.tpm_limit)
        {
            buckets.push(Bucket {
                id: format!("team:{}:{kind}", team.name),
                per_minute,
                scope: "team",
            });
        }
        buckets
    }

    /// Admits a request needing about `tokens` tokens, or refuses it with a 429 saying which
    /// limit and when to retry. On admission: the `x-ratelimit-*` headers and the token
    /// reservation to settle.
    pub(crate) fn admit(
        &self,
        key: &KeyRecord,
        tokens: u64,
    ) -> Result<(HeaderMap, Option<Reservation>), ApiError> {
        let mut headers = HeaderMap::new();
        let mut taken: Vec<(&'static str, Bucket, u64)> = Vec::new();
        for (kind, cost) in [("requests", 1), ("tokens", tokens)] {
            // The tightest bucket of each kind speaks for it in the headers.
            let mut tightest: Option<(u64, Outcome)> = None;
            for bucket in self.buckets(key, kind) {
                let outcome = self.store.take(&bucket.id, cost, bucket.per_minute);
                if !outcome.allowed {
                    for (_, bucket, cost) in &taken {
                        self.store
                            .settle(&bucket.id, -(*cost as i64), bucket.per_minute);
                    }
                    return Err(refused(kind, &bucket, cost, outcome));
                }
                if tightest.is_none_or(|(_, t)| outcome.remaining < t.remaining) {
                    tightest = Some((bucket.per_minute, outcome));
                }
                taken.push((kind, bucket, cost));
            }
            if let Some((limit, outcome)) = tightest {
                put(
                    &mut headers,
                    &format!("x-ratelimit-limit-{kind}"),
                    limit.to_string(),
                );
                put(
                    &mut headers,
                    &format!("x-ratelimit-remaining-{kind}"),
                    outcome.remaining.to_string(),
                );
                put(
                    &mut headers,
                    &format!("x-ratelimit-reset-{kind}"),
                    format!("{:.3}s", outcome.reset.as_secs_f64()),
                );
            }
        }
        let buckets: Vec<(String, u64)> = taken
            .into_iter()
            .filter(|(kind, _, _)| *kind == "tokens")
            .map(|(_, bucket, _)| (bucket.id, bucket.per_minute))
            .collect();
        let reservation = (!buckets.is_empty()).then_some(Reservation {
            buckets,
            estimate: tokens,
        });
        Ok((headers, reservation))
    }

    /// Replaces a reservation's estimate with the tokens really used.
    pub(crate) fn settle(&self, reservation: &Reservation, used: u64) {
        let delta = used as i64 - reservation.estimate as i64;
        if delta == 0 {
            return;
        }
        for (id, per_minute) in &reservation.buckets {
            self.store.settle(id, delta, *per_minute);
        }
    }
}

fn put(headers: &mut HeaderMap, name: &str, value: String) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(&value),
    ) {
        headers.insert(name, value);
    }
}

fn refused(kind: &'static str, bucket: &Bucket, cost: u64, outcome: Outcome) -> ApiError {
    metrics::counter!(names::RATE_LIMITED, "kind" => kind, "scope" => bucket.scope).increment(1);
    let message = if cost > bucket.per_minute {
        format!(
            "This request needs about {cost} {kind}, more than the {} limit of {} {kind} per minute; it can never pass.",
            bucket.scope, bucket.per_minute
        )
    } else {
        format!(
            "Rate limit reached: the {} allows {} {kind} per minute. Retry in {:.1} s.",
            bucket.scope,
            bucket.per_minute,
            outcome.retry_after.as_secs_f64()
        )
    };
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_exceeded",
        message,
    );
    if cost <= bucket.per_minute {
        let seconds = outcome.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        error.retry_after = HeaderValue::from_str(&seconds.to_string()).ok();
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn gcra_admits_the_limit_then_one_per_interval() {
        let rates = LocalRates::default();
        for i in 0..60 {
            assert!(rates.take("k", 1, 60).allowed, "request {i}");
        }
        let refused = rates.take("k", 1, 60);
        assert!(!refused.allowed);
        assert!(
            (refused.retry_after.as_secs_f64() - 1.0).abs() < 1e-6,
            "{refused:?}"
        );
        // No window edge to exploit: half a second later, still refused; a second later, one.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!rates.take("k", 1, 60).allowed);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(rates.take("k", 1, 60).allowed);
        assert!(!rates.take("k", 1, 60).allowed);
        // Other keys are untouched.
        assert_eq!(rates.take("other", 1, 60).remaining, 59);
    }

    #[tokio::test(start_paused = true)]
    async fn settling_refunds_and_charges_tokens() {
        let rates = LocalRates::default();
        assert_eq!(rates.take("t", 600, 1000).remaining, 400);
        // Used 100 of the 600 reserved.
        rates.settle("t", -500, 1000);
        assert_eq!(rates.take("t", 1, 1000).remaining, 899);
        // Used 300 more than reserved.
        rates.settle("t", 300, 1000);
        assert!(!rates.take("t", 800, 1000).allowed);
    }
}
