//! `[health]`: how the health score is weighed, how the level moves, and at which level each
//! feature is switched off.

use std::collections::BTreeMap;
use std::time::Duration;

use atalaya_gateway::health::{FEATURES, HealthSettings, Level, Weights};
use serde::Deserialize;

use super::{ConfigError, Origins, error, positive_ms};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHealth {
    interval_ms: Option<u64>,
    recover_after_ms: Option<u64>,
    hysteresis: Option<f64>,
    database_slow_ms: Option<u64>,
    probe_providers: Option<bool>,
    probe_timeout_ms: Option<u64>,
    weights: RawWeights,
    features: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWeights {
    providers: Option<f64>,
    database: Option<f64>,
    cache: Option<f64>,
    object_storage: Option<f64>,
}

pub(super) fn settings(raw: RawHealth, origins: &Origins) -> Result<HealthSettings, ConfigError> {
    let defaults = HealthSettings::default();
    let weight = |value: Option<f64>, default: f64, key: &str| match value {
        None => Ok(default),
        Some(w) if w.is_finite() && w >= 0.0 => Ok(w),
        Some(_) => Err(error(
            format!("health.weights.{key}"),
            origins,
            "must be 0 or more",
        )),
    };
    let weights = Weights {
        providers: weight(
            raw.weights.providers,
            defaults.weights.providers,
            "providers",
        )?,
        database: weight(raw.weights.database, defaults.weights.database, "database")?,
        cache: weight(raw.weights.cache, defaults.weights.cache, "cache")?,
        object_storage: weight(
            raw.weights.object_storage,
            defaults.weights.object_storage,
            "object_storage",
        )?,
    };
    let hysteresis = match raw.hysteresis {
        None => defaults.hysteresis,
        Some(h) if (0.0..=50.0).contains(&h) => h,
        Some(_) => {
            return Err(error(
                "health.hysteresis",
                origins,
                "must be between 0 and 50 score points",
            ));
        }
    };
    let mut feature_levels = Vec::new();
    for (name, level) in raw.features {
        let key = format!("health.features.{name}");
        if !FEATURES.iter().any(|f| f.name == name) {
            let known: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
            return Err(error(
                key,
                origins,
                format!("is not a feature; features are: {}", known.join(", ")),
            ));
        }
        let Some(level) = Level::parse(&level) else {
            return Err(error(
                key,
                origins,
                format!(
                    "`{level}` is not a level; levels are: optimal, degraded, limited, minimal, emergency"
                ),
            ));
        };
        feature_levels.push((name, level));
    }
    Ok(HealthSettings {
        interval: positive_ms(
            raw.interval_ms,
            defaults.interval,
            "health.interval_ms",
            origins,
        )?,
        weights,
        hysteresis,
        recover_after: Duration::from_millis(
            raw.recover_after_ms
                .unwrap_or(defaults.recover_after.as_millis() as u64),
        ),
        database_slow: positive_ms(
            raw.database_slow_ms,
            defaults.database_slow,
            "health.database_slow_ms",
            origins,
        )?,
        feature_levels,
        probe_providers: raw.probe_providers.unwrap_or(defaults.probe_providers),
        probe_timeout: positive_ms(
            raw.probe_timeout_ms,
            defaults.probe_timeout,
            "health.probe_timeout_ms",
            origins,
        )?,
    })
}
