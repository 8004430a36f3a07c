//! The simulator's HTTP surface: OpenAI's paths, plus `/_mock/*` for tests to read what it saw.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde::Serialize;

use crate::openai::{self, ApiError, ChatAnswer};

/// How the simulator behaves. `Default` serves OpenAI's common models with no delay.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before the response headers, like a provider's queueing and prefill time.
    pub latency: Duration,
    /// Streaming pace; 0 sends every chunk at once.
    pub tokens_per_second: f64,
    /// When set, requests must carry `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    pub models: Vec<MockModel>,
}

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
        ];
        let mut models: Vec<MockModel> = chat.iter().map(|id| MockModel::chat(id)).collect();
        models.push(MockModel::embedding("text-embedding-3-small", 1536));
        models.push(MockModel::embedding("text-embedding-3-large", 3072));
        models.push(MockModel::embedding("text-embedding-ada-002", 1536));
        MockConfig {
            latency: Duration::ZERO,
            tokens_per_second: 0.0,
            api_key: None,
            models,
        }
    }
}

/// Counters a test reads through `GET /_mock/stats`.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    /// Streams whose reader went away before `[DONE]` was sent.
    pub streams_cancelled: AtomicU64,
}

/// One request as the simulator received it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

const RECORDED_REQUESTS: usize = 64;

pub struct MockState {
    config: MockConfig,
    pub stats: Stats,
    recorded: Mutex<VecDeque<(Method, Uri, HeaderMap, Bytes)>>,
}

impl MockState {
    pub fn new(config: MockConfig) -> Arc<Self> {
        Arc::new(MockState {
            config,
            stats: Stats::default(),
            recorded: Mutex::new(VecDeque::new()),
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

    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let unauthorized = |message: String, code| ApiError {
            status: 401,
            message,
            kind: "invalid_request_error",
            param: None,
            code,
        };
        match (presented, &self.config.api_key) {
            (None, _) => Err(unauthorized(
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".to_owned(),
                None,
            )),
            (Some(given), Some(expected)) if given != expected => {
                let tail: String = given.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
                Err(unauthorized(format!("Incorrect API key provided: ****{tail}."), Some("invalid_api_key")))
            }
            _ => Ok(()),
        }
    }

    fn model(&self, id: &str) -> Option<&MockModel> {
        self.config.models.iter().find(|m| m.id == id)
    }
}

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/_mock/stats", get(stats))
        .route("/_mock/requests", get(recorded))
        .fallback(not_found)
        .with_state(state)
}

/// Serves until `shutdown` resolves. Sockets get `TCP_NODELAY`, as every upstream should.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        error.body(),
    )
        .into_response()
}

fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn chat(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record(method, uri, headers.clone(), body.clone());
    if let Err(error) = state.authorize(&headers) {
        return error_response(&error);
    }
    let params = match openai::parse_chat(&body) {
        Ok(params) => params,
        Err(error) => return error_response(&error),
    };
    match state.model(&params.model) {
        None => return error_response(&ApiError::model_not_found(&params.model)),
        Some(model) if model.embedding_dimensions.is_some() => {
            return error_response(&ApiError {
                status: 404,
                message: "This is not a chat model and thus not supported in the v1/chat/completions endpoint.".to_owned(),
                kind: "invalid_request_error",
                param: Some("model".to_owned()),
                code: None,
            });
        }
        Some(_) => {}
    }
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    let answer = ChatAnswer::generate(&params);
    if !params.stream {
        return json_response(answer.json());
    }
    state.stats.streams_started.fetch_add(1, Ordering::Relaxed);
    let gap = if state.config.tokens_per_second > 0.0 {
        Duration::from_secs_f64(1.0 / state.config.tokens_per_second)
    } else {
        Duration::ZERO
    };
    let events = answer.events();
    let mut guard = StreamGuard {
        state: state.clone(),
        remaining: events.len(),
    };
    let body = Body::from_stream(futures_util::StreamExt::map(
        paced(events, gap),
        move |event| guard.passed(event),
    ));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Sends `events` one by one, `gap` apart (the first at once).
pub fn paced(
    events: Vec<Bytes>,
    gap: Duration,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
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

async fn embeddings(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record(method, uri, headers.clone(), body.clone());
    if let Err(error) = state.authorize(&headers) {
        return error_response(&error);
    }
    let params = match openai::parse_embeddings(&body) {
        Ok(params) => params,
        Err(error) => return error_response(&error),
    };
    let dimensions = match state.model(&params.model) {
        Some(MockModel {
            embedding_dimensions: Some(dimensions),
            ..
        }) => *dimensions,
        Some(_) => {
            return error_response(&ApiError::invalid_request(
                format!("The model `{}` does not support embeddings.", params.model),
                Some("model"),
                None,
            ));
        }
        None => return error_response(&ApiError::model_not_found(&params.model)),
    };
    if !state.config.latency.is_zero() {
        tokio::time::sleep(state.config.latency).await;
    }
    match openai::embeddings_json(&params, dimensions) {
        Ok(body) => json_response(body),
        Err(error) => error_response(&error),
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

async fn models(State(state): State<Arc<MockState>>, headers: HeaderMap) -> Response {
    if let Err(error) = state.authorize(&headers) {
        return error_response(&error);
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
    if let Err(error) = state.authorize(&headers) {
        return error_response(&error);
    }
    match state.model(&id) {
        Some(model) => json_response(serde_json::to_vec(&model_object(model)).unwrap_or_default()),
        None => error_response(&ApiError::model_not_found(&id)),
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

async fn not_found(method: Method, uri: Uri) -> Response {
    error_response(&ApiError {
        status: 404,
        message: format!("Invalid URL ({method} {})", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: None,
    })
}
