//! `atalaya mock-provider`.

use std::time::Duration;

use anyhow::Context as _;
use mock_provider::{MockConfig, MockState};

use crate::cli::MockArgs;
use crate::serve::shutdown_signal;

pub async fn run(args: MockArgs) -> anyhow::Result<()> {
    atalaya_telemetry::init_console(atalaya_telemetry::LogFormat::Pretty, "info")?;
    if !(args.tokens_per_second.is_finite() && args.tokens_per_second >= 0.0) {
        anyhow::bail!("--tokens-per-second must be 0 or a positive number");
    }
    let profile = match &args.profile {
        Some(profile) => mock_provider::Profile::load(profile)?,
        None => mock_provider::Profile::default(),
    };
    let config = MockConfig {
        profile,
        latency: Duration::from_millis(args.latency_ms),
        tokens_per_second: args.tokens_per_second,
        api_key: args.api_key,
        aws_access_key_id: args.aws_access_key_id,
        aws_secret_access_key: args.aws_secret_access_key,
        ..MockConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "Listening on http://{address}.");
    mock_provider::serve(listener, MockState::new(config), shutdown_signal())
        .await
        .context("serving")
}
