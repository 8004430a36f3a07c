//! The gateway's validated settings. The binary builds these from `atalaya.toml`, the
//! environment and flags; here every value already has its final type.

use std::time::Duration;

use atalaya_translate::openai::Quirks;
use http::{HeaderName, HeaderValue};
use secrecy::SecretString;

use crate::catalog::Catalog;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The built-in simulated provider, when on.
    pub sim: Option<SimSettings>,
    pub providers: Vec<ProviderSettings>,
    pub models: Vec<ModelAlias>,
    pub catalog: Catalog,
}

#[derive(Debug, Clone)]
pub struct SimSettings {
    pub latency: Duration,
    /// Streaming pace; 0 sends every chunk at once.
    pub tokens_per_second: f64,
}

/// Wire formats. Presets (`openai`, `groq`, `mistral`, ...) are one of these with defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI's chat completions / embeddings, and every compatible server.
    OpenAi,
    /// OpenAI's format on Azure's deployment URLs with the `api-key` header.
    Azure,
    Anthropic,
    Gemini,
    Cohere,
    Bedrock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Cohere => "cohere",
            ProviderKind::Bedrock => "bedrock",
        }
    }
}

/// Bedrock's credentials and region.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub region: String,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderKind,
    /// The preset (`openai`, `groq`, ...) it was built from, or `openai-compatible`.
    pub preset: String,
    /// Where its URL paths go: with the version for OpenAI-style providers
    /// (`https://api.openai.com/v1`), the host root for native ones.
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Model names served under their own name (also reachable as `provider/model`).
    pub models: Vec<String>,
    pub quirks: Quirks,
    /// Azure's `api-version`.
    pub api_version: Option<String>,
    pub aws: Option<AwsSettings>,
    /// Drop request fields the provider cannot take instead of refusing the request.
    pub drop_unsupported_params: bool,
    pub connect_timeout: Duration,
    /// Until the response headers arrive; for non-streaming calls, until the body is read.
    pub timeout: Duration,
    /// Longest silence between two chunks of a streamed answer.
    pub stream_idle_timeout: Duration,
    /// Why this provider is on (config file, environment variable), for operators.
    pub source: String,
}

/// A public model name served by one provider's upstream model.
#[derive(Debug, Clone)]
pub struct ModelAlias {
    pub name: String,
    pub provider: String,
    pub model: String,
}
