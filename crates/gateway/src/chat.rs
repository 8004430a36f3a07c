//! One chat request to a provider, whatever format the client and the provider speak: the
//! translated path through canonical form, the built-in simulator, and the mapping of
//! upstream failures to the client's errors.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use atalaya_translate::{
    ChatRequest, ChatResponse, anthropic, bedrock, cohere, eventstream, gemini, openai, sse,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt as _;
use mock_provider::openai as sim_wire;
use tokio::time::Instant;

use crate::config::{ProviderKind, SimSettings};
use crate::dispatch::Lease;
use crate::error::ApiError;
use crate::http_client::{UpstreamHeaders, UpstreamResponse};
use crate::providers::{Call, Route, SIM_CHAT_MODEL, Upstream, UpstreamFailure};
use crate::relay::{self, Decoder, Encoder, Framing, Transcoder, Translator, UpstreamStream};
use crate::{ClientFormat, Exchange, Gateway, RequestContext, header_names};

/// A JSON response with `status`.
pub(crate) fn json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether the client asked to drop what a provider cannot take
/// (`x-atalaya-drop-params: true`).
pub(crate) fn drop_requested(headers: &HeaderMap) -> bool {
    headers
        .get(header_names::X_ATALAYA_DROP_PARAMS)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// How long an attempt may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Until the response headers, and for streams the first chunk.
    pub ttfb: Duration,
    /// Longest silence between stream chunks, when the model sets one.
    pub idle: Option<Duration>,
    /// When the whole request must be done.
    pub deadline: Option<Instant>,
}

impl Limits {
    /// What is left of the time to first byte of an attempt that began at `started`.
    pub fn ttfb_left(&self, started: Instant) -> Duration {
        let left = self.ttfb.saturating_sub(started.elapsed());
        match self.deadline {
            Some(deadline) => left.min(deadline.saturating_duration_since(Instant::now())),
            None => left,
        }
    }

    /// What is left to read a whole answer, the provider's own timeout being `timeout`.
    pub fn body_left(&self, timeout: Duration, started: Instant) -> Duration {
        let left = timeout.saturating_sub(started.elapsed());
        match self.deadline {
            Some(deadline) => left.min(deadline.saturating_duration_since(Instant::now())),
            None => left,
        }
    }
}

/// One attempt: where it goes, its limits, and the deployment's lease, which a stream
/// takes with it to report how it ended.
pub(crate) struct Leg<'a> {
    pub gateway: &'a Arc<Gateway>,
    pub context: &'a RequestContext,
    pub route: &'a Route,
    pub limits: &'a Limits,
    pub lease: &'a Mutex<Option<Lease>>,
    /// The client's request headers.
    pub headers: &'a HeaderMap,
}

impl Leg<'_> {
    pub fn take_lease(&self) -> Option<Lease> {
        self.lease.lock().ok().and_then(|mut lease| lease.take())
    }
}

/// Sends a canonical request to `upstream`; answers in the client's format.
pub(crate) async fn translated(
    leg: &Leg<'_>,
    upstream: &Upstream,
    request: ChatRequest,
    drop: bool,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let target = upstream.target(drop);
    let (body, emulation) = match upstream.kind {
        ProviderKind::OpenAi | ProviderKind::Azure => (
            openai::encode_request(&request, &target, &upstream.quirks)?,
            Default::default(),
        ),
        ProviderKind::Anthropic => {
            let options = anthropic::EncodeOptions {
                default_max_tokens: default_max_tokens(leg.route),
            };
            anthropic::encode_request(&request, &target, &options)?
        }
        ProviderKind::Gemini => (
            gemini::encode_request(&request, &target)?,
            Default::default(),
        ),
        ProviderKind::Cohere => (
            cohere::encode_request(&request, &target)?,
            Default::default(),
        ),
        ProviderKind::Bedrock => bedrock::encode_request(&request, &target)?,
    };
    let started = Instant::now();
    let call = Call::Chat {
        model: &leg.route.upstream_model,
        stream: request.stream,
    };
    let response = upstream
        .post(call, body, leg.context, &[], leg.limits.ttfb_left(started))
        .await
        .map_err(|failure| upstream_failure(leg.route, failure, exchange))?;
    let notes = rate_limit_notes(upstream.kind, &response);
    if !response.status().is_success() || !request.stream {
        let (status, headers, bytes) = read(leg, upstream, response, started, exchange).await?;
        if !status.is_success() {
            return Err(upstream_status_error(
                leg.route,
                upstream.kind,
                status,
                &headers.into_map(),
                &bytes,
                exchange,
            ));
        }
        let model = &leg.route.upstream_model;
        let mut answer = match upstream.kind {
            ProviderKind::OpenAi | ProviderKind::Azure => openai::decode_response(&bytes)?,
            ProviderKind::Anthropic => anthropic::decode_response(&bytes, emulation)?,
            ProviderKind::Gemini => gemini::decode_response(&bytes)?,
            ProviderKind::Cohere => cohere::decode_response(&bytes, model)?,
            ProviderKind::Bedrock => bedrock::decode_response(&bytes, model, emulation)?,
        };
        if answer.model.is_empty() {
            answer.model = model.to_string();
        }
        let usage = answer.usage.unwrap_or_else(|| {
            let text: String = answer
                .choices
                .iter()
                .map(|c| c.message.joined_text())
                .collect();
            crate::usage::estimate(&request, &text)
        });
        answer.usage = Some(usage);
        exchange.usage = Some(usage);
        return Ok(with_notes(answer_in(leg.context, answer), notes));
    }
    let (framing, decoder) = match upstream.kind {
        ProviderKind::OpenAi | ProviderKind::Azure => (
            Framing::Sse(sse::Parser::new()),
            Decoder::OpenAi(openai::StreamDecoder::new()),
        ),
        ProviderKind::Anthropic => (
            Framing::Sse(sse::Parser::new()),
            Decoder::Anthropic(anthropic::StreamDecoder::new(emulation)),
        ),
        ProviderKind::Gemini => (
            Framing::Sse(sse::Parser::new()),
            Decoder::Gemini(gemini::StreamDecoder::new()),
        ),
        ProviderKind::Cohere => (
            Framing::Sse(sse::Parser::new()),
            Decoder::Cohere(cohere::StreamDecoder::new()),
        ),
        ProviderKind::Bedrock => (
            Framing::EventStream(eventstream::Decoder::new()),
            Decoder::Bedrock(bedrock::StreamDecoder::new(emulation)),
        ),
    };
    let stream = started_stream(leg, upstream_stream(response), started, exchange).await?;
    Ok(with_notes(
        translating_relay(leg, exchange, stream, started, framing, decoder, request),
        notes,
    ))
}

/// A relay from `stream` (decoded by `decoder`) to the client's format.
fn translating_relay(
    leg: &Leg<'_>,
    exchange: &Exchange,
    stream: UpstreamStream,
    started: Instant,
    framing: Framing,
    decoder: Decoder,
    request: ChatRequest,
) -> Response {
    let encoder = match leg.context.format {
        ClientFormat::OpenAi => Encoder::OpenAi(openai::StreamEncoder::new(
            format!("chatcmpl-{}", leg.context.id),
            leg.route.upstream_model.to_string(),
            request.stream_usage,
        )),
        ClientFormat::Anthropic => Encoder::Anthropic(anthropic::StreamEncoder::new(
            format!("msg_{}", leg.context.id),
            leg.route.upstream_model.to_string(),
        )),
    };
    let translator = Translator {
        framing,
        decoder,
        encoder,
        // Kept so usage can be counted if the provider reports none.
        estimate: Some(Box::new(request)),
        completion: String::new(),
        deltas: Vec::new(),
    };
    relay::sse_response(
        leg.gateway.clone(),
        leg.context.clone(),
        exchange.clone(),
        stream,
        started,
        Transcoder::Translate(Box::new(translator)),
        leg.take_lease(),
    )
}

/// A whole answer in the client's format.
fn answer_in(context: &RequestContext, mut answer: ChatResponse) -> Response {
    let body = match context.format {
        ClientFormat::OpenAi => {
            if answer.id.is_empty() {
                answer.id = format!("chatcmpl-{}", context.id);
            }
            openai::encode_response(&answer)
        }
        ClientFormat::Anthropic => {
            if !answer.id.starts_with("msg_") {
                answer.id = format!("msg_{}", context.id);
            }
            anthropic::encode_response(&answer)
        }
    };
    json(StatusCode::OK, body)
}

/// Anthropic requires an output limit; the catalog's, when the client gave none.
fn default_max_tokens(route: &Route) -> u32 {
    route
        .info
        .as_ref()
        .and_then(|info| info.max_output)
        .map(|max| max.min(u64::from(u32::MAX)) as u32)
        .unwrap_or(4_096)
}

pub(crate) fn upstream_stream(response: UpstreamResponse) -> UpstreamStream {
    Box::pin(response.into_stream())
}

/// Reads a whole upstream body within what is left of the time.
pub(crate) async fn read(
    leg: &Leg<'_>,
    upstream: &Upstream,
    mut response: UpstreamResponse,
    started: Instant,
    exchange: &mut Exchange,
) -> Result<(StatusCode, UpstreamHeaders, Bytes), ApiError> {
    let status = response.status();
    let headers = response.take_headers();
    let remaining = leg.limits.body_left(upstream.timeout, started);
    let bytes = upstream
        .read_body(response, remaining)
        .await
        .map_err(|failure| upstream_failure(leg.route, failure, exchange))?;
    exchange.upstream_time = started.elapsed();
    Ok((status, headers, bytes))
}

/// Waits for a stream's first chunk before the client is answered: until then a failure can
/// still be retried on another deployment. The stream is then bounded by the attempt's idle
/// gap and deadline, when set.
pub(crate) async fn started_stream(
    leg: &Leg<'_>,
    mut stream: UpstreamStream,
    started: Instant,
    exchange: &mut Exchange,
) -> Result<UpstreamStream, ApiError> {
    let within = leg.limits.ttfb_left(started);
    let first = match tokio::time::timeout(within, stream.next()).await {
        Err(_) => {
            return Err(upstream_failure(
                leg.route,
                UpstreamFailure::Timeout(within),
                exchange,
            ));
        }
        Ok(Some(Ok(first))) => first,
        Ok(Some(Err(detail))) => return Err(stream_failed(leg.route, &detail, exchange)),
        Ok(None) => {
            return Err(stream_failed(
                leg.route,
                "the stream ended before its first byte",
                exchange,
            ));
        }
    };
    let stream: UpstreamStream =
        Box::pin(futures_util::stream::once(std::future::ready(Ok(first))).chain(stream));
    if leg.limits.idle.is_none() && leg.limits.deadline.is_none() {
        return Ok(stream);
    }
    Ok(Box::pin(Bounded {
        inner: stream,
        idle: leg.limits.idle,
        gap: leg
            .limits
            .idle
            .map(|idle| Box::pin(tokio::time::sleep(idle))),
        deadline: leg
            .limits
            .deadline
            .map(|deadline| Box::pin(tokio::time::sleep_until(deadline))),
        done: false,
    }))
}

fn stream_failed(route: &Route, detail: &str, exchange: &mut Exchange) -> ApiError {
    exchange.upstream_error_class = Some("stream");
    tracing::warn!(provider = %route.provider.name, error = %detail, "Upstream stream failed before its first byte.");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_stream_error",
        format!(
            "The provider `{}` broke the stream before it sent anything.",
            route.provider.name
        ),
    )
}

/// A stream held to an idle gap between chunks and a deadline; breaking either ends it
/// with an error, which the relay turns into an error event.
struct Bounded {
    inner: UpstreamStream,
    idle: Option<Duration>,
    gap: Option<Pin<Box<tokio::time::Sleep>>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl futures_util::Stream for Bounded {
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.as_mut().poll_next(cx) {
            if let (Some(idle), Some(gap)) = (self.idle, self.gap.as_mut()) {
                gap.as_mut().reset(tokio::time::Instant::now() + idle);
            }
            return Poll::Ready(item);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            return Poll::Ready(Some(Err("the request's time limit was reached".to_owned())));
        }
        let idle = self.idle;
        if let (Some(idle), Some(gap)) = (idle, self.gap.as_mut())
            && gap.as_mut().poll(cx).is_ready()
        {
            self.done = true;
            return Poll::Ready(Some(Err(format!(
                "no data for {} ms (the model's idle_timeout_ms)",
                idle.as_millis()
            ))));
        }
        Poll::Pending
    }
}

// ---------------------------------------------------------------------------------------------
// The built-in simulator

/// What the simulator answered.
pub(crate) enum SimAnswer {
    Json(Vec<u8>),
    Stream(UpstreamStream),
}

/// Runs the simulator on an OpenAI request body, as a remote OpenAI server would.
pub(crate) async fn sim(
    settings: &SimSettings,
    route: &Route,
    requested: &str,
    openai_body: &[u8],
) -> Result<SimAnswer, ApiError> {
    if &*route.upstream_model != SIM_CHAT_MODEL {
        return Err(ApiError::invalid_request(
            "model_not_supported",
            format!("The model `{requested}` is an embedding model; use it with /v1/embeddings."),
        )
        .with_param("model"));
    }
    let mut params = sim_wire::parse_chat(openai_body).map_err(sim_error)?;
    params.model = route.upstream_model.to_string();
    // Like a real upstream asked by the gateway: usage always comes; the relay strips it.
    params.include_usage = params.stream;
    if !settings.latency.is_zero() {
        tokio::time::sleep(settings.latency).await;
    }
    let answer = sim_wire::ChatAnswer::generate(&params);
    if !params.stream {
        return Ok(SimAnswer::Json(answer.json()));
    }
    let gap = if settings.tokens_per_second > 0.0 {
        Duration::from_secs_f64(1.0 / settings.tokens_per_second)
    } else {
        Duration::ZERO
    };
    Ok(SimAnswer::Stream(Box::pin(
        mock_provider::paced(answer.into_events(), gap).map(Ok),
    )))
}

pub(crate) fn sim_error(error: sim_wire::ApiError) -> ApiError {
    ApiError::invalid_request(error.code.unwrap_or("invalid_request"), error.message)
}

/// A canonical request answered by the simulator, for clients of other formats.
pub(crate) async fn sim_translated(
    leg: &Leg<'_>,
    settings: &SimSettings,
    request: ChatRequest,
    exchange: &mut Exchange,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let body = openai::encode_request(
        &request,
        &atalaya_translate::Target::new(crate::SIM_PROVIDER),
        &Default::default(),
    )?;
    match sim(settings, leg.route, &request.model, &body).await? {
        SimAnswer::Json(bytes) => {
            exchange.upstream_time = started.elapsed();
            let answer = openai::decode_response(&bytes)?;
            exchange.usage = answer.usage;
            Ok(answer_in(leg.context, answer))
        }
        SimAnswer::Stream(stream) => Ok(translating_relay(
            leg,
            exchange,
            stream,
            started,
            Framing::Sse(sse::Parser::new()),
            Decoder::OpenAi(openai::StreamDecoder::new()),
            request,
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Failures

pub(crate) fn upstream_failure(
    route: &Route,
    failure: UpstreamFailure,
    exchange: &mut Exchange,
) -> ApiError {
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
                    "The provider `{provider}` did not answer within {} ms (the provider's timeout_ms, or the model's ttfb_timeout_ms).",
                    (limit.as_secs_f64() * 1000.0).round() as u64
                ),
            ),
        ),
        UpstreamFailure::NoKeys => (
            "auth",
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth_failed",
                format!(
                    "Every API key of provider `{provider}` was refused; an operator must replace them."
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

/// The provider's own error message, in whichever format it speaks.
fn upstream_message(kind: ProviderKind, body: &[u8]) -> Option<String> {
    let message = match kind {
        ProviderKind::OpenAi | ProviderKind::Azure => openai::error_message(body),
        ProviderKind::Anthropic => anthropic::error_message(body),
        ProviderKind::Gemini => gemini::error_message(body),
        ProviderKind::Cohere => cohere::error_message(body),
        ProviderKind::Bedrock => bedrock::error_message(body),
    }?;
    Some(message.chars().take(500).collect())
}

/// The gateway's credentials were refused, whatever status the provider chose to say it with
/// (Gemini answers a bad key with 400 `API_KEY_INVALID`).
fn auth_refused(kind: ProviderKind, status: u16, body: &[u8]) -> bool {
    match status {
        401 => true,
        403 => !matches!(kind, ProviderKind::OpenAi),
        400 if kind == ProviderKind::Gemini => {
            memchr::memmem::find(body, b"API_KEY_INVALID").is_some()
        }
        _ => status == 403,
    }
}

/// `Retry-After` as the provider sent it, or from `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<HeaderValue> {
    if let Some(value) = headers.get(header::RETRY_AFTER) {
        return Some(value.clone());
    }
    let millis: f64 = headers
        .get(header_names::RETRY_AFTER_MS)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    HeaderValue::from_str(&format!("{}", (millis / 1000.0).ceil().max(1.0) as u64)).ok()
}

/// Maps an upstream's error status for the client: client errors pass through with the
/// provider's message, authentication problems become the gateway's 502 (the client's key
/// was fine; the configured upstream key was not), overload becomes 503, other server
/// errors 502.
pub(crate) fn upstream_status_error(
    route: &Route,
    kind: ProviderKind,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    exchange: &mut Exchange,
) -> ApiError {
    let provider = &route.provider.name;
    let code = status.as_u16();
    exchange.upstream_error_class = Some(if status.is_server_error() {
        "status_5xx"
    } else {
        "status_4xx"
    });
    let detail = upstream_message(kind, body)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    if auth_refused(kind, code, body) {
        tracing::error!(provider = %provider, status = code, "Upstream rejected the configured credentials.");
        return ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_auth_failed",
            format!(
                "The provider `{provider}` rejected the gateway's credentials (HTTP {status}). An operator must fix its api_key."
            ),
        );
    }
    match code {
        429 => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "upstream_rate_limited",
                format!("The provider `{provider}` is rate limiting requests{detail}"),
            );
            error.retry_after = retry_after(headers);
            error
        }
        503 | 529 => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_overloaded",
                format!("The provider `{provider}` is overloaded (HTTP {code}){detail}"),
            );
            error.retry_after = retry_after(headers);
            error
        }
        400..=499 => ApiError::new(
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
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

/// The provider's remaining rate-limit capacity, passed on as
/// `x-atalaya-upstream-ratelimit-remaining-{requests,tokens}`.
pub(crate) fn rate_limit_notes(
    kind: ProviderKind,
    response: &UpstreamResponse,
) -> Vec<(HeaderName, HeaderValue)> {
    use header_names::*;
    let (requests, tokens) = match kind {
        ProviderKind::OpenAi | ProviderKind::Azure => {
            (OPENAI_REMAINING_REQUESTS, OPENAI_REMAINING_TOKENS)
        }
        ProviderKind::Anthropic => (ANTHROPIC_REMAINING_REQUESTS, ANTHROPIC_REMAINING_TOKENS),
        _ => return Vec::new(),
    };
    [
        (requests, UPSTREAM_REMAINING_REQUESTS),
        (tokens, UPSTREAM_REMAINING_TOKENS),
    ]
    .into_iter()
    .filter_map(|(from, to)| Some((to, response.header(&from)?)))
    .collect()
}

pub(crate) fn with_notes(
    mut response: Response,
    notes: Vec<(HeaderName, HeaderValue)>,
) -> Response {
    for (name, value) in notes {
        response.headers_mut().insert(name, value);
    }
    response
}
