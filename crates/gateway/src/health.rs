//! Platform health: every outbound dependency reports a health from 0 to 1 (deployments from
//! their circuit breakers, the database from a write probe), a weighted score from 0 to 100
//! turns into a level, and each feature declares the lowest level at which it stays on.
//!
//! Going down is immediate; going up waits until the score clears the new level's floor by
//! `hysteresis` points for `recover_after`, so a score hovering at a boundary does not flap.
//! Every change is logged, audited, alerted and put on the live feed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atalaya_resilience::breaker::{CircuitBreaker, State as BreakerState};
use atalaya_store::{Store, now_ms};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use crate::alerts::{Alerts, Signal};
use crate::audit::{Actor, Auditor};
use crate::error::ApiError;
use crate::events::Events;

/// How much of the platform works, best first in `Ord` terms (`Optimal` is greatest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Emergency = 0,
    Minimal = 1,
    Limited = 2,
    Degraded = 3,
    Optimal = 4,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Emergency,
        Level::Minimal,
        Level::Limited,
        Level::Degraded,
        Level::Optimal,
    ];

    /// The level a score falls in: OPTIMAL ≥ 90, DEGRADED ≥ 70, LIMITED ≥ 50, MINIMAL ≥ 20.
    pub fn of(score: f64) -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|level| score >= level.floor())
            .unwrap_or(Level::Emergency)
    }

    /// The lowest score of this level.
    pub fn floor(self) -> f64 {
        match self {
            Level::Optimal => 90.0,
            Level::Degraded => 70.0,
            Level::Limited => 50.0,
            Level::Minimal => 20.0,
            Level::Emergency => 0.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Optimal => "OPTIMAL",
            Level::Degraded => "DEGRADED",
            Level::Limited => "LIMITED",
            Level::Minimal => "MINIMAL",
            Level::Emergency => "EMERGENCY",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(text))
    }

    fn from_u8(value: u8) -> Level {
        Level::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(Level::Emergency)
    }
}

impl Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// How much each kind of dependency counts. Kinds with nothing configured drop out and the
/// others share their weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub providers: f64,
    pub database: f64,
    pub cache: f64,
    pub object_storage: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            providers: 50.0,
            database: 30.0,
            cache: 15.0,
            object_storage: 5.0,
        }
    }
}

/// A feature the platform sheds when health falls: its name, the lowest level at which it
/// stays on, and what it is.
#[derive(Debug, Clone, Copy)]
pub struct FeatureSpec {
    pub name: &'static str,
    pub min_level: Level,
    pub what: &'static str,
}

/// Every feature that can be switched off, in the order they go (first to go first).
pub const FEATURES: [FeatureSpec; 4] = [
    FeatureSpec {
        name: "compare",
        min_level: Level::Degraded,
        what: "the compare playground: one prompt to several models at once",
    },
    FeatureSpec {
        name: "analytics",
        min_level: Level::Limited,
        what: "analytics queries (GET /api/v1/analytics/*), which read the request log",
    },
    FeatureSpec {
        name: "analytics_rollups",
        min_level: Level::Limited,
        what: "folding new request-log rows into the analytics rollups (queries stay exact: they read unfolded rows)",
    },
    FeatureSpec {
        name: "live_feed",
        min_level: Level::Minimal,
        what: "the live event feed (GET /api/v1/events)",
    },
];

#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// How often dependencies are probed and the score computed.
    pub interval: Duration,
    pub weights: Weights,
    /// Points above a better level's floor the score must reach before the level rises.
    pub hysteresis: f64,
    /// How long the score must hold there.
    pub recover_after: Duration,
    /// A database probe slower than this counts as half healthy.
    pub database_slow: Duration,
    /// Lowest level per feature, where the config changes the default.
    pub feature_levels: Vec<(String, Level)>,
    /// Whether deployments whose breaker waits half-open are probed every `interval`
    /// (a GET of the provider's model list) instead of waiting for a request.
    pub probe_providers: bool,
    /// How long a probe may take.
    pub probe_timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval: Duration::from_secs(1),
            weights: Weights::default(),
            hysteresis: 5.0,
            recover_after: Duration::from_secs(10),
            database_slow: Duration::from_millis(500),
            feature_levels: Vec::new(),
            probe_providers: true,
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// One dependency as the health API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Dependency {
    pub name: String,
    pub kind: &'static str,
    /// `healthy`, `degraded` or `down`.
    pub state: &'static str,
    /// 0 (down) to 1 (healthy).
    pub health: f64,
    pub detail: String,
    /// When an open breaker lets its next probe through, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<i64>,
}

fn state_of(health: f64) -> &'static str {
    if health >= 1.0 {
        "healthy"
    } else if health > 0.0 {
        "degraded"
    } else {
        "down"
    }
}

/// A level change, as kept for the API and sent to the feed.
#[derive(Debug, Clone, Serialize)]
pub struct LevelChange {
    pub time_ms: i64,
    pub from: Level,
    pub to: Level,
    pub score: f64,
    /// Features switched off and on by the change.
    pub disabled: Vec<&'static str>,
    pub enabled: Vec<&'static str>,
}

struct Feature {
    spec: FeatureSpec,
    on: Arc<AtomicBool>,
}

struct State {
    database: Dependency,
    /// Recent scores, oldest first: (ms, score).
    history: VecDeque<(i64, f64)>,
    /// Since when the score has been high enough to rise to this level.
    rising: Option<(Level, Instant)>,
    level_since_ms: i64,
    changes: VecDeque<LevelChange>,
}

/// Scores kept for the trend (at the default interval, two minutes).
const HISTORY: usize = 120;
const CHANGES_KEPT: usize = 20;

pub struct HealthMonitor {
    settings: HealthSettings,
    /// Replaced when a configuration reload changes the deployments.
    breakers: Mutex<Vec<Arc<CircuitBreaker>>>,
    store: Store,
    features: Vec<Feature>,
    level: AtomicU8,
    score: AtomicU64,
    state: Mutex<State>,
    events: Events,
    alerts: Option<Arc<Alerts>>,
    auditor: Arc<Auditor>,
}

impl HealthMonitor {
    pub fn new(
        settings: HealthSettings,
        breakers: Vec<Arc<CircuitBreaker>>,
        store: Store,
        events: Events,
        alerts: Option<Arc<Alerts>>,
        auditor: Arc<Auditor>,
    ) -> Arc<HealthMonitor> {
        let features = FEATURES
            .iter()
            .map(|spec| {
                let mut spec = *spec;
                if let Some((_, level)) = settings
                    .feature_levels
                    .iter()
                    .find(|(name, _)| name == spec.name)
                {
                    spec.min_level = *level;
                }
                Feature {
                    spec,
                    on: Arc::new(AtomicBool::new(true)),
                }
            })
            .collect();
        Arc::new(HealthMonitor {
            settings,
            breakers: Mutex::new(breakers),
            store,
            features,
            level: AtomicU8::new(Level::Optimal as u8),
            score: AtomicU64::new(100f64.to_bits()),
            state: Mutex::new(State {
                database: Dependency {
                    name: "database".to_owned(),
                    kind: "database",
                    state: "healthy",
                    health: 1.0,
                    detail: "not probed yet".to_owned(),
                    retry_at_ms: None,
                },
                history: VecDeque::with_capacity(HISTORY),
                rising: None,
                level_since_ms: now_ms(),
                changes: VecDeque::new(),
            }),
            events,
            alerts,
            auditor,
        })
    }

    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Acquire))
    }

    pub fn score(&self) -> f64 {
        f64::from_bits(self.score.load(Ordering::Acquire))
    }

    /// The switch a background task reads to know whether `feature` is on.
    pub fn switch(&self, feature: &str) -> Option<Arc<AtomicBool>> {
        self.features
            .iter()
            .find(|f| f.spec.name == feature)
            .map(|f| f.on.clone())
    }

    /// `Ok` while `feature` is on; otherwise a 503 naming the level, at once.
    pub fn require(&self, feature: &str) -> Result<(), ApiError> {
        let Some(found) = self.features.iter().find(|f| f.spec.name == feature) else {
            return Ok(());
        };
        if found.on.load(Ordering::Acquire) {
            return Ok(());
        }
        let level = self.level();
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "feature_disabled",
            format!(
                "`{feature}` is switched off while the platform is at level {} (health score {:.0}); it comes back at {} or better. See GET /api/v1/health.",
                level.as_str(),
                self.score(),
                found.spec.min_level.as_str()
            ),
        )
        .retry_after_secs(self.settings.recover_after.as_secs().max(1)))
    }

    /// Probes and scores every `interval` until the task is aborted.
    /// The deployments a reloaded configuration routes to; counted from the next check.
    pub fn set_breakers(&self, breakers: Vec<Arc<CircuitBreaker>>) {
        match self.breakers.lock() {
            Ok(mut current) => *current = breakers,
            Err(poisoned) => *poisoned.into_inner() = breakers,
        }
    }

    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let monitor = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(monitor.settings.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                monitor.check().await;
            }
        })
    }

    /// One probe of every dependency and one scoring.
    pub async fn check(&self) {
        let database = self.probe_database().await;
        if let Ok(mut state) = self.state.lock() {
            state.database = database;
        }
        self.evaluate(Instant::now()).await;
    }

    async fn probe_database(&self) -> Dependency {
        let started = Instant::now();
        let limit = self.settings.database_slow * 4;
        let (health, detail) = match tokio::time::timeout(limit, self.store.check_writable()).await
        {
            Ok(Ok(())) if started.elapsed() <= self.settings.database_slow => (
                1.0,
                format!("accepted a write in {} ms", started.elapsed().as_millis()),
            ),
            Ok(Ok(())) => (
                0.5,
                format!(
                    "slow: accepted a write in {} ms",
                    started.elapsed().as_millis()
                ),
            ),
            Ok(Err(error)) => (0.0, crate::providers::error_chain(&error)),
            Err(_) => (
                0.0,
                format!("did not accept a write within {} ms", limit.as_millis()),
            ),
        };
        Dependency {
            name: "database".to_owned(),
            kind: "database",
            state: state_of(health),
            health,
            detail,
            retry_at_ms: None,
        }
    }

    fn providers(&self) -> Vec<Dependency> {
        let now = Instant::now();
        let wall = now_ms();
        let breakers = match self.breakers.lock() {
            Ok(breakers) => breakers.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        breakers
            .iter()
            .map(|breaker| {
                let state = breaker.state();
                let health = match state {
                    BreakerState::Closed => 1.0,
                    BreakerState::HalfOpen => 0.5,
                    BreakerState::Open => 0.0,
                };
                let retry_at_ms = breaker
                    .open_until()
                    .map(|until| wall + until.saturating_duration_since(now).as_millis() as i64);
                Dependency {
                    name: breaker.name().to_owned(),
                    kind: "provider",
                    state: state_of(health),
                    health,
                    detail: format!("circuit {}", state.as_str()),
                    retry_at_ms,
                }
            })
            .collect()
    }

    /// The weighted score over the kinds present; 100 with nothing to depend on.
    fn score_of(&self, providers: &[Dependency], database: &Dependency) -> f64 {
        let mut parts = vec![(self.settings.weights.database, database.health)];
        if !providers.is_empty() {
            let mean = providers.iter().map(|p| p.health).sum::<f64>() / providers.len() as f64;
            parts.push((self.settings.weights.providers, mean));
        }
        let total: f64 = parts.iter().map(|(weight, _)| weight).sum();
        if total <= 0.0 {
            return 100.0;
        }
        let score = parts.iter().map(|(w, h)| w * h).sum::<f64>() / total * 100.0;
        (score * 10.0).round() / 10.0
    }

    /// Scores what the last probes found and moves the level: down at once, up after the
    /// score has held above the better level's floor plus the hysteresis.
    pub async fn evaluate(&self, now: Instant) {
        let providers = self.providers();
        let Some(change) = self.decide(&providers, now) else {
            return;
        };
        self.announce(change).await;
    }

    fn decide(&self, providers: &[Dependency], now: Instant) -> Option<LevelChange> {
        let mut state = self.state.lock().ok()?;
        let score = self.score_of(providers, &state.database);
        self.score.store(score.to_bits(), Ordering::Release);
        let time_ms = now_ms();
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back((time_ms, score));
        let current = self.level();
        let raw = Level::of(score);
        let next = if raw < current {
            state.rising = None;
            raw
        } else {
            let reachable = Level::of(score - self.settings.hysteresis).max(current);
            if reachable > current {
                match state.rising {
                    Some((level, since)) if level == reachable => {
                        if now.duration_since(since) >= self.settings.recover_after {
                            state.rising = None;
                            reachable
                        } else {
                            current
                        }
                    }
                    _ => {
                        state.rising = Some((reachable, now));
                        if self.settings.recover_after.is_zero() {
                            state.rising = None;
                            reachable
                        } else {
                            current
                        }
                    }
                }
            } else {
                state.rising = None;
                current
            }
        };
        if next == current {
            return None;
        }
        self.level.store(next as u8, Ordering::Release);
        state.level_since_ms = time_ms;
        let mut change = LevelChange {
            time_ms,
            from: current,
            to: next,
            score,
            disabled: Vec::new(),
            enabled: Vec::new(),
        };
        for feature in &self.features {
            let on = next >= feature.spec.min_level;
            if feature.on.swap(on, Ordering::AcqRel) != on {
                if on {
                    change.enabled.push(feature.spec.name);
                } else {
                    change.disabled.push(feature.spec.name);
                }
            }
        }
        if state.changes.len() == CHANGES_KEPT {
            state.changes.pop_front();
        }
        state.changes.push_back(change.clone());
        Some(change)
    }

    async fn announce(&self, change: LevelChange) {
        if change.to < change.from {
            tracing::warn!(
                from = change.from.as_str(),
                to = change.to.as_str(),
                score = change.score,
                disabled = ?change.disabled,
                "Health level fell."
            );
        } else {
            tracing::info!(
                from = change.from.as_str(),
                to = change.to.as_str(),
                score = change.score,
                enabled = ?change.enabled,
                "Health level rose."
            );
        }
        self.events.publish("health", &change);
        if let Some(alerts) = &self.alerts {
            alerts.signal(Signal::HealthLevel {
                from: change.from.as_str(),
                to: change.to.as_str(),
                score: change.score,
                disabled: change.disabled.iter().map(|s| (*s).to_owned()).collect(),
            });
        }
        let server = Actor {
            name: "server".into(),
            source_ip: String::new(),
        };
        self.auditor
            .record(
                &server,
                "health.level_changed",
                "platform",
                json!({
                    "from": change.from,
                    "to": change.to,
                    "score": change.score,
                    "disabled": change.disabled,
                    "enabled": change.enabled,
                }),
            )
            .await;
    }

    /// When the platform should be back to OPTIMAL: from the open breakers' probe schedule
    /// when they are what holds it down, else from the score's trend.
    fn prediction(&self, state: &State, providers: &[Dependency]) -> serde_json::Value {
        if self.level() == Level::Optimal {
            return serde_json::Value::Null;
        }
        let breakers_at = providers.iter().filter_map(|p| p.retry_at_ms).max();
        if state.database.health >= 1.0
            && let Some(at) = breakers_at
        {
            return json!({"at_ms": at, "basis": "breaker_schedule"});
        }
        // Least-squares slope of the last minute's scores, points per ms.
        let recent: Vec<(f64, f64)> = state
            .history
            .iter()
            .rev()
            .take(60)
            .map(|(t, s)| (*t as f64, *s))
            .collect();
        if recent.len() >= 3 {
            let n = recent.len() as f64;
            let mean_t = recent.iter().map(|(t, _)| t).sum::<f64>() / n;
            let mean_s = recent.iter().map(|(_, s)| s).sum::<f64>() / n;
            let cov: f64 = recent
                .iter()
                .map(|(t, s)| (t - mean_t) * (s - mean_s))
                .sum();
            let var: f64 = recent.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
            if var > 0.0 {
                let slope = cov / var;
                let score = self.score();
                if slope > 0.0 {
                    let at = now_ms() + ((Level::Optimal.floor() - score) / slope) as i64;
                    return json!({"at_ms": at, "basis": "trend"});
                }
            }
        }
        json!({"at_ms": null, "basis": "unknown"})
    }

    /// What `GET /api/v1/health` shows.
    pub fn report(&self) -> serde_json::Value {
        let providers = self.providers();
        let Ok(state) = self.state.lock() else {
            return json!({"score": self.score(), "level": self.level()});
        };
        let mut dependencies = vec![state.database.clone()];
        dependencies.extend(providers.iter().cloned());
        let weight = |kind: &str| match kind {
            "provider" => self.settings.weights.providers,
            _ => self.settings.weights.database,
        };
        let dependencies: Vec<serde_json::Value> = dependencies
            .iter()
            .map(|d| {
                let mut value = serde_json::to_value(d).unwrap_or_default();
                value["weight"] = json!(weight(d.kind));
                value
            })
            .collect();
        let level = self.level();
        let features: Vec<serde_json::Value> = self
            .features
            .iter()
            .map(|f| {
                json!({
                    "name": f.spec.name,
                    "enabled": f.on.load(Ordering::Acquire),
                    "min_level": f.spec.min_level,
                    "description": f.spec.what,
                })
            })
            .collect();
        json!({
            "score": self.score(),
            "level": level,
            "level_since_ms": state.level_since_ms,
            "thresholds": Level::ALL.iter().map(|l| json!({"level": l, "min_score": l.floor()})).collect::<Vec<_>>(),
            "weights": {
                "providers": self.settings.weights.providers,
                "database": self.settings.weights.database,
                "cache": self.settings.weights.cache,
                "object_storage": self.settings.weights.object_storage,
            },
            "dependencies": dependencies,
            "features": features,
            "predicted_recovery": self.prediction(&state, &providers),
            "recent_changes": state.changes.iter().rev().collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests;
