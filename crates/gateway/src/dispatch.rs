//! One data-plane request from routing to answer: routing rules, the model's deployments in
//! the strategy's order, circuit breakers, retries with backoff inside a retry budget,
//! fallback models, timeouts — and, for each attempt, the right path to the provider (the
//! simulator, a pass-through, or translation).
//!
//! While at least one deployment can serve a request, the client sees an answer. An attempt
//! is retried (on the next deployment) only when that is safe: the provider could not be
//! reached, timed out, was rate limited, overloaded, failed with a 5xx, refused the key, or a
//! stream broke before its first byte reached the client.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atalaya_resilience::Permit;
use atalaya_telemetry::names;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::time::Instant;

use crate::chat::{self, Leg, Limits, SimAnswer, json};
use crate::config::{ProviderKind, Timeouts};
use crate::error::ApiError;
use crate::openai::{ChatRequest, EmbeddingRequest};
use crate::providers::{Adapter, Route};
use crate::relay::{Transcoder, sse_response};
use crate::routing::{Facts, Health, Unfit};
use crate::{Exchange, Gateway, RequestContext, header_names};

/// The request as the client sent it, in its format.
pub(crate) enum Inbound<'a> {
    OpenAiChat {
        body: &'a Bytes,
        request: &'a ChatRequest<'a>,
    },
    AnthropicChat {
        body: &'a Bytes,
        request: &'a atalaya_translate::ChatRequest,
    },
    Embeddings {
        body: &'a Bytes,
        request: &'a EmbeddingRequest<'a>,
    },
}

impl Inbound<'_> {
    fn body(&self) -> &Bytes {
        match self {
            Inbound::OpenAiChat { body, .. }
            | Inbound::AnthropicChat { body, .. }
            | Inbound::Embeddings { body, .. } => body,
        }
    }

    fn facts(&self) -> Facts {
        let body = self.body();
        // A quarter of the bytes: close enough to tell a prompt that cannot fit.
        let prompt_tokens = body.len() as u64 / 4;
        static IMAGE_URL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"image_url\""));
        match self {
            Inbound::OpenAiChat { request, .. } => Facts {
                prompt_tokens,
                max_tokens: request.max_tokens(),
                tools: request.has("tools") || request.has("functions"),
                vision: IMAGE_URL.find(body).is_some(),
            },
            Inbound::AnthropicChat { request, .. } => Facts {
                prompt_tokens,
                max_tokens: request.max_tokens,
                tools: !request.tools.is_empty(),
                vision: request.messages.iter().any(|m| m.has_images()),
            },
            Inbound::Embeddings { .. } => Facts {
                prompt_tokens,
                ..Facts::default()
            },
        }
    }

    /// String entries of the request's `metadata` object, for routing rules.
    fn metadata(&self) -> Vec<(String, String)> {
        #[derive(serde::Deserialize)]
        struct WithMetadata {
            #[serde(default)]
            metadata: Option<serde_json::Map<String, serde_json::Value>>,
        }
        let Ok(WithMetadata {
            metadata: Some(metadata),
        }) = serde_json::from_slice::<WithMetadata>(self.body())
        else {
            return Vec::new();
        };
        metadata
            .into_iter()
            .filter_map(|(key, value)| Some((key, value.as_str()?.to_owned())))
            .collect()
    }

    fn is_stream(&self) -> bool {
        match self {
            Inbound::OpenAiChat { request, .. } => request.stream,
            Inbound::AnthropicChat { request, .. } => request.stream,
            Inbound::Embeddings { .. } => false,
        }
    }
}

/// A deployment's share of one attempt: its breaker permit, its in-flight count, the clock
/// for its latency. A stream carries it to the end; a client that leaves drops it, which
/// counts for nothing.
pub(crate) struct Lease {
    permit: Option<Permit>,
    health: Arc<Health>,
    started: Instant,
}

impl Lease {
    fn new(permit: Permit, health: Arc<Health>) -> Lease {
        health
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Lease {
            permit: Some(permit),
            health,
            started: Instant::now(),
        }
    }

    /// The deployment answered; `latency` is to its first byte for streams.
    pub fn succeed(mut self, latency: Option<Duration>) {
        self.health
            .observe(latency.unwrap_or_else(|| self.started.elapsed()), true);
        if let Some(permit) = self.permit.take() {
            permit.success();
        }
    }

    pub fn fail(mut self) {
        self.health.observe(self.started.elapsed(), false);
        if let Some(permit) = self.permit.take() {
            permit.failure();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.health
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether an attempt's failure may be retried elsewhere, and counts against the deployment.
fn retryable(error: &ApiError) -> bool {
    matches!(
        error.code,
        "upstream_unreachable"
            | "upstream_timeout"
            | "upstream_error"
            | "upstream_overloaded"
            | "upstream_rate_limited"
            | "upstream_auth_failed"
            | "upstream_bad_response"
            | "upstream_stream_error"
    )
}

/// `Retry-After` as a duration, when it is a number of seconds.
fn retry_after_of(error: &ApiError) -> Option<Duration> {
    let seconds: f64 = error
        .retry_after
        .as_ref()?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(seconds.max(0.0)))
}

/// `x-atalaya-max-attempts` lowers (never raises) the configured number of attempts, for
/// clients that retry on their own.
fn max_attempts(headers: &HeaderMap, configured: u32) -> u32 {
    headers
        .get(header_names::X_ATALAYA_MAX_ATTEMPTS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(configured, |asked| asked.min(configured))
        .max(1)
}

/// `x-atalaya-timeout-ms` (total), `x-atalaya-ttfb-timeout-ms` and
/// `x-atalaya-idle-timeout-ms` (between stream chunks) override a model's limits.
fn header_timeouts(headers: &HeaderMap, mut timeouts: Timeouts) -> Timeouts {
    let millis = |name: HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    };
    if let Some(total) = millis(header_names::X_ATALAYA_TIMEOUT_MS) {
        timeouts.total = Some(total);
    }
    if let Some(ttfb) = millis(header_names::X_ATALAYA_TTFB_TIMEOUT_MS) {
        timeouts.ttfb = Some(ttfb);
    }
    if let Some(idle) = millis(header_names::X_ATALAYA_IDLE_TIMEOUT_MS) {
        timeouts.idle = Some(idle);
    }
    timeouts
}

/// Output tokens reserved against a token limit when the request sets no `max_tokens`; the
/// real count is settled afterwards.
const DEFAULT_OUTPUT_ESTIMATE: u32 = 256;

/// Routes `requested` and answers, failing over as needed.
pub(crate) async fn serve(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    exchange: &mut Exchange,
    headers: &HeaderMap,
    requested: &str,
    inbound: &Inbound<'_>,
) -> Result<Response, ApiError> {
    let routing = &gateway.routing;
    let settings = &routing.settings;
    exchange.model = Some(requested.to_owned());
    if let Some(allowed) = &exchange.allowed_models
        && !allowed.iter().any(|model| model == requested)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "model_not_allowed",
            format!(
                "This key may not use the model `{requested}`; it may use: {}.",
                allowed.join(", ")
            ),
        )
        .with_param("model"));
    }
    exchange.stream = inbound.is_stream();
    // Reading `metadata` scans the whole body: only when a rule asks for it.
    let metadata = if settings.rules.iter().any(|rule| !rule.metadata.is_empty()) {
        inbound.metadata()
    } else {
        Vec::new()
    };
    let target = if settings.rules.is_empty() {
        requested.to_owned()
    } else {
        routing
            .rewrite(requested, exchange.key.as_deref(), headers, &metadata)
            .unwrap_or(requested)
            .to_owned()
    };
    let facts = inbound.facts();
    // Rate limits: one request, and the prompt plus the allowed output in tokens.
    let mut limit_headers = None;
    if let Some(key) = exchange.key.clone() {
        let tokens =
            facts.prompt_tokens + u64::from(facts.max_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE));
        gateway.budgets.admit(&key).await?;
        let (headers, reservation) = gateway.limits.admit(&key, tokens)?;
        exchange.reservation = reservation;
        limit_headers = Some(headers);
    }
    let started = Instant::now();
    let max_attempts = max_attempts(headers, settings.max_attempts);
    routing.budget.record_request();

    let mut queue: VecDeque<String> = VecDeque::from([target.clone()]);
    // Models tried in this round, and every model tried so far (the fallback path).
    let mut seen: Vec<String> = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut round_started_at = 0u32;
    let mut failures: Vec<String> = Vec::new();
    let mut last_error: Option<ApiError> = None;
    let mut soonest_reopen: Option<Duration> = None;
    let mut attempts = 0u32;
    let mut retries = 0u32;
    let mut deadline: Option<Instant> = None;
    'models: loop {
        let Some(name) = queue.pop_front() else {
            // The chain is spent. Another round (the same deployments again, after a backoff)
            // only when this one tried something and every failure may pass with time.
            let tried = attempts > round_started_at;
            if !tried || attempts >= max_attempts || !last_error.as_ref().is_some_and(retryable) {
                break;
            }
            round_started_at = attempts;
            seen.clear();
            queue.push_back(target.clone());
            continue;
        };
        if seen.contains(&name) {
            continue;
        }
        let Some(plan) = routing.plan(&name) else {
            if path.is_empty() {
                return Err(ApiError::model_not_found(requested));
            }
            continue;
        };
        seen.push(name.clone());
        if !path.contains(&name) {
            path.push(name.clone());
        }
        let timeouts = header_timeouts(headers, plan.timeouts);
        if deadline.is_none() {
            deadline = timeouts.total.map(|total| started + total);
        }
        let order = match plan.order(&facts) {
            Ok(order) => order,
            Err(Unfit::TooLong) => {
                match &plan.context_fallback {
                    Some(fallback) => queue.push_front(fallback.clone()),
                    None => {
                        last_error.get_or_insert_with(|| {
                            ApiError::invalid_request(
                                "context_length_exceeded",
                                format!(
                                    "The prompt (about {} tokens) does not fit the context window of any deployment of `{}`; shorten it or set a context_fallback.",
                                    facts.prompt_tokens, plan.name
                                ),
                            )
                        });
                    }
                }
                continue;
            }
            Err(Unfit::Lacks) => {
                last_error.get_or_insert_with(|| {
                    ApiError::invalid_request(
                        "model_not_supported",
                        format!(
                            "No deployment of `{}` supports what this request needs (tools or images).",
                            plan.name
                        ),
                    )
                    .with_param("model")
                });
                queue.extend(plan.fallbacks.iter().cloned());
                continue;
            }
        };
        queue.extend(plan.fallbacks.iter().cloned());
        for deployment in order {
            if attempts >= max_attempts {
                break 'models;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break 'models;
            }
            let permit = match deployment.health.breaker.acquire() {
                Ok(permit) => permit,
                Err(rejected) => {
                    failures.push(format!("{}: circuit open", deployment.id));
                    soonest_reopen = Some(
                        soonest_reopen.map_or(rejected.retry_in, |s| s.min(rejected.retry_in)),
                    );
                    continue;
                }
            };
            if attempts > 0 {
                if !routing.budget.try_retry() {
                    metrics::counter!(names::RETRY_BUDGET_EXHAUSTED).increment(1);
                    failures.push(BUDGET_SPENT.to_owned());
                    break 'models;
                }
                let delay = settings.backoff.delay_honouring(
                    retries,
                    rand::random(),
                    last_error.as_ref().and_then(retry_after_of),
                    settings.max_retry_after,
                );
                if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                    break 'models;
                }
                retries += 1;
                if let Some(previous) = exchange.provider.clone() {
                    metrics::counter!(names::RETRIES, "provider" => previous.to_string())
                        .increment(1);
                }
                tokio::time::sleep(delay).await;
            }
            attempts += 1;
            let Some(provider) = gateway.providers.get(&deployment.provider).cloned() else {
                continue;
            };
            let route = Route {
                provider,
                upstream_model: deployment.upstream_model.clone(),
                label: plan.label.clone(),
                info: deployment.info.clone(),
            };
            exchange.provider = Some(route.provider.name.clone());
            exchange.upstream_model = Some(route.upstream_model.clone());
            exchange.model_label = Some(route.label.clone());
            exchange.info = route.info.clone();
            exchange.deployment = Some(deployment.id.clone());
            exchange.attempts = attempts;
            exchange.retries = retries;
            exchange.fallback_path = (path.len() > 1).then(|| path.join(">"));
            exchange.upstream_error_class = None;
            exchange.error = None;
            exchange.error_source = None;
            let limits = Limits {
                ttfb: timeouts.ttfb.unwrap_or(route_timeout(&route)),
                idle: timeouts.idle,
                deadline,
            };
            let lease = Mutex::new(Some(Lease::new(permit, deployment.health.clone())));
            let leg = Leg {
                gateway,
                context,
                route: &route,
                limits: &limits,
                lease: &lease,
                headers,
            };
            let span = tracing::debug_span!(
                "attempt",
                model = %name,
                deployment = %deployment.id,
                attempt = attempts,
                error.type = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let result =
                tracing::Instrument::instrument(attempt(&leg, inbound, exchange), span.clone())
                    .await;
            if let Err(error) = &result {
                span.record("error.type", error.code);
                span.record("otel.status_code", "error");
            }
            let lease = lease.lock().ok().and_then(|mut l| l.take());
            match result {
                Ok(mut response) => {
                    if let Some(lease) = lease {
                        lease.succeed(None);
                    }
                    if path.len() > 1 {
                        metrics::counter!(names::FALLBACKS, "model" => plan_label(&path[0]))
                            .increment(1);
                    }
                    let headers = response.headers_mut();
                    if let Ok(value) = HeaderValue::from_str(&deployment.id) {
                        headers.insert(header_names::X_ATALAYA_DEPLOYMENT, value);
                    }
                    headers.insert(
                        header_names::X_ATALAYA_ATTEMPTS,
                        HeaderValue::from(attempts),
                    );
                    if let Some(limit_headers) = limit_headers {
                        headers.extend(limit_headers);
                    }
                    return Ok(response);
                }
                Err(error) if retryable(&error) => {
                    if let Some(lease) = lease {
                        lease.fail();
                    }
                    failures.push(format!("{}: {}", deployment.id, error.code));
                    last_error = Some(error);
                }
                Err(error) => {
                    // The provider answered; the request was at fault, not the deployment.
                    if let Some(lease) = lease {
                        lease.succeed(None);
                    }
                    return Err(error);
                }
            }
        }
    }
    exchange.attempts = attempts;
    exchange.retries = retries;
    exchange.fallback_path = (path.len() > 1).then(|| path.join(">"));
    Err(exhausted(
        requested,
        attempts,
        last_error,
        soonest_reopen,
        &failures,
    ))
}

/// A bounded label for the fallback metric: configured model names only.
fn plan_label(name: &str) -> String {
    if name.contains('/') {
        format!("{}/*", name.split('/').next().unwrap_or_default())
    } else {
        name.to_owned()
    }
}

/// The provider's own timeout for the response headers.
fn route_timeout(route: &Route) -> Duration {
    match &route.provider.adapter {
        Adapter::Upstream(upstream) => upstream.timeout,
        Adapter::Sim(_) => Duration::from_secs(600),
    }
}

/// The answer when no attempt succeeded. When one deployment was all there was to try, its
/// own error speaks for itself (a 429 stays a 429); after several, or with a breaker open,
/// the client gets a 503 that says what happened and when to come back.
fn exhausted(
    requested: &str,
    attempts: u32,
    last_error: Option<ApiError>,
    soonest_reopen: Option<Duration>,
    failures: &[String],
) -> ApiError {
    let mut deployments = failures.iter().filter_map(|f| f.split_once(": "));
    let first = deployments.next();
    let one_deployment = first.is_some_and(|(id, why)| {
        why != "circuit open" && deployments.all(|(other, _)| other == id)
    });
    match last_error {
        Some(error) if one_deployment && !failures.iter().any(|f| f == BUDGET_SPENT) => error,
        error => {
            let mut api = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_deployment",
                format!(
                    "No deployment of `{requested}` could answer after {attempts} attempt(s): {}.",
                    if failures.is_empty() {
                        "none was available".to_owned()
                    } else {
                        failures.join("; ")
                    }
                ),
            );
            let wait = soonest_reopen
                .or_else(|| error.as_ref().and_then(retry_after_of))
                .unwrap_or(Duration::from_secs(1));
            api.retry_after = HeaderValue::from_str(&wait.as_secs().max(1).to_string()).ok();
            api
        }
    }
}

const BUDGET_SPENT: &str = "retry budget spent";

/// One call to one deployment, by whichever path fits the client's and provider's formats.
/// The translated paths' futures, and reading a whole answer anywhere, are boxed: the
/// largest arms would otherwise size every request's future, a waiting stream's included.
async fn attempt(
    leg: &Leg<'_>,
    inbound: &Inbound<'_>,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let route = leg.route;
    let context = leg.context;
    let gateway = leg.gateway;
    match (inbound, &route.provider.adapter) {
        (Inbound::OpenAiChat { body, request }, Adapter::Sim(settings)) => {
            let upstream_started = Instant::now();
            match chat::sim(settings, route, &request.model, body).await? {
                SimAnswer::Json(bytes) => {
                    exchange.usage = atalaya_translate::openai::usage_of(&bytes);
                    exchange.upstream_time = upstream_started.elapsed();
                    Ok(json(StatusCode::OK, bytes))
                }
                SimAnswer::Stream(stream) => Ok(sse_response(
                    gateway.clone(),
                    context.clone(),
                    exchange.clone(),
                    stream,
                    upstream_started,
                    Transcoder::OpenAi {
                        strip_usage_only_chunks: !request.client_wants_usage,
                    },
                    leg.take_lease(),
                )),
            }
        }
        (Inbound::OpenAiChat { body, request }, Adapter::Upstream(upstream))
            if matches!(upstream.kind, ProviderKind::OpenAi | ProviderKind::Azure)
                && request.passes_through(&upstream.quirks) =>
        {
            crate::v1::passthrough(leg, upstream, body, request, exchange).await
        }
        (Inbound::OpenAiChat { body, .. }, Adapter::Upstream(upstream)) => {
            let drop = chat::drop_requested(leg.headers);
            let mut canonical =
                atalaya_translate::openai::decode_request(body, &upstream.target(drop))?;
            canonical.model = route.upstream_model.to_string();
            Box::pin(chat::translated(leg, upstream, canonical, drop, exchange)).await
        }
        (Inbound::AnthropicChat { request, .. }, Adapter::Sim(settings)) => {
            let mut canonical = (*request).clone();
            canonical.model = route.upstream_model.to_string();
            Box::pin(chat::sim_translated(leg, settings, canonical, exchange)).await
        }
        (Inbound::AnthropicChat { body, request }, Adapter::Upstream(upstream))
            if upstream.kind == ProviderKind::Anthropic =>
        {
            crate::messages::passthrough(leg, upstream, body, request.stream, exchange).await
        }
        (Inbound::AnthropicChat { body, request }, Adapter::Upstream(upstream)) => {
            let drop = chat::drop_requested(leg.headers);
            let mut canonical = if drop || upstream.drop_unsupported {
                (*request).clone()
            } else {
                atalaya_translate::anthropic::decode_request(body, &upstream.target(false))?
            };
            canonical.model = route.upstream_model.to_string();
            Box::pin(chat::translated(leg, upstream, canonical, drop, exchange)).await
        }
        (Inbound::Embeddings { body, request }, _) => {
            crate::v1::embed_with(leg, body, request, exchange).await
        }
    }
}
