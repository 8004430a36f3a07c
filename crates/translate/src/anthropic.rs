//! Anthropic Messages: requests, `message` bodies, the SSE event sequence (`message_start`,
//! `content_block_start` / `_delta` / `_stop` with `text_delta`, `input_json_delta`,
//! `thinking_delta` and `signature_delta`, `message_delta`, `message_stop`, `ping`, `error`)
//! and `{"type": "error", "error": {...}}` bodies.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::chat::*;
use crate::wire::{self, RawObject, field, is_null, missing, parse_object};
use crate::{Decoded, JSON_TOOL, StreamError, StreamFailure, Target, TranslateError, unix_now};

const FORMAT: &str = "Anthropic Messages";

/// What `encode_request` did that the answer's decoder must undo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Emulation {
    /// JSON output was requested through a forced call of [`JSON_TOOL`]; its input is the answer.
    pub json_tool: bool,
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Box<RawValue>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    source: Option<WireSource>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    tool_use_id: Option<String>,
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct WireSource {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

/// Reads an Anthropic Messages request into canonical form.
pub fn decode_request(body: &[u8], target: &Target) -> Result<ChatRequest, TranslateError> {
    let RawObject(fields) = parse_object(body)?;
    let mut request = ChatRequest::default();
    let mut saw_messages = false;
    let mut saw_max_tokens = false;
    let mut disable_parallel = false;
    for (name, raw) in fields {
        if is_null(raw) {
            continue;
        }
        match name.as_ref() {
            "model" => request.model = field(raw, "model", "a string")?,
            "max_tokens" => {
                saw_max_tokens = true;
                request.max_tokens = Some(field(raw, "max_tokens", "a positive integer")?);
            }
            "messages" => {
                saw_messages = true;
                let wire: Vec<WireMessage> = field(raw, "messages", "an array of messages")?;
                for (index, message) in wire.into_iter().enumerate() {
                    decode_message(message, index, target, &mut request.messages)?;
                }
            }
            "system" => {
                let mut system = Vec::new();
                for part in decode_blocks(raw, "system", target)? {
                    match part {
                        Block::Part(part) => system.push(part),
                        _ => {
                            return Err(TranslateError::invalid(
                                Some("system".to_owned()),
                                "system: only text blocks are allowed",
                            ));
                        }
                    }
                }
                request
                    .messages
                    .insert(0, Message::new(Role::System, system));
            }
            "tools" => {
                let tools: Vec<WireTool> = field(raw, "tools", "an array of tools")?;
                for (index, tool) in tools.into_iter().enumerate() {
                    if tool.kind.as_deref().is_some_and(|k| k != "custom") {
                        target.refuse(
                            FORMAT,
                            &format!("tools[{index}]"),
                            "Anthropic's server tools run only on Anthropic.",
                        )?;
                        continue;
                    }
                    request.tools.push(Tool {
                        name: tool.name,
                        description: tool.description,
                        parameters: tool
                            .input_schema
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                        strict: None,
                    });
                }
            }
            "tool_choice" => {
                #[derive(Deserialize)]
                struct Choice {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    name: Option<String>,
                    #[serde(default)]
                    disable_parallel_tool_use: Option<bool>,
                }
                let choice: Choice = field(raw, "tool_choice", "an object")?;
                disable_parallel = choice.disable_parallel_tool_use.unwrap_or(false);
                request.tool_choice = Some(match choice.kind.as_str() {
                    "auto" => ToolChoice::Auto,
                    "any" => ToolChoice::Required,
                    "none" => ToolChoice::None,
                    "tool" => {
                        ToolChoice::Tool(choice.name.ok_or_else(|| missing("tool_choice.name"))?)
                    }
                    other => {
                        return Err(TranslateError::invalid(
                            Some("tool_choice.type".to_owned()),
                            format!(
                                "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', got '{other}'"
                            ),
                        ));
                    }
                });
            }
            "stop_sequences" => request.stop = field(raw, "stop_sequences", "an array of strings")?,
            "temperature" => request.temperature = Some(field(raw, "temperature", "a number")?),
            "top_p" => request.top_p = Some(field(raw, "top_p", "a number")?),
            "top_k" => request.top_k = Some(field(raw, "top_k", "a positive integer")?),
            "stream" => request.stream = field(raw, "stream", "a boolean")?,
            "metadata" => {
                #[derive(Deserialize)]
                struct Metadata {
                    #[serde(default)]
                    user_id: Option<String>,
                }
                let metadata: Metadata = field(raw, "metadata", "an object")?;
                request.user = metadata.user_id;
            }
            "thinking" => {
                #[derive(Deserialize)]
                struct Thinking {
                    #[serde(rename = "type")]
                    kind: String,
                    #[serde(default)]
                    budget_tokens: Option<u32>,
                }
                let thinking: Thinking = field(raw, "thinking", "an object")?;
                if thinking.kind == "enabled" {
                    request.reasoning = Some(Reasoning::Budget(
                        thinking
                            .budget_tokens
                            .ok_or_else(|| missing("thinking.budget_tokens"))?,
                    ));
                }
            }
            _ => {
                request.extra_format = FORMAT;
                request
                    .extra
                    .push((name.into_owned(), raw.get().to_owned()));
            }
        }
    }
    if request.model.is_empty() {
        return Err(required("model"));
    }
    if !saw_max_tokens {
        return Err(required("max_tokens"));
    }
    if !saw_messages {
        return Err(required("messages"));
    }
    if disable_parallel {
        request.parallel_tool_calls = Some(false);
    }
    // Anthropic streams always report usage.
    request.stream_usage = request.stream;
    Ok(request)
}

/// Anthropic's own wording for a missing field.
fn required(name: &str) -> TranslateError {
    TranslateError::coded(
        "missing_required_parameter",
        Some(name.to_owned()),
        format!("{name}: Field required"),
    )
}

enum Block {
    Part(Part),
    ToolUse(ToolCall),
    ToolResult(Message),
}

fn decode_blocks(
    raw: &RawValue,
    param: &str,
    target: &Target,
) -> Result<Vec<Block>, TranslateError> {
    if raw.get().starts_with('"') {
        let text: String = field(raw, param, "a string")?;
        return Ok(vec![Block::Part(Part::Text(text))]);
    }
    let blocks: Vec<WireBlock> = field(raw, param, "a string or an array of content blocks")?;
    let mut out = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.into_iter().enumerate() {
        let at = format!("{param}[{index}]");
        match block.kind.as_str() {
            "text" => out.push(Block::Part(Part::Text(block.text.unwrap_or_default()))),
            "image" => {
                let source = block
                    .source
                    .ok_or_else(|| missing(&format!("{at}.source")))?;
                let image_source = match source.kind.as_str() {
                    "base64" => ImageSource::Base64 {
                        media_type: source
                            .media_type
                            .ok_or_else(|| missing(&format!("{at}.source.media_type")))?,
                        data: source
                            .data
                            .ok_or_else(|| missing(&format!("{at}.source.data")))?,
                    },
                    "url" => ImageSource::Url(
                        source
                            .url
                            .ok_or_else(|| missing(&format!("{at}.source.url")))?,
                    ),
                    other => {
                        target.refuse(
                            FORMAT,
                            &format!("{at}.source"),
                            &format!("image sources of type `{other}` exist only on Anthropic."),
                        )?;
                        continue;
                    }
                };
                out.push(Block::Part(Part::Image(Image {
                    source: image_source,
                    detail: None,
                })));
            }
            "tool_use" => out.push(Block::ToolUse(ToolCall {
                id: block.id.ok_or_else(|| missing(&format!("{at}.id")))?,
                name: block.name.ok_or_else(|| missing(&format!("{at}.name")))?,
                arguments: wire::to_text(&block.input.unwrap_or_else(|| json!({}))),
            })),
            "tool_result" => {
                let mut message = Message::new(Role::Tool, Vec::new());
                message.tool_call_id = Some(
                    block
                        .tool_use_id
                        .ok_or_else(|| missing(&format!("{at}.tool_use_id")))?,
                );
                message.is_error = block.is_error.unwrap_or(false);
                if let Some(content) = block.content.filter(|c| !is_null(c)) {
                    for inner in decode_blocks(&content, &format!("{at}.content"), target)? {
                        match inner {
                            Block::Part(part) => message.content.push(part),
                            _ => {
                                return Err(TranslateError::invalid(
                                    Some(format!("{at}.content")),
                                    "tool_result content holds text and images only",
                                ));
                            }
                        }
                    }
                }
                out.push(Block::ToolResult(message));
            }
            "thinking" => out.push(Block::Part(Part::Thinking {
                text: block.thinking.unwrap_or_default(),
                signature: block.signature,
            })),
            "redacted_thinking" => out.push(Block::Part(Part::RedactedThinking(
                block.data.unwrap_or_default(),
            ))),
            other => {
                target.refuse(
                    FORMAT,
                    &at,
                    &format!("content blocks of type `{other}` exist only on Anthropic."),
                )?;
            }
        }
    }
    Ok(out)
}

fn decode_message(
    message: WireMessage,
    index: usize,
    target: &Target,
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let role = match message.role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(TranslateError::invalid(
                Some(format!("messages[{index}].role")),
                format!(
                    "messages.{index}.role: Input should be 'user' or 'assistant', got '{other}'"
                ),
            ));
        }
    };
    let mut current = Message::new(role, Vec::new());
    for block in decode_blocks(
        &message.content,
        &format!("messages[{index}].content"),
        target,
    )? {
        match block {
            Block::Part(part) => current.content.push(part),
            Block::ToolUse(call) => current.tool_calls.push(call),
            // Tool results are messages of their own in canonical form, before the user's text.
            Block::ToolResult(result) => out.push(result),
        }
    }
    if !current.content.is_empty() || !current.tool_calls.is_empty() {
        out.push(current);
    }
    Ok(())
}

/// Options for [`encode_request`].
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Sent when the request has no output limit (Anthropic requires one).
    pub default_max_tokens: u32,
}

/// Writes a canonical request as an Anthropic Messages body.
pub fn encode_request(
    request: &ChatRequest,
    target: &Target,
    options: &EncodeOptions,
) -> Result<(Vec<u8>, Emulation), TranslateError> {
    let mut body = serde_json::Map::new();
    let mut emulation = Emulation::default();
    body.insert("model".into(), json!(request.model));
    body.insert(
        "max_tokens".into(),
        json!(request.max_tokens.unwrap_or(options.default_max_tokens)),
    );
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        match message.role {
            Role::System => {
                for part in &message.content {
                    match part {
                        Part::Text(text) => system.push(json!({"type": "text", "text": text})),
                        _ => {
                            target.refuse(
                                FORMAT,
                                &format!("{param}.content"),
                                "system prompts hold text only.",
                            )?;
                        }
                    }
                }
            }
            Role::User => {
                let blocks = encode_parts(&message.content);
                push_turn(&mut messages, "user", blocks);
            }
            Role::Assistant => {
                let mut blocks = encode_parts(&message.content);
                for call in &message.tool_calls {
                    let input = wire::call_arguments(call, &param, FORMAT)?;
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool => {
                let content = encode_parts(&message.content);
                let mut block = json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": content,
                });
                if message.is_error {
                    block["is_error"] = json!(true);
                }
                push_turn(&mut messages, "user", vec![block]);
            }
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            let mut out = json!({"name": tool.name, "input_schema": tool.parameters});
            if let Some(description) = &tool.description {
                out["description"] = json!(description);
            }
            out
        })
        .collect();
    let mut tool_choice = request.tool_choice.as_ref().map(|choice| match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    });
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(format) => {
            if let Some((schema, description)) = crate::json_tool_schema(format, target, FORMAT)? {
                emulation.json_tool = true;
                tools.push(
                    json!({"name": JSON_TOOL, "description": description, "input_schema": schema}),
                );
                tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
            }
        }
    }
    if request.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let choice = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        choice["disable_parallel_tool_use"] = json!(true);
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice {
            body.insert("tool_choice".into(), choice);
        }
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if let Some(temperature) = request.temperature {
        if temperature > 1.0 {
            // Dropping means clamping here: the closest value Anthropic takes.
            target.refuse(FORMAT, "temperature", "Anthropic takes 0 to 1.")?;
        }
        body.insert("temperature".into(), json!(temperature.min(1.0)));
    }
    if let Some(top_p) = request.top_p {
        body.insert("top_p".into(), json!(top_p));
    }
    if let Some(top_k) = request.top_k {
        body.insert("top_k".into(), json!(top_k));
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(reasoning) = &request.reasoning {
        let budget = reasoning.budget();
        if budget > 0 {
            body.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget.max(1_024)}),
            );
        }
    }
    if request.stream {
        body.insert("stream".into(), json!(true));
    }
    crate::refuse_unsupported(
        request,
        target,
        FORMAT,
        &["n", "seed", "presence_penalty", "frequency_penalty"],
    )?;
    crate::refuse_extra(request, target, FORMAT)?;
    Ok((wire::to_vec(&body), emulation))
}

/// Appends content to the conversation, merging consecutive turns of the same role (tool
/// results that belong to one assistant turn must travel in one user message).
fn push_turn(messages: &mut Vec<Value>, role: &str, mut blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        // Anthropic wants tool results first in a user turn.
        let results_first = blocks.iter().any(|b| b["type"] == "tool_result")
            && content.iter().all(|b| b["type"] == "tool_result");
        if results_first
            || role == "assistant"
            || !blocks.iter().any(|b| b["type"] == "tool_result")
        {
            content.append(&mut blocks);
        } else {
            let position = content
                .iter()
                .take_while(|b| b["type"] == "tool_result")
                .count();
            for (offset, block) in blocks.into_iter().enumerate() {
                content.insert(position + offset, block);
            }
        }
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

fn encode_parts(parts: &[Part]) -> Vec<Value> {
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Part::Text(text) => {
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
            Part::Image(image) => blocks.push(match &image.source {
                ImageSource::Url(url) => {
                    json!({"type": "image", "source": {"type": "url", "url": url}})
                }
                ImageSource::Base64 { media_type, data } => json!({
                    "type": "image",
                    "source": {"type": "base64", "media_type": media_type, "data": data},
                }),
            }),
            // Unsigned thinking (another provider's) would be rejected; it was that model's
            // output, not an instruction, so it is left out.
            Part::Thinking {
                text,
                signature: Some(signature),
            } => {
                blocks.push(json!({"type": "thinking", "thinking": text, "signature": signature}));
            }
            Part::Thinking {
                signature: None, ..
            } => {}
            Part::RedactedThinking(data) => {
                blocks.push(json!({"type": "redacted_thinking", "data": data}))
            }
        }
    }
    blocks
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Folds a later report in: Anthropic's `message_delta` carries only the fields that changed.
    fn update(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    fn canonical(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0) + cached + written,
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cached,
            cache_write_tokens: written,
            reasoning_tokens: 0,
            estimated: false,
        }
    }
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

pub fn finish_reason_of(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Reads a Messages `message` body.
pub fn decode_response(body: &[u8], emulation: Emulation) -> Result<ChatResponse, TranslateError> {
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not a Messages body: {e}")))?;
    let mut message = Message::new(Role::Assistant, Vec::new());
    let mut finish = wire
        .stop_reason
        .as_deref()
        .map(finish_reason_of)
        .unwrap_or(FinishReason::Stop);
    for block in wire.content {
        match block.kind.as_str() {
            "text" => message
                .content
                .push(Part::Text(block.text.unwrap_or_default())),
            "thinking" => message.content.push(Part::Thinking {
                text: block.thinking.unwrap_or_default(),
                signature: block.signature,
            }),
            "redacted_thinking" => message
                .content
                .push(Part::RedactedThinking(block.data.unwrap_or_default())),
            "tool_use" => {
                let input = block.input.unwrap_or_else(|| json!({}));
                if emulation.json_tool && block.name.as_deref() == Some(JSON_TOOL) {
                    message.content.push(Part::Text(wire::to_text(&input)));
                    finish = FinishReason::Stop;
                } else {
                    message.tool_calls.push(ToolCall {
                        id: block.id.unwrap_or_default(),
                        name: block.name.unwrap_or_default(),
                        arguments: wire::to_text(&input),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: wire.id.unwrap_or_default(),
        model: wire.model.unwrap_or_default(),
        created: unix_now(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: finish,
            stop_sequence: wire.stop_sequence,
        }],
        usage: wire.usage.map(WireUsage::canonical),
    })
}

fn stop_reason(reason: FinishReason, stop_sequence: Option<&str>) -> &'static str {
    match reason {
        FinishReason::Stop if stop_sequence.is_some() => "stop_sequence",
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

fn out_usage(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.prompt_tokens.saturating_sub(usage.cached_tokens + usage.cache_write_tokens),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    })
}

fn tool_input(arguments: &str) -> Value {
    wire::arguments_object(arguments).unwrap_or_else(|_| json!({"arguments": arguments}))
}

/// Writes a Messages `message` body (the first choice: Anthropic has no `n`).
pub fn encode_response(response: &ChatResponse) -> Vec<u8> {
    let mut content = Vec::new();
    let (finish, stop_sequence) = match response.choices.first() {
        Some(choice) => {
            for part in &choice.message.content {
                match part {
                    Part::Text(text) => content.push(json!({"type": "text", "text": text})),
                    Part::Thinking { text, signature } => content.push(json!({
                        "type": "thinking",
                        "thinking": text,
                        "signature": signature.clone().unwrap_or_default(),
                    })),
                    Part::RedactedThinking(data) => {
                        content.push(json!({"type": "redacted_thinking", "data": data}))
                    }
                    Part::Image(_) => {}
                }
            }
            for call in &choice.message.tool_calls {
                content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input(&call.arguments)}));
            }
            (choice.finish_reason, choice.stop_sequence.clone())
        }
        None => (FinishReason::Stop, None),
    };
    let usage = response.usage.unwrap_or_default();
    wire::to_vec(&json!({
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason(finish, stop_sequence.as_deref()),
        "stop_sequence": stop_sequence,
        "usage": out_usage(&usage),
    }))
}

// ---------------------------------------------------------------------------------------------
// Streams

#[derive(Deserialize)]
/// Read once per streamed event: the fields only some events carry are boxed, so the struct
/// serde builds and moves for every token stays small.
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<Box<WireStartMessage>>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    content_block: Option<Box<WireBlock>>,
    #[serde(default, borrow)]
    delta: Option<WireEventDelta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Box<WireError>>,
}

#[derive(Deserialize)]
struct WireStartMessage {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Borrowed where the wire allows: these are read once per streamed token.
#[derive(Deserialize)]
struct WireEventDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_sequence: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum OpenBlock {
    Text,
    Thinking,
    Tool(u32),
    /// The JSON-output tool: its input streams as text.
    Json,
    Ignored,
}

/// Turns Messages stream events into canonical deltas.
#[derive(Default)]
pub struct StreamDecoder {
    emulation: Emulation,
    blocks: Vec<(u32, OpenBlock)>,
    tools: u32,
    usage: WireUsage,
    stopped: bool,
}

impl StreamDecoder {
    pub fn new(emulation: Emulation) -> Self {
        StreamDecoder {
            emulation,
            ..StreamDecoder::default()
        }
    }

    /// Whether `message_stop` arrived.
    pub fn complete(&self) -> bool {
        self.stopped
    }

    fn block(&self, index: u32) -> OpenBlock {
        self.blocks
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, kind)| *kind)
            .unwrap_or(OpenBlock::Text)
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

        match event.kind.as_ref() {
            "message_start" => {
                let message = event.message.map_or(
                    WireStartMessage {
                        id: None,
                        model: None,
                        usage: None,
                    },
                    |message| *message,
                );
                deltas.push(Delta::Start {
                    id: message.id,
                    model: message.model,
                });
                if let Some(usage) = message.usage {
                    self.usage.update(usage);
                    deltas.push(Delta::Usage(self.usage.canonical()));
                }
            }
            "content_block_start" => {
                let index = event.index.unwrap_or(0);
                let block = event.content_block.ok_or_else(|| {
                    StreamFailure::Malformed("content_block_start without content_block".into())
                })?;
                let kind = match block.kind.as_str() {
                    "text" => {
                        if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                            deltas.push(Delta::Text { choice: 0, text });
                        }
                        OpenBlock::Text
                    }
                    "thinking" => {
                        if let Some(text) = block.thinking.filter(|t| !t.is_empty()) {
                            deltas.push(Delta::Thinking { choice: 0, text });
                        }
                        OpenBlock::Thinking
                    }
                    "tool_use"
                        if self.emulation.json_tool && block.name.as_deref() == Some(JSON_TOOL) =>
                    {
                        OpenBlock::Json
                    }
                    "tool_use" => {
                        let tool = self.tools;
                        self.tools += 1;
                        deltas.push(Delta::ToolCallStart {
                            choice: 0,
                            index: tool,
                            id: block.id.unwrap_or_default(),
                            name: block.name.unwrap_or_default(),
                        });
                        // A non-empty `input` here is the whole input (some proxies send it so).
                        if let Some(input) = block
                            .input
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        {
                            deltas.push(Delta::ToolCallArguments {
                                choice: 0,
                                index: tool,
                                fragment: wire::to_text(&input),
                            });
                        }
                        OpenBlock::Tool(tool)
                    }
                    _ => OpenBlock::Ignored,
                };
                self.blocks.push((index, kind));
            }
            "content_block_delta" => {
                let index = event.index.unwrap_or(0);
                let delta = event.delta.ok_or_else(|| {
                    StreamFailure::Malformed("content_block_delta without delta".into())
                })?;
                match (delta.kind.as_deref(), self.block(index)) {
                    (Some("text_delta"), _) => {
                        if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                            deltas.push(Delta::Text {
                                choice: 0,
                                text: text.into_owned(),
                            });
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::Json) => {
                        if let Some(text) = delta.partial_json.filter(|t| !t.is_empty()) {
                            deltas.push(Delta::Text {
                                choice: 0,
                                text: text.into_owned(),
                            });
                        }
                    }
                    (Some("input_json_delta"), OpenBlock::Tool(tool)) => {
                        if let Some(fragment) = delta.partial_json.filter(|t| !t.is_empty()) {
                            deltas.push(Delta::ToolCallArguments {
                                choice: 0,
                                index: tool,
                                fragment: fragment.into_owned(),
                            });
                        }
                    }
                    (Some("thinking_delta"), _) => {
                        if let Some(text) = delta.thinking.filter(|t| !t.is_empty()) {
                            deltas.push(Delta::Thinking {
                                choice: 0,
                                text: text.into_owned(),
                            });
                        }
                    }
                    (Some("signature_delta"), _) => {
                        if let Some(signature) = delta.signature {
                            deltas.push(Delta::ThinkingSignature {
                                choice: 0,
                                signature: signature.into_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = event.usage {
                    self.usage.update(usage);
                }
                if let Some(delta) = event.delta
                    && let Some(reason) = delta.stop_reason
                {
                    let mut finish = finish_reason_of(&reason);
                    if self.emulation.json_tool
                        && finish == FinishReason::ToolCalls
                        && self.tools == 0
                    {
                        finish = FinishReason::Stop;
                    }
                    deltas.push(Delta::Finish {
                        choice: 0,
                        reason: finish,
                        stop_sequence: delta.stop_sequence.map(Cow::into_owned),
                    });
                }
                deltas.push(Delta::Usage(self.usage.canonical()));
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let error = event.error.map_or(
                    WireError {
                        kind: None,
                        message: None,
                    },
                    |error| *error,
                );
                return Err(StreamFailure::Provider(StreamError {
                    kind: error.kind.unwrap_or_else(|| "error".to_owned()),
                    message: error.message.unwrap_or_default(),
                }));
            }
            // ping, content_block_stop and event types added later need nothing.
            _ => {}
        }
        Ok(())
    }
}

/// Writes canonical deltas as a Messages event stream.
pub struct StreamEncoder {
    id: String,
    model: String,
    started: bool,
    next_block: u32,
    open: Option<(u32, OpenBlock)>,
    /// Tool index → block index, for argument deltas.
    tools: Vec<(u32, u32)>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Usage,
}

impl StreamEncoder {
    pub fn new(id: String, model: String) -> Self {
        StreamEncoder {
            id,
            model,
            started: false,
            next_block: 0,
            open: None,
            tools: Vec::new(),
            finish: None,
            usage: Usage::default(),
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        wire::sse_frame(
            out,
            Some("message_start"),
            &json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": out_usage(&self.usage),
                },
            }),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            wire::sse_frame(
                out,
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open(&mut self, kind: OpenBlock, block: Value, out: &mut Vec<u8>) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        wire::sse_frame(
            out,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = Some((index, kind));
        index
    }

    fn ensure(&mut self, kind: OpenBlock, block: Value, out: &mut Vec<u8>) -> u32 {
        match self.open {
            Some((index, open)) if open == kind => index,
            _ => self.open(kind, block, out),
        }
    }

    fn delta(out: &mut Vec<u8>, index: u32, delta: Value) {
        wire::sse_frame(
            out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    pub fn encode(&mut self, delta: Delta, out: &mut Vec<u8>) {
        if let Delta::Start { id, model } = &delta {
            if let Some(id) = id.as_ref().filter(|id| !id.is_empty()) {
                self.id = id.clone();
            }
            if let Some(model) = model.as_ref().filter(|m| !m.is_empty()) {
                self.model = model.clone();
            }
        }
        self.start(out);
        match delta {
            Delta::Start { .. } => {}
            Delta::Text { choice: 0, text } => {
                let index = self.ensure(OpenBlock::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, index, json!({"type": "text_delta", "text": text}));
            }
            Delta::Thinking { choice: 0, text } => {
                let index = self.ensure(
                    OpenBlock::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    out,
                );
                Self::delta(
                    out,
                    index,
                    json!({"type": "thinking_delta", "thinking": text}),
                );
            }
            Delta::ThinkingSignature {
                choice: 0,
                signature,
            } => {
                if let Some((index, OpenBlock::Thinking)) = self.open {
                    Self::delta(
                        out,
                        index,
                        json!({"type": "signature_delta", "signature": signature}),
                    );
                }
            }
            Delta::ToolCallStart {
                choice: 0,
                index,
                id,
                name,
            } => {
                let block = self.open(
                    OpenBlock::Tool(index),
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                self.tools.push((index, block));
            }
            Delta::ToolCallArguments {
                choice: 0,
                index,
                fragment,
            } => {
                if let Some((_, block)) = self.tools.iter().find(|(tool, _)| *tool == index) {
                    Self::delta(
                        out,
                        *block,
                        json!({"type": "input_json_delta", "partial_json": fragment}),
                    );
                }
            }
            Delta::Finish {
                choice: 0,
                reason,
                stop_sequence,
            } => self.finish = Some((reason, stop_sequence)),
            Delta::Usage(usage) => self.usage = usage,
            // Anthropic has one choice per message.
            _ => {}
        }
    }

    /// The closing events: the open block's stop, `message_delta` and `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let (reason, stop_sequence) = self.finish.take().unwrap_or((FinishReason::Stop, None));
        wire::sse_frame(
            out,
            Some("message_delta"),
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reason, stop_sequence.as_deref()), "stop_sequence": stop_sequence},
                "usage": out_usage(&self.usage),
            }),
        );
        wire::sse_frame(out, Some("message_stop"), &json!({"type": "message_stop"}));
    }
}

/// The usage of a complete `message` body.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    let value = wire::top_level_field(body, "usage")?;
    let mut reader = serde_json::Deserializer::from_slice(value);
    Option::<WireUsage>::deserialize(&mut reader)
        .ok()
        .flatten()
        .map(WireUsage::canonical)
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

/// An Anthropic error body.
pub fn error_body(status: u16, message: &str) -> Vec<u8> {
    wire::to_vec(
        &json!({"type": "error", "error": {"type": error_type(status), "message": message}}),
    )
}

/// An error event for an Anthropic stream that failed after it started.
pub fn stream_error(kind: &str, message: &str, out: &mut Vec<u8>) {
    wire::sse_frame(
        out,
        Some("error"),
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    );
}

/// The `error.message` of an Anthropic error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")?
        .get("message")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
