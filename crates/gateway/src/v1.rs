//! The OpenAI-compatible endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use mock_provider::openai as sim_wire;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::openai::{ChatRequest, EmbeddingRequest, usage_of};
use crate::providers::{
    Adapter, Endpoint, OpenAiUpstream, Route, SIM_CHAT_MODEL, SIM_EMBED_DIMENSIONS,
    SIM_EMBED_MODEL, UpstreamFailure,
};
use crate::relay::{UpstreamStream, sse_response};
use crate::{Exchange, Gateway, Principal, RequestContext};

fn body_error(rejection: BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "The request body is larger than the {limit}-byte limit (server.max_body_bytes)."
            ),
        )
    } else {
        ApiError::invalid_request(
            "invalid_body",
            format!("The request body could not be read: {rejection}."),
        )
    }
}

/// Puts what the handler learned on the response, for the `data_plane` middleware.
fn finish(result: Result<Response, ApiError>, mut exchange: Exchange) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            exchange.error = Some(format!("{}: {}", error.code, error.message));
            error.into_response()
        }
    };
    response.extensions_mut().insert(exchange);
    response
}

fn json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn route_for(gateway: &Gateway, model: &str, exchange: &mut Exchange) -> Result<Route, ApiError> {
    exchange.model = Some(model.to_owned());
    let route = gateway
        .providers
        .resolve(model)
        .ok_or_else(|| ApiError::model_not_found(model))?;
    exchange.provider = Some(route.provider.name.clone());
    exchange.upstream_model = Some(route.upstream_model.clone());
    exchange.model_label = Some(route.label.clone());
    Ok(route)
}

pub(crate) async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    Extension(context): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut exchange = Exchange {
        key_id: principal.key_id(),
        ..Exchange::default()
    };
    let result = match body {
        Ok(body) => chat(&gateway, &context, &mut exchange, body).await,
        Err(rejection) => Err(body_error(rejection, gateway.max_body_bytes)),
    };
    finish(result, exchange)
}

async fn chat(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    exchange: &mut Exchange,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = ChatRequest::parse(&body)?;
    exchange.stream = request.stream;
    let route = route_for(gateway, &request.model, exchange)?;
    let upstream_started = Instant::now();
    match &route.provider.adapter {
        Adapter::Sim(sim) => {
            if &*route.upstream_model != SIM_CHAT_MODEL {
                return Err(not_a_chat_model(&request.model));
            }
            let mut params = sim_wire::parse_chat(&body).map_err(sim_error)?;
            params.model = route.upstream_model.to_string();
            // Like a real upstream asked by the gateway: usage always comes, the relay strips it.
            params.include_usage = params.stream;
            if !sim.latency.is_zero() {
                tokio::time::sleep(sim.latency).await;
            }
            let answer = sim_wire::ChatAnswer::generate(&params);
            if !request.stream {
                let bytes = answer.json();
                exchange.usage = usage_of(&bytes);
                exchange.upstream_time = upstream_started.elapsed();
                return Ok(json(StatusCode::OK, bytes));
            }
            let gap = if sim.tokens_per_second > 0.0 {
                Duration::from_secs_f64(1.0 / sim.tokens_per_second)
            } else {
                Duration::ZERO
            };
            let stream: UpstreamStream =
                Box::pin(mock_provider::paced(answer.events(), gap).map(Ok));
            Ok(sse_response(
                gateway.clone(),
                context.clone(),
                exchange.clone(),
                stream,
                upstream_started,
                !request.client_wants_usage,
            ))
        }
        Adapter::OpenAi(upstream) => {
            let upstream_body = request.upstream_body(&route.upstream_model);
            let response = upstream
                .post(Endpoint::Chat, upstream_body, &context.id)
                .await
                .map_err(|failure| upstream_failure(&route, failure, exchange))?;
            if !request.stream || !response.status().is_success() {
                return complete(upstream, &route, response, upstream_started, exchange).await;
            }
            let stream: UpstreamStream = Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map_err(|error| crate::providers::error_chain(&error))),
            );
            Ok(sse_response(
                gateway.clone(),
                context.clone(),
                exchange.clone(),
                stream,
                upstream_started,
                !request.client_wants_usage,
            ))
        }
    }
}

/// Reads a whole upstream answer and passes it on: success bodies untouched, errors mapped.
async fn complete(
    upstream: &OpenAiUpstream,
    route: &Route,
    response: reqwest::Response,
    upstream_started: Instant,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let remaining = upstream.timeout.saturating_sub(upstream_started.elapsed());
    let bytes = upstream
        .read_body(response, remaining)
        .await
        .map_err(|failure| upstream_failure(route, failure, exchange))?;
    exchange.upstream_time = upstream_started.elapsed();
    if status.is_success() {
        exchange.usage = usage_of(&bytes);
        return Ok(json(StatusCode::OK, bytes));
    }
    Err(upstream_status_error(
        route,
        status,
        &bytes,
        retry_after,
        exchange,
    ))
}

fn not_a_chat_model(model: &str) -> ApiError {
    ApiError::invalid_request(
        "model_not_supported",
        format!("The model `{model}` is an embedding model; use it with /v1/embeddings."),
    )
    .with_param("model")
}

fn sim_error(error: sim_wire::ApiError) -> ApiError {
    ApiError::invalid_request(error.code.unwrap_or("invalid_request"), error.message)
}

fn upstream_failure(route: &Route, failure: UpstreamFailure, exchange: &mut Exchange) -> ApiError {
    let provider = &route.provider.name;
    let (class, error) = match failure {
        UpstreamFailure::Connect(detail) => {
            tracing::warn!(provider = %provider, error = %detail, "Upstream connection failed.");
            (
                "connect",
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    format!(
                        "The provider `{provider}` could not be reached. Retry later or check its base_url."
                    ),
                ),
            )
        }
        UpstreamFailure::Timeout(limit) => (
            "timeout",
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "The provider `{provider}` did not answer within {} ms (providers.timeout_ms).",
                    limit.as_millis()
                ),
            ),
        ),
        UpstreamFailure::Other(detail) => {
            tracing::warn!(provider = %provider, error = %detail, "Upstream call failed.");
            (
                "other",
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    format!("The call to provider `{provider}` failed before an answer arrived."),
                ),
            )
        }
    };
    exchange.upstream_error_class = Some(class);
    error
}

/// Maps an upstream's error status for the client: client errors pass through with the
/// provider's message, authentication problems become the gateway's 502 (the client's key
/// was fine; the configured upstream key was not), server errors become 502.
fn upstream_status_error(
    route: &Route,
    status: reqwest::StatusCode,
    body: &[u8],
    retry_after: Option<HeaderValue>,
    exchange: &mut Exchange,
) -> ApiError {
    let provider = &route.provider.name;
    let upstream_message = upstream_error_message(body);
    exchange.upstream_error_class = Some(if status.is_server_error() {
        "status_5xx"
    } else {
        "status_4xx"
    });
    let detail = upstream_message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match status.as_u16() {
        401 | 403 => {
            tracing::error!(provider = %provider, status = status.as_u16(), "Upstream rejected the configured API key.");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth_failed",
                format!(
                    "The provider `{provider}` rejected the gateway's credentials (HTTP {status}). An operator must fix its api_key."
                ),
            )
        }
        429 => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "upstream_rate_limited",
                format!("The provider `{provider}` is rate limiting requests{detail}"),
            );
            error.retry_after = retry_after;
            error
        }
        400..=499 => ApiError::new(
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST),
            "upstream_rejected",
            format!("The provider `{provider}` rejected the request (HTTP {status}){detail}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("The provider `{provider}` failed (HTTP {status}){detail}"),
        ),
    }
}

/// The `error.message` of an OpenAI-style error body, if that is what it is.
fn upstream_error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: Option<String>,
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    outer.error.message.map(|m| m.chars().take(500).collect())
}

pub(crate) async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    Extension(context): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Same shape as `chat_completions`; axum needs one handler per route.
    let mut exchange = Exchange {
        key_id: principal.key_id(),
        ..Exchange::default()
    };
    let result = match body {
        Ok(body) => embed(&gateway, &context, &mut exchange, body).await,
        Err(rejection) => Err(body_error(rejection, gateway.max_body_bytes)),
    };
    finish(result, exchange)
}

async fn embed(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    exchange: &mut Exchange,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = EmbeddingRequest::parse(&body)?;
    let route = route_for(gateway, &request.model, exchange)?;
    let upstream_started = Instant::now();
    match &route.provider.adapter {
        Adapter::Sim(sim) => {
            if &*route.upstream_model != SIM_EMBED_MODEL {
                return Err(ApiError::invalid_request(
                    "model_not_supported",
                    format!(
                        "The model `{}` does not create embeddings; use `{SIM_EMBED_MODEL}`.",
                        request.model
                    ),
                )
                .with_param("model"));
            }
            let mut params = sim_wire::parse_embeddings(&body).map_err(sim_error)?;
            params.model = route.upstream_model.to_string();
            if !sim.latency.is_zero() {
                tokio::time::sleep(sim.latency).await;
            }
            let bytes =
                sim_wire::embeddings_json(&params, SIM_EMBED_DIMENSIONS).map_err(sim_error)?;
            exchange.usage = usage_of(&bytes);
            exchange.upstream_time = upstream_started.elapsed();
            Ok(json(StatusCode::OK, bytes))
        }
        Adapter::OpenAi(upstream) => {
            let response = upstream
                .post(
                    Endpoint::Embeddings,
                    request.upstream_body(&route.upstream_model),
                    &context.id,
                )
                .await
                .map_err(|failure| upstream_failure(&route, failure, exchange))?;
            complete(upstream, &route, response, upstream_started, exchange).await
        }
    }
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

/// Model objects carry a fixed `created`: the gateway cannot know when an upstream made them.
const MODEL_CREATED: u64 = 1_700_000_000;

pub(crate) async fn list_models(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<ModelObject<'a>>,
    }
    let data = gateway
        .providers
        .listed
        .iter()
        .map(|listed| ModelObject {
            id: &listed.id,
            object: "model",
            created: MODEL_CREATED,
            owned_by: &listed.owned_by,
        })
        .collect();
    let exchange = Exchange {
        key_id: principal.key_id(),
        ..Exchange::default()
    };
    finish(
        Ok(axum::Json(List {
            object: "list",
            data,
        })
        .into_response()),
        exchange,
    )
}

pub(crate) async fn get_model(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    _headers: HeaderMap,
) -> Response {
    let exchange = Exchange {
        key_id: principal.key_id(),
        ..Exchange::default()
    };
    let result = match gateway.providers.resolve(&id) {
        Some(route) => Ok(axum::Json(ModelObject {
            id: &id,
            object: "model",
            created: MODEL_CREATED,
            owned_by: &route.provider.name,
        })
        .into_response()),
        None => Err(ApiError::model_not_found(&id)),
    };
    finish(result, exchange)
}
