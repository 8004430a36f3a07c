//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// atalaya — an AI gateway: one OpenAI-compatible API in front of many providers, with keys,
/// request logs and metrics.
#[derive(Parser)]
#[command(name = "atalaya", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (embedded SQLite and the built-in `sim` provider by default).
    Serve(ServeArgs),
    /// Run the provider simulator (OpenAI, Azure, Anthropic, Gemini, Cohere and Bedrock
    /// formats) for tests and benchmarks.
    MockProvider(MockArgs),
    /// Create, list and revoke virtual API keys on a running server.
    Keys(KeysArgs),
    /// Show which providers the configuration and environment switch on, and why; and how to
    /// switch on the others.
    Providers(ProvidersArgs),
    /// Store, list, delete secrets in the encrypted vault, and rotate its master key.
    Secrets(SecretsArgs),
    /// Verify the tamper-evident audit log, or export it as JSON lines.
    Audit(AuditArgs),
    /// Run one prompt on several models of a running server and print them side by side
    /// (latency, time to first token, tokens, cost, and a judge's score if asked).
    Compare(CompareArgs),
    /// Make a running server read its configuration again (as SIGHUP does) and print what
    /// changed; an invalid file is refused and the running configuration kept.
    Reload(ReloadArgs),
}

#[derive(Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args)]
#[command(
    after_help = "Example:\n  atalaya compare \"Explain DNS in one sentence\" --models gpt-4o-mini,claude-haiku-4-5,sim-chat --judge gpt-4o"
)]
pub struct CompareArgs {
    /// The prompt (a single user message).
    pub prompt: String,
    /// Models to compare, comma separated (1 to 10).
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', required = true)]
    pub models: Vec<String>,
    /// A model that scores every answer from 1 to 10.
    #[arg(long, value_name = "MODEL")]
    pub judge: Option<String>,
    /// What the judge should score for (e.g. "accuracy and brevity").
    #[arg(long, value_name = "TEXT", requires = "judge")]
    pub criteria: Option<String>,
    /// A system prompt sent to every model.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u32>,
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Each model's total time limit.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Print every answer in full below the table.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// How a client command reaches the running server.
#[derive(Args)]
pub struct Connection {
    /// URL of the running server.
    #[arg(
        long,
        value_name = "URL",
        env = "ATALAYA_URL",
        default_value = "http://127.0.0.1:4000"
    )]
    pub server: String,
    /// API key [default: $ATALAYA_API_KEY, else the admin key: $ATALAYA_ADMIN_KEY or
    /// <data-dir>/admin.key].
    #[arg(
        long,
        value_name = "KEY",
        env = "ATALAYA_API_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
    /// Data directory to read admin.key from.
    #[arg(long, value_name = "DIR", default_value = "./atalaya-data")]
    pub data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ProvidersArgs {
    /// Config file [default: ./atalaya.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(
    after_help = "Environment:\n  ATALAYA_SECTION__KEY    overrides any config key, e.g. ATALAYA_SERVER__LISTEN=0.0.0.0:4000\n  ATALAYA_DATABASE_URL    storage (default sqlite://<data-dir>/atalaya.db)\n  ATALAYA_ADMIN_KEY       admin key (default: generated into <data-dir>/admin.key)\n  ATALAYA_HASH_KEY        secret for hashing API keys (default: generated into <data-dir>/hash.key)\n  ATALAYA_MASTER_KEY      the vault's master key (default: generated into <data-dir>/master.key)\n  OPENAI_API_KEY          turns on the `openai` provider (OPENAI_BASE_URL changes its URL)"
)]
pub struct ServeArgs {
    /// Config file [default: ./atalaya.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the database and generated secrets [default: ./atalaya-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Delay before each response's headers, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Streaming pace in tokens (chunks) per second; 0 sends all chunks at once.
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    pub tokens_per_second: f64,
    /// Require this bearer key (any non-empty key is accepted otherwise).
    #[arg(
        long,
        value_name = "KEY",
        env = "MOCK_PROVIDER_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// A fault profile: a built-in name (healthy, flaky, half-failing, failing, down,
    /// throttled, slow, jittery, hang, cut, slow-stream, malformed, html) or a TOML/JSON file.
    /// Replace it at run time with `PUT /_mock/profile`.
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    /// The AWS access key id Bedrock requests must be signed with.
    #[arg(long, value_name = "ID", default_value = mock_provider::DEFAULT_AWS_ACCESS_KEY_ID)]
    pub aws_access_key_id: String,
    /// The AWS secret access key Bedrock requests must be signed with.
    #[arg(
        long,
        value_name = "SECRET",
        env = "MOCK_PROVIDER_AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        default_value = mock_provider::DEFAULT_AWS_SECRET_ACCESS_KEY
    )]
    pub aws_secret_access_key: String,
}

#[derive(Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    /// URL of the running server.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "ATALAYA_URL",
        default_value = "http://127.0.0.1:4000"
    )]
    pub server: String,
    /// Admin key [default: $ATALAYA_ADMIN_KEY, else <data-dir>/admin.key].
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        env = "ATALAYA_ADMIN_KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,
    /// Data directory to read admin.key from.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "./atalaya-data"
    )]
    pub data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum KeysAction {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// admin, operator, developer (default) or viewer; see README "Roles".
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
        #[arg(long, value_name = "TEAM")]
        team: Option<String>,
        /// The only models the key may call, comma separated [default: any].
        #[arg(long, value_name = "A,B", value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// The key stops working after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<f64>,
        /// A JSON object stored with the key.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// Requests per minute.
        #[arg(long, value_name = "N")]
        rpm_limit: Option<u64>,
        /// Tokens (prompt + completion) per minute.
        #[arg(long, value_name = "N")]
        tpm_limit: Option<u64>,
        /// Spend allowed per budget period, in USD; further requests get 429 budget_exceeded.
        #[arg(long, value_name = "USD")]
        budget_usd: Option<f64>,
        /// Spend that raises an alert, in USD.
        #[arg(long, value_name = "USD")]
        soft_budget_usd: Option<f64>,
        /// day or month (UTC) [default: month].
        #[arg(long, value_name = "PERIOD")]
        budget_period: Option<String>,
    },
    /// List keys (ids, labels, prefixes, state).
    List,
    /// Revoke a key by id; it stops working at once.
    Revoke {
        /// The key id (key_...).
        id: String,
    },
}

#[derive(Args)]
#[command(
    after_help = "Secrets are sealed with AES-256-GCM under a data key of their own, wrapped by the master key\n(ATALAYA_MASTER_KEY, else <data-dir>/master.key, generated 0600 on first use). Refer to one from\nthe config as a provider credential: api_key = \"vault:NAME\". The server reads the vault at start."
)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub action: SecretsAction,
    #[command(flatten)]
    pub local: Local,
}

#[derive(Subcommand)]
pub enum SecretsAction {
    /// Store (or replace) a secret; the value is read from standard input unless --value.
    Set {
        name: String,
        /// The value (it stays in your shell history: prefer standard input).
        #[arg(long, hide = true)]
        value: Option<String>,
    },
    /// List secret names and the master key that seals them (never values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    Delete { name: String },
    /// Re-wrap every data key under a new master key, in one transaction. With a key file
    /// the new key is generated; with ATALAYA_MASTER_KEY, pass the new one in
    /// ATALAYA_NEW_MASTER_KEY. Run it again to finish an interrupted rotation.
    RotateMasterKey,
}

#[derive(Args)]
#[command(
    after_help = "Every admin action, key change, secret access, auth failure and role denial is appended to the\naudit log, each entry chained to the previous one by an HMAC keyed with the server's hashing\nsecret (ATALAYA_HASH_KEY or <data-dir>/hash.key). `verify` names the first entry that was edited,\ndeleted, inserted or moved. The API pages it at GET /api/v1/audit."
)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub action: AuditAction,
    #[command(flatten)]
    pub local: Local,
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the chain; exits non-zero naming the first broken link.
    Verify {
        /// Verify an exported file instead of the database.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Write every entry, with its hashes, as JSON lines.
    Export {
        /// Output file [default: standard output].
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Where a command that works on the data directory directly finds it.
#[derive(Args)]
pub struct Local {
    /// Config file [default: ./atalaya.toml if it exists] (for the database location).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./atalaya-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}
