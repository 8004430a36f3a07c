//! Who is calling: the admin key and virtual keys, looked up through an in-memory cache.
//!
//! Keys are cached by keyed hash on first use; a miss falls back to storage (a key created
//! by another replica, or since the start). Revoking through the API removes the key from the
//! cache before the response is sent, so a revoked key fails on its very next use.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use atalaya_security::{KEY_PREFIX, KeyHash, KeyHasher};
use atalaya_store::{KeyId, KeyRecord, Store};
use atalaya_telemetry::names;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Gateway;
use crate::error::ApiError;

/// The caller of a request, put in the request's extensions by the auth middleware.
#[derive(Debug, Clone)]
pub enum Principal {
    Admin,
    Key(Arc<KeyRecord>),
}

impl Principal {
    pub fn key_id(&self) -> Option<String> {
        match self {
            Principal::Admin => None,
            Principal::Key(record) => Some(record.id.0.clone()),
        }
    }
}

pub struct KeyCache {
    hasher: KeyHasher,
    admin: KeyHash,
    active: RwLock<HashMap<KeyHash, Arc<KeyRecord>>>,
    store: Store,
}

impl KeyCache {
    /// `admin_key_hash` is the admin key hashed with `hasher`. Keys enter the cache on first use.
    pub fn new(hasher: KeyHasher, admin_key_hash: KeyHash, store: Store) -> Self {
        KeyCache {
            hasher,
            admin: admin_key_hash,
            active: RwLock::new(HashMap::new()),
            store,
        }
    }

    pub fn hash(&self, key: &str) -> KeyHash {
        self.hasher.hash(key)
    }

    async fn authenticate(&self, presented: &str) -> Result<Principal, ApiError> {
        let hash = self.hasher.hash(presented);
        if hash.ct_eq(&self.admin) {
            return Ok(Principal::Admin);
        }
        if !presented.starts_with(KEY_PREFIX) {
            return Err(invalid_key("invalid"));
        }
        if let Some(record) = self
            .active
            .read()
            .ok()
            .and_then(|active| active.get(&hash).cloned())
        {
            return Ok(Principal::Key(record));
        }
        let record = self.store.find_key_by_hash(&hash.0).await.map_err(|error| {
            tracing::warn!(error = %crate::providers::error_chain(&error), "Key lookup failed.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "The key could not be checked because storage is unavailable; retry shortly.",
            )
        })?;
        match record {
            Some(record) if record.is_active() => {
                let record = Arc::new(record);
                if let Ok(mut active) = self.active.write() {
                    active.insert(hash, record.clone());
                }
                Ok(Principal::Key(record))
            }
            Some(_) => Err(invalid_key("revoked")),
            None => Err(invalid_key("invalid")),
        }
    }

    /// Makes the cache forget a key at once (after revocation).
    pub fn forget(&self, id: &KeyId) {
        if let Ok(mut active) = self.active.write() {
            active.retain(|_, record| &record.id != id);
        }
    }
}

fn invalid_key(reason: &'static str) -> ApiError {
    metrics::counter!(names::AUTH_FAILURES, "reason" => reason).increment(1);
    let message = if reason == "revoked" {
        "This API key has been revoked. Ask an administrator for a new key."
    } else {
        "Incorrect API key provided. Use a key from `atalaya keys create` (it starts with sk-atl-) or the admin key."
    };
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
}

/// `Authorization: Bearer KEY` (OpenAI SDKs) or `x-api-key: KEY` (Anthropic SDKs).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        let (scheme, key) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(key.trim())
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

pub(crate) async fn authenticate(
    headers: &HeaderMap,
    keys: &KeyCache,
) -> Result<Principal, ApiError> {
    let Some(presented) = presented_key(headers) else {
        metrics::counter!(names::AUTH_FAILURES, "reason" => "missing").increment(1);
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "You didn't provide an API key. Send it as `Authorization: Bearer KEY` or `x-api-key: KEY`.",
        ));
    };
    keys.authenticate(presented).await
}

/// Any valid key: for atalaya's own endpoints that spend on models (compare).
pub(crate) async fn require_key(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(request.headers(), &gateway.keys).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            gateway.audit_auth_failure(request.extensions(), &error);
            error.into_response()
        }
    }
}

/// The admin key only.
pub(crate) async fn require_admin(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(request.headers(), &gateway.keys).await {
        Ok(Principal::Admin) => {
            request.extensions_mut().insert(Principal::Admin);
            next.run(request).await
        }
        Ok(Principal::Key(key)) => {
            metrics::counter!(names::AUTH_FAILURES, "reason" => "not_admin").increment(1);
            let actor = crate::audit::Actor {
                name: key.id.to_string(),
                source_ip: crate::audit::source_ip(request.extensions()),
            };
            let target = format!("{} {}", request.method(), request.uri().path());
            gateway
                .auditor
                .record(
                    &actor,
                    "auth.denied",
                    &target,
                    serde_json::json!({"needs": "admin"}),
                )
                .await;
            ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_required",
                "This endpoint needs the admin key.",
            )
            .into_response()
        }
        Err(error) => {
            gateway.audit_auth_failure(request.extensions(), &error);
            error.into_response()
        }
    }
}
