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
pub use request_log::{LogPage, LogQuery, RequestLogRow};
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
        Ok(Store {
            pool,
            probe_options,
            log: Arc::new(log),
        })
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
