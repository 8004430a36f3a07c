//! OpenAI chat completions: requests, `chat.completion` bodies, `chat.completion.chunk`
//! streams ending in `data: [DONE]`, and `{"error": {...}}` bodies.
//!
//! Also the dialect of every OpenAI-compatible server; their differences are [`Quirks`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::chat::*;
use crate::wire::{self, RawObject, field, is_null, missing, parse_object};
use crate::{Decoded, StreamError, StreamFailure, Target, TranslateError, unix_now};

const FORMAT: &str = "OpenAI chat completions";

/// Top-level request fields an encoder for another format may ignore: they configure OpenAI's
/// own storage and billing, not the answer.
pub const IGNORABLE_FIELDS: &[&str] = &["store", "metadata", "service_tier", "stream_options"];

/// How an OpenAI-compatible server departs from OpenAI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    /// Sends the output limit as `max_tokens` (most compatible servers) rather than
    /// `max_completion_tokens` (OpenAI, whose reasoning models refuse `max_tokens`).
    pub legacy_max_tokens: bool,
    /// The seed field's name (`seed`; Mistral says `random_seed`).
    pub seed_field: &'static str,
    /// Understands `stream_options.include_usage`; without it usage is estimated or read
    /// from wherever the server puts it.
    pub stream_options: bool,
    /// The word for "some tool must be called" (`required`; Mistral says `any`).
    pub tool_choice_required: &'static str,
    /// Tool-call ids must be exactly nine letters or digits (Mistral).
    pub nine_char_tool_ids: bool,
    pub tools: bool,
    pub vision: bool,
    pub top_k: bool,
    pub reasoning_effort: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            legacy_max_tokens: false,
            seed_field: "seed",
            stream_options: true,
            tool_choice_required: "required",
            nine_char_tool_ids: false,
            tools: true,
            vision: true,
            top_k: false,
            reasoning_effort: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireTool {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

/// Reads an OpenAI chat request into canonical form. `target` decides what happens to parts
/// that have no canonical form (audio, files).
pub fn decode_request(body: &[u8], target: &Target) -> Result<ChatRequest, TranslateError> {
    let RawObject(fields) = parse_object(body)?;
    let mut request = ChatRequest::default();
    let mut functions: Option<Vec<WireFunction>> = None;
    let mut function_call: Option<Value> = None;
    let mut saw_messages = false;
    for (name, raw) in fields {
        if is_null(raw) && name != "model" {
            continue;
        }
        match name.as_ref() {
            "model" => request.model = field(raw, "model", "a string")?,
            "messages" => {
                saw_messages = true;
                request.messages = decode_messages(raw, target)?;
            }
            "tools" => {
                let tools: Vec<WireTool> = field(raw, "tools", "an array of function tools")?;
                for (index, tool) in tools.into_iter().enumerate() {
                    if tool.kind.as_deref().is_some_and(|k| k != "function") {
                        target.refuse(
                            FORMAT,
                            &format!("tools[{index}].type"),
                            "only function tools can be translated.",
                        )?;
                        continue;
                    }
                    request.tools.push(Tool {
                        name: tool.function.name,
                        description: tool.function.description,
                        parameters: tool
                            .function
                            .parameters
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                        strict: tool.function.strict,
                    });
                }
            }
            "functions" => functions = Some(field(raw, "functions", "an array of functions")?),
            "function_call" => {
                function_call = Some(field(raw, "function_call", "a string or an object")?)
            }
            "tool_choice" => {
                let value: Value = field(raw, "tool_choice", "a string or an object")?;
                request.tool_choice = Some(tool_choice_of(&value, "tool_choice")?);
            }
            "parallel_tool_calls" => {
                request.parallel_tool_calls = Some(field(raw, "parallel_tool_calls", "a boolean")?)
            }
            "response_format" => {
                let value: Value = field(raw, "response_format", "an object")?;
                request.response_format = Some(response_format_of(&value)?);
            }
            "max_tokens" | "max_completion_tokens" => {
                request.max_tokens = Some(field(raw, &name, "a positive integer")?)
            }
            "temperature" => request.temperature = Some(field(raw, "temperature", "a number")?),
            "top_p" => request.top_p = Some(field(raw, "top_p", "a number")?),
            "top_k" => request.top_k = Some(field(raw, "top_k", "a positive integer")?),
            "stop" => {
                let value: Value = field(raw, "stop", "a string or an array of strings")?;
                request.stop = match value {
                    Value::String(stop) => vec![stop],
                    other => wire::value_field(&other, "stop", "a string or an array of strings")?,
                };
            }
            "seed" => request.seed = Some(field(raw, "seed", "an integer")?),
            "n" => request.n = Some(field(raw, "n", "a positive integer")?),
            "presence_penalty" => {
                request.presence_penalty = Some(field(raw, "presence_penalty", "a number")?)
            }
            "frequency_penalty" => {
                request.frequency_penalty = Some(field(raw, "frequency_penalty", "a number")?)
            }
            "user" => request.user = Some(field(raw, "user", "a string")?),
            "reasoning_effort" => {
                request.reasoning = Some(Reasoning::Effort(field(
                    raw,
                    "reasoning_effort",
                    "a string",
                )?))
            }
            "stream" => request.stream = field(raw, "stream", "a boolean")?,
            "stream_options" => {
                #[derive(Deserialize)]
                struct StreamOptions {
                    #[serde(default)]
                    include_usage: bool,
                }
                let options: StreamOptions = field(raw, "stream_options", "an object")?;
                request.stream_usage = options.include_usage;
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
        return Err(missing("model"));
    }
    if !saw_messages {
        return Err(missing("messages"));
    }
    request.stream_usage &= request.stream;
    if let Some(functions) = functions {
        for function in functions {
            request.tools.push(Tool {
                name: function.name,
                description: function.description,
                parameters: function
                    .parameters
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                strict: function.strict,
            });
        }
    }
    if let Some(choice) = function_call {
        request.tool_choice = Some(tool_choice_of(&choice, "function_call")?);
    }
    Ok(request)
}

fn tool_choice_of(value: &Value, param: &str) -> Result<ToolChoice, TranslateError> {
    match value {
        Value::String(word) => match word.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" | "any" => Ok(ToolChoice::Required),
            other => Err(TranslateError::invalid(
                Some(param.to_owned()),
                format!(
                    "Invalid value for '{param}': '{other}'. Supported values are: auto, none, required, or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}."
                ),
            )),
        },
        Value::Object(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| object.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(name) => Ok(ToolChoice::Tool(name.to_owned())),
                None => Err(TranslateError::invalid(
                    Some(param.to_owned()),
                    format!(
                        "Invalid '{param}': an object must name the function, e.g. {{\"type\": \"function\", \"function\": {{\"name\": \"get_weather\"}}}}."
                    ),
                )),
            }
        }
        _ => Err(TranslateError::invalid(
            Some(param.to_owned()),
            format!("Invalid type for '{param}': expected a string or an object."),
        )),
    }
}

fn response_format_of(value: &Value) -> Result<ResponseFormat, TranslateError> {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let spec = value.get("json_schema").ok_or_else(|| {
                TranslateError::invalid(
                    Some("response_format.json_schema".to_owned()),
                    "Missing required parameter: 'response_format.json_schema'.",
                )
            })?;
            Ok(ResponseFormat::JsonSchema {
                name: spec
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                description: spec
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                schema: spec
                    .get("schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"})),
                strict: spec.get("strict").and_then(Value::as_bool),
            })
        }
        other => Err(TranslateError::invalid(
            Some("response_format.type".to_owned()),
            format!(
                "Invalid value for 'response_format.type': '{other}'. Supported values are: text, json_object, json_schema."
            ),
        )),
    }
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
    /// DeepSeek's and others' visible reasoning, sent back in history.
    #[serde(default)]
    reasoning_content: Option<String>,
}

fn decode_messages(raw: &RawValue, target: &Target) -> Result<Vec<Message>, TranslateError> {
    let wire: Vec<WireMessage> = field(raw, "messages", "an array of messages")?;
    let mut messages = Vec::with_capacity(wire.len());
    for (index, message) in wire.into_iter().enumerate() {
        let at = |name: &str| format!("messages[{index}].{name}");
        let role = match message.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" | "function" => Role::Tool,
            other => {
                return Err(TranslateError::invalid(
                    Some(at("role")),
                    format!("Invalid value for '{}': '{other}'.", at("role")),
                ));
            }
        };
        let mut content = match &message.content {
            Some(raw) if !is_null(raw) => decode_content(raw, &at("content"), target)?,
            _ => Vec::new(),
        };
        if let Some(reasoning) = message.reasoning_content.filter(|r| !r.is_empty()) {
            content.insert(
                0,
                Part::Thinking {
                    text: reasoning,
                    signature: None,
                },
            );
        }
        let mut decoded = Message::new(role, content);
        decoded.name = message.name.clone();
        if role == Role::Tool {
            decoded.tool_call_id = message.tool_call_id.or(message.name);
            decoded.name = None;
            if decoded.tool_call_id.is_none() {
                return Err(missing(&at("tool_call_id")));
            }
        }
        for (call_index, call) in message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            decoded.tool_calls.push(ToolCall {
                id: call
                    .id
                    .unwrap_or_else(|| format!("call_{index}_{call_index}")),
                name: call.function.name.ok_or_else(|| {
                    missing(&format!(
                        "messages[{index}].tool_calls[{call_index}].function.name"
                    ))
                })?,
                arguments: call.function.arguments.unwrap_or_default(),
            });
        }
        if let Some(call) = message.function_call {
            let name = call.name.unwrap_or_default();
            decoded.tool_calls.push(ToolCall {
                id: name.clone(),
                name,
                arguments: call.arguments.unwrap_or_default(),
            });
        }
        messages.push(decoded);
    }
    Ok(messages)
}

#[derive(Deserialize)]
struct WirePart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    image_url: Option<WireImageUrl>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireImageUrl {
    Object {
        url: String,
        #[serde(default)]
        detail: Option<String>,
    },
    Url(String),
}

fn decode_content(
    raw: &RawValue,
    param: &str,
    target: &Target,
) -> Result<Vec<Part>, TranslateError> {
    if raw.get().starts_with('"') {
        let text: String = field(raw, param, "a string")?;
        // An empty string says nothing; canonical form has no empty parts from it.
        return Ok(if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Text(text)]
        });
    }
    let parts: Vec<WirePart> = field(raw, param, "a string or an array of content parts")?;
    let mut out = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        match part.kind.as_str() {
            "text" | "input_text" => out.push(Part::Text(part.text.unwrap_or_default())),
            "refusal" => out.push(Part::Text(part.refusal.unwrap_or_default())),
            "image_url" => {
                let image = part
                    .image_url
                    .ok_or_else(|| missing(&format!("{param}[{index}].image_url")))?;
                out.push(Part::Image(match image {
                    WireImageUrl::Object { url, detail } => Image::from_url(&url, detail),
                    WireImageUrl::Url(url) => Image::from_url(&url, None),
                }));
            }
            other => {
                target.refuse(
                    FORMAT,
                    &format!("{param}[{index}]"),
                    &format!(
                        "content parts of type `{other}` have no equivalent in other formats."
                    ),
                )?;
            }
        }
    }
    Ok(out)
}

/// Writes a canonical request as an OpenAI(-compatible) request body.
pub fn encode_request(
    request: &ChatRequest,
    target: &Target,
    quirks: &Quirks,
) -> Result<Vec<u8>, TranslateError> {
    let mut body = serde_json::Map::new();
    body.insert("model".into(), Value::String(request.model.clone()));
    let mut ids = ToolIds::new(quirks.nine_char_tool_ids);
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.iter().enumerate() {
        messages.push(encode_message(message, index, target, quirks, &mut ids)?);
    }
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        if quirks.tools {
            let tools = request
                .tools
                .iter()
                .map(|tool| {
                    let mut function = json!({"name": tool.name, "parameters": tool.parameters});
                    if let Some(description) = &tool.description {
                        function["description"] = Value::String(description.clone());
                    }
                    if let Some(strict) = tool.strict {
                        function["strict"] = Value::Bool(strict);
                    }
                    json!({"type": "function", "function": function})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        } else {
            target.refuse(
                FORMAT,
                "tools",
                "this provider does not support tool calling.",
            )?;
        }
    }
    if let Some(choice) = &request.tool_choice
        && body.contains_key("tools")
    {
        let value = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!(quirks.tool_choice_required),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), value);
    }
    if let Some(parallel) = request.parallel_tool_calls
        && body.contains_key("tools")
    {
        body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
    }
    if let Some(format) = &request.response_format {
        let value = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => {
                let mut spec = json!({"name": name, "schema": schema});
                if let Some(description) = description {
                    spec["description"] = json!(description);
                }
                if let Some(strict) = strict {
                    spec["strict"] = json!(strict);
                }
                json!({"type": "json_schema", "json_schema": spec})
            }
        };
        body.insert("response_format".into(), value);
    }
    if let Some(max) = request.max_tokens {
        let name = if quirks.legacy_max_tokens {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        body.insert(name.into(), json!(max));
    }
    let numbers = [
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("presence_penalty", request.presence_penalty),
        ("frequency_penalty", request.frequency_penalty),
    ];
    for (name, value) in numbers {
        if let Some(value) = value {
            body.insert(name.into(), json!(value));
        }
    }
    if let Some(top_k) = request.top_k
        && (quirks.top_k || target.refuse(FORMAT, "top_k", "OpenAI's format has no top_k.")?)
    {
        body.insert("top_k".into(), json!(top_k));
    }
    match request.stop.len() {
        0 => {}
        1 => {
            body.insert("stop".into(), json!(request.stop[0]));
        }
        _ => {
            body.insert("stop".into(), json!(request.stop));
        }
    }
    if let Some(seed) = request.seed {
        body.insert(quirks.seed_field.into(), json!(seed));
    }
    if let Some(n) = request.n {
        body.insert("n".into(), json!(n));
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), json!(user));
    }
    if let Some(reasoning) = &request.reasoning
        && (quirks.reasoning_effort
            || target.refuse(
                FORMAT,
                "reasoning_effort",
                "this provider takes no reasoning setting.",
            )?)
    {
        body.insert("reasoning_effort".into(), json!(reasoning.effort()));
    }
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
        if quirks.stream_options {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    // Another format's unknown fields mean nothing here (Anthropic's `presence_penalty`, say,
    // is not OpenAI's): refused, or dropped when asked.
    if !request.extra_format.is_empty() && request.extra_format != FORMAT {
        crate::refuse_extra(request, target, FORMAT)?;
        return Ok(wire::to_vec(&body));
    }
    for (name, raw) in &request.extra {
        if !body.contains_key(name) {
            let value: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            body.insert(name.clone(), value);
        }
    }
    Ok(wire::to_vec(&body))
}

fn encode_message(
    message: &Message,
    index: usize,
    target: &Target,
    quirks: &Quirks,
    ids: &mut ToolIds,
) -> Result<Value, TranslateError> {
    let param = format!("messages[{index}]");
    let mut out = serde_json::Map::new();
    out.insert("role".into(), json!(message.role.as_str()));
    let text_only = |what: &str| -> Result<Value, TranslateError> {
        if message.has_images() {
            target.refuse(
                FORMAT,
                &format!("{param}.content"),
                &format!("{what} messages cannot carry images in OpenAI's format."),
            )?;
        }
        Ok(json!(message.joined_text()))
    };
    match message.role {
        Role::System => {
            out.insert("content".into(), text_only("system")?);
        }
        Role::Tool => {
            let id = message.tool_call_id.as_deref().unwrap_or_default();
            out.insert("tool_call_id".into(), json!(ids.map(id)));
            out.insert("content".into(), text_only("tool")?);
        }
        Role::User | Role::Assistant => {
            let mut parts = Vec::new();
            let mut all_text = true;
            for part in &message.content {
                match part {
                    Part::Text(text) => parts.push(json!({"type": "text", "text": text})),
                    Part::Image(image) => {
                        if !quirks.vision
                            && !target.refuse(
                                FORMAT,
                                &format!("{param}.content"),
                                "this provider does not accept images.",
                            )?
                        {
                            continue;
                        }
                        all_text = false;
                        let mut image_url = json!({"url": image.to_url()});
                        if let Some(detail) = &image.detail {
                            image_url["detail"] = json!(detail);
                        }
                        parts.push(json!({"type": "image_url", "image_url": image_url}));
                    }
                    // Reasoning from an earlier turn is the model's own output; OpenAI's
                    // format has no place to send it back.
                    Part::Thinking { .. } | Part::RedactedThinking(_) => {}
                }
            }
            let content = if message.role == Role::Assistant && parts.is_empty() {
                Value::Null
            } else if all_text {
                json!(message.joined_text())
            } else {
                Value::Array(parts)
            };
            out.insert("content".into(), content);
            if let Some(name) = &message.name {
                out.insert("name".into(), json!(name));
            }
            if !message.tool_calls.is_empty() {
                let calls: Vec<Value> = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": ids.map(&call.id),
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        })
                    })
                    .collect();
                out.insert("tool_calls".into(), Value::Array(calls));
            }
        }
    }
    Ok(Value::Object(out))
}

/// Rewrites tool-call ids for servers that accept only nine alphanumerics, consistently
/// within one request (a call and its result keep matching).
struct ToolIds {
    nine: bool,
}

impl ToolIds {
    fn new(nine: bool) -> Self {
        ToolIds { nine }
    }

    fn map(&mut self, id: &str) -> String {
        if !self.nine || (id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return id.to_owned();
        }
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        // FNV-1a, stable across runs, so a call and its result map alike in every request.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (0..9)
            .map(|_| {
                let c = ALPHABET[(hash % ALPHABET.len() as u64) as usize] as char;
                hash /= ALPHABET.len() as u64;
                hash = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
                c
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    pub(crate) fn canonical(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cached_tokens: self
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            estimated: false,
        }
    }
}

pub fn finish_reason_of(reason: &str) -> FinishReason {
    match reason {
        "stop" | "end_turn" => FinishReason::Stop,
        "length" | "max_tokens" => FinishReason::Length,
        "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Reads a `chat.completion` body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not a chat.completion body: {e}")))?;
    let never = Target::new("upstream");
    let mut choices = Vec::with_capacity(wire.choices.len());
    for choice in wire.choices {
        let message = match choice.message {
            Some(message) => {
                let mut content = match &message.content {
                    Some(raw) if !is_null(raw) => decode_content(
                        raw,
                        "content",
                        &Target {
                            drop_unsupported: true,
                            ..never.clone()
                        },
                    )?,
                    _ => Vec::new(),
                };
                if let Some(reasoning) = message.reasoning_content.filter(|r| !r.is_empty()) {
                    content.insert(
                        0,
                        Part::Thinking {
                            text: reasoning,
                            signature: None,
                        },
                    );
                }
                let mut decoded = Message::new(Role::Assistant, content);
                for (index, call) in message
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                {
                    decoded.tool_calls.push(ToolCall {
                        id: call.id.unwrap_or_else(|| format!("call_{index}")),
                        name: call.function.name.unwrap_or_default(),
                        arguments: call.function.arguments.unwrap_or_default(),
                    });
                }
                decoded
            }
            None => Message::new(Role::Assistant, Vec::new()),
        };
        choices.push(Choice {
            index: choice.index,
            finish_reason: choice
                .finish_reason
                .as_deref()
                .map(finish_reason_of)
                .unwrap_or(FinishReason::Stop),
            message,
            stop_sequence: None,
        });
    }
    Ok(ChatResponse {
        id: wire.id.unwrap_or_default(),
        model: wire.model.unwrap_or_default(),
        created: wire.created.unwrap_or_else(unix_now),
        choices,
        usage: wire.usage.map(WireUsage::canonical),
    })
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: OutPromptDetails,
    completion_tokens_details: OutCompletionDetails,
}

#[derive(Serialize)]
struct OutPromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u64,
}

fn out_usage(usage: &Usage) -> OutUsage {
    OutUsage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details: OutPromptDetails {
            cached_tokens: usage.cached_tokens,
        },
        completion_tokens_details: OutCompletionDetails {
            reasoning_tokens: usage.reasoning_tokens,
        },
    }
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<OutFullChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
    system_fingerprint: Option<()>,
}

#[derive(Serialize)]
struct OutFullChoice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<String>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

fn thinking_text(message: &Message) -> Option<String> {
    let mut text = String::new();
    for part in &message.content {
        if let Part::Thinking { text: thinking, .. } = part {
            text.push_str(thinking);
        }
    }
    (!text.is_empty()).then_some(text)
}

/// Writes a `chat.completion` body.
pub fn encode_response(response: &ChatResponse) -> Vec<u8> {
    let choices = response
        .choices
        .iter()
        .map(|choice| {
            let text = choice.message.joined_text();
            let calls = &choice.message.tool_calls;
            OutFullChoice {
                index: choice.index,
                message: OutMessage {
                    role: "assistant",
                    content: if text.is_empty() && !calls.is_empty() {
                        None
                    } else {
                        Some(text)
                    },
                    refusal: None,
                    tool_calls: calls
                        .iter()
                        .map(|call| OutToolCall {
                            id: &call.id,
                            kind: "function",
                            function: OutFunction {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        })
                        .collect(),
                    reasoning_content: thinking_text(&choice.message),
                },
                logprobs: None,
                finish_reason: choice.finish_reason.openai(),
            }
        })
        .collect();
    wire::to_vec(&OutResponse {
        id: &response.id,
        object: "chat.completion",
        created: response.created,
        model: &response.model,
        choices,
        usage: response.usage.as_ref().map(out_usage),
        system_fingerprint: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Streams

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Groq reports streamed usage here.
    #[serde(default)]
    x_groq: Option<XGroq>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionCall>,
}

/// Turns `chat.completion.chunk` events into canonical deltas.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    done: bool,
    /// (choice, tool index) pairs already started.
    tools: Vec<(u32, u32)>,
    finished: Vec<u32>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Whether `data: [DONE]` arrived.
    pub fn complete(&self) -> bool {
        self.done
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
        let trimmed = data.trim_ascii();
        if trimmed == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        if trimmed.is_empty() {
            return Ok(());
        }
        let chunk: WireChunk = serde_json::from_slice(trimmed)
            .map_err(|e| StreamFailure::Malformed(format!("{e}")))?;
        if let Some(error) = chunk.error {
            return Err(StreamFailure::Provider(StreamError {
                kind: error
                    .get("type")
                    .or_else(|| error.get("code"))
                    .and_then(Value::as_str)
                    .unwrap_or("error")
                    .to_owned(),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
            }));
        }

        if !self.started {
            self.started = true;
            deltas.push(Delta::Start {
                id: chunk.id.clone(),
                model: chunk.model.clone(),
            });
        }
        for choice in chunk.choices {
            let index = choice.index;
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                    deltas.push(Delta::Thinking {
                        choice: index,
                        text,
                    });
                }
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    deltas.push(Delta::Text {
                        choice: index,
                        text,
                    });
                }
                for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate()
                {
                    let tool_index = call.index.unwrap_or(position as u32);
                    let function = call.function.unwrap_or(WireFunctionCall {
                        name: None,
                        arguments: None,
                    });
                    if !self.tools.contains(&(index, tool_index)) {
                        self.tools.push((index, tool_index));
                        deltas.push(Delta::ToolCallStart {
                            choice: index,
                            index: tool_index,
                            id: call
                                .id
                                .unwrap_or_else(|| format!("call_{index}_{tool_index}")),
                            name: function.name.unwrap_or_default(),
                        });
                    }
                    if let Some(fragment) = function.arguments.filter(|a| !a.is_empty()) {
                        deltas.push(Delta::ToolCallArguments {
                            choice: index,
                            index: tool_index,
                            fragment,
                        });
                    }
                }
            }
            if let Some(reason) = choice.finish_reason
                && !self.finished.contains(&index)
            {
                self.finished.push(index);
                deltas.push(Delta::Finish {
                    choice: index,
                    reason: finish_reason_of(&reason),
                    stop_sequence: None,
                });
            }
        }
        if let Some(usage) = chunk.usage.or(chunk.x_groq.and_then(|x| x.usage)) {
            deltas.push(Delta::Usage(usage.canonical()));
        }
        Ok(())
    }
}

/// Writes canonical deltas as `chat.completion.chunk` events.
pub struct StreamEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<Usage>,
    roles_sent: Vec<u32>,
    /// `data: {"id":...,"choices":[` — the same for every chunk, serialised once.
    prefix: Vec<u8>,
}

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: &'a [OutChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct OutToolDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl StreamEncoder {
    /// `id` and `model` are used until the upstream names its own.
    pub fn new(id: String, model: String, include_usage: bool) -> Self {
        StreamEncoder {
            id,
            model,
            created: unix_now(),
            include_usage,
            usage: None,
            roles_sent: Vec::new(),
            prefix: Vec::new(),
        }
    }

    fn chunk(
        &mut self,
        out: &mut Vec<u8>,
        choice: u32,
        delta: OutDelta<'_>,
        finish: Option<&'static str>,
    ) {
        if self.prefix.is_empty() {
            self.prefix.extend_from_slice(b"data: {\"id\":");
            wire::write_json(&mut self.prefix, &self.id);
            self.prefix
                .extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            wire::write_json(&mut self.prefix, &self.created);
            self.prefix.extend_from_slice(b",\"model\":");
            wire::write_json(&mut self.prefix, &self.model);
            self.prefix
                .extend_from_slice(b",\"system_fingerprint\":null,\"choices\":[");
        }
        out.extend_from_slice(&self.prefix);
        wire::write_json(
            out,
            &OutChoice {
                index: choice,
                delta,
                logprobs: None,
                finish_reason: finish,
            },
        );
        out.extend_from_slice(b"]}\n\n");
    }

    fn role(&mut self, out: &mut Vec<u8>, choice: u32) {
        if !self.roles_sent.contains(&choice) {
            self.roles_sent.push(choice);
            let delta = OutDelta {
                role: Some("assistant"),
                content: Some(""),
                ..OutDelta::default()
            };
            self.chunk(out, choice, delta, None);
        }
    }

    pub fn encode(&mut self, delta: Delta, out: &mut Vec<u8>) {
        match delta {
            Delta::Start { id, model } => {
                if let Some(id) = id.filter(|id| !id.is_empty()) {
                    self.id = id;
                    self.prefix.clear();
                }
                if let Some(model) = model.filter(|m| !m.is_empty()) {
                    self.model = model;
                    self.prefix.clear();
                }
                self.role(out, 0);
            }
            Delta::Text { choice, text } => {
                self.role(out, choice);
                let delta = OutDelta {
                    content: Some(&text),
                    ..OutDelta::default()
                };
                self.chunk(out, choice, delta, None);
            }
            Delta::Thinking { choice, text } => {
                self.role(out, choice);
                let delta = OutDelta {
                    reasoning_content: Some(&text),
                    ..OutDelta::default()
                };
                self.chunk(out, choice, delta, None);
            }
            Delta::ThinkingSignature { .. } => {}
            Delta::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => {
                self.role(out, choice);
                let delta = OutDelta {
                    tool_calls: Some([OutToolDelta {
                        index,
                        id: Some(&id),
                        kind: Some("function"),
                        function: OutFunctionDelta {
                            name: Some(&name),
                            arguments: "",
                        },
                    }]),
                    ..OutDelta::default()
                };
                self.chunk(out, choice, delta, None);
            }
            Delta::ToolCallArguments {
                choice,
                index,
                fragment,
            } => {
                let delta = OutDelta {
                    tool_calls: Some([OutToolDelta {
                        index,
                        id: None,
                        kind: None,
                        function: OutFunctionDelta {
                            name: None,
                            arguments: &fragment,
                        },
                    }]),
                    ..OutDelta::default()
                };
                self.chunk(out, choice, delta, None);
            }
            Delta::Finish { choice, reason, .. } => {
                self.role(out, choice);
                self.chunk(out, choice, OutDelta::default(), Some(reason.openai()));
            }
            Delta::Usage(usage) => self.usage = Some(usage),
        }
    }

    /// The closing events: the usage chunk (if asked for) and `data: [DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.include_usage
            && let Some(usage) = &self.usage
        {
            let chunk = OutChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                system_fingerprint: None,
                choices: &[],
                usage: Some(out_usage(usage)),
            };
            wire::sse_frame(out, None, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// The `usage` of a complete `chat.completion` (or embeddings) body, other fields skipped
/// unparsed.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    let value = wire::top_level_field(body, "usage")?;
    if let Some(usage) = quick_usage(value) {
        return usage.map(WireUsage::canonical);
    }
    let mut reader = serde_json::Deserializer::from_slice(value);
    Option::<WireUsage>::deserialize(&mut reader)
        .ok()
        .flatten()
        .map(WireUsage::canonical)
}

/// `usage` read straight from its text when it has the usual shape: `null`, or an object
/// whose counts are plain integers or null, its names without escapes and none twice. `None`
/// for anything else, which serde then reads. Through serde alone this took ~5k instructions
/// a response, more than finding the field (callgrind, bench/gateway/instructions.sh).
fn quick_usage(text: &[u8]) -> Option<Option<WireUsage>> {
    let mut scan = wire::Scan::new(text);
    if scan.null() {
        return Some(None);
    }
    let mut usage = WireUsage::default();
    let mut seen = [false; 4];
    read_object(&mut scan, |scan, name| {
        let slot = match name {
            b"prompt_tokens" => 0,
            b"completion_tokens" => 1,
            b"prompt_tokens_details" => 2,
            b"completion_tokens_details" => 3,
            _ => return scan.skip_value(),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        match slot {
            0 => usage.prompt_tokens = optional_integer(scan)?,
            1 => usage.completion_tokens = optional_integer(scan)?,
            2 => {
                usage.prompt_tokens_details = details(scan, b"cached_tokens")?
                    .map(|cached_tokens| PromptDetails { cached_tokens })
            }
            _ => {
                usage.completion_tokens_details = details(scan, b"reasoning_tokens")?
                    .map(|reasoning_tokens| CompletionDetails { reasoning_tokens })
            }
        }
        Some(())
    })?;
    Some(Some(usage))
}

/// Reads `{ "name": value, ... }`, handing each name to `field`, which must move past its value.
fn read_object(
    scan: &mut wire::Scan<'_>,
    mut field: impl FnMut(&mut wire::Scan<'_>, &[u8]) -> Option<()>,
) -> Option<()> {
    if !scan.eat(b'{') {
        return None;
    }
    if scan.eat(b'}') {
        return Some(());
    }
    loop {
        let name = scan.plain_string()?;
        if !scan.eat(b':') {
            return None;
        }
        field(scan, name)?;
        if scan.eat(b'}') {
            return Some(());
        }
        if !scan.eat(b',') {
            return None;
        }
    }
}

fn optional_integer(scan: &mut wire::Scan<'_>) -> Option<Option<u64>> {
    if scan.null() {
        return Some(None);
    }
    scan.integer().map(Some)
}

/// A details object's one count that matters: outer `None` when serde must read it, inner
/// `None` for `null` (the object or the count).
fn details(scan: &mut wire::Scan<'_>, wanted: &[u8]) -> Option<Option<Option<u64>>> {
    if scan.null() {
        return Some(None);
    }
    let mut count = None;
    read_object(scan, |scan, name| {
        if name != wanted {
            return scan.skip_value();
        }
        if count.is_some() {
            return None;
        }
        count = Some(optional_integer(scan)?);
        Some(())
    })?;
    Some(Some(count.flatten()))
}

/// A streamed chunk's usage, and whether it is a usage-only chunk (no choices).
pub fn chunk_usage(data: &[u8]) -> Option<(Usage, bool)> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<serde::de::IgnoredAny>,
        usage: Option<WireUsage>,
    }
    let chunk: Chunk = serde_json::from_slice(data).ok()?;
    chunk
        .usage
        .map(|usage| (usage.canonical(), chunk.choices.is_empty()))
}

/// An embeddings list body, vectors as floats or base64 (little-endian `f32`s, as OpenAI).
pub fn encode_embeddings(
    vectors: &[Vec<f32>],
    model: &str,
    usage: &Usage,
    base64: bool,
) -> Vec<u8> {
    use base64::Engine as _;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    wire::to_vec(&json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }))
}

/// An error event for an OpenAI stream that failed after it started; the SDKs raise it.
pub fn stream_error(code: &str, message: &str, out: &mut Vec<u8>) {
    wire::sse_frame(
        out,
        None,
        &json!({"error": {"message": message, "type": "api_error", "param": null, "code": code}}),
    );
}

/// The `error.message` of an OpenAI error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    match error {
        Value::String(message) => Some(message.clone()),
        _ => error.get("message")?.as_str().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
