//! OpenTelemetry trace export over OTLP/HTTP with the JSON encoding (`POST …/v1/traces`),
//! which the OpenTelemetry Collector, Jaeger, Tempo and most vendors accept on port 4318.
//!
//! A `tracing` layer turns our spans (request → attempt → upstream) into OTLP spans and hands
//! finished ones to a bounded queue; an exporter task batches them and posts them, masked.
//! Nothing on a request's path waits on the collector: when the queue is full, spans are
//! dropped and counted.
//!
//! Span fields with these names steer the export rather than becoming attributes:
//! `trace_id` (32 hex digits, on a root span: the trace to join), `parent_span_id` (16 hex
//! digits: the caller's span), `span_id` (16 hex digits: this span's id, so an id already sent
//! upstream in a `traceparent` names the same span), `sampled` (the caller's sampling flag),
//! `otel.kind` (`server`, `client`, `internal`, `producer`, `consumer`), `otel.name`,
//! `otel.status_code` (`ok`, `error`) and `otel.status_message`. Warnings and errors logged
//! inside a span become span events; an error also marks the span failed.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::names;

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// Extra request headers (an API key for a hosted backend).
    pub headers: Vec<(String, String)>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of traces started here that are exported, 0.0–1.0. A caller's sampling decision
    /// (its `traceparent` flags) is followed as it is.
    pub sample_ratio: f64,
    /// Finished spans waiting for export before new ones are dropped.
    pub queue_spans: usize,
    /// Spans per export request.
    pub batch_spans: usize,
    /// Longest a finished span waits before a partial batch goes out.
    pub flush_interval: Duration,
    /// Per export request.
    pub timeout: Duration,
}

impl OtlpSettings {
    /// The traces URL for an OTLP base endpoint (`http://host:4318` →
    /// `http://host:4318/v1/traces`); a URL already ending in `/v1/traces` is kept.
    pub fn traces_url(endpoint: &str) -> String {
        let trimmed = endpoint.trim_end_matches('/');
        if trimmed.ends_with("/v1/traces") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/v1/traces")
        }
    }
}

/// The sampling ratio once export is set up; unset means no export.
static RATIO: OnceLock<f64> = OnceLock::new();

/// Whether spans are exported at all: the gateway records span fields only for the export.
pub fn enabled() -> bool {
    RATIO.get().is_some()
}

/// Whether a trace started here (no caller's decision to follow) is exported: the trace id's
/// low 63 bits against the ratio, so every service sampling this trace id by ratio agrees.
pub fn samples(trace_id: u128) -> bool {
    RATIO
        .get()
        .is_some_and(|ratio| sampled_at(*ratio, trace_id))
}

fn sampled_at(ratio: f64, trace_id: u128) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

/// A span id as the 16 hex digits OTLP and `traceparent` use.
#[derive(Debug, Clone, Copy)]
pub struct SpanId(pub u64);

impl SpanId {
    pub fn random() -> SpanId {
        SpanId(rand::rng().random::<u64>().max(1))
    }
}

impl std::fmt::Display for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Attr {
    fn to_json(&self) -> Value {
        match self {
            Attr::Str(text) => json!({ "stringValue": text }),
            // 64-bit integers are strings in the protobuf JSON mapping.
            Attr::Int(value) => json!({ "intValue": value.to_string() }),
            Attr::Float(value) => json!({ "doubleValue": value }),
            Attr::Bool(value) => json!({ "boolValue": value }),
        }
    }
}

fn attributes_json(attributes: &[(Cow<'static, str>, Attr)]) -> Value {
    Value::Array(
        attributes
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": value.to_json() }))
            .collect(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

#[derive(Debug, Clone)]
struct SpanEvent {
    time_ns: u64,
    name: String,
    attributes: Vec<(Cow<'static, str>, Attr)>,
}

/// Events kept per span; a span logging more keeps its first ones.
const MAX_EVENTS: usize = 32;

/// An OTLP span as it is being recorded, then as it is exported.
#[derive(Debug, Clone)]
pub struct OtelSpan {
    trace_id: u128,
    span_id: u64,
    /// 0 when the span has no parent.
    parent_id: u64,
    sampled: bool,
    name: Cow<'static, str>,
    kind: u8,
    start_ns: u64,
    end_ns: u64,
    attributes: Vec<(Cow<'static, str>, Attr)>,
    events: Vec<SpanEvent>,
    status: Status,
    status_message: Option<String>,
}

impl OtelSpan {
    fn to_json(&self) -> Value {
        let mut span = json!({
            "traceId": format!("{:032x}", self.trace_id),
            "spanId": format!("{:016x}", self.span_id),
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": self.start_ns.to_string(),
            "endTimeUnixNano": self.end_ns.to_string(),
            "attributes": attributes_json(&self.attributes),
            "status": { "code": self.status as u8 },
        });
        if self.parent_id != 0 {
            span["parentSpanId"] = json!(format!("{:016x}", self.parent_id));
        }
        if let Some(message) = &self.status_message {
            span["status"]["message"] = json!(message);
        }
        if !self.events.is_empty() {
            span["events"] = Value::Array(
                self.events
                    .iter()
                    .map(|event| {
                        json!({
                            "timeUnixNano": event.time_ns.to_string(),
                            "name": event.name,
                            "attributes": attributes_json(&event.attributes),
                        })
                    })
                    .collect(),
            );
        }
        span
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn parse_kind(text: &str) -> Option<u8> {
    Some(match text {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => return None,
    })
}

/// What a span's fields say: the steering fields, then the attributes.
#[derive(Default)]
struct Fields {
    trace_id: Option<u128>,
    parent_id: Option<u64>,
    span_id: Option<u64>,
    sampled: Option<bool>,
    kind: Option<u8>,
    name: Option<String>,
    status: Option<Status>,
    status_message: Option<String>,
    message: Option<String>,
    attributes: Vec<(Cow<'static, str>, Attr)>,
}

impl Fields {
    fn steer(&mut self, field: &Field, text: &str) -> bool {
        match field.name() {
            "trace_id" => self.trace_id = u128::from_str_radix(text, 16).ok().filter(|v| *v != 0),
            "parent_span_id" => {
                self.parent_id = u64::from_str_radix(text, 16).ok().filter(|v| *v != 0)
            }
            "span_id" => self.span_id = u64::from_str_radix(text, 16).ok().filter(|v| *v != 0),
            "otel.kind" => self.kind = parse_kind(text),
            "otel.name" => self.name = Some(text.to_owned()),
            "otel.status_code" => {
                self.status = match text {
                    "ok" | "OK" => Some(Status::Ok),
                    "error" | "ERROR" => Some(Status::Error),
                    _ => None,
                }
            }
            "otel.status_message" => self.status_message = Some(text.to_owned()),
            "message" => self.message = Some(text.to_owned()),
            _ => return false,
        }
        true
    }

    fn push(&mut self, field: &Field, value: Attr) {
        self.attributes.push((Cow::Borrowed(field.name()), value));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if !self.steer(field, &text) {
            self.push(field, Attr::Str(text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.steer(field, value) {
            self.push(field, Attr::Str(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Attr::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Attr::Int(i64::try_from(value).unwrap_or(i64::MAX)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Attr::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "sampled" {
            self.sampled = Some(value);
        } else {
            self.push(field, Attr::Bool(value));
        }
    }
}

/// The `tracing` layer: spans from our crates at debug and above, warnings and errors as
/// span events. Install it with [`OtlpLayer::filter`].
pub struct OtlpLayer {
    queue: mpsc::Sender<OtelSpan>,
}

impl OtlpLayer {
    /// The layer and the exporter that sends what it records. Sampling follows `settings`
    /// from here on.
    pub fn new(settings: OtlpSettings) -> (OtlpLayer, OtlpExporter) {
        let _ = RATIO.set(settings.sample_ratio.clamp(0.0, 1.0));
        let (queue, spans) = mpsc::channel(settings.queue_spans.max(1));
        (OtlpLayer { queue }, OtlpExporter { settings, spans })
    }

    /// What the layer needs to see: our spans at debug and above (attempts and upstream calls
    /// included whatever the console's level), and warnings and errors from anywhere.
    pub fn wants(metadata: &Metadata<'_>) -> bool {
        if metadata.is_span() {
            metadata.target().starts_with("atalaya") && *metadata.level() <= Level::DEBUG
        } else {
            *metadata.level() <= Level::WARN
        }
    }
}

/// The span's OTLP record when its trace is exported.
fn sampled<'a>(
    extensions: &'a mut tracing_subscriber::registry::ExtensionsMut<'_>,
) -> Option<&'a mut OtelSpan> {
    extensions.get_mut::<OtelSpan>().filter(|otel| otel.sampled)
}

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let parent = span.parent().and_then(|parent| {
            parent
                .extensions()
                .get::<OtelSpan>()
                .map(|p| (p.trace_id, p.span_id, p.sampled))
        });
        let (trace_id, parent_id, sampled) = match parent {
            Some((trace_id, span_id, sampled)) => (trace_id, span_id, sampled),
            None => {
                let trace_id = fields
                    .trace_id
                    .unwrap_or_else(|| rand::rng().random::<u128>().max(1));
                let sampled = fields.sampled.unwrap_or_else(|| samples(trace_id));
                (trace_id, fields.parent_id.unwrap_or(0), sampled)
            }
        };
        let otel = OtelSpan {
            trace_id,
            span_id: fields.span_id.unwrap_or_else(|| SpanId::random().0),
            parent_id,
            sampled,
            name: fields
                .name
                .map(Cow::Owned)
                .unwrap_or(Cow::Borrowed(attrs.metadata().name())),
            kind: fields.kind.unwrap_or(1),
            start_ns: now_ns(),
            end_ns: 0,
            attributes: if sampled {
                fields.attributes
            } else {
                Vec::new()
            },
            events: Vec::new(),
            status: fields.status.unwrap_or(Status::Unset),
            status_message: fields.status_message,
        };
        span.extensions_mut().insert(otel);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(otel) = sampled(&mut extensions) else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(status) = fields.status {
            otel.status = status;
        }
        if let Some(message) = fields.status_message {
            otel.status_message = Some(message);
        }
        if let Some(kind) = fields.kind {
            otel.kind = kind;
        }
        if let Some(name) = fields.name {
            otel.name = Cow::Owned(name);
        }
        for (key, value) in fields.attributes {
            match otel.attributes.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => otel.attributes.push((key, value)),
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(otel) = sampled(&mut extensions) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name = fields
            .message
            .unwrap_or_else(|| event.metadata().name().to_owned());
        if level == Level::ERROR && otel.status != Status::Error {
            otel.status = Status::Error;
            otel.status_message = Some(name.clone());
        }
        if otel.events.len() < MAX_EVENTS {
            let mut attributes = fields.attributes;
            attributes.push((Cow::Borrowed("level"), Attr::Str(level.as_str().to_owned())));
            otel.events.push(SpanEvent {
                time_ns: now_ns(),
                name,
                attributes,
            });
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(mut otel) = span.extensions_mut().remove::<OtelSpan>() else {
            return;
        };
        if !otel.sampled {
            return;
        }
        otel.end_ns = now_ns().max(otel.start_ns);
        if self.queue.try_send(otel).is_err() {
            metrics::counter!(names::OTLP_SPANS_DROPPED, "reason" => "queue_full").increment(1);
        }
    }
}

/// Sends finished spans in batches. Run it on the runtime with [`OtlpExporter::run`].
pub struct OtlpExporter {
    settings: OtlpSettings,
    spans: mpsc::Receiver<OtelSpan>,
}

/// Attempts per batch before it is dropped (the collector down for longer loses spans, not
/// memory).
const ATTEMPTS: u32 = 3;

impl OtlpExporter {
    /// Exports until `stop` completes, then sends what is queued and returns.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let client = match reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "OTLP export cannot start: building its HTTP client failed.");
                return;
            }
        };
        let mut batch: Vec<OtelSpan> = Vec::with_capacity(self.settings.batch_spans);
        let mut failing = false;
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                received = self.spans.recv() => match received {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() < self.settings.batch_spans {
                            continue;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {}
            }
            if !batch.is_empty() {
                failing = self.send(&client, &mut batch, failing).await;
            }
        }
        while let Ok(span) = self.spans.try_recv() {
            batch.push(span);
            if batch.len() >= self.settings.batch_spans {
                failing = self.send(&client, &mut batch, failing).await;
            }
        }
        if !batch.is_empty() {
            self.send(&client, &mut batch, failing).await;
        }
    }

    /// Sends and empties `batch`; returns whether export is failing now, logging only when
    /// that changes so a dead collector does not flood the logs.
    async fn send(
        &self,
        client: &reqwest::Client,
        batch: &mut Vec<OtelSpan>,
        failing: bool,
    ) -> bool {
        let body = encode(&self.settings, batch);
        let body = atalaya_security::mask::global()
            .masker()
            .mask_bytes(&body)
            .into_owned();
        let count = batch.len() as u64;
        batch.clear();
        let mut outcome = Err(String::new());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut request = client
                .post(&self.settings.endpoint)
                .header("content-type", "application/json")
                .body(body.clone());
            for (name, value) in &self.settings.headers {
                request = request.header(name, value);
            }
            outcome = match request.send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let retry = status.as_u16() == 429 || status.is_server_error();
                    let reason = format!("the collector answered {status}");
                    if !retry {
                        outcome = Err(reason);
                        break;
                    }
                    Err(reason)
                }
                Err(error) => Err(crate::error_chain(&error)),
            };
            if outcome.is_ok() {
                break;
            }
        }
        match outcome {
            Ok(()) => {
                metrics::counter!(names::OTLP_SPANS_EXPORTED).increment(count);
                if failing {
                    tracing::info!(endpoint = %self.settings.endpoint, "OTLP export recovered.");
                }
                false
            }
            Err(reason) => {
                metrics::counter!(names::OTLP_SPANS_DROPPED, "reason" => "export_failed")
                    .increment(count);
                if !failing {
                    tracing::warn!(
                        endpoint = %self.settings.endpoint,
                        spans = count,
                        %reason,
                        "OTLP export failing; spans are dropped until the collector answers."
                    );
                }
                true
            }
        }
    }
}

/// An `ExportTraceServiceRequest` in the OTLP JSON encoding.
fn encode(settings: &OtlpSettings, spans: &[OtelSpan]) -> Vec<u8> {
    let resource = vec![
        (
            Cow::Borrowed("service.name"),
            Attr::Str(settings.service_name.clone()),
        ),
        (
            Cow::Borrowed("service.version"),
            Attr::Str(env!("CARGO_PKG_VERSION").to_owned()),
        ),
        (
            Cow::Borrowed("process.pid"),
            Attr::Int(i64::from(std::process::id())),
        ),
        (
            Cow::Borrowed("telemetry.sdk.name"),
            Attr::Str("atalaya".to_owned()),
        ),
        (
            Cow::Borrowed("telemetry.sdk.language"),
            Attr::Str("rust".to_owned()),
        ),
    ];
    let request = json!({
        "resourceSpans": [{
            "resource": { "attributes": attributes_json(&resource) },
            "scopeSpans": [{
                "scope": { "name": "atalaya", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(OtelSpan::to_json).collect::<Vec<_>>(),
            }],
        }],
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

#[cfg(test)]
mod tests;
