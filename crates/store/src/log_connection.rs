//! The request log's own SQLite connection.
//!
//! Every data-plane request becomes a row, so this is the hottest write the store makes.
//! Through sqlx each batch built a multi-row statement with an argument vector (every string
//! copied) and handed it to sqlx's worker thread; here a few cached prepared statements (64, 8
//! and 1 rows) are stepped inside the batch's transaction, on a blocking thread, straight from
//! the rows. Measured on the gateway under load: logging cost 11.6 % of RPS through sqlx and
//! 4.8–9.7 % this way (bench/logging/RESULTS.md).
//!
//! The connection is opened on first use and dropped after any error, so the next attempt
//! starts from a fresh one (a database file replaced or unlocked meanwhile is seen as it is).

use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::{RequestLogRow, analytics};

const INSERT_COLUMNS: &str = "INSERT INTO request_logs (request_id, created_at_ms, key_id, team, \
     endpoint, model, provider, upstream_model, stream, status, latency_ms, ttft_ms, \
     prompt_tokens, completion_tokens, cached_tokens, usage_estimated, cost_usd, deployment, \
     attempts, retries, fallback_path, error) VALUES ";
const COLUMNS: usize = 22;

/// Rows per insert statement, largest first. Several rows a statement, because the table's
/// AUTOINCREMENT key writes `sqlite_sequence` once per statement, not per row.
const STATEMENT_ROWS: [usize; 3] = [64, 8, 1];

/// The insert statement for `STATEMENT_ROWS[index]` rows.
fn insert_sql(index: usize) -> &'static str {
    static SQL: LazyLock<[String; 3]> = LazyLock::new(|| {
        STATEMENT_ROWS.map(|rows| {
            let one = format!("({})", vec!["?"; COLUMNS].join(", "));
            format!("{INSERT_COLUMNS}{}", vec![one; rows].join(", "))
        })
    });
    &SQL[index]
}

pub(crate) struct LogConnection {
    path: PathBuf,
    busy_timeout: Duration,
    connection: Mutex<Option<Connection>>,
}

impl LogConnection {
    /// For the database file at `path`, which the pool has created and migrated (and put in
    /// WAL mode, which the file keeps).
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> LogConnection {
        LogConnection {
            path,
            busy_timeout,
            connection: Mutex::new(None),
        }
    }

    /// Runs `work` on the connection, opening it first if needed. Blocks; call from a
    /// blocking thread.
    pub(crate) fn with<T>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut slot = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(self.open()?),
        };
        let result = work(connection);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let connection = Connection::open(&self.path)?;
        connection.busy_timeout(self.busy_timeout)?;
        // As the pool's connections: durable across crashes in WAL mode, a power loss can
        // lose the last commits.
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(connection)
    }
}

/// Writes `rows` in one transaction: all or none. When the rollups are caught up to just
/// below them and the batch is alike enough that its rollup changes are few, they are folded
/// in within the same transaction, so the periodic roll-up need not read them back.
pub(crate) fn write(connection: &mut Connection, rows: &[RequestLogRow]) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock at BEGIN, so a busy database is waited for (up to the
    // busy timeout) before any row is stepped, and the rows take consecutive seqs.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut rest = rows;
    while !rest.is_empty() {
        // The last size is 1, so some size always fits.
        let index = STATEMENT_ROWS
            .iter()
            .position(|size| *size <= rest.len())
            .unwrap_or(STATEMENT_ROWS.len() - 1);
        let (chunk, tail) = rest.split_at(STATEMENT_ROWS[index]);
        rest = tail;
        let mut insert = transaction.prepare_cached(insert_sql(index))?;
        let mut parameter = 0;
        // Bound one by one with their own types rather than through a `[&dyn ToSql]`: a
        // virtual call and a result check less per value, 22 values a row.
        macro_rules! bind {
            ($($value:expr),* $(,)?) => {
                $(
                    parameter += 1;
                    insert.raw_bind_parameter(parameter, $value)?;
                )*
            };
        }
        for row in chunk {
            bind!(
                &row.request_id,
                row.created_at_ms,
                &row.key_id,
                &row.team,
                &row.endpoint,
                &row.model,
                &row.provider,
                &row.upstream_model,
                row.stream,
                row.status,
                row.latency_ms,
                row.ttft_ms,
                row.prompt_tokens,
                row.completion_tokens,
                row.cached_tokens,
                row.usage_estimated,
                row.cost_usd,
                &row.deployment,
                row.attempts,
                row.retries,
                &row.fallback_path,
                &row.error,
            );
        }
        debug_assert_eq!(parameter, chunk.len() * COLUMNS);
        insert.raw_execute()?;
    }
    let last_seq = transaction.last_insert_rowid();
    let first_seq = last_seq - rows.len() as i64 + 1;
    if rows.len() >= 64 && analytics::watermark(&transaction)? == first_seq - 1 {
        let deltas = analytics::deltas(rows.iter().map(analytics::Facts::from));
        if deltas.len() * 16 <= rows.len() {
            analytics::apply(&transaction, deltas, last_seq)?;
        }
    }
    transaction.commit()
}
