//! atalaya's own API: keys, request logs, providers. Admin key only.

use std::sync::Arc;

use atalaya_security::{display_prefix, generate_api_key};
use atalaya_store::{KeyId, KeyRecord, KeyUpdate, LogQuery, NewKey};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::Gateway;
use crate::audit::Actor;
use crate::auth::Role;
use crate::error::ApiError;

pub(crate) fn storage_error(error: atalaya_store::StoreError) -> ApiError {
    tracing::error!(error = %crate::providers::error_chain(&error), "Storage call failed.");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "Storage is unavailable; retry shortly.",
    )
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    expires_at_ms: Option<i64>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    rpm_limit: Option<i64>,
    #[serde(default)]
    tpm_limit: Option<i64>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    soft_budget_usd: Option<f64>,
    #[serde(default)]
    budget_period: Option<String>,
}

/// A change to a key: absent fields stay, `null` clears `team`, `models` and `expires_at_ms`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KeyPatch {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default, deserialize_with = "present")]
    team: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    expires_at_ms: Option<Option<i64>>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    rpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    tpm_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    budget_usd: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    soft_budget_usd: Option<Option<f64>>,
    #[serde(default)]
    budget_period: Option<String>,
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn caller(extensions: &axum::http::Extensions) -> crate::Principal {
    extensions
        .get::<crate::Principal>()
        .cloned()
        .unwrap_or(crate::Principal::Admin)
}

/// The role named `text`, if the caller may hand it out.
fn grantable(caller: &crate::Principal, text: &str) -> Result<Role, ApiError> {
    let role = Role::parse(text).ok_or_else(|| {
        ApiError::invalid_request(
            "invalid_value",
            format!("'role' must be one of admin, operator, developer, viewer; got `{text}`."),
        )
        .with_param("role")
    })?;
    check_grant(caller, role)?;
    Ok(role)
}

/// Whether the caller may create, change or revoke a key of `role`.
fn check_grant(caller: &crate::Principal, role: Role) -> Result<(), ApiError> {
    if caller.role().may_grant(role) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_denied",
        format!(
            "A `{}` key cannot manage `{}` keys.",
            caller.role().as_str(),
            role.as_str()
        ),
    ))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.len() > 200 {
        return Err(ApiError::invalid_request(
            "invalid_value",
            "'name' must be at most 200 characters.",
        )
        .with_param("name"));
    }
    Ok(())
}

fn check_models(models: Option<&[String]>) -> Result<(), ApiError> {
    if models
        .is_some_and(|m| m.is_empty() || m.iter().any(|m| m.trim().is_empty() || m.len() > 200))
    {
        return Err(ApiError::invalid_request(
            "invalid_value",
            "'models' must be a non-empty list of model names (omit it, or null, for any model).",
        )
        .with_param("models"));
    }
    Ok(())
}

fn check_metadata(metadata: &serde_json::Value) -> Result<(), ApiError> {
    if !metadata.is_object() || metadata.to_string().len() > 4096 {
        return Err(ApiError::invalid_request(
            "invalid_value",
            "'metadata' must be a JSON object of at most 4 KiB.",
        )
        .with_param("metadata"));
    }
    Ok(())
}

fn check_limit(name: &'static str, limit: Option<i64>) -> Result<(), ApiError> {
    if limit.is_some_and(|l| l < 1) {
        return Err(ApiError::invalid_request(
            "invalid_value",
            format!("'{name}' must be a positive number per minute (omit it, or null, for none)."),
        )
        .with_param(name));
    }
    Ok(())
}

fn check_budget(name: &'static str, usd: Option<f64>) -> Result<(), ApiError> {
    if usd.is_some_and(|v| !v.is_finite() || v <= 0.0) {
        return Err(ApiError::invalid_request(
            "invalid_value",
            format!("'{name}' must be a positive amount in USD (omit it, or null, for none)."),
        )
        .with_param(name));
    }
    Ok(())
}

fn check_period(period: &str) -> Result<(), ApiError> {
    if crate::budgets::Period::parse(period).is_none() {
        return Err(ApiError::invalid_request(
            "invalid_value",
            format!("'budget_period' must be `day` or `month`; got `{period}`."),
        )
        .with_param("budget_period"));
    }
    Ok(())
}

fn check_expiry(expires_at_ms: Option<i64>) -> Result<(), ApiError> {
    if expires_at_ms.is_some_and(|at| at <= atalaya_store::now_ms()) {
        return Err(ApiError::invalid_request(
            "invalid_value",
            "'expires_at_ms' must be in the future (milliseconds since the Unix epoch).",
        )
        .with_param("expires_at_ms"));
    }
    Ok(())
}

/// The one response that contains a key in plaintext.
#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    record: &'a KeyRecord,
    key: &'a str,
}

/// The caller of an admin endpoint, for the audit log.
pub(crate) fn actor(extensions: &axum::http::Extensions) -> Actor {
    Actor {
        name: match extensions.get::<crate::Principal>() {
            Some(crate::Principal::Key(key)) => key.id.to_string(),
            _ => "admin".to_owned(),
        },
        source_ip: crate::audit::source_ip(extensions),
    }
}

pub(crate) async fn create_key(
    State(gateway): State<Arc<Gateway>>,
    extensions: axum::http::Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match create(&gateway, &caller(&extensions), &actor(&extensions), body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn create(
    gateway: &Gateway,
    caller: &crate::Principal,
    actor: &Actor,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body =
        body.map_err(|rejection| ApiError::invalid_request("invalid_body", rejection.to_string()))?;
    let request: CreateKey = if body.iter().all(u8::is_ascii_whitespace) {
        CreateKey::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::invalid_request(
                "invalid_json",
                format!("Expected {{\"name\", \"role\", \"team\", \"models\", \"expires_at_ms\", \"metadata\"}} (all optional): {error}."),
            )
        })?
    };
    let name = request.name.unwrap_or_default();
    check_name(&name)?;
    let role = grantable(caller, request.role.as_deref().unwrap_or("developer"))?;
    check_models(request.models.as_deref())?;
    let metadata = request.metadata.unwrap_or_else(|| serde_json::json!({}));
    check_metadata(&metadata)?;
    check_expiry(request.expires_at_ms)?;
    check_limit("rpm_limit", request.rpm_limit)?;
    check_limit("tpm_limit", request.tpm_limit)?;
    check_budget("budget_usd", request.budget_usd)?;
    check_budget("soft_budget_usd", request.soft_budget_usd)?;
    let budget_period = request.budget_period.as_deref().unwrap_or("month");
    check_period(budget_period)?;
    let key = generate_api_key();
    let hash = gateway.keys.hash(key.expose_secret());
    let prefix = display_prefix(key.expose_secret());
    let record = gateway
        .store
        .insert_key(NewKey {
            name: &name,
            key_hash: &hash.0,
            key_prefix: &prefix,
            role: role.as_str(),
            team: request.team.as_deref(),
            models: request.models.as_deref(),
            expires_at_ms: request.expires_at_ms,
            metadata: &metadata,
            rpm_limit: request.rpm_limit,
            tpm_limit: request.tpm_limit,
            budget_usd: request.budget_usd,
            soft_budget_usd: request.soft_budget_usd,
            budget_period,
        })
        .await
        .map_err(storage_error)?;
    tracing::info!(key_id = %record.id, "API key created.");
    gateway
        .auditor
        .record(
            actor,
            "key.create",
            &record.id.0,
            serde_json::json!({"name": record.name, "prefix": record.key_prefix, "role": record.role, "team": record.team, "models": record.models, "expires_at_ms": record.expires_at_ms}),
        )
        .await;
    let created = CreatedKey {
        record: &record,
        key: key.expose_secret(),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Serialize)]
struct KeyList {
    data: Vec<KeyRecord>,
}

pub(crate) async fn list_keys(State(gateway): State<Arc<Gateway>>) -> Response {
    match gateway.store.list_keys().await {
        Ok(data) => Json(KeyList { data }).into_response(),
        Err(error) => storage_error(error).into_response(),
    }
}

pub(crate) async fn revoke_key(
    State(gateway): State<Arc<Gateway>>,
    extensions: axum::http::Extensions,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = may_manage(&gateway, &caller(&extensions), &id).await {
        return error.into_response();
    }
    match gateway.store.revoke_key(&id).await {
        Ok(Some(record)) => {
            gateway.keys.forget(&KeyId(id));
            tracing::info!(key_id = %record.id, "API key revoked.");
            gateway
                .auditor
                .record(
                    &actor(&extensions),
                    "key.revoke",
                    &record.id.0,
                    serde_json::json!({}),
                )
                .await;
            Json(record).into_response()
        }
        Ok(None) => key_not_found(&id).into_response(),
        Err(error) => storage_error(error).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    limit: Option<u32>,
    before: Option<i64>,
}

/// `GET /api/v1/logs` filters: every one given must match.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestLogParams {
    limit: Option<u32>,
    before: Option<i64>,
    key: Option<String>,
    team: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    deployment: Option<String>,
    request_id: Option<String>,
    /// An HTTP status, or `failed` for every status from 400.
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub(crate) async fn list_logs(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<RequestLogParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return page_query_error(&rejection).into_response(),
    };
    let (status, failed) = match params.status.as_deref() {
        None => (None, false),
        Some("failed") => (None, true),
        Some(text) => match text.parse::<u16>() {
            Ok(code) => (Some(i64::from(code)), false),
            Err(_) => {
                return ApiError::invalid_request(
                    "invalid_value",
                    format!("'status' must be an HTTP status code or `failed`; got `{text}`."),
                )
                .with_param("status")
                .into_response();
            }
        },
    };
    let now = atalaya_store::now_ms();
    let mut times = [None, None];
    for (slot, (name, value)) in times
        .iter_mut()
        .zip([("from", &params.from), ("to", &params.to)])
    {
        if let Some(text) = value {
            match crate::analytics::time_ms(text, now) {
                Some(ms) => *slot = Some(ms),
                None => {
                    return ApiError::invalid_request(
                        "invalid_value",
                        format!("'{name}' must be epoch milliseconds, an RFC 3339 time or a duration such as 24h; got `{text}`."),
                    )
                    .with_param(name)
                    .into_response();
                }
            }
        }
    }
    let query = LogQuery {
        limit: params.limit.unwrap_or(100),
        before_seq: params.before,
        key_id: params.key,
        team: params.team,
        model: params.model,
        provider: params.provider,
        deployment: params.deployment,
        request_id: params.request_id,
        status,
        failed,
        from_ms: times[0],
        to_ms: times[1],
    };
    match gateway.store.list_request_logs(query).await {
        Ok(page) => Json(page).into_response(),
        Err(error) => storage_error(error).into_response(),
    }
}

/// `GET /api/v1/alerts?limit=100&before=SEQ`: alerts fired and resolved, newest first.
pub(crate) async fn list_alerts(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return page_query_error(&rejection).into_response(),
    };
    let limit = params.limit.unwrap_or(100).clamp(1, 1_000);
    match gateway.store.list_alerts(limit, params.before).await {
        Ok(data) => {
            let next_before = (data.len() == limit as usize)
                .then(|| data.last().map(|row| row.seq))
                .flatten();
            Json(serde_json::json!({"data": data, "next_before": next_before})).into_response()
        }
        Err(error) => storage_error(error).into_response(),
    }
}

pub(crate) async fn list_providers(State(gateway): State<Arc<Gateway>>) -> Response {
    Json(serde_json::json!({ "data": gateway.providers() })).into_response()
}

/// Routable models with what the catalog knows of them.
pub(crate) async fn list_models(State(gateway): State<Arc<Gateway>>) -> Response {
    #[derive(Serialize)]
    struct Model<'a> {
        id: &'a str,
        provider: &'a str,
        /// Context window, limits, prices and features, when the catalog knows the model.
        catalog: Option<&'a crate::catalog::ModelInfo>,
    }
    let data: Vec<Model<'_>> = gateway
        .routing
        .listed
        .iter()
        .map(|listed| Model {
            id: &listed.id,
            provider: &listed.owned_by,
            catalog: listed.info.as_deref(),
        })
        .collect();
    Json(serde_json::json!({ "data": data })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    limit: Option<u32>,
    before: Option<i64>,
}

/// The audit log, newest first; `next_before` pages on.
pub(crate) async fn list_audit(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return page_query_error(&rejection).into_response(),
    };
    let limit = i64::from(params.limit.unwrap_or(100).clamp(1, 1000));
    match gateway
        .store
        .audit_before(params.before.unwrap_or(i64::MAX), limit)
        .await
    {
        Ok(data) => {
            let next_before = (data.len() as i64 == limit)
                .then(|| data.last().map(|row| row.seq))
                .flatten();
            Json(serde_json::json!({"data": data, "next_before": next_before})).into_response()
        }
        Err(error) => storage_error(error).into_response(),
    }
}

/// A bad `?limit=&before=` on a paged endpoint.
fn page_query_error(rejection: &axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::invalid_request(
        "invalid_query",
        format!("{rejection}. Use ?limit=1..1000&before=SEQ (SEQ from `next_before`)."),
    )
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "key_not_found",
        format!("No key has the id `{id}`."),
    )
}

/// The key `id`, if the caller's role may manage keys of its role.
async fn may_manage(
    gateway: &Gateway,
    caller: &crate::Principal,
    id: &str,
) -> Result<KeyRecord, ApiError> {
    let record = gateway
        .store
        .key(id)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| key_not_found(id))?;
    check_grant(caller, Role::parse(&record.role).unwrap_or(Role::Admin))?;
    Ok(record)
}

/// One key: its role, team, models, expiry and metadata (never the key).
pub(crate) async fn get_key(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Response {
    match gateway.store.key(&id).await {
        Ok(Some(record)) => {
            let spend = match gateway.budgets.report(&record).await {
                Ok(spend) => spend,
                Err(error) => return error.into_response(),
            };
            let mut value = serde_json::to_value(&record).unwrap_or_default();
            value["spend"] = serde_json::to_value(spend).unwrap_or_default();
            Json(value).into_response()
        }
        Ok(None) => key_not_found(&id).into_response(),
        Err(error) => storage_error(error).into_response(),
    }
}

/// Changes a key; the key cache forgets it at once, so the change holds from the next request.
pub(crate) async fn update_key(
    State(gateway): State<Arc<Gateway>>,
    extensions: axum::http::Extensions,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match update(&gateway, &extensions, &id, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn update(
    gateway: &Gateway,
    extensions: &axum::http::Extensions,
    id: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(extensions);
    let body =
        body.map_err(|rejection| ApiError::invalid_request("invalid_body", rejection.to_string()))?;
    let patch: KeyPatch = serde_json::from_slice(&body).map_err(|error| {
        ApiError::invalid_request(
            "invalid_json",
            format!("Expected an object with any of name, role, team, models, expires_at_ms, metadata: {error}."),
        )
    })?;
    may_manage(gateway, &caller, id).await?;
    if let Some(name) = &patch.name {
        check_name(name)?;
    }
    let role = match &patch.role {
        Some(role) => Some(grantable(&caller, role)?.as_str().to_owned()),
        None => None,
    };
    if let Some(models) = &patch.models {
        check_models(models.as_deref())?;
    }
    if let Some(metadata) = &patch.metadata {
        check_metadata(metadata)?;
    }
    if let Some(expires) = patch.expires_at_ms {
        check_expiry(expires)?;
    }
    if let Some(rpm) = patch.rpm_limit {
        check_limit("rpm_limit", rpm)?;
    }
    if let Some(tpm) = patch.tpm_limit {
        check_limit("tpm_limit", tpm)?;
    }
    if let Some(budget) = patch.budget_usd {
        check_budget("budget_usd", budget)?;
    }
    if let Some(soft) = patch.soft_budget_usd {
        check_budget("soft_budget_usd", soft)?;
    }
    if let Some(period) = &patch.budget_period {
        check_period(period)?;
    }
    let changed: Vec<&str> = [
        ("name", patch.name.is_some()),
        ("role", role.is_some()),
        ("team", patch.team.is_some()),
        ("models", patch.models.is_some()),
        ("expires_at_ms", patch.expires_at_ms.is_some()),
        ("metadata", patch.metadata.is_some()),
        ("rpm_limit", patch.rpm_limit.is_some()),
        ("tpm_limit", patch.tpm_limit.is_some()),
        ("budget_usd", patch.budget_usd.is_some()),
        ("soft_budget_usd", patch.soft_budget_usd.is_some()),
        ("budget_period", patch.budget_period.is_some()),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(field, _)| field)
    .collect();
    let update = KeyUpdate {
        name: patch.name,
        role,
        team: patch.team,
        models: patch.models,
        expires_at_ms: patch.expires_at_ms,
        metadata: patch.metadata,
        rpm_limit: patch.rpm_limit,
        tpm_limit: patch.tpm_limit,
        budget_usd: patch.budget_usd,
        soft_budget_usd: patch.soft_budget_usd,
        budget_period: patch.budget_period,
    };
    let record = gateway
        .store
        .update_key(id, update)
        .await
        .map_err(storage_error)?
        .ok_or_else(|| key_not_found(id))?;
    gateway.keys.forget(&record.id);
    gateway
        .auditor
        .record(
            &actor(extensions),
            "key.update",
            id,
            serde_json::json!({"changed": changed, "role": record.role}),
        )
        .await;
    Ok(Json(record).into_response())
}
