//! The request log's repository: rows are stored in blocks (see `log_block`).

use std::sync::Arc;

use futures_util::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;

use crate::log_block::{Block, RowView};
use crate::{Store, StoreError};

/// Text in a request-log row, shared with the strings the gateway already holds (the request
/// id, provider, deployment and model names, the endpoint) so that recording a request copies
/// none of them. Rows are built on the HTTP workers and freed by the writer's thread; a copy
/// per field cost an allocation there and a cross-thread free here (measured with `perf`: the
/// allocator's share grew by about 1 µs a request with logging on).
#[derive(Clone)]
pub enum LogText {
    Static(&'static str),
    Shared(Arc<str>),
}

impl std::ops::Deref for LogText {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            LogText::Static(text) => text,
            LogText::Shared(text) => text,
        }
    }
}

impl std::fmt::Debug for LogText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for LogText {
    fn eq(&self, other: &LogText) -> bool {
        **self == **other
    }
}

impl Eq for LogText {}

impl From<&'static str> for LogText {
    fn from(text: &'static str) -> LogText {
        LogText::Static(text)
    }
}

impl From<Arc<str>> for LogText {
    fn from(text: Arc<str>) -> LogText {
        LogText::Shared(text)
    }
}

impl From<String> for LogText {
    fn from(text: String) -> LogText {
        LogText::Shared(text.into())
    }
}

impl Serialize for LogText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for LogText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<LogText, D::Error> {
        String::deserialize(deserializer).map(LogText::from)
    }
}

/// One data-plane request as recorded after it finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLogRow {
    /// Storage order; 0 until written.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: i64,
    pub request_id: LogText,
    pub created_at_ms: i64,
    pub key_id: Option<String>,
    /// The calling key's team, if it has one.
    #[serde(default)]
    pub team: Option<LogText>,
    pub endpoint: LogText,
    pub model: Option<String>,
    pub provider: Option<LogText>,
    pub upstream_model: Option<LogText>,
    pub stream: bool,
    pub status: i64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: Option<i64>,
    /// The token counts were estimated by the gateway (the provider reported none).
    pub usage_estimated: bool,
    /// USD at catalog prices; absent when the model's prices are unknown.
    pub cost_usd: Option<f64>,
    /// `provider/model` that served (or last failed).
    pub deployment: Option<LogText>,
    /// Upstream calls made; retries among them.
    pub attempts: i64,
    pub retries: i64,
    /// Models tried in order when fallbacks were used (`smart>cheap`).
    pub fallback_path: Option<String>,
    pub error: Option<String>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// A page request: newest first, strictly older than `before_seq` when given, with only the
/// rows that match every filter given.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub limit: u32,
    pub before_seq: Option<i64>,
    pub key_id: Option<String>,
    pub team: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub deployment: Option<String>,
    /// The request id (the `x-request-id` the gateway answered with; clients may send their
    /// own, so it can repeat).
    pub request_id: Option<String>,
    pub status: Option<i64>,
    /// Status 400 and above only.
    pub failed: bool,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct LogPage {
    pub data: Vec<RequestLogRow>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next_before: Option<i64>,
}

impl Store {
    /// Writes a batch in one transaction: all rows or none.
    pub async fn insert_request_logs(&self, rows: &[RequestLogRow]) -> Result<(), StoreError> {
        self.write_request_logs(rows.to_vec()).await.1
    }

    /// [`insert_request_logs`](Self::insert_request_logs) taking the rows: on success they
    /// are freed on the writing thread and the emptied vector comes back (its capacity kept
    /// for reuse); on failure they come back unchanged, to be retried.
    pub(crate) async fn write_request_logs(
        &self,
        rows: Vec<RequestLogRow>,
    ) -> (Vec<RequestLogRow>, Result<(), StoreError>) {
        if rows.is_empty() {
            return (rows, Ok(()));
        }
        let log = self.log.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut rows = rows;
            match log.with(|connection| crate::log_connection::write(connection, &rows)) {
                Ok(()) => {
                    rows.clear();
                    (rows, Ok(()))
                }
                Err(error) => (rows, Err(StoreError::Write(error))),
            }
        })
        .await;
        // The closure does not panic on data it is given; a join error means the runtime is
        // shutting down, and the rows are lost with it.
        written.unwrap_or_else(|error| (Vec::new(), Err(StoreError::Task(error))))
    }

    pub async fn list_request_logs(&self, query: LogQuery) -> Result<LogPage, StoreError> {
        let limit = query.limit.clamp(1, 1_000) as usize;
        let before = query.before_seq.unwrap_or(i64::MAX);
        // Blocks newest first, passing over those outside the time range; their rows are
        // filtered here.
        let mut sql = QueryBuilder::new("SELECT data FROM request_log_blocks WHERE first_seq < ");
        sql.push_bind(before);
        if let Some(from) = query.from_ms {
            sql.push(" AND max_created_ms >= ").push_bind(from);
        }
        if let Some(to) = query.to_ms {
            sql.push(" AND min_created_ms < ").push_bind(to);
        }
        sql.push(" ORDER BY first_seq DESC");
        let is = |wanted: &Option<String>, value: Option<&str>| {
            wanted.as_deref().is_none_or(|wanted| value == Some(wanted))
        };
        let wanted = |row: &RowView<'_>| {
            row.seq < before
                && query.from_ms.is_none_or(|from| row.created_at_ms >= from)
                && query.to_ms.is_none_or(|to| row.created_at_ms < to)
                && query.status.is_none_or(|status| row.status == status)
                && (!query.failed || row.status >= 400)
                && is(&query.key_id, row.key_id)
                && is(&query.team, row.team)
                && is(&query.model, row.model)
                && is(&query.provider, row.provider)
                && is(&query.deployment, row.deployment)
                && query
                    .request_id
                    .as_deref()
                    .is_none_or(|id| row.request_id == id.as_bytes())
        };
        let mut data = Vec::new();
        let mut blocks = sql.build_query_scalar::<Vec<u8>>().fetch(&self.pool);
        'blocks: while let Some(block) = blocks.try_next().await? {
            let rows = Block::parse(&block)
                .and_then(|rows| rows.collect::<Result<Vec<RowView<'_>>, _>>())
                .map_err(StoreError::CorruptLog)?;
            for row in rows.iter().rev().filter(|row| wanted(row)) {
                data.push(row.into_row().map_err(StoreError::CorruptLog)?);
                if data.len() > limit {
                    break 'blocks;
                }
            }
        }
        let next_before = if data.len() > limit {
            data.truncate(limit);
            data.last().map(|row| row.seq)
        } else {
            None
        };
        Ok(LogPage { data, next_before })
    }

    pub async fn count_request_logs(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) =
            sqlx::query_as("SELECT COALESCE(SUM(rows), 0) FROM request_log_blocks")
                .fetch_one(&self.pool)
                .await?;
        Ok(count)
    }
}
