//! Persistence: the database pool, embedded migrations, the repositories for keys and the
//! request log, and the batched asynchronous request-log writer.
//!
//! Callers see `Store` and plain row types only; which SQL engine runs underneath is this
//! crate's business (SQLite today, PostgreSQL added behind the same methods). The store
//! knows nothing of HTTP, hashing or routing.

mod alerts;
mod analytics;
mod audit;
mod errors;
mod keys;
mod log_block;
mod log_connection;
mod log_writer;
mod request_log;
mod secrets;
mod spill;
mod upkeep;

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use alerts::AlertRow;
pub use analytics::{
    Aggregate, AnalyticsFilter, Dimension, GroupKey, Grouping, HOUR_MS, Histogram, Percentiles,
    Stats,
};
pub use audit::{AuditRow, NewAuditEntry};
pub use errors::{
    ErrorGroup, ErrorOccurrence, ErrorQuery, ErrorStat, ErrorStatus, GroupChange, ServerLogRow,
    fingerprint,
};
pub use keys::{KeyId, KeyRecord, KeyUpdate, NewKey};
pub use log_writer::{LogWriter, LogWriterConfig, spawn_log_writer};
pub use request_log::{LogPage, LogQuery, LogText, RequestLogRow};
pub use secrets::{SecretInfo, SecretRow};
pub use upkeep::{Deleted, Retention, Switch, UpkeepConfig, spawn_upkeep};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database url `{0}`: expected sqlite://PATH (PostgreSQL support is planned)"
    )]
    UnsupportedUrl(String),
    #[error("invalid database url")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("creating the database directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to the database")]
    Connect(#[source] sqlx::Error),
    #[error("applying database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error(
        "in-memory SQLite databases are not supported: the request-log writer needs its own connection to the same database; use a file (sqlite://PATH)"
    )]
    InMemory,
    #[error("database write failed")]
    Write(#[source] rusqlite::Error),
    #[error("{0}")]
    CorruptLog(log_block::CorruptBlock),
    #[error("a database task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// The database behind every repository.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// For readiness probes, which use a connection of their own (see `check_writable`).
    probe_options: SqliteConnectOptions,
    /// The request log's writer connection.
    log: Arc<log_connection::LogConnection>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Store {
    /// Opens (creating if needed) the database at `url` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let file = path.split('?').next().unwrap_or(path);
        if file == ":memory:" || path.contains("mode=memory") {
            return Err(StoreError::InMemory);
        }
        if let Some(parent) = Path::new(file)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            .create_if_missing(true)
            // WAL lets readers (health checks, log pages) run while the writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only a power loss can
            // lose the last commits, which is the documented trade-off for log-heavy writes.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // SQLite allocates with the C allocator, outside the gateway's; the soft limit
            // (process-wide) makes it shed page cache instead of growing with the database.
            .pragma("soft_heap_limit", "8388608");
        let probe_options = options.clone().busy_timeout(Duration::from_secs(1));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)?;
        SQLITE_MIGRATIONS
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        let log = log_connection::LogConnection::new(
            PathBuf::from(probe_options.get_filename()),
            Duration::from_secs(5),
        );
        let store = Store {
            pool,
            probe_options,
            log: Arc::new(log),
        };
        let moved = store
            .on_log_connection(log_connection::move_table_rows)
            .await?;
        if moved > 0 {
            tracing::info!(rows = moved, "Moved the request log's rows into blocks.");
        }
        Ok(store)
    }

    /// Whether storage can take writes now, for readiness checks: takes the write lock and
    /// releases it. A plain `SELECT 1` would pass while another process holds the database
    /// locked, because WAL readers never wait. The probe opens its own connection with a
    /// one-second busy timeout, so a caller's timeout can never return a pooled connection
    /// in the middle of a transaction; dropping this one closes it (and rolls back).
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        let mut connection = sqlx::SqliteConnection::connect_with(&self.probe_options).await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut connection)
            .await?;
        sqlx::query("ROLLBACK").execute(&mut connection).await?;
        connection.close().await?;
        Ok(())
    }

    /// Runs `work` on the request log's writer connection, on a blocking thread.
    pub(crate) async fn on_log_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.with(work))
            .await
            .map_err(StoreError::Task)?
            .map_err(StoreError::Write)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch, the one time representation stored in every backend.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_databases_are_refused_with_a_reason() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://file?mode=memory",
        ] {
            let error = Store::connect(url).await.err().expect(url);
            assert!(matches!(error, StoreError::InMemory), "{url}: {error}");
            assert!(error.to_string().contains("sqlite://PATH"));
        }
    }

    fn test_row(i: i64) -> RequestLogRow {
        RequestLogRow {
            seq: 0,
            request_id: format!("r{i}").into(),
            created_at_ms: 1_000 + i,
            key_id: Some("k".into()),
            team: None,
            endpoint: "/v1/chat/completions".into(),
            model: Some("m".into()),
            provider: Some("p".into()),
            upstream_model: None,
            stream: i % 2 == 0,
            status: 200,
            latency_ms: 1.5,
            ttft_ms: None,
            prompt_tokens: Some(i),
            completion_tokens: Some(1),
            cached_tokens: None,
            usage_estimated: false,
            cost_usd: Some(0.25),
            deployment: None,
            attempts: 1,
            retries: 0,
            fallback_path: None,
            error: (i == 7).then(|| "boom".to_owned()),
        }
    }

    #[tokio::test]
    async fn log_rows_written_through_the_writer_connection_are_read_back_through_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        let rows: Vec<RequestLogRow> = (0..300).map(test_row).collect();
        store.insert_request_logs(&rows).await.unwrap();
        assert_eq!(store.count_request_logs().await.unwrap(), 300);
        let page = store
            .list_request_logs(LogQuery {
                limit: 1_000,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let by_id = store
            .list_request_logs(LogQuery {
                limit: 10,
                request_id: Some("r7".to_owned()),
                ..LogQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(by_id.data.len(), 1);
        assert_eq!(by_id.data[0].error.as_deref(), Some("boom"));
        let mut read: Vec<RequestLogRow> = page.data;
        read.reverse();
        for (written, read) in rows.iter().zip(&read) {
            assert!(read.seq > 0);
            assert_eq!(
                &RequestLogRow {
                    seq: 0,
                    ..read.clone()
                },
                written
            );
        }
        // While another process holds the database locked, a batch comes back whole and
        // nothing of it is stored; once the lock is gone the same batch goes in.
        let mut store = store;
        store.log = Arc::new(log_connection::LogConnection::new(
            dir.path().join("t.db"),
            Duration::from_millis(50),
        ));
        let blocker = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (returned, result) = store.write_request_logs(rows[..3].to_vec()).await;
        assert!(matches!(result, Err(StoreError::Write(_))), "{result:?}");
        assert_eq!(returned, rows[..3]);
        blocker.execute_batch("ROLLBACK").unwrap();
        let (returned, result) = store.write_request_logs(returned).await;
        result.unwrap();
        assert!(returned.is_empty());
        assert_eq!(store.count_request_logs().await.unwrap(), 303);
    }

    /// A database from before blocks (migrations up to 0013, rows in `request_logs`) opens
    /// with its rows moved into blocks, seqs kept, and new rows numbered after the old ones.
    #[tokio::test]
    async fn rows_of_the_old_table_move_into_blocks_keeping_their_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().as_ref() < "0014" {
                std::fs::copy(entry.path(), migrations.join(entry.file_name())).unwrap();
            }
        }
        let file = dir.path().join("old.db");
        let pool = SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        let rows: Vec<RequestLogRow> = (0..1_300).map(test_row).collect();
        for row in &rows {
            sqlx::query(
                "INSERT INTO request_logs (request_id, created_at_ms, key_id, team, endpoint, \
                 model, provider, upstream_model, stream, status, latency_ms, ttft_ms, \
                 prompt_tokens, completion_tokens, cached_tokens, usage_estimated, cost_usd, \
                 deployment, attempts, retries, fallback_path, error) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&*row.request_id)
            .bind(row.created_at_ms)
            .bind(&row.key_id)
            .bind(row.team.as_deref())
            .bind(&*row.endpoint)
            .bind(&row.model)
            .bind(row.provider.as_deref())
            .bind(row.upstream_model.as_deref())
            .bind(row.stream)
            .bind(row.status)
            .bind(row.latency_ms)
            .bind(row.ttft_ms)
            .bind(row.prompt_tokens)
            .bind(row.completion_tokens)
            .bind(row.cached_tokens)
            .bind(row.usage_estimated)
            .bind(row.cost_usd)
            .bind(row.deployment.as_deref())
            .bind(row.attempts)
            .bind(row.retries)
            .bind(&row.fallback_path)
            .bind(&row.error)
            .execute(&pool)
            .await
            .unwrap();
        }
        // Seqs 1..=1300; retention took the first five, and the newest went too, so only
        // the AUTOINCREMENT high mark remembers 1300.
        sqlx::query("DELETE FROM request_logs WHERE seq <= 5 OR seq = 1300")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = Store::connect(&format!("sqlite://{}", file.display()))
            .await
            .unwrap();
        assert_eq!(store.count_request_logs().await.unwrap(), 1_294);
        let (old_table,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM sqlite_master WHERE name = 'request_logs'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(old_table, 0);
        let mut read = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_request_logs(LogQuery {
                    limit: 500,
                    before_seq: before,
                    ..LogQuery::default()
                })
                .await
                .unwrap();
            read.extend(page.data);
            match page.next_before {
                Some(seq) => before = Some(seq),
                None => break,
            }
        }
        read.reverse();
        assert_eq!(read.len(), 1_294);
        for (read, (seq, written)) in read.iter().zip((6..).zip(&rows[5..1_299])) {
            assert_eq!(read.seq, seq);
            assert_eq!(
                &RequestLogRow {
                    seq: 0,
                    ..read.clone()
                },
                written
            );
        }
        store.insert_request_logs(&rows[..2]).await.unwrap();
        let newest = store
            .list_request_logs(LogQuery {
                limit: 2,
                ..LogQuery::default()
            })
            .await
            .unwrap();
        let seqs: Vec<i64> = newest.data.iter().map(|row| row.seq).collect();
        assert_eq!(seqs, [1_302, 1_301]);
    }
}
