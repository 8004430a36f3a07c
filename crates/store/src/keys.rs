//! The `api_keys` repository.

use serde::Serialize;

use crate::analytics::{AnalyticsFilter, Dimension, Grouping};
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
    pub role: &'a str,
    pub team: Option<&'a str>,
    pub models: Option<&'a [String]>,
    pub expires_at_ms: Option<i64>,
    pub metadata: &'a serde_json::Value,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub budget_usd: Option<f64>,
    pub soft_budget_usd: Option<f64>,
    pub budget_period: &'a str,
}

/// What may change on an existing key (`None`: unchanged; `Some(None)`: cleared).
#[derive(Debug, Default)]
pub struct KeyUpdate {
    pub name: Option<String>,
    pub role: Option<String>,
    pub team: Option<Option<String>>,
    pub models: Option<Option<Vec<String>>>,
    pub expires_at_ms: Option<Option<i64>>,
    pub metadata: Option<serde_json::Value>,
    pub rpm_limit: Option<Option<i64>>,
    pub tpm_limit: Option<Option<i64>>,
    pub budget_usd: Option<Option<f64>>,
    pub soft_budget_usd: Option<Option<f64>>,
    pub budget_period: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyRecord {
    pub id: KeyId,
    pub name: String,
    pub key_prefix: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub role: String,
    pub team: Option<String>,
    /// The models the key may call; `None`: any.
    #[sqlx(json(nullable))]
    pub models: Option<Vec<String>>,
    pub expires_at_ms: Option<i64>,
    #[sqlx(json)]
    pub metadata: serde_json::Value,
    /// Requests per minute; `None`: no limit.
    pub rpm_limit: Option<i64>,
    /// Tokens per minute; `None`: no limit.
    pub tpm_limit: Option<i64>,
    /// Spend allowed per `budget_period` in USD; `None`: no limit.
    pub budget_usd: Option<f64>,
    /// Spend at which an alert is raised.
    pub soft_budget_usd: Option<f64>,
    /// `day` or `month` (UTC).
    pub budget_period: String,
}

impl KeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

macro_rules! columns {
    () => {
        "id, name, key_prefix, created_at_ms, revoked_at_ms, role, team, models, expires_at_ms, metadata, rpm_limit, tpm_limit, budget_usd, soft_budget_usd, budget_period"
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
            role: key.role.to_owned(),
            team: key.team.map(str::to_owned),
            models: key.models.map(<[String]>::to_vec),
            expires_at_ms: key.expires_at_ms,
            metadata: key.metadata.clone(),
            rpm_limit: key.rpm_limit,
            tpm_limit: key.tpm_limit,
            budget_usd: key.budget_usd,
            soft_budget_usd: key.soft_budget_usd,
            budget_period: key.budget_period.to_owned(),
        };
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, key_prefix, created_at_ms, role, team, models, expires_at_ms, metadata, rpm_limit, tpm_limit, budget_usd, soft_budget_usd, budget_period) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&record.id)
            .bind(&record.name)
            .bind(key.key_hash)
            .bind(&record.key_prefix)
            .bind(record.created_at_ms)
            .bind(&record.role)
            .bind(&record.team)
            .bind(record.models.as_ref().map(|m| serde_json::to_string(m).unwrap_or_default()))
            .bind(record.expires_at_ms)
            .bind(record.metadata.to_string())
            .bind(record.rpm_limit)
            .bind(record.tpm_limit)
            .bind(record.budget_usd)
            .bind(record.soft_budget_usd)
            .bind(&record.budget_period)
            .execute(&self.pool)
            .await?;
        Ok(record)
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let sql = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = ?");
        Ok(sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Applies `update`; `None` if no such key.
    pub async fn update_key(
        &self,
        id: &str,
        update: KeyUpdate,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Some(mut record) = self.key(id).await? else {
            return Ok(None);
        };
        if let Some(name) = update.name {
            record.name = name;
        }
        if let Some(role) = update.role {
            record.role = role;
        }
        if let Some(team) = update.team {
            record.team = team;
        }
        if let Some(models) = update.models {
            record.models = models;
        }
        if let Some(expires) = update.expires_at_ms {
            record.expires_at_ms = expires;
        }
        if let Some(metadata) = update.metadata {
            record.metadata = metadata;
        }
        if let Some(rpm) = update.rpm_limit {
            record.rpm_limit = rpm;
        }
        if let Some(tpm) = update.tpm_limit {
            record.tpm_limit = tpm;
        }
        if let Some(budget) = update.budget_usd {
            record.budget_usd = budget;
        }
        if let Some(soft) = update.soft_budget_usd {
            record.soft_budget_usd = soft;
        }
        if let Some(period) = update.budget_period {
            record.budget_period = period;
        }
        sqlx::query("UPDATE api_keys SET name = ?, role = ?, team = ?, models = ?, expires_at_ms = ?, metadata = ?, rpm_limit = ?, tpm_limit = ?, budget_usd = ?, soft_budget_usd = ?, budget_period = ? WHERE id = ?")
            .bind(&record.name)
            .bind(&record.role)
            .bind(&record.team)
            .bind(record.models.as_ref().map(|m| serde_json::to_string(m).unwrap_or_default()))
            .bind(record.expires_at_ms)
            .bind(record.metadata.to_string())
            .bind(record.rpm_limit)
            .bind(record.tpm_limit)
            .bind(record.budget_usd)
            .bind(record.soft_budget_usd)
            .bind(&record.budget_period)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(Some(record))
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

impl Store {
    /// USD spent by a key since `since_ms`: the analytics rollups plus the rows not yet
    /// rolled up, so it is exact and reads hours, not rows.
    pub async fn key_spend(&self, key_id: &str, since_ms: i64) -> Result<f64, StoreError> {
        self.spend(Dimension::Key, key_id, since_ms).await
    }

    /// USD spent by a team's requests (the team each was made for) since `since_ms`.
    pub async fn team_spend(&self, team: &str, since_ms: i64) -> Result<f64, StoreError> {
        self.spend(Dimension::Team, team, since_ms).await
    }

    async fn spend(&self, dim: Dimension, value: &str, since_ms: i64) -> Result<f64, StoreError> {
        let filter = AnalyticsFilter {
            from_ms: since_ms,
            to_ms: now_ms() + 1,
            equals: vec![(dim, value.to_owned())],
        };
        let groups = self.analytics(&filter, Grouping::Total).await?;
        Ok(groups.iter().map(|(_, total)| total.cost_usd).sum())
    }
}
