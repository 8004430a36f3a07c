//! The asynchronous, batched request-log writer.
//!
//! Request handlers hand rows over with a non-blocking `try_send`; one task owns the write
//! path. When the database is slow or down, rows wait in a bounded buffer and are retried
//! with backoff, so requests never wait on storage. Only when that buffer is full are new
//! rows dropped, and every drop is counted.

use std::collections::VecDeque;
use std::time::Duration;

use atalaya_telemetry::names;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{RequestLogRow, Store};

#[derive(Debug, Clone)]
pub struct LogWriterConfig {
    /// Most rows written in one transaction.
    pub batch_size: usize,
    /// Longest a row waits before a partial batch is written.
    pub flush_interval: Duration,
    /// Most rows held in memory while storage is unavailable.
    pub buffer_rows: usize,
    /// How long shutdown keeps trying to write what is left.
    pub drain_timeout: Duration,
}

impl Default for LogWriterConfig {
    fn default() -> Self {
        LogWriterConfig {
            batch_size: 512,
            flush_interval: Duration::from_millis(200),
            buffer_rows: 100_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The handle request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    sender: mpsc::Sender<RequestLogRow>,
}

impl LogWriter {
    /// Queues a row without waiting; a full queue drops it and counts the drop.
    pub fn submit(&self, row: RequestLogRow) {
        if self.sender.try_send(row).is_err() {
            metrics::counter!(names::LOG_ROWS_DROPPED).increment(1);
        }
    }
}

/// Starts the writer on `tracker`. It drains and stops when `shutdown` is cancelled and
/// every `LogWriter` handle is gone, or when `shutdown` is cancelled and `drain_timeout` passed.
pub fn spawn_log_writer(
    store: Store,
    config: LogWriterConfig,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> LogWriter {
    // The channel absorbs bursts; the pending queue absorbs outages. Together they are
    // bounded by `buffer_rows` plus one batch.
    let (sender, receiver) = mpsc::channel(config.batch_size.max(1) * 4);
    tracker.spawn(run(store, config, receiver, shutdown));
    LogWriter { sender }
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn run(
    store: Store,
    config: LogWriterConfig,
    mut receiver: mpsc::Receiver<RequestLogRow>,
    shutdown: CancellationToken,
) {
    let mut pending: VecDeque<RequestLogRow> = VecDeque::new();
    let mut backoff = Duration::ZERO;
    let mut next_attempt = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut open = true;
    let mut drain_deadline: Option<Instant> = None;

    loop {
        let flush_at = if pending.len() >= config.batch_size {
            next_attempt
        } else {
            next_attempt.max(Instant::now() + config.flush_interval)
        };
        if open {
            tokio::select! {
                received = receiver.recv() => match received {
                    Some(row) => {
                        accept(&mut pending, row, config.buffer_rows);
                        while pending.len() < config.batch_size {
                            match receiver.try_recv() {
                                Ok(row) => accept(&mut pending, row, config.buffer_rows),
                                Err(_) => break,
                            }
                        }
                        if pending.len() < config.batch_size {
                            continue;
                        }
                    }
                    None => open = false,
                },
                () = tokio::time::sleep_until(flush_at), if !pending.is_empty() => {}
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + config.drain_timeout);
                    continue;
                }
            }
        } else if pending.is_empty() {
            break;
        } else {
            tokio::time::sleep_until(next_attempt).await;
        }

        if let Some(deadline) = drain_deadline
            && Instant::now() >= deadline
        {
            if !pending.is_empty() {
                tracing::error!(
                    rows = pending.len(),
                    "Request-log rows could not be written before shutdown."
                );
                metrics::counter!(names::LOG_ROWS_DROPPED).increment(pending.len() as u64);
            }
            break;
        }
        if pending.is_empty() || Instant::now() < next_attempt {
            continue;
        }
        let take = pending.len().min(config.batch_size);
        let batch: Vec<RequestLogRow> = pending.range(..take).cloned().collect();
        match store.insert_request_logs(&batch).await {
            Ok(()) => {
                pending.drain(..take);
                metrics::counter!(names::LOG_ROWS_WRITTEN).increment(take as u64);
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        outage_ms = since.elapsed().as_millis() as u64,
                        pending = pending.len(),
                        "Request-log storage is back."
                    );
                }
                backoff = Duration::ZERO;
                next_attempt = Instant::now();
            }
            Err(error) => {
                metrics::counter!(names::LOG_WRITE_ERRORS).increment(1);
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(error = %error_chain(&error), pending = pending.len(), "Request-log write failed, buffering and retrying.");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                next_attempt = Instant::now() + backoff;
            }
        }
        metrics::gauge!(names::LOG_ROWS_PENDING).set(pending.len() as f64);
    }
    metrics::gauge!(names::LOG_ROWS_PENDING).set(pending.len() as f64);
}

fn accept(pending: &mut VecDeque<RequestLogRow>, row: RequestLogRow, capacity: usize) {
    if pending.len() >= capacity {
        metrics::counter!(names::LOG_ROWS_DROPPED).increment(1);
        return;
    }
    pending.push_back(row);
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
