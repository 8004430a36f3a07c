//! Provider adapters and the table that maps a requested model to one of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use secrecy::ExposeSecret as _;

use crate::config::{GatewayConfig, ProviderKind, ProviderSettings, SimSettings};

/// The built-in simulated provider's name and models.
pub const SIM_PROVIDER: &str = "sim";
pub const SIM_CHAT_MODEL: &str = "sim-chat";
pub const SIM_EMBED_MODEL: &str = "sim-embed";
/// `sim-embed` vector size.
pub const SIM_EMBED_DIMENSIONS: usize = 256;

pub(crate) enum Adapter {
    Sim(SimSettings),
    OpenAi(Box<OpenAiUpstream>),
}

pub(crate) struct Provider {
    pub name: Arc<str>,
    /// `name/*`, the metric label of every `name/<model>` request.
    pub wildcard_label: Arc<str>,
    pub adapter: Adapter,
    pub source: String,
}

/// Where one request goes.
#[derive(Clone)]
pub(crate) struct Route {
    pub provider: Arc<Provider>,
    pub upstream_model: Arc<str>,
    /// The `model` metric label: a configured name, or `provider/*` for prefix routes, so a
    /// client cannot create labels.
    pub label: Arc<str>,
}

/// A model as listed by `GET /v1/models`.
pub(crate) struct Listed {
    pub id: String,
    pub owned_by: Arc<str>,
}

pub(crate) struct Providers {
    by_name: HashMap<String, Arc<Provider>>,
    routes: HashMap<String, Route>,
    pub listed: Vec<Listed>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("building the HTTP client for provider `{provider}`")]
    Client {
        provider: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("model `{model}` names provider `{provider}`, which is not configured")]
    UnknownProvider { model: String, provider: String },
    #[error("provider `{provider}` has an invalid base_url")]
    BaseUrl {
        provider: String,
        #[source]
        source: url::ParseError,
    },
    #[error("provider name `{0}` is used twice")]
    DuplicateProvider(String),
}

impl Providers {
    pub fn new(config: &GatewayConfig) -> Result<Self, ProviderError> {
        let mut providers = Providers {
            by_name: HashMap::new(),
            routes: HashMap::new(),
            listed: Vec::new(),
        };
        if let Some(sim) = &config.sim {
            let provider = Arc::new(Provider {
                name: Arc::from(SIM_PROVIDER),
                wildcard_label: Arc::from(format!("{SIM_PROVIDER}/*")),
                adapter: Adapter::Sim(sim.clone()),
                source: "built in".to_owned(),
            });
            providers.add(provider.clone())?;
            providers.serve(SIM_CHAT_MODEL, &provider, SIM_CHAT_MODEL);
            providers.serve(SIM_EMBED_MODEL, &provider, SIM_EMBED_MODEL);
        }
        for settings in &config.providers {
            let provider = Arc::new(Provider {
                name: Arc::from(settings.name.as_str()),
                wildcard_label: Arc::from(format!("{}/*", settings.name)),
                adapter: match settings.kind {
                    ProviderKind::OpenAi => {
                        Adapter::OpenAi(Box::new(OpenAiUpstream::new(settings)?))
                    }
                },
                source: settings.source.clone(),
            });
            providers.add(provider.clone())?;
            for model in &settings.models {
                providers.serve(model, &provider, model);
            }
        }
        for alias in &config.models {
            let provider = providers
                .by_name
                .get(&alias.provider)
                .cloned()
                .ok_or_else(|| ProviderError::UnknownProvider {
                    model: alias.name.clone(),
                    provider: alias.provider.clone(),
                })?;
            providers.serve(&alias.name, &provider, &alias.model);
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
        Ok(())
    }

    /// Later entries win: an alias in `[[models]]` overrides a provider's own model name.
    fn serve(&mut self, name: &str, provider: &Arc<Provider>, upstream_model: &str) {
        let route = Route {
            provider: provider.clone(),
            upstream_model: Arc::from(upstream_model),
            label: Arc::from(name),
        };
        if self.routes.insert(name.to_owned(), route).is_none() {
            self.listed.push(Listed {
                id: name.to_owned(),
                owned_by: provider.name.clone(),
            });
        } else if let Some(listed) = self.listed.iter_mut().find(|l| l.id == name) {
            listed.owned_by = provider.name.clone();
        }
    }

    /// A listed name, or `provider/upstream-model` for any configured provider.
    pub fn resolve(&self, model: &str) -> Option<Route> {
        if let Some(route) = self.routes.get(model) {
            return Some(route.clone());
        }
        let (provider, upstream_model) = model.split_once('/')?;
        let provider = self.by_name.get(provider)?;
        if upstream_model.is_empty() {
            return None;
        }
        Some(Route {
            provider: provider.clone(),
            upstream_model: Arc::from(upstream_model),
            label: provider.wildcard_label.clone(),
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.by_name.values()
    }
}

/// Why an upstream call produced no response.
#[derive(Debug)]
pub(crate) enum UpstreamFailure {
    Connect(String),
    Timeout(Duration),
    Other(String),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Chat,
    Embeddings,
}

/// Any server speaking OpenAI's format: one pooled, keep-alive client per provider.
pub(crate) struct OpenAiUpstream {
    client: reqwest::Client,
    chat_url: url::Url,
    embeddings_url: url::Url,
    pub timeout: Duration,
}

impl OpenAiUpstream {
    fn new(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &settings.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(key) = &settings.api_key
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
        {
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("atalaya/", env!("CARGO_PKG_VERSION")))
            // Set once on the client rather than cloned into every request.
            .default_headers(headers)
            // Nagle's algorithm meeting delayed ACKs stalls small request writes by ~40 ms.
            .tcp_nodelay(true)
            .connect_timeout(settings.connect_timeout)
            // Per read: bounds the silence between streamed chunks, not the whole answer.
            .read_timeout(settings.stream_idle_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|source| ProviderError::Client {
                provider: settings.name.clone(),
                source,
            })?;
        let base_url = settings.base_url.trim_end_matches('/');
        let parse = |path: &str| {
            url::Url::parse(&format!("{base_url}{path}")).map_err(|source| ProviderError::BaseUrl {
                provider: settings.name.clone(),
                source,
            })
        };
        Ok(OpenAiUpstream {
            client,
            chat_url: parse("/chat/completions")?,
            embeddings_url: parse("/embeddings")?,
            timeout: settings.timeout,
        })
    }

    /// POSTs `body` to one of the provider's endpoints and waits for the response headers.
    pub async fn post(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
        request_id: &str,
    ) -> Result<reqwest::Response, UpstreamFailure> {
        // URLs are parsed once, at start; cloning one is a string copy.
        let url = match endpoint {
            Endpoint::Chat => &self.chat_url,
            Endpoint::Embeddings => &self.embeddings_url,
        };
        let mut request = self.client.post(url.clone()).body(body);
        if let Ok(value) = HeaderValue::from_str(request_id) {
            request = request.header("x-request-id", value);
        }
        match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => Err(UpstreamFailure::Timeout(self.timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) if error.is_connect() => {
                Err(UpstreamFailure::Connect(error_chain(&error)))
            }
            Ok(Err(error)) if error.is_timeout() => Err(UpstreamFailure::Timeout(self.timeout)),
            Ok(Err(error)) => Err(UpstreamFailure::Other(error_chain(&error))),
        }
    }

    /// Reads a whole (non-streamed) body within what is left of the timeout.
    pub async fn read_body(
        &self,
        response: reqwest::Response,
        remaining: Duration,
    ) -> Result<Bytes, UpstreamFailure> {
        match tokio::time::timeout(remaining, response.bytes()).await {
            Err(_) => Err(UpstreamFailure::Timeout(self.timeout)),
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(error)) if error.is_timeout() => Err(UpstreamFailure::Timeout(self.timeout)),
            Ok(Err(error)) => Err(UpstreamFailure::Other(error_chain(&error))),
        }
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
