//! Cohere's v2 API as the real service speaks it: `POST /v2/chat` (JSON, or SSE events
//! named by `type`: `message-start`, `content-start`, `content-delta`, `content-end`,
//! `tool-plan-delta`, `tool-call-start`, `tool-call-delta`, `tool-call-end`, `message-end`),
//! `POST /v2/embed`, bearer keys, and `{"id", "message"}` error bodies.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::{self, Output, Prompt, ToolMode, ToolSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub status: u16,
    pub message: String,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error {
            status: 400,
            message: message.into(),
        }
    }

    pub fn body(&self, id: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"id": id, "message": self.message})).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct Body {
    model: Option<String>,
    messages: Option<Vec<WireMessage>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    tools: Vec<WireTool>,
    #[serde(default)]
    tool_choice: Option<String>,
    #[serde(default)]
    response_format: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Value>,
}

#[derive(Deserialize)]
struct WireTool {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    parameters: Option<Value>,
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// Validates a v2 chat request and reduces it to a prompt.
pub fn parse(body: &[u8]) -> Result<Prompt, Error> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("invalid request: could not parse body: {e}")))?;
    let model = body
        .model
        .ok_or_else(|| Error::invalid("invalid request: model must be specified"))?;
    let messages = body
        .messages
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::invalid("invalid request: messages must not be empty"))?;
    let mut texts = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if !matches!(
            message.role.as_str(),
            "system" | "user" | "assistant" | "tool"
        ) {
            return Err(Error::invalid(format!(
                "invalid request: messages[{index}].role must be one of system, user, assistant, tool"
            )));
        }
        let mut text = message.content.as_ref().map(text_of).unwrap_or_default();
        if let Some(calls) = &message.tool_calls {
            text.push_str(&calls.to_string());
        }
        texts.push((message.role.clone(), text));
    }
    let mut prompt = Prompt::from_texts(model, texts.iter().map(|(r, t)| (r.as_str(), t.as_str())));
    prompt.stream = body.stream.unwrap_or(false);
    prompt.max_tokens = body.max_tokens;
    prompt.last_is_tool_result = messages.last().is_some_and(|m| m.role == "tool");
    prompt.tools = body
        .tools
        .into_iter()
        .map(|tool| ToolSpec {
            name: tool.function.name,
            schema: tool
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object"})),
        })
        .collect();
    prompt.tool_mode = match body.tool_choice.as_deref() {
        Some("NONE") => ToolMode::None,
        Some("REQUIRED") => ToolMode::Required,
        Some(other) => {
            return Err(Error::invalid(format!(
                "invalid request: tool_choice must be REQUIRED or NONE, got {other}"
            )));
        }
        None => ToolMode::Auto,
    };
    if let Some(format) = &body.response_format
        && format["type"] == "json_object"
    {
        prompt.json_schema = Some(
            format
                .get("json_schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"})),
        );
    }
    Ok(prompt)
}

fn finish_reason(output: &Output) -> &'static str {
    match output {
        Output::Call { .. } => "TOOL_CALL",
        Output::Text(reply) if reply.finish_reason == sim::FinishReason::Length => "MAX_TOKENS",
        Output::Text(_) => "COMPLETE",
    }
}

fn usage(prompt: &Prompt, output: &Output) -> Value {
    // Billed units leave out the prompt framing the model sees.
    json!({
        "billed_units": {"input_tokens": prompt.prompt_tokens.saturating_sub(3), "output_tokens": output.tokens()},
        "tokens": {"input_tokens": prompt.prompt_tokens, "output_tokens": output.tokens()},
    })
}

fn id(prompt: &Prompt) -> String {
    let value = prompt.seed ^ crate::openai::next_counter();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        value >> 32,
        (value >> 16) & 0xffff,
        value & 0xfff,
        (value >> 4) & 0xfff,
        value & 0xffff_ffff_ffff
    )
}

fn tool_plan(name: &str) -> String {
    format!("I will call {name} to answer this.")
}

/// The v2 chat body.
pub fn answer(prompt: &Prompt) -> Vec<u8> {
    let output = prompt.output();
    let message = match &output {
        Output::Text(reply) => {
            json!({"role": "assistant", "content": [{"type": "text", "text": reply.text()}]})
        }
        Output::Call {
            name, arguments, ..
        } => json!({
            "role": "assistant",
            "tool_plan": tool_plan(name),
            "tool_calls": [{"id": output.call_id(&format!("{name}_")), "type": "function", "function": {"name": name, "arguments": arguments}}],
        }),
    };
    serde_json::to_vec(&json!({
        "id": id(prompt),
        "message": message,
        "finish_reason": finish_reason(&output),
        "usage": usage(prompt, &output),
    }))
    .unwrap_or_default()
}

fn event(kind: &str, mut data: Value) -> Bytes {
    data["type"] = json!(kind);
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Every event of the streamed answer, in order.
pub fn events(prompt: &Prompt) -> Vec<Bytes> {
    let output = prompt.output();
    let mut events = vec![event(
        "message-start",
        json!({"id": id(prompt), "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
    )];
    match &output {
        Output::Text(reply) => {
            events.push(event("content-start", json!({"index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
            for piece in &reply.pieces {
                events.push(event(
                    "content-delta",
                    json!({"index": 0, "delta": {"message": {"content": {"text": piece}}}}),
                ));
            }
            events.push(event("content-end", json!({"index": 0})));
        }
        Output::Call { name, .. } => {
            events.push(event(
                "tool-plan-delta",
                json!({"delta": {"message": {"tool_plan": tool_plan(name)}}}),
            ));
            events.push(event(
                "tool-call-start",
                json!({"index": 0, "delta": {"message": {"tool_calls": {"id": output.call_id(&format!("{name}_")), "type": "function", "function": {"name": name, "arguments": ""}}}}}),
            ));
            for piece in output.pieces() {
                events.push(event("tool-call-delta", json!({"index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}})));
            }
            events.push(event("tool-call-end", json!({"index": 0})));
        }
    }
    events.push(event("message-end", json!({"delta": {"finish_reason": finish_reason(&output), "usage": usage(prompt, &output)}})));
    events
}

#[derive(Deserialize)]
struct EmbedBody {
    model: Option<String>,
    #[serde(default)]
    texts: Option<Vec<String>>,
    #[serde(default)]
    input_type: Option<String>,
    #[serde(default)]
    output_dimension: Option<usize>,
}

/// `embed-v4.0` answers with 1536 values unless told otherwise; v3 models with 1024.
fn dimensions(model: &str) -> usize {
    if model.starts_with("embed-v4") {
        1536
    } else {
        1024
    }
}

/// `POST /v2/embed`.
pub fn embed(body: &[u8]) -> Result<Vec<u8>, Error> {
    let body: EmbedBody = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("invalid request: could not parse body: {e}")))?;
    let model = body
        .model
        .ok_or_else(|| Error::invalid("invalid request: model must be specified"))?;
    if body.input_type.is_none() {
        return Err(Error::invalid(
            "invalid request: input_type is required for embed models v3 and higher",
        ));
    }
    let texts = body
        .texts
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid("invalid request: texts must not be empty"))?;
    let size = body.output_dimension.unwrap_or_else(|| dimensions(&model));
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| sim::embedding(t.as_bytes(), size))
        .collect();
    let tokens: u32 = texts.iter().map(|t| sim::estimate_tokens(t)).sum();
    Ok(serde_json::to_vec(&json!({
        "id": format!("{:016x}", sim::seed_of(model.as_bytes())),
        "embeddings": {"float": vectors},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }))
    .unwrap_or_default())
}
