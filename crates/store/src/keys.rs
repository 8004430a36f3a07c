//! The `api_keys` repository.

use serde::Serialize;

use crate::{Store, StoreError, now_ms};

/// A key's public identifier (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct KeyId(pub String);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct NewKey<'a> {
    pub name: &'a str,
    pub key_hash: &'a [u8],
    pub key_prefix: &'a str,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyRecord {
    pub id: KeyId,
    pub name: String,
    pub key_prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl KeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

macro_rules! columns {
    () => {
        "id, name, key_prefix, created_at_ms, revoked_at_ms"
    };
}

impl Store {
    pub async fn insert_key(&self, key: NewKey<'_>) -> Result<KeyRecord, StoreError> {
        let record = KeyRecord {
            id: KeyId(format!("key_{}", uuid::Uuid::now_v7().simple())),
            name: key.name.to_owned(),
            key_prefix: key.key_prefix.to_owned(),
            created_at_ms: now_ms(),
            revoked_at_ms: None,
        };
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at_ms) VALUES (?, ?, ?, ?, ?)")
            .bind(&record.id)
            .bind(&record.name)
            .bind(key.key_hash)
            .bind(&record.key_prefix)
            .bind(record.created_at_ms)
            .execute(&self.pool)
            .await?;
        Ok(record)
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys ORDER BY created_at_ms, id"
        );
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }

    pub async fn find_key_by_hash(&self, key_hash: &[u8]) -> Result<Option<KeyRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM api_keys WHERE key_hash = ?");
        Ok(sqlx::query_as(sql)
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Marks a key revoked; revoking twice keeps the first time. `None` if no such key.
    pub async fn revoke_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let sql = concat!(
            "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?) WHERE id = ? RETURNING ",
            columns!()
        );
        Ok(sqlx::query_as(sql)
            .bind(now_ms())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }
}
