//! Google's Gemini API as the real service speaks it: `generateContent`,
//! `streamGenerateContent` (SSE with `alt=sse`, a JSON array without), `embedContent`,
//! `batchEmbedContents`, with `x-goog-api-key` (or `?key=`), and
//! `{"error": {"code", "message", "status"}}` bodies.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sim::{self, Output, Prompt, ToolMode, ToolSpec};

/// A Gemini error: HTTP status, gRPC-style status word, message.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub status: u16,
    pub message: String,
    /// `google.rpc.ErrorInfo` reason, e.g. `API_KEY_INVALID`.
    pub reason: Option<&'static str>,
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error {
            status: 400,
            message: message.into(),
            reason: None,
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut error = json!({"code": self.status, "message": self.message, "status": status_word(self.status)});
        if let Some(reason) = self.reason {
            error["details"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }]);
        }
        serde_json::to_vec(&json!({"error": error})).unwrap_or_default()
    }
}

pub fn status_word(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    contents: Option<Vec<Content>>,
    #[serde(default)]
    system_instruction: Option<Content>,
    #[serde(default)]
    tools: Vec<ToolGroup>,
    #[serde(default)]
    tool_config: Option<Value>,
    #[serde(default)]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolGroup {
    #[serde(default)]
    function_declarations: Vec<Declaration>,
}

#[derive(Deserialize)]
struct Declaration {
    name: String,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    response_mime_type: Option<String>,
    #[serde(default)]
    response_schema: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
}

fn text_of(parts: &[Value]) -> (String, bool) {
    let mut text = String::new();
    let mut function_response = false;
    for part in parts {
        if let Some(t) = part["text"].as_str() {
            text.push_str(t);
        } else if let Some(response) = part.get("functionResponse") {
            function_response = true;
            text.push_str(&response["response"].to_string());
        } else if let Some(call) = part.get("functionCall") {
            text.push_str(&call["args"].to_string());
        }
    }
    (text, function_response)
}

/// Validates a `generateContent` request and reduces it to a prompt.
pub fn parse(model: &str, body: &[u8]) -> Result<Prompt, Error> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("Invalid JSON payload received. {e}")))?;
    let contents = body.contents.filter(|c| !c.is_empty()).ok_or_else(|| {
        Error::invalid("* GenerateContentRequest.contents: contents is not specified\n")
    })?;
    let mut texts = Vec::new();
    if let Some(system) = &body.system_instruction {
        texts.push(("system".to_owned(), text_of(&system.parts).0));
    }
    let mut last_is_tool_result = false;
    for (index, content) in contents.iter().enumerate() {
        let role = content.role.as_deref().unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(Error::invalid(format!(
                "Please use a valid role: user, model. (contents[{index}].role: {role})"
            )));
        }
        if content.parts.is_empty() {
            return Err(Error::invalid(format!(
                "* GenerateContentRequest.contents[{index}].parts: contents.parts must not be empty.\n"
            )));
        }
        let (text, function_response) = text_of(&content.parts);
        last_is_tool_result = function_response;
        texts.push((role.to_owned(), text));
    }
    let config = body.generation_config.unwrap_or_default();
    if config.stop_sequences.as_ref().is_some_and(|s| s.len() > 5) {
        return Err(Error::invalid(
            "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed\n",
        ));
    }
    let mut prompt = Prompt::from_texts(
        model.to_owned(),
        texts.iter().map(|(r, t)| (r.as_str(), t.as_str())),
    );
    prompt.max_tokens = config.max_output_tokens;
    prompt.last_is_tool_result = last_is_tool_result;
    prompt.tools = body
        .tools
        .into_iter()
        .flat_map(|group| group.function_declarations)
        .map(|d| ToolSpec {
            name: d.name,
            schema: d.parameters.unwrap_or_else(|| json!({"type": "object"})),
        })
        .collect();
    let calling = body
        .tool_config
        .as_ref()
        .map(|c| c["functionCallingConfig"].clone())
        .unwrap_or(Value::Null);
    prompt.tool_mode = match calling["mode"].as_str() {
        Some("NONE") => ToolMode::None,
        Some("ANY") => match calling["allowedFunctionNames"]
            .as_array()
            .and_then(|names| names.first())
            .and_then(Value::as_str)
        {
            Some(name) => ToolMode::Named(name.to_owned()),
            None => ToolMode::Required,
        },
        _ => ToolMode::Auto,
    };
    if config.response_mime_type.as_deref() == Some("application/json") {
        prompt.json_schema = Some(
            config
                .response_schema
                .unwrap_or_else(|| json!({"type": "object"})),
        );
    }
    Ok(prompt)
}

fn finish_reason(output: &Output) -> &'static str {
    match output {
        Output::Text(reply) if reply.finish_reason == sim::FinishReason::Length => "MAX_TOKENS",
        _ => "STOP",
    }
}

fn usage(prompt: &Prompt, completion: Option<u32>) -> Value {
    let mut usage = json!({
        "promptTokenCount": prompt.prompt_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt.prompt_tokens}],
    });
    match completion {
        Some(completion) => {
            usage["candidatesTokenCount"] = json!(completion);
            usage["totalTokenCount"] = json!(prompt.prompt_tokens + completion);
        }
        None => usage["totalTokenCount"] = json!(prompt.prompt_tokens),
    }
    usage
}

fn response_id(prompt: &Prompt) -> String {
    format!("{:016x}", prompt.seed ^ crate::openai::next_counter())
}

fn candidate(parts: Value, finish: Option<&str>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    candidate
}

/// The `GenerateContentResponse` body.
pub fn answer(prompt: &Prompt) -> Vec<u8> {
    let output = prompt.output();
    let parts = match &output {
        Output::Text(reply) => json!([{"text": reply.text()}]),
        Output::Call {
            name, arguments, ..
        } => {
            json!([{"functionCall": {"name": name, "args": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({}))}}])
        }
    };
    serde_json::to_vec(&json!({
        "candidates": [candidate(parts, Some(finish_reason(&output)))],
        "usageMetadata": usage(prompt, Some(output.tokens())),
        "modelVersion": prompt.model,
        "responseId": response_id(prompt),
    }))
    .unwrap_or_default()
}

/// The streamed answer's `GenerateContentResponse` objects: text a few words at a time,
/// a function call whole (Gemini never splits one), the last with `finishReason`.
pub fn stream_objects(prompt: &Prompt) -> Vec<Value> {
    let output = prompt.output();
    let id = response_id(prompt);
    let mut objects = Vec::new();
    match &output {
        Output::Text(reply) => {
            let groups: Vec<&[String]> = reply.pieces.chunks(4).collect();
            for (index, group) in groups.iter().enumerate() {
                let last = index + 1 == groups.len();
                objects.push(json!({
                    "candidates": [candidate(json!([{"text": group.concat()}]), last.then(|| finish_reason(&output)))],
                    "usageMetadata": usage(prompt, last.then(|| output.tokens())),
                    "modelVersion": prompt.model,
                    "responseId": id,
                }));
            }
        }
        Output::Call { name, arguments, .. } => objects.push(json!({
            "candidates": [candidate(json!([{"functionCall": {"name": name, "args": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({}))}}]), Some("STOP"))],
            "usageMetadata": usage(prompt, Some(output.tokens())),
            "modelVersion": prompt.model,
            "responseId": id,
        })),
    }
    objects
}

/// `alt=sse` framing; Google ends events with CRLF pairs.
pub fn sse_events(prompt: &Prompt) -> Vec<Bytes> {
    stream_objects(prompt)
        .into_iter()
        .map(|object| Bytes::from(format!("data: {object}\r\n\r\n")))
        .collect()
}

/// The framing without `alt=sse`: one JSON array, streamed element by element.
pub fn array_chunks(prompt: &Prompt) -> Vec<Bytes> {
    let objects = stream_objects(prompt);
    let count = objects.len();
    objects
        .into_iter()
        .enumerate()
        .map(|(index, object)| {
            let open = if index == 0 { "[" } else { ",\r\n" };
            let close = if index + 1 == count { "]" } else { "" };
            Bytes::from(format!("{open}{object}{close}"))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedBody {
    content: Option<Content>,
    #[serde(default)]
    output_dimensionality: Option<usize>,
}

#[derive(Deserialize)]
struct BatchBody {
    requests: Option<Vec<EmbedBody>>,
}

/// `text-embedding-004` and `gemini-embedding-001` both default to 768 values here.
const DIMENSIONS: usize = 768;

fn vector(body: &EmbedBody) -> Result<Value, Error> {
    let content = body.content.as_ref().ok_or_else(|| {
        Error::invalid("* EmbedContentRequest.content: content is not specified\n")
    })?;
    let text = text_of(&content.parts).0;
    if text.is_empty() {
        return Err(Error::invalid(
            "* EmbedContentRequest.content.parts: contents.parts must not be empty.\n",
        ));
    }
    Ok(
        json!({"values": sim::embedding(text.as_bytes(), body.output_dimensionality.unwrap_or(DIMENSIONS).clamp(1, 3072))}),
    )
}

/// `embedContent`.
pub fn embed(body: &[u8]) -> Result<Vec<u8>, Error> {
    let body: EmbedBody = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("Invalid JSON payload received. {e}")))?;
    Ok(serde_json::to_vec(&json!({"embedding": vector(&body)?})).unwrap_or_default())
}

/// `batchEmbedContents`.
pub fn batch_embed(body: &[u8]) -> Result<Vec<u8>, Error> {
    let body: BatchBody = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("Invalid JSON payload received. {e}")))?;
    let requests = body.requests.ok_or_else(|| {
        Error::invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    })?;
    let vectors = requests
        .iter()
        .map(vector)
        .collect::<Result<Vec<Value>, Error>>()?;
    Ok(serde_json::to_vec(&json!({"embeddings": vectors})).unwrap_or_default())
}
