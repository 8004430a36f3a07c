//! AWS Bedrock Runtime as the real service speaks it: `POST /model/{modelId}/converse` and
//! `/converse-stream` signed with Signature Version 4, `Converse` bodies, event-stream frames
//! for the stream (`messageStart`, `contentBlockStart`, `contentBlockDelta`,
//! `contentBlockStop`, `messageStop`, `metadata`; each payload padded with a `p` field as
//! AWS does), and `{"message"}` errors typed by `x-amzn-ErrorType`.

use atalaya_translate::eventstream;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::{self, Output, Prompt, ToolMode, ToolSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl Error {
    pub fn validation(message: impl Into<String>) -> Self {
        Error {
            status: 400,
            kind: "ValidationException",
            message: message.into(),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({"message": self.message})).unwrap_or_default()
    }

    /// The `x-amzn-ErrorType` header value.
    pub fn error_type(&self) -> String {
        format!(
            "{}:http://internal.amazon.com/coral/com.amazon.bedrock/",
            self.kind
        )
    }
}

pub fn exception_for(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    messages: Option<Vec<WireMessage>>,
    #[serde(default)]
    system: Vec<Value>,
    #[serde(default)]
    inference_config: Option<Value>,
    #[serde(default)]
    tool_config: Option<ToolConfig>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

/// Validates a Converse request and reduces it to a prompt.
pub fn parse(model: &str, body: &[u8]) -> Result<Prompt, Error> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        Error::validation(format!(
            "Malformed input request: {e}, please reformat your input and try again."
        ))
    })?;
    let messages = body.messages.filter(|m| !m.is_empty()).ok_or_else(|| Error::validation("A conversation must start with a user message. Try again with a conversation that starts with a user message."))?;
    let mut texts: Vec<(String, String)> = body
        .system
        .iter()
        .map(|s| {
            (
                "system".to_owned(),
                s["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut last_is_tool_result = false;
    for (index, message) in messages.iter().enumerate() {
        if message.role != "user" && message.role != "assistant" {
            return Err(Error::validation(format!(
                "1 validation error detected: Value '{}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                message.role,
                index + 1
            )));
        }
        if index == 0 && message.role != "user" {
            return Err(Error::validation(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        let mut text = String::new();
        last_is_tool_result = false;
        for block in &message.content {
            if let Some(t) = block["text"].as_str() {
                text.push_str(t);
            } else if let Some(result) = block.get("toolResult") {
                last_is_tool_result = true;
                text.push_str(&result["content"].to_string());
            } else if let Some(call) = block.get("toolUse") {
                text.push_str(&call["input"].to_string());
            }
        }
        texts.push((message.role.clone(), text));
    }
    let mut prompt = Prompt::from_texts(
        model.to_owned(),
        texts.iter().map(|(r, t)| (r.as_str(), t.as_str())),
    );
    prompt.max_tokens = body
        .inference_config
        .as_ref()
        .and_then(|c| c["maxTokens"].as_u64())
        .map(|m| m as u32);
    prompt.last_is_tool_result = last_is_tool_result;
    if let Some(config) = body.tool_config {
        prompt.tools = config
            .tools
            .iter()
            .filter_map(|tool| {
                let spec = tool.get("toolSpec")?;
                Some(ToolSpec {
                    name: spec["name"].as_str()?.to_owned(),
                    schema: spec["inputSchema"]["json"].clone(),
                })
            })
            .collect();
        prompt.tool_mode = match config.tool_choice {
            Some(choice) if choice.get("any").is_some() => ToolMode::Required,
            Some(choice) if choice.get("tool").is_some() => ToolMode::Named(
                choice["tool"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => ToolMode::Auto,
        };
    }
    Ok(prompt)
}

fn stop_reason(output: &Output) -> &'static str {
    match output {
        Output::Call { .. } => "tool_use",
        Output::Text(reply) if reply.finish_reason == sim::FinishReason::Length => "max_tokens",
        Output::Text(_) => "end_turn",
    }
}

fn usage(prompt: &Prompt, output: &Output) -> Value {
    json!({"inputTokens": prompt.prompt_tokens, "outputTokens": output.tokens(), "totalTokens": prompt.prompt_tokens + output.tokens()})
}

fn tool_input(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| json!({}))
}

/// The `Converse` body.
pub fn answer(prompt: &Prompt) -> Vec<u8> {
    let output = prompt.output();
    let content = match &output {
        Output::Text(reply) => json!([{"text": reply.text()}]),
        Output::Call {
            name, arguments, ..
        } => {
            json!([{"toolUse": {"toolUseId": output.call_id("tooluse_"), "name": name, "input": tool_input(arguments)}}])
        }
    };
    serde_json::to_vec(&json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(&output),
        "usage": usage(prompt, &output),
        "metrics": {"latencyMs": 120},
    }))
    .unwrap_or_default()
}

/// AWS pads stream payloads with a `p` field of letters so lengths leak nothing.
fn frame(event: &str, mut payload: Value, padding: usize) -> Bytes {
    payload["p"] = json!(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"[..padding % 52 + 1].to_owned()
    );
    let bytes = serde_json::to_vec(&payload).unwrap_or_default();
    Bytes::from(eventstream::encode(
        &[
            (":event-type", event),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &bytes,
    ))
}

/// Every frame of the streamed answer, in order.
pub fn frames(prompt: &Prompt) -> Vec<Bytes> {
    let output = prompt.output();
    let mut frames = vec![frame("messageStart", json!({"role": "assistant"}), 3)];
    if let Output::Call { name, .. } = &output {
        frames.push(frame("contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": output.call_id("tooluse_"), "name": name}}}), 7));
    }
    for (index, piece) in output.pieces().into_iter().enumerate() {
        let delta = match &output {
            Output::Text(_) => json!({"text": piece}),
            Output::Call { .. } => json!({"toolUse": {"input": piece}}),
        };
        frames.push(frame(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": delta}),
            index,
        ));
    }
    frames.push(frame(
        "contentBlockStop",
        json!({"contentBlockIndex": 0}),
        11,
    ));
    frames.push(frame(
        "messageStop",
        json!({"stopReason": stop_reason(&output)}),
        13,
    ));
    frames.push(frame(
        "metadata",
        json!({"usage": usage(prompt, &output), "metrics": {"latencyMs": 120}}),
        17,
    ));
    frames
}

/// An exception frame, as ConverseStream sends when it fails mid-way.
pub fn exception_frame(kind: &str, message: &str) -> Bytes {
    let payload = serde_json::to_vec(&json!({"message": message})).unwrap_or_default();
    Bytes::from(eventstream::encode(
        &[
            (":exception-type", kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &payload,
    ))
}
