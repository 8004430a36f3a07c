//! Telemetry plumbing: the names and help texts of every metric, the Prometheus recorder,
//! and the tracing subscriber.
//!
//! Crates record metrics through the `metrics` macros using the names defined here, so the
//! full list lives in one place and `/metrics` documents itself. This crate does not serve
//! HTTP and does not decide what to measure.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod capture;
pub mod civil;
mod file;
pub mod otlp;
pub mod process;

pub use capture::{Report, Reporter, Severity};

pub mod names {
    //! Metric names: `atalaya_<name>_<unit>[_total]`, bounded labels only.

    /// Data-plane requests by `endpoint`, `model`, `provider`, `status`.
    pub const REQUESTS: &str = "atalaya_requests_total";
    /// Whole request time as the client sees it, by `endpoint`, `provider`.
    pub const REQUEST_DURATION: &str = "atalaya_request_duration_seconds";
    /// The gateway's own share of a request: total minus time waiting on the upstream.
    pub const OVERHEAD_DURATION: &str = "atalaya_overhead_duration_seconds";
    /// Time to the first streamed byte of the answer, by `provider`.
    pub const TIME_TO_FIRST_TOKEN: &str = "atalaya_time_to_first_token_seconds";
    /// Failed upstream calls by `provider` and `class` (connect, timeout, status_4xx, status_5xx, stream).
    pub const UPSTREAM_ERRORS: &str = "atalaya_upstream_errors_total";
    /// Tokens by `provider`, `model` and `kind` (prompt, completion).
    pub const TOKENS: &str = "atalaya_tokens_total";
    /// USD spent at catalog prices since start, by `provider` and `model`. A gauge only because
    /// the recorder's counters are integers: it never decreases, so `rate()` applies.
    pub const COST: &str = "atalaya_cost_usd";
    /// Request-log rows written to storage.
    pub const LOG_ROWS_WRITTEN: &str = "atalaya_request_log_rows_written_total";
    /// Request-log rows dropped because the bounded buffer was full.
    pub const LOG_ROWS_DROPPED: &str = "atalaya_request_log_rows_dropped_total";
    /// Request-log rows waiting to be written.
    pub const LOG_ROWS_PENDING: &str = "atalaya_request_log_rows_pending";
    /// Request-log rows written to the spill directory because the database could not take them.
    pub const LOG_ROWS_SPILLED: &str = "atalaya_request_log_rows_spilled_total";
    /// Spilled request-log rows written to the database afterwards.
    pub const LOG_ROWS_REPLAYED: &str = "atalaya_request_log_rows_replayed_total";
    /// Failed request-log batch writes (each is retried).
    pub const LOG_WRITE_ERRORS: &str = "atalaya_request_log_write_errors_total";
    /// Circuit breaker state by `breaker`: 0 closed, 1 half-open, 2 open.
    pub const CIRCUIT_STATE: &str = "atalaya_circuit_state";
    /// Probes of deployments whose breaker waited half-open, by `deployment` and `outcome`
    /// (up, down).
    pub const PROVIDER_PROBES: &str = "atalaya_provider_probes_total";
    /// Retried upstream calls by `provider` (the deployment retried away from).
    pub const RETRIES: &str = "atalaya_retries_total";
    /// Requests answered by a fallback model, by `model` (the one asked for).
    pub const FALLBACKS: &str = "atalaya_fallbacks_total";
    /// Retries refused because the retry budget was spent.
    pub const RETRY_BUDGET_EXHAUSTED: &str = "atalaya_retry_budget_exhausted_total";
    /// Upstream API keys disabled after the provider refused them, by `provider`.
    pub const KEYS_DISABLED: &str = "atalaya_upstream_keys_disabled_total";
    /// Rejected authentication attempts by `reason`.
    pub const AUTH_FAILURES: &str = "atalaya_auth_failures_total";
    /// Requests refused by a key's or team's rate limit, by `kind` (requests, tokens) and
    /// `scope` (key, team).
    pub const RATE_LIMITED: &str = "atalaya_rate_limited_total";
    /// Requests refused because a key's or team's budget was spent, by `scope`.
    pub const BUDGET_EXCEEDED: &str = "atalaya_budget_exceeded_total";
    /// Budget thresholds crossed (soft: alert; hard: blocking starts), by `scope` and `limit`.
    pub const BUDGET_ALERTS: &str = "atalaya_budget_alerts_total";
    /// Guardrail findings in prompts, by `detector` (email, phone, card, iban, injection) and
    /// `action` (log, redact, block).
    pub const GUARDRAIL_HITS: &str = "atalaya_guardrail_hits_total";
    /// Audit entries that could not be written.
    pub const AUDIT_WRITE_ERRORS: &str = "atalaya_audit_write_errors_total";
    /// Warnings, errors and failed requests not tracked because the report queue was full.
    pub const ERROR_REPORTS_DROPPED: &str = "atalaya_error_reports_dropped_total";
    /// Errors tracked, by `severity` and `service`.
    pub const ERRORS: &str = "atalaya_errors_total";
    /// Tokens by virtual `key` (its id), `team` and `kind`; bounded by the keys admins create.
    pub const KEY_TOKENS: &str = "atalaya_key_tokens_total";
    /// USD at catalog prices by virtual `key` and `team`, since start; never decreases.
    pub const KEY_COST: &str = "atalaya_key_cost_usd";
    /// Error reports waiting for the writer.
    pub const ERROR_REPORTS_PENDING: &str = "atalaya_error_reports_pending";
    /// Alerts fired or resolved, by `rule`, `severity` and `state`.
    pub const ALERTS: &str = "atalaya_alerts_total";
    /// Alerts not sent, by `reason` (duplicate, rate_limited).
    pub const ALERTS_SUPPRESSED: &str = "atalaya_alerts_suppressed_total";
    /// Alert deliveries by `channel` and `outcome` (sent, failed).
    pub const ALERT_NOTIFICATIONS: &str = "atalaya_alert_notifications_total";
    /// Spans sent to the OTLP collector.
    pub const OTLP_SPANS_EXPORTED: &str = "atalaya_otlp_spans_exported_total";
    /// Spans not exported, by `reason` (queue_full, export_failed).
    pub const OTLP_SPANS_DROPPED: &str = "atalaya_otlp_spans_dropped_total";
    /// Configuration reloads by `result` (success, error).
    pub const CONFIG_RELOADS: &str = "atalaya_config_reloads_total";
    /// Which configuration is serving: 1 at start, one more per successful reload.
    pub const CONFIG_GENERATION: &str = "atalaya_config_generation";
}

/// An error and its sources on one line, each cause once (many errors already repeat their
/// source's text).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Latency buckets from 0.5 ms to 5 min: gateway overhead sits at the low end, long
/// generations at the high end.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("installing the metrics recorder")]
    Metrics(#[source] metrics_exporter_prometheus::BuildError),
    #[error("invalid log filter `{filter}`")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("installing the tracing subscriber: {0}")]
    Tracing(String),
}

/// Installs the global Prometheus recorder and describes every metric. Call once.
pub fn install_metrics() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .map_err(TelemetryError::Metrics)?
        .install_recorder()
        .map_err(TelemetryError::Metrics)?;
    describe();
    Ok(handle)
}

fn describe() {
    use names::*;
    describe_counter!(
        REQUESTS,
        "Data-plane requests by endpoint, model, provider and status."
    );
    describe_gauge!(
        COST,
        Unit::Count,
        "USD spent at catalog prices since start, by provider and model; never decreases."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Request duration as the client sees it."
    );
    describe_histogram!(
        OVERHEAD_DURATION,
        Unit::Seconds,
        "Gateway overhead: total time minus time waiting on the upstream."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Time to the first streamed chunk of an answer."
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "Failed upstream calls by provider and class."
    );
    describe_counter!(
        TOKENS,
        "Tokens by provider, model and kind (prompt, completion)."
    );
    describe_counter!(LOG_ROWS_WRITTEN, "Request-log rows written to storage.");
    describe_counter!(
        LOG_ROWS_DROPPED,
        "Request-log rows dropped because the bounded buffer was full."
    );
    describe_gauge!(LOG_ROWS_PENDING, "Request-log rows waiting to be written.");
    describe_counter!(
        LOG_ROWS_SPILLED,
        "Request-log rows spilled to disk because the database could not take them."
    );
    describe_counter!(
        LOG_ROWS_REPLAYED,
        "Spilled request-log rows written to the database afterwards."
    );
    describe_counter!(
        LOG_WRITE_ERRORS,
        "Failed request-log batch writes (rows are kept and retried)."
    );
    describe_counter!(AUTH_FAILURES, "Rejected authentication attempts by reason.");
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state by breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        RETRIES,
        "Upstream calls retried, by the provider retried away from."
    );
    describe_counter!(
        FALLBACKS,
        "Requests answered by a fallback model, by the model asked for."
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused because retries reached their share of requests."
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a key's or team's rate limit, by kind and scope."
    );
    describe_counter!(
        BUDGET_EXCEEDED,
        "Requests refused because a key's or team's budget was spent, by scope."
    );
    describe_counter!(
        BUDGET_ALERTS,
        "Budget thresholds crossed, by scope and limit (soft or hard)."
    );
    describe_counter!(
        GUARDRAIL_HITS,
        "Guardrail findings in prompts, by detector and action."
    );
    describe_counter!(
        AUDIT_WRITE_ERRORS,
        "Audit entries that could not be written to the audit log."
    );
    describe_counter!(
        ERROR_REPORTS_DROPPED,
        "Warnings, errors and failed requests not tracked because the report queue was full."
    );
    describe_counter!(ERRORS, "Errors tracked, by severity and service.");
    describe_counter!(KEY_TOKENS, "Tokens by virtual key, team and kind.");
    describe_gauge!(
        KEY_COST,
        "USD at catalog prices by virtual key and team since start; never decreases."
    );
    describe_gauge!(
        ERROR_REPORTS_PENDING,
        "Error reports waiting for the writer."
    );
    process::describe();
    describe_counter!(
        ALERTS,
        "Alerts fired or resolved, by rule, severity and state."
    );
    describe_counter!(
        ALERTS_SUPPRESSED,
        "Alerts not sent, by reason (duplicate, rate_limited)."
    );
    describe_counter!(
        ALERT_NOTIFICATIONS,
        "Alert deliveries by channel and outcome (sent, failed)."
    );
    describe_counter!(OTLP_SPANS_EXPORTED, "Spans sent to the OTLP collector.");
    describe_counter!(
        OTLP_SPANS_DROPPED,
        "Spans not exported, by reason (queue_full, export_failed)."
    );
    describe_counter!(
        PROVIDER_PROBES,
        "Probes of deployments whose breaker waited half-open, by deployment and outcome (up, down)."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads by result (success, error)."
    );
    describe_gauge!(
        CONFIG_GENERATION,
        "Which configuration is serving: 1 at start, one more per successful reload."
    );
    describe_counter!(
        KEYS_DISABLED,
        "Upstream API keys disabled after the provider refused them, by provider."
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where logs go, each destination configured on its own.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter (`info`, `info,atalaya_gateway=debug`).
    pub filter: String,
    /// stderr, pretty or JSON; `None` turns the console off.
    pub console: Option<LogFormat>,
    /// Daily-rotated files.
    pub file: Option<FileLog>,
    /// Errors to error tracking, through this reporter.
    pub capture: Option<Reporter>,
    /// Warnings and errors to the database log too (with `capture`).
    pub database_logs: bool,
    /// Spans to an OpenTelemetry collector.
    pub otlp: Option<otlp::OtlpSettings>,
}

#[derive(Debug, Clone)]
pub struct FileLog {
    pub dir: std::path::PathBuf,
    pub format: LogFormat,
    /// Days of files kept; `None` keeps them all.
    pub retention_days: Option<u32>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

/// Hands the formatter one buffer per log event and writes it, masked by the process's
/// masking engine, to stderr or a daily file: no log line carries a secret whatever was logged.
#[derive(Clone)]
enum Sink {
    Stderr,
    Files(std::sync::Arc<file::DailyFiles>),
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = MaskedLine;

    fn make_writer(&'a self) -> MaskedLine {
        MaskedLine(Vec::with_capacity(256), self.clone())
    }
}

struct MaskedLine(Vec<u8>, Sink);

impl std::io::Write for MaskedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedLine {
    fn drop(&mut self) {
        let masker = atalaya_security::mask::global().masker();
        let line = masker.mask_bytes(&self.0);
        match &self.1 {
            // A log line that cannot be written has nowhere else to go.
            Sink::Stderr => {
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), &line);
            }
            Sink::Files(files) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                files.write_line(&line, now);
            }
        }
    }
}

/// Installs the global subscriber with the destinations `settings` names. Logs go to
/// stderr, so stdout stays free for command output. Each destination has its own filter, so
/// the span export sees debug spans whatever the console's level. When spans are exported,
/// the exporter comes back for the caller to run on its runtime.
pub fn init_tracing(settings: &LogSettings) -> Result<Option<otlp::OtlpExporter>, TelemetryError> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let env_filter = || {
        EnvFilter::try_new(&settings.filter).map_err(|source| TelemetryError::Filter {
            filter: settings.filter.clone(),
            source,
        })
    };
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    let fmt_layer = |format: LogFormat, sink: Sink, ansi: bool| -> Result<Boxed, TelemetryError> {
        let layer = tracing_subscriber::fmt::layer().with_writer(sink);
        Ok(match format {
            LogFormat::Pretty => layer.with_ansi(ansi).with_filter(env_filter()?).boxed(),
            LogFormat::Json => layer
                .json()
                .with_current_span(true)
                .with_filter(env_filter()?)
                .boxed(),
        })
    };
    let mut layers: Vec<Boxed> = Vec::new();
    if let Some(format) = settings.console {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        layers.push(fmt_layer(format, Sink::Stderr, ansi)?);
    }
    if let Some(file) = &settings.file {
        let files = file::DailyFiles::new(&file.dir, file.retention_days).map_err(|error| {
            TelemetryError::Tracing(format!(
                "opening the log directory {}: {error}",
                file.dir.display()
            ))
        })?;
        layers.push(fmt_layer(
            file.format,
            Sink::Files(std::sync::Arc::new(files)),
            false,
        )?);
    }
    if let Some(reporter) = &settings.capture {
        layers.push(
            capture::CaptureLayer::new(reporter.clone(), settings.database_logs)
                .with_filter(env_filter()?)
                .boxed(),
        );
    }
    let mut exporter = None;
    if let Some(export) = &settings.otlp {
        let (layer, sender) = otlp::OtlpLayer::new(export.clone());
        layers.push(
            layer
                .with_filter(tracing_subscriber::filter::filter_fn(
                    otlp::OtlpLayer::wants,
                ))
                .boxed(),
        );
        exporter = Some(sender);
    }
    if layers.is_empty() {
        // Nothing to write to: still validate the filter, as a typo is a configuration error,
        // and keep every callsite off.
        env_filter()?;
        layers.push(tracing_subscriber::filter::LevelFilter::OFF.boxed());
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|error| TelemetryError::Tracing(error.to_string()))?;
    Ok(exporter)
}

/// Console logging only, for commands other than `serve`.
pub fn init_console(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    init_tracing(&LogSettings {
        filter: filter.to_owned(),
        console: Some(format),
        file: None,
        capture: None,
        database_logs: false,
        otlp: None,
    })
    .map(|_| ())
}
