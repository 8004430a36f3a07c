//! Token counts for providers that report none: OpenAI's `o200k_base` tokenizer with
//! OpenAI's published chat framing. Counts made here are marked `estimated`.

use std::sync::LazyLock;

use atalaya_translate::{ChatRequest, Part, Usage};
use tiktoken_rs::CoreBPE;

/// Loaded on first use: the vocabulary takes tens of milliseconds and megabytes to build,
/// and most deployments never need it because their providers report usage.
static TOKENIZER: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::o200k_base().ok());

/// Tokens in `text`; a length-based guess if the tokenizer could not be built.
pub(crate) fn count(text: &str) -> u64 {
    match TOKENIZER.as_ref() {
        Some(tokenizer) => tokenizer.encode_ordinary(text).len() as u64,
        None => text.chars().count().div_ceil(4) as u64,
    }
}

/// Prompt tokens of a chat request: 3 framing tokens per message and 3 to prime the answer,
/// as OpenAI documents; tool definitions count as their JSON.
pub(crate) fn prompt_tokens(request: &ChatRequest) -> u64 {
    let mut total = 3;
    for message in &request.messages {
        total += 3;
        for part in &message.content {
            match part {
                Part::Text(text) | Part::Thinking { text, .. } => total += count(text),
                // OpenAI bills a low-detail image at 85 tokens; a fair floor for any image.
                Part::Image(_) => total += 85,
                Part::RedactedThinking(_) => {}
            }
        }
        for call in &message.tool_calls {
            total += count(&call.name) + count(&call.arguments);
        }
    }
    for tool in &request.tools {
        total += count(&tool.name) + count(&tool.parameters.to_string());
        if let Some(description) = &tool.description {
            total += count(description);
        }
    }
    total
}

/// Usage for a chat whose provider reported none.
pub(crate) fn estimate(request: &ChatRequest, completion: &str) -> Usage {
    Usage {
        prompt_tokens: prompt_tokens(request),
        completion_tokens: count(completion),
        estimated: true,
        ..Usage::default()
    }
}

/// Usage for embeddings of `texts` whose provider reported none.
pub(crate) fn estimate_texts(texts: &[String]) -> Usage {
    Usage {
        prompt_tokens: texts.iter().map(|t| count(t)).sum(),
        estimated: true,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atalaya_translate::{Message, Role};

    #[test]
    fn counts_come_from_the_tokenizer() {
        // "Hello, world!" is 4 tokens in o200k_base: "Hello", ",", " world", "!".
        assert_eq!(count("Hello, world!"), 4);
        let request = ChatRequest {
            messages: vec![Message::text(Role::User, "Hello, world!")],
            ..ChatRequest::default()
        };
        let usage = estimate(&request, "Hi there");
        assert_eq!(usage.prompt_tokens, 3 + 3 + 4);
        assert_eq!(usage.completion_tokens, 2);
        assert!(usage.estimated);
    }
}
