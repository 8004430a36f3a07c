//! The OpenAI-compatible endpoints.

use std::sync::Arc;

use atalaya_translate::{cohere, gemini, openai as wire};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::time::Instant;

use crate::chat::{self, Leg, json};
use crate::config::ProviderKind;
use crate::dispatch::{self, Inbound};
use crate::error::ApiError;
use crate::inbound::{BodyError, Owned};
use crate::openai::{ChatRequest, EmbeddingRequest};
use crate::providers::{Adapter, Call, SIM_EMBED_DIMENSIONS, SIM_EMBED_MODEL, Upstream};
use crate::relay::{Transcoder, sse_response};
use crate::{ClientFormat, Exchange, Gateway, Principal, RequestContext};

pub(crate) fn body_error(error: BodyError, limit: usize) -> ApiError {
    match error {
        BodyError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "The request body is larger than the {limit}-byte limit (server.max_body_bytes)."
            ),
        ),
        BodyError::Unreadable(error) => ApiError::invalid_request(
            "invalid_body",
            format!("The request body could not be read: {error}."),
        ),
    }
}

/// Puts what the handler learned on the response, for the `data_plane` middleware, and
/// writes an error in the client's format.
pub(crate) fn finish(
    result: Result<Response, ApiError>,
    mut exchange: Exchange,
    format: ClientFormat,
) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            exchange.error = Some(format!("{}: {}", error.code, error.message));
            exchange.error_source = Some((error.code, error.location));
            error.into_response_for(format)
        }
    };
    response.extensions_mut().insert(exchange);
    response
}

pub(crate) async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    Extension(context): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    Owned { headers, body }: Owned,
) -> Response {
    let mut exchange = Exchange::for_caller(&principal);
    let result = match body {
        Ok(body) => chat(&gateway, &context, &mut exchange, &headers, body).await,
        Err(rejection) => Err(body_error(rejection, gateway.max_body_bytes)),
    };
    finish(result, exchange, ClientFormat::OpenAi)
}

pub(crate) async fn chat(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    exchange: &mut Exchange,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = crate::guardrails::apply(&gateway.guardrails, exchange.key_id.as_deref(), body)?;
    let request = ChatRequest::parse(&body)?;
    let inbound = Inbound::OpenAiChat {
        body: &body,
        request: &request,
    };
    dispatch::serve(
        gateway,
        context,
        exchange,
        headers,
        &request.model,
        &inbound,
    )
    .await
}

/// OpenAI to an OpenAI-dialect server: the body goes up with only the model (and the
/// dialect's quirks) rewritten; the answer comes back untouched.
pub(crate) async fn passthrough(
    leg: &Leg<'_>,
    upstream: &Upstream,
    body: &Bytes,
    request: &ChatRequest<'_>,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let route = leg.route;
    let upstream_body = request.upstream_body(&route.upstream_model, &upstream.quirks);
    let upstream_started = Instant::now();
    let call = Call::Chat {
        model: &route.upstream_model,
        stream: request.stream,
    };
    let response = upstream
        .post(
            call,
            upstream_body,
            leg.context,
            &[],
            leg.limits.ttfb_left(upstream_started),
        )
        .await
        .map_err(|failure| chat::upstream_failure(route, failure, exchange))?;
    let notes = chat::rate_limit_notes(upstream.kind, &response);
    if !request.stream || !response.status().is_success() {
        // Boxed: a stream's future (held for its whole wait on the upstream) need not carry
        // room for reading a whole answer.
        let answer = Box::pin(complete(
            leg,
            upstream,
            response,
            upstream_started,
            exchange,
        ))
        .await?;
        return Ok(chat::with_notes(answer, notes));
    }
    let _ = body;
    let stream = chat::started_stream(
        leg,
        chat::upstream_stream(response),
        upstream_started,
        exchange,
    )
    .await?;
    Ok(chat::with_notes(
        sse_response(
            leg.gateway.clone(),
            leg.context.clone(),
            exchange.clone(),
            stream,
            upstream_started,
            Transcoder::OpenAi {
                strip_usage_only_chunks: !request.client_wants_usage,
            },
            leg.take_lease(),
        ),
        notes,
    ))
}

/// Reads a whole OpenAI-format answer and passes it on: success bodies untouched, errors mapped.
async fn complete(
    leg: &Leg<'_>,
    upstream: &Upstream,
    response: crate::http_client::UpstreamResponse,
    upstream_started: Instant,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let (status, headers, bytes) =
        chat::read(leg, upstream, response, upstream_started, exchange).await?;
    if status.is_success() {
        exchange.usage = wire::usage_of(&bytes);
        return Ok(json(StatusCode::OK, bytes));
    }
    Err(chat::upstream_status_error(
        leg.route,
        upstream.kind,
        status,
        &headers.into_map(),
        &bytes,
        exchange,
    ))
}

pub(crate) async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    Extension(context): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    Owned { headers, body }: Owned,
) -> Response {
    // Same shape as `chat_completions`; axum needs one handler per route.
    let mut exchange = Exchange::for_caller(&principal);
    let result = match body {
        Ok(body) => embed(&gateway, &context, &mut exchange, &headers, body).await,
        Err(rejection) => Err(body_error(rejection, gateway.max_body_bytes)),
    };
    finish(result, exchange, ClientFormat::OpenAi)
}

async fn embed(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    exchange: &mut Exchange,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = crate::guardrails::apply(&gateway.guardrails, exchange.key_id.as_deref(), body)?;
    let request = EmbeddingRequest::parse(&body)?;
    let inbound = Inbound::Embeddings {
        body: &body,
        request: &request,
    };
    dispatch::serve(
        gateway,
        context,
        exchange,
        headers,
        &request.model,
        &inbound,
    )
    .await
}

/// One embeddings call on one deployment.
pub(crate) async fn embed_with(
    leg: &Leg<'_>,
    body: &Bytes,
    request: &EmbeddingRequest<'_>,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let route = leg.route;
    let upstream_started = Instant::now();
    let upstream = match &route.provider.adapter {
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
            let mut params =
                mock_provider::openai::parse_embeddings(body).map_err(chat::sim_error)?;
            params.model = route.upstream_model.to_string();
            if !sim.latency.is_zero() {
                tokio::time::sleep(sim.latency).await;
            }
            let bytes = mock_provider::openai::embeddings_json(&params, SIM_EMBED_DIMENSIONS)
                .map_err(chat::sim_error)?;
            exchange.usage = wire::usage_of(&bytes);
            exchange.upstream_time = upstream_started.elapsed();
            return Ok(json(StatusCode::OK, bytes));
        }
        Adapter::Upstream(upstream) => upstream,
    };
    let model = &route.upstream_model;
    let ttfb = leg.limits.ttfb_left(upstream_started);
    match upstream.kind {
        ProviderKind::OpenAi | ProviderKind::Azure => {
            let response = upstream
                .post(
                    Call::Embed { model, batch: true },
                    request.upstream_body(model),
                    leg.context,
                    &[],
                    ttfb,
                )
                .await
                .map_err(|failure| chat::upstream_failure(route, failure, exchange))?;
            Box::pin(complete(leg, upstream, response, upstream_started, exchange)).await
        }
        ProviderKind::Gemini | ProviderKind::Cohere => {
            let texts = request.texts()?;
            let (call_body, batch) = match upstream.kind {
                ProviderKind::Gemini => {
                    gemini::encode_embeddings(model, &texts, request.dimensions())
                }
                _ => (
                    cohere::encode_embeddings(model, &texts, request.dimensions()),
                    true,
                ),
            };
            let response = upstream
                .post(Call::Embed { model, batch }, call_body, leg.context, &[], ttfb)
                .await
                .map_err(|failure| chat::upstream_failure(route, failure, exchange))?;
            let (status, headers, bytes) =
                Box::pin(chat::read(leg, upstream, response, upstream_started, exchange)).await?;
            if !status.is_success() {
                return Err(chat::upstream_status_error(
                    route,
                    upstream.kind,
                    status,
                    &headers.into_map(),
                    &bytes,
                    exchange,
                ));
            }
            let (vectors, billed) = match upstream.kind {
                ProviderKind::Gemini => (gemini::decode_embeddings(&bytes)?, None),
                _ => cohere::decode_embeddings(&bytes)?,
            };
            if vectors.len() != texts.len() {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_bad_response",
                    format!(
                        "The provider returned {} embeddings for {} inputs.",
                        vectors.len(),
                        texts.len()
                    ),
                ));
            }
            let usage = match billed {
                Some(tokens) => atalaya_translate::Usage {
                    prompt_tokens: tokens,
                    ..Default::default()
                },
                None => crate::usage::estimate_texts(&texts),
            };
            exchange.usage = Some(usage);
            Ok(json(
                StatusCode::OK,
                wire::encode_embeddings(&vectors, model, &usage, request.base64()),
            ))
        }
        ProviderKind::Anthropic | ProviderKind::Bedrock => Err(ApiError::invalid_request(
            "model_not_supported",
            format!(
                "The model `{}` is served by `{}`, a {} provider, which has no embeddings API through atalaya.",
                request.model,
                route.provider.name,
                upstream.kind.as_str()
            ),
        )
        .with_param("model")),
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
    // A key limited to some models sees only those.
    let allowed = principal.allowed_models();
    let data = gateway
        .routing
        .listed
        .iter()
        .filter(|listed| allowed.as_ref().is_none_or(|a| a.contains(&listed.id)))
        .map(|listed| ModelObject {
            id: &listed.id,
            object: "model",
            created: MODEL_CREATED,
            owned_by: &listed.owned_by,
        })
        .collect();
    let exchange = Exchange::for_caller(&principal);
    finish(
        Ok(axum::Json(List {
            object: "list",
            data,
        })
        .into_response()),
        exchange,
        ClientFormat::OpenAi,
    )
}

pub(crate) async fn get_model(
    State(gateway): State<Arc<Gateway>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let exchange = Exchange::for_caller(&principal);
    let result = match gateway.routing.plan(&id) {
        Some(plan) => Ok(axum::Json(ModelObject {
            id: &id,
            object: "model",
            created: MODEL_CREATED,
            owned_by: plan
                .deployments
                .first()
                .map(|d| &*d.provider)
                .unwrap_or_default(),
        })
        .into_response()),
        None => Err(ApiError::model_not_found(&id)),
    };
    finish(result, exchange, ClientFormat::OpenAi)
}
