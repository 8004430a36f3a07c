//! Anthropic's Messages API as the real service speaks it: `POST /v1/messages` with
//! `x-api-key` and `anthropic-version`, `message` bodies, the SSE event sequence
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`) and
//! `{"type": "error", "error": {...}, "request_id": ...}` bodies.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::{self, Output, Prompt, ToolMode, ToolSpec};

/// An Anthropic error: HTTP status, `error.type`, message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }

    pub fn body(&self, request_id: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": "error",
            "error": {"type": self.kind, "message": self.message},
            "request_id": request_id,
        }))
        .unwrap_or_default()
    }
}

/// Anthropic's `error.type` for a status.
pub fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

#[derive(Deserialize)]
struct Body {
    model: Option<String>,
    max_tokens: Option<u32>,
    messages: Option<Vec<WireMessage>>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    tools: Vec<WireTool>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Value,
}

#[derive(Deserialize)]
struct WireTool {
    name: String,
    #[serde(default)]
    input_schema: Option<Value>,
}

/// The text of a string or of an array of blocks, and whether the blocks hold a tool result.
fn text_of(content: &Value) -> (String, bool) {
    match content {
        Value::String(text) => (text.clone(), false),
        Value::Array(blocks) => {
            let mut text = String::new();
            let mut tool_result = false;
            for block in blocks {
                match block["type"].as_str() {
                    Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                    Some("tool_result") => {
                        tool_result = true;
                        text.push_str(&text_of(&block["content"]).0);
                    }
                    Some("tool_use") => text.push_str(&block["input"].to_string()),
                    _ => {}
                }
            }
            (text, tool_result)
        }
        _ => (String::new(), false),
    }
}

/// Validates a Messages request the way the API does and reduces it to a prompt.
pub fn parse(body: &[u8]) -> Result<Prompt, Error> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("Invalid JSON body: {e}")))?;
    let model = body
        .model
        .ok_or_else(|| Error::invalid("model: Field required"))?;
    let max_tokens = body
        .max_tokens
        .ok_or_else(|| Error::invalid("max_tokens: Field required"))?;
    let messages = body
        .messages
        .ok_or_else(|| Error::invalid("messages: Field required"))?;
    if let Some(temperature) = body.temperature
        && !(0.0..=1.0).contains(&temperature)
    {
        return Err(Error::invalid("temperature: range: 0..1"));
    }
    let mut texts = Vec::new();
    let mut last_is_tool_result = false;
    if let Some(system) = &body.system {
        texts.push(("system".to_owned(), text_of(system).0));
    }
    for (index, message) in messages.iter().enumerate() {
        if message.role != "user" && message.role != "assistant" {
            return Err(Error::invalid(format!(
                "messages.{index}.role: Input should be 'user' or 'assistant'"
            )));
        }
        let (text, tool_result) = text_of(&message.content);
        last_is_tool_result = tool_result;
        texts.push((message.role.clone(), text));
    }
    if messages.is_empty() {
        return Err(Error::invalid("messages: at least one message is required"));
    }
    let mut prompt = Prompt::from_texts(model, texts.iter().map(|(r, t)| (r.as_str(), t.as_str())));
    prompt.stream = body.stream.unwrap_or(false);
    prompt.max_tokens = Some(max_tokens);
    prompt.last_is_tool_result = last_is_tool_result;
    prompt.tools = body
        .tools
        .into_iter()
        .map(|tool| ToolSpec {
            name: tool.name,
            schema: tool
                .input_schema
                .unwrap_or_else(|| json!({"type": "object"})),
        })
        .collect();
    prompt.tool_mode = match body.tool_choice.as_ref().and_then(|c| c["type"].as_str()) {
        Some("none") => ToolMode::None,
        Some("any") => ToolMode::Required,
        Some("tool") => {
            let name = body
                .tool_choice
                .as_ref()
                .and_then(|c| c["name"].as_str())
                .unwrap_or_default()
                .to_owned();
            if !prompt.tools.iter().any(|t| t.name == name) {
                return Err(Error::invalid(format!(
                    "tool_choice.name: tool `{name}` is not defined in tools"
                )));
            }
            ToolMode::Named(name)
        }
        _ => ToolMode::Auto,
    };
    Ok(prompt)
}

fn stop_reason(output: &Output) -> &'static str {
    match output {
        Output::Call { .. } => "tool_use",
        Output::Text(reply) if reply.finish_reason == sim::FinishReason::Length => "max_tokens",
        Output::Text(_) => "end_turn",
    }
}

fn message_id(prompt: &Prompt) -> String {
    format!(
        "msg_01{:016x}{:06x}",
        prompt.seed,
        crate::openai::next_counter() & 0xFF_FFFF
    )
}

/// The `message` body.
pub fn answer(prompt: &Prompt) -> Vec<u8> {
    let output = prompt.output();
    let content = match &output {
        Output::Text(reply) => json!([{"type": "text", "text": reply.text()}]),
        Output::Call {
            name, arguments, ..
        } => json!([{
            "type": "tool_use",
            "id": output.call_id("toolu_01"),
            "name": name,
            "input": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({})),
        }]),
    };
    serde_json::to_vec(&json!({
        "id": message_id(prompt),
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": content,
        "stop_reason": stop_reason(&output),
        "stop_sequence": null,
        "usage": {
            "input_tokens": prompt.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output.tokens(),
            "service_tier": "standard",
        },
    }))
    .unwrap_or_default()
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Every event of the streamed answer, in order.
pub fn events(prompt: &Prompt) -> Vec<Bytes> {
    let output = prompt.output();
    let mut events = vec![event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": message_id(prompt), "type": "message", "role": "assistant", "model": prompt.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": prompt.prompt_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard"},
        }}),
    )];
    let block = match &output {
        Output::Text(_) => json!({"type": "text", "text": ""}),
        Output::Call { name, .. } => {
            json!({"type": "tool_use", "id": output.call_id("toolu_01"), "name": name, "input": {}})
        }
    };
    events.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    events.push(event("ping", &json!({"type": "ping"})));
    for piece in output.pieces() {
        let delta = match &output {
            Output::Text(_) => json!({"type": "text_delta", "text": piece}),
            Output::Call { .. } => json!({"type": "input_json_delta", "partial_json": piece}),
        };
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(&output), "stop_sequence": null}, "usage": {"output_tokens": output.tokens()}}),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    events
}
