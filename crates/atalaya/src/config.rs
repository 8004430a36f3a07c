//! Configuration: defaults < `atalaya.toml` < `ATALAYA_SECTION__KEY` env < flags.
//!
//! Phase one reads raw serde structs (unknown keys are errors); phase two validates them into
//! typed settings. Every error names the key and where its value came from.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use atalaya_gateway::alerts::AlertSettings;
use atalaya_gateway::catalog::{Catalog, Feature, ModelInfo};
use atalaya_gateway::presets::{self, Preset};
use atalaya_gateway::{
    AwsSettings, DeploymentSettings, GatewayConfig, ModelSettings, ProviderKind, ProviderSettings,
    RouteRule, RoutingSettings, SimSettings, Strategy, Timeouts,
};
use atalaya_gateway::{Budget, GuardAction, GuardRule, Period, TeamBudget, TeamLimits};
use atalaya_resilience::{Backoff, BreakerConfig};
use atalaya_store::{LogWriterConfig, Retention, UpkeepConfig};
use atalaya_telemetry::{FileLog, LogFormat, LogSettings};
use secrecy::SecretString;
use serde::Deserialize;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "atalaya.toml";
const ENV_PREFIX: &str = "ATALAYA_";

/// A configuration problem: which key, where it came from, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}{origin}: {message}")]
pub struct ConfigError {
    key: String,
    origin: String,
    message: String,
}

fn error(key: impl Into<String>, origin: &Origins, message: impl Into<String>) -> ConfigError {
    let key = key.into();
    ConfigError {
        origin: origin.describe(&key),
        key,
        message: message.into(),
    }
}

/// Where values came from, to name the file or variable in errors.
struct Origins {
    file: Option<PathBuf>,
    env: HashMap<String, String>,
}

impl Origins {
    fn describe(&self, key: &str) -> String {
        let mut path = key;
        loop {
            if let Some(var) = self.env.get(path) {
                return format!(" (from environment variable {var})");
            }
            match path.rfind(['.', '[']) {
                Some(at) => path = &path[..at],
                None => break,
            }
        }
        match &self.file {
            Some(file) => format!(" (in {})", file.display()),
            None => String::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    database: RawDatabase,
    telemetry: RawTelemetry,
    request_log: RawRequestLog,
    analytics: RawAnalytics,
    retention: RawRetention,
    sim: RawSim,
    providers: Vec<RawProvider>,
    models: Vec<RawModel>,
    catalog: RawCatalog,
    routing: RawRouting,
    teams: Vec<RawTeam>,
    guardrails: Vec<RawGuardrail>,
    alerts: RawAlerts,
    health: health::RawHealth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAlerts {
    evaluate_interval_ms: Option<u64>,
    dedupe_minutes: Option<u64>,
    max_per_hour: Option<u64>,
    /// Absent: the default rules; empty: none.
    rules: Option<Vec<RawAlertRule>>,
    channels: Vec<RawAlertChannel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertRule {
    name: String,
    kind: String,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    window_seconds: Option<u64>,
    #[serde(default)]
    min_requests: Option<u64>,
    #[serde(default)]
    sensitivity: Option<f64>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertChannel {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    smtp_host: Option<String>,
    #[serde(default)]
    smtp_port: Option<u16>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    #[serde(default)]
    min_severity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuardrail {
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    pii: Option<String>,
    #[serde(default)]
    injection: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeam {
    name: String,
    #[serde(default)]
    rpm_limit: Option<u64>,
    #[serde(default)]
    tpm_limit: Option<u64>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    soft_budget_usd: Option<f64>,
    #[serde(default)]
    budget_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: Option<String>,
    data_dir: Option<String>,
    max_body_bytes: Option<u64>,
    max_header_bytes: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    worker_threads: Option<u64>,
    cors_origins: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDatabase {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    log_format: Option<String>,
    log_level: Option<String>,
    console: Option<bool>,
    log_dir: Option<String>,
    log_file_format: Option<String>,
    log_file_retention_days: Option<u64>,
    database_logs: Option<bool>,
    otlp: otlp::RawOtlp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRequestLog {
    enabled: Option<bool>,
    batch_size: Option<u64>,
    flush_interval_ms: Option<u64>,
    buffer_rows: Option<u64>,
    spill_dir: Option<String>,
    spill_max_mb: Option<f64>,
    drain_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAnalytics {
    rollup_interval_ms: Option<u64>,
}

/// Days to keep each kind of record; 0 keeps it forever.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    request_logs_days: Option<u64>,
    rollups_days: Option<u64>,
    errors_days: Option<u64>,
    server_logs_days: Option<u64>,
    alerts_days: Option<u64>,
    interval_minutes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSim {
    enabled: Option<SimSwitch>,
    latency_ms: Option<u64>,
    tokens_per_second: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum SimSwitch {
    Bool(bool),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AutoWord {
    Auto,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCatalog {
    price_file: Option<String>,
    models: Vec<RawCatalogModel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogModel {
    provider: String,
    model: String,
    context_window: Option<u64>,
    max_output_tokens: Option<u64>,
    input_per_million: Option<f64>,
    output_per_million: Option<f64>,
    cached_input_per_million: Option<f64>,
    cache_write_per_million: Option<f64>,
    #[serde(default)]
    features: Vec<Feature>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    /// Defaults to the type for presets.
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    base_url: Option<String>,
    api_key: Option<String>,
    /// More keys, used in turn with `api_key`.
    #[serde(default)]
    api_keys: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    models: Option<Vec<String>>,
    connect_timeout_ms: Option<u64>,
    timeout_ms: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
    http2_prior_knowledge: Option<bool>,
    /// Azure's `api-version`.
    api_version: Option<String>,
    /// Bedrock's region and credentials.
    region: Option<String>,
    aws_access_key_id: Option<String>,
    aws_secret_access_key: Option<String>,
    aws_session_token: Option<String>,
    drop_unsupported_params: Option<bool>,
    #[serde(default)]
    quirks: RawQuirks,
}

/// Overrides of a preset's OpenAI dialect.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQuirks {
    legacy_max_tokens: Option<bool>,
    stream_options: Option<bool>,
    tools: Option<bool>,
    vision: Option<bool>,
    top_k: Option<bool>,
    reasoning_effort: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: String,
    /// A single deployment: `provider` and `model`.
    provider: Option<String>,
    model: Option<String>,
    #[serde(default)]
    deployments: Vec<RawDeployment>,
    strategy: Option<String>,
    #[serde(default)]
    fallbacks: Vec<String>,
    context_fallback: Option<String>,
    ttfb_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    provider: String,
    model: String,
    weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRouting {
    max_attempts: Option<u32>,
    backoff_base_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    max_retry_after_ms: Option<u64>,
    retry_budget_ratio: Option<f64>,
    retry_budget_floor: Option<u32>,
    retry_budget_window_ms: Option<u64>,
    breaker: RawBreaker,
    rules: Vec<RawRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBreaker {
    window: Option<u64>,
    minimum_calls: Option<u64>,
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    slow_call_ms: Option<u64>,
    open_ms: Option<u64>,
    max_open_ms: Option<u64>,
    half_open_probes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    route_to: String,
}

/// Everything `atalaya serve` needs, validated.
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub shutdown_grace: Duration,
    /// HTTP worker threads, each with its own runtime and listener.
    pub worker_threads: usize,
    /// Log destinations (the error-tracking reporter is attached by `serve`).
    pub logs: LogSettings,
    pub request_log: LogWriterConfig,
    /// Analytics roll-ups and retention clean-up.
    pub upkeep: UpkeepConfig,
    pub gateway: GatewayConfig,
    /// PEM certificate chain and private key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Overrides from the command line, applied last.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// The settings for a command that works on the data directory directly (`secrets`,
/// `audit`): the same files and environment `serve` reads.
pub fn load_local(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(Env, Settings)> {
    let env = process_env();
    let flags = Flags {
        config,
        data_dir,
        ..Flags::default()
    };
    let settings = load(&flags, &env)?;
    Ok((env, settings))
}

/// The process environment, passed in so tests can use their own.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .collect()
}

pub fn load(flags: &Flags, env: &Env) -> Result<Settings, anyhow::Error> {
    let (file, mut table) = read_file(flags.config.as_deref())?;
    let mut origins = Origins {
        file,
        env: HashMap::new(),
    };
    interpolate_table(&mut table, "", env, &origins)?;
    apply_env_overrides(&mut table, env, &mut origins)?;
    let raw: RawConfig =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let message = e.inner().to_string();
            error(
                if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                &origins,
                clean_serde_message(&message),
            )
        })?;
    Ok(validate(raw, flags, env, &origins)?)
}

fn clean_serde_message(message: &str) -> String {
    // toml's deserializer appends its own position text, which means nothing for env values.
    message
        .split('\n')
        .next()
        .unwrap_or(message)
        .trim()
        .to_owned()
}

fn read_file(path: Option<&Path>) -> Result<(Option<PathBuf>, toml::Table), anyhow::Error> {
    let (path, required) = match path {
        Some(path) => (path.to_owned(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok((None, toml::Table::new()));
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "cannot read config file {}: {e}",
                path.display()
            ));
        }
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid configuration: {} is not valid TOML: {}",
            path.display(),
            e.to_string().trim()
        )
    })?;
    Ok((Some(path), table))
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value; `$${` is a literal `${`.
fn interpolate_table(
    table: &mut toml::Table,
    prefix: &str,
    env: &Env,
    origins: &Origins,
) -> Result<(), ConfigError> {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        interpolate_value(value, &path, env, origins)?;
    }
    Ok(())
}

fn interpolate_value(
    value: &mut toml::Value,
    path: &str,
    env: &Env,
    origins: &Origins,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(text) => {
            *text = interpolate(text, env).map_err(|m| error(path, origins, m))?
        }
        toml::Value::Table(table) => interpolate_table(table, path, env, origins)?,
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &format!("{path}[{index}]"), env, origins)?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn interpolate(text: &str, env: &Env) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let inner = &after[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{inner}}}` is not a valid variable reference; use ${{NAME}} or ${{NAME:-default}}"
                ));
            }
            // Like the shell: `:-` also replaces a variable that is set but empty.
            match (
                env.get(name).filter(|v| !v.is_empty() || default.is_none()),
                default,
            ) {
                (Some(value), _) => out.push_str(value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `ATALAYA_SERVER__LISTEN=...` sets `server.listen`; `ATALAYA_PROVIDERS__0__API_KEY` sets
/// `providers[0].api_key`. Values are read as TOML when they parse (numbers, booleans,
/// arrays), as plain strings otherwise.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &Env,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (name, raw_value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            continue;
        }
        let value = parse_env_value(raw_value);
        let key = display_path(&segments);
        origins.env.insert(key.clone(), name.clone());
        set_path(table, &segments, value).map_err(|message| error(&key, origins, message))?;
    }
    Ok(())
}

fn display_path(segments: &[String]) -> String {
    let mut key = String::new();
    for segment in segments {
        if segment.parse::<usize>().is_ok() {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

fn parse_env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut parsed) => parsed
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(
    table: &mut toml::Table,
    segments: &[String],
    value: toml::Value,
) -> Result<(), String> {
    let (first, rest) = segments.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table.entry(first.clone()).or_insert_with(|| {
        if rest[0].parse::<usize>().is_ok() {
            toml::Value::Array(Vec::new())
        } else {
            toml::Value::Table(toml::Table::new())
        }
    });
    set_in_value(entry, rest, value)
}

fn set_in_value(
    target: &mut toml::Value,
    segments: &[String],
    value: toml::Value,
) -> Result<(), String> {
    match target {
        toml::Value::Table(table) => set_path(table, segments, value),
        toml::Value::Array(items) => {
            let index: usize = segments[0]
                .parse()
                .map_err(|_| format!("`{}` is not a list index", segments[0]))?;
            if index > items.len() {
                return Err(format!(
                    "list index {index} skips entries; the list has {} entries",
                    items.len()
                ));
            }
            if index == items.len() {
                items.push(toml::Value::Table(toml::Table::new()));
            }
            if segments.len() == 1 {
                items[index] = value;
                Ok(())
            } else {
                set_in_value(&mut items[index], &segments[1..], value)
            }
        }
        _ => Err("cannot set a key inside a value that is not a table".to_owned()),
    }
}

fn validate(
    raw: RawConfig,
    flags: &Flags,
    env: &Env,
    origins: &Origins,
) -> Result<Settings, ConfigError> {
    let listen_text = flags
        .listen
        .clone()
        .or(raw.server.listen)
        .unwrap_or_else(|| "127.0.0.1:4000".to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        error(
            "server.listen",
            origins,
            format!("`{listen_text}` is not an address like 127.0.0.1:4000"),
        )
    })?;
    let data_dir = flags
        .data_dir
        .clone()
        .or(raw.server.data_dir.map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./atalaya-data"));
    let database_url = env
        .get("ATALAYA_DATABASE_URL")
        .filter(|url| !url.is_empty())
        .cloned()
        .or(raw.database.url)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("atalaya.db").display()));
    if !database_url.starts_with("sqlite:") {
        return Err(error(
            "database.url",
            origins,
            format!(
                "`{}` is not supported yet: use sqlite://PATH",
                redact_url(&database_url)
            ),
        ));
    }
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(32 * 1024 * 1024);
    if max_body_bytes == 0 {
        return Err(error(
            "server.max_body_bytes",
            origins,
            "must be greater than 0",
        ));
    }
    let max_header_bytes = raw.server.max_header_bytes.unwrap_or(64 * 1024);
    if max_header_bytes < 1024 {
        return Err(error(
            "server.max_header_bytes",
            origins,
            "must be at least 1024",
        ));
    }
    for (index, origin) in raw.server.cors_origins.iter().enumerate() {
        let valid = origin == "*"
            || (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && axum::http::HeaderValue::from_str(origin).is_ok();
        if !valid {
            return Err(error(
                format!("server.cors_origins[{index}]"),
                origins,
                format!(
                    "`{origin}` is not an origin: use scheme://host[:port] without a path, or \"*\""
                ),
            ));
        }
    }
    let cors_origins = raw.server.cors_origins.clone();
    let set = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    let tls = match (&set(&raw.server.tls_cert), &set(&raw.server.tls_key)) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            for (field, path) in [("server.tls_cert", cert), ("server.tls_key", key)] {
                if !Path::new(path).is_file() {
                    return Err(error(
                        field,
                        origins,
                        format!("`{path}` is not a readable file"),
                    ));
                }
            }
            Some((PathBuf::from(cert), PathBuf::from(key)))
        }
        (Some(_), None) => {
            return Err(error(
                "server.tls_key",
                origins,
                "is needed with server.tls_cert",
            ));
        }
        (None, Some(_)) => {
            return Err(error(
                "server.tls_cert",
                origins,
                "is needed with server.tls_key",
            ));
        }
    };
    let format = |value: Option<&str>, default: &str, key: &str| match value.unwrap_or(default) {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        other => Err(error(
            key,
            origins,
            format!("`{other}` is not one of: pretty, json"),
        )),
    };
    let console_format = format(
        raw.telemetry.log_format.as_deref(),
        "pretty",
        "telemetry.log_format",
    )?;
    let file_format = format(
        raw.telemetry.log_file_format.as_deref(),
        "json",
        "telemetry.log_file_format",
    )?;
    let log_level = env
        .get("RUST_LOG")
        .cloned()
        .or(raw.telemetry.log_level)
        .unwrap_or_else(|| "info".to_owned());
    let log_dir = match raw.telemetry.log_dir.as_deref() {
        None => Some(data_dir.join("logs")),
        Some("") => None,
        Some(dir) => Some(PathBuf::from(dir)),
    };
    let file_retention = match raw.telemetry.log_file_retention_days {
        None => Some(14),
        Some(0) => None,
        Some(days) if days > 36_500 => {
            return Err(error(
                "telemetry.log_file_retention_days",
                origins,
                "must be at most 36500 (0 keeps forever)",
            ));
        }
        Some(days) => Some(days as u32),
    };
    let logs = LogSettings {
        filter: log_level,
        console: raw
            .telemetry
            .console
            .unwrap_or(true)
            .then_some(console_format),
        file: log_dir.map(|dir| FileLog {
            dir,
            format: file_format,
            retention_days: file_retention,
        }),
        capture: None,
        database_logs: raw.telemetry.database_logs.unwrap_or(true),
        otlp: otlp::settings(raw.telemetry.otlp, env, origins)?,
    };
    let raw_request_log_enabled = raw.request_log.enabled.unwrap_or(true);
    let defaults = LogWriterConfig::default();
    let request_log = LogWriterConfig {
        batch_size: positive(
            raw.request_log.batch_size,
            defaults.batch_size as u64,
            "request_log.batch_size",
            origins,
        )? as usize,
        flush_interval: positive_ms(
            raw.request_log.flush_interval_ms,
            defaults.flush_interval,
            "request_log.flush_interval_ms",
            origins,
        )?,
        buffer_rows: positive(
            raw.request_log.buffer_rows,
            defaults.buffer_rows as u64,
            "request_log.buffer_rows",
            origins,
        )? as usize,
        drain_timeout: positive_ms(
            raw.request_log.drain_timeout_ms,
            defaults.drain_timeout,
            "request_log.drain_timeout_ms",
            origins,
        )?,
        spill_dir: match raw.request_log.spill_dir.as_deref() {
            None => Some(data_dir.join("spill")),
            Some("") => None,
            Some(dir) => Some(PathBuf::from(dir)),
        },
        spill_max_bytes: match raw.request_log.spill_max_mb {
            None => defaults.spill_max_bytes,
            Some(mb) if mb.is_finite() && mb > 0.0 => (mb * 1_048_576.0) as u64,
            Some(_) => {
                return Err(error(
                    "request_log.spill_max_mb",
                    origins,
                    "must be greater than 0",
                ));
            }
        },
    };
    let upkeep = upkeep_settings(&raw.analytics, &raw.retention, origins)?;

    let catalog = build_catalog(raw.catalog, origins)?;
    let mut providers = Vec::new();
    for (index, provider) in raw.providers.into_iter().enumerate() {
        providers.push(validate_provider(
            provider,
            &format!("providers[{index}]"),
            origins,
            "config file".to_owned(),
            env,
            &catalog,
        )?);
    }
    for preset in presets::PRESETS {
        if providers.iter().any(|p| p.name == preset.name) {
            continue;
        }
        if let Some((raw, source)) = preset_from_env(preset, env) {
            providers.push(validate_provider(
                raw,
                preset.name,
                origins,
                source,
                env,
                &catalog,
            )?);
        }
    }
    let sim_on = match raw.sim.enabled {
        None | Some(SimSwitch::Word(AutoWord::Auto)) => providers.is_empty(),
        Some(SimSwitch::Bool(on)) => on,
    };
    let tokens_per_second = raw.sim.tokens_per_second.unwrap_or(200.0);
    if !(tokens_per_second.is_finite() && tokens_per_second >= 0.0) {
        return Err(error(
            "sim.tokens_per_second",
            origins,
            "must be 0 (unpaced) or a positive number",
        ));
    }
    let sim = sim_on.then(|| SimSettings {
        latency: Duration::from_millis(raw.sim.latency_ms.unwrap_or(0)),
        tokens_per_second,
    });
    let mut models = Vec::new();
    let known_provider =
        |name: &str| providers.iter().any(|p| p.name == name) || (sim.is_some() && name == "sim");
    for (index, model) in raw.models.into_iter().enumerate() {
        let key = format!("models[{index}]");
        if model.name.is_empty() {
            return Err(error(format!("{key}.name"), origins, "must not be empty"));
        }
        let mut deployments = Vec::new();
        let shorthand = model.provider.is_some();
        match (model.provider, model.model) {
            (Some(provider), Some(upstream)) => deployments.push(DeploymentSettings {
                provider,
                model: upstream,
                weight: 1,
            }),
            (None, None) => {}
            _ => {
                return Err(error(
                    &key,
                    origins,
                    "give both `provider` and `model`, or a list of [[models.deployments]]",
                ));
            }
        }
        for (position, deployment) in model.deployments.into_iter().enumerate() {
            if deployment.weight == Some(0) {
                return Err(error(
                    format!("{key}.deployments[{position}].weight"),
                    origins,
                    "must be at least 1",
                ));
            }
            deployments.push(DeploymentSettings {
                provider: deployment.provider,
                model: deployment.model,
                weight: deployment.weight.unwrap_or(1),
            });
        }
        if deployments.is_empty() {
            return Err(error(
                &key,
                origins,
                "a model needs `provider` and `model`, or [[models.deployments]]",
            ));
        }
        for (position, deployment) in deployments.iter().enumerate() {
            let at = if shorthand && position == 0 {
                key.clone()
            } else {
                format!("{key}.deployments[{}]", position - usize::from(shorthand))
            };
            if !known_provider(&deployment.provider) {
                return Err(error(
                    format!("{at}.provider"),
                    origins,
                    format!(
                        "no provider is named `{}`; define it under [[providers]] (or enable [sim] for `sim`)",
                        deployment.provider
                    ),
                ));
            }
            if deployment.model.is_empty() {
                return Err(error(
                    format!("{key}.deployments[{position}].model"),
                    origins,
                    "must not be empty",
                ));
            }
        }
        let strategy = match model.strategy.as_deref() {
            None => Strategy::Weighted,
            Some(name) => Strategy::parse(name).ok_or_else(|| {
                error(
                    format!("{key}.strategy"),
                    origins,
                    format!(
                        "`{name}` is not a strategy; use one of: {}",
                        Strategy::NAMES.join(", ")
                    ),
                )
            })?,
        };
        let millis = |value: Option<u64>, field: &str| -> Result<Option<Duration>, ConfigError> {
            match value {
                Some(0) => Err(error(
                    format!("{key}.{field}"),
                    origins,
                    "must be greater than 0",
                )),
                other => Ok(other.map(Duration::from_millis)),
            }
        };
        models.push(ModelSettings {
            name: model.name,
            strategy,
            deployments,
            fallbacks: model.fallbacks,
            context_fallback: model.context_fallback,
            timeouts: Timeouts {
                ttfb: millis(model.ttfb_timeout_ms, "ttfb_timeout_ms")?,
                idle: millis(model.idle_timeout_ms, "idle_timeout_ms")?,
                total: millis(model.timeout_ms, "timeout_ms")?,
            },
        });
    }
    for (index, model) in models.iter().enumerate() {
        for name in model.fallbacks.iter().chain(&model.context_fallback) {
            let known = models.iter().any(|m| &m.name == name)
                || name.contains('/')
                || providers.iter().any(|p| p.models.contains(name))
                || (sim.is_some() && (name == "sim-chat" || name == "sim-embed"));
            if !known {
                return Err(error(
                    format!("models[{index}].fallbacks"),
                    origins,
                    format!(
                        "`{name}` is not a model; name a [[models]] entry or a provider's model"
                    ),
                ));
            }
        }
    }
    let routing = validate_routing(raw.routing, origins)?;
    let mut teams: Vec<TeamLimits> = Vec::new();
    let mut team_budgets: Vec<TeamBudget> = Vec::new();
    for (index, team) in raw.teams.into_iter().enumerate() {
        if team.name.trim().is_empty() || teams.iter().any(|t| t.name == team.name) {
            return Err(error(
                format!("teams[{index}].name"),
                origins,
                "must be a non-empty name used once",
            ));
        }
        for (field, limit) in [("rpm_limit", team.rpm_limit), ("tpm_limit", team.tpm_limit)] {
            if limit == Some(0) {
                return Err(error(
                    format!("teams[{index}].{field}"),
                    origins,
                    "must be positive (omit it for no limit)",
                ));
            }
        }
        for (field, usd) in [
            ("budget_usd", team.budget_usd),
            ("soft_budget_usd", team.soft_budget_usd),
        ] {
            if usd.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                return Err(error(
                    format!("teams[{index}].{field}"),
                    origins,
                    "must be a positive amount in USD (omit it for none)",
                ));
            }
        }
        let period = match team.budget_period.as_deref() {
            None => Period::Month,
            Some(text) => Period::parse(text).ok_or_else(|| {
                error(
                    format!("teams[{index}].budget_period"),
                    origins,
                    format!("must be `day` or `month`, not `{text}`"),
                )
            })?,
        };
        if team.budget_usd.is_some() || team.soft_budget_usd.is_some() {
            team_budgets.push(TeamBudget {
                name: team.name.clone(),
                budget: Budget {
                    limit_usd: team.budget_usd,
                    soft_usd: team.soft_budget_usd,
                    period,
                },
            });
        }
        teams.push(TeamLimits {
            name: team.name,
            rpm_limit: team.rpm_limit,
            tpm_limit: team.tpm_limit,
        });
    }
    let mut guardrails = Vec::new();
    for (index, raw) in raw.guardrails.into_iter().enumerate() {
        let action = |field: &str, value: Option<String>| -> Result<GuardAction, ConfigError> {
            match value.as_deref() {
                None => Ok(GuardAction::Off),
                Some(text) => GuardAction::parse(text).ok_or_else(|| {
                    error(
                        format!("guardrails[{index}].{field}"),
                        origins,
                        format!("must be off, log, redact or block, not `{text}`"),
                    )
                }),
            }
        };
        guardrails.push(GuardRule {
            pii: action("pii", raw.pii)?,
            injection: action("injection", raw.injection)?,
            models: raw.models,
            keys: raw.keys,
        });
    }
    let alerts = validate_alerts(raw.alerts, origins)?;
    let health_settings = health::settings(raw.health, origins)?;
    Ok(Settings {
        listen,
        data_dir,
        database_url,
        shutdown_grace: Duration::from_millis(raw.server.shutdown_grace_ms.unwrap_or(10_000)),
        worker_threads: match raw.server.worker_threads {
            None | Some(0) => std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            Some(count) if count > 1024 => {
                return Err(error(
                    "server.worker_threads",
                    origins,
                    "must be at most 1024 (0 = one per CPU core)",
                ));
            }
            Some(count) => count as usize,
        },
        logs,
        request_log,
        upkeep,
        tls,
        gateway: GatewayConfig {
            max_body_bytes: max_body_bytes as usize,
            max_header_bytes: max_header_bytes as usize,
            cors_origins,
            sim,
            providers,
            models,
            catalog,
            routing,
            teams,
            team_budgets,
            guardrails,
            alerts,
            log_requests: raw_request_log_enabled,
            health: health_settings,
        },
    })
}

fn validate_alerts(raw: RawAlerts, origins: &Origins) -> Result<AlertSettings, ConfigError> {
    use atalaya_gateway::alerts::{
        AlertChannel, AlertRule, AlertSeverity, ChannelKind, MAX_WINDOW, RuleKind,
    };
    let defaults = AlertSettings::default();
    let severity = |value: Option<&str>, default: AlertSeverity, key: &str| match value {
        None => Ok(default),
        Some(text) => AlertSeverity::parse(text).ok_or_else(|| {
            error(
                key,
                origins,
                format!("`{text}` is not one of: info, warning, critical"),
            )
        }),
    };
    let mut channels: Vec<AlertChannel> = Vec::new();
    for (index, channel) in raw.channels.into_iter().enumerate() {
        let key = |field: &str| format!("alerts.channels[{index}].{field}");
        if channel.name.trim().is_empty() {
            return Err(error(key("name"), origins, "must not be empty"));
        }
        if channels.iter().any(|c| c.name == channel.name) {
            return Err(error(
                key("name"),
                origins,
                format!("`{}` names two channels", channel.name),
            ));
        }
        let url = |url: Option<String>| match url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => Ok(url),
            Some(url) => Err(error(
                key("url"),
                origins,
                format!("`{url}` is not an http(s) URL"),
            )),
            None => Err(error(
                key("url"),
                origins,
                "is required for this channel type",
            )),
        };
        let kind = match channel.kind.as_str() {
            "webhook" => ChannelKind::Webhook {
                url: url(channel.url)?,
                headers: channel
                    .headers
                    .into_iter()
                    .map(|(name, value)| (name, SecretString::from(value)))
                    .collect(),
            },
            "slack" => ChannelKind::Slack {
                url: url(channel.url)?,
            },
            "email" => {
                let host = channel
                    .smtp_host
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| error(key("smtp_host"), origins, "is required for email"))?;
                let from = channel
                    .from
                    .filter(|f| f.contains('@'))
                    .ok_or_else(|| error(key("from"), origins, "must be an email address"))?;
                if channel.to.is_empty() || channel.to.iter().any(|to| !to.contains('@')) {
                    return Err(error(
                        key("to"),
                        origins,
                        "must list one or more email addresses",
                    ));
                }
                ChannelKind::Email {
                    host,
                    port: channel.smtp_port.unwrap_or(25),
                    from,
                    to: channel.to,
                }
            }
            other => {
                return Err(error(
                    key("type"),
                    origins,
                    format!("`{other}` is not one of: webhook, slack, email"),
                ));
            }
        };
        channels.push(AlertChannel {
            name: channel.name,
            kind,
            min_severity: severity(
                channel.min_severity.as_deref(),
                AlertSeverity::Info,
                &key("min_severity"),
            )?,
        });
    }
    let rules = match raw.rules {
        None => AlertSettings::default_rules(),
        Some(raw_rules) => {
            let mut rules: Vec<AlertRule> = Vec::new();
            for (index, rule) in raw_rules.into_iter().enumerate() {
                let key = |field: &str| format!("alerts.rules[{index}].{field}");
                if rules.iter().any(|r| r.name == rule.name) || rule.name.trim().is_empty() {
                    return Err(error(
                        key("name"),
                        origins,
                        "must be a name no other rule has",
                    ));
                }
                let window = match rule.window_seconds {
                    None => Duration::from_secs(300),
                    Some(secs) if secs == 0 || secs > MAX_WINDOW.as_secs() => {
                        return Err(error(
                            key("window_seconds"),
                            origins,
                            format!("must be between 1 and {}", MAX_WINDOW.as_secs()),
                        ));
                    }
                    Some(secs) => Duration::from_secs(secs),
                };
                let min_requests = rule.min_requests.unwrap_or(20);
                let threshold = |valid: &dyn Fn(f64) -> bool, what: &str| match rule.threshold {
                    Some(value) if valid(value) => Ok(value),
                    _ => Err(error(key("threshold"), origins, what.to_owned())),
                };
                let kind = match rule.kind.as_str() {
                    "error_rate" => RuleKind::ErrorRate {
                        threshold: threshold(
                            &|v| v > 0.0 && v <= 1.0,
                            "is required: a share of requests between 0 and 1",
                        )?,
                        window,
                        min_requests,
                    },
                    "p95_latency" => RuleKind::P95Latency {
                        threshold_ms: threshold(&|v| v > 0.0, "is required: milliseconds above 0")?,
                        window,
                        min_requests,
                    },
                    "circuit_open" => RuleKind::CircuitOpen,
                    "health_level" => RuleKind::HealthLevel,
                    "budget" => RuleKind::Budget,
                    "critical_error" => RuleKind::CriticalError,
                    "anomaly" => RuleKind::Anomaly {
                        sensitivity: match rule.sensitivity {
                            None => 6.0,
                            Some(k) if k > 0.0 => k,
                            Some(_) => {
                                return Err(error(key("sensitivity"), origins, "must be above 0"));
                            }
                        },
                        min_requests: rule.min_requests.unwrap_or(10),
                    },
                    other => {
                        return Err(error(
                            key("kind"),
                            origins,
                            format!(
                                "`{other}` is not one of: error_rate, p95_latency, circuit_open, budget, critical_error, health_level, anomaly"
                            ),
                        ));
                    }
                };
                if let Some(names) = &rule.channels
                    && let Some(unknown) = names
                        .iter()
                        .find(|n| !channels.iter().any(|c| &c.name == *n))
                {
                    return Err(error(
                        key("channels"),
                        origins,
                        format!("no channel is named `{unknown}`"),
                    ));
                }
                rules.push(AlertRule {
                    name: rule.name,
                    kind,
                    severity: severity(
                        rule.severity.as_deref(),
                        AlertSeverity::Warning,
                        &key("severity"),
                    )?,
                    channels: rule.channels,
                });
            }
            rules
        }
    };
    Ok(AlertSettings {
        evaluate_interval: positive_ms(
            raw.evaluate_interval_ms,
            defaults.evaluate_interval,
            "alerts.evaluate_interval_ms",
            origins,
        )?,
        dedupe: Duration::from_secs(
            60 * raw.dedupe_minutes.unwrap_or(defaults.dedupe.as_secs() / 60),
        ),
        max_per_hour: positive(
            raw.max_per_hour,
            u64::from(defaults.max_per_hour),
            "alerts.max_per_hour",
            origins,
        )?
        .min(u64::from(u32::MAX)) as u32,
        rules,
        channels,
    })
}
fn validate_routing(raw: RawRouting, origins: &Origins) -> Result<RoutingSettings, ConfigError> {
    let defaults = RoutingSettings::default();
    let breaker_defaults = BreakerConfig::default();
    let rate = |value: Option<f64>, default: f64, key: &str| -> Result<f64, ConfigError> {
        match value {
            Some(rate) if !(0.0..=1.0).contains(&rate) => {
                Err(error(key, origins, "must be between 0 and 1"))
            }
            Some(rate) => Ok(rate),
            None => Ok(default),
        }
    };
    let millis =
        |value: Option<u64>, default: Duration, key: &str| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(positive(
                value,
                default.as_millis() as u64,
                key,
                origins,
            )?))
        };
    let breaker = BreakerConfig {
        window: positive(
            raw.breaker.window,
            breaker_defaults.window as u64,
            "routing.breaker.window",
            origins,
        )? as usize,
        minimum_calls: positive(
            raw.breaker.minimum_calls,
            breaker_defaults.minimum_calls as u64,
            "routing.breaker.minimum_calls",
            origins,
        )? as usize,
        failure_rate: rate(
            raw.breaker.failure_rate,
            breaker_defaults.failure_rate,
            "routing.breaker.failure_rate",
        )?,
        slow_call_rate: rate(
            raw.breaker.slow_call_rate,
            breaker_defaults.slow_call_rate,
            "routing.breaker.slow_call_rate",
        )?,
        slow_call: millis(
            raw.breaker.slow_call_ms,
            breaker_defaults.slow_call,
            "routing.breaker.slow_call_ms",
        )?,
        open_for: millis(
            raw.breaker.open_ms,
            breaker_defaults.open_for,
            "routing.breaker.open_ms",
        )?,
        max_open_for: millis(
            raw.breaker.max_open_ms,
            breaker_defaults.max_open_for,
            "routing.breaker.max_open_ms",
        )?,
        half_open_probes: positive(
            raw.breaker.half_open_probes.map(u64::from),
            u64::from(breaker_defaults.half_open_probes),
            "routing.breaker.half_open_probes",
            origins,
        )? as u32,
    };
    let mut rules = Vec::new();
    for (index, rule) in raw.rules.into_iter().enumerate() {
        let key = format!("routing.rules[{index}]");
        if rule.route_to.is_empty() {
            return Err(error(
                format!("{key}.route_to"),
                origins,
                "must name a model",
            ));
        }
        let mut headers = Vec::new();
        for (name, value) in rule.headers {
            let parsed = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                error(
                    format!("{key}.headers.{name}"),
                    origins,
                    "not a valid HTTP header name",
                )
            })?;
            headers.push((parsed, value));
        }
        rules.push(RouteRule {
            models: rule.models,
            keys: rule.keys,
            teams: rule.teams,
            headers,
            metadata: rule.metadata.into_iter().collect(),
            route_to: rule.route_to,
        });
    }
    Ok(RoutingSettings {
        breaker,
        backoff: Backoff {
            base: millis(
                raw.backoff_base_ms,
                defaults.backoff.base,
                "routing.backoff_base_ms",
            )?,
            max: millis(
                raw.backoff_max_ms,
                defaults.backoff.max,
                "routing.backoff_max_ms",
            )?,
        },
        max_attempts: positive(
            raw.max_attempts.map(u64::from),
            u64::from(defaults.max_attempts),
            "routing.max_attempts",
            origins,
        )?
        .min(20) as u32,
        max_retry_after: millis(
            raw.max_retry_after_ms,
            defaults.max_retry_after,
            "routing.max_retry_after_ms",
        )?,
        retry_budget_ratio: rate(
            raw.retry_budget_ratio,
            defaults.retry_budget_ratio,
            "routing.retry_budget_ratio",
        )?,
        retry_budget_floor: raw
            .retry_budget_floor
            .unwrap_or(defaults.retry_budget_floor),
        retry_budget_window: millis(
            raw.retry_budget_window_ms,
            defaults.retry_budget_window,
            "routing.retry_budget_window_ms",
        )?,
        rules,
    })
}

/// The built-in catalog, a LiteLLM price file over it, then `[[catalog.models]]`.
fn build_catalog(raw: RawCatalog, origins: &Origins) -> Result<Catalog, ConfigError> {
    let mut catalog = Catalog::built_in().map_err(|e| error("catalog", origins, e.to_string()))?;
    if let Some(path) = raw.price_file.filter(|p| !p.is_empty()) {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            error(
                "catalog.price_file",
                origins,
                format!("cannot read {path}: {e}"),
            )
        })?;
        catalog
            .merge_litellm(&text)
            .map_err(|e| error("catalog.price_file", origins, format!("{path}: {e}")))?;
    }
    for (index, model) in raw.models.into_iter().enumerate() {
        let key = format!("catalog.models[{index}]");
        for (field, price) in [
            ("input_per_million", model.input_per_million),
            ("output_per_million", model.output_per_million),
            ("cached_input_per_million", model.cached_input_per_million),
            ("cache_write_per_million", model.cache_write_per_million),
        ] {
            if price.is_some_and(|p| !(p.is_finite() && p >= 0.0)) {
                return Err(error(
                    format!("{key}.{field}"),
                    origins,
                    "must be a price of 0 or more (USD per million tokens)",
                ));
            }
        }
        catalog.insert(ModelInfo {
            provider: model.provider,
            model: model.model,
            context_window: model.context_window,
            max_output: model.max_output_tokens,
            input_per_million: model.input_per_million,
            output_per_million: model.output_per_million,
            cached_input_per_million: model.cached_input_per_million,
            cache_write_per_million: model.cache_write_per_million,
            features: model.features,
        });
    }
    Ok(catalog)
}

/// The first variable of `names` that is set and not empty.
fn first_set<'a>(env: &'a Env, names: &[&'static str]) -> Option<(&'static str, &'a String)> {
    names.iter().find_map(|name| {
        env.get(*name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (*name, v))
    })
}

/// A preset switched on by its usual environment variables, and which ones did it.
fn preset_from_env(preset: &Preset, env: &Env) -> Option<(RawProvider, String)> {
    let mut used = Vec::new();
    let mut raw = RawProvider {
        name: Some(preset.name.to_owned()),
        kind: preset.name.to_owned(),
        ..RawProvider::default()
    };
    let base = first_set(env, preset.base_url_env);
    let key = first_set(env, preset.key_env);
    match preset.kind {
        ProviderKind::Bedrock => {
            let (id_var, id) = key?;
            let (secret_var, secret) = first_set(env, &["AWS_SECRET_ACCESS_KEY"])?;
            used.extend([id_var, secret_var]);
            raw.aws_access_key_id = Some(id.clone());
            raw.aws_secret_access_key = Some(secret.clone());
            if let Some((var, token)) = first_set(env, &["AWS_SESSION_TOKEN"]) {
                used.push(var);
                raw.aws_session_token = Some(token.clone());
            }
            if let Some((var, region)) = first_set(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]) {
                used.push(var);
                raw.region = Some(region.clone());
            }
        }
        ProviderKind::Azure => {
            let (key_var, key) = key?;
            base?;
            used.push(key_var);
            raw.api_key = Some(key.clone());
            if let Some((var, version)) = first_set(env, &["OPENAI_API_VERSION"]) {
                used.push(var);
                raw.api_version = Some(version.clone());
            }
        }
        _ if preset.key_required => {
            let (key_var, key) = key?;
            used.push(key_var);
            raw.api_key = Some(key.clone());
        }
        _ => {
            base?;
            if let Some((key_var, key)) = key {
                used.push(key_var);
                raw.api_key = Some(key.clone());
            }
        }
    }
    if let Some((var, url)) = base {
        used.push(var);
        raw.base_url = Some(if var == "OLLAMA_HOST" {
            ollama_url(url)
        } else {
            url.clone()
        });
    }
    Some((raw, format!("environment ({})", used.join(", "))))
}

/// OLLAMA_HOST is `host:port` (maybe with a scheme), as the ollama CLI takes it.
fn ollama_url(host: &str) -> String {
    let host = host.trim_end_matches('/');
    if host.contains("://") {
        format!("{host}/v1")
    } else {
        format!("http://{host}/v1")
    }
}

fn upkeep_settings(
    analytics: &RawAnalytics,
    retention: &RawRetention,
    origins: &Origins,
) -> Result<UpkeepConfig, ConfigError> {
    let defaults = UpkeepConfig::default();
    let days = |value: Option<u64>, default: Option<Duration>, key: &str| match value {
        None => Ok(default),
        Some(0) => Ok(None),
        Some(days) if days > 100 * 365 => Err(error(
            key,
            origins,
            "must be at most 36500 (0 keeps forever)",
        )),
        Some(days) => Ok(Some(Duration::from_secs(days * 86_400))),
    };
    Ok(UpkeepConfig {
        rollup_interval: positive_ms(
            analytics.rollup_interval_ms,
            defaults.rollup_interval,
            "analytics.rollup_interval_ms",
            origins,
        )?,
        retention_interval: Duration::from_secs(
            60 * positive(
                retention.interval_minutes,
                defaults.retention_interval.as_secs() / 60,
                "retention.interval_minutes",
                origins,
            )?,
        ),
        retention: Retention {
            request_logs: days(
                retention.request_logs_days,
                defaults.retention.request_logs,
                "retention.request_logs_days",
            )?,
            rollups: days(
                retention.rollups_days,
                defaults.retention.rollups,
                "retention.rollups_days",
            )?,
            errors: days(
                retention.errors_days,
                defaults.retention.errors,
                "retention.errors_days",
            )?,
            server_logs: days(
                retention.server_logs_days,
                defaults.retention.server_logs,
                "retention.server_logs_days",
            )?,
            alerts: days(
                retention.alerts_days,
                defaults.retention.alerts,
                "retention.alerts_days",
            )?,
        },
        rollups_on: defaults.rollups_on,
    })
}

fn positive(
    value: Option<u64>,
    default: u64,
    key: &str,
    origins: &Origins,
) -> Result<u64, ConfigError> {
    match value {
        Some(0) => Err(error(key, origins, "must be greater than 0")),
        Some(value) => Ok(value),
        None => Ok(default),
    }
}

/// A positive number of milliseconds under `key`, or `default`.
fn positive_ms(
    value: Option<u64>,
    default: Duration,
    key: &str,
    origins: &Origins,
) -> Result<Duration, ConfigError> {
    positive(value, default.as_millis() as u64, key, origins).map(Duration::from_millis)
}

fn validate_provider(
    raw: RawProvider,
    key: &str,
    origins: &Origins,
    source: String,
    env: &Env,
    catalog: &Catalog,
) -> Result<ProviderSettings, ConfigError> {
    let preset = presets::find(&raw.kind);
    let (kind, preset_name) = match (preset, raw.kind.as_str()) {
        (Some(preset), _) => (preset.kind, preset.name),
        (None, "openai-compatible") => (ProviderKind::OpenAi, "openai-compatible"),
        (None, other) => {
            let known: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
            return Err(error(
                format!("{key}.type"),
                origins,
                format!(
                    "`{other}` is not a known provider type; use openai-compatible or one of: {}",
                    known.join(", ")
                ),
            ));
        }
    };
    let name = raw
        .name
        .clone()
        .or_else(|| preset.map(|p| p.name.to_owned()))
        .unwrap_or_default()
        .trim()
        .to_owned();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(error(
            format!("{key}.name"),
            origins,
            "use letters, digits, `-` or `_` (it prefixes model names)",
        ));
    }
    if name == "sim" {
        return Err(error(
            format!("{key}.name"),
            origins,
            "`sim` is the built-in simulator; choose another name",
        ));
    }
    let region = raw
        .region
        .clone()
        .or_else(|| first_set(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]).map(|(_, r)| r.clone()))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let default_base_url = match kind {
        ProviderKind::Bedrock => Some(format!("https://bedrock-runtime.{region}.amazonaws.com")),
        _ => preset.and_then(|p| p.base_url).map(str::to_owned),
    };
    let base_url = raw
        .base_url
        .clone()
        .filter(|u| !u.is_empty())
        .or(default_base_url)
        .ok_or_else(|| {
            error(
                format!("{key}.base_url"),
                origins,
                match kind {
                    ProviderKind::Azure => "required for `azure`: your resource's endpoint, e.g. https://NAME.openai.azure.com",
                    _ => "required for this type (e.g. http://127.0.0.1:8000/v1)",
                },
            )
        })?;
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(error(
            format!("{key}.base_url"),
            origins,
            format!(
                "`{}` must start with http:// or https://",
                redact_url(&base_url)
            ),
        ));
    }
    let api_key = raw.api_key.filter(|k| !k.is_empty());
    let aws = if kind == ProviderKind::Bedrock {
        let required = |value: Option<String>, field: &str, var: &str| {
            value.filter(|v| !v.is_empty()).ok_or_else(|| {
                error(
                    format!("{key}.{field}"),
                    origins,
                    format!("required for `bedrock` (e.g. {field} = \"${{{var}}}\")"),
                )
            })
        };
        Some(AwsSettings {
            access_key_id: required(
                raw.aws_access_key_id,
                "aws_access_key_id",
                "AWS_ACCESS_KEY_ID",
            )?,
            secret_access_key: SecretString::from(required(
                raw.aws_secret_access_key,
                "aws_secret_access_key",
                "AWS_SECRET_ACCESS_KEY",
            )?),
            session_token: raw
                .aws_session_token
                .filter(|t| !t.is_empty())
                .map(SecretString::from),
            region,
        })
    } else {
        None
    };
    if let Some(preset) = preset
        && api_key.is_none()
        && kind != ProviderKind::Bedrock
        && preset.key_required
    {
        return Err(error(
            format!("{key}.api_key"),
            origins,
            format!(
                "required for `{preset_name}` (e.g. api_key = \"${{{}}}\")",
                preset.key_env[0]
            ),
        ));
    }
    let mut headers = Vec::new();
    for (header_name, header_value) in raw.headers {
        let parsed_name = http::HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
            error(
                format!("{key}.headers.{header_name}"),
                origins,
                "not a valid HTTP header name",
            )
        })?;
        let mut parsed_value = http::HeaderValue::from_str(&header_value).map_err(|_| {
            error(
                format!("{key}.headers.{header_name}"),
                origins,
                "not a valid HTTP header value",
            )
        })?;
        parsed_value.set_sensitive(true);
        headers.push((parsed_name, parsed_value));
    }
    let millis = |value: Option<u64>, default: u64, field: &str| -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(positive(
            value,
            default,
            &format!("{key}.{field}"),
            origins,
        )?))
    };
    let mut quirks = preset
        .map(|p| p.quirks.clone())
        .unwrap_or(presets::GENERIC_QUIRKS);
    let overrides = [
        (raw.quirks.legacy_max_tokens, &mut quirks.legacy_max_tokens),
        (raw.quirks.stream_options, &mut quirks.stream_options),
        (raw.quirks.tools, &mut quirks.tools),
        (raw.quirks.vision, &mut quirks.vision),
        (raw.quirks.top_k, &mut quirks.top_k),
        (raw.quirks.reasoning_effort, &mut quirks.reasoning_effort),
    ];
    for (value, field) in overrides {
        if let Some(value) = value {
            *field = value;
        }
    }
    // Names with a slash (`meta-llama/...`) are reachable as `<provider>/<model>` only, so
    // they never shadow a provider prefix.
    let models = raw.models.unwrap_or_else(|| {
        catalog
            .of_provider(preset_name)
            .map(|info| info.model.clone())
            .filter(|model| !model.contains('/'))
            .collect()
    });
    Ok(ProviderSettings {
        name,
        kind,
        preset: preset_name.to_owned(),
        base_url,
        api_keys: api_key
            .into_iter()
            .chain(raw.api_keys.into_iter().filter(|k| !k.is_empty()))
            .map(SecretString::from)
            .collect(),
        headers,
        models,
        quirks,
        api_version: raw.api_version.filter(|v| !v.is_empty()),
        aws,
        drop_unsupported_params: raw.drop_unsupported_params.unwrap_or(false),
        connect_timeout: millis(raw.connect_timeout_ms, 10_000, "connect_timeout_ms")?,
        timeout: millis(raw.timeout_ms, 600_000, "timeout_ms")?,
        stream_idle_timeout: millis(
            raw.stream_idle_timeout_ms,
            120_000,
            "stream_idle_timeout_ms",
        )?,
        http2_prior_knowledge: raw.http2_prior_knowledge.unwrap_or(false),
        source,
    })
}

/// A URL with any password removed, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

mod health;
mod otlp;

#[cfg(test)]
mod tests;
