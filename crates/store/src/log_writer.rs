//! The asynchronous, batched request-log writer.
//!
//! Request handlers hand rows over without waiting (a short lock on a shared buffer); one task owns the write
//! path. When the database is slow or down, rows wait in a bounded buffer and are retried
//! with backoff, so requests never wait on storage. Only when that buffer is full are new
//! rows dropped, and every drop is counted.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use atalaya_telemetry::names;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::spill::Spill;
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
    /// Where rows go when the database cannot take them in time (an outage filling half the
    /// buffer, or shutdown); `None` keeps them in memory only.
    pub spill_dir: Option<std::path::PathBuf>,
    /// Most bytes the spill may hold; beyond it rows are dropped and counted.
    pub spill_max_bytes: u64,
}

impl Default for LogWriterConfig {
    fn default() -> Self {
        LogWriterConfig {
            batch_size: 512,
            flush_interval: Duration::from_millis(200),
            buffer_rows: 100_000,
            drain_timeout: Duration::from_secs(10),
            spill_dir: None,
            spill_max_bytes: 1 << 30,
        }
    }
}

/// The handle request handlers use. Cheap to clone.
///
/// Rows go into a shared buffer; the writer wakes only when a batch is full or the flush
/// interval has passed, not once per row (a wake-up per request was ~9 % of the gateway's
/// CPU under load, because the writer runs on another thread).
pub struct LogWriter {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Vec<RequestLogRow>>,
    /// Most rows held in all: queued here plus pending in the writer (`held`).
    buffer_rows: usize,
    /// Rows the writer has taken but not yet written.
    held: AtomicUsize,
    batch_size: usize,
    /// Pending rows at which the writer moves them to the spill; `usize::MAX` without one.
    spill_at: usize,
    /// With a spill: queued rows at which a write in flight stops to spill them, and the most
    /// the queue takes (the rest of `buffer_rows` is the writer's, below `spill_at`).
    spill_queue_at: usize,
    queue_limit: Option<usize>,
    notify: Notify,
    /// Live `LogWriter` handles; the writer drains and stops when none are left.
    handles: AtomicUsize,
}

impl Clone for LogWriter {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        LogWriter {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.notify.notify_one();
        }
    }
}

impl LogWriter {
    /// Rows not yet written: queued by handlers and held by the writer (a write in flight
    /// included), read at each metrics scrape so a stuck write does not freeze the gauge.
    pub fn pending(&self) -> usize {
        waiting(&self.shared, self.shared.held.load(Ordering::Relaxed))
    }

    /// Queues a row without waiting; a full queue drops it and counts the drop.
    pub fn submit(&self, row: RequestLogRow) {
        let Ok(mut queue) = self.shared.queue.lock() else {
            return;
        };
        // Full only when the whole buffer is: a slow commit must not drop rows while the
        // writer's side still has room.
        let full = match self.shared.queue_limit {
            Some(limit) => queue.len() >= limit,
            None => {
                queue.len() + self.shared.held.load(Ordering::Relaxed) >= self.shared.buffer_rows
            }
        };
        if full {
            drop(queue);
            metrics::counter!(names::LOG_ROWS_DROPPED).increment(1);
            return;
        }
        queue.push(row);
        let full =
            queue.len() == self.shared.batch_size || queue.len() >= self.shared.spill_queue_at;
        drop(queue);
        if full {
            self.shared.notify.notify_one();
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
    let batch_size = config.batch_size.max(1);
    // The queue absorbs bursts between wake-ups and slow commits; the pending buffer absorbs
    // outages. Together they hold at most `buffer_rows`.
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::with_capacity(batch_size)),
        buffer_rows: config.buffer_rows.max(batch_size),
        held: AtomicUsize::new(0),
        batch_size,
        spill_at: if config.spill_dir.is_some() {
            (config.buffer_rows / 2).max(batch_size)
        } else {
            usize::MAX
        },
        spill_queue_at: if config.spill_dir.is_some() {
            (config.buffer_rows / 4).max(1)
        } else {
            usize::MAX
        },
        queue_limit: config.spill_dir.as_ref().map(|_| {
            config
                .buffer_rows
                .saturating_sub((config.buffer_rows / 2).max(batch_size))
                .max(batch_size)
        }),
        notify: Notify::new(),
        handles: AtomicUsize::new(1),
    });
    tracker.spawn(run(store, config, shared.clone(), shutdown));
    LogWriter { shared }
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

async fn run(
    store: Store,
    config: LogWriterConfig,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let mut pending: VecDeque<RequestLogRow> = VecDeque::new();
    let mut spare: Vec<RequestLogRow> = Vec::with_capacity(shared.batch_size);
    let mut backoff = Duration::ZERO;
    // Writes wait for a full batch, or for `flush_at`, and never run before `next_attempt`.
    let mut next_attempt = Instant::now();
    let mut flush_at = Instant::now() + config.flush_interval;
    let mut failing_since: Option<Instant> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut spill = config.spill_dir.as_deref().and_then(|dir| {
        Spill::open(dir, config.spill_max_bytes)
            .map_err(|error| {
                tracing::error!(dir = %dir.display(), %error, "The request-log spill cannot be opened; rows the database cannot take stay in memory.");
            })
            .ok()
    });
    // An outage spills once half the buffer is waiting, so handlers keep room.
    let spill_at = shared.spill_at;

    loop {
        // With a spill, what does not fit goes to disk below rather than being dropped here.
        let capacity = if spill.is_some() {
            usize::MAX
        } else {
            config.buffer_rows
        };
        take_queue(&shared, &mut spare, &mut pending, capacity);
        shared.held.store(pending.len(), Ordering::Relaxed);
        let open = shared.handles.load(Ordering::Acquire) > 0;
        if !open && pending.is_empty() {
            break;
        }
        let now = Instant::now();
        if drain_deadline.is_some_and(|deadline| now >= deadline) {
            if !pending.is_empty() {
                let rows = pending.len();
                let lost = spill_out(spill.as_mut(), &mut pending);
                if lost > 0 {
                    tracing::error!(
                        rows = lost,
                        "Request-log rows could not be written before shutdown."
                    );
                    metrics::counter!(names::LOG_ROWS_DROPPED).increment(lost as u64);
                } else {
                    tracing::warn!(
                        rows,
                        "Request-log rows not written before shutdown were spilled to disk; they are written at the next start."
                    );
                }
            }
            break;
        }
        if pending.len() >= spill_at && spill.is_some() {
            let lost = spill_out(spill.as_mut(), &mut pending);
            if lost > 0 {
                metrics::counter!(names::LOG_ROWS_DROPPED).increment(lost as u64);
            }
            shared.held.store(pending.len(), Ordering::Relaxed);
        }
        if pending.len() < config.batch_size
            && now >= next_attempt
            && let Some(path) = spill
                .as_ref()
                .filter(|s| !s.is_empty())
                .and_then(|s| s.files().into_iter().next())
        {
            let (rows, bad) = match Spill::read(&path) {
                Ok(read) => read,
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "A spilled request-log file cannot be read; it is set aside.");
                    if let Some(spilled) = spill.as_mut() {
                        spilled.forget(&path);
                    }
                    continue;
                }
            };
            let count = rows.len();
            let write = store.write_request_logs(rows);
            match while_writing(write, &shared, spill.as_mut()).await.1 {
                Ok(()) => {
                    if let Some(spilled) = spill.as_mut() {
                        spilled.remove(&path);
                    }
                    metrics::counter!(names::LOG_ROWS_REPLAYED).increment(count as u64);
                    metrics::counter!(names::LOG_ROWS_WRITTEN).increment(count as u64);
                    if bad > 0 {
                        metrics::counter!(names::LOG_ROWS_DROPPED).increment(bad as u64);
                    }
                    tracing::info!(
                        rows = count,
                        unreadable = bad,
                        "Spilled request-log rows written."
                    );
                    storage_back(&mut failing_since, pending.len());
                    backoff = Duration::ZERO;
                    next_attempt = Instant::now();
                }
                Err(error) => {
                    metrics::counter!(names::LOG_WRITE_ERRORS).increment(1);
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(error = %error_chain(&error), "Replaying spilled request-log rows failed; retrying.");
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                    next_attempt = Instant::now() + backoff;
                }
            }
            continue;
        }
        let urgent = pending.len() >= config.batch_size || !open || drain_deadline.is_some();
        let ready = !pending.is_empty() && now >= next_attempt && (urgent || now >= flush_at);
        if !ready {
            let wake_at = if pending.is_empty() {
                // Rows below a batch sit in the shared queue; look again after one interval.
                now + config.flush_interval
            } else if urgent {
                next_attempt
            } else {
                flush_at.max(next_attempt)
            };
            tokio::select! {
                () = shared.notify.notified() => {}
                () = tokio::time::sleep_until(wake_at) => {}
                () = shutdown.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + config.drain_timeout);
                }
            }
            continue;
        }
        let take = pending.len().min(config.batch_size);
        // The rows move to the writing thread (no copy) and come back only if the write fails;
        // meanwhile they still count as held.
        let batch: Vec<RequestLogRow> = if take == pending.len() {
            // The common case: the whole buffer is the batch, and hands over its allocation.
            std::mem::take(&mut pending).into()
        } else {
            pending.drain(..take).collect()
        };
        let (unwritten, result) =
            while_writing(store.write_request_logs(batch), &shared, spill.as_mut()).await;
        match result {
            Ok(()) => {
                // Written rows come back as an empty vector with its capacity: the next
                // hand-over from the handlers' queue reuses it.
                if spare.capacity() < unwritten.capacity() {
                    spare = unwritten;
                }
                shared.held.store(pending.len(), Ordering::Relaxed);
                // A stall (a slow commit, an outage) can grow the buffer to `buffer_rows`;
                // give that memory back once it has drained.
                if pending.capacity() > 8 * config.batch_size
                    && pending.len() < pending.capacity() / 4
                {
                    pending.shrink_to(pending.len().max(config.batch_size));
                }
                metrics::counter!(names::LOG_ROWS_WRITTEN).increment(take as u64);
                storage_back(&mut failing_since, pending.len());
                backoff = Duration::ZERO;
                next_attempt = Instant::now();
                flush_at = next_attempt + config.flush_interval;
            }
            Err(error) => {
                // Rows come back from a failed write; only a write task that died keeps them.
                let lost = take - unwritten.len();
                if lost > 0 {
                    tracing::error!(rows = lost, error = %error_chain(&error), "Request-log rows were lost with a failed write task.");
                    metrics::counter!(names::LOG_ROWS_DROPPED).increment(lost as u64);
                }
                for row in unwritten.into_iter().rev() {
                    pending.push_front(row);
                }
                metrics::counter!(names::LOG_WRITE_ERRORS).increment(1);
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(
                        error = %error_chain(&error),
                        pending = pending.len(),
                        "Request-log write failed, buffering and retrying."
                    );
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF);
                next_attempt = Instant::now() + backoff;
            }
        }
        metrics::gauge!(names::LOG_ROWS_PENDING).set(waiting(&shared, pending.len()) as f64);
    }
    metrics::gauge!(names::LOG_ROWS_PENDING).set(waiting(&shared, pending.len()) as f64);
}

/// Moves every pending row to the spill; returns how many could not be spilled (and are
/// gone from `pending` all the same: the caller counts them as dropped).
fn spill_out(spill: Option<&mut Spill>, pending: &mut VecDeque<RequestLogRow>) -> usize {
    /// Rows per spill file: a file is replayed in one transaction.
    const FILE_ROWS: usize = 20_000;
    let Some(spill) = spill else {
        let lost = pending.len();
        pending.clear();
        return lost;
    };
    let mut lost = 0;
    while !pending.is_empty() {
        let take = pending.len().min(FILE_ROWS);
        let rows = &pending.make_contiguous()[..take];
        match spill.write(rows) {
            Ok(()) => metrics::counter!(names::LOG_ROWS_SPILLED).increment(take as u64),
            Err(error) => {
                tracing::error!(%error, rows = take, "Request-log rows could not be spilled and are dropped.");
                lost += take;
            }
        }
        pending.drain(..take);
    }
    lost
}

/// Logs the end of an outage, once.
fn storage_back(failing_since: &mut Option<Instant>, pending: usize) {
    if let Some(since) = failing_since.take() {
        tracing::info!(
            outage_ms = since.elapsed().as_millis() as u64,
            pending,
            "Request-log storage is back."
        );
    }
}

/// Awaits a write; meanwhile, whenever handlers have queued enough rows to reach the spill
/// mark, moves them to the spill so a write stuck on a locked database drops nothing.
async fn while_writing<T>(
    write: impl std::future::Future<Output = T>,
    shared: &Shared,
    mut spill: Option<&mut Spill>,
) -> T {
    tokio::pin!(write);
    loop {
        tokio::select! {
            result = &mut write => return result,
            () = shared.notify.notified() => {
                let Some(spill) = spill.as_deref_mut() else {
                    continue;
                };
                let queued = match shared.queue.lock() {
                    Ok(mut queue) if queue.len() >= shared.spill_queue_at => std::mem::take(&mut *queue),
                    _ => continue,
                };
                let mut queued: VecDeque<RequestLogRow> = queued.into();
                let lost = spill_out(Some(spill), &mut queued);
                if lost > 0 {
                    metrics::counter!(names::LOG_ROWS_DROPPED).increment(lost as u64);
                }
            }
        }
    }
}

/// Rows not yet written: those the writer holds and those still queued by handlers.
fn waiting(shared: &Shared, held: usize) -> usize {
    held + shared.queue.lock().map(|queue| queue.len()).unwrap_or(0)
}

/// Moves everything queued by handlers into `pending`, dropping (and counting) what does not
/// fit in `capacity`.
fn take_queue(
    shared: &Shared,
    spare: &mut Vec<RequestLogRow>,
    pending: &mut VecDeque<RequestLogRow>,
    capacity: usize,
) {
    // The queue gets `spare`'s allocation: handlers must not grow it from nothing.
    if spare.capacity() == 0 {
        spare.reserve(shared.batch_size);
    }
    if let Ok(mut queue) = shared.queue.lock() {
        std::mem::swap(&mut *queue, spare);
    }
    let room = capacity.saturating_sub(pending.len());
    if spare.len() > room {
        metrics::counter!(names::LOG_ROWS_DROPPED).increment((spare.len() - room) as u64);
        spare.truncate(room);
    }
    if pending.is_empty() {
        // Taken whole, allocation and all: no row is moved.
        *pending = std::mem::take(spare).into();
    } else {
        pending.extend(spare.drain(..));
    }
}

pub(crate) use atalaya_telemetry::error_chain;
