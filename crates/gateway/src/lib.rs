//! The gateway: the OpenAI- and Anthropic-compatible data plane (`/v1/*`), atalaya's own
//! API (`/api/v1/*`), health and metrics endpoints, provider adapters, the model catalog and
//! the streaming relay.
//!
//! It owns request validation, routing a model name to a provider, talking to upstreams,
//! pricing requests and relaying answers back in the caller's format. How each wire format
//! is read and written lives in `atalaya-translate`. It does not own storage
//! (`atalaya-store`), key material (`atalaya-security`) or metric names
//! (`atalaya-telemetry`), and it never reads config files or the environment: the binary
//! hands it a validated `GatewayConfig`.

mod admin;
pub mod alerts;
mod analytics;
mod audit;
mod auth;
mod budgets;
pub mod catalog;
mod chat;
mod compare;
pub mod config;
mod dispatch;
mod error;
mod errors;
pub mod events;
mod guardrails;
mod header_names;
pub mod health;
mod http_client;
mod inbound;
mod limits;
mod messages;
mod openai;
pub mod presets;
mod providers;
mod relay;
pub mod reload;
mod routing;
mod trace;
mod ui;
mod usage;
mod v1;

use std::sync::Arc;
use std::time::Duration;

use atalaya_store::{LogText, LogWriter, RequestLogRow, Store, now_ms};
use atalaya_telemetry::names;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::time::Instant;

pub use atalaya_translate::Usage;
pub use audit::{Actor, Auditor, link as audit_link};
pub use auth::{KeyCache, Permission, Principal, Role};
pub use budgets::{Budget, Budgets, Period, TeamBudget};
pub use config::{
    AwsSettings, DeploymentSettings, GatewayConfig, ModelSettings, ProviderKind, ProviderSettings,
    RouteRule, RoutingSettings, SimSettings, Strategy, Timeouts,
};
pub use error::ApiError;
pub use events::Events;
pub use guardrails::{Action as GuardAction, GuardRule};
pub use limits::{Limits, LocalRates, RateStore, TeamLimits};
pub use providers::{ProviderError, SIM_CHAT_MODEL, SIM_EMBED_MODEL, SIM_PROVIDER};
pub use routing::{Routing, RoutingError};

use error::ErrorNote;
use providers::Providers;

/// Everything a request handler needs. Built once at start.
pub struct Gateway {
    store: Store,
    log_writer: LogWriter,
    keys: Arc<KeyCache>,
    auditor: Arc<Auditor>,
    /// Shared by every worker: rate-limit buckets.
    limits: Arc<Limits>,
    /// Shared by every worker: spend per key and team.
    budgets: Arc<Budgets>,
    /// Shared by every worker: models, deployments and their health.
    routing: Arc<Routing>,
    /// Shared by every worker: the live event feed.
    events: Events,
    /// Where failed requests are reported for error tracking.
    reporter: Option<atalaya_telemetry::Reporter>,
    /// Shared by every worker: alert rules over requests, breakers, budgets and errors.
    alerts: Option<Arc<alerts::Alerts>>,
    /// Shared by every worker: health score, level and feature switches.
    health: Arc<health::HealthMonitor>,
    /// Where `POST /api/v1/config/reload` asks for a reload; `None` where nothing can reload.
    reloads: Option<reload::Reloads>,
    /// This worker's HTTP clients.
    providers: Providers,
    metrics: PrometheusHandle,
    max_body_bytes: usize,
    max_header_bytes: usize,
    cors_origins: Vec<String>,
    guardrails: Vec<GuardRule>,
    /// `request_log.enabled`.
    log_requests: bool,
    /// Looked up on every request: hashed with foldhash, not std's SipHash.
    handles: std::sync::Mutex<std::collections::HashMap<HandleKey, Arc<Handles>, FastHash>>,
    /// Spend metric handles per (key id, team).
    spend_handles: std::sync::Mutex<SpendCache>,
}

/// A configured provider, for `atalaya serve`'s start-up log and the providers API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderSummary {
    pub name: String,
    /// The preset or type it was built from (`openai`, `groq`, `openai-compatible`, `sim`).
    #[serde(rename = "type")]
    pub preset: String,
    /// Why it is on: the config file, or which environment variables.
    pub source: String,
    /// Model names it serves under their own name.
    pub models: Vec<String>,
    /// API keys: how many are configured and how many the provider has not refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeySummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeySummary {
    pub total: usize,
    pub enabled: usize,
}

/// What every worker's gateway shares: built once by the server.
#[derive(Clone)]
pub struct Shared {
    /// Models, deployments and their health (`Routing::new`).
    pub routing: Arc<Routing>,
    pub store: Store,
    pub log_writer: LogWriter,
    pub keys: Arc<KeyCache>,
    pub auditor: Arc<Auditor>,
    pub limits: Arc<Limits>,
    pub budgets: Arc<Budgets>,
    pub metrics: PrometheusHandle,
    pub events: Events,
    /// Error tracking; `None` leaves failed requests to the request log alone.
    pub reporter: Option<atalaya_telemetry::Reporter>,
    pub alerts: Option<Arc<alerts::Alerts>>,
    /// The platform's health score, level and feature switches.
    pub health: Arc<health::HealthMonitor>,
    /// The configuration owner's reload channel (`None`: the API says reload is unavailable).
    pub reloads: Option<reload::Reloads>,
}

impl Gateway {
    /// One worker's gateway: its own HTTP clients over the shared state.
    pub fn new(config: &GatewayConfig, shared: &Shared) -> Result<Arc<Self>, ProviderError> {
        let shared = shared.clone();
        Ok(Arc::new(Gateway {
            providers: Providers::new(config, &shared.routing)?,
            store: shared.store,
            log_writer: shared.log_writer,
            keys: shared.keys,
            auditor: shared.auditor,
            limits: shared.limits,
            budgets: shared.budgets,
            routing: shared.routing,
            events: shared.events,
            reporter: shared.reporter,
            alerts: shared.alerts,
            health: shared.health,
            reloads: shared.reloads,
            metrics: shared.metrics,
            max_body_bytes: config.max_body_bytes,
            max_header_bytes: config.max_header_bytes,
            cors_origins: config.cors_origins.clone(),
            guardrails: config.guardrails.clone(),
            log_requests: config.log_requests,
            handles: std::sync::Mutex::default(),
            spend_handles: std::sync::Mutex::default(),
        }))
    }

    /// Probes every configured deployment whose breaker waits half-open, so one that no
    /// traffic reaches (a priority backup, a model nobody asks for now) still closes when its
    /// provider is back, and the health score sees it. A probe takes the breaker's half-open
    /// permit like a request would; a deployment a request is probing already is skipped.
    /// Returns how many were probed.
    pub async fn probe_waiting_deployments(&self, limit: Duration) -> usize {
        let waiting = self.routing.waiting_deployments();
        let mut probed = 0;
        for deployment in waiting {
            let Some(provider) = self.providers.get(&deployment.provider) else {
                continue;
            };
            let providers::Adapter::Upstream(upstream) = &provider.adapter else {
                continue;
            };
            let Ok(permit) = deployment.health.breaker.acquire() else {
                continue;
            };
            if !permit.is_probe() {
                // Closed meanwhile: nothing to find out.
                continue;
            }
            probed += 1;
            let outcome = upstream.probe(limit).await;
            let label = if outcome.is_ok() { "up" } else { "down" };
            metrics::counter!(
                atalaya_telemetry::names::PROVIDER_PROBES,
                "deployment" => deployment.id.to_string(),
                "outcome" => label
            )
            .increment(1);
            match outcome {
                Ok(()) => {
                    tracing::info!(deployment = %deployment.id, "Probe answered; the deployment is back.");
                    permit.success();
                }
                Err(failure) => {
                    tracing::info!(deployment = %deployment.id, reason = ?failure, "Probe failed; the breaker stays open.");
                    permit.failure();
                }
            }
        }
        probed
    }

    /// Configured providers in configuration order.
    pub fn providers(&self) -> Vec<ProviderSummary> {
        self.providers
            .all()
            .map(|provider| ProviderSummary {
                name: provider.name.to_string(),
                preset: provider.preset.clone(),
                source: provider.source.clone(),
                models: self
                    .routing
                    .listed
                    .iter()
                    .filter(|listed| listed.owned_by == provider.name)
                    .map(|listed| listed.id.clone())
                    .collect(),
                keys: self
                    .routing
                    .key_status(&provider.name)
                    .filter(|(_, total)| *total > 0)
                    .map(|(enabled, total)| KeySummary { total, enabled }),
            })
            .collect()
    }

    /// The 403 for a caller whose role lacks `permission`, recorded in the audit log.
    /// `request` is `(method and path, source IP)`, taken before any await.
    async fn deny(
        &self,
        principal: &Principal,
        request: (String, String),
        permission: auth::Permission,
    ) -> ApiError {
        let (target, source_ip) = request;
        let actor = Actor {
            name: principal.name(),
            source_ip,
        };
        // Boxed: rare, and the audit write's future would otherwise be carried by every
        // request's middleware future.
        Box::pin(self.auditor.record(
            &actor,
            "auth.denied",
            &target,
            serde_json::json!({"needs": permission.as_str(), "role": principal.role().as_str()}),
        ))
        .await;
        auth::denied(principal, permission)
    }

    /// A budget threshold was crossed: a warning, a metric and an audit entry.
    fn budget_alert(&self, crossing: budgets::Crossing) {
        let scope_kind = if crossing.scope.starts_with("team:") {
            "team"
        } else {
            "key"
        };
        metrics::counter!(names::BUDGET_ALERTS, "scope" => scope_kind, "limit" => crossing.which)
            .increment(1);
        tracing::warn!(
            scope = %crossing.scope,
            limit = crossing.which,
            spent_usd = crossing.spent,
            limit_usd = crossing.limit,
            "Budget {} limit reached.",
            crossing.which
        );
        self.events.publish("budget", &crossing);
        if let Some(alerts) = &self.alerts {
            alerts.signal(alerts::Signal::Budget {
                scope: crossing.scope.clone(),
                which: crossing.which,
                spent: crossing.spent,
                limit: crossing.limit,
            });
        }
        let auditor = self.auditor.clone();
        tokio::spawn(async move {
            let actor = Actor {
                name: "server".into(),
                source_ip: String::new(),
            };
            let action = if crossing.which == "soft" {
                "budget.soft_limit"
            } else {
                "budget.exceeded"
            };
            auditor
                .record(
                    &actor,
                    action,
                    &crossing.scope,
                    serde_json::json!({"spent_usd": crossing.spent, "limit_usd": crossing.limit}),
                )
                .await;
        });
    }

    /// Records a failed authentication in the audit log (rate-limited there).
    fn audit_auth_failure(&self, extensions: &axum::http::Extensions, error: &ApiError) {
        self.auditor
            .auth_failure(audit::source_ip(extensions), error.code);
    }

    /// Metrics and the request-log row for one finished data-plane request.
    fn record(&self, context: &RequestContext, status: u16, exchange: Exchange) {
        let total = context.started.elapsed();
        if let Some(reservation) = &exchange.reservation {
            let used = exchange
                .usage
                .map_or(0, |u| u.prompt_tokens + u.completion_tokens);
            self.limits.settle(reservation, used);
        }
        let cost = match (&exchange.info, &exchange.usage) {
            (Some(info), Some(usage)) => info.cost(usage),
            _ => None,
        };
        if let (Some(key), Some(cost)) = (&exchange.key, cost) {
            for crossing in self.budgets.charge(key, cost) {
                self.budget_alert(crossing);
            }
        }
        let status_label = status_label(status);
        // Only configured names become labels (see `Route::label`).
        let provider = exchange.provider.as_deref().unwrap_or("");
        let endpoint = context.endpoint;
        let handles = self.handles(endpoint, &exchange, status_label);
        handles.requests.increment(1);
        handles.duration.record(total.as_secs_f64());
        if let Some(routed) = &handles.routed {
            routed
                .overhead
                .record(total.saturating_sub(exchange.upstream_time).as_secs_f64());
            if let (Some(ttft), true) = (exchange.ttft, exchange.stream) {
                routed.ttft.record(ttft.as_secs_f64());
            }
            if let Some(usage) = exchange.usage {
                routed.prompt_tokens.increment(usage.prompt_tokens);
                routed.completion_tokens.increment(usage.completion_tokens);
            }
            if let Some(cost) = cost {
                routed.cost.increment(cost);
            }
            if let Some(key) = &exchange.key
                && (exchange.usage.is_some() || cost.is_some())
            {
                let spend = self.spend_handles(key);
                if let Some(usage) = exchange.usage {
                    spend.prompt_tokens.increment(usage.prompt_tokens);
                    spend.completion_tokens.increment(usage.completion_tokens);
                }
                if let Some(cost) = cost {
                    spend.cost.increment(cost);
                }
            }
        }
        if let Some(class) = exchange
            .upstream_error_class
            .filter(|class| *class != "client")
        {
            metrics::counter!(names::UPSTREAM_ERRORS, "provider" => provider.to_owned(), "class" => class).increment(1);
        }
        if let (Some(alerts), Some(deployment)) = (&self.alerts, &exchange.deployment) {
            alerts.observe(deployment, status, total.as_secs_f64() * 1e3);
        }
        if let Some(reporter) = &self.reporter
            && let Some(report) = errors::request_failure(context, status, &exchange)
        {
            reporter.report(report);
        }
        // The row is built only for someone who reads it.
        let watched = self.events.active();
        if self.log_requests || watched {
            let row = RequestLogRow {
                seq: 0,
                request_id: context.id.clone().into(),
                created_at_ms: context.started_at_ms,
                key_id: exchange.key_id,
                team: exchange
                    .key
                    .as_ref()
                    .and_then(|key| key.team.clone())
                    .map(LogText::from),
                endpoint: endpoint.into(),
                model: exchange.model,
                provider: exchange.provider.clone().map(LogText::from),
                upstream_model: exchange.upstream_model.clone().map(LogText::from),
                stream: exchange.stream,
                status: i64::from(status),
                latency_ms: total.as_secs_f64() * 1e3,
                ttft_ms: exchange.ttft.map(|t| t.as_secs_f64() * 1e3),
                prompt_tokens: exchange.usage.map(|u| u.prompt_tokens as i64),
                completion_tokens: exchange.usage.map(|u| u.completion_tokens as i64),
                cached_tokens: exchange
                    .usage
                    .filter(|u| u.cached_tokens > 0)
                    .map(|u| u.cached_tokens as i64),
                usage_estimated: exchange.usage.is_some_and(|u| u.estimated),
                cost_usd: cost,
                deployment: exchange.deployment.clone().map(LogText::from),
                attempts: i64::from(exchange.attempts),
                retries: i64::from(exchange.retries),
                fallback_path: exchange.fallback_path,
                error: exchange
                    .error
                    .map(|error| match atalaya_security::mask::mask(&error) {
                        std::borrow::Cow::Borrowed(_) => error,
                        std::borrow::Cow::Owned(masked) => masked,
                    }),
            };
            if watched {
                self.events.publish("request", &row);
            }
            if self.log_requests {
                self.log_writer.submit(row);
            }
        }
    }
}

/// Registered metric handles for one label combination. Looking a metric up by name and
/// labels allocates and hashes the labels; under load that was several lookups per request.
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    /// Only for requests routed to a provider.
    routed: Option<RoutedHandles>,
}

/// Spend handles by key id, with the team they were made for.
type SpendCache = std::collections::HashMap<String, (Option<String>, Arc<SpendHandles>), FastHash>;

/// The hasher for maps looked up per request: foldhash, seeded per process, a fraction of
/// SipHash's cost on short keys (counted with callgrind).
pub(crate) type FastHash = foldhash::fast::RandomState;

struct SpendHandles {
    prompt_tokens: metrics::Counter,
    completion_tokens: metrics::Counter,
    cost: metrics::Gauge,
}

struct RoutedHandles {
    overhead: metrics::Histogram,
    ttft: metrics::Histogram,
    prompt_tokens: metrics::Counter,
    completion_tokens: metrics::Counter,
    cost: metrics::Gauge,
}

/// endpoint, model label, provider, status label — all bounded sets.
type HandleKey = (
    &'static str,
    Option<Arc<str>>,
    Option<Arc<str>>,
    &'static str,
);

impl Gateway {
    /// Tokens and cost per virtual key (labelled with its team); bounded by the keys that
    /// exist, which only admins create.
    fn spend_handles(&self, key: &atalaya_store::KeyRecord) -> Arc<SpendHandles> {
        // Looked up by borrowed id: no allocation per request. A key whose team changed
        // gets new handles.
        if let Some(handles) = self.spend_handles.lock().ok().and_then(|cache| {
            cache
                .get(key.id.0.as_str())
                .filter(|(team, _)| *team == key.team)
                .map(|(_, handles)| handles.clone())
        }) {
            return handles;
        }
        let (id, team) = (key.id.0.clone(), key.team.clone().unwrap_or_default());
        let handles = Arc::new(SpendHandles {
            prompt_tokens: metrics::counter!(names::KEY_TOKENS, "key" => id.clone(), "team" => team.clone(), "kind" => "prompt"),
            completion_tokens: metrics::counter!(names::KEY_TOKENS, "key" => id.clone(), "team" => team.clone(), "kind" => "completion"),
            cost: metrics::gauge!(names::KEY_COST, "key" => id.clone(), "team" => team),
        });
        if let Ok(mut cache) = self.spend_handles.lock() {
            cache.insert(id, (key.team.clone(), handles.clone()));
        }
        handles
    }

    fn handles(
        &self,
        endpoint: &'static str,
        exchange: &Exchange,
        status: &'static str,
    ) -> Arc<Handles> {
        // Cloning the labels' `Arc`s costs no allocation; `String` keys cost two a request.
        let key: HandleKey = (
            endpoint,
            exchange.model_label.clone(),
            exchange.provider.clone(),
            status,
        );
        let model = exchange.model_label.as_deref().unwrap_or("");
        let provider = exchange.provider.as_deref().unwrap_or("");
        // Each HTTP worker has its own `Gateway`, so this lock is not contended.
        if let Some(handles) = self
            .handles
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).cloned())
        {
            return handles;
        }
        let routed = (!provider.is_empty()).then(|| RoutedHandles {
            overhead: metrics::histogram!(names::OVERHEAD_DURATION, "endpoint" => endpoint),
            ttft: metrics::histogram!(names::TIME_TO_FIRST_TOKEN, "provider" => provider.to_owned()),
            prompt_tokens: metrics::counter!(names::TOKENS, "provider" => provider.to_owned(), "model" => model.to_owned(), "kind" => "prompt"),
            completion_tokens: metrics::counter!(names::TOKENS, "provider" => provider.to_owned(), "model" => model.to_owned(), "kind" => "completion"),
            cost: metrics::gauge!(names::COST, "provider" => provider.to_owned(), "model" => model.to_owned()),
        });
        let handles = Arc::new(Handles {
            requests: metrics::counter!(names::REQUESTS, "endpoint" => endpoint, "model" => model.to_owned(), "provider" => provider.to_owned(), "status" => status),
            duration: metrics::histogram!(names::REQUEST_DURATION, "endpoint" => endpoint, "provider" => provider.to_owned()),
            routed,
        });
        if let Ok(mut cache) = self.handles.lock() {
            cache.insert(key, handles.clone());
        }
        handles
    }
}

/// Common statuses keep their number; the rest fold into classes, keeping the label bounded.
#[allow(clippy::match_overlapping_arm)]
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The API format a client speaks, which decides how errors and answers are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientFormat {
    OpenAi,
    Anthropic,
}

/// Per-request facts set by the outermost middleware.
#[derive(Debug, Clone)]
pub(crate) struct RequestContext {
    pub id: Arc<str>,
    pub started: Instant,
    pub started_at_ms: i64,
    /// A bounded label naming the endpoint.
    pub endpoint: &'static str,
    pub format: ClientFormat,
    /// The W3C trace this request belongs to.
    pub trace: trace::Trace,
}

/// What a handler learned about a data-plane request, for its log row and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exchange {
    pub key_id: Option<String>,
    /// The models the caller's key may use; `None`: any.
    pub allowed_models: Option<Arc<[String]>>,
    /// The caller's key (its limits and team); `None` for the admin key.
    pub key: Option<Arc<atalaya_store::KeyRecord>>,
    /// Tokens reserved against rate limits, settled when the request is recorded.
    pub reservation: Option<limits::Reservation>,
    pub model: Option<String>,
    /// The bounded metric label for `model`.
    pub model_label: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<Arc<str>>,
    pub stream: bool,
    pub upstream_time: Duration,
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    /// The catalog entry of the upstream model, which prices the usage.
    pub info: Option<Arc<catalog::ModelInfo>>,
    /// `provider/model` of the deployment that served (or last failed).
    pub deployment: Option<Arc<str>>,
    /// Upstream calls made, and how many of them were retries.
    pub attempts: u32,
    pub retries: u32,
    /// Models tried in order when fallbacks were used (`smart>cheap`).
    pub fallback_path: Option<String>,
    pub error: Option<String>,
    /// The error's code and where it was made, for error tracking.
    pub error_source: Option<(&'static str, &'static std::panic::Location<'static>)>,
    pub upstream_error_class: Option<&'static str>,
}

impl Exchange {
    /// A new exchange for this caller.
    pub(crate) fn for_caller(principal: &Principal) -> Exchange {
        Exchange {
            key_id: principal.key_id(),
            allowed_models: principal.allowed_models(),
            key: match principal {
                Principal::Key(record) => Some(record.clone()),
                Principal::Admin => None,
            },
            ..Exchange::default()
        }
    }
}

/// Marks a response whose request is recorded later, by the stream relay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deferred;

/// The whole HTTP surface.
pub fn router(gateway: Arc<Gateway>) -> Router {
    // The data plane's routes do the request context's work in their own layer (one boxed
    // future a request instead of two), so they join the rest after its layer is applied.
    let data_plane = Router::new()
        .route("/v1/chat/completions", post(v1::chat_completions))
        .route("/v1/embeddings", post(v1::embeddings))
        .route("/v1/models", get(v1::list_models))
        .route("/v1/models/{*id}", get(v1::get_model))
        .route("/v1/messages", post(messages::create))
        .layer(DefaultBodyLimit::max(gateway.max_body_bytes))
        .layer(middleware::from_fn_with_state(gateway.clone(), data_plane));
    // A feature the health level can switch off answers 503 at once while it is off.
    let gated = |router: Router<Arc<Gateway>>, feature: &'static str| {
        router.layer(middleware::from_fn_with_state(
            (gateway.clone(), feature),
            feature_gate,
        ))
    };
    let guarded = |router: Router<Arc<Gateway>>, permission: auth::Permission| {
        router.layer(middleware::from_fn_with_state(
            (gateway.clone(), permission),
            auth::require,
        ))
    };
    let manage_keys = guarded(
        Router::new()
            .route("/api/v1/keys", post(admin::create_key))
            .route(
                "/api/v1/keys/{id}",
                delete(admin::revoke_key).patch(admin::update_key),
            ),
        auth::Permission::ManageKeys,
    );
    let read = guarded(
        Router::new()
            .route("/api/v1/keys", get(admin::list_keys))
            .route("/api/v1/keys/{id}", get(admin::get_key))
            .route("/api/v1/logs", get(admin::list_logs))
            .route("/api/v1/providers", get(admin::list_providers))
            .route("/api/v1/models", get(admin::list_models))
            .merge(gated(
                Router::new()
                    .route("/api/v1/analytics/summary", get(analytics::summary))
                    .route("/api/v1/analytics/timeseries", get(analytics::timeseries))
                    .route("/api/v1/analytics/breakdown", get(analytics::breakdown)),
                "analytics",
            ))
            .merge(gated(
                Router::new().route("/api/v1/events", get(events::feed)),
                "live_feed",
            ))
            .route("/api/v1/health", get(health_report))
            .route("/api/v1/errors", get(errors::list))
            .route("/api/v1/errors/stats", get(errors::stats))
            .route("/api/v1/errors/{fingerprint}", get(errors::show))
            .route("/api/v1/server-logs", get(errors::server_logs))
            .route("/api/v1/alerts", get(admin::list_alerts))
            .route("/api/v1/config/reload", get(reload::last)),
        auth::Permission::Read,
    );
    let audit = guarded(
        Router::new().route("/api/v1/audit", get(admin::list_audit)),
        auth::Permission::ReadAudit,
    );
    let operate = guarded(
        Router::new()
            .route(
                "/api/v1/errors/{fingerprint}/resolve",
                post(errors::resolve),
            )
            .route("/api/v1/errors/{fingerprint}/reopen", post(errors::reopen))
            .route("/api/v1/config/reload", post(reload::reload)),
        auth::Permission::Operate,
    );
    let call = guarded(
        gated(
            Router::new().route("/api/v1/compare", post(compare::compare)),
            "compare",
        ),
        auth::Permission::CallModels,
    );
    let router = Router::new()
        .merge(manage_keys)
        .merge(read)
        .merge(audit)
        .merge(operate)
        .merge(call)
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::app))
        .route("/ui/style.css", get(ui::style))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/api/v1/metrics", get(render_metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(gateway.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            gateway.max_header_bytes,
            request_context,
        ))
        .merge(data_plane);
    // Outermost, so browsers' preflight requests are answered before authentication.
    let router = match cors(&gateway.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(gateway)
}

/// The HTTP surface as a worker serves it: [`router`], with the data plane's two busiest
/// requests (`POST /v1/chat/completions` and `POST /v1/messages`) taken past it. Those go
/// straight to what the router would have run for them (the `data_plane` layer and the
/// handler) without its routing, boxed layer futures and request extensions: measured with
/// `bench/gateway/instructions.sh`. With CORS on they take the router, whose outermost layer
/// CORS is.
#[derive(Clone)]
pub struct App {
    router: Router,
    gateway: Arc<Gateway>,
    fast: bool,
}

/// What [`App::call`] returns.
pub type AppFuture = futures_util::future::Either<
    axum::routing::future::RouteFuture<std::convert::Infallible>,
    std::pin::Pin<Box<dyn Future<Output = Result<Response, std::convert::Infallible>> + Send>>,
>;

#[derive(Clone, Copy)]
enum FastRoute {
    Chat,
    Messages,
}

impl App {
    pub fn new(gateway: Arc<Gateway>) -> App {
        App {
            router: router(gateway.clone()),
            fast: gateway.cors_origins.is_empty(),
            gateway,
        }
    }

    /// Answers `request`; `peer` is the client's address, which the audit log records.
    pub fn call(&self, mut request: Request, peer: Option<std::net::SocketAddr>) -> AppFuture {
        use futures_util::future::Either;
        if self.fast && request.method() == axum::http::Method::POST {
            let route = match request.uri().path() {
                "/v1/chat/completions" => Some(FastRoute::Chat),
                "/v1/messages" => Some(FastRoute::Messages),
                _ => None,
            };
            if let Some(route) = route {
                return Either::Right(Box::pin(serve_fast(
                    self.gateway.clone(),
                    route,
                    request,
                    peer,
                )));
            }
        }
        with_peer(&mut request, peer);
        Either::Left(tower_service::Service::call(
            &mut self.router.clone(),
            request,
        ))
    }
}

async fn serve_fast(
    gateway: Arc<Gateway>,
    route: FastRoute,
    request: Request,
    peer: Option<std::net::SocketAddr>,
) -> Result<Response, std::convert::Infallible> {
    use axum::Extension;
    let handling = gateway.clone();
    let response = serve_data_plane(
        gateway,
        request,
        peer,
        |request, context, principal| async move {
            let owned = inbound::Owned::read(request, handling.max_body_bytes).await;
            match route {
                FastRoute::Chat => {
                    v1::chat_completions(
                        State(handling),
                        Extension(context),
                        Extension(principal),
                        owned,
                    )
                    .await
                }
                FastRoute::Messages => {
                    messages::create(
                        State(handling),
                        Extension(context),
                        Extension(principal),
                        owned,
                    )
                    .await
                }
            }
        },
    )
    .await;
    Ok(response)
}

/// The CORS layer for these origins; `None` (CORS off) when there are none.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::Method;
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    let exposed = [
        "x-request-id",
        "x-atalaya-deployment",
        "x-atalaya-attempts",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "retry-after",
    ]
    .map(header::HeaderName::from_static);
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(exposed)
            .max_age(Duration::from_secs(600)),
    )
}

fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat_completions",
        "/v1/embeddings" => "embeddings",
        "/v1/messages" => "messages",
        "/v1/models" => "models",
        p if p.starts_with("/v1/models/") => "models",
        p if p.starts_with("/v1/") => "other",
        p if p.starts_with("/api/") => "api",
        _ => "other",
    }
}

/// A clean client-supplied id is kept (so callers can correlate); anything else is replaced.
fn request_id(request: &Request) -> Arc<str> {
    request
        .headers()
        .get(header_names::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .unwrap_or_else(|| {
            let mut id = [0u8; uuid::fmt::Simple::LENGTH];
            let mut text = String::with_capacity(4 + id.len());
            text.push_str("req_");
            text.push_str(uuid::Uuid::now_v7().simple().encode_lower(&mut id));
            Arc::from(text)
        })
}

/// Outermost layer (see [`Context`]) for every route but the data plane's, which does the
/// same in [`data_plane`].
async fn request_context(
    State(max_header_bytes): State<usize>,
    mut request: Request,
    next: Next,
) -> Response {
    match Context::begin(&request, max_header_bytes) {
        Ok((context, request_context)) => {
            request.extensions_mut().insert(request_context);
            let span = context.span.clone();
            let response = tracing::Instrument::instrument(next.run(request), span).await;
            context.finish(response)
        }
        Err(refused) => *refused,
    }
}

/// What every request gets first: a request id in (the client's if clean) and
/// `x-request-id` out on every response, a span that every log line while it is handled
/// carries, and a 431 for headers larger than `max_header_bytes` together.
struct Context {
    span: tracing::Span,
    header_value: Option<HeaderValue>,
    exported: bool,
}

impl Context {
    /// The request's [`RequestContext`] and what `finish` needs; `Err` is the refusal
    /// (boxed: rare, and large next to a `Context`).
    fn begin(
        request: &Request,
        max_header_bytes: usize,
    ) -> Result<(Context, RequestContext), Box<Response>> {
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > max_header_bytes {
            return Err(Box::new(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_headers_too_large",
                format!(
                    "The request's headers take {header_bytes} bytes, more than the {max_header_bytes}-byte limit (server.max_header_bytes)."
                ),
            )
            .into_response()));
        }
        let context = RequestContext {
            id: request_id(request),
            started: Instant::now(),
            started_at_ms: now_ms(),
            endpoint: endpoint_label(request.uri().path()),
            format: if request.uri().path().starts_with("/v1/messages") {
                ClientFormat::Anthropic
            } else {
                ClientFormat::OpenAi
            },
            trace: trace::Trace::from_headers(request.headers()),
        };
        let header_value = HeaderValue::from_str(&context.id).ok();
        // Every log line while the request is handled carries its id and trace id. When
        // spans are exported, the span also carries what the export needs: the caller's
        // span, the sampling decision, the kind, and the status once the answer is known.
        let exported = atalaya_telemetry::otlp::enabled();
        let span = if exported {
            let parent = context.trace.parent.map(|p| p.to_string());
            tracing::info_span!(
                "request",
                request_id = %context.id,
                trace_id = %context.trace.id,
                method = %request.method(),
                path = request.uri().path(),
                parent_span_id = parent,
                sampled = context.trace.sampled(),
                otel.kind = "server",
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            )
        } else {
            tracing::info_span!(
                "request",
                request_id = %context.id,
                trace_id = %context.trace.id,
                method = %request.method(),
                path = request.uri().path(),
            )
        };
        Ok((
            Context {
                span,
                header_value,
                exported,
            },
            context,
        ))
    }

    fn finish(self, mut response: Response) -> Response {
        if self.exported {
            let span = self.span;
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
            // The span ends when the body does, so a stream's span covers the whole stream.
            response = response.map(|body| {
                axum::body::Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                    let _ = &span;
                    frame
                }))
            });
        }
        if let Some(value) = self.header_value {
            response
                .headers_mut()
                .insert(header_names::X_REQUEST_ID, value);
        }
        response
    }
}

/// The data plane's one layer: the request context (as [`request_context`] does for the
/// other routes), authentication, and a record of every request that a stream relay does
/// not record itself. One layer rather than three: each `from_fn` layer costs a boxed
/// future and a service clone per request.
async fn data_plane(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    serve_data_plane(gateway, request, None, |mut request, context, principal| {
        request.extensions_mut().insert(context);
        request.extensions_mut().insert(principal);
        next.run(request)
    })
    .await
}

/// What the `data_plane` layer does around `handler`, which gets the request, its context
/// and the authenticated caller. `peer` is the client's address when the request's
/// extensions do not carry it (the fast path leaves it out until an audit entry needs it).
async fn serve_data_plane<H, F>(
    gateway: Arc<Gateway>,
    request: Request,
    peer: Option<std::net::SocketAddr>,
    handler: H,
) -> Response
where
    H: FnOnce(Request, RequestContext, Principal) -> F,
    F: Future<Output = Response>,
{
    let (context, request_context) = match Context::begin(&request, gateway.max_header_bytes) {
        Ok(begun) => begun,
        Err(refused) => return *refused,
    };
    let span = context.span.clone();
    // The span covers what follows once the request context exists: authentication, the
    // handler and recording the request.
    let authorized = async move {
        let context = request_context;
        let mut request = request;
        let format = context.format;
        // If the client goes away before the answer, hyper drops this future: the guard still
        // records the request.
        let mut guard = AbandonGuard {
            gateway: gateway.clone(),
            context: Some(context.clone()),
        };
        let mut response = match auth::authenticate(request.headers(), &gateway.keys).await {
            Ok(principal) if principal.role().allows(auth::Permission::CallModels) => {
                handler(request, context, principal).await
            }
            Ok(principal) => {
                with_peer(&mut request, peer);
                gateway
                    .deny(
                        &principal,
                        audit::denied_request(&request),
                        auth::Permission::CallModels,
                    )
                    .await
                    .into_response_for(format)
            }
            Err(error) => {
                with_peer(&mut request, peer);
                gateway.audit_auth_failure(request.extensions(), &error);
                error.into_response_for(format)
            }
        };
        let Some(context) = guard.context.take() else {
            return response;
        };
        if response.extensions().get::<Deferred>().is_some() {
            return response;
        }
        // Taken, not cloned: nothing reads it once the request is recorded.
        let mut exchange = response
            .extensions_mut()
            .remove::<Exchange>()
            .unwrap_or_default();
        if exchange.error.is_none()
            && let Some(note) = response.extensions().get::<ErrorNote>()
        {
            exchange.error = Some(note.text.clone());
            exchange.error_source = Some((note.code, note.location));
        }
        gateway.record(&context, response.status().as_u16(), exchange);
        response
    };
    let response = tracing::Instrument::instrument(authorized, span).await;
    context.finish(response)
}

/// Puts the client's address where the audit log reads it.
fn with_peer(request: &mut Request, peer: Option<std::net::SocketAddr>) {
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
    }
}

struct AbandonGuard {
    gateway: Arc<Gateway>,
    context: Option<RequestContext>,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            let exchange = Exchange {
                error: Some("The client disconnected before the answer was sent.".to_owned()),
                upstream_error_class: Some("client"),
                ..Exchange::default()
            };
            self.gateway
                .record(&context, relay::CLIENT_CLOSED, exchange);
        }
    }
}

async fn live() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn feature_gate(
    State((gateway, feature)): State<(Arc<Gateway>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    match gateway.health.require(feature) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn health_report(State(gateway): State<Arc<Gateway>>) -> Response {
    axum::Json(gateway.health.report()).into_response()
}

/// Ready when storage accepts a write within two seconds and the health level is above
/// EMERGENCY.
async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let level = gateway.health.level();
    if level == health::Level::Emergency {
        return not_ready(&format!(
            "health level EMERGENCY (score {:.0}); see GET /api/v1/health",
            gateway.health.score()
        ));
    }
    match tokio::time::timeout(Duration::from_secs(2), gateway.store.check_writable()).await {
        Ok(Ok(())) => {
            axum::Json(serde_json::json!({"status": "ready", "level": level})).into_response()
        }
        Ok(Err(error)) => not_ready(&providers::error_chain(&error)),
        Err(_) => not_ready("storage did not accept a write within 2 s"),
    }
}

fn not_ready(reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "unavailable", "reason": reason})),
    )
        .into_response()
}

async fn render_metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    atalaya_telemetry::process::record();
    metrics::gauge!(names::LOG_ROWS_PENDING).set(gateway.log_writer.pending() as f64);
    if let Some(reporter) = &gateway.reporter {
        metrics::gauge!(names::ERROR_REPORTS_PENDING).set(reporter.pending() as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        gateway.metrics.render(),
    )
        .into_response()
}

async fn not_found(request: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "No route for {} {}. See the README for the endpoints atalaya serves.",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}
