//! AWS Bedrock Runtime `Converse` and `ConverseStream`: requests, responses, the stream's
//! events (`messageStart`, `contentBlockStart`, `contentBlockDelta`, `contentBlockStop`,
//! `messageStop`, `metadata`, and exceptions) carried in event-stream frames, and
//! `{"message": ...}` error bodies (the error type travels in `x-amzn-ErrorType`).
//!
//! The model id travels in the URL (`/model/{modelId}/converse`), not the body.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::anthropic::Emulation;
use crate::chat::*;
use crate::eventstream;
use crate::wire;
use crate::{Decoded, JSON_TOOL, StreamError, StreamFailure, Target, TranslateError, unix_now};

const FORMAT: &str = "Bedrock Converse";

/// Writes a canonical request as a `Converse` body.
pub fn encode_request(
    request: &ChatRequest,
    target: &Target,
) -> Result<(Vec<u8>, Emulation), TranslateError> {
    let mut body = Map::new();
    let mut emulation = Emulation::default();
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let param = format!("messages[{index}]");
        match message.role {
            Role::System => {
                if message.has_images() {
                    target.refuse(
                        FORMAT,
                        &format!("{param}.content"),
                        "system prompts hold text only.",
                    )?;
                }
                system.push(json!({"text": message.joined_text()}));
            }
            Role::User => {
                let blocks = encode_parts(&message.content, &param, target)?;
                wire::push_turn(&mut messages, "user", "content", blocks);
            }
            Role::Assistant => {
                let mut blocks = encode_parts(&message.content, &param, target)?;
                for call in &message.tool_calls {
                    let input = wire::call_arguments(call, &param, FORMAT)?;
                    blocks.push(json!({"toolUse": {"toolUseId": call.id, "name": call.name, "input": input}}));
                }
                wire::push_turn(&mut messages, "assistant", "content", blocks);
            }
            Role::Tool => {
                let text = message.joined_text();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(value @ Value::Object(_)) => json!([{"json": value}]),
                    _ => json!([{"text": text}]),
                };
                let mut result = json!({"toolUseId": message.tool_call_id.clone().unwrap_or_default(), "content": content});
                if message.is_error {
                    result["status"] = json!("error");
                }
                wire::push_turn(
                    &mut messages,
                    "user",
                    "content",
                    vec![json!({"toolResult": result})],
                );
            }
        }
    }
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            let mut spec = json!({"name": tool.name, "inputSchema": {"json": tool.parameters}});
            if let Some(description) = &tool.description {
                spec["description"] = json!(description);
            }
            json!({"toolSpec": spec})
        })
        .collect();
    let mut tool_choice = match &request.tool_choice {
        None | Some(ToolChoice::Auto) => None,
        Some(ToolChoice::Required) => Some(json!({"any": {}})),
        Some(ToolChoice::Tool(name)) => Some(json!({"tool": {"name": name}})),
        Some(ToolChoice::None) => {
            target.refuse(
                FORMAT,
                "tool_choice",
                "Bedrock cannot be told not to call the tools it is given.",
            )?;
            None
        }
    };
    if let Some(format) = &request.response_format
        && let Some((schema, description)) = crate::json_tool_schema(format, target, FORMAT)?
    {
        emulation.json_tool = true;
        tools.push(json!({"toolSpec": {"name": JSON_TOOL, "description": description, "inputSchema": {"json": schema}}}));
        tool_choice = Some(json!({"tool": {"name": JSON_TOOL}}));
    }
    if !tools.is_empty() {
        let mut config = json!({"tools": tools});
        if let Some(choice) = tool_choice {
            config["toolChoice"] = choice;
        }
        body.insert("toolConfig".into(), config);
    }
    if request.parallel_tool_calls == Some(false) {
        target.refuse(
            FORMAT,
            "parallel_tool_calls",
            "Bedrock cannot be told to call one tool at a time.",
        )?;
    }
    let mut inference = Map::new();
    if let Some(max) = request.max_tokens {
        inference.insert("maxTokens".into(), json!(max));
    }
    if let Some(temperature) = request.temperature {
        inference.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        inference.insert("topP".into(), json!(top_p));
    }
    if !request.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(request.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let mut additional = Map::new();
    if let Some(top_k) = request.top_k {
        additional.insert("top_k".into(), json!(top_k));
    }
    if let Some(reasoning) = &request.reasoning {
        let budget = reasoning.budget();
        if budget > 0 {
            additional.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget.max(1_024)}),
            );
        }
    }
    if !additional.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(additional),
        );
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

fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
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
            Part::Image(image) => {
                match &image.source {
                    ImageSource::Base64 { media_type, data } => {
                        match image_format(media_type) {
                            Some(format) => out.push(
                                json!({"image": {"format": format, "source": {"bytes": data}}}),
                            ),
                            None => {
                                target.refuse(FORMAT, &format!("{param}.content"), &format!("Bedrock takes png, jpeg, gif or webp images, not {media_type}."))?;
                            }
                        }
                    }
                    ImageSource::Url(_) => {
                        target.refuse(FORMAT, &format!("{param}.content"), "Bedrock takes image bytes, not URLs; send the image as a data: URL (base64).")?;
                    }
                }
            }
            Part::Thinking {
                text,
                signature: Some(signature),
            } => {
                out.push(json!({"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}}));
            }
            Part::Thinking { .. } => {}
            Part::RedactedThinking(data) => {
                out.push(json!({"reasoningContent": {"redactedContent": data}}))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Responses

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_write_input_tokens.unwrap_or(0);
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

pub fn finish_reason_of(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Reads a `Converse` body.
pub fn decode_response(
    body: &[u8],
    model: &str,
    emulation: Emulation,
) -> Result<ChatResponse, TranslateError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("not a Converse body: {e}")))?;
    let mut message = Message::new(Role::Assistant, Vec::new());
    let mut finish = value["stopReason"]
        .as_str()
        .map(finish_reason_of)
        .unwrap_or(FinishReason::Stop);
    for block in value["output"]["message"]["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Some(text) = block["text"].as_str() {
            message.content.push(Part::Text(text.to_owned()));
        } else if let Some(tool) = block.get("toolUse") {
            let name = tool["name"].as_str().unwrap_or_default();
            let input = wire::to_text(&tool["input"]);
            if emulation.json_tool && name == JSON_TOOL {
                message.content.push(Part::Text(input));
                finish = FinishReason::Stop;
            } else {
                message.tool_calls.push(ToolCall {
                    id: tool["toolUseId"].as_str().unwrap_or_default().to_owned(),
                    name: name.to_owned(),
                    arguments: input,
                });
            }
        } else if let Some(reasoning) = block.get("reasoningContent") {
            let text = &reasoning["reasoningText"];
            message.content.push(Part::Thinking {
                text: text["text"].as_str().unwrap_or_default().to_owned(),
                signature: text["signature"].as_str().map(str::to_owned),
            });
        }
    }
    let usage = serde_json::from_value::<WireUsage>(value["usage"].clone())
        .ok()
        .map(WireUsage::canonical);
    Ok(ChatResponse {
        id: String::new(),
        model: model.to_owned(),
        created: unix_now(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: finish,
            stop_sequence: None,
        }],
        usage,
    })
}

/// Turns `ConverseStream` event-stream messages into canonical deltas.
#[derive(Default)]
pub struct StreamDecoder {
    emulation: Emulation,
    started: bool,
    /// Block index → tool index, or `None` for the JSON-output tool.
    tools: Vec<(u64, Option<u32>)>,
    next_tool: u32,
    stopped: bool,
    metadata: bool,
}

impl StreamDecoder {
    pub fn new(emulation: Emulation) -> Self {
        StreamDecoder {
            emulation,
            ..StreamDecoder::default()
        }
    }

    /// Whether `messageStop` and `metadata` (which carries usage) both arrived.
    pub fn complete(&self) -> bool {
        self.stopped && self.metadata
    }

    pub fn decode(&mut self, message: &eventstream::Message) -> Decoded {
        let mut deltas = Vec::new();
        self.decode_into(message, &mut deltas)?;
        Ok(deltas)
    }

    /// [`decode`](Self::decode) appending to `deltas`, which callers reuse.
    pub fn decode_into(
        &mut self,
        message: &eventstream::Message,
        deltas: &mut Vec<Delta>,
    ) -> Result<(), StreamFailure> {
        if message.header(":message-type") == Some("exception")
            || message.header(":message-type") == Some("error")
        {
            let kind = message
                .header(":exception-type")
                .or_else(|| message.header(":error-code"))
                .unwrap_or("exception")
                .to_owned();
            let payload: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            return Err(StreamFailure::Provider(StreamError {
                kind,
                message: payload["message"]
                    .as_str()
                    .or_else(|| message.header(":error-message"))
                    .unwrap_or_default()
                    .to_owned(),
            }));
        }
        let event = message.header(":event-type").unwrap_or_default();
        let payload: Value = serde_json::from_slice(&message.payload)
            .map_err(|e| StreamFailure::Malformed(format!("{e}")))?;

        if !self.started {
            self.started = true;
            deltas.push(Delta::Start {
                id: None,
                model: None,
            });
        }
        let block = payload["contentBlockIndex"].as_u64().unwrap_or(0);
        match event {
            "contentBlockStart" => {
                if let Some(tool) = payload["start"].get("toolUse") {
                    let name = tool["name"].as_str().unwrap_or_default();
                    if self.emulation.json_tool && name == JSON_TOOL {
                        self.tools.push((block, None));
                    } else {
                        let index = self.next_tool;
                        self.next_tool += 1;
                        self.tools.push((block, Some(index)));
                        deltas.push(Delta::ToolCallStart {
                            choice: 0,
                            index,
                            id: tool["toolUseId"].as_str().unwrap_or_default().to_owned(),
                            name: name.to_owned(),
                        });
                    }
                }
            }
            "contentBlockDelta" => {
                let delta = &payload["delta"];
                if let Some(text) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                    deltas.push(Delta::Text {
                        choice: 0,
                        text: text.to_owned(),
                    });
                } else if let Some(input) =
                    delta["toolUse"]["input"].as_str().filter(|t| !t.is_empty())
                {
                    match self.tools.iter().find(|(b, _)| *b == block) {
                        Some((_, Some(index))) => deltas.push(Delta::ToolCallArguments {
                            choice: 0,
                            index: *index,
                            fragment: input.to_owned(),
                        }),
                        Some((_, None)) => deltas.push(Delta::Text {
                            choice: 0,
                            text: input.to_owned(),
                        }),
                        None => {}
                    }
                } else if let Some(reasoning) = delta.get("reasoningContent") {
                    if let Some(text) = reasoning["text"].as_str().filter(|t| !t.is_empty()) {
                        deltas.push(Delta::Thinking {
                            choice: 0,
                            text: text.to_owned(),
                        });
                    }
                    if let Some(signature) = reasoning["signature"].as_str() {
                        deltas.push(Delta::ThinkingSignature {
                            choice: 0,
                            signature: signature.to_owned(),
                        });
                    }
                }
            }
            "messageStop" => {
                self.stopped = true;
                let mut reason = payload["stopReason"]
                    .as_str()
                    .map(finish_reason_of)
                    .unwrap_or(FinishReason::Stop);
                if self.emulation.json_tool
                    && reason == FinishReason::ToolCalls
                    && self.next_tool == 0
                {
                    reason = FinishReason::Stop;
                }
                deltas.push(Delta::Finish {
                    choice: 0,
                    reason,
                    stop_sequence: None,
                });
            }
            "metadata" => {
                self.metadata = true;
                if let Ok(usage) = serde_json::from_value::<WireUsage>(payload["usage"].clone()) {
                    deltas.push(Delta::Usage(usage.canonical()));
                }
            }
            // messageStart and contentBlockStop carry nothing the client needs.
            _ => {}
        }
        Ok(())
    }
}

/// The `message` of a Bedrock error body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("message")
        .or_else(|| value.get("Message"))?
        .as_str()
        .map(str::to_owned)
}
