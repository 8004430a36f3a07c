//! Google Gemini: `generateContent` requests and responses, `streamGenerateContent?alt=sse`
//! (every event a whole `GenerateContentResponse`, no end marker), `embedContent` /
//! `batchEmbedContents`, and `{"error": {"code", "message", "status"}}` bodies.
//!
//! The model travels in the URL (`/v1beta/models/{model}:generateContent`), not the body.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::chat::*;
use crate::wire;
use crate::{Decoded, StreamError, StreamFailure, Target, TranslateError, unix_now};

const FORMAT: &str = "Gemini";

/// Gemini accepts at most this many stop sequences.
const MAX_STOP_SEQUENCES: usize = 5;

/// Writes a canonical request as a `generateContent` body.
pub fn encode_request(request: &ChatRequest, target: &Target) -> Result<Vec<u8>, TranslateError> {
    let mut body = Map::new();
    let mut system_parts = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        match message.role {
            Role::System => {
                for part in &message.content {
                    match part {
                        Part::Text(text) => system_parts.push(json!({"text": text})),
                        _ => {
                            target.refuse(
                                FORMAT,
                                &format!("{param}.content"),
                                "system instructions hold text only.",
                            )?;
                        }
                    }
                }
            }
            Role::User => {
                let parts = encode_parts(&message.content, &param, target)?;
                wire::push_turn(&mut contents, "user", "parts", parts);
            }
            Role::Assistant => {
                let mut parts = encode_parts(&message.content, &param, target)?;
                for call in &message.tool_calls {
                    let args = wire::call_arguments(call, &param, FORMAT)?;
                    parts.push(
                        json!({"functionCall": {"id": call.id, "name": call.name, "args": args}}),
                    );
                }
                wire::push_turn(&mut contents, "model", "parts", parts);
            }
            Role::Tool => {
                if message.has_images() {
                    target.refuse(
                        FORMAT,
                        &format!("{param}.content"),
                        "function responses hold text only.",
                    )?;
                }
                let id = message.tool_call_id.clone().unwrap_or_default();
                let name =
                    tool_name_for(&request.messages[..index], &id).unwrap_or_else(|| id.clone());
                let text = message.joined_text();
                let key = if message.is_error { "error" } else { "content" };
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) if !message.is_error => object,
                    _ => json!({ key: text }),
                };
                wire::push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    vec![
                        json!({"functionResponse": {"id": id, "name": name, "response": response}}),
                    ],
                );
            }
        }
    }
    if !system_parts.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system_parts}));
    }
    body.insert("contents".into(), Value::Array(contents));
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut declaration =
                    json!({"name": tool.name, "parameters": schema(&tool.parameters)});
                if let Some(description) = &tool.description {
                    declaration["description"] = json!(description);
                }
                declaration
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        if let Some(choice) = &request.tool_choice {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            };
            body.insert(
                "toolConfig".into(),
                json!({"functionCallingConfig": config}),
            );
        }
        if request.parallel_tool_calls == Some(false) {
            target.refuse(
                FORMAT,
                "parallel_tool_calls",
                "Gemini cannot be told to call one tool at a time.",
            )?;
        }
    }
    let mut config = Map::new();
    let numbers = [
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("presencePenalty", request.presence_penalty),
        ("frequencyPenalty", request.frequency_penalty),
    ];
    for (name, value) in numbers {
        if let Some(value) = value {
            config.insert(name.into(), json!(value));
        }
    }
    if let Some(top_k) = request.top_k {
        config.insert("topK".into(), json!(top_k));
    }
    if let Some(max) = request.max_tokens {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if !request.stop.is_empty() {
        let mut stop = request.stop.clone();
        if stop.len() > MAX_STOP_SEQUENCES {
            target.refuse(FORMAT, "stop", "Gemini takes at most 5 stop sequences.")?;
            stop.truncate(MAX_STOP_SEQUENCES);
        }
        config.insert("stopSequences".into(), json!(stop));
    }
    if let Some(n) = request.n.filter(|n| *n > 1) {
        config.insert("candidateCount".into(), json!(n));
    }
    if let Some(seed) = request.seed {
        config.insert("seed".into(), json!(seed));
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema: spec, .. }) => {
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseSchema".into(), schema(spec));
        }
    }
    if let Some(reasoning) = &request.reasoning {
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": reasoning.budget(), "includeThoughts": true}),
        );
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    crate::refuse_extra(request, target, FORMAT)?;
    Ok(wire::to_vec(&body))
}

/// The name of the function a tool call id belongs to: Gemini matches responses by name.
fn tool_name_for(history: &[Message], id: &str) -> Option<String> {
    history
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter())
        .find(|call| call.id == id)
        .map(|call| call.name.clone())
}

fn encode_parts(
    parts: &[Part],
    param: &str,
    target: &Target,
) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Part::Text(text) => {
                if !text.is_empty() {
                    out.push(json!({"text": text}));
                }
            }
            Part::Image(image) => match &image.source {
                ImageSource::Base64 { media_type, data } => {
                    out.push(json!({"inlineData": {"mimeType": media_type, "data": data}}));
                }
                ImageSource::Url(_) => {
                    target.refuse(
                        FORMAT,
                        &format!("{param}.content"),
                        "Gemini takes images as inline data, not URLs; send the image as a data: URL (base64).",
                    )?;
                }
            },
            // Earlier reasoning is the model's own output; Gemini does not take it back.
            Part::Thinking { .. } | Part::RedactedThinking(_) => {}
        }
    }
    Ok(out)
}

/// JSON Schema reduced to the OpenAPI subset Gemini's `parameters` and `responseSchema`
/// accept: unknown keywords are dropped (Gemini refuses them), `type: [T, "null"]` becomes
/// `nullable`, `const` becomes a one-value `enum`.
pub fn schema(input: &Value) -> Value {
    const KEEP: &[&str] = &[
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "items",
        "anyOf",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "title",
        "default",
        "propertyOrdering",
        "minProperties",
        "maxProperties",
        "example",
    ];
    let Value::Object(object) = input else {
        return input.clone();
    };
    let mut out = Map::new();
    for (key, value) in object {
        match key.as_str() {
            "properties" => {
                if let Value::Object(properties) = value {
                    let mapped: Map<String, Value> = properties
                        .iter()
                        .map(|(name, s)| (name.clone(), schema(s)))
                        .collect();
                    out.insert(key.clone(), Value::Object(mapped));
                }
            }
            "items" => {
                out.insert(key.clone(), schema(value));
            }
            "anyOf" => {
                if let Value::Array(options) = value {
                    out.insert(
                        key.clone(),
                        Value::Array(options.iter().map(schema).collect()),
                    );
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    let real: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                    if real.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    if let Some(first) = real.first() {
                        out.insert(key.clone(), (*first).clone());
                    }
                }
                other => {
                    out.insert(key.clone(), other.clone());
                }
            },
            "const" => {
                out.insert("enum".into(), json!([value]));
            }
            _ if KEEP.contains(&key.as_str()) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<WireFeedback>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage {
            prompt_tokens: self.prompt_token_count.unwrap_or(0),
            // OpenAI counts reasoning inside completion tokens; Gemini reports it apart.
            completion_tokens: self.candidates_token_count.unwrap_or(0) + thoughts,
            cached_tokens: self.cached_content_token_count.unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: thoughts,
            estimated: false,
        }
    }
}

pub fn finish_reason_of(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}

/// A stable id for a function call Gemini sent without one.
fn call_id(response_id: &str, name: &str, args: &str, position: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in response_id
        .bytes()
        .chain(name.bytes())
        .chain(args.bytes())
        .chain(position.to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("call_{hash:016x}")
}

fn function_call(call: WireFunctionCall, response_id: &str, position: usize) -> ToolCall {
    let arguments = wire::to_text(&call.args.unwrap_or_else(|| json!({})));
    ToolCall {
        id: call
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| call_id(response_id, &call.name, &arguments, position)),
        name: call.name,
        arguments,
    }
}

fn upstream_error(error: &Value) -> StreamError {
    StreamError {
        kind: error
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("ERROR")
            .to_owned(),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Reads a `generateContent` body.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not a GenerateContentResponse: {e}")))?;
    if let Some(error) = &wire.error {
        return Err(TranslateError::upstream(upstream_error(error).message));
    }
    let response_id = wire.response_id.clone().unwrap_or_default();
    let mut choices = Vec::new();
    for (position, candidate) in wire.candidates.into_iter().enumerate() {
        let mut message = Message::new(Role::Assistant, Vec::new());
        for (part_index, part) in candidate
            .content
            .map(|c| c.parts)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if let Some(call) = part.function_call {
                message
                    .tool_calls
                    .push(function_call(call, &response_id, part_index));
            } else if let Some(text) = part.text {
                message.content.push(if part.thought == Some(true) {
                    Part::Thinking {
                        text,
                        signature: None,
                    }
                } else {
                    Part::Text(text)
                });
            }
        }
        let mut finish = candidate
            .finish_reason
            .as_deref()
            .map(finish_reason_of)
            .unwrap_or(FinishReason::Stop);
        if finish == FinishReason::Stop && !message.tool_calls.is_empty() {
            finish = FinishReason::ToolCalls;
        }
        choices.push(Choice {
            index: candidate.index.unwrap_or(position as u32),
            message,
            finish_reason: finish,
            stop_sequence: None,
        });
    }
    if choices.is_empty() && wire.prompt_feedback.and_then(|f| f.block_reason).is_some() {
        choices.push(Choice {
            index: 0,
            message: Message::new(Role::Assistant, Vec::new()),
            finish_reason: FinishReason::ContentFilter,
            stop_sequence: None,
        });
    }
    Ok(ChatResponse {
        id: response_id,
        model: wire.model_version.unwrap_or_default(),
        created: unix_now(),
        choices,
        usage: wire.usage_metadata.map(WireUsage::canonical),
    })
}

/// Turns `streamGenerateContent?alt=sse` events into canonical deltas.
#[derive(Default)]
pub struct StreamDecoder {
    started: bool,
    /// Tool calls started per candidate.
    tools: Vec<(u32, u32)>,
    finished: Vec<u32>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder::default()
    }

    /// Gemini has no end marker: a stream is complete once every candidate said why it stopped.
    pub fn complete(&self) -> bool {
        !self.finished.is_empty()
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
        let wire: WireResponse =
            serde_json::from_slice(data).map_err(|e| StreamFailure::Malformed(format!("{e}")))?;
        if let Some(error) = &wire.error {
            return Err(StreamFailure::Provider(upstream_error(error)));
        }

        let response_id = wire.response_id.clone().unwrap_or_default();
        if !self.started {
            self.started = true;
            deltas.push(Delta::Start {
                id: wire.response_id.clone(),
                model: wire.model_version.clone(),
            });
        }
        for (position, candidate) in wire.candidates.into_iter().enumerate() {
            let choice = candidate.index.unwrap_or(position as u32);
            let mut called = false;
            for (part_index, part) in candidate
                .content
                .map(|c| c.parts)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                if let Some(call) = part.function_call {
                    called = true;
                    let index = match self.tools.iter_mut().find(|(c, _)| *c == choice) {
                        Some((_, count)) => {
                            *count += 1;
                            *count - 1
                        }
                        None => {
                            self.tools.push((choice, 1));
                            0
                        }
                    };
                    let call = function_call(call, &response_id, part_index);
                    deltas.push(Delta::ToolCallStart {
                        choice,
                        index,
                        id: call.id,
                        name: call.name,
                    });
                    deltas.push(Delta::ToolCallArguments {
                        choice,
                        index,
                        fragment: call.arguments,
                    });
                } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                    deltas.push(if part.thought == Some(true) {
                        Delta::Thinking { choice, text }
                    } else {
                        Delta::Text { choice, text }
                    });
                }
            }
            if let Some(reason) = candidate.finish_reason
                && !self.finished.contains(&choice)
            {
                self.finished.push(choice);
                let mut reason = finish_reason_of(&reason);
                let any_calls = called || self.tools.iter().any(|(c, _)| *c == choice);
                if reason == FinishReason::Stop && any_calls {
                    reason = FinishReason::ToolCalls;
                }
                deltas.push(Delta::Finish {
                    choice,
                    reason,
                    stop_sequence: None,
                });
            }
        }
        if let Some(usage) = wire.usage_metadata {
            deltas.push(Delta::Usage(usage.canonical()));
        }
        Ok(())
    }
}

/// The `error.message` of a Gemini error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")?
        .get("message")?
        .as_str()
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Embeddings

/// The body for `embedContent` (one input) or `batchEmbedContents` (several), and which.
pub fn encode_embeddings(
    model: &str,
    inputs: &[String],
    dimensions: Option<u32>,
) -> (Vec<u8>, bool) {
    let content = |text: &str| json!({"parts": [{"text": text}]});
    if let [input] = inputs {
        let mut body = json!({"content": content(input)});
        if let Some(dimensions) = dimensions {
            body["outputDimensionality"] = json!(dimensions);
        }
        return (wire::to_vec(&body), false);
    }
    let requests: Vec<Value> = inputs
        .iter()
        .map(|input| {
            let mut request =
                json!({"model": format!("models/{model}"), "content": content(input)});
            if let Some(dimensions) = dimensions {
                request["outputDimensionality"] = json!(dimensions);
            }
            request
        })
        .collect();
    (wire::to_vec(&json!({"requests": requests})), true)
}

/// Vectors from an `embedContent` or `batchEmbedContents` answer.
pub fn decode_embeddings(body: &[u8]) -> Result<Vec<Vec<f32>>, TranslateError> {
    #[derive(Deserialize)]
    struct Embedding {
        values: Vec<f32>,
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        embedding: Option<Embedding>,
        #[serde(default)]
        embeddings: Option<Vec<Embedding>>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not an embedding answer: {e}")))?;
    match (answer.embedding, answer.embeddings) {
        (Some(one), _) => Ok(vec![one.values]),
        (None, Some(many)) => Ok(many.into_iter().map(|e| e.values).collect()),
        (None, None) => Err(TranslateError::upstream("the answer holds no embedding")),
    }
}

#[cfg(test)]
mod tests;
