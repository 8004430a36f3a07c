//! The gateway's validated settings. The binary builds these from `atalaya.toml`, the
//! environment and flags; here every value already has its final type.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// The built-in simulated provider, when on.
    pub sim: Option<SimSettings>,
    pub providers: Vec<ProviderSettings>,
    pub models: Vec<ModelAlias>,
}

#[derive(Debug, Clone)]
pub struct SimSettings {
    pub latency: Duration,
    /// Streaming pace; 0 sends every chunk at once.
    pub tokens_per_second: f64,
}

/// Adapters by wire format. Presets (such as `openai`) are adapters with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI's chat completions / embeddings wire format.
    OpenAi,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<SecretString>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Model names served under their own name (also reachable as `provider/model`).
    pub models: Vec<String>,
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
