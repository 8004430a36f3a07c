//! The simulator's HTTP surface: each provider's paths and authentication, plus `/_mock/*`
//! for tests to read what it saw and to inject faults.
//!
//! | format | paths | credentials |
//! |---|---|---|
//! | OpenAI (and Mistral, and every OpenAI-compatible server) | `/v1/chat/completions`, `/v1/embeddings`, `/v1/models` | `Authorization: Bearer` |
//! | Azure OpenAI | `/openai/deployments/{deployment}/chat/completions` and `/embeddings`, `?api-version=` | `api-key` |
//! | Anthropic | `/v1/messages` | `x-api-key`, `anthropic-version` |
//! | Gemini | `/v1beta/models/{model}:generateContent`, `:streamGenerateContent`, `:embedContent`, `:batchEmbedContents` | `x-goog-api-key` or `?key=` |
//! | Cohere | `/v2/chat`, `/v2/embed` | `Authorization: Bearer` |
//! | Bedrock | `/model/{modelId}/converse`, `/converse-stream` | AWS Signature Version 4 |

// Checks return the finished error response; boxing it would only add noise here.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atalaya_translate::sigv4;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::openai::{self, ApiError, ChatAnswer};
use crate::profile::Profile;
use crate::{anthropic, bedrock, cohere, gemini};

/// How the simulator behaves. `Default` serves OpenAI's common models with no delay.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before the response headers, like a provider's queueing and prefill time.
    pub latency: Duration,
    /// Streaming pace; 0 sends every chunk at once.
    pub tokens_per_second: f64,
    /// When set, requests must carry this key (in each format's header); otherwise any
    /// non-empty key is accepted.
    pub api_key: Option<String>,
    /// Bedrock requests must be signed with this key pair.
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    /// Models of the OpenAI paths; other formats accept any model name.
    pub models: Vec<MockModel>,
    /// How the simulator misbehaves; replaceable at run time (`PUT /_mock/profile`).
    pub profile: Profile,
}

/// The AWS credentials the simulator accepts unless told otherwise.
pub const DEFAULT_AWS_ACCESS_KEY_ID: &str = "AKIDMOCKPROVIDER";
pub const DEFAULT_AWS_SECRET_ACCESS_KEY: &str = "mock-provider-secret";

#[derive(Debug, Clone)]
pub struct MockModel {
    pub id: String,
    /// `None` for chat models; the vector size for embedding models.
    pub embedding_dimensions: Option<usize>,
}

impl MockModel {
    pub fn chat(id: &str) -> Self {
        MockModel {
            id: id.to_owned(),
            embedding_dimensions: None,
        }
    }

    pub fn embedding(id: &str, dimensions: usize) -> Self {
        MockModel {
            id: id.to_owned(),
            embedding_dimensions: Some(dimensions),
        }
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        let chat = [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "o3-mini",
            "o4-mini",
            "mistral-large-latest",
            "mistral-small-latest",
        ];
        let mut models: Vec<MockModel> = chat.iter().map(|id| MockModel::chat(id)).collect();
        models.push(MockModel::embedding("text-embedding-3-small", 1536));
        models.push(MockModel::embedding("text-embedding-3-large", 3072));
        models.push(MockModel::embedding("text-embedding-ada-002", 1536));
        models.push(MockModel::embedding("mistral-embed", 1024));
        MockConfig {
            latency: Duration::ZERO,
            tokens_per_second: 0.0,
            api_key: None,
            aws_access_key_id: DEFAULT_AWS_ACCESS_KEY_ID.to_owned(),
            aws_secret_access_key: DEFAULT_AWS_SECRET_ACCESS_KEY.to_owned(),
            models,
            profile: Profile::default(),
        }
    }
}

/// Counters a test reads through `GET /_mock/stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    /// Streams whose reader went away before the last event was sent.
    pub streams_cancelled: AtomicU64,
    /// Requests answered with an injected fault.
    pub faults_injected: AtomicU64,
    /// Requests that came over HTTP/2 (h2c, prior knowledge).
    pub http2_requests: AtomicU64,
}

/// One request as the simulator received it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// An injected failure, set through `POST /_mock/faults`: the next matching requests get
/// this status (in the format of the path they called) instead of an answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub status: u16,
    /// Seconds, sent as `Retry-After` (and in each format's own rate-limit headers).
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// How many requests it applies to; unlimited when absent.
    #[serde(default)]
    pub times: Option<u32>,
    /// Only requests whose path contains this.
    #[serde(default)]
    pub path: Option<String>,
    /// The error message; each format's usual one when absent.
    #[serde(default)]
    pub message: Option<String>,
}

const RECORDED_REQUESTS: usize = 64;

type RecordedRequest = (Method, Uri, HeaderMap, Bytes);

pub struct MockState {
    config: MockConfig,
    pub stats: Stats,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    faults: Mutex<Vec<Fault>>,
    profile: Mutex<Profile>,
}

/// The wire format of a path, which decides auth and error shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Cohere,
    Bedrock,
}

impl MockState {
    pub fn new(config: MockConfig) -> Arc<Self> {
        Arc::new(MockState {
            stats: Stats::default(),
            recorded: Mutex::new(VecDeque::new()),
            faults: Mutex::new(Vec::new()),
            profile: Mutex::new(config.profile.clone()),
            config,
        })
    }

    fn record(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut recorded) = self.recorded.lock() {
            if recorded.len() == RECORDED_REQUESTS {
                recorded.pop_front();
            }
            recorded.push_back((method, uri, headers, body));
        }
    }

    /// Takes one use of the first fault matching `path`.
    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().ok()?;
        let index = faults
            .iter()
            .position(|f| f.path.as_deref().is_none_or(|p| path.contains(p)))?;
        let fault = faults[index].clone();
        if let Some(times) = faults[index].times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                faults.remove(index);
            }
        }
        self.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
        Some(fault)
    }

    fn model(&self, id: &str) -> Option<&MockModel> {
        self.config.models.iter().find(|m| m.id == id)
    }

    fn key_ok(&self, presented: Option<&str>) -> Result<(), bool> {
        match (
            presented.map(str::trim).filter(|k| !k.is_empty()),
            &self.config.api_key,
        ) {
            (None, _) => Err(false),
            (Some(given), Some(expected)) if given != expected => Err(true),
            _ => Ok(()),
        }
    }

    fn gap(&self) -> Duration {
        if self.config.tokens_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / self.config.tokens_per_second)
        } else {
            Duration::ZERO
        }
    }

    async fn wait(&self) {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
    }
}

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure_embeddings),
        )
        .route("/v1/messages", post(messages))
        .route("/v1beta/models/{*action}", post(gemini_action))
        .route("/v2/chat", post(cohere_chat))
        .route("/v2/embed", post(cohere_embed))
        .route("/model/{model_id}/converse", post(converse))
        .route("/model/{model_id}/converse-stream", post(converse_stream))
        .route("/_mock/stats", get(stats))
        .route("/_mock/requests", get(recorded))
        .route(
            "/_mock/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/_mock/profile", get(get_profile).put(put_profile))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_versions,
        ))
        .with_state(state)
}

/// Counts HTTP/2 requests, so tests can tell which protocol a client used.
async fn count_versions(
    State(state): State<Arc<MockState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.version() == http::Version::HTTP_2 {
        state.stats.http2_requests.fetch_add(1, Ordering::Relaxed);
    }
    next.run(request).await
}

/// Serves until `shutdown` resolves. Sockets get `TCP_NODELAY`, as every upstream should.
/// An HTTP/2 client may open up to 100,000 streams on one connection: a load test of 10,000
/// concurrent streams over a few h2c connections measures the client, not a queue here.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = atalaya_http_server::CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.cancel();
    });
    let router = router(state);
    let options = atalaya_http_server::Options {
        http2_max_concurrent_streams: Some(100_000),
    };
    atalaya_http_server::serve(listener, |_| router.clone(), options, stop).await;
    Ok(())
}

fn with_body(
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = response.headers_mut();
    map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        map.insert(name, value);
    }
    response
}

fn json_response(body: Vec<u8>) -> Response {
    with_body(200, "application/json", body, Vec::new())
}

fn openai_error(error: &ApiError) -> Response {
    with_body(error.status, "application/json", error.body(), Vec::new())
}

fn header_value(value: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&value.to_string()).unwrap_or(HeaderValue::from_static("0"))
}

/// Each provider's rate-limit headers; `exhausted` for a 429.
fn rate_limit_headers(
    format: Format,
    retry_after: Option<u64>,
    exhausted: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    let remaining = if exhausted { 0 } else { 9_999 };
    let mut headers = Vec::new();
    let mut add = |name: &'static str, value: String| {
        headers.push((HeaderName::from_static(name), header_value(value)));
    };
    match format {
        Format::OpenAi | Format::Azure => {
            add("x-ratelimit-limit-requests", "10000".into());
            add("x-ratelimit-remaining-requests", remaining.to_string());
            add(
                "x-ratelimit-reset-requests",
                format!("{}s", retry_after.unwrap_or(0)),
            );
            add("x-ratelimit-limit-tokens", "30000000".into());
            add(
                "x-ratelimit-remaining-tokens",
                if exhausted {
                    "0".into()
                } else {
                    "29999000".into()
                },
            );
            add("x-ratelimit-reset-tokens", "0s".into());
        }
        Format::Anthropic => {
            let reset = crate::openai::unix_now() + retry_after.unwrap_or(0);
            add("anthropic-ratelimit-requests-limit", "4000".into());
            add(
                "anthropic-ratelimit-requests-remaining",
                remaining.to_string(),
            );
            add("anthropic-ratelimit-requests-reset", rfc3339(reset));
            add("anthropic-ratelimit-tokens-limit", "400000".into());
            add(
                "anthropic-ratelimit-tokens-remaining",
                if exhausted {
                    "0".into()
                } else {
                    "399000".into()
                },
            );
            add("anthropic-ratelimit-tokens-reset", rfc3339(reset));
        }
        Format::Gemini | Format::Cohere | Format::Bedrock => {}
    }
    if let Some(seconds) = retry_after {
        headers.push((header::RETRY_AFTER, header_value(seconds)));
    }
    headers
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds.
fn rfc3339(unix_seconds: u64) -> String {
    let stamp = sigv4::amz_date(unix_seconds);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

/// An error of `status` in `format`'s shape.
fn error_in(
    format: Format,
    status: u16,
    message: Option<&str>,
    retry_after: Option<u64>,
) -> Response {
    let mut headers = rate_limit_headers(format, retry_after, status == 429);
    let body = match format {
        Format::OpenAi | Format::Azure => {
            let (kind, code, default) = match status {
                429 => (
                    "requests",
                    Some("rate_limit_exceeded"),
                    "Rate limit reached for requests. Please try again later.",
                ),
                401 => ("invalid_request_error", Some("invalid_api_key"), "Incorrect API key provided."),
                400..=499 => ("invalid_request_error", None, "The request was rejected."),
                503 => ("server_error", None, "The engine is currently overloaded, please try again later."),
                _ => (
                    "server_error",
                    None,
                    "The server had an error while processing your request. Sorry about that!",
                ),
            };
            ApiError {
                status,
                message: message.unwrap_or(default).to_owned(),
                kind,
                param: None,
                code,
            }
            .body()
        }
        Format::Anthropic => {
            let default = match status {
                429 => "Number of request tokens has exceeded your per-minute rate limit.",
                529 => "Overloaded",
                _ => "Internal server error",
            };
            headers.push((HeaderName::from_static("request-id"), header_value(request_id())));
            anthropic::Error {
                status,
                kind: anthropic::error_kind(status),
                message: message.unwrap_or(default).to_owned(),
            }
            .body(&request_id())
        }
        Format::Gemini => gemini::Error {
            status,
            message: message
                .unwrap_or(match status {
                    429 => "Resource has been exhausted (e.g. check quota).",
                    503 => "The model is overloaded. Please try again later.",
                    _ => "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                })
                .to_owned(),
            reason: None,
        }
        .body(),
        Format::Cohere => cohere::Error {
            status,
            message: message
                .unwrap_or(match status {
                    429 => "You are past the per minute request limit, please wait and try again later.",
                    _ => "internal server error, this has been reported to our developers",
                })
                .to_owned(),
        }
        .body(&request_id()),
        Format::Bedrock => {
            let error = bedrock::Error {
                status,
                kind: bedrock::exception_for(status),
                message: message
                    .unwrap_or(match status {
                        429 => "Too many requests, please wait before trying again.",
                        _ => "The system encountered an unexpected error during processing. Try your request again.",
                    })
                    .to_owned(),
            };
            headers.push((
                HeaderName::from_static("x-amzn-errortype"),
                header_value(error.error_type()),
            ));
            error.body()
        }
    };
    with_body(status, "application/json", body, headers)
}

fn request_id() -> String {
    format!(
        "req_011C{:016x}",
        crate::openai::next_counter().wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

/// How an answer that goes ahead is bent by the fault profile.
#[derive(Debug, Clone, Default)]
struct Shaping {
    slow_chunk: Option<Duration>,
    disconnect_after: Option<usize>,
    malformed: bool,
}

impl Shaping {
    /// A whole body, cut in half when it is to be malformed.
    fn body(&self, body: Vec<u8>) -> Vec<u8> {
        if self.malformed {
            let mut body = body;
            body.truncate(body.len() / 2);
            body
        } else {
            body
        }
    }
}

/// The model a request names, in the body or (Gemini, Bedrock, Azure) the path.
fn model_of(uri: &Uri, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct WithModel {
        model: Option<String>,
    }
    if let Ok(WithModel { model: Some(model) }) = serde_json::from_slice::<WithModel>(body) {
        return Some(model);
    }
    let path = uri.path();
    for prefix in ["/v1beta/models/", "/model/", "/openai/deployments/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let end = rest.find([':', '/']).unwrap_or(rest.len());
            return Some(rest[..end].replace("%3A", ":"));
        }
    }
    None
}

/// Records the request, then applies a pending one-shot fault or the fault profile: an
/// early answer (`Err`), or how to bend the real one.
async fn intake(
    state: &MockState,
    format: Format,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Shaping, Response> {
    state.record(method, uri.clone(), headers.clone(), body.clone());
    if let Some(fault) = state.take_fault(uri.path()) {
        return Err(error_in(
            format,
            fault.status,
            fault.message.as_deref(),
            fault.retry_after,
        ));
    }
    let rule = {
        let profile = state.profile.lock().map(|p| p.clone()).unwrap_or_default();
        if profile.rules.is_empty() {
            return Ok(Shaping::default());
        }
        let model = model_of(uri, body);
        profile
            .pick(uri.path(), model.as_deref(), rand::random::<f64>())
            .cloned()
    };
    let Some(rule) = rule else {
        return Ok(Shaping::default());
    };
    state.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
    if let Some(latency) = &rule.latency_ms {
        tokio::time::sleep(latency.sample(rand::random(), rand::random())).await;
    }
    if rule.hang {
        std::future::pending::<()>().await;
    }
    if let Some(status) = rule.status {
        return Err(error_in(
            format,
            status,
            rule.message.as_deref(),
            rule.retry_after,
        ));
    }
    if rule.wrong_content_type {
        return Err(with_body(
            200,
            "text/html; charset=utf-8",
            b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
            Vec::new(),
        ));
    }
    Ok(Shaping {
        slow_chunk: rule.slow_chunk_ms.map(Duration::from_millis),
        disconnect_after: rule.disconnect_after,
        malformed: rule.malformed,
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Streams `chunks` with the configured pace; counts completion and cancellation.
fn stream(
    state: &Arc<MockState>,
    mut chunks: Vec<Bytes>,
    content_type: &'static str,
    extra: Vec<(HeaderName, HeaderValue)>,
    shaping: &Shaping,
) -> Response {
    state.stats.streams_started.fetch_add(1, Ordering::Relaxed);
    if shaping.malformed && chunks.len() > 2 {
        // A cut-off event in the middle: JSON that never closes.
        let middle = chunks.len() / 2;
        let broken = chunks[middle].slice(..chunks[middle].len() / 2);
        chunks[middle] = broken;
    }
    let cut = shaping.disconnect_after.filter(|n| *n < chunks.len());
    if let Some(keep) = cut {
        chunks.truncate(keep);
    }
    let mut guard = StreamGuard {
        state: state.clone(),
        remaining: chunks.len() + usize::from(cut.is_some()),
    };
    let gap = shaping.slow_chunk.unwrap_or_else(|| state.gap());
    let events = futures_util::StreamExt::map(paced(chunks, gap), move |chunk| guard.passed(chunk));
    // An error ends the body without its terminating chunk: the connection drops mid-answer.
    // It waits a moment first, or the server would drop the chunks still in its write buffer
    // and the cut would look like a stream that never started.
    let tail = futures_util::StreamExt::filter_map(futures_util::stream::iter(cut), |_| async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault profile: connection dropped mid-stream",
        )))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(events, tail));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in extra {
        headers.insert(name, value);
    }
    response
}

const SSE: &str = "text/event-stream; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// OpenAI and Azure OpenAI

fn openai_auth(state: &MockState, headers: &HeaderMap) -> Result<(), Response> {
    state.key_ok(bearer(headers)).map_err(|wrong| {
        let error = if wrong {
            let given = bearer(headers).unwrap_or_default();
            let tail: String = given.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            ApiError {
                status: 401,
                message: format!("Incorrect API key provided: ****{tail}."),
                kind: "invalid_request_error",
                param: None,
                code: Some("invalid_api_key"),
            }
        } else {
            ApiError {
                status: 401,
                message: "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".to_owned(),
                kind: "invalid_request_error",
                param: None,
                code: None,
            }
        };
        openai_error(&error)
    })
}

fn azure_auth(state: &MockState, headers: &HeaderMap, uri: &Uri) -> Result<(), Response> {
    if !uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| p.starts_with("api-version="))
    {
        return Err(with_body(
            404,
            "application/json",
            br#"{"error":{"code":"404","message":"Resource not found"}}"#.to_vec(),
            Vec::new(),
        ));
    }
    state
        .key_ok(header_str(headers, "api-key").or_else(|| bearer(headers)))
        .map_err(|_| {
            with_body(
                401,
                "application/json",
                br#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#.to_vec(),
                Vec::new(),
            )
        })
}

async fn chat(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::OpenAi, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = openai_auth(&state, &headers) {
        return response;
    }
    openai_chat(&state, &body, None, Format::OpenAi, &shaping).await
}

async fn azure_chat(
    State(state): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::Azure, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = azure_auth(&state, &headers, &uri) {
        return response;
    }
    openai_chat(&state, &body, Some(deployment), Format::Azure, &shaping).await
}

/// OpenAI's chat; on Azure the deployment, not the body, names the model.
async fn openai_chat(
    state: &Arc<MockState>,
    body: &[u8],
    deployment: Option<String>,
    format: Format,
    shaping: &Shaping,
) -> Response {
    let mut params = match openai::parse_chat(body) {
        Ok(params) => params,
        Err(error) => return openai_error(&error),
    };
    if let Some(deployment) = deployment {
        params.model = deployment;
    } else {
        match state.model(&params.model) {
            None => return openai_error(&ApiError::model_not_found(&params.model)),
            Some(model) if model.embedding_dimensions.is_some() => {
                return openai_error(&ApiError {
                    status: 404,
                    message: "This is not a chat model and thus not supported in the v1/chat/completions endpoint.".to_owned(),
                    kind: "invalid_request_error",
                    param: Some("model".to_owned()),
                    code: None,
                });
            }
            Some(_) => {}
        }
    }
    state.wait().await;
    let answer = ChatAnswer::generate(&params);
    let headers = rate_limit_headers(format, None, false);
    if !params.stream {
        return with_body(
            200,
            "application/json",
            shaping.body(answer.json()),
            headers,
        );
    }
    stream(state, answer.events(), SSE, headers, shaping)
}

async fn embeddings(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::OpenAi, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = openai_auth(&state, &headers) {
        return response;
    }
    let params = match openai::parse_embeddings(&body) {
        Ok(params) => params,
        Err(error) => return openai_error(&error),
    };
    let dimensions = match state.model(&params.model) {
        Some(MockModel {
            embedding_dimensions: Some(dimensions),
            ..
        }) => *dimensions,
        Some(_) => {
            return openai_error(&ApiError::invalid_request(
                format!("The model `{}` does not support embeddings.", params.model),
                Some("model"),
                None,
            ));
        }
        None => return openai_error(&ApiError::model_not_found(&params.model)),
    };
    state.wait().await;
    match openai::embeddings_json(&params, dimensions) {
        Ok(body) => json_response(shaping.body(body)),
        Err(error) => openai_error(&error),
    }
}

async fn azure_embeddings(
    State(state): State<Arc<MockState>>,
    Path(deployment): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::Azure, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = azure_auth(&state, &headers, &uri) {
        return response;
    }
    let mut params = match openai::parse_embeddings(&body) {
        Ok(params) => params,
        Err(error) => return openai_error(&error),
    };
    params.model = deployment;
    state.wait().await;
    match openai::embeddings_json(&params, 1536) {
        Ok(body) => json_response(shaping.body(body)),
        Err(error) => openai_error(&error),
    }
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

fn model_object(model: &MockModel) -> ModelObject<'_> {
    ModelObject {
        id: &model.id,
        object: "model",
        created: 1_715_367_049,
        owned_by: "system",
    }
}

/// The model list (OpenAI's shape; Anthropic and Cohere list theirs at the same path). The
/// fault profile applies here too: a provider that is down does not answer its model list
/// either, which is what the gateway's health probes ask for.
async fn models(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = intake(
        &state,
        Format::OpenAi,
        method,
        &uri,
        &headers,
        &Bytes::new(),
    )
    .await
    {
        return response;
    }
    if let Err(response) = openai_auth(&state, &headers) {
        return response;
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<ModelObject<'a>>,
    }
    let list = List {
        object: "list",
        data: state.config.models.iter().map(model_object).collect(),
    };
    json_response(serde_json::to_vec(&list).unwrap_or_default())
}

async fn model(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = openai_auth(&state, &headers) {
        return response;
    }
    match state.model(&id) {
        Some(model) => json_response(serde_json::to_vec(&model_object(model)).unwrap_or_default()),
        None => openai_error(&ApiError::model_not_found(&id)),
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic

async fn messages(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::Anthropic, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    let error = |status: u16, message: &str| {
        with_body(
            status,
            "application/json",
            anthropic::Error {
                status,
                kind: anthropic::error_kind(status),
                message: message.to_owned(),
            }
            .body(&request_id()),
            Vec::new(),
        )
    };
    if state.key_ok(header_str(&headers, "x-api-key")).is_err() {
        return error(401, "invalid x-api-key");
    }
    if header_str(&headers, "anthropic-version").is_none() {
        return error(400, "anthropic-version: header is required");
    }
    let prompt = match anthropic::parse(&body) {
        Ok(prompt) => prompt,
        Err(failure) => return error(failure.status, &failure.message),
    };
    state.wait().await;
    let mut extra = rate_limit_headers(Format::Anthropic, None, false);
    extra.push((
        HeaderName::from_static("request-id"),
        header_value(request_id()),
    ));
    if prompt.stream {
        return stream(&state, anthropic::events(&prompt), SSE, extra, &shaping);
    }
    with_body(
        200,
        "application/json",
        shaping.body(anthropic::answer(&prompt)),
        extra,
    )
}

// ---------------------------------------------------------------------------------------------
// Gemini

#[derive(Deserialize)]
struct GeminiQuery {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    alt: Option<String>,
}

async fn gemini_action(
    State(state): State<Arc<MockState>>,
    Path(action): Path<String>,
    Query(query): Query<GeminiQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::Gemini, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    let error = |failure: gemini::Error| {
        with_body(
            failure.status,
            "application/json",
            failure.body(),
            Vec::new(),
        )
    };
    let key = header_str(&headers, "x-goog-api-key").or(query.key.as_deref());
    match state.key_ok(key) {
        Ok(()) => {}
        Err(false) => {
            return error(gemini::Error {
                status: 403,
                message: "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.".to_owned(),
                reason: None,
            });
        }
        Err(true) => {
            return error(gemini::Error {
                status: 400,
                message: "API key not valid. Please pass a valid API key.".to_owned(),
                reason: Some("API_KEY_INVALID"),
            });
        }
    }
    let Some((model, verb)) = action.rsplit_once(':') else {
        return error(gemini::Error {
            status: 404,
            message: format!(
                "models/{action} is not found for API version v1beta, or is not supported for this method."
            ),
            reason: None,
        });
    };
    match verb {
        "generateContent" | "streamGenerateContent" => {
            let prompt = match gemini::parse(model, &body) {
                Ok(prompt) => prompt,
                Err(failure) => return error(failure),
            };
            state.wait().await;
            if verb == "generateContent" {
                return json_response(shaping.body(gemini::answer(&prompt)));
            }
            if query.alt.as_deref() == Some("sse") {
                stream(
                    &state,
                    gemini::sse_events(&prompt),
                    SSE,
                    Vec::new(),
                    &shaping,
                )
            } else {
                stream(
                    &state,
                    gemini::array_chunks(&prompt),
                    "application/json; charset=UTF-8",
                    Vec::new(),
                    &shaping,
                )
            }
        }
        "embedContent" | "batchEmbedContents" => {
            state.wait().await;
            let result = if verb == "embedContent" {
                gemini::embed(&body)
            } else {
                gemini::batch_embed(&body)
            };
            match result {
                Ok(body) => json_response(body),
                Err(failure) => error(failure),
            }
        }
        other => error(gemini::Error {
            status: 404,
            message: format!("Method `{other}` is not found."),
            reason: None,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Cohere

fn cohere_auth(state: &MockState, headers: &HeaderMap) -> Result<(), Response> {
    state.key_ok(bearer(headers)).map_err(|_| {
        with_body(
            401,
            "application/json",
            cohere::Error {
                status: 401,
                message: "invalid api token".to_owned(),
            }
            .body(&request_id()),
            Vec::new(),
        )
    })
}

async fn cohere_chat(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::Cohere, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = cohere_auth(&state, &headers) {
        return response;
    }
    let prompt = match cohere::parse(&body) {
        Ok(prompt) => prompt,
        Err(failure) => {
            return with_body(
                failure.status,
                "application/json",
                failure.body(&request_id()),
                Vec::new(),
            );
        }
    };
    state.wait().await;
    if prompt.stream {
        return stream(&state, cohere::events(&prompt), SSE, Vec::new(), &shaping);
    }
    json_response(shaping.body(cohere::answer(&prompt)))
}

async fn cohere_embed(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shaping = match intake(&state, Format::Cohere, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = cohere_auth(&state, &headers) {
        return response;
    }
    state.wait().await;
    match cohere::embed(&body) {
        Ok(body) => json_response(shaping.body(body)),
        Err(failure) => with_body(
            failure.status,
            "application/json",
            failure.body(&request_id()),
            Vec::new(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Bedrock

fn bedrock_error(status: u16, kind: &'static str, message: &str) -> Response {
    let error = bedrock::Error {
        status,
        kind,
        message: message.to_owned(),
    };
    with_body(
        status,
        "application/json",
        error.body(),
        vec![(
            HeaderName::from_static("x-amzn-errortype"),
            header_value(error.error_type()),
        )],
    )
}

/// Checks the request's Signature Version 4 against the configured key pair.
fn verify_signature(
    state: &MockState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let Some(authorization) =
        header_str(headers, "authorization").and_then(sigv4::parse_authorization)
    else {
        return Err(bedrock_error(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    if authorization.access_key_id != state.config.aws_access_key_id {
        return Err(bedrock_error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    let payload_hash = sigv4::hex(&sha2::Sha256::digest(body));
    if header_str(headers, "x-amz-content-sha256").is_some_and(|h| h != payload_hash) {
        return Err(bedrock_error(
            400,
            "ValidationException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
    let amz_date = header_str(headers, "x-amz-date").unwrap_or_default();
    let signed: Vec<(String, String)> = authorization
        .signed_headers
        .iter()
        .map(|name| {
            (
                name.clone(),
                header_str(headers, name).unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let credentials = sigv4::Credentials {
        access_key_id: &authorization.access_key_id,
        secret_access_key: &state.config.aws_secret_access_key,
        session_token: None,
        region: &authorization.region,
        service: &authorization.service,
    };
    let request = sigv4::Request {
        method: "POST",
        host: header_str(headers, "host").unwrap_or_default(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers: &[],
        body,
        amz_date,
    };
    if authorization.service != "bedrock"
        || sigv4::signature(&credentials, &request, &signed, &payload_hash)
            != authorization.signature
    {
        return Err(bedrock_error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

async fn converse(
    state: State<Arc<MockState>>,
    model_id: Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bedrock_call(state, model_id, method, uri, headers, body, false).await
}

async fn converse_stream(
    state: State<Arc<MockState>>,
    model_id: Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bedrock_call(state, model_id, method, uri, headers, body, true).await
}

async fn bedrock_call(
    State(state): State<Arc<MockState>>,
    Path(model_id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    streamed: bool,
) -> Response {
    let shaping = match intake(&state, Format::Bedrock, method, &uri, &headers, &body).await {
        Ok(shaping) => shaping,
        Err(response) => return response,
    };
    if let Err(response) = verify_signature(&state, &uri, &headers, &body) {
        return response;
    }
    let prompt = match bedrock::parse(&model_id, &body) {
        Ok(prompt) => prompt,
        Err(failure) => return bedrock_error(failure.status, failure.kind, &failure.message),
    };
    state.wait().await;
    if streamed {
        stream(
            &state,
            bedrock::frames(&prompt),
            "application/vnd.amazon.eventstream",
            Vec::new(),
            &shaping,
        )
    } else {
        json_response(shaping.body(bedrock::answer(&prompt)))
    }
}

// ---------------------------------------------------------------------------------------------
// Streams and the simulator's own endpoints

/// Sends `events` one by one, `gap` apart (the first at once).
pub fn paced<I>(
    events: I,
    gap: Duration,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static
where
    I: IntoIterator<Item = Bytes>,
    I::IntoIter: Send + 'static,
{
    futures_util::stream::unfold(
        (events.into_iter(), true),
        move |(mut events, first)| async move {
            let event = events.next()?;
            if !first && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            Some((event, (events, false)))
        },
    )
}

/// Counts a stream as completed once its last event was taken, as cancelled if dropped before.
struct StreamGuard {
    state: Arc<MockState>,
    remaining: usize,
}

impl StreamGuard {
    fn passed(&mut self, event: Bytes) -> Result<Bytes, std::io::Error> {
        self.remaining = self.remaining.saturating_sub(1);
        Ok(event)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let stats = &self.state.stats;
        let counter = if self.remaining == 0 {
            &stats.streams_completed
        } else {
            &stats.streams_cancelled
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn stats(State(state): State<Arc<MockState>>) -> Response {
    json_response(serde_json::to_vec(&state.stats).unwrap_or_default())
}

async fn recorded(State(state): State<Arc<MockState>>) -> Response {
    let recorded: Vec<Recorded> = match state.recorded.lock() {
        Ok(recorded) => recorded
            .iter()
            .map(|(method, uri, headers, body)| Recorded {
                method: method.to_string(),
                path: uri.to_string(),
                headers: headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    json_response(serde_json::to_vec(&recorded).unwrap_or_default())
}

async fn add_fault(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) if (400..=599).contains(&fault.status) => {
            if let Ok(mut faults) = state.faults.lock() {
                faults.push(fault);
            }
            with_body(201, "application/json", br#"{"status":"added"}"#.to_vec(), Vec::new())
        }
        Ok(_) => with_body(400, "application/json", br#"{"error":"status must be 400..599"}"#.to_vec(), Vec::new()),
        Err(error) => with_body(
            400,
            "application/json",
            serde_json::to_vec(&serde_json::json!({"error": format!("expected {{\"status\", \"retry_after\"?, \"times\"?, \"path\"?, \"message\"?}}: {error}")})).unwrap_or_default(),
            Vec::new(),
        ),
    }
}

async fn get_profile(State(state): State<Arc<MockState>>) -> Response {
    let profile = state.profile.lock().map(|p| p.clone()).unwrap_or_default();
    json_response(serde_json::to_vec(&profile).unwrap_or_default())
}

/// Replaces the fault profile: a profile object, or `{"name": "<built-in>"}`.
async fn put_profile(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let profile = match serde_json::from_slice::<Profile>(&body) {
        Ok(Profile {
            name: Some(name),
            rules,
        }) if rules.is_empty() => crate::profile::named(&name).ok_or_else(|| {
            format!(
                "no built-in profile is named `{name}`; use one of {}",
                crate::profile::NAMES.join(", ")
            )
        }),
        Ok(profile) => profile.validate().map(|()| profile),
        Err(error) => Err(error.to_string()),
    };
    match profile {
        Ok(profile) => {
            tracing::info!(
                profile = profile.name.as_deref().unwrap_or("(unnamed)"),
                rules = profile.rules.len(),
                "Fault profile replaced."
            );
            if let Ok(mut current) = state.profile.lock() {
                *current = profile;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => with_body(
            400,
            "application/json",
            serde_json::to_vec(&serde_json::json!({"error": message})).unwrap_or_default(),
            Vec::new(),
        ),
    }
}

async fn list_faults(State(state): State<Arc<MockState>>) -> Response {
    let faults = state.faults.lock().map(|f| f.clone()).unwrap_or_default();
    json_response(serde_json::to_vec(&faults).unwrap_or_default())
}

async fn clear_faults(State(state): State<Arc<MockState>>) -> Response {
    if let Ok(mut faults) = state.faults.lock() {
        faults.clear();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    openai_error(&ApiError {
        status: 404,
        message: format!("Invalid URL ({method} {})", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: None,
    })
}
