//! Provider adapters and the table that maps a requested model to one of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use atalaya_telemetry::otlp::SpanId;
use atalaya_translate::openai::Quirks;
use atalaya_translate::{Target, sigv4};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use secrecy::ExposeSecret as _;

use crate::catalog::ModelInfo;
use crate::config::{AwsSettings, GatewayConfig, ProviderKind, ProviderSettings, SimSettings};
use crate::http_client::{ClientSettings, HttpClient, UpstreamResponse};
use crate::routing::{KeyRing, Routing};

/// The built-in simulated provider's name and models.
pub const SIM_PROVIDER: &str = "sim";
pub const SIM_CHAT_MODEL: &str = "sim-chat";
pub const SIM_EMBED_MODEL: &str = "sim-embed";
/// `sim-embed` vector size.
pub const SIM_EMBED_DIMENSIONS: usize = 256;

pub(crate) enum Adapter {
    Sim(SimSettings),
    Upstream(Box<Upstream>),
}

pub(crate) struct Provider {
    pub name: Arc<str>,
    pub adapter: Adapter,
    /// The preset or type it was built from.
    pub preset: String,
    pub source: String,
}

/// Where one attempt goes: a deployment, on this worker's provider.
#[derive(Clone)]
pub(crate) struct Route {
    pub provider: Arc<Provider>,
    pub upstream_model: Arc<str>,
    /// The `model` metric label: a configured name, or `provider/*` for prefix routes, so a
    /// client cannot create labels.
    pub label: Arc<str>,
    /// What the catalog knows of the upstream model (prices, limits), if anything.
    pub info: Option<Arc<ModelInfo>>,
}

/// This worker's providers, by name.
pub(crate) struct Providers {
    by_name: HashMap<String, Arc<Provider>>,
    /// In configuration order.
    order: Vec<Arc<Provider>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("building the HTTP client for provider `{provider}`")]
    Client {
        provider: String,
        #[source]
        source: rustls::Error,
    },
    #[error("provider `{provider}` has an invalid base_url")]
    BaseUrl {
        provider: String,
        #[source]
        source: url::ParseError,
    },
    #[error("provider `{provider}` has a base_url HTTP cannot take")]
    BaseUri {
        provider: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("provider name `{0}` is used twice")]
    DuplicateProvider(String),
}

impl Providers {
    pub fn new(config: &GatewayConfig, routing: &Routing) -> Result<Self, ProviderError> {
        let mut providers = Providers {
            by_name: HashMap::new(),
            order: Vec::new(),
        };
        if let Some(sim) = &config.sim {
            providers.add(Arc::new(Provider {
                name: Arc::from(SIM_PROVIDER),
                adapter: Adapter::Sim(sim.clone()),
                preset: SIM_PROVIDER.to_owned(),
                source: "built in".to_owned(),
            }))?;
        }
        let mut clients = Clients::default();
        for settings in &config.providers {
            let keys = crate::routing::key_ring(routing, settings);
            providers.add(Arc::new(Provider {
                name: Arc::from(settings.name.as_str()),
                adapter: Adapter::Upstream(Box::new(Upstream::new(settings, keys, &mut clients)?)),
                preset: settings.preset.clone(),
                source: settings.source.clone(),
            }))?;
        }
        Ok(providers)
    }

    fn add(&mut self, provider: Arc<Provider>) -> Result<(), ProviderError> {
        if self
            .by_name
            .insert(provider.name.to_string(), provider.clone())
            .is_some()
        {
            return Err(ProviderError::DuplicateProvider(provider.name.to_string()));
        }
        self.order.push(provider);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    /// Providers in configuration order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.order.iter()
    }
}

/// HTTP clients by their settings: providers that would build the same client share one,
/// and with it one connection pool — several providers (or keys) on one host, or many
/// deployments behind one endpoint, reuse each other's keep-alive connections.
#[derive(Default)]
struct Clients {
    built: Vec<(ClientSettings, HttpClient)>,
}

impl Clients {
    fn get(&mut self, settings: &ProviderSettings) -> Result<HttpClient, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if settings.kind == ProviderKind::Anthropic {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("atalaya/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &settings.headers {
            headers.insert(name.clone(), value.clone());
        }
        let wanted = ClientSettings {
            headers,
            connect_timeout: settings.connect_timeout,
            read_timeout: settings.stream_idle_timeout,
            http2_prior_knowledge: settings.http2_prior_knowledge,
        };
        if let Some((_, client)) = self.built.iter().find(|(built, _)| *built == wanted) {
            return Ok(client.clone());
        }
        let client = HttpClient::new(&wanted).map_err(|source| ProviderError::Client {
            provider: settings.name.clone(),
            source,
        })?;
        self.built.push((wanted, client.clone()));
        Ok(client)
    }
}

/// Why an upstream call produced no response.
#[derive(Debug)]
pub(crate) enum UpstreamFailure {
    Connect(String),
    Timeout(Duration),
    /// Every configured key was refused.
    NoKeys,
    Other(String),
}

/// One call to a provider.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    Chat {
        model: &'a str,
        stream: bool,
    },
    /// `batch`: several inputs (Gemini has a separate batch method).
    Embed {
        model: &'a str,
        batch: bool,
    },
}

/// Any provider over HTTP: one pooled, keep-alive client, the format's URLs and credentials.
pub(crate) struct Upstream {
    client: HttpClient,
    pub kind: ProviderKind,
    pub quirks: Quirks,
    pub drop_unsupported: bool,
    pub timeout: Duration,
    provider: Arc<str>,
    base: String,
    /// Fixed URLs, parsed once; per-model URLs (Azure, Gemini, Bedrock) are built per call.
    chat_url: Option<Endpoint>,
    embeddings_url: Option<Endpoint>,
    api_version: String,
    aws: Option<AwsSettings>,
    keys: Arc<KeyRing>,
}

/// The Anthropic API version sent when the client named none.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";
const AZURE_API_VERSION: &str = "2024-10-21";

impl Upstream {
    fn new(
        settings: &ProviderSettings,
        keys: Arc<KeyRing>,
        clients: &mut Clients,
    ) -> Result<Self, ProviderError> {
        let client = clients.get(settings)?;
        let base = settings.base_url.trim_end_matches('/').to_owned();
        let parse = |path: &str| {
            let url = url::Url::parse(&format!("{base}{path}")).map_err(|source| {
                ProviderError::BaseUrl {
                    provider: settings.name.clone(),
                    source,
                }
            })?;
            let uri =
                http::Uri::try_from(url.as_str()).map_err(|source| ProviderError::BaseUri {
                    provider: settings.name.clone(),
                    source,
                })?;
            Ok(Endpoint {
                url: Arc::new(url),
                uri,
            })
        };
        let (chat_url, embeddings_url) = match settings.kind {
            ProviderKind::OpenAi => (
                Some(parse("/chat/completions")?),
                Some(parse("/embeddings")?),
            ),
            ProviderKind::Anthropic => (Some(parse("/v1/messages")?), None),
            ProviderKind::Cohere => (Some(parse("/v2/chat")?), Some(parse("/v2/embed")?)),
            // Checked here so a bad URL fails at start, not on the first request.
            ProviderKind::Azure | ProviderKind::Gemini | ProviderKind::Bedrock => {
                parse("/")?;
                (None, None)
            }
        };
        Ok(Upstream {
            client,
            kind: settings.kind,
            quirks: settings.quirks.clone(),
            drop_unsupported: settings.drop_unsupported_params,
            timeout: settings.timeout,
            provider: Arc::from(settings.name.as_str()),
            base,
            chat_url,
            embeddings_url,
            api_version: settings
                .api_version
                .clone()
                .unwrap_or_else(|| AZURE_API_VERSION.to_owned()),
            aws: settings.aws.clone(),
            keys,
        })
    }

    /// The header carrying `key` in this provider's style.
    fn auth_header(&self, key: &secrecy::SecretString) -> Option<(HeaderName, HeaderValue)> {
        let (name, bearer) = match self.kind {
            ProviderKind::OpenAi | ProviderKind::Cohere => (header::AUTHORIZATION, true),
            ProviderKind::Azure => (HeaderName::from_static("api-key"), false),
            ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), false),
            ProviderKind::Gemini => (HeaderName::from_static("x-goog-api-key"), false),
            ProviderKind::Bedrock => return None,
        };
        Some((name, KeyRing::header(key, bearer)?))
    }

    /// How translation treats what this provider cannot take.
    pub fn target(&self, drop_requested: bool) -> Target {
        Target {
            provider: self.provider.to_string(),
            drop_unsupported: self.drop_unsupported || drop_requested,
        }
    }

    fn url(&self, call: Call<'_>) -> Result<Endpoint, UpstreamFailure> {
        let fixed = match (self.kind, call) {
            (
                ProviderKind::OpenAi | ProviderKind::Anthropic | ProviderKind::Cohere,
                Call::Chat { .. },
            ) => &self.chat_url,
            (ProviderKind::OpenAi | ProviderKind::Cohere, Call::Embed { .. }) => {
                &self.embeddings_url
            }
            _ => &None,
        };
        if let Some(url) = fixed {
            return Ok(url.clone());
        }
        let encode = |model: &str| sigv4::uri_encode(model, false);
        let text = match (self.kind, call) {
            (ProviderKind::Azure, Call::Chat { model, .. }) => format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                self.base,
                encode(model),
                self.api_version
            ),
            (ProviderKind::Azure, Call::Embed { model, .. }) => format!(
                "{}/openai/deployments/{}/embeddings?api-version={}",
                self.base,
                encode(model),
                self.api_version
            ),
            (ProviderKind::Gemini, call) => {
                let (model, method) = match call {
                    Call::Chat {
                        model,
                        stream: false,
                    } => (model, "generateContent"),
                    Call::Chat {
                        model,
                        stream: true,
                    } => (model, "streamGenerateContent?alt=sse"),
                    Call::Embed {
                        model,
                        batch: false,
                    } => (model, "embedContent"),
                    Call::Embed { model, batch: true } => (model, "batchEmbedContents"),
                };
                let model = model.strip_prefix("models/").unwrap_or(model);
                format!("{}/v1beta/models/{}:{method}", self.base, encode(model))
            }
            (ProviderKind::Bedrock, Call::Chat { model, stream }) => format!(
                "{}/model/{}/{}",
                self.base,
                encode(model),
                if stream {
                    "converse-stream"
                } else {
                    "converse"
                }
            ),
            (kind, call) => {
                return Err(UpstreamFailure::Other(format!(
                    "{call:?} is not available on {} providers",
                    kind.as_str()
                )));
            }
        };
        let url = url::Url::parse(&text)
            .map_err(|error| UpstreamFailure::Other(format!("bad URL {text}: {error}")))?;
        let uri = uri_of(&url)?;
        Ok(Endpoint {
            url: Arc::new(url),
            uri,
        })
    }

    /// POSTs `body` and waits up to `ttfb` for the response headers, with the next of the
    /// provider's keys. `headers` override the defaults (e.g. a client's
    /// `anthropic-version`). A key the provider refuses (401/403) is disabled.
    pub async fn post(
        &self,
        call: Call<'_>,
        body: Vec<u8>,
        context: &crate::RequestContext,
        headers: &[(HeaderName, HeaderValue)],
        ttfb: Duration,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        let Endpoint { url, uri } = self.url(call)?;
        // Built in place rather than through `http::request::Builder`, which moves itself
        // (a few hundred bytes) at every `header` call; room for the usual headers up front.
        let mut request = http::Request::new(Bytes::from(body));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        let mut key_index = None;
        {
            let map = request.headers_mut();
            if !self.keys.is_empty() {
                let (index, key) = self.keys.pick().ok_or(UpstreamFailure::NoKeys)?;
                key_index = Some(index);
                if let Some((name, value)) = self.auth_header(key) {
                    map.append(name, value);
                }
            }
            if let Some(aws) = &self.aws {
                for (name, value) in sign_aws(aws, &url, request.body()) {
                    request.headers_mut().append(name, value);
                }
            }
        }
        let map = request.headers_mut();
        for (name, value) in headers {
            map.append(name.clone(), value.clone());
        }
        if let Ok(value) = HeaderValue::from_str(&context.id) {
            map.append(crate::header_names::X_REQUEST_ID, value);
        }
        // The upstream call's own span is the parent the provider sees, so its spans nest
        // under ours in an exported trace.
        let span_id = SpanId::random();
        for (name, value) in context.trace.upstream_headers(span_id) {
            map.append(name, value);
        }
        let span = tracing::debug_span!(
            "upstream",
            span_id = %span_id,
            otel.kind = "client",
            host = url.host_str().unwrap_or(""),
            path = url.path(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let sent = tracing::Instrument::instrument(self.client.send(request), span.clone());
        let outcome = tokio::time::timeout(ttfb, sent).await;
        match &outcome {
            Ok(Ok(response)) => {
                span.record("http.response.status_code", response.status().as_u16());
                if !response.status().is_success() {
                    span.record("otel.status_code", "error");
                }
            }
            _ => {
                span.record("otel.status_code", "error");
            }
        }
        match outcome {
            Err(_) => Err(UpstreamFailure::Timeout(ttfb)),
            Ok(Ok(response)) => {
                if matches!(response.status().as_u16(), 401 | 403)
                    && let Some(index) = key_index
                {
                    self.keys.disable(index);
                }
                Ok(response)
            }
            Ok(Err(error)) if error.is_connect() => {
                Err(UpstreamFailure::Connect(error_chain(&error)))
            }
            Ok(Err(error)) => Err(UpstreamFailure::Other(error_chain(&error))),
        }
    }

    /// A cheap call that shows whether the provider answers: a GET of its model list with
    /// the next key. Any answer but a 5xx or a 429 counts as up (a 404 from a server without
    /// that list still shows it is there). Bedrock's model list lives on another host and
    /// needs its own signing, so it is not probed.
    pub async fn probe(&self, limit: Duration) -> Result<(), UpstreamFailure> {
        let base = self.base.trim_end_matches('/');
        let text = match self.kind {
            ProviderKind::OpenAi => format!("{base}/models"),
            ProviderKind::Azure => {
                format!("{base}/openai/models?api-version={}", self.api_version)
            }
            ProviderKind::Anthropic | ProviderKind::Cohere => format!("{base}/v1/models"),
            ProviderKind::Gemini => format!("{base}/v1beta/models"),
            ProviderKind::Bedrock => {
                return Err(UpstreamFailure::Other(
                    "Bedrock deployments are not probed".to_owned(),
                ));
            }
        };
        let url = url::Url::parse(&text)
            .map_err(|error| UpstreamFailure::Other(format!("bad URL {text}: {error}")))?;
        let mut request = http::Request::get(uri_of(&url)?);
        if let Some((_, key)) = self.keys.pick()
            && let Some((name, value)) = self.auth_header(key)
        {
            request = request.header(name, value);
        }
        let request = request
            .body(Bytes::new())
            .map_err(|error| UpstreamFailure::Other(format!("building the request: {error}")))?;
        match tokio::time::timeout(limit, self.client.send(request)).await {
            Err(_) => Err(UpstreamFailure::Timeout(limit)),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                if status >= 500 || status == 429 {
                    Err(UpstreamFailure::Other(format!("the probe got {status}")))
                } else {
                    Ok(())
                }
            }
            Ok(Err(error)) if error.is_connect() => {
                Err(UpstreamFailure::Connect(error_chain(&error)))
            }
            Ok(Err(error)) => Err(UpstreamFailure::Other(error_chain(&error))),
        }
    }

    /// Reads a whole (non-streamed) body within what is left of the timeout.
    pub async fn read_body(
        &self,
        response: UpstreamResponse,
        remaining: Duration,
    ) -> Result<Bytes, UpstreamFailure> {
        match tokio::time::timeout(remaining, response.bytes()).await {
            Err(_) => Err(UpstreamFailure::Timeout(self.timeout)),
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(error)) => Err(UpstreamFailure::Other(error_chain(&error))),
        }
    }
}

/// A provider URL parsed both ways: `url::Url` for signing and the span, `http::Uri` for the
/// request (parsing it per call was about 1 % of a plain chat request's instructions in a
/// callgrind profile).
#[derive(Clone)]
struct Endpoint {
    /// Shared: a clone per call would copy it.
    url: Arc<url::Url>,
    uri: http::Uri,
}

/// The `http` form of a URL (parsed again: the two crates share no type).
fn uri_of(url: &url::Url) -> Result<http::Uri, UpstreamFailure> {
    http::Uri::try_from(url.as_str())
        .map_err(|error| UpstreamFailure::Other(format!("bad URL {url}: {error}")))
}

/// Signature Version 4 headers for a Bedrock call.
fn sign_aws(aws: &AwsSettings, url: &url::Url, body: &[u8]) -> Vec<(&'static str, HeaderValue)> {
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let amz_date = sigv4::amz_date(now);
    let session = aws
        .session_token
        .as_ref()
        .map(|t| t.expose_secret().to_owned());
    let credentials = sigv4::Credentials {
        access_key_id: &aws.access_key_id,
        secret_access_key: aws.secret_access_key.expose_secret(),
        session_token: session.as_deref(),
        region: &aws.region,
        service: "bedrock",
    };
    let request = sigv4::Request {
        method: "POST",
        host: &host,
        path: url.path(),
        query: url.query().unwrap_or_default(),
        headers: &[("content-type", "application/json")],
        body,
        amz_date: &amz_date,
    };
    sigv4::sign(&credentials, &request)
        .into_iter()
        .filter_map(|(name, value)| {
            let sensitive = name == "authorization" || name == "x-amz-security-token";
            let mut value = HeaderValue::from_str(&value).ok()?;
            value.set_sensitive(sensitive);
            Some((name, value))
        })
        .collect()
}

pub(crate) use atalaya_telemetry::error_chain;
