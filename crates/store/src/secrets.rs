//! The `secrets` repository: sealed rows in, sealed rows out. Encryption is the caller's
//! (`atalaya_security::vault`); this table never sees a plaintext value.

use serde::Serialize;

use crate::{Store, StoreError, now_ms};

/// One sealed secret as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub name: String,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub master_key_id: String,
}

/// What may be listed about a secret: never its value.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SecretInfo {
    pub name: String,
    pub master_key_id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Store {
    /// Inserts or replaces a secret.
    pub async fn put_secret(&self, row: &SecretRow) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO secrets (name, ciphertext, nonce, wrapped_key, key_nonce, master_key_id, created_at_ms, updated_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET ciphertext = excluded.ciphertext, nonce = excluded.nonce, \
             wrapped_key = excluded.wrapped_key, key_nonce = excluded.key_nonce, \
             master_key_id = excluded.master_key_id, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&row.name)
        .bind(&row.ciphertext)
        .bind(&row.nonce)
        .bind(&row.wrapped_key)
        .bind(&row.key_nonce)
        .bind(&row.master_key_id)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn secret(&self, name: &str) -> Result<Option<SecretRow>, StoreError> {
        Ok(sqlx::query_as::<_, SecretRow>(
            "SELECT name, ciphertext, nonce, wrapped_key, key_nonce, master_key_id FROM secrets WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every sealed row, by name.
    pub async fn secret_rows(&self) -> Result<Vec<SecretRow>, StoreError> {
        Ok(sqlx::query_as::<_, SecretRow>(
            "SELECT name, ciphertext, nonce, wrapped_key, key_nonce, master_key_id FROM secrets ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, StoreError> {
        Ok(sqlx::query_as::<_, SecretInfo>(
            "SELECT name, master_key_id, created_at_ms, updated_at_ms FROM secrets ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a secret of that name existed.
    pub async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM secrets WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Replaces the sealing of existing rows, all in one transaction: after a crash either
    /// every row moved or none did.
    pub async fn reseal_secrets(&self, rows: &[SecretRow]) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        let now = now_ms();
        for row in rows {
            sqlx::query(
                "UPDATE secrets SET wrapped_key = ?, key_nonce = ?, master_key_id = ?, updated_at_ms = ? WHERE name = ?",
            )
            .bind(&row.wrapped_key)
            .bind(&row.key_nonce)
            .bind(&row.master_key_id)
            .bind(now)
            .bind(&row.name)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }
}
