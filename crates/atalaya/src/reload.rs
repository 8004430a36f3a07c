//! Configuration reload (SIGHUP, `POST /api/v1/config/reload`, `atalaya reload`).
//!
//! The file and environment are read and validated again, and every part of the new gateway
//! (routing, each worker's HTTP clients) is built before anything is swapped: a file that
//! fails at any step leaves the running configuration untouched. On success each worker
//! serves new requests with the new gateway; requests already running finish on the old one.
//! Deployments of unchanged providers keep their breakers and latency figures; rate-limit
//! buckets and spend carry over.
//!
//! Listening address, data directory, database, workers, TLS, log destinations, the request
//! log writer, upkeep, the alert evaluation interval and health settings are read once at
//! start: a change to them is reported as needing a restart and the running values stay.

use std::sync::Arc;

use atalaya_gateway::reload::{ReloadOutcome, Reloads};
use atalaya_gateway::{
    Actor, Budgets, Gateway, GatewayConfig, Limits, LocalRates, Routing, Shared,
};
use atalaya_telemetry::names;
use secrecy::SecretString;
use tokio::sync::watch;

use crate::config::{self, Env, Flags, Settings};

/// What a reload needs from start-up, and the configuration now serving.
pub struct Reloader {
    pub flags: Flags,
    pub env: Env,
    /// The vault's secrets, for `secret:` references in the new file.
    pub vault: Vec<(String, SecretString)>,
    /// Secrets the process holds besides provider credentials (admin, hashing, vault, OTLP
    /// headers): the masking engine keeps them across reloads.
    pub own_secrets: Vec<SecretString>,
    pub settings: Settings,
    pub shared: Shared,
    /// Rate-limit buckets, kept across reloads.
    pub rates: Arc<LocalRates>,
    /// One per HTTP worker: the router it serves new requests with.
    pub routers: Vec<watch::Sender<atalaya_gateway::App>>,
    /// The gateway that probes deployments waiting half-open, when probes are on.
    pub prober: Option<watch::Sender<Arc<Gateway>>>,
    pub reloads: Reloads,
    pub generation: u64,
}

impl Reloader {
    pub async fn reload(&mut self, actor: Actor) -> ReloadOutcome {
        let mut outcome = ReloadOutcome {
            reloaded: false,
            generation: self.generation,
            at_ms: atalaya_store::now_ms(),
            requested_by: actor.name.clone(),
            error: None,
            changed: Vec::new(),
            restart_needed: Vec::new(),
        };
        match self.apply().await {
            Ok((changed, restart_needed)) => {
                self.generation += 1;
                outcome.reloaded = true;
                outcome.generation = self.generation;
                outcome.changed = changed;
                outcome.restart_needed = restart_needed;
                metrics::counter!(names::CONFIG_RELOADS, "result" => "success").increment(1);
                metrics::gauge!(names::CONFIG_GENERATION).set(self.generation as f64);
                tracing::info!(
                    generation = self.generation,
                    requested_by = %actor.name,
                    changed = %outcome.changed.join(","),
                    "Configuration reloaded."
                );
                if !outcome.restart_needed.is_empty() {
                    tracing::warn!(
                        sections = %outcome.restart_needed.join(","),
                        "These settings changed but take effect only after a restart; the running values stay."
                    );
                }
            }
            Err(error) => {
                outcome.error = Some(format!("{error:#}"));
                metrics::counter!(names::CONFIG_RELOADS, "result" => "error").increment(1);
                tracing::error!(
                    requested_by = %actor.name,
                    error = %format!("{error:#}"),
                    "Configuration not reloaded; the running configuration is kept."
                );
            }
        }
        let action = if outcome.reloaded {
            "config.reload"
        } else {
            "config.reload_failed"
        };
        let detail = serde_json::to_value(&outcome).unwrap_or_default();
        self.shared
            .auditor
            .record(&actor, action, "config", detail)
            .await;
        self.shared.events.publish("config", &outcome);
        self.reloads.record(&outcome);
        outcome
    }

    /// Loads, builds and swaps; nothing is swapped unless every step succeeded.
    async fn apply(&mut self) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let mut next = config::load(&self.flags, &self.env)?;
        crate::vault::resolve_references(&mut next.gateway, &self.vault)?;
        let current = &self.settings;
        next.logs.capture = current.logs.capture.clone();

        let restart_needed = fixed_changes(current, &next);
        // What cannot change while running keeps its running value.
        next.listen = current.listen;
        next.data_dir = current.data_dir.clone();
        next.database_url = current.database_url.clone();
        next.worker_threads = current.worker_threads;
        next.logs = current.logs.clone();
        next.request_log = current.request_log.clone();
        next.upkeep = current.upkeep.clone();
        next.tls = current.tls.clone();
        next.gateway.alerts.evaluate_interval = current.gateway.alerts.evaluate_interval;
        next.gateway.health = current.gateway.health.clone();
        let changed = live_changes(current, &next);

        let routing = next_routing(&current.gateway, &next.gateway, &self.shared.routing)?;
        let shared = Shared {
            routing,
            limits: Arc::new(Limits::new(self.rates.clone(), &next.gateway.teams)),
            budgets: Arc::new(Budgets::new(
                self.shared.store.clone(),
                &next.gateway.team_budgets,
            )),
            ..self.shared.clone()
        };
        let mut gateways = Vec::with_capacity(self.routers.len());
        for _ in &self.routers {
            gateways.push(Gateway::new(&next.gateway, &shared).map_err(anyhow::Error::from)?);
        }
        let prober = match &self.prober {
            Some(_) => Some(Gateway::new(&next.gateway, &shared).map_err(anyhow::Error::from)?),
            None => None,
        };
        let own: Vec<&SecretString> = self.own_secrets.iter().collect();
        crate::serve::register_secrets(&next.gateway, &own)?;

        // Everything is built: swap.
        shared
            .health
            .set_breakers(shared.routing.deployment_breakers());
        atalaya_gateway::events::announce_breakers(
            &shared.routing,
            &shared.events,
            shared.alerts.clone(),
        );
        for (router, gateway) in self.routers.iter().zip(gateways) {
            drop(router.send_replace(atalaya_gateway::App::new(gateway)));
        }
        if let (Some(sender), Some(gateway)) = (&self.prober, prober) {
            drop(sender.send_replace(gateway));
        }
        if let Some(alerts) = &shared.alerts {
            alerts.replace_settings(next.gateway.alerts.clone()).await;
        }
        self.shared = shared;
        self.settings = next;
        Ok((changed, restart_needed))
    }
}

/// The routing for `next`; deployments of providers whose settings did not change keep their
/// health (breaker, latency, success rate).
fn next_routing(
    current: &GatewayConfig,
    next: &GatewayConfig,
    routing: &Routing,
) -> anyhow::Result<Arc<Routing>> {
    let unchanged = |name: &str| {
        let find = |config: &GatewayConfig| {
            config
                .providers
                .iter()
                .find(|p| p.name == name)
                .map(|p| format!("{p:?}"))
        };
        // The simulator has no settings that change where it answers from.
        name == atalaya_gateway::SIM_PROVIDER
            || find(current).is_some_and(|old| find(next) == Some(old))
    };
    Ok(Routing::reload(next, routing, unchanged)?)
}

fn differs(a: &impl std::fmt::Debug, b: &impl std::fmt::Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Settings read once at start that the new file changes.
fn fixed_changes(current: &Settings, next: &Settings) -> Vec<String> {
    let checks = [
        ("server.listen", differs(&current.listen, &next.listen)),
        (
            "server.data_dir",
            differs(&current.data_dir, &next.data_dir),
        ),
        ("database", current.database_url != next.database_url),
        (
            "server.worker_threads",
            current.worker_threads != next.worker_threads,
        ),
        ("server.tls", differs(&current.tls, &next.tls)),
        ("telemetry", differs(&current.logs, &next.logs)),
        (
            "request_log",
            differs(&current.request_log, &next.request_log),
        ),
        (
            "analytics",
            current.upkeep.rollup_interval != next.upkeep.rollup_interval,
        ),
        (
            "retention",
            differs(&current.upkeep.retention, &next.upkeep.retention)
                || current.upkeep.retention_interval != next.upkeep.retention_interval,
        ),
        (
            "alerts.evaluate_interval_ms",
            current.gateway.alerts.evaluate_interval != next.gateway.alerts.evaluate_interval,
        ),
        (
            "health",
            differs(&current.gateway.health, &next.gateway.health),
        ),
    ];
    names_of(&checks)
}

/// Settings a reload applies that the new file changes.
fn live_changes(current: &Settings, next: &Settings) -> Vec<String> {
    let (a, b) = (&current.gateway, &next.gateway);
    let checks = [
        ("providers", differs(&a.providers, &b.providers)),
        ("sim", differs(&a.sim, &b.sim)),
        ("models", differs(&a.models, &b.models)),
        ("catalog", a.catalog != b.catalog),
        ("routing", differs(&a.routing, &b.routing)),
        (
            "teams",
            differs(&a.teams, &b.teams) || differs(&a.team_budgets, &b.team_budgets),
        ),
        ("guardrails", differs(&a.guardrails, &b.guardrails)),
        ("alerts", differs(&a.alerts, &b.alerts)),
        (
            "server.max_body_bytes",
            a.max_body_bytes != b.max_body_bytes,
        ),
        (
            "server.max_header_bytes",
            a.max_header_bytes != b.max_header_bytes,
        ),
        ("server.cors_origins", a.cors_origins != b.cors_origins),
        ("request_log.enabled", a.log_requests != b.log_requests),
        (
            "server.shutdown_grace_ms",
            current.shutdown_grace != next.shutdown_grace,
        ),
    ];
    names_of(&checks)
}

fn names_of(checks: &[(&str, bool)]) -> Vec<String> {
    checks
        .iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// `atalaya reload`: asks the running server to reload and prints the outcome.
pub async fn run(args: crate::cli::ReloadArgs) -> anyhow::Result<()> {
    use secrecy::ExposeSecret as _;
    let connection = &args.connection;
    let key = crate::client::key(connection.key.as_deref(), &connection.data_dir)?;
    let base = connection.server.trim_end_matches('/');
    let request = reqwest::Client::new()
        .post(format!("{base}/api/v1/config/reload"))
        .bearer_auth(key.expose_secret());
    let body = crate::client::answer(request, base).await?;
    if connection.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let list = |field: &str| {
        let names: Vec<&str> = body[field]
            .as_array()
            .map(|items| items.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        }
    };
    println!(
        "Reloaded: configuration generation {}.",
        body["generation"].as_u64().unwrap_or(0)
    );
    println!("Changed: {}.", list("changed"));
    if body["restart_needed"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        println!(
            "Needs a restart to take effect (running values kept): {}.",
            list("restart_needed")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn load(text: &str) -> GatewayConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atalaya.toml");
        std::fs::write(&path, text).unwrap();
        let flags = Flags {
            config: Some(path),
            data_dir: Some(dir.path().to_owned()),
            ..Flags::default()
        };
        config::load(&flags, &Env::new()).unwrap().gateway
    }

    fn file(base_url: &str, calls: u32) -> String {
        format!(
            "[[providers]]\nname = \"p0\"\ntype = \"openai-compatible\"\nbase_url = \"{base_url}\"\nmodels = [\"m\"]\n\n\
             [[providers]]\nname = \"p1\"\ntype = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodels = [\"n\"]\n\n\
             [routing.breaker]\nminimum_calls = {calls}\nwindow = 20\n"
        )
    }

    fn breaker(routing: &Routing, name: &str) -> Arc<atalaya_resilience::CircuitBreaker> {
        routing
            .deployment_breakers()
            .into_iter()
            .find(|b| b.name() == name)
            .unwrap()
    }

    fn trip(routing: &Routing, name: &str) {
        let breaker = breaker(routing, name);
        while breaker.state() != atalaya_resilience::State::Open {
            breaker.acquire().unwrap().failure();
        }
    }

    #[test]
    fn unchanged_providers_keep_their_breakers_and_changed_ones_start_afresh() {
        let before = load(&file("http://127.0.0.1:8/v1", 2));
        let routing = Routing::new(&before).unwrap();
        trip(&routing, "p0/m");
        trip(&routing, "p1/n");

        // Nothing changed: the same breakers, still open.
        let same = next_routing(&before, &before, &routing).unwrap();
        assert!(Arc::ptr_eq(
            &breaker(&routing, "p0/m"),
            &breaker(&same, "p0/m")
        ));
        assert_eq!(
            breaker(&same, "p0/m").state(),
            atalaya_resilience::State::Open
        );

        // p0 moved: its deployment starts closed; p1 keeps its open breaker.
        let moved = load(&file("http://127.0.0.1:7/v1", 2));
        let after = next_routing(&before, &moved, &routing).unwrap();
        assert_eq!(
            breaker(&after, "p0/m").state(),
            atalaya_resilience::State::Closed
        );
        assert!(Arc::ptr_eq(
            &breaker(&routing, "p1/n"),
            &breaker(&after, "p1/n")
        ));

        // New breaker settings: every breaker is built again with them.
        let stricter = load(&file("http://127.0.0.1:8/v1", 3));
        let after = next_routing(&before, &stricter, &routing).unwrap();
        assert_eq!(
            breaker(&after, "p1/n").state(),
            atalaya_resilience::State::Closed
        );
    }
}
