//! The gateway's validated settings. The binary builds these from `atalaya.toml`, the
//! environment and flags; here every value already has its final type.

use std::time::Duration;

use atalaya_resilience::{Backoff, BreakerConfig};
use atalaya_translate::openai::Quirks;
use http::{HeaderName, HeaderValue};
use secrecy::SecretString;

use crate::catalog::Catalog;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests whose headers together are larger get 431.
    pub max_header_bytes: usize,
    /// Origins browsers may call from (CORS); empty: CORS off. `*` allows any.
    pub cors_origins: Vec<String>,
    /// The built-in simulated provider, when on.
    pub sim: Option<SimSettings>,
    pub providers: Vec<ProviderSettings>,
    pub models: Vec<ModelSettings>,
    pub catalog: Catalog,
    pub routing: RoutingSettings,
    /// Rate limits shared by every key of a team.
    pub teams: Vec<crate::limits::TeamLimits>,
    /// Spend limits shared by every key of a team.
    pub team_budgets: Vec<crate::budgets::TeamBudget>,
    /// Guardrails on prompts, first matching rule wins.
    pub guardrails: Vec<crate::guardrails::GuardRule>,
    /// Alert rules and the channels they go to.
    pub alerts: crate::alerts::AlertSettings,
    /// Whether data-plane requests are written to the request log (analytics read it).
    pub log_requests: bool,
    /// Health score weights, level hysteresis and feature levels.
    pub health: crate::health::HealthSettings,
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
    /// Keys used in turn; one the provider refuses (401/403) is disabled and reported.
    pub api_keys: Vec<SecretString>,
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
    /// Speak HTTP/2 from the first byte over plain `http://` (h2c), for upstreams that
    /// accept it: every request shares a few connections instead of one each. HTTPS upstreams
    /// negotiate HTTP/2 on their own.
    pub http2_prior_knowledge: bool,
    /// Why this provider is on (config file, environment variable), for operators.
    pub source: String,
}

/// A public model name and the deployments that serve it.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    pub name: String,
    pub strategy: Strategy,
    pub deployments: Vec<DeploymentSettings>,
    /// Models tried, in order, when every deployment of this one failed.
    pub fallbacks: Vec<String>,
    /// The model used when the prompt does not fit any deployment's context window.
    pub context_fallback: Option<String>,
    pub timeouts: Timeouts,
}

/// One provider's upstream model serving a public model.
#[derive(Debug, Clone)]
pub struct DeploymentSettings {
    pub provider: String,
    pub model: String,
    /// Share of traffic under `weighted` (and the tie-break elsewhere).
    pub weight: u32,
}

/// How a model's deployments are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Weighted,
    /// Fewest requests in flight.
    LeastConnections,
    /// Lowest peak-EWMA latency of two picked at random.
    Latency,
    /// Cheapest for this request, by catalog prices.
    Cost,
    /// In the configured order: the next only when the one before fails.
    Priority,
    /// Scores success rate, latency and cost; keeps exploring.
    Adaptive,
}

impl Strategy {
    pub const NAMES: &[&str] = &[
        "round-robin",
        "weighted",
        "least-connections",
        "latency",
        "cost",
        "priority",
        "adaptive",
    ];

    pub fn parse(name: &str) -> Option<Strategy> {
        Some(match name {
            "round-robin" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "least-connections" => Strategy::LeastConnections,
            "latency" => Strategy::Latency,
            "cost" => Strategy::Cost,
            "priority" => Strategy::Priority,
            "adaptive" => Strategy::Adaptive,
            _ => return None,
        })
    }
}

/// Per-model limits on how long an upstream may take; unset ones fall back to the provider's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Until the response headers (and, for streams, the first chunk) arrive.
    pub ttfb: Option<Duration>,
    /// Longest silence between two chunks of a stream.
    pub idle: Option<Duration>,
    /// The whole request, retries included.
    pub total: Option<Duration>,
}

/// Retries, breakers and routing rules, for every model.
#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub breaker: BreakerConfig,
    pub backoff: Backoff,
    /// Calls per request at most, across deployments and fallbacks.
    pub max_attempts: u32,
    /// The longest `Retry-After` waited for before retrying.
    pub max_retry_after: Duration,
    /// Retries allowed as a share of requests over `retry_budget_window`, plus the floor.
    pub retry_budget_ratio: f64,
    pub retry_budget_floor: u32,
    pub retry_budget_window: Duration,
    pub rules: Vec<RouteRule>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            breaker: BreakerConfig::default(),
            backoff: Backoff::default(),
            max_attempts: 3,
            max_retry_after: Duration::from_secs(30),
            retry_budget_ratio: 0.2,
            retry_budget_floor: 10,
            retry_budget_window: Duration::from_secs(10),
            rules: Vec::new(),
        }
    }
}

/// Sends matching requests to another model. Every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteRule {
    /// Requested models it applies to; empty for all.
    pub models: Vec<String>,
    /// Key ids (`key_...`); empty for any caller.
    /// Teams of the calling key; empty for any.
    pub teams: Vec<String>,
    pub keys: Vec<String>,
    /// Request headers that must have these values.
    pub headers: Vec<(HeaderName, String)>,
    /// Entries of the request's `metadata` object that must have these values.
    pub metadata: Vec<(String, String)>,
    pub route_to: String,
}
