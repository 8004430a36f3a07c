//! `GET /api/v1/analytics/{summary,timeseries,breakdown}`: requests, tokens, cost, error
//! rate and latency/TTFT percentiles over any range, filtered and grouped by key, team,
//! model, provider, deployment or status.
//!
//! Ranges: `from` and `to` take epoch milliseconds, RFC 3339 times (`2026-11-23T10:00:00Z`)
//! or a duration before now (`24h`, `7d`, `90m`); `to` defaults to now and `from` to 24 hours
//! before `to`.

use std::sync::Arc;

use atalaya_store::{AnalyticsFilter, Dimension, GroupKey, Grouping, Stats};
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::error::ApiError;

const DAY_MS: i64 = 86_400_000;
/// Most points a time series returns.
const MAX_POINTS: i64 = 5_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    from: Option<String>,
    to: Option<String>,
    key: Option<String>,
    team: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    deployment: Option<String>,
    status: Option<String>,
    /// Time series only: bucket width (`1m`, `5m`, `1h`, `1d`, ...).
    step: Option<String>,
    /// Breakdowns only: the dimension to group by.
    by: Option<String>,
    /// Breakdowns only: most groups returned, largest first.
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Range {
    from_ms: i64,
    to_ms: i64,
}

#[derive(Serialize)]
struct Point {
    t_ms: i64,
    #[serde(flatten)]
    stats: Stats,
}

#[derive(Serialize)]
struct Group {
    /// `null` for requests without a value (e.g. unauthenticated ones have no key).
    value: Option<String>,
    #[serde(flatten)]
    stats: Stats,
}

pub(crate) async fn summary(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (_, filter) = match parse(params, "summary") {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    match gateway.store.analytics(&filter, Grouping::Total).await {
        Ok(groups) => {
            let stats = groups
                .first()
                .map(|(_, aggregate)| aggregate.stats())
                .unwrap_or_else(|| atalaya_store::Aggregate::default().stats());
            Json(serde_json::json!({ "range": range(&filter), "stats": stats })).into_response()
        }
        Err(error) => crate::admin::storage_error(error).into_response(),
    }
}

pub(crate) async fn timeseries(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (params, filter) = match parse(params, "timeseries") {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let span = filter.to_ms - filter.from_ms;
    let step_ms = match params.step.as_deref() {
        Some(text) => match duration_ms(text) {
            Some(step) if step >= 1_000 => step,
            _ => {
                return invalid(
                    "step",
                    format!("'step' must be a duration of at least 1s such as 1m, 1h or 1d; got `{text}`."),
                )
                .into_response();
            }
        },
        None => default_step(span),
    };
    if span / step_ms > MAX_POINTS {
        return invalid(
            "step",
            format!(
                "{} points is too many (at most {MAX_POINTS}); use a larger 'step' or a shorter range.",
                span / step_ms
            ),
        )
        .into_response();
    }
    let groups = match gateway
        .store
        .analytics(&filter, Grouping::Time { step_ms })
        .await
    {
        Ok(groups) => groups,
        Err(error) => return crate::admin::storage_error(error).into_response(),
    };
    // Every bucket of the range appears, empty ones included, so charts need no gap logic.
    let mut groups = groups.into_iter().peekable();
    let mut points = Vec::new();
    let first = filter.from_ms.div_euclid(step_ms) * step_ms;
    let mut t_ms = first;
    while t_ms < filter.to_ms {
        let stats = match groups.next_if(|(key, _)| key.bucket_ms == t_ms) {
            Some((_, aggregate)) => aggregate.stats(),
            None => atalaya_store::Aggregate::default().stats(),
        };
        points.push(Point { t_ms, stats });
        t_ms += step_ms;
    }
    Json(serde_json::json!({
        "range": range(&filter),
        "step_ms": step_ms,
        "points": points,
    }))
    .into_response()
}

pub(crate) async fn breakdown(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (params, filter) = match parse(params, "breakdown") {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let Some(by) = params.by.as_deref() else {
        return invalid(
            "by",
            "'by' is required: one of key, team, model, provider, deployment, status.",
        )
        .into_response();
    };
    let Some(dimension) = Dimension::parse(by) else {
        return invalid(
            "by",
            format!(
                "'by' must be one of key, team, model, provider, deployment, status; got `{by}`."
            ),
        )
        .into_response();
    };
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    match gateway
        .store
        .analytics(&filter, Grouping::By(dimension))
        .await
    {
        Ok(groups) => {
            let mut data: Vec<Group> = groups
                .into_iter()
                .map(|(GroupKey { value, .. }, aggregate)| Group {
                    value: (!value.is_empty()).then_some(value),
                    stats: aggregate.stats(),
                })
                .collect();
            data.sort_by_key(|group| std::cmp::Reverse(group.stats.requests));
            let total = data.len();
            data.truncate(limit);
            Json(serde_json::json!({
                "range": range(&filter),
                "by": dimension.name(),
                "groups": total,
                "data": data,
            }))
            .into_response()
        }
        Err(error) => crate::admin::storage_error(error).into_response(),
    }
}

fn range(filter: &AnalyticsFilter) -> Range {
    Range {
        from_ms: filter.from_ms,
        to_ms: filter.to_ms,
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_request("invalid_value", message).with_param(param)
}

/// The parameters and filter of a call to `endpoint`. Parameters that belong to another
/// analytics endpoint are refused rather than ignored.
fn parse(
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    endpoint: &str,
) -> Result<(Params, AnalyticsFilter), ApiError> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::invalid_request(
            "invalid_query",
            format!("Invalid query string: {}", rejection.body_text()),
        )
    })?;
    if endpoint != "breakdown" && (params.by.is_some() || params.limit.is_some()) {
        return Err(invalid("by", "'by' and 'limit' apply to breakdown only."));
    }
    if endpoint != "timeseries" && params.step.is_some() {
        return Err(invalid("step", "'step' applies to timeseries only."));
    }
    let now = atalaya_store::now_ms();
    let to_ms = match params.to.as_deref() {
        Some(text) => time_ms(text, now).ok_or_else(|| bad_time("to", text))?,
        None => now,
    };
    let from_ms = match params.from.as_deref() {
        Some(text) => time_ms(text, now).ok_or_else(|| bad_time("from", text))?,
        None => to_ms - DAY_MS,
    };
    if from_ms >= to_ms {
        return Err(invalid("from", "'from' must be before 'to'."));
    }
    let mut equals = Vec::new();
    for (dimension, value) in [
        (Dimension::Key, &params.key),
        (Dimension::Team, &params.team),
        (Dimension::Model, &params.model),
        (Dimension::Provider, &params.provider),
        (Dimension::Deployment, &params.deployment),
        (Dimension::Status, &params.status),
    ] {
        if let Some(value) = value {
            if dimension == Dimension::Status && value.parse::<u16>().is_err() {
                return Err(invalid(
                    "status",
                    format!("'status' must be an HTTP status code; got `{value}`."),
                ));
            }
            equals.push((dimension, value.clone()));
        }
    }
    let filter = AnalyticsFilter {
        from_ms,
        to_ms,
        equals,
    };
    Ok((params, filter))
}

fn bad_time(param: &'static str, text: &str) -> ApiError {
    invalid(
        param,
        format!(
            "'{param}' must be epoch milliseconds, an RFC 3339 time or a duration before now such as 24h; got `{text}`."
        ),
    )
}

/// The width of a time series' buckets when none is asked for: the smallest of a few round
/// steps that gives at most 200 points.
fn default_step(span_ms: i64) -> i64 {
    const STEPS: [i64; 8] = [
        60_000,
        300_000,
        900_000,
        3_600_000,
        6 * 3_600_000,
        DAY_MS,
        7 * DAY_MS,
        30 * DAY_MS,
    ];
    STEPS
        .into_iter()
        .find(|step| span_ms / step <= 200)
        .unwrap_or(30 * DAY_MS)
}

/// `90s`, `15m`, `24h`, `7d` in milliseconds.
pub(crate) fn duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ => return None,
    };
    number.checked_mul(unit_ms).filter(|ms| *ms > 0)
}

/// A point in time: epoch milliseconds, `now`, a duration before now, or RFC 3339.
pub(crate) fn time_ms(text: &str, now_ms: i64) -> Option<i64> {
    let text = text.trim();
    if text == "now" {
        return Some(now_ms);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if let Some(ago) = duration_ms(text.strip_prefix('-').unwrap_or(text)) {
        return Some(now_ms - ago);
    }
    rfc3339_ms(text)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` in epoch milliseconds.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
        }
    };
    let days = atalaya_telemetry::civil::days_from_civil(year, month as u32, day as u32);
    Some(
        ((days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60) * 1_000)
            + millis,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_accepted_form() {
        let now = 1_800_000_000_000;
        assert_eq!(time_ms("now", now), Some(now));
        assert_eq!(time_ms("1700000000000", now), Some(1_700_000_000_000));
        assert_eq!(time_ms("24h", now), Some(now - DAY_MS));
        assert_eq!(time_ms("-90m", now), Some(now - 90 * 60_000));
        assert_eq!(time_ms("1970-01-01T00:00:00Z", now), Some(0));
        assert_eq!(
            time_ms("2023-11-14T22:13:20Z", now),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            time_ms("2023-11-14T23:13:20.5+01:00", now),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            time_ms("2024-02-29T00:00:00-00:30", now),
            Some(1_709_166_600_000)
        );
        for bad in [
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-11-14",
            "5x",
            "2023-11-14T22:13:20",
        ] {
            assert_eq!(time_ms(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn default_steps_keep_series_short() {
        assert_eq!(default_step(3_600_000), 60_000);
        assert_eq!(default_step(DAY_MS), 900_000);
        assert_eq!(default_step(30 * DAY_MS), 6 * 3_600_000);
        assert_eq!(duration_ms("0h"), None);
        assert_eq!(duration_ms("h"), None);
        assert_eq!(duration_ms("2w"), Some(14 * DAY_MS));
    }
}
