//! Spend limits per key and team per period (UTC day or month), from the catalog cost of each
//! request. A soft limit raises an alert (a warning, an audit entry, a metric) once per period;
//! a hard limit refuses further requests with `429 budget_exceeded` until the period ends.
//!
//! A scope's spend for the current period is read from the request log the first time it is
//! needed, then kept in memory and increased as requests are recorded, so the check costs no
//! query on the request path.

use std::collections::HashMap;
use std::sync::Mutex;

use atalaya_store::{KeyRecord, Store, now_ms};
use atalaya_telemetry::civil::{civil_from_days, days_from_civil};
use atalaya_telemetry::names;
use axum::http::{HeaderValue, StatusCode};
use serde::Serialize;

use crate::error::ApiError;

/// A budget: hard and soft limits in USD per period.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub limit_usd: Option<f64>,
    pub soft_usd: Option<f64>,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The UTC start of the period holding `at_ms`, and of the next one.
    pub fn bounds(self, at_ms: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000;
        let day = at_ms.div_euclid(DAY);
        match self {
            Period::Day => (day * DAY, (day + 1) * DAY),
            Period::Month => {
                let (year, month, _) = civil_from_days(day);
                let start = days_from_civil(year, month, 1);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (start * DAY, days_from_civil(next_year, next_month, 1) * DAY)
            }
        }
    }
}

/// A team's budget, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamBudget {
    pub name: String,
    pub budget: Budget,
}

/// One scope's spend in its current period.
#[derive(Debug, Clone, Copy)]
struct Spend {
    period_start: i64,
    spent: f64,
    soft_alerted: bool,
}

/// What `GET /api/v1/keys/{id}` shows of a key's budget.
#[derive(Debug, Clone, Serialize)]
pub struct SpendReport {
    pub period: Period,
    pub spent_usd: f64,
    pub budget_usd: Option<f64>,
    pub soft_budget_usd: Option<f64>,
    pub resets_at_ms: i64,
}

/// A crossing to tell the operator about.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Crossing {
    pub scope: String,
    pub which: &'static str,
    pub spent: f64,
    pub limit: f64,
}

pub struct Budgets {
    store: Store,
    teams: HashMap<String, Budget>,
    spends: Mutex<HashMap<String, Spend>>,
}

impl Budgets {
    pub fn new(store: Store, teams: &[TeamBudget]) -> Budgets {
        Budgets {
            store,
            teams: teams
                .iter()
                .map(|t| (t.name.clone(), t.budget.clone()))
                .collect(),
            spends: Mutex::new(HashMap::new()),
        }
    }

    /// The key's own budget, if it has one.
    pub fn of_key(key: &KeyRecord) -> Option<Budget> {
        (key.budget_usd.is_some() || key.soft_budget_usd.is_some()).then(|| Budget {
            limit_usd: key.budget_usd,
            soft_usd: key.soft_budget_usd,
            period: Period::parse(&key.budget_period).unwrap_or(Period::Month),
        })
    }

    /// Every budget that applies to a request by `key`: (scope id, budget).
    fn scopes(&self, key: &KeyRecord) -> Vec<(String, Budget)> {
        let mut scopes = Vec::new();
        if let Some(budget) = Budgets::of_key(key) {
            scopes.push((format!("key:{}", key.id), budget));
        }
        if let Some(team) = &key.team
            && let Some(budget) = self.teams.get(team)
        {
            scopes.push((format!("team:{team}"), budget.clone()));
        }
        scopes
    }

    /// The scope's spend this period, read from the request log the first time.
    async fn spent(&self, scope: &str, period: Period) -> Result<f64, ApiError> {
        let (start, _) = period.bounds(now_ms());
        if let Ok(spends) = self.spends.lock()
            && let Some(spend) = spends.get(scope).filter(|s| s.period_start == start)
        {
            return Ok(spend.spent);
        }
        // Boxed: read once a period, and a store query's future is kilobytes that every
        // request's future would otherwise carry (see `inbound` on memory per request).
        let from_log = match scope.split_once(':') {
            Some(("key", id)) => Box::pin(self.store.key_spend(id, start)).await,
            Some(("team", team)) => Box::pin(self.store.team_spend(team, start)).await,
            _ => Ok(0.0),
        }
        .map_err(|error| {
            tracing::warn!(error = %crate::providers::error_chain(&error), "Reading spend failed.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "The budget could not be checked because storage is unavailable; retry shortly.",
            )
        })?;
        let mut spends = self.spends.lock().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Budget state is unavailable.",
            )
        })?;
        let spend = spends.entry(scope.to_owned()).or_insert(Spend {
            period_start: start,
            spent: from_log,
            soft_alerted: false,
        });
        if spend.period_start != start {
            *spend = Spend {
                period_start: start,
                spent: from_log,
                soft_alerted: false,
            };
        }
        Ok(spend.spent)
    }

    /// Refuses a request when a hard budget that applies is spent.
    pub(crate) async fn admit(&self, key: &KeyRecord) -> Result<(), ApiError> {
        for (scope, budget) in self.scopes(key) {
            let Some(limit) = budget.limit_usd else {
                continue;
            };
            let spent = self.spent(&scope, budget.period).await?;
            if spent >= limit {
                metrics::counter!(names::BUDGET_EXCEEDED, "scope" => scope_kind(&scope))
                    .increment(1);
                let (_, resets) = budget.period.bounds(now_ms());
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "budget_exceeded",
                    format!(
                        "The {} budget of ${limit:.2} per {} is spent (${spent:.4}); it resets at the start of the next {} (UTC).",
                        scope_kind(&scope),
                        period_word(budget.period),
                        period_word(budget.period)
                    ),
                );
                let wait = ((resets - now_ms()) / 1000).max(1);
                error.retry_after = HeaderValue::from_str(&wait.to_string()).ok();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Adds a recorded request's cost; returns the soft or hard limits it just crossed.
    pub(crate) fn charge(&self, key: &KeyRecord, cost: f64) -> Vec<Crossing> {
        let mut crossings = Vec::new();
        // Most keys have no budget: they never take the lock shared by every worker.
        let scopes = self.scopes(key);
        if cost <= 0.0 || scopes.is_empty() {
            return crossings;
        }
        let Ok(mut spends) = self.spends.lock() else {
            return crossings;
        };
        for (scope, budget) in scopes {
            let (start, _) = budget.period.bounds(now_ms());
            // Not loaded yet: the next admission reads the log, which will hold this cost.
            let Some(spend) = spends.get_mut(&scope).filter(|s| s.period_start == start) else {
                continue;
            };
            let before = spend.spent;
            spend.spent += cost;
            if let Some(soft) = budget.soft_usd
                && !spend.soft_alerted
                && spend.spent >= soft
            {
                spend.soft_alerted = true;
                crossings.push(Crossing {
                    scope: scope.clone(),
                    which: "soft",
                    spent: spend.spent,
                    limit: soft,
                });
            }
            if let Some(limit) = budget.limit_usd
                && before < limit
                && spend.spent >= limit
            {
                crossings.push(Crossing {
                    scope: scope.clone(),
                    which: "hard",
                    spent: spend.spent,
                    limit,
                });
            }
        }
        crossings
    }

    /// A key's spend this period and its limits.
    pub async fn report(&self, key: &KeyRecord) -> Result<SpendReport, ApiError> {
        let period = Period::parse(&key.budget_period).unwrap_or(Period::Month);
        let spent = self.spent(&format!("key:{}", key.id), period).await?;
        Ok(SpendReport {
            period,
            spent_usd: spent,
            budget_usd: key.budget_usd,
            soft_budget_usd: key.soft_budget_usd,
            resets_at_ms: period.bounds(now_ms()).1,
        })
    }
}

fn scope_kind(scope: &str) -> &'static str {
    if scope.starts_with("team:") {
        "team"
    } else {
        "key"
    }
}

fn period_word(period: Period) -> &'static str {
    match period {
        Period::Day => "day",
        Period::Month => "month",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        // 2026-11-23T17:00:00Z
        let at = 1_795_453_200_000;
        let (day, next_day) = Period::Day.bounds(at);
        assert_eq!(day, 1_795_392_000_000); // 2026-11-23T00:00:00Z
        assert_eq!(next_day - day, 86_400_000);
        let (month, next_month) = Period::Month.bounds(at);
        assert_eq!(month, 1_793_491_200_000); // 2026-11-01T00:00:00Z
        assert_eq!(next_month, 1_796_083_200_000); // 2026-12-01T00:00:00Z
        // December rolls into January; February of a leap year has 29 days.
        let (_, january) = Period::Month.bounds(1_796_083_200_000 + 1);
        assert_eq!(january, 1_798_761_600_000); // 2027-01-01
        let (feb, march) = Period::Month.bounds(1_835_395_200_000); // 2028-02-29
        assert_eq!((march - feb) / 86_400_000, 29);
    }
}
