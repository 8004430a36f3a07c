//! `atalaya providers`: what the configuration and environment switch on, read the same way
//! `serve` reads them, without starting anything.

use atalaya_gateway::presets::PRESETS;
use serde::Serialize;

use crate::cli::ProvidersArgs;
use crate::config::{self, Flags};

#[derive(Serialize)]
struct Enabled {
    name: String,
    #[serde(rename = "type")]
    preset: String,
    base_url: String,
    source: String,
    models: usize,
}

#[derive(Serialize)]
struct Available {
    #[serde(rename = "type")]
    preset: &'static str,
    title: &'static str,
    switch_on_with: String,
}

pub fn run(args: ProvidersArgs) -> anyhow::Result<()> {
    let env = config::process_env();
    let flags = Flags {
        config: args.config,
        ..Flags::default()
    };
    let settings = config::load(&flags, &env)?;
    let gateway = &settings.gateway;
    let mut enabled: Vec<Enabled> = gateway
        .providers
        .iter()
        .map(|p| Enabled {
            name: p.name.clone(),
            preset: p.preset.clone(),
            base_url: config::redact_url(&p.base_url),
            source: p.source.clone(),
            models: p.models.len(),
        })
        .collect();
    if gateway.sim.is_some() {
        enabled.insert(
            0,
            Enabled {
                name: "sim".into(),
                preset: "sim".into(),
                base_url: "(in process)".into(),
                source: "built in".into(),
                models: 2,
            },
        );
    }
    let available: Vec<Available> = PRESETS
        .iter()
        .filter(|preset| !gateway.providers.iter().any(|p| p.preset == preset.name))
        .map(|preset| Available {
            preset: preset.name,
            title: preset.title,
            switch_on_with: preset.switch(),
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"enabled": enabled, "available": available})
            )?
        );
        return Ok(());
    }
    println!("Enabled:");
    for provider in &enabled {
        println!(
            "  {:<14} {:<18} {:>3} models  {}  ({})",
            provider.name, provider.preset, provider.models, provider.base_url, provider.source
        );
    }
    println!("\nAvailable (set the variable, or add a [[providers]] entry):");
    for preset in &available {
        println!(
            "  {:<12} {:<36} {}",
            preset.preset, preset.title, preset.switch_on_with
        );
    }
    Ok(())
}
