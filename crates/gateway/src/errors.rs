//! Error tracking over HTTP — `GET /api/v1/errors` (groups), `/api/v1/errors/stats` (per
//! service and component), `/api/v1/errors/{fingerprint}` (a group with its recent
//! occurrences), `POST .../resolve` and `.../reopen`, and `GET /api/v1/server-logs` — and the
//! report a failed data-plane request makes.

use std::collections::BTreeMap;
use std::sync::Arc;

use atalaya_store::{ErrorQuery, ErrorStatus};
use atalaya_telemetry::{Report, Severity};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::{Exchange, Gateway, RequestContext};

/// How bad a failed request's error is, and the part of the gateway it belongs to.
fn classify(code: &str) -> (Severity, &'static str) {
    match code {
        "internal_error" => (Severity::Critical, "gateway"),
        "upstream_auth_failed" => (Severity::High, "upstream"),
        "no_healthy_deployment" => (Severity::High, "routing"),
        "storage_unavailable" => (Severity::High, "storage"),
        code if code.starts_with("upstream_") => (Severity::Medium, "upstream"),
        _ => (Severity::Medium, "gateway"),
    }
}

/// `crates/gateway/src/dispatch.rs` → `atalaya_gateway::dispatch`.
fn module_of(file: &str) -> Option<String> {
    let rest = file.strip_prefix("crates/")?;
    let (krate, path) = rest.split_once("/src/")?;
    let krate = krate.replace('-', "_");
    let mut module = if krate == "atalaya" {
        krate
    } else {
        format!("atalaya_{krate}")
    };
    for part in path.trim_end_matches(".rs").split('/') {
        if !matches!(part, "lib" | "main" | "mod") {
            module.push_str("::");
            module.push_str(part);
        }
    }
    Some(module)
}

/// The error report for a finished request, if it failed on the gateway's or a provider's
/// side (status 500 and above, or a stream that broke after it started).
pub(crate) fn request_failure(
    context: &RequestContext,
    status: u16,
    exchange: &Exchange,
) -> Option<Report> {
    let broken_stream = exchange.upstream_error_class == Some("stream");
    if (status < 500 && !broken_stream) || status == crate::relay::CLIENT_CLOSED {
        return None;
    }
    let (code, location) = exchange.error_source?;
    let (severity, component) = classify(code);
    let message = exchange
        .error
        .as_deref()
        .map(|text| {
            text.strip_prefix(code)
                .map_or(text, |rest| rest.trim_start_matches(": "))
        })
        .unwrap_or(code);
    let mut context_fields = BTreeMap::new();
    context_fields.insert("request_id".to_owned(), context.id.to_string());
    context_fields.insert("endpoint".to_owned(), context.endpoint.to_owned());
    context_fields.insert("status".to_owned(), status.to_string());
    let optional = [
        ("key_id", exchange.key_id.as_deref()),
        (
            "team",
            exchange.key.as_ref().and_then(|key| key.team.as_deref()),
        ),
        ("model", exchange.model.as_deref()),
        ("provider", exchange.provider.as_deref()),
        ("deployment", exchange.deployment.as_deref()),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            context_fields.insert(name.to_owned(), value.to_owned());
        }
    }
    Some(Report {
        time_ms: atalaya_store::now_ms(),
        level: "error",
        severity: Some(severity),
        log: false,
        service: "gateway".to_owned(),
        component: format!("gateway.{component}"),
        code: Some(code.to_owned()),
        message: atalaya_security::mask::mask(message).into_owned(),
        module: module_of(location.file()),
        file: Some(location.file().to_owned()),
        line: Some(location.line()),
        context: context_fields,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// open (default), resolved or all.
    status: Option<String>,
    /// This severity and worse.
    severity: Option<String>,
    service: Option<String>,
    component: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

fn bad_query(rejection: &axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::invalid_request(
        "invalid_query",
        format!("Invalid query string: {}", rejection.body_text()),
    )
}

pub(crate) async fn list(
    State(gateway): State<Arc<Gateway>>,
    params: QueryResult<ListParams>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection).into_response(),
    };
    let status = match params.status.as_deref().unwrap_or("open") {
        "open" => ErrorStatus::Open,
        "resolved" => ErrorStatus::Resolved,
        "all" => ErrorStatus::All,
        other => {
            return ApiError::invalid_request(
                "invalid_value",
                format!("'status' must be open, resolved or all; got `{other}`."),
            )
            .with_param("status")
            .into_response();
        }
    };
    let min_severity = match params.severity.as_deref() {
        None => None,
        Some(text) => match Severity::parse(text) {
            Some(severity) => Some(severity),
            None => {
                return ApiError::invalid_request(
                    "invalid_value",
                    format!("'severity' must be low, medium, high or critical; got `{text}`."),
                )
                .with_param("severity")
                .into_response();
            }
        },
    };
    let query = ErrorQuery {
        status,
        min_severity,
        service: params.service,
        component: params.component,
        limit: params.limit.unwrap_or(100),
        offset: params.offset.unwrap_or(0),
    };
    match gateway.store.list_error_groups(&query).await {
        Ok(data) => Json(serde_json::json!({ "data": data })).into_response(),
        Err(error) => crate::admin::storage_error(error).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsParams {
    /// Groups seen since (epoch ms, RFC 3339 or a duration before now); default 24h.
    from: Option<String>,
}

pub(crate) async fn stats(
    State(gateway): State<Arc<Gateway>>,
    params: QueryResult<StatsParams>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection).into_response(),
    };
    let now = atalaya_store::now_ms();
    let text = params.from.as_deref().unwrap_or("24h");
    let Some(since) = crate::analytics::time_ms(text, now) else {
        return ApiError::invalid_request(
            "invalid_value",
            format!("'from' must be epoch milliseconds, an RFC 3339 time or a duration such as 24h; got `{text}`."),
        )
        .with_param("from")
        .into_response();
    };
    let rows = match gateway.store.error_stats(since).await {
        Ok(rows) => rows,
        Err(error) => return crate::admin::storage_error(error).into_response(),
    };
    // Totals per service and per severity beside the detailed rows.
    let mut services: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    let mut severities: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for row in &rows {
        for (map, key) in [
            (&mut services, row.service.as_str()),
            (&mut severities, row.severity.as_str()),
        ] {
            let entry = map.entry(key).or_default();
            entry.0 += row.groups;
            entry.1 += row.open_groups;
            entry.2 += row.occurrences;
        }
    }
    let totals = |map: BTreeMap<&str, (i64, i64, i64)>, name: &str| -> Vec<serde_json::Value> {
        map.into_iter()
            .map(|(key, (groups, open, occurrences))| {
                serde_json::json!({name: key, "groups": groups, "open_groups": open, "occurrences": occurrences})
            })
            .collect()
    };
    Json(serde_json::json!({
        "since_ms": since,
        "by_service": totals(services, "service"),
        "by_severity": totals(severities, "severity"),
        "by_component": rows,
    }))
    .into_response()
}

pub(crate) async fn show(
    State(gateway): State<Arc<Gateway>>,
    Path(fingerprint): Path<String>,
) -> Response {
    let group = match gateway.store.error_group(&fingerprint).await {
        Ok(Some(group)) => group,
        Ok(None) => return not_found(&fingerprint).into_response(),
        Err(error) => return crate::admin::storage_error(error).into_response(),
    };
    match gateway.store.error_occurrences(&fingerprint, 50).await {
        Ok(occurrences) => Json(serde_json::json!({
            "group": group,
            "occurrences": occurrences,
        }))
        .into_response(),
        Err(error) => crate::admin::storage_error(error).into_response(),
    }
}

pub(crate) async fn resolve(
    State(gateway): State<Arc<Gateway>>,
    extensions: axum::http::Extensions,
    Path(fingerprint): Path<String>,
) -> Response {
    set_resolved(&gateway, &extensions, &fingerprint, true).await
}

pub(crate) async fn reopen(
    State(gateway): State<Arc<Gateway>>,
    extensions: axum::http::Extensions,
    Path(fingerprint): Path<String>,
) -> Response {
    set_resolved(&gateway, &extensions, &fingerprint, false).await
}

async fn set_resolved(
    gateway: &Gateway,
    extensions: &axum::http::Extensions,
    fingerprint: &str,
    resolved: bool,
) -> Response {
    let now = atalaya_store::now_ms();
    match gateway
        .store
        .set_error_resolved(fingerprint, resolved, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => return not_found(fingerprint).into_response(),
        Err(error) => return crate::admin::storage_error(error).into_response(),
    }
    let action = if resolved {
        "error.resolve"
    } else {
        "error.reopen"
    };
    gateway
        .auditor
        .record(
            &crate::admin::actor(extensions),
            action,
            fingerprint,
            serde_json::json!({}),
        )
        .await;
    match gateway.store.error_group(fingerprint).await {
        Ok(Some(group)) => Json(group).into_response(),
        Ok(None) => not_found(fingerprint).into_response(),
        Err(error) => crate::admin::storage_error(error).into_response(),
    }
}

fn not_found(fingerprint: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "error_not_found",
        format!("No error group has the fingerprint `{fingerprint}`."),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    limit: Option<u32>,
    before: Option<i64>,
    /// `error` for errors only; warnings and errors by default.
    level: Option<String>,
}

pub(crate) async fn server_logs(
    State(gateway): State<Arc<Gateway>>,
    params: QueryResult<LogParams>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return bad_query(&rejection).into_response(),
    };
    let errors_only = match params.level.as_deref() {
        None | Some("warn") => false,
        Some("error") => true,
        Some(other) => {
            return ApiError::invalid_request(
                "invalid_value",
                format!("'level' must be warn or error; got `{other}`."),
            )
            .with_param("level")
            .into_response();
        }
    };
    let limit = params.limit.unwrap_or(100).clamp(1, 1_000);
    match gateway
        .store
        .list_server_logs(limit, params.before, errors_only)
        .await
    {
        Ok(data) => {
            let next_before = (data.len() == limit as usize)
                .then(|| data.last().map(|row| row.seq))
                .flatten();
            Json(serde_json::json!({ "data": data, "next_before": next_before })).into_response()
        }
        Err(error) => crate::admin::storage_error(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_name_their_modules() {
        assert_eq!(
            module_of("crates/gateway/src/dispatch.rs").as_deref(),
            Some("atalaya_gateway::dispatch")
        );
        assert_eq!(
            module_of("crates/gateway/src/routing/strategy.rs").as_deref(),
            Some("atalaya_gateway::routing::strategy")
        );
        assert_eq!(
            module_of("crates/gateway/src/lib.rs").as_deref(),
            Some("atalaya_gateway")
        );
        assert_eq!(
            module_of("crates/mock-provider/src/server.rs").as_deref(),
            Some("atalaya_mock_provider::server")
        );
        assert_eq!(module_of("/rustc/abc/library/core.rs"), None);
    }

    #[test]
    fn codes_map_to_severity_and_component() {
        assert_eq!(classify("upstream_timeout"), (Severity::Medium, "upstream"));
        assert_eq!(
            classify("upstream_auth_failed"),
            (Severity::High, "upstream")
        );
        assert_eq!(
            classify("no_healthy_deployment"),
            (Severity::High, "routing")
        );
        assert_eq!(classify("internal_error"), (Severity::Critical, "gateway"));
    }
}
