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

    pub fn role(&self) -> Role {
        match self {
            Principal::Admin => Role::Admin,
            // A role this version does not know gets the least.
            Principal::Key(record) => Role::parse(&record.role).unwrap_or(Role::Viewer),
        }
    }

    /// The models the caller may use; `None`: any.
    pub fn allowed_models(&self) -> Option<Arc<[String]>> {
        match self {
            Principal::Admin => None,
            Principal::Key(record) => record.models.as_deref().map(Arc::from),
        }
    }

    /// The name the audit log records.
    pub fn name(&self) -> String {
        self.key_id().unwrap_or_else(|| "admin".to_owned())
    }
}

/// What a key may do. The documented table (README, "Roles"):
///
/// | permission | admin | operator | developer | viewer |
/// |---|---|---|---|---|
/// | `call_models` (`/v1/*`, compare) | yes | yes | yes | no |
/// | `read` (providers, models, request logs, key list) | yes | yes | no | yes |
/// | `manage_keys` (create, update, revoke) | yes | yes (developer and viewer keys) | no | no |
/// | `read_audit` | yes | yes | no | no |
/// | `operate` (resolve errors, acknowledge alerts) | yes | yes | no | no |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Developer,
    Operator,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    CallModels,
    Read,
    ManageKeys,
    ReadAudit,
    Operate,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::CallModels => "call_models",
            Permission::Read => "read",
            Permission::ManageKeys => "manage_keys",
            Permission::ReadAudit => "read_audit",
            Permission::Operate => "operate",
        }
    }
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Developer, Role::Viewer];

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Role::Admin | Role::Operator => true,
            Role::Developer => permission == Permission::CallModels,
            Role::Viewer => permission == Permission::Read,
        }
    }

    /// Roles this one may hand out: an admin any, an operator only lesser ones.
    pub fn may_grant(self, role: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => role < Role::Operator,
            Role::Developer | Role::Viewer => false,
        }
    }

    fn permissions(self) -> String {
        [
            Permission::CallModels,
            Permission::Read,
            Permission::ManageKeys,
            Permission::ReadAudit,
            Permission::Operate,
        ]
        .into_iter()
        .filter(|p| self.allows(*p))
        .map(Permission::as_str)
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// The 403 for a caller whose role lacks `permission`.
pub(crate) fn denied(principal: &Principal, permission: Permission) -> ApiError {
    metrics::counter!(names::AUTH_FAILURES, "reason" => "forbidden").increment(1);
    let role = principal.role();
    ApiError::new(
        StatusCode::FORBIDDEN,
        "permission_denied",
        format!(
            "This endpoint needs the `{}` permission; a `{}` key has: {}.",
            permission.as_str(),
            role.as_str(),
            role.permissions()
        ),
    )
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
            if record.is_expired(atalaya_store::now_ms()) {
                return Err(invalid_key("expired"));
            }
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
            Some(record) if record.is_active() && record.is_expired(atalaya_store::now_ms()) => {
                Err(invalid_key("expired"))
            }
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
    } else if reason == "expired" {
        "This API key has expired. Ask an administrator to extend it or for a new key."
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
        .get(crate::header_names::X_API_KEY)
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

/// Any valid key whose role has the permission the route needs.
pub(crate) async fn require(
    State((gateway, permission)): State<(Arc<Gateway>, Permission)>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(request.headers(), &gateway.keys).await {
        Ok(principal) if principal.role().allows(permission) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(principal) => gateway
            .deny(
                &principal,
                crate::audit::denied_request(&request),
                permission,
            )
            .await
            .into_response(),
        Err(error) => {
            gateway.audit_auth_failure(request.extensions(), &error);
            error.into_response()
        }
    }
}
