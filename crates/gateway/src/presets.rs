//! Known providers: their wire format, default base URL, the environment variables that
//! switch them on, and how their OpenAI dialect differs from OpenAI's.
//!
//! Base URLs follow each provider's own SDK: OpenAI-style ones include the version segment
//! (`https://api.openai.com/v1`), native formats take the host root and add their paths
//! (`https://api.anthropic.com` + `/v1/messages`).

use atalaya_translate::openai::Quirks;

use crate::config::ProviderKind;

#[derive(Debug)]
pub struct Preset {
    /// The `type` in config and the provider's default name.
    pub name: &'static str,
    pub kind: ProviderKind,
    pub title: &'static str,
    /// `None` when the URL must come from the environment or config.
    pub base_url: Option<&'static str>,
    /// Environment variables holding the API key, first set wins.
    pub key_env: &'static [&'static str],
    /// Environment variables overriding the base URL, first set wins.
    pub base_url_env: &'static [&'static str],
    /// Local servers need no key; they are switched on by their base URL variable.
    pub key_required: bool,
    pub quirks: Quirks,
}

impl Preset {
    /// The variables that switch this preset on, for operators.
    pub fn switch(&self) -> String {
        match self.kind {
            ProviderKind::Bedrock => {
                return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_REGION picks the region)"
                    .to_owned();
            }
            ProviderKind::Azure => {
                return "AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT".to_owned();
            }
            _ => {}
        }
        if self.key_required {
            self.key_env.join(" or ")
        } else {
            self.base_url_env.join(" or ")
        }
    }
}

const OPENAI: Quirks = Quirks {
    legacy_max_tokens: false,
    seed_field: "seed",
    stream_options: true,
    tool_choice_required: "required",
    nine_char_tool_ids: false,
    tools: true,
    vision: true,
    top_k: false,
    reasoning_effort: true,
};

/// Most OpenAI-compatible servers: `max_tokens`, no reasoning effort.
const COMPATIBLE: Quirks = Quirks {
    legacy_max_tokens: true,
    reasoning_effort: false,
    ..OPENAI
};

/// Open-model hosts that also take `top_k`.
const OPEN_MODELS: Quirks = Quirks {
    top_k: true,
    ..COMPATIBLE
};

const MISTRAL: Quirks = Quirks {
    legacy_max_tokens: true,
    seed_field: "random_seed",
    // Mistral sends usage on the last chunk unasked and rejects `stream_options`.
    stream_options: false,
    tool_choice_required: "any",
    nine_char_tool_ids: true,
    reasoning_effort: false,
    ..OPENAI
};

/// Local servers: `max_tokens`, `top_k`, usage unasked.
const LOCAL: Quirks = Quirks {
    stream_options: false,
    ..OPEN_MODELS
};

/// Native formats do not use OpenAI quirks; this fills the field.
const NATIVE: Quirks = OPENAI;

const fn preset(
    name: &'static str,
    kind: ProviderKind,
    title: &'static str,
    base_url: Option<&'static str>,
    key_env: &'static [&'static str],
    base_url_env: &'static [&'static str],
    quirks: Quirks,
) -> Preset {
    Preset {
        name,
        kind,
        title,
        base_url,
        key_env,
        base_url_env,
        key_required: true,
        quirks,
    }
}

const fn local(
    name: &'static str,
    title: &'static str,
    base_url: Option<&'static str>,
    key_env: &'static [&'static str],
    base_url_env: &'static [&'static str],
) -> Preset {
    Preset {
        name,
        kind: ProviderKind::OpenAi,
        title,
        base_url,
        key_env,
        base_url_env,
        key_required: false,
        quirks: LOCAL,
    }
}

/// Every preset, in the order that decides which provider serves a model name two of them
/// list: native providers first.
pub static PRESETS: &[Preset] = &[
    preset(
        "openai",
        ProviderKind::OpenAi,
        "OpenAI",
        Some("https://api.openai.com/v1"),
        &["OPENAI_API_KEY"],
        &["OPENAI_BASE_URL"],
        OPENAI,
    ),
    preset(
        "anthropic",
        ProviderKind::Anthropic,
        "Anthropic",
        Some("https://api.anthropic.com"),
        &["ANTHROPIC_API_KEY"],
        &["ANTHROPIC_BASE_URL"],
        NATIVE,
    ),
    preset(
        "gemini",
        ProviderKind::Gemini,
        "Google Gemini",
        Some("https://generativelanguage.googleapis.com"),
        &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        &["GEMINI_BASE_URL"],
        NATIVE,
    ),
    preset(
        "mistral",
        ProviderKind::OpenAi,
        "Mistral",
        Some("https://api.mistral.ai/v1"),
        &["MISTRAL_API_KEY"],
        &["MISTRAL_BASE_URL"],
        MISTRAL,
    ),
    preset(
        "cohere",
        ProviderKind::Cohere,
        "Cohere",
        Some("https://api.cohere.com"),
        &["COHERE_API_KEY", "CO_API_KEY"],
        &["COHERE_BASE_URL"],
        NATIVE,
    ),
    // The key pair is AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the URL follows the region.
    preset(
        "bedrock",
        ProviderKind::Bedrock,
        "AWS Bedrock",
        None,
        &["AWS_ACCESS_KEY_ID"],
        &["AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"],
        NATIVE,
    ),
    preset(
        "azure",
        ProviderKind::Azure,
        "Azure OpenAI",
        None,
        &["AZURE_OPENAI_API_KEY"],
        &["AZURE_OPENAI_ENDPOINT"],
        OPENAI,
    ),
    preset(
        "deepseek",
        ProviderKind::OpenAi,
        "DeepSeek",
        Some("https://api.deepseek.com/v1"),
        &["DEEPSEEK_API_KEY"],
        &["DEEPSEEK_BASE_URL"],
        COMPATIBLE,
    ),
    preset(
        "xai",
        ProviderKind::OpenAi,
        "xAI",
        Some("https://api.x.ai/v1"),
        &["XAI_API_KEY"],
        &["XAI_BASE_URL"],
        Quirks {
            legacy_max_tokens: false,
            reasoning_effort: true,
            ..COMPATIBLE
        },
    ),
    preset(
        "qwen",
        ProviderKind::OpenAi,
        "Qwen (DashScope, compatible mode)",
        Some("https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
        &["DASHSCOPE_API_KEY"],
        &["DASHSCOPE_BASE_URL"],
        OPEN_MODELS,
    ),
    preset(
        "groq",
        ProviderKind::OpenAi,
        "Groq",
        Some("https://api.groq.com/openai/v1"),
        &["GROQ_API_KEY"],
        &["GROQ_BASE_URL"],
        Quirks {
            reasoning_effort: true,
            ..COMPATIBLE
        },
    ),
    preset(
        "together",
        ProviderKind::OpenAi,
        "Together AI",
        Some("https://api.together.xyz/v1"),
        &["TOGETHER_API_KEY", "TOGETHERAI_API_KEY"],
        &["TOGETHER_BASE_URL"],
        OPEN_MODELS,
    ),
    preset(
        "fireworks",
        ProviderKind::OpenAi,
        "Fireworks AI",
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY"],
        &["FIREWORKS_BASE_URL"],
        OPEN_MODELS,
    ),
    // Sonar models call no tools; usage comes on the last chunk unasked.
    preset(
        "perplexity",
        ProviderKind::OpenAi,
        "Perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITY_API_KEY", "PERPLEXITYAI_API_KEY"],
        &["PERPLEXITY_BASE_URL"],
        Quirks {
            tools: false,
            vision: false,
            stream_options: false,
            ..OPEN_MODELS
        },
    ),
    preset(
        "openrouter",
        ProviderKind::OpenAi,
        "OpenRouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_KEY"],
        &["OPENROUTER_BASE_URL"],
        Quirks {
            reasoning_effort: true,
            ..OPEN_MODELS
        },
    ),
    preset(
        "huggingface",
        ProviderKind::OpenAi,
        "Hugging Face router",
        Some("https://router.huggingface.co/v1"),
        &["HF_TOKEN", "HUGGINGFACE_API_KEY"],
        &["HF_BASE_URL"],
        COMPATIBLE,
    ),
    preset(
        "ai21",
        ProviderKind::OpenAi,
        "AI21",
        Some("https://api.ai21.com/studio/v1"),
        &["AI21_API_KEY"],
        &["AI21_BASE_URL"],
        COMPATIBLE,
    ),
    preset(
        "meta",
        ProviderKind::OpenAi,
        "Meta Llama API",
        Some("https://api.llama.com/compat/v1"),
        &["LLAMA_API_KEY"],
        &["LLAMA_BASE_URL"],
        COMPATIBLE,
    ),
    preset(
        "cerebras",
        ProviderKind::OpenAi,
        "Cerebras",
        Some("https://api.cerebras.ai/v1"),
        &["CEREBRAS_API_KEY"],
        &["CEREBRAS_BASE_URL"],
        Quirks {
            legacy_max_tokens: false,
            reasoning_effort: true,
            ..COMPATIBLE
        },
    ),
    preset(
        "deepinfra",
        ProviderKind::OpenAi,
        "DeepInfra",
        Some("https://api.deepinfra.com/v1/openai"),
        &["DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN"],
        &["DEEPINFRA_BASE_URL"],
        OPEN_MODELS,
    ),
    preset(
        "nvidia",
        ProviderKind::OpenAi,
        "NVIDIA NIM",
        Some("https://integrate.api.nvidia.com/v1"),
        &["NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY"],
        &["NVIDIA_BASE_URL"],
        COMPATIBLE,
    ),
    preset(
        "moonshot",
        ProviderKind::OpenAi,
        "Moonshot (Kimi)",
        Some("https://api.moonshot.ai/v1"),
        &["MOONSHOT_API_KEY"],
        &["MOONSHOT_BASE_URL"],
        COMPATIBLE,
    ),
    preset(
        "zhipu",
        ProviderKind::OpenAi,
        "Zhipu (GLM)",
        Some("https://open.bigmodel.cn/api/paas/v4"),
        &["ZHIPUAI_API_KEY", "ZAI_API_KEY"],
        &["ZHIPUAI_BASE_URL"],
        COMPATIBLE,
    ),
    local(
        "ollama",
        "Ollama",
        Some("http://127.0.0.1:11434/v1"),
        &["OLLAMA_API_KEY"],
        &["OLLAMA_BASE_URL", "OLLAMA_HOST"],
    ),
    local("vllm", "vLLM", None, &["VLLM_API_KEY"], &["VLLM_BASE_URL"]),
    local(
        "llamacpp",
        "llama.cpp server",
        Some("http://127.0.0.1:8080/v1"),
        &["LLAMACPP_API_KEY"],
        &["LLAMACPP_BASE_URL"],
    ),
    local(
        "lmstudio",
        "LM Studio",
        Some("http://127.0.0.1:1234/v1"),
        &["LM_STUDIO_API_KEY"],
        &["LM_STUDIO_BASE_URL"],
    ),
];

/// A preset by its `type` name.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

/// Quirks of a plain OpenAI-compatible server nobody described: the common dialect.
pub const GENERIC_QUIRKS: Quirks = COMPATIBLE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PRESETS.len());
        for preset in PRESETS {
            assert!(
                !preset.key_env.is_empty() || !preset.key_required,
                "{}",
                preset.name
            );
            assert!(
                preset.base_url.is_some() || !preset.base_url_env.is_empty(),
                "{}",
                preset.name
            );
        }
        assert!(PRESETS.len() >= 27);
    }
}
