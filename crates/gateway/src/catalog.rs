//! The model catalog: context window, output limit, prices and features of known models, and
//! the cost of a request from its usage.
//!
//! Built in from `catalog/models.json`; a LiteLLM `model_prices_and_context_window.json`
//! file and config entries override it, in that order.

use std::collections::HashMap;
use std::sync::Arc;

use atalaya_translate::Usage;
use serde::{Deserialize, Serialize};

/// What is known of one model of one provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The catalog provider: a preset name (`openai`, `groq`, ...) or a configured provider.
    pub provider: String,
    pub model: String,
    /// Input tokens the model accepts.
    #[serde(default, rename = "context", skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u64>,
    /// USD per million input tokens; `None` when unpublished.
    #[serde(default, rename = "input")]
    pub input_per_million: Option<f64>,
    #[serde(default, rename = "output")]
    pub output_per_million: Option<f64>,
    /// USD per million input tokens read from the prompt cache.
    #[serde(
        default,
        rename = "cached_input",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_input_per_million: Option<f64>,
    /// USD per million input tokens written to the prompt cache.
    #[serde(
        default,
        rename = "cache_write",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_per_million: Option<f64>,
    #[serde(default)]
    pub features: Vec<Feature>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Tools,
    Vision,
    JsonSchema,
    /// Reports usage on streams.
    StreamUsage,
    Reasoning,
    Embedding,
}

impl ModelInfo {
    /// USD for `usage`; `None` when the model's prices are unknown.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let input = self.input_per_million?;
        let output = self.output_per_million.unwrap_or(0.0);
        let cached = self.cached_input_per_million.unwrap_or(input);
        let written = self.cache_write_per_million.unwrap_or(input);
        let plain = usage
            .prompt_tokens
            .saturating_sub(usage.cached_tokens + usage.cache_write_tokens);
        let micro = plain as f64 * input
            + usage.cached_tokens as f64 * cached
            + usage.cache_write_tokens as f64 * written
            + usage.completion_tokens as f64 * output;
        Some(micro / 1_000_000.0)
    }

    pub fn has(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the built-in catalog is invalid: {0}")]
    BuiltIn(serde_json::Error),
    #[error("not a LiteLLM price file: {0}")]
    PriceFile(serde_json::Error),
}

/// Models by (provider, model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    models: HashMap<(String, String), Arc<ModelInfo>>,
    /// Insertion order, for listing.
    order: Vec<(String, String)>,
}

static BUILT_IN: &str = include_str!("../catalog/models.json");

impl Catalog {
    pub fn built_in() -> Result<Catalog, CatalogError> {
        let models: Vec<ModelInfo> =
            serde_json::from_str(BUILT_IN).map_err(CatalogError::BuiltIn)?;
        let mut catalog = Catalog::default();
        for model in models {
            catalog.insert(model);
        }
        Ok(catalog)
    }

    /// Adds or replaces a model.
    pub fn insert(&mut self, model: ModelInfo) {
        let key = (model.provider.clone(), model.model.clone());
        if self.models.insert(key.clone(), Arc::new(model)).is_none() {
            self.order.push(key);
        }
    }

    /// Merges a LiteLLM `model_prices_and_context_window.json`: every chat or embedding entry
    /// of a provider atalaya knows replaces the built-in one. Returns how many were taken.
    pub fn merge_litellm(&mut self, json: &str) -> Result<usize, CatalogError> {
        let entries: HashMap<String, serde_json::Value> =
            serde_json::from_str(json).map_err(CatalogError::PriceFile)?;
        let mut taken = 0;
        let mut keys: Vec<&String> = entries.keys().collect();
        keys.sort();
        for key in keys {
            let Ok(entry) = serde_json::from_value::<LiteLlmEntry>(entries[key].clone()) else {
                continue;
            };
            let Some(provider) = entry.litellm_provider.as_deref().and_then(litellm_provider)
            else {
                continue;
            };
            let mode = entry.mode.as_deref().unwrap_or("chat");
            if mode != "chat" && mode != "embedding" {
                continue;
            }
            // Keys are `model` or `provider/model`; the model name is what the provider takes.
            let model = key
                .strip_prefix(entry.litellm_provider.as_deref().unwrap_or_default())
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(key)
                .to_owned();
            let per_million = |per_token: Option<f64>| per_token.map(|p| p * 1_000_000.0);
            let mut features = Vec::new();
            let flags = [
                (entry.supports_function_calling, Feature::Tools),
                (entry.supports_vision, Feature::Vision),
                (entry.supports_response_schema, Feature::JsonSchema),
                (entry.supports_reasoning, Feature::Reasoning),
            ];
            for (flag, feature) in flags {
                if flag == Some(true) {
                    features.push(feature);
                }
            }
            if mode == "embedding" {
                features.push(Feature::Embedding);
            } else {
                features.push(Feature::StreamUsage);
            }
            self.insert(ModelInfo {
                provider: provider.to_owned(),
                model,
                context_window: entry.max_input_tokens.or(entry.max_tokens),
                max_output: if mode == "embedding" {
                    None
                } else {
                    entry.max_output_tokens.or(entry.max_tokens)
                },
                input_per_million: per_million(entry.input_cost_per_token),
                output_per_million: per_million(entry.output_cost_per_token),
                cached_input_per_million: per_million(entry.cache_read_input_token_cost),
                cache_write_per_million: per_million(entry.cache_creation_input_token_cost),
                features,
            });
            taken += 1;
        }
        Ok(taken)
    }

    pub fn get(&self, provider: &str, model: &str) -> Option<Arc<ModelInfo>> {
        self.models
            .get(&(provider.to_owned(), model.to_owned()))
            .cloned()
    }

    /// The entries of one provider, in catalog order.
    pub fn of_provider<'a>(
        &'a self,
        provider: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ModelInfo>> + 'a {
        self.order
            .iter()
            .filter(move |(p, _)| p == provider)
            .filter_map(|key| self.models.get(key))
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// The fields of a LiteLLM price-file entry that atalaya reads.
#[derive(Deserialize)]
struct LiteLlmEntry {
    #[serde(default)]
    litellm_provider: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_input_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    input_cost_per_token: Option<f64>,
    #[serde(default)]
    output_cost_per_token: Option<f64>,
    #[serde(default)]
    cache_read_input_token_cost: Option<f64>,
    #[serde(default)]
    cache_creation_input_token_cost: Option<f64>,
    #[serde(default)]
    supports_function_calling: Option<bool>,
    #[serde(default)]
    supports_vision: Option<bool>,
    #[serde(default)]
    supports_response_schema: Option<bool>,
    #[serde(default)]
    supports_reasoning: Option<bool>,
}

/// LiteLLM's provider names mapped to atalaya's presets.
fn litellm_provider(name: &str) -> Option<&'static str> {
    Some(match name {
        "openai" | "text-completion-openai" => "openai",
        "azure" => "azure",
        "anthropic" => "anthropic",
        "gemini" => "gemini",
        "mistral" => "mistral",
        "cohere" | "cohere_chat" => "cohere",
        "bedrock" | "bedrock_converse" => "bedrock",
        "deepseek" => "deepseek",
        "xai" => "xai",
        "dashscope" => "qwen",
        "groq" => "groq",
        "together_ai" => "together",
        "fireworks_ai" => "fireworks",
        "perplexity" => "perplexity",
        "openrouter" => "openrouter",
        "huggingface" => "huggingface",
        "ai21" | "ai21_chat" => "ai21",
        "meta_llama" => "meta",
        "cerebras" => "cerebras",
        "deepinfra" => "deepinfra",
        "nvidia_nim" => "nvidia",
        "moonshot" => "moonshot",
        "zai" => "zhipu",
        "ollama" | "ollama_chat" => "ollama",
        "hosted_vllm" => "vllm",
        "lm_studio" => "lmstudio",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_covers_every_preset_with_prices() {
        let catalog = Catalog::built_in().unwrap();
        assert!(catalog.len() >= 100, "{}", catalog.len());
        let gpt = catalog.get("openai", "gpt-4o-mini").unwrap();
        assert_eq!(gpt.input_per_million, Some(0.15));
        assert!(gpt.has(Feature::Tools));
        for preset in crate::presets::PRESETS {
            let local = !preset.key_required;
            let covered = catalog.of_provider(preset.name).next().is_some();
            assert!(
                covered || local || preset.name == "azure",
                "no models for {}",
                preset.name
            );
        }
    }

    #[test]
    fn cost_prices_cached_and_written_tokens_apart() {
        let info = ModelInfo {
            provider: "anthropic".into(),
            model: "m".into(),
            context_window: None,
            max_output: None,
            input_per_million: Some(3.0),
            output_per_million: Some(15.0),
            cached_input_per_million: Some(0.3),
            cache_write_per_million: Some(3.75),
            features: Vec::new(),
        };
        let usage = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
            cached_tokens: 200_000,
            cache_write_tokens: 100_000,
            ..Usage::default()
        };
        let cost = info.cost(&usage).unwrap();
        let expected = 0.7 * 3.0 + 0.2 * 0.3 + 0.1 * 3.75 + 0.1 * 15.0;
        assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");
        let unpriced = ModelInfo {
            input_per_million: None,
            ..info
        };
        assert_eq!(unpriced.cost(&usage), None);
    }

    #[test]
    fn a_litellm_price_file_overrides_and_extends() {
        let mut catalog = Catalog::built_in().unwrap();
        let file = r#"{
            "sample_spec": {"max_tokens": "LEGACY", "litellm_provider": "one of https://docs.litellm.ai/docs/providers"},
            "gpt-4o-mini": {"max_tokens": 16384, "max_input_tokens": 128000, "max_output_tokens": 16384, "input_cost_per_token": 1e-7, "output_cost_per_token": 5e-7, "litellm_provider": "openai", "mode": "chat", "supports_function_calling": true},
            "groq/brand-new": {"max_input_tokens": 8192, "input_cost_per_token": 2e-7, "output_cost_per_token": 2e-7, "litellm_provider": "groq", "mode": "chat"},
            "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation"},
            "unknown-cloud/x": {"litellm_provider": "unknown-cloud", "mode": "chat"}
        }"#;
        assert_eq!(catalog.merge_litellm(file).unwrap(), 2);
        let mini = catalog.get("openai", "gpt-4o-mini").unwrap();
        assert!((mini.input_per_million.unwrap() - 0.1).abs() < 1e-9);
        assert!(mini.has(Feature::Tools) && !mini.has(Feature::Vision));
        assert_eq!(
            catalog.get("groq", "brand-new").unwrap().context_window,
            Some(8192)
        );
        assert!(catalog.merge_litellm("[1, 2]").is_err());
    }
}
