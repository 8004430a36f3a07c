//! Alerts: rules over what the gateway sees — error rate and p95 latency per deployment and
//! overall, circuit breakers opening, budget thresholds, critical errors, and anomalies in
//! latency (rolling median/MAD) and error rate (EWMA) per deployment — sent to webhooks,
//! Slack-format webhooks and email over SMTP.
//!
//! Requests are counted on their way out (a short lock, a bucket increment); everything else
//! happens in one evaluation task. A rule over a window fires once when its condition starts
//! and once more when it clears; one-off signals (a budget crossed, a critical error) repeat
//! at most once per de-duplication window. Each channel takes at most `max_per_hour`
//! notifications. Every alert is recorded (`GET /api/v1/alerts`) and put on the live feed.

mod detect;
mod notify;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atalaya_store::{AlertRow, Store};
use atalaya_telemetry::names;
use secrecy::SecretString;
use serde::Serialize;

use crate::events::Events;
pub use detect::{EwmaDetector, MadDetector};

/// How loud an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    Info,
    Warning,
    Critical,
}

impl AlertSeverity {
    pub fn parse(text: &str) -> Option<AlertSeverity> {
        match text {
            "info" => Some(AlertSeverity::Info),
            "warning" => Some(AlertSeverity::Warning),
            "critical" => Some(AlertSeverity::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Warning => "warning",
            AlertSeverity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Share of requests answered with status 500 or above.
    ErrorRate {
        threshold: f64,
        window: Duration,
        min_requests: u64,
    },
    P95Latency {
        threshold_ms: f64,
        window: Duration,
        min_requests: u64,
    },
    CircuitOpen,
    Budget,
    CriticalError,
    /// The platform's health level below OPTIMAL.
    HealthLevel,
    /// `sensitivity`: how many deviations from normal count as an anomaly.
    Anomaly {
        sensitivity: f64,
        min_requests: u64,
    },
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::ErrorRate { .. } => "error_rate",
            RuleKind::P95Latency { .. } => "p95_latency",
            RuleKind::CircuitOpen => "circuit_open",
            RuleKind::Budget => "budget",
            RuleKind::CriticalError => "critical_error",
            RuleKind::HealthLevel => "health_level",
            RuleKind::Anomaly { .. } => "anomaly",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub kind: RuleKind,
    pub severity: AlertSeverity,
    /// Channel names; `None`: every channel.
    pub channels: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum ChannelKind {
    /// JSON `{"source", "alert": {...}}` to any URL.
    Webhook {
        url: String,
        headers: Vec<(String, SecretString)>,
    },
    /// Slack's incoming-webhook shape (`text` and `attachments`).
    Slack { url: String },
    /// Plain SMTP to a relay (no TLS, no authentication: use a local relay).
    Email {
        host: String,
        port: u16,
        from: String,
        to: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct AlertChannel {
    pub name: String,
    pub kind: ChannelKind,
    /// Alerts below this severity are not sent here.
    pub min_severity: AlertSeverity,
}

#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub evaluate_interval: Duration,
    /// One-off alerts (budget, critical error) repeat at most once per this window.
    pub dedupe: Duration,
    /// Most notifications per channel per hour.
    pub max_per_hour: u32,
    pub rules: Vec<AlertRule>,
    pub channels: Vec<AlertChannel>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            evaluate_interval: Duration::from_secs(10),
            dedupe: Duration::from_secs(15 * 60),
            max_per_hour: 30,
            rules: AlertSettings::default_rules(),
            channels: Vec::new(),
        }
    }
}

impl AlertSettings {
    /// The rules used when the config names none.
    pub fn default_rules() -> Vec<AlertRule> {
        let rule = |name: &str, kind, severity| AlertRule {
            name: name.to_owned(),
            kind,
            severity,
            channels: None,
        };
        vec![
            rule(
                "error-rate",
                RuleKind::ErrorRate {
                    threshold: 0.25,
                    window: Duration::from_secs(300),
                    min_requests: 20,
                },
                AlertSeverity::Critical,
            ),
            rule(
                "slow-p95",
                RuleKind::P95Latency {
                    threshold_ms: 30_000.0,
                    window: Duration::from_secs(300),
                    min_requests: 20,
                },
                AlertSeverity::Warning,
            ),
            rule(
                "circuit-open",
                RuleKind::CircuitOpen,
                AlertSeverity::Warning,
            ),
            rule("budget", RuleKind::Budget, AlertSeverity::Warning),
            rule(
                "critical-error",
                RuleKind::CriticalError,
                AlertSeverity::Critical,
            ),
            rule(
                "health-level",
                RuleKind::HealthLevel,
                AlertSeverity::Warning,
            ),
            rule(
                "anomaly",
                RuleKind::Anomaly {
                    sensitivity: 6.0,
                    min_requests: 10,
                },
                AlertSeverity::Warning,
            ),
        ]
    }
}

/// Windows longer than this are refused in the config: request buckets are kept this long.
pub const MAX_WINDOW: Duration = Duration::from_secs(3_600);

/// Latency histogram for windows: 64 buckets growing by 25 % from 1 ms.
#[derive(Debug, Clone)]
struct Second {
    at: i64,
    requests: u32,
    errors: u32,
    latency_sum_ms: f64,
    latency: [u32; 64],
}

impl Second {
    fn new(at: i64) -> Second {
        Second {
            at,
            requests: 0,
            errors: 0,
            latency_sum_ms: 0.0,
            latency: [0; 64],
        }
    }
}

fn latency_bucket(ms: f64) -> usize {
    if ms <= 1.0 || ms.is_nan() {
        return 0;
    }
    (ms.ln() / 1.25f64.ln()).ceil().clamp(0.0, 63.0) as usize
}

fn bucket_upper_ms(bucket: usize) -> f64 {
    1.25f64.powi(bucket as i32)
}

/// Totals of a deployment's requests over a span of seconds.
#[derive(Debug, Clone, Default)]
struct Span {
    requests: u64,
    errors: u64,
    latency_sum_ms: f64,
    latency: Vec<u64>,
}

impl Span {
    fn add(&mut self, second: &Second) {
        self.requests += u64::from(second.requests);
        self.errors += u64::from(second.errors);
        self.latency_sum_ms += second.latency_sum_ms;
        if self.latency.is_empty() {
            self.latency = vec![0; 64];
        }
        for (total, count) in self.latency.iter_mut().zip(second.latency) {
            *total += u64::from(count);
        }
    }

    fn merge(&mut self, other: &Span) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency_sum_ms += other.latency_sum_ms;
        if self.latency.is_empty() {
            self.latency = vec![0; 64];
        }
        for (total, count) in self.latency.iter_mut().zip(&other.latency) {
            *total += count;
        }
    }

    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The upper bound of the bucket holding the 95th percentile.
    fn p95_ms(&self) -> f64 {
        let rank = ((self.requests as f64) * 0.95).ceil() as u64;
        let mut seen = 0;
        for (bucket, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank.max(1) {
                return bucket_upper_ms(bucket);
            }
        }
        0.0
    }

    fn mean_ms(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.latency_sum_ms / self.requests as f64
        }
    }
}

/// Something that happened once and may deserve an alert.
#[derive(Debug, Clone)]
pub enum Signal {
    Breaker {
        breaker: String,
        to: &'static str,
        reason: String,
    },
    Budget {
        scope: String,
        which: &'static str,
        spent: f64,
        limit: f64,
    },
    CriticalError {
        fingerprint: String,
        component: String,
        message: String,
        count: u64,
    },
    HealthLevel {
        from: &'static str,
        to: &'static str,
        score: f64,
        disabled: Vec<String>,
    },
}

/// An alert to record and send.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub rule: String,
    pub kind: &'static str,
    pub severity: AlertSeverity,
    pub subject: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    pub summary: String,
    pub details: serde_json::Value,
    pub time_ms: i64,
}

/// Evaluation state: what is firing, the detectors, what was sent when.
/// Seconds of per-deployment history `settings`' rules look back over.
fn keep_secs(settings: &AlertSettings) -> i64 {
    settings
        .rules
        .iter()
        .map(|rule| match &rule.kind {
            RuleKind::ErrorRate { window, .. } | RuleKind::P95Latency { window, .. } => {
                window.as_secs() as i64
            }
            _ => settings.evaluate_interval.as_secs() as i64 + 1,
        })
        .max()
        .unwrap_or(60)
        .max(settings.evaluate_interval.as_secs() as i64 + 1)
}

#[derive(Default)]
struct State {
    /// (rule, subject) → normal evaluations in a row since it fired (for anomalies).
    firing: HashMap<(String, String), u32>,
    /// (rule, subject) → when a one-off alert was last sent.
    last_sent: HashMap<(String, String), i64>,
    latency: HashMap<Arc<str>, MadDetector>,
    errors: HashMap<Arc<str>, EwmaDetector>,
    /// Channel → times of notifications in the last hour.
    sent: HashMap<String, VecDeque<i64>>,
    /// Seconds already fed to the anomaly detectors.
    detected_up_to: i64,
}

pub struct Alerts {
    /// Replaced by a configuration reload (`replace_settings`).
    settings: std::sync::RwLock<Arc<AlertSettings>>,
    windows: Mutex<HashMap<Arc<str>, VecDeque<Second>>>,
    signals: Mutex<Vec<Signal>>,
    state: tokio::sync::Mutex<State>,
    store: Store,
    events: Events,
    notifier: notify::Notifier,
    /// Seconds of per-deployment history the rules need.
    keep_secs: std::sync::atomic::AtomicI64,
}

impl Alerts {
    pub fn new(settings: AlertSettings, store: Store, events: Events) -> Arc<Alerts> {
        let keep_secs = keep_secs(&settings);
        Arc::new(Alerts {
            notifier: notify::Notifier::new(),
            settings: std::sync::RwLock::new(Arc::new(settings)),
            windows: Mutex::default(),
            signals: Mutex::default(),
            state: tokio::sync::Mutex::default(),
            store,
            events,
            keep_secs: std::sync::atomic::AtomicI64::new(keep_secs),
        })
    }

    fn settings(&self) -> Arc<AlertSettings> {
        match self.settings.read() {
            Ok(settings) => settings.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rules, channels and limits from a reloaded configuration, used from the next
    /// evaluation on; the evaluation interval stays until a restart. Alerts of rules that are
    /// gone are forgotten (nothing will resolve them).
    pub async fn replace_settings(&self, settings: AlertSettings) {
        self.keep_secs
            .store(keep_secs(&settings), std::sync::atomic::Ordering::Relaxed);
        let names: std::collections::HashSet<String> = settings
            .rules
            .iter()
            .map(|rule| rule.name.clone())
            .collect();
        {
            let mut state = self.state.lock().await;
            state.firing.retain(|(rule, _), _| names.contains(rule));
            state.last_sent.retain(|(rule, _), _| names.contains(rule));
        }
        match self.settings.write() {
            Ok(mut current) => *current = Arc::new(settings),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(settings),
        }
    }

    /// Counts a finished request against its deployment.
    pub fn observe(&self, deployment: &Arc<str>, status: u16, latency_ms: f64) {
        let now = atalaya_store::now_ms() / 1_000;
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        let window = match windows.get_mut(deployment) {
            Some(window) => window,
            None => windows.entry(deployment.clone()).or_default(),
        };
        if window.back().is_none_or(|second| second.at != now) {
            window.push_back(Second::new(now));
            let keep = self.keep_secs.load(std::sync::atomic::Ordering::Relaxed);
            while window.front().is_some_and(|s| s.at <= now - keep) {
                window.pop_front();
            }
        }
        if let Some(second) = window.back_mut() {
            second.requests += 1;
            second.errors += u32::from(status >= 500);
            second.latency_sum_ms += latency_ms;
            second.latency[latency_bucket(latency_ms)] += 1;
        }
    }

    pub fn signal(&self, signal: Signal) {
        if let Ok(mut signals) = self.signals.lock() {
            signals.push(signal);
        }
    }

    /// Runs the rules every `evaluate_interval` until the returned handle is aborted or the
    /// runtime stops.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let alerts = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(alerts.settings().evaluate_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                alerts.evaluate(atalaya_store::now_ms()).await;
            }
        })
    }

    /// One evaluation: the window rules, the detectors and the pending signals.
    pub async fn evaluate(&self, now_ms: i64) {
        let notices = self.conditions(now_ms).await;
        for notice in notices {
            self.deliver(notice, now_ms).await;
        }
    }

    /// Totals per deployment over the last `secs` seconds before `now` (exclusive of the
    /// current, incomplete second when `complete` is set).
    fn spans(&self, now: i64, secs: i64, complete: bool) -> Vec<(Arc<str>, Span)> {
        let Ok(windows) = self.windows.lock() else {
            return Vec::new();
        };
        let end = if complete { now } else { now + 1 };
        windows
            .iter()
            .map(|(deployment, seconds)| {
                let mut span = Span::default();
                for second in seconds.iter().filter(|s| s.at >= end - secs && s.at < end) {
                    span.add(second);
                }
                (deployment.clone(), span)
            })
            .filter(|(_, span)| span.requests > 0)
            .collect()
    }

    async fn conditions(&self, now_ms: i64) -> Vec<Notice> {
        let now = now_ms / 1_000;
        let mut state = self.state.lock().await;
        let mut notices = Vec::new();
        let settings = self.settings();
        for rule in &settings.rules {
            match &rule.kind {
                RuleKind::ErrorRate {
                    threshold,
                    window,
                    min_requests,
                }
                | RuleKind::P95Latency {
                    threshold_ms: threshold,
                    window,
                    min_requests,
                } => {
                    let latency = matches!(rule.kind, RuleKind::P95Latency { .. });
                    let spans = self.spans(now, window.as_secs() as i64, false);
                    let mut all = Span::default();
                    for (_, span) in &spans {
                        all.merge(span);
                    }
                    let mut subjects: Vec<(String, Span)> = spans
                        .into_iter()
                        .map(|(deployment, span)| (deployment.to_string(), span))
                        .collect();
                    if subjects.len() > 1 {
                        subjects.push(("all deployments".to_owned(), all));
                    }
                    let mut seen = Vec::new();
                    for (subject, span) in subjects {
                        let value = if latency {
                            span.p95_ms()
                        } else {
                            span.error_rate()
                        };
                        let bad = span.requests >= *min_requests && value >= *threshold;
                        seen.push(subject.clone());
                        let summary = if latency {
                            format!(
                                "{subject}: p95 latency {value:.0} ms over {} s (threshold {threshold:.0} ms, {} requests)",
                                window.as_secs(),
                                span.requests
                            )
                        } else {
                            format!(
                                "{subject}: error rate {:.0} % ({} of {}) over {} s (threshold {:.0} %)",
                                value * 100.0,
                                span.errors,
                                span.requests,
                                window.as_secs(),
                                threshold * 100.0
                            )
                        };
                        let details = serde_json::json!({
                            "value": value,
                            "threshold": threshold,
                            "requests": span.requests,
                            "errors": span.errors,
                            "window_s": window.as_secs(),
                        });
                        notices.extend(transition(
                            &mut state, rule, &subject, bad, 0, summary, details, now_ms,
                        ));
                    }
                    // Subjects with no traffic left in the window are no longer failing.
                    let stale: Vec<String> = state
                        .firing
                        .keys()
                        .filter(|(name, subject)| *name == rule.name && !seen.contains(subject))
                        .map(|(_, subject)| subject.clone())
                        .collect();
                    for subject in stale {
                        notices.extend(transition(
                            &mut state,
                            rule,
                            &subject,
                            false,
                            0,
                            format!("{subject}: no traffic in the window"),
                            serde_json::json!({}),
                            now_ms,
                        ));
                    }
                }
                RuleKind::Anomaly {
                    sensitivity,
                    min_requests,
                } => {
                    // Each complete interval since the last look is one sample per deployment.
                    let interval = settings.evaluate_interval.as_secs().max(1) as i64;
                    if state.detected_up_to == 0 {
                        state.detected_up_to = now;
                        continue;
                    }
                    let secs = (now - state.detected_up_to).max(0);
                    if secs < interval {
                        continue;
                    }
                    state.detected_up_to = now;
                    for (deployment, span) in self.spans(now, secs, true) {
                        if span.requests < *min_requests {
                            continue;
                        }
                        let mean = span.mean_ms();
                        let rate = span.error_rate();
                        let latency_baseline = state
                            .latency
                            .entry(deployment.clone())
                            .or_insert_with(|| MadDetector::new(60, 12))
                            .observe(mean, *sensitivity);
                        let error_baseline = state
                            .errors
                            .entry(deployment.clone())
                            .or_insert_with(|| EwmaDetector::new(0.1, 12))
                            .observe(rate, *sensitivity);
                        for (what, value, baseline) in [
                            ("latency", mean, latency_baseline),
                            ("error_rate", rate, error_baseline),
                        ] {
                            let subject = format!("{deployment} {what}");
                            let summary = match baseline {
                                Some(normal) => format!(
                                    "{deployment}: {what} {value:.3} is far from its normal {normal:.3}"
                                ),
                                None => {
                                    format!("{deployment}: {what} {value:.3} is back to normal")
                                }
                            };
                            let details = serde_json::json!({
                                "metric": what,
                                "value": value,
                                "normal": baseline,
                                "requests": span.requests,
                            });
                            notices.extend(transition(
                                &mut state,
                                rule,
                                &subject,
                                baseline.is_some(),
                                2,
                                summary,
                                details,
                                now_ms,
                            ));
                        }
                    }
                }
                RuleKind::CircuitOpen
                | RuleKind::Budget
                | RuleKind::CriticalError
                | RuleKind::HealthLevel => {}
            }
        }
        let signals = self
            .signals
            .lock()
            .map(|mut signals| std::mem::take(&mut *signals))
            .unwrap_or_default();
        for signal in signals {
            for rule in &settings.rules {
                match (&rule.kind, &signal) {
                    (
                        RuleKind::CircuitOpen,
                        Signal::Breaker {
                            breaker,
                            to,
                            reason,
                        },
                    ) => {
                        let open = *to == "open";
                        // Half-open is neither: the probe's outcome decides.
                        if *to == "half_open" {
                            continue;
                        }
                        let summary = if open {
                            format!("{breaker}: circuit opened ({reason})")
                        } else {
                            format!("{breaker}: circuit closed ({reason})")
                        };
                        let details =
                            serde_json::json!({"breaker": breaker, "to": to, "reason": reason});
                        notices.extend(transition(
                            &mut state, rule, breaker, open, 0, summary, details, now_ms,
                        ));
                    }
                    (
                        RuleKind::Budget,
                        Signal::Budget {
                            scope,
                            which,
                            spent,
                            limit,
                        },
                    ) => {
                        let subject = format!("{scope} {which}");
                        let summary = format!(
                            "{scope}: {which} budget limit reached (${spent:.4} of ${limit:.4})"
                        );
                        let details = serde_json::json!({"scope": scope, "limit": which, "spent_usd": spent, "limit_usd": limit});
                        notices
                            .extend(self.once(&mut state, rule, subject, summary, details, now_ms));
                    }
                    (
                        RuleKind::HealthLevel,
                        Signal::HealthLevel {
                            from,
                            to,
                            score,
                            disabled,
                        },
                    ) => {
                        let firing = *to != "OPTIMAL";
                        let summary = if firing {
                            let off = if disabled.is_empty() {
                                String::new()
                            } else {
                                format!("; switched off: {}", disabled.join(", "))
                            };
                            format!("health level {to} (was {from}, score {score:.0}){off}")
                        } else {
                            format!("health level back to {to} (score {score:.0})")
                        };
                        let details = serde_json::json!({"from": from, "to": to, "score": score, "disabled": disabled});
                        notices.extend(transition(
                            &mut state, rule, "platform", firing, 0, summary, details, now_ms,
                        ));
                    }
                    (
                        RuleKind::CriticalError,
                        Signal::CriticalError {
                            fingerprint,
                            component,
                            message,
                            count,
                        },
                    ) => {
                        let summary = format!("{component}: {message}");
                        let details = serde_json::json!({"fingerprint": fingerprint, "component": component, "count": count});
                        notices.extend(self.once(
                            &mut state,
                            rule,
                            fingerprint.clone(),
                            summary,
                            details,
                            now_ms,
                        ));
                    }
                    _ => {}
                }
            }
        }
        notices
    }

    /// A one-off alert, unless the same one went out within the de-duplication window.
    fn once(
        &self,
        state: &mut State,
        rule: &AlertRule,
        subject: String,
        summary: String,
        details: serde_json::Value,
        now_ms: i64,
    ) -> Option<Notice> {
        let key = (rule.name.clone(), subject.clone());
        let window = self.settings().dedupe.as_millis() as i64;
        if state
            .last_sent
            .get(&key)
            .is_some_and(|last| now_ms - last < window)
        {
            metrics::counter!(names::ALERTS_SUPPRESSED, "reason" => "duplicate").increment(1);
            return None;
        }
        state.last_sent.insert(key, now_ms);
        Some(Notice {
            rule: rule.name.clone(),
            kind: rule.kind.name(),
            severity: rule.severity,
            subject,
            state: "firing",
            summary,
            details,
            time_ms: now_ms,
        })
    }

    /// Records the alert, puts it on the feed and sends it to its channels, within their
    /// hourly limits.
    async fn deliver(&self, notice: Notice, now_ms: i64) {
        metrics::counter!(names::ALERTS, "rule" => notice.rule.clone(), "severity" => notice.severity.as_str(), "state" => notice.state).increment(1);
        let settings = self.settings();
        let rule = settings.rules.iter().find(|r| r.name == notice.rule);
        let mut told = Vec::new();
        let mut limited = false;
        {
            let mut state = self.state.lock().await;
            for channel in &settings.channels {
                let wanted = rule
                    .and_then(|r| r.channels.as_ref())
                    .is_none_or(|names| names.contains(&channel.name));
                if !wanted || notice.severity < channel.min_severity {
                    continue;
                }
                let sent = state.sent.entry(channel.name.clone()).or_default();
                while sent.front().is_some_and(|at| now_ms - at >= 3_600_000) {
                    sent.pop_front();
                }
                if sent.len() >= settings.max_per_hour as usize {
                    limited = true;
                    metrics::counter!(names::ALERTS_SUPPRESSED, "reason" => "rate_limited")
                        .increment(1);
                    continue;
                }
                sent.push_back(now_ms);
                told.push(channel.clone());
            }
        }
        let names: Vec<&str> = told.iter().map(|c| c.name.as_str()).collect();
        let suppressed = (told.is_empty() && limited).then(|| "rate_limited".to_owned());
        let row = AlertRow {
            seq: 0,
            time_ms: notice.time_ms,
            rule: notice.rule.clone(),
            kind: notice.kind.to_owned(),
            severity: notice.severity.as_str().to_owned(),
            subject: notice.subject.clone(),
            state: notice.state.to_owned(),
            summary: notice.summary.clone(),
            details: notice.details.to_string(),
            channels: serde_json::to_string(&names).unwrap_or_default(),
            suppressed,
        };
        if let Err(error) = self.store.insert_alert(&row).await {
            tracing::warn!(error = %crate::providers::error_chain(&error), rule = %notice.rule, "Recording an alert failed.");
        }
        self.events.publish("alert", &row);
        let log = |notice: &Notice| {
            tracing::warn!(rule = %notice.rule, severity = notice.severity.as_str(), state = notice.state, subject = %notice.subject, "Alert: {}", notice.summary);
        };
        log(&notice);
        for channel in told {
            self.notifier.send(channel, notice.clone());
        }
    }
}

/// Fires a rule for a subject when `bad` starts, resolves it when `bad` has been false for
/// more than `calm` evaluations in a row.
#[allow(clippy::too_many_arguments)]
fn transition(
    state: &mut State,
    rule: &AlertRule,
    subject: &str,
    bad: bool,
    calm: u32,
    summary: String,
    details: serde_json::Value,
    now_ms: i64,
) -> Option<Notice> {
    let key = (rule.name.clone(), subject.to_owned());
    let notice = |state: &'static str| Notice {
        rule: rule.name.clone(),
        kind: rule.kind.name(),
        severity: rule.severity,
        subject: subject.to_owned(),
        state,
        summary: summary.clone(),
        details: details.clone(),
        time_ms: now_ms,
    };
    match (state.firing.get_mut(&key), bad) {
        (None, true) => {
            state.firing.insert(key, 0);
            Some(notice("firing"))
        }
        (Some(normal), true) => {
            *normal = 0;
            None
        }
        (Some(normal), false) if *normal >= calm => {
            state.firing.remove(&key);
            Some(notice("resolved"))
        }
        (Some(normal), false) => {
            *normal += 1;
            None
        }
        (None, false) => None,
    }
}

#[cfg(test)]
mod tests;
