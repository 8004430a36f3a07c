//! Cohere v2 chat (`POST /v2/chat`): requests, responses, the typed SSE events
//! (`message-start`, `content-start`/`-delta`/`-end`, `tool-plan-delta`,
//! `tool-call-start`/`-delta`/`-end`, `message-end`), embeddings (`POST /v2/embed`) and
//! `{"message": ...}` error bodies.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::chat::*;
use crate::wire;
use crate::{Decoded, StreamError, StreamFailure, Target, TranslateError, unix_now};

const FORMAT: &str = "Cohere v2 chat";

/// Writes a canonical request as a `/v2/chat` body.
pub fn encode_request(request: &ChatRequest, target: &Target) -> Result<Vec<u8>, TranslateError> {
    let mut body = Map::new();
    body.insert("model".into(), json!(request.model));
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        let mut out = Map::new();
        out.insert("role".into(), json!(message.role.as_str()));
        match message.role {
            Role::System | Role::Tool => {
                if message.has_images() {
                    target.refuse(
                        FORMAT,
                        &format!("{param}.content"),
                        "system and tool messages hold text only.",
                    )?;
                }
                out.insert("content".into(), json!(message.joined_text()));
                if message.role == Role::Tool {
                    out.insert(
                        "tool_call_id".into(),
                        json!(message.tool_call_id.clone().unwrap_or_default()),
                    );
                }
            }
            Role::User | Role::Assistant => {
                let mut parts = Vec::new();
                for part in &message.content {
                    match part {
                        Part::Text(text) => parts.push(json!({"type": "text", "text": text})),
                        Part::Image(image) if message.role == Role::User => {
                            parts.push(
                                json!({"type": "image_url", "image_url": {"url": image.to_url()}}),
                            );
                        }
                        Part::Image(_) => {
                            target.refuse(
                                FORMAT,
                                &format!("{param}.content"),
                                "assistant messages hold text only.",
                            )?;
                        }
                        Part::Thinking { .. } | Part::RedactedThinking(_) => {}
                    }
                }
                if !parts.is_empty() {
                    out.insert("content".into(), Value::Array(parts));
                }
                if !message.tool_calls.is_empty() {
                    let calls: Vec<Value> = message
                        .tool_calls
                        .iter()
                        .map(|call| json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}))
                        .collect();
                    out.insert("tool_calls".into(), Value::Array(calls));
                }
            }
        }
        messages.push(Value::Object(out));
    }
    body.insert("messages".into(), Value::Array(messages));
    let mut tools: Vec<&Tool> = request.tools.iter().collect();
    match &request.tool_choice {
        None | Some(ToolChoice::Auto) => {}
        Some(ToolChoice::None) => {
            body.insert("tool_choice".into(), json!("NONE"));
        }
        Some(ToolChoice::Required) => {
            body.insert("tool_choice".into(), json!("REQUIRED"));
        }
        // Cohere cannot name the tool to call; offering only that tool, required, is the same.
        Some(ToolChoice::Tool(name)) => {
            tools.retain(|tool| &tool.name == name);
            body.insert("tool_choice".into(), json!("REQUIRED"));
        }
    }
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|tool| {
                let mut function = json!({"name": tool.name, "parameters": tool.parameters});
                if let Some(description) = &tool.description {
                    function["description"] = json!(description);
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if request.parallel_tool_calls == Some(false) {
        target.refuse(
            FORMAT,
            "parallel_tool_calls",
            "Cohere cannot be told to call one tool at a time.",
        )?;
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_object", "json_schema": schema}),
            );
        }
    }
    if let Some(max) = request.max_tokens {
        body.insert("max_tokens".into(), json!(max));
    }
    let numbers = [
        ("temperature", request.temperature),
        ("p", request.top_p),
        ("presence_penalty", request.presence_penalty),
        ("frequency_penalty", request.frequency_penalty),
    ];
    for (name, value) in numbers {
        if let Some(value) = value {
            body.insert(name.into(), json!(value));
        }
    }
    if let Some(top_k) = request.top_k {
        body.insert("k".into(), json!(top_k));
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if let Some(seed) = request.seed {
        body.insert("seed".into(), json!(seed));
    }
    if let Some(reasoning) = &request.reasoning {
        let budget = reasoning.budget();
        body.insert(
            "thinking".into(),
            if budget == 0 {
                json!({"type": "disabled"})
            } else {
                json!({"type": "enabled", "token_budget": budget})
            },
        );
    }
    if request.stream {
        body.insert("stream".into(), json!(true));
    }
    crate::refuse_unsupported(request, target, FORMAT, &["n"])?;
    crate::refuse_extra(request, target, FORMAT)?;
    Ok(wire::to_vec(&body))
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Deserialize, Default, Clone, Copy)]
struct Tokens {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    billed_units: Option<Tokens>,
    #[serde(default)]
    tokens: Option<Tokens>,
    #[serde(default)]
    cached_tokens: Option<f64>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        // `tokens` counts what the model saw; `billed_units` what is charged (it omits
        // framing). Prefer the first, fall back on the second.
        let tokens = self.tokens.or(self.billed_units).unwrap_or_default();
        Usage {
            prompt_tokens: tokens.input_tokens.unwrap_or(0.0) as u64,
            completion_tokens: tokens.output_tokens.unwrap_or(0.0) as u64,
            cached_tokens: self.cached_tokens.unwrap_or(0.0) as u64,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            estimated: false,
        }
    }
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Vec<WireContent>,
    #[serde(default)]
    tool_plan: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
    message: WireMessage,
    #[serde(default)]
    usage: Option<WireUsage>,
}

pub fn finish_reason_of(reason: &str) -> FinishReason {
    match reason {
        "COMPLETE" | "STOP_SEQUENCE" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "TOOL_CALL" => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}

/// Reads a `/v2/chat` body.
pub fn decode_response(body: &[u8], model: &str) -> Result<ChatResponse, TranslateError> {
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not a Cohere chat body: {e}")))?;
    let mut message = Message::new(Role::Assistant, Vec::new());
    if let Some(plan) = wire.message.tool_plan.filter(|p| !p.is_empty()) {
        message.content.push(Part::Thinking {
            text: plan,
            signature: None,
        });
    }
    for content in wire.message.content {
        match content.kind.as_deref() {
            Some("thinking") => message.content.push(Part::Thinking {
                text: content.thinking.or(content.text).unwrap_or_default(),
                signature: None,
            }),
            _ => message
                .content
                .push(Part::Text(content.text.unwrap_or_default())),
        }
    }
    for (index, call) in wire.message.tool_calls.into_iter().enumerate() {
        let function = call.function.unwrap_or(WireFunction {
            name: None,
            arguments: None,
        });
        message.tool_calls.push(ToolCall {
            id: call.id.unwrap_or_else(|| format!("call_{index}")),
            name: function.name.unwrap_or_default(),
            arguments: function.arguments.unwrap_or_default(),
        });
    }
    Ok(ChatResponse {
        id: wire.id.unwrap_or_default(),
        model: model.to_owned(),
        created: unix_now(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: wire
                .finish_reason
                .as_deref()
                .map(finish_reason_of)
                .unwrap_or(FinishReason::Stop),
            stop_sequence: None,
        }],
        usage: wire.usage.map(WireUsage::canonical),
    })
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<Value>,
}

/// Turns `/v2/chat` stream events into canonical deltas.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    ended: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Whether `message-end` arrived.
    pub fn complete(&self) -> bool {
        self.ended
    }

    pub fn decode(&mut self, data: &[u8]) -> Decoded {
        let mut deltas = Vec::new();
        self.decode_into(data, &mut deltas)?;
        Ok(deltas)
    }

    /// [`decode`](Self::decode) appending to `deltas`, which callers reuse.
    pub fn decode_into(
        &mut self,
        data: &[u8],
        deltas: &mut Vec<Delta>,
    ) -> Result<(), StreamFailure> {
        let event: WireEvent =
            serde_json::from_slice(data).map_err(|e| StreamFailure::Malformed(format!("{e}")))?;
        let delta = event.delta.unwrap_or(Value::Null);
        let message = &delta["message"];

        if !self.started {
            self.started = true;
            deltas.push(Delta::Start {
                id: event.id.clone(),
                model: None,
            });
        }
        let text = |value: &Value| value.as_str().filter(|t| !t.is_empty()).map(str::to_owned);
        match event.kind.as_str() {
            "content-start" | "content-delta" => {
                let content = &message["content"];
                if content["type"] == "thinking" || content.get("thinking").is_some() {
                    if let Some(text) = text(&content["thinking"]) {
                        deltas.push(Delta::Thinking { choice: 0, text });
                    }
                } else if let Some(text) = text(&content["text"]) {
                    deltas.push(Delta::Text { choice: 0, text });
                }
            }
            "tool-plan-delta" => {
                if let Some(text) = text(&message["tool_plan"]) {
                    deltas.push(Delta::Thinking { choice: 0, text });
                }
            }
            "tool-call-start" => {
                let call = &message["tool_calls"];
                let index = event.index.unwrap_or(0);
                deltas.push(Delta::ToolCallStart {
                    choice: 0,
                    index,
                    id: call["id"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("call_{index}")),
                    name: call["function"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                });
                if let Some(fragment) = text(&call["function"]["arguments"]) {
                    deltas.push(Delta::ToolCallArguments {
                        choice: 0,
                        index,
                        fragment,
                    });
                }
            }
            "tool-call-delta" => {
                if let Some(fragment) = text(&message["tool_calls"]["function"]["arguments"]) {
                    deltas.push(Delta::ToolCallArguments {
                        choice: 0,
                        index: event.index.unwrap_or(0),
                        fragment,
                    });
                }
            }
            "message-end" => {
                self.ended = true;
                let reason = delta["finish_reason"].as_str().unwrap_or("COMPLETE");
                if reason == "ERROR" || reason == "ERROR_TOXIC" {
                    return Err(StreamFailure::Provider(StreamError {
                        kind: reason.to_owned(),
                        message: delta["error"]
                            .as_str()
                            .unwrap_or("the model stopped with an error")
                            .to_owned(),
                    }));
                }
                deltas.push(Delta::Finish {
                    choice: 0,
                    reason: finish_reason_of(reason),
                    stop_sequence: None,
                });
                if let Ok(usage) = serde_json::from_value::<WireUsage>(delta["usage"].clone())
                    && !delta["usage"].is_null()
                {
                    deltas.push(Delta::Usage(usage.canonical()));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The `message` of a Cohere error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("message")?.as_str().map(str::to_owned)
}

/// The body for `/v2/embed`.
pub fn encode_embeddings(model: &str, inputs: &[String], dimensions: Option<u32>) -> Vec<u8> {
    let mut body = json!({
        "model": model,
        "texts": inputs,
        "input_type": "search_document",
        "embedding_types": ["float"],
    });
    if let Some(dimensions) = dimensions {
        body["output_dimension"] = json!(dimensions);
    }
    wire::to_vec(&body)
}

/// Vectors and billed input tokens from a `/v2/embed` answer.
pub fn decode_embeddings(body: &[u8]) -> Result<(Vec<Vec<f32>>, Option<u64>), TranslateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not an embed answer: {e}")))?;
    let vectors: Vec<Vec<f32>> = serde_json::from_value(value["embeddings"]["float"].clone())
        .map_err(|e| TranslateError::upstream(format!("no float embeddings in the answer: {e}")))?;
    let tokens = value["meta"]["billed_units"]["input_tokens"]
        .as_f64()
        .map(|t| t as u64);
    Ok((vectors, tokens))
}
