//! Captures warnings and errors from `tracing` (and error reports from the gateway) for the
//! database log sink and error tracking. The layer never blocks: reports go through a bounded
//! channel, and what does not fit is counted and dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::names;

/// How bad an error is. Critical ones raise an alert at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One warning, error or failed request, masked.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub time_ms: i64,
    /// `warn` or `error`.
    pub level: &'static str,
    /// Set for what error tracking groups; `None` for a plain warning.
    pub severity: Option<Severity>,
    /// Whether the report belongs in the database log (it came from `tracing`).
    pub log: bool,
    /// The part of the system it came from: `gateway`, `store`, ...
    pub service: String,
    /// The module (`atalaya_store::log_writer`) or the request stage (`gateway.upstream`).
    pub component: String,
    /// A stable error code when there is one (`upstream_timeout`).
    pub code: Option<String>,
    pub message: String,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Request id, key, team, provider and the event's other fields.
    pub context: BTreeMap<String, String>,
}

/// Where reports go. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    sender: mpsc::Sender<Report>,
}

/// Reports waiting for the writer before new ones are dropped.
const CAPACITY: usize = 8_192;

pub fn channel() -> (Reporter, mpsc::Receiver<Report>) {
    let (sender, receiver) = mpsc::channel(CAPACITY);
    (Reporter { sender }, receiver)
}

impl Reporter {
    /// Reports waiting for the writer.
    pub fn pending(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    pub fn report(&self, report: Report) {
        if self.sender.try_send(report).is_err() {
            metrics::counter!(names::ERROR_REPORTS_DROPPED).increment(1);
        }
    }
}

/// The service a module path belongs to: `atalaya_store::log_writer` → `store`.
pub fn service_of(module: &str) -> String {
    let krate = module.split("::").next().unwrap_or(module);
    krate
        .strip_prefix("atalaya_")
        .unwrap_or(if krate == "atalaya" { "server" } else { krate })
        .to_owned()
}

/// The `tracing` layer: WARN and ERROR events become reports. An ERROR is tracked with
/// severity high unless the event has a `severity` field (`critical`, ...).
pub struct CaptureLayer {
    reporter: Reporter,
    /// Whether warnings and errors also go to the database log.
    store_logs: bool,
}

impl CaptureLayer {
    pub fn new(reporter: Reporter, store_logs: bool) -> CaptureLayer {
        CaptureLayer {
            reporter,
            store_logs,
        }
    }
}

/// The request id a span carries, kept in the span's extensions.
struct SpanRequestId(String);

#[derive(Default)]
struct Fields {
    message: String,
    severity: Option<Severity>,
    code: Option<String>,
    values: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "severity" => self.severity = Severity::parse(value),
            "code" => self.code = Some(value.to_owned()),
            name => {
                self.values.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_str(field, &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_str(field, &value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }
}

impl<S> tracing_subscriber::Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(request_id), Some(span)) = (fields.values.remove("request_id"), ctx.span(id)) {
            span.extensions_mut().insert(SpanRequestId(request_id));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN || (level == Level::WARN && !self.store_logs) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if !fields.values.contains_key("request_id")
            && let Some(scope) = ctx.event_scope(event)
        {
            for span in scope {
                if let Some(id) = span.extensions().get::<SpanRequestId>() {
                    fields.values.insert("request_id".to_owned(), id.0.clone());
                    break;
                }
            }
        }
        let masker = atalaya_security::mask::global().masker();
        let mask = |text: &str| masker.mask(text).into_owned();
        let metadata = event.metadata();
        let module = metadata.module_path().unwrap_or(metadata.target());
        let is_error = level == Level::ERROR;
        // A panic report names where the panic happened, not where the hook logged it.
        let file = fields
            .values
            .remove("panic_file")
            .or_else(|| metadata.file().map(str::to_owned));
        let line = match fields.values.remove("panic_line") {
            Some(line) => line.parse().ok(),
            None => metadata.line(),
        };
        self.reporter.report(Report {
            time_ms: now_ms(),
            level: if is_error { "error" } else { "warn" },
            severity: fields.severity.or(is_error.then_some(Severity::High)),
            log: self.store_logs,
            service: service_of(module),
            component: module.to_owned(),
            code: fields.code,
            message: mask(&fields.message),
            module: Some(module.to_owned()),
            file,
            line,
            context: fields
                .values
                .iter()
                .map(|(name, value)| (name.clone(), mask(value)))
                .collect(),
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn warnings_and_errors_are_captured_with_location_and_request_id() {
        let (reporter, mut receiver) = channel();
        let subscriber = tracing_subscriber::registry().with(CaptureLayer::new(reporter, true));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not captured");
            let span = tracing::info_span!("request", request_id = "req-42");
            let _entered = span.enter();
            tracing::warn!(provider = "p0", "Upstream slow.");
            tracing::error!(severity = "critical", code = "boom", "It broke.");
        });
        let warn = receiver.try_recv().unwrap();
        assert_eq!(warn.level, "warn");
        assert_eq!(warn.severity, None);
        assert_eq!(warn.message, "Upstream slow.");
        assert_eq!(warn.context["provider"], "p0");
        assert_eq!(warn.context["request_id"], "req-42");
        assert!(warn.file.as_deref().unwrap().ends_with("capture.rs"));
        assert!(warn.line.is_some());
        assert_eq!(warn.service, "telemetry");
        let error = receiver.try_recv().unwrap();
        assert_eq!(error.severity, Some(Severity::Critical));
        assert_eq!(error.code.as_deref(), Some("boom"));
        assert!(receiver.try_recv().is_err(), "info is not captured");
    }
}
