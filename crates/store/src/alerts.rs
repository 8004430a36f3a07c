//! The record of alerts: every firing and resolution, with the channels told.

use serde::Serialize;

use crate::{Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AlertRow {
    #[serde(skip_serializing_if = "is_zero")]
    #[sqlx(default)]
    pub seq: i64,
    pub time_ms: i64,
    pub rule: String,
    pub kind: String,
    pub severity: String,
    pub subject: String,
    /// `firing` or `resolved`.
    pub state: String,
    pub summary: String,
    #[serde(serialize_with = "raw_json")]
    pub details: String,
    /// JSON list of the channels that were told.
    #[serde(serialize_with = "raw_json")]
    pub channels: String,
    /// Why no channel was told, when none was (`duplicate`, `rate_limited`).
    pub suppressed: Option<String>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

fn raw_json<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    value.serialize(serializer)
}

impl Store {
    pub async fn insert_alert(&self, row: &AlertRow) -> Result<i64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO alerts (time_ms, rule, kind, severity, subject, state, summary, details, \
             channels, suppressed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.time_ms)
        .bind(&row.rule)
        .bind(&row.kind)
        .bind(&row.severity)
        .bind(&row.subject)
        .bind(&row.state)
        .bind(&row.summary)
        .bind(&row.details)
        .bind(&row.channels)
        .bind(&row.suppressed)
        .execute(&self.pool)
        .await?;
        Ok(done.last_insert_rowid())
    }

    /// Alerts newest first, older than `before_seq`.
    pub async fn list_alerts(
        &self,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<Vec<AlertRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, time_ms, rule, kind, severity, subject, state, summary, details, \
             channels, suppressed FROM alerts WHERE seq < ? ORDER BY seq DESC LIMIT ?",
        )
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(i64::from(limit.clamp(1, 1_000)))
        .fetch_all(&self.pool)
        .await?)
    }
}
