//! Background upkeep: folds new request-log rows into the analytics rollups and deletes what
//! is older than the retention settings.
//!
//! Deletions run in chunks of a few thousand rows, each its own short transaction, so the
//! request-log writer never waits long behind a clean-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Store, StoreError, now_ms};

/// How long each kind of record is kept; `None` keeps it forever.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub request_logs: Option<Duration>,
    pub rollups: Option<Duration>,
    /// Error groups not seen for this long, and occurrences older than this.
    pub errors: Option<Duration>,
    /// The server's own warnings and errors in the database.
    pub server_logs: Option<Duration>,
    pub alerts: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Retention {
            request_logs: Some(Duration::from_secs(30 * DAY)),
            rollups: Some(Duration::from_secs(400 * DAY)),
            errors: Some(Duration::from_secs(90 * DAY)),
            server_logs: Some(Duration::from_secs(30 * DAY)),
            alerts: Some(Duration::from_secs(90 * DAY)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpkeepConfig {
    /// How often new request-log rows are folded into the rollups.
    pub rollup_interval: Duration,
    /// How often the retention clean-up runs.
    pub retention_interval: Duration,
    pub retention: Retention,
    /// Roll-ups run only while this is on (the health level switches it); queries stay
    /// exact meanwhile, reading the rows not rolled up.
    pub rollups_on: Switch,
}

/// A shared on/off flag; equal when both are in the same position.
#[derive(Debug, Clone)]
pub struct Switch(pub Arc<AtomicBool>);

impl Switch {
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl PartialEq for Switch {
    fn eq(&self, other: &Switch) -> bool {
        self.is_on() == other.is_on()
    }
}

impl Default for UpkeepConfig {
    fn default() -> Self {
        UpkeepConfig {
            rollup_interval: Duration::from_secs(5),
            retention_interval: Duration::from_secs(3600),
            retention: Retention::default(),
            rollups_on: Switch(Arc::new(AtomicBool::new(true))),
        }
    }
}

/// Rows deleted per statement.
const DELETE_CHUNK: i64 = 5_000;
/// Rows folded into rollups per transaction.
const ROLLUP_CHUNK: u32 = 20_000;

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub request_logs: u64,
    pub rollups: u64,
    pub errors: u64,
    pub server_logs: u64,
    pub alerts: u64,
}

impl Store {
    /// Folds every request-log row not yet rolled up into the rollups.
    pub async fn roll_up_all(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let folded = self.roll_up_request_logs(ROLLUP_CHUNK).await?;
            total += folded;
            if folded < ROLLUP_CHUNK as usize {
                return Ok(total);
            }
        }
    }

    /// Deletes what `retention` no longer keeps, as of `now_ms`. Request-log rows are
    /// rolled up first, so analytics over old ranges keep their totals.
    pub async fn apply_retention(
        &self,
        retention: &Retention,
        now_ms: i64,
    ) -> Result<Deleted, StoreError> {
        let cutoff = |keep: Option<Duration>| keep.map(|keep| now_ms - keep.as_millis() as i64);
        if retention.request_logs.is_some() {
            self.roll_up_all().await?;
        }
        let mut deleted = Deleted::default();
        let mut occurrences = 0;
        // Each: how long to keep, the chunked delete (rows older than ?, at most ? of them),
        // and where to count what went. Occurrences go before the groups they sample.
        if let Some(before) = cutoff(retention.request_logs) {
            deleted.request_logs = self
                .on_log_connection(move |connection| {
                    crate::log_connection::delete_before(connection, before)
                })
                .await?;
        }
        let passes: [(Option<Duration>, &'static str, &mut u64); 5] = [
            (
                retention.rollups,
                "DELETE FROM request_rollups WHERE (dim, value, bucket_ms) IN \
                 (SELECT dim, value, bucket_ms FROM request_rollups WHERE bucket_ms < ? LIMIT ?)",
                &mut deleted.rollups,
            ),
            (
                retention.errors,
                "DELETE FROM error_occurrences WHERE seq IN \
                 (SELECT seq FROM error_occurrences WHERE time_ms < ? LIMIT ?)",
                &mut occurrences,
            ),
            (
                retention.errors,
                "DELETE FROM error_groups WHERE fingerprint IN \
                 (SELECT fingerprint FROM error_groups WHERE last_seen_ms < ? LIMIT ?)",
                &mut deleted.errors,
            ),
            (
                retention.server_logs,
                "DELETE FROM server_logs WHERE seq IN \
                 (SELECT seq FROM server_logs WHERE time_ms < ? LIMIT ?)",
                &mut deleted.server_logs,
            ),
            (
                retention.alerts,
                "DELETE FROM alerts WHERE seq IN (SELECT seq FROM alerts WHERE time_ms < ? LIMIT ?)",
                &mut deleted.alerts,
            ),
        ];
        for (keep, sql, count) in passes {
            if let Some(before) = cutoff(keep) {
                *count = self.delete_chunked(sql, before).await?;
            }
        }
        Ok(deleted)
    }

    async fn delete_chunked(&self, sql: &'static str, before: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(sql)
                .bind(before)
                .bind(DELETE_CHUNK)
                .execute(&self.pool)
                .await?
                .rows_affected();
            total += done;
            if done < DELETE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

/// Runs roll-ups and retention on `tracker` until `shutdown`.
pub fn spawn_upkeep(
    store: Store,
    config: UpkeepConfig,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut rollup = tokio::time::interval(config.rollup_interval);
        let mut retention = tokio::time::interval(config.retention_interval);
        rollup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Failures are logged once per outage, not once per tick.
        let mut failing = false;
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = rollup.tick() => {
                    if !config.rollups_on.is_on() {
                        continue;
                    }
                    store.roll_up_all().await.map(|_| ())
                }
                _ = retention.tick() => match store.apply_retention(&config.retention, now_ms()).await {
                    Ok(deleted) => {
                        if deleted != Deleted::default() {
                            tracing::info!(
                                request_logs = deleted.request_logs,
                                rollups = deleted.rollups,
                                errors = deleted.errors,
                                server_logs = deleted.server_logs,
                                alerts = deleted.alerts,
                                "Retention clean-up deleted old records."
                            );
                        }
                        Ok(())
                    }
                    Err(error) => Err(error),
                },
            };
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("Analytics upkeep is working again.");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(error = %crate::log_writer::error_chain(&error), "Analytics upkeep failed; retrying.");
                }
                Err(_) => {}
            }
        }
    });
}
