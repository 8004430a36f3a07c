//! The Anthropic-compatible endpoint, `POST /v1/messages`: any model, any provider, answered
//! in Anthropic's format (errors too), so Anthropic SDK clients can use every model.

use std::sync::Arc;

use atalaya_translate::{Target, anthropic};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::time::Instant;

use crate::chat::{self, Leg, json};
use crate::dispatch::{self, Inbound};
use crate::error::ApiError;
use crate::inbound::Owned;
use crate::providers::{Call, SIM_PROVIDER, Upstream};
use crate::relay::{Transcoder, sse_response};
use crate::v1::{body_error, finish};
use crate::{ClientFormat, Exchange, Gateway, Principal, RequestContext};

pub(crate) async fn create(
    State(gateway): State<Arc<Gateway>>,
    Extension(context): Extension<RequestContext>,
    Extension(principal): Extension<Principal>,
    Owned { headers, body }: Owned,
) -> Response {
    let mut exchange = Exchange::for_caller(&principal);
    let result = match body {
        Ok(body) => message(&gateway, &context, &mut exchange, &headers, body).await,
        Err(rejection) => Err(body_error(rejection, gateway.max_body_bytes)),
    };
    finish(result, exchange, ClientFormat::Anthropic)
}

async fn message(
    gateway: &Arc<Gateway>,
    context: &RequestContext,
    exchange: &mut Exchange,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Read leniently: what a provider cannot take is judged per attempt, once the provider
    // is known (an Anthropic upstream takes everything).
    let lenient = Target {
        provider: SIM_PROVIDER.to_owned(),
        drop_unsupported: true,
    };
    let body = crate::guardrails::apply(&gateway.guardrails, exchange.key_id.as_deref(), body)?;
    let request = anthropic::decode_request(&body, &lenient)?;
    let inbound = Inbound::AnthropicChat {
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

/// Anthropic to Anthropic: the body goes as it came (model replaced), with the client's API
/// version and beta flags; the answer comes back untouched.
pub(crate) async fn passthrough(
    leg: &Leg<'_>,
    upstream: &Upstream,
    body: &[u8],
    stream: bool,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let upstream_body = crate::openai::replace_model(body, &leg.route.upstream_model)?;
    let forwarded: Vec<(HeaderName, HeaderValue)> = ["anthropic-version", "anthropic-beta"]
        .iter()
        .filter_map(|name| {
            Some((
                HeaderName::from_static(name),
                leg.headers.get(*name)?.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let call = Call::Chat {
        model: &leg.route.upstream_model,
        stream,
    };
    let response = upstream
        .post(
            call,
            upstream_body,
            leg.context,
            &forwarded,
            leg.limits.ttfb_left(started),
        )
        .await
        .map_err(|failure| chat::upstream_failure(leg.route, failure, exchange))?;
    let notes = chat::rate_limit_notes(upstream.kind, &response);
    if !stream || !response.status().is_success() {
        // Boxed, as in `v1::passthrough`: a stream's future need not carry room for it.
        let (status, headers, bytes) =
            Box::pin(chat::read(leg, upstream, response, started, exchange)).await?;
        if !status.is_success() {
            return Err(chat::upstream_status_error(
                leg.route,
                upstream.kind,
                status,
                &headers.into_map(),
                &bytes,
                exchange,
            ));
        }
        exchange.usage = anthropic::usage_of(&bytes);
        return Ok(chat::with_notes(json(StatusCode::OK, bytes), notes));
    }
    let stream =
        chat::started_stream(leg, chat::upstream_stream(response), started, exchange).await?;
    Ok(chat::with_notes(
        sse_response(
            leg.gateway.clone(),
            leg.context.clone(),
            exchange.clone(),
            stream,
            started,
            Transcoder::Anthropic(anthropic::StreamDecoder::new(Default::default())),
            leg.take_lease(),
        ),
        notes,
    ))
}
