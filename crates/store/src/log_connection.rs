//! The request log's own SQLite connection.
//!
//! Every data-plane request becomes a row, so this is the hottest write the store makes. Each
//! batch is encoded as one block (`log_block`) and inserted with one cached statement inside
//! its own transaction, on a blocking thread, straight from the rows. Through sqlx (an
//! argument vector per batch, every string copied, a hand-off to sqlx's worker thread)
//! logging cost 11.6 % of RPS; see bench/logging/RESULTS.md for what each step since gave.
//!
//! The connection is opened on first use and dropped after any error, so the next attempt
//! starts from a fresh one (a database file replaced or unlocked meanwhile is seen as it is).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::log_block::{self, Block, CorruptBlock, Summary};
use crate::{LogText, RequestLogRow, analytics};

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

/// Writes `rows` in one transaction, as one block: all or none. When the rollups are caught
/// up to just below them and the batch is alike enough that its rollup changes are few, they
/// are folded in within the same transaction, so the periodic roll-up need not read them back.
pub(crate) fn write(connection: &mut Connection, rows: &[RequestLogRow]) -> rusqlite::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // IMMEDIATE takes the write lock at BEGIN, so a busy database is waited for (up to the
    // busy timeout) before anything is written, and the seqs read here stay ours.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let first_seq: i64 = transaction
        .prepare_cached("SELECT value FROM analytics_state WHERE name = 'next_log_seq'")?
        .query_row([], |row| row.get(0))?;
    let seqs = (first_seq..).zip(rows);
    let last_seq = insert_block(&transaction, first_seq, seqs)?.last_seq;
    transaction
        .prepare_cached("UPDATE analytics_state SET value = ?1 WHERE name = 'next_log_seq'")?
        .execute([last_seq + 1])?;
    if rows.len() >= 64 && analytics::watermark(&transaction)? == first_seq - 1 {
        let deltas = analytics::deltas(rows.iter().map(analytics::Facts::from));
        if deltas.len() * 16 <= rows.len() {
            analytics::apply(&transaction, deltas, last_seq)?;
        }
    }
    transaction.commit()
}

/// Stores `rows` (with their seqs, ascending, none below `first_seq`) as the block
/// `first_seq`.
fn insert_block<'r>(
    connection: &Connection,
    first_seq: i64,
    rows: impl Iterator<Item = (i64, &'r RequestLogRow)>,
) -> rusqlite::Result<Summary> {
    let mut data = Vec::new();
    let summary = log_block::encode(first_seq, rows, &mut data);
    connection
        .prepare_cached(
            "INSERT INTO request_log_blocks (first_seq, last_seq, min_created_ms, \
             max_created_ms, rows, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(rusqlite::params![
            first_seq,
            summary.last_seq,
            summary.min_created_ms,
            summary.max_created_ms,
            summary.rows,
            data,
        ])?;
    Ok(summary)
}

/// A damaged block, as the error rusqlite callers return.
pub(crate) fn corrupt(error: CorruptBlock) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(error))
}

/// Rows per block when moving the old table's rows.
const MOVE_ROWS: usize = 512;

/// Moves the rows of the table the request log had before blocks (`request_logs`) into
/// blocks, a transaction per block, and drops the table once it is empty. Returns how many
/// rows it moved; an interrupted move resumes at the next open.
pub(crate) fn move_table_rows(connection: &mut Connection) -> rusqlite::Result<u64> {
    let mut moved = 0;
    loop {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = transaction.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
             AND name = 'request_logs')",
            [],
            |row| row.get(0),
        )?;
        if !exists {
            return Ok(moved);
        }
        if moved == 0 {
            let rows: i64 =
                transaction.query_row("SELECT COUNT(*) FROM request_logs", [], |row| row.get(0))?;
            if rows > 0 {
                tracing::info!(
                    rows,
                    "Moving the request log's rows into blocks; this happens once, at the first \
                     start after upgrading, and resumes if interrupted."
                );
            }
        }
        let rows = transaction
            .prepare(
                "SELECT seq, request_id, created_at_ms, key_id, team, endpoint, model, provider, \
                 upstream_model, stream, status, latency_ms, ttft_ms, prompt_tokens, \
                 completion_tokens, cached_tokens, usage_estimated, cost_usd, deployment, \
                 attempts, retries, fallback_path, error FROM request_logs ORDER BY seq LIMIT ?1",
            )?
            .query_map([MOVE_ROWS as i64], |row| {
                let text = |index| row.get::<_, String>(index).map(LogText::from);
                let optional_text = |index| {
                    row.get::<_, Option<String>>(index)
                        .map(|text| text.map(LogText::from))
                };
                Ok(RequestLogRow {
                    seq: row.get(0)?,
                    request_id: text(1)?,
                    created_at_ms: row.get(2)?,
                    key_id: row.get(3)?,
                    team: optional_text(4)?,
                    endpoint: text(5)?,
                    model: row.get(6)?,
                    provider: optional_text(7)?,
                    upstream_model: optional_text(8)?,
                    stream: row.get(9)?,
                    status: row.get(10)?,
                    latency_ms: row.get(11)?,
                    ttft_ms: row.get(12)?,
                    prompt_tokens: row.get(13)?,
                    completion_tokens: row.get(14)?,
                    cached_tokens: row.get(15)?,
                    usage_estimated: row.get(16)?,
                    cost_usd: row.get(17)?,
                    deployment: optional_text(18)?,
                    attempts: row.get(19)?,
                    retries: row.get(20)?,
                    fallback_path: row.get(21)?,
                    error: row.get(22)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<RequestLogRow>>>()?;
        let Some(last) = rows.last().map(|row| row.seq) else {
            transaction.execute_batch("DROP TABLE request_logs")?;
            transaction.commit()?;
            return Ok(moved);
        };
        insert_block(
            &transaction,
            rows[0].seq,
            rows.iter().map(|row| (row.seq, row)),
        )?;
        transaction.execute("DELETE FROM request_logs WHERE seq <= ?1", [last])?;
        transaction.commit()?;
        moved += rows.len() as u64;
    }
}

/// Deletes the rows created before `cutoff_ms` and returns how many went: whole blocks where
/// every row is older, and the older rows of blocks that straddle the cutoff.
pub(crate) fn delete_before(connection: &mut Connection, cutoff_ms: i64) -> rusqlite::Result<u64> {
    let mut deleted = 0;
    // Whole blocks, a few at a time so that the write lock is never held for long.
    loop {
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let counts = transaction
            .prepare_cached(
                "DELETE FROM request_log_blocks WHERE first_seq IN (SELECT first_seq \
                 FROM request_log_blocks WHERE max_created_ms < ?1 LIMIT 64) RETURNING rows",
            )?
            .query_map([cutoff_ms], |row| row.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        transaction.commit()?;
        deleted += counts.iter().sum::<i64>() as u64;
        if counts.len() < 64 {
            break;
        }
    }
    // Blocks that straddle the cutoff (rows of a batch finish together but may have started
    // far apart) are written again without their older rows.
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let straddling = transaction
        .prepare_cached(
            "SELECT first_seq, data FROM request_log_blocks WHERE min_created_ms < ?1 \
             ORDER BY first_seq",
        )?
        .query_map([cutoff_ms], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<(i64, Vec<u8>)>>>()?;
    for (first_seq, data) in straddling {
        let rows = Block::parse(&data)
            .and_then(|block| block.collect::<Result<Vec<_>, _>>())
            .map_err(corrupt)?;
        let kept: Vec<RequestLogRow> = rows
            .iter()
            .filter(|row| row.created_at_ms >= cutoff_ms)
            .map(|row| row.into_row())
            .collect::<Result<_, _>>()
            .map_err(corrupt)?;
        deleted += (rows.len() - kept.len()) as u64;
        transaction.execute(
            "DELETE FROM request_log_blocks WHERE first_seq = ?1",
            [first_seq],
        )?;
        if !kept.is_empty() {
            insert_block(
                &transaction,
                first_seq,
                kept.iter().map(|row| (row.seq, row)),
            )?;
        }
    }
    transaction.commit()?;
    Ok(deleted)
}
