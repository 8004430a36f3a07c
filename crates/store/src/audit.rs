//! The `audit_log` repository: appends chained entries atomically and reads them in order.
//! How an entry is hashed is the caller's (`atalaya_security::audit`); this module only keeps
//! the chain's order, so that two writers (the server and a CLI command) never fork it.

use serde::Serialize;

use crate::{Store, StoreError, now_ms};

/// What an audit entry says.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source_ip: String,
    /// JSON text.
    pub detail: String,
}

/// A stored entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source_ip: String,
    pub detail: String,
    #[serde(serialize_with = "hex")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex")]
    pub hash: Vec<u8>,
}

fn hex<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    serializer.serialize_str(&text)
}

impl Store {
    /// Appends `entry` after the current last one. `hash` gets the new row (its `hash` empty)
    /// and returns the hash to store; the read of the last entry and the insert are one
    /// write transaction.
    pub async fn append_audit(
        &self,
        entry: NewAuditEntry,
        hash: impl FnOnce(&AuditRow) -> Vec<u8>,
    ) -> Result<AuditRow, StoreError> {
        let mut connection = self.pool.acquire().await?;
        // IMMEDIATE: take the write lock before reading the last entry.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await?;
        let result = async {
            let last: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *connection)
                    .await?;
            let (seq, prev_hash) = match last {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, vec![0; 32]),
            };
            let mut row = AuditRow {
                seq,
                at_ms: now_ms(),
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                source_ip: entry.source_ip,
                detail: entry.detail,
                prev_hash,
                hash: Vec::new(),
            };
            row.hash = hash(&row);
            sqlx::query(
                "INSERT INTO audit_log (seq, at_ms, actor, action, target, source_ip, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.seq)
            .bind(row.at_ms)
            .bind(&row.actor)
            .bind(&row.action)
            .bind(&row.target)
            .bind(&row.source_ip)
            .bind(&row.detail)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&mut *connection)
            .await?;
            Ok::<_, StoreError>(row)
        }
        .await;
        match result {
            Ok(row) => {
                sqlx::query("COMMIT").execute(&mut *connection).await?;
                Ok(row)
            }
            Err(error) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                Err(error)
            }
        }
    }

    /// Entries with `seq > after`, oldest first, at most `limit`.
    pub async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT seq, at_ms, actor, action, target, source_ip, detail, prev_hash, hash FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Entries with `seq < before`, newest first, at most `limit`: the API's pages.
    pub async fn audit_before(&self, before: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT seq, at_ms, actor, action, target, source_ip, detail, prev_hash, hash FROM audit_log WHERE seq < ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
