//! The error-tracking writer: takes warnings, errors and failed requests off the report
//! channel, writes them in batches (server log rows, error groups), puts new and regressed
//! groups on the live feed, and counts errors by severity. Never on a request's path.

use std::time::Duration;

use atalaya_gateway::Events;
use atalaya_store::{GroupChange, Store};
use atalaya_telemetry::{Report, names};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reports held while storage is down; beyond this the oldest are dropped and counted.
const BUFFER: usize = 10_000;
const BATCH: usize = 512;

pub fn spawn_writer(
    store: Store,
    mut receiver: mpsc::Receiver<Report>,
    events: Events,
    on_change: impl Fn(&GroupChange) + Send + 'static,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut pending: Vec<Report> = Vec::new();
        let mut backoff = Duration::ZERO;
        let mut stopping = false;
        loop {
            if pending.is_empty() && !stopping {
                tokio::select! {
                    () = shutdown.cancelled() => stopping = true,
                    received = receiver.recv_many(&mut pending, BATCH) => {
                        if received == 0 {
                            stopping = true;
                        }
                    }
                }
            }
            while pending.len() < BUFFER && receiver.try_recv().map(|r| pending.push(r)).is_ok() {}
            if pending.len() > BUFFER {
                let excess = pending.len() - BUFFER;
                pending.drain(..excess);
                metrics::counter!(names::ERROR_REPORTS_DROPPED).increment(excess as u64);
            }
            if pending.is_empty() {
                if stopping {
                    return;
                }
                continue;
            }
            let take = pending.len().min(BATCH);
            match store.record_reports(&pending[..take]).await {
                Ok(changes) => {
                    pending.drain(..take);
                    backoff = Duration::ZERO;
                    for change in &changes {
                        metrics::counter!(
                            names::ERRORS,
                            "severity" => change.severity.as_str(),
                            "service" => change.service.clone()
                        )
                        .increment(change.added);
                        if change.new || change.regressed {
                            events.publish("error", change);
                        }
                        on_change(change);
                    }
                }
                Err(error) => {
                    if stopping {
                        metrics::counter!(names::ERROR_REPORTS_DROPPED)
                            .increment(pending.len() as u64);
                        return;
                    }
                    // Logged at debug: a warning here would report itself.
                    tracing::debug!(error = %error, "Writing error reports failed; retrying.");
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
                    tokio::select! {
                        () = shutdown.cancelled() => stopping = true,
                        () = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
    });
}

/// Panics become critical errors, with where they happened.
pub fn report_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        tracing::error!(
            severity = "critical",
            code = "panic",
            panic_file = location.map(|l| l.file()),
            panic_line = location.map(|l| l.line()),
            "A thread panicked: {message}"
        );
        previous(info);
    }));
}
