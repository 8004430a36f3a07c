//! `atalaya serve`: load config, open storage, build the gateway, serve, drain on signal.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use atalaya_gateway::{Gateway, KeyCache};
use atalaya_security::{KeyHasher, is_too_open, load_or_create_secret_file};
use atalaya_store::{Store, spawn_log_writer};
use axum::serve::ListenerExt as _;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::ServeArgs;
use crate::config::{self, Flags};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env = config::process_env();
    let flags = Flags {
        config: args.config,
        listen: args.listen,
        data_dir: args.data_dir,
    };
    let settings = config::load(&flags, &env)?;
    atalaya_telemetry::init_tracing(settings.log_format, &settings.log_level)?;
    let metrics = atalaya_telemetry::install_metrics()?;

    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let store = Store::connect(&settings.database_url)
        .await
        .context("opening storage")?;
    let admin_key = secret(
        &env,
        "ATALAYA_ADMIN_KEY",
        &settings.data_dir.join("admin.key"),
        "Admin key",
    )?;
    let hash_key = secret(
        &env,
        "ATALAYA_HASH_KEY",
        &settings.data_dir.join("hash.key"),
        "Key-hashing secret",
    )?;
    let hasher = KeyHasher::new(&hash_key);
    let admin_hash = hasher.hash(secrecy::ExposeSecret::expose_secret(&admin_key));

    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let log_writer = spawn_log_writer(
        store.clone(),
        settings.request_log.clone(),
        &tracker,
        shutdown.clone(),
    );
    let keys = KeyCache::new(hasher, admin_hash, store.clone());
    let gateway = Gateway::new(
        &settings.gateway,
        store.clone(),
        log_writer,
        keys,
        metrics.clone(),
    )
    .context("configuring providers")?;
    for provider in gateway.providers() {
        tracing::info!(provider = %provider.name, source = %provider.source, "Provider enabled.");
    }
    tracker.spawn(metrics_upkeep(metrics, shutdown.clone()));

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %settings.data_dir.display(), "Listening on http://{address}.");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });

    let app = atalaya_gateway::router(gateway);
    let draining = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("Shutting down: draining connections.");
        draining.cancel();
    });
    let grace = settings.shutdown_grace;
    tokio::select! {
        result = server => result.context("serving")?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "Connections still open after the grace period; closing them.");
        }
    }
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(grace + Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::error!("Background tasks did not stop in time.");
    }
    store.close().await;
    tracing::info!("Stopped.");
    Ok(())
}

/// A secret from its environment variable, else from its file (created on first start).
/// Logs where it came from, never the value.
fn secret(env: &config::Env, var: &str, file: &Path, what: &str) -> anyhow::Result<SecretString> {
    if let Some(value) = env.get(var).filter(|v| !v.trim().is_empty()) {
        tracing::info!(source = var, "{what} read from the environment.");
        return Ok(SecretString::from(value.trim().to_owned()));
    }
    let (value, created) = load_or_create_secret_file(file)?;
    if created {
        tracing::info!(path = %file.display(), "{what} generated and written to {} (mode 0600).", file.display());
    } else if is_too_open(file) {
        tracing::warn!(path = %file.display(), "{what} file is readable by other users; run chmod 600 on it.");
    }
    Ok(value)
}

/// Histograms and gauges need periodic upkeep when the exporter runs without its own server.
async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot listen for signals; stop with SIGKILL.");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
