//! atalaya's own API: keys, request logs, providers. Admin key only.

use std::sync::Arc;

use atalaya_security::{display_prefix, generate_api_key};
use atalaya_store::{KeyId, KeyRecord, LogQuery, NewKey};
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
use crate::error::ApiError;

fn storage_error(error: atalaya_store::StoreError) -> ApiError {
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
}

/// The one response that contains a key in plaintext.
#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    record: &'a KeyRecord,
    key: &'a str,
}

/// The caller of an admin endpoint, for the audit log.
fn actor(extensions: &axum::http::Extensions) -> Actor {
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
    match create(&gateway, &actor(&extensions), body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn create(
    gateway: &Gateway,
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
                format!("Expected {{\"name\": \"...\"}}: {error}."),
            )
        })?
    };
    let name = request.name.unwrap_or_default();
    if name.len() > 200 {
        return Err(ApiError::invalid_request(
            "invalid_value",
            "'name' must be at most 200 characters.",
        )
        .with_param("name"));
    }
    let key = generate_api_key();
    let hash = gateway.keys.hash(key.expose_secret());
    let prefix = display_prefix(key.expose_secret());
    let record = gateway
        .store
        .insert_key(NewKey {
            name: &name,
            key_hash: &hash.0,
            key_prefix: &prefix,
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
            serde_json::json!({"name": record.name, "prefix": record.key_prefix}),
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
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("No key has the id `{id}`."),
        )
        .into_response(),
        Err(error) => storage_error(error).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    limit: Option<u32>,
    before: Option<i64>,
}

pub(crate) async fn list_logs(
    State(gateway): State<Arc<Gateway>>,
    params: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(rejection) => return page_query_error(&rejection).into_response(),
    };
    let query = LogQuery {
        limit: params.limit.unwrap_or(100),
        before_seq: params.before,
    };
    match gateway.store.list_request_logs(query).await {
        Ok(page) => Json(page).into_response(),
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
