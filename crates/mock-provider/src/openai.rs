//! The OpenAI wire format as the real API speaks it: request parsing with OpenAI's error
//! bodies, `chat.completion` JSON, `chat.completion.chunk` SSE events ending in
//! `data: [DONE]`, `stream_options.include_usage`, and embeddings (float or base64).
//!
//! These functions only build bytes; pacing and the HTTP server live in `server`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::sim;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid_request(
        message: impl Into<String>,
        param: Option<&str>,
        code: Option<&'static str>,
    ) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            status: 404,
            message: format!("The model `{model}` does not exist or you do not have access to it."),
            kind: "invalid_request_error",
            param: None,
            code: Some("model_not_found"),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        serde_json::to_vec(&Outer {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .unwrap_or_default()
    }
}

/// What the simulator needs from a chat request.
#[derive(Debug, Clone)]
pub struct ChatParams {
    pub model: String,
    pub tools: Vec<sim::ToolSpec>,
    pub tool_mode: sim::ToolMode,
    pub last_is_tool_result: bool,
    /// The schema to answer in, when JSON output was asked for.
    pub json_schema: Option<serde_json::Value>,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<u32>,
    pub choices: u32,
    pub prompt_tokens: u32,
    pub seed: u64,
}

#[derive(Deserialize)]
struct ChatBody {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    #[serde(default)]
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    n: Option<u32>,
    seed: Option<i64>,
    #[serde(default)]
    tools: Vec<WireTool>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireTool {
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

fn json_error(error: serde_json::Error) -> ApiError {
    ApiError::invalid_request(
        format!("We could not parse the JSON body of your request. ({error})"),
        None,
        None,
    )
}

pub fn parse_chat(body: &[u8]) -> Result<ChatParams, ApiError> {
    let chat: ChatBody = serde_json::from_slice(body).map_err(json_error)?;
    let model = chat.model.ok_or_else(|| {
        ApiError::invalid_request("you must provide a model parameter", None, None)
    })?;
    let messages = chat.messages.ok_or_else(|| {
        ApiError::invalid_request(
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        )
    })?;
    if messages.is_empty() {
        return Err(ApiError::invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        ));
    }
    let mut texts: Vec<String> = Vec::with_capacity(messages.len());
    let mut seed_input = Vec::new();
    for message in &messages {
        let text = match &message.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        };
        seed_input.extend_from_slice(message.role.as_bytes());
        seed_input.push(0);
        seed_input.extend_from_slice(text.as_bytes());
        seed_input.push(0);
        texts.push(text);
    }
    if let Some(seed) = chat.seed {
        seed_input.extend_from_slice(&seed.to_le_bytes());
    }
    let choices = chat.n.unwrap_or(1);
    if !(1..=128).contains(&choices) {
        return Err(ApiError::invalid_request(
            format!(
                "Invalid 'n': integer above maximum value. Expected a value <= 128, but got {choices} instead."
            ),
            Some("n"),
            Some("integer_above_max_value"),
        ));
    }
    let stream = chat.stream.unwrap_or(false);
    let tools: Vec<sim::ToolSpec> = chat
        .tools
        .into_iter()
        .map(|tool| sim::ToolSpec {
            name: tool.function.name,
            schema: tool
                .function
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object"})),
        })
        .collect();
    let tool_mode = match &chat.tool_choice {
        Some(serde_json::Value::String(word)) if word == "none" => sim::ToolMode::None,
        Some(serde_json::Value::String(word)) if word == "required" => sim::ToolMode::Required,
        Some(serde_json::Value::Object(choice)) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or_default();
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid_request(
                    format!(
                        "Invalid value for 'tool_choice': function '{name}' is not among the provided tools."
                    ),
                    Some("tool_choice"),
                    None,
                ));
            }
            sim::ToolMode::Named(name.to_owned())
        }
        _ => sim::ToolMode::Auto,
    };
    let json_schema = chat.response_format.as_ref().and_then(|format| {
        match format.get("type").and_then(|t| t.as_str()) {
            Some("json_object") => Some(serde_json::json!({"type": "object"})),
            Some("json_schema") => Some(
                format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            ),
            _ => None,
        }
    });
    Ok(ChatParams {
        model,
        tools,
        tool_mode,
        last_is_tool_result: messages.last().is_some_and(|m| m.role == "tool"),
        json_schema,
        stream,
        include_usage: stream && chat.stream_options.is_some_and(|o| o.include_usage),
        max_tokens: chat.max_completion_tokens.or(chat.max_tokens),
        choices,
        prompt_tokens: sim::chat_prompt_tokens(texts.iter().map(String::as_str)),
        seed: sim::seed_of(&seed_input),
    })
}

/// A generated chat answer: one reply per requested choice, ids and timestamps fixed.
pub struct ChatAnswer {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub replies: Vec<sim::Output>,
    pub prompt_tokens: u32,
    pub include_usage: bool,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A process-wide counter that keeps generated ids unique.
pub fn next_counter() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ChatAnswer {
    pub fn generate(params: &ChatParams) -> Self {
        let counter = next_counter();
        let replies = (0..params.choices)
            .map(|choice| {
                sim::decide(
                    params.seed.wrapping_add(u64::from(choice)),
                    params.max_tokens,
                    &params.tools,
                    &params.tool_mode,
                    params.last_is_tool_result,
                    params.json_schema.as_ref(),
                )
            })
            .collect();
        ChatAnswer {
            id: format!("chatcmpl-{:016x}{:012x}", params.seed, counter),
            created: unix_now(),
            model: params.model.clone(),
            replies,
            prompt_tokens: params.prompt_tokens,
            include_usage: params.include_usage,
        }
    }

    pub fn completion_tokens(&self) -> u32 {
        self.replies.iter().map(sim::Output::tokens).sum()
    }

    fn usage(&self) -> Usage {
        let completion = self.completion_tokens();
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: completion,
            total_tokens: self.prompt_tokens + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }

    /// The non-streaming `chat.completion` body.
    pub fn json(&self) -> Vec<u8> {
        let choices: Vec<Choice<'_>> = self
            .replies
            .iter()
            .enumerate()
            .map(|(index, output)| match output {
                sim::Output::Text(reply) => Choice {
                    index: index as u32,
                    message: AssistantMessage {
                        role: "assistant",
                        content: Some(reply.text()),
                        refusal: None,
                        tool_calls: None,
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: reply.finish_reason.as_str(),
                },
                sim::Output::Call {
                    name, arguments, ..
                } => Choice {
                    index: index as u32,
                    message: AssistantMessage {
                        role: "assistant",
                        content: None,
                        refusal: None,
                        tool_calls: Some(vec![ToolCallOut {
                            id: output.call_id("call_"),
                            kind: "function",
                            function: FunctionOut {
                                name: name.clone(),
                                arguments: arguments.clone(),
                            },
                        }]),
                        annotations: [],
                    },
                    logprobs: None,
                    finish_reason: "tool_calls",
                },
            })
            .collect();
        serde_json::to_vec(&Completion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: &self.model,
            choices,
            usage: self.usage(),
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
        })
        .unwrap_or_default()
    }

    /// Every SSE event of the streamed answer, in order, each a complete `data: ...\n\n`
    /// frame; the last is `data: [DONE]`.
    pub fn events(&self) -> Vec<Bytes> {
        self.steps()
            .into_iter()
            .map(|step| self.render(step))
            .collect()
    }

    /// The same events, each rendered only when it is taken: a stream paced over seconds
    /// holds its answer, not every frame of it.
    pub fn into_events(self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let steps = self.steps();
        steps.into_iter().map(move |step| self.render(step))
    }

    fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for (index, output) in self.replies.iter().enumerate() {
            match output {
                sim::Output::Text(reply) => {
                    steps.push(Step::Role(index));
                    steps.extend((0..reply.pieces.len()).map(|piece| Step::Text(index, piece)));
                    steps.push(Step::Finish(index));
                }
                sim::Output::Call { .. } => {
                    steps.push(Step::CallStart(index));
                    steps.extend(
                        (0..output.pieces().len()).map(|piece| Step::CallPiece(index, piece)),
                    );
                    steps.push(Step::CallEnd(index));
                }
            }
        }
        if self.include_usage {
            steps.push(Step::Usage);
        }
        steps.push(Step::Done);
        steps
    }

    fn render(&self, step: Step) -> Bytes {
        // Steps come from `steps()` over the same replies, so every index is there.
        let text = |index: usize| match self.replies.get(index) {
            Some(sim::Output::Text(text)) => Some(text),
            _ => None,
        };
        match step {
            Step::Role(index) => self.chunk(index as u32, Delta::role(), None),
            Step::Text(index, piece) => match text(index).and_then(|t| t.pieces.get(piece)) {
                Some(piece) => self.chunk(index as u32, Delta::content(piece), None),
                None => Bytes::new(),
            },
            Step::Finish(index) => match text(index) {
                Some(text) => self.chunk(
                    index as u32,
                    Delta::empty(),
                    Some(text.finish_reason.as_str()),
                ),
                None => Bytes::new(),
            },
            Step::CallStart(index) => {
                let Some(output @ sim::Output::Call { name, .. }) = self.replies.get(index) else {
                    return Bytes::new();
                };
                let id = output.call_id("call_");
                let mut first = Delta::empty();
                first.role = Some("assistant");
                first.content = Some(None);
                first.refusal = Some(None);
                first.tool_calls = Some(vec![ToolCallDelta {
                    index: 0,
                    id: Some(&id),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }]);
                self.chunk(index as u32, first, None)
            }
            Step::CallPiece(index, piece) => {
                let pieces = self
                    .replies
                    .get(index)
                    .map(|o| o.pieces())
                    .unwrap_or_default();
                let mut delta = Delta::empty();
                delta.tool_calls = Some(vec![ToolCallDelta {
                    index: 0,
                    id: None,
                    kind: None,
                    function: FunctionDelta {
                        name: None,
                        arguments: pieces.get(piece).map_or("", String::as_str),
                    },
                }]);
                self.chunk(index as u32, delta, None)
            }
            Step::CallEnd(index) => self.chunk(index as u32, Delta::empty(), Some("tool_calls")),
            Step::Usage => sse_frame(&Chunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                service_tier: "default",
                system_fingerprint: FINGERPRINT,
                choices: Vec::new(),
                usage: Some(Some(self.usage())),
            }),
            Step::Done => Bytes::from_static(b"data: [DONE]\n\n"),
        }
    }

    fn chunk(&self, index: u32, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        let chunk = Chunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            service_tier: "default",
            system_fingerprint: FINGERPRINT,
            choices: vec![ChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason,
            }],
            // OpenAI sends `"usage": null` on every chunk only when usage was asked for.
            usage: if self.include_usage { Some(None) } else { None },
        };
        sse_frame(&chunk)
    }
}

const FINGERPRINT: &str = "fp_a7a1a7a1a7";

/// One event of a streamed answer, by position: what `render` turns into a frame.
#[derive(Debug, Clone, Copy)]
enum Step {
    Role(usize),
    Text(usize, usize),
    Finish(usize),
    CallStart(usize),
    CallPiece(usize, usize),
    CallEnd(usize),
    Usage,
    Done,
}

fn sse_frame<T: Serialize>(value: &T) -> Bytes {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut frame, value).is_err() {
        frame.truncate(6);
        frame.extend_from_slice(b"{}");
    }
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage {
    role: &'static str,
    content: Option<String>,
    refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut>>,
    annotations: [(); 0],
}

#[derive(Serialize)]
struct ToolCallOut {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut,
}

#[derive(Serialize)]
struct FunctionOut {
    name: String,
    arguments: String,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u32,
    audio_tokens: u32,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u32,
    audio_tokens: u32,
    accepted_prediction_tokens: u32,
    rejected_prediction_tokens: u32,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

impl<'a> Delta<'a> {
    fn empty() -> Self {
        Delta {
            role: None,
            content: None,
            refusal: None,
            tool_calls: None,
        }
    }

    fn role() -> Self {
        Delta {
            role: Some("assistant"),
            content: Some(Some("")),
            refusal: Some(None),
            tool_calls: None,
        }
    }

    fn content(text: &'a str) -> Self {
        Delta {
            content: Some(Some(text)),
            ..Delta::empty()
        }
    }
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// What the simulator needs from an embeddings request.
#[derive(Debug, Clone)]
pub struct EmbeddingParams {
    pub model: String,
    pub inputs: Vec<Vec<u8>>,
    pub prompt_tokens: u32,
    pub dimensions: Option<usize>,
    pub base64: bool,
}

#[derive(Deserialize)]
struct EmbeddingBody {
    model: Option<String>,
    input: Option<Input>,
    dimensions: Option<usize>,
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    ManyTokens(Vec<Vec<u32>>),
}

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingParams, ApiError> {
    let request: EmbeddingBody = serde_json::from_slice(body).map_err(json_error)?;
    let model = request.model.ok_or_else(|| {
        ApiError::invalid_request("you must provide a model parameter", None, None)
    })?;
    let input = request.input.ok_or_else(|| {
        ApiError::invalid_request(
            "Missing required parameter: 'input'.",
            Some("input"),
            Some("missing_required_parameter"),
        )
    })?;
    let (inputs, prompt_tokens): (Vec<Vec<u8>>, u32) = match input {
        Input::One(text) => {
            let tokens = sim::estimate_tokens(&text);
            (vec![text.into_bytes()], tokens)
        }
        Input::Many(texts) => {
            let tokens = texts.iter().map(|t| sim::estimate_tokens(t)).sum();
            (texts.into_iter().map(String::into_bytes).collect(), tokens)
        }
        Input::Tokens(tokens) => {
            let count = tokens.len() as u32;
            (
                vec![tokens.iter().flat_map(|t| t.to_le_bytes()).collect()],
                count,
            )
        }
        Input::ManyTokens(lists) => {
            let count = lists.iter().map(|l| l.len() as u32).sum();
            (
                lists
                    .iter()
                    .map(|l| l.iter().flat_map(|t| t.to_le_bytes()).collect())
                    .collect(),
                count,
            )
        }
    };
    if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
        return Err(ApiError::invalid_request(
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            Some("input"),
            None,
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_request(
                format!("Invalid value: '{other}'. Supported values are: 'float' and 'base64'."),
                Some("encoding_format"),
                Some("invalid_value"),
            ));
        }
    };
    Ok(EmbeddingParams {
        model,
        inputs,
        prompt_tokens,
        dimensions: request.dimensions,
        base64,
    })
}

/// The embeddings list body; `native_dimensions` is the model's full size, which
/// `dimensions` may shorten but never exceed.
pub fn embeddings_json(
    params: &EmbeddingParams,
    native_dimensions: usize,
) -> Result<Vec<u8>, ApiError> {
    let dimensions = match params.dimensions {
        None => native_dimensions,
        Some(d) if d >= 1 && d <= native_dimensions => d,
        Some(d) => {
            return Err(ApiError::invalid_request(
                format!(
                    "This model does not support specifying dimensions of {d}; use 1 to {native_dimensions}."
                ),
                Some("dimensions"),
                None,
            ));
        }
    };
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Vector {
        Float(Vec<f32>),
        Base64(String),
    }
    #[derive(Serialize)]
    struct Item {
        object: &'static str,
        index: usize,
        embedding: Vector,
    }
    #[derive(Serialize)]
    struct EmbeddingUsage {
        prompt_tokens: u32,
        total_tokens: u32,
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item>,
        model: &'a str,
        usage: EmbeddingUsage,
    }
    let data = params
        .inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = sim::embedding(input, dimensions);
            let embedding = if params.base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(vector)
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(serde_json::to_vec(&List {
        object: "list",
        data,
        model: &params.model,
        usage: EmbeddingUsage {
            prompt_tokens: params.prompt_tokens,
            total_tokens: params.prompt_tokens,
        },
    })
    .unwrap_or_default())
}

#[cfg(test)]
mod tests;
