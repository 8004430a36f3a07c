//! The canonical chat types every wire format translates through.
//!
//! They are a superset of what OpenAI, Anthropic, Gemini, Cohere and Bedrock can express for
//! a chat turn: each decoder fills what its format says, each encoder writes what its format
//! can carry and reports, as an [`Unsupported`](crate::TranslateError::Unsupported) error,
//! anything it would otherwise have to drop.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of one tool call (`tool_call_id` says which).
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// An `http(s)://` URL.
    Url(String),
    /// Raw bytes, base64-encoded, with their media type (`image/png`, ...).
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub source: ImageSource,
    /// OpenAI's `detail` (`low`, `high`, `auto`); other formats have no such knob.
    pub detail: Option<String>,
}

impl Image {
    /// Parses an OpenAI `image_url.url`: a `data:` URL becomes base64 bytes, anything else a URL.
    pub fn from_url(url: &str, detail: Option<String>) -> Image {
        let source = match url
            .strip_prefix("data:")
            .and_then(|rest| rest.split_once(";base64,"))
        {
            Some((media_type, data)) => ImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            },
            None => ImageSource::Url(url.to_owned()),
        };
        Image { source, detail }
    }

    /// The OpenAI form: the URL itself, or a `data:` URL.
    pub fn to_url(&self) -> String {
        match &self.source {
            ImageSource::Url(url) => url.clone(),
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A reasoning model's visible thinking; `signature` lets Anthropic verify it when sent back.
    Thinking {
        text: String,
        signature: Option<String>,
    },
    /// Anthropic's encrypted thinking, opaque to everyone else.
    RedactedThinking(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the model produced them.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Assistant messages: the tools the model asked to call.
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call this is the result of.
    pub tool_call_id: Option<String>,
    /// Tool messages: the result is an error (Anthropic's `is_error`, Bedrock's `status`).
    pub is_error: bool,
    /// OpenAI's participant `name`.
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: Vec<Part>) -> Message {
        Message {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
            name: None,
        }
    }

    pub fn text(role: Role, text: impl Into<String>) -> Message {
        Message::new(role, vec![Part::Text(text.into())])
    }

    /// The text parts joined, ignoring images and thinking.
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let Part::Text(text) = part {
                out.push_str(text);
            }
        }
        out
    }

    pub fn has_images(&self) -> bool {
        self.content.iter().any(|p| matches!(p, Part::Image(_)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Tool(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        schema: serde_json::Value,
        strict: Option<bool>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reasoning {
    /// OpenAI's `reasoning_effort`: `minimal`, `low`, `medium`, `high`.
    Effort(String),
    /// Anthropic's and Gemini's thinking budget in tokens (0 = off).
    Budget(u32),
}

impl Reasoning {
    /// A budget for formats that take tokens; effort words map to Anthropic's guidance.
    pub fn budget(&self) -> u32 {
        match self {
            Reasoning::Budget(tokens) => *tokens,
            Reasoning::Effort(effort) => match effort.as_str() {
                "minimal" | "none" => 0,
                "low" => 1_024,
                "high" => 16_384,
                _ => 4_096,
            },
        }
    }

    /// An effort word for formats that take one.
    pub fn effort(&self) -> String {
        match self {
            Reasoning::Effort(effort) => effort.clone(),
            Reasoning::Budget(0) => "minimal".to_owned(),
            Reasoning::Budget(tokens) if *tokens <= 2_048 => "low".to_owned(),
            Reasoning::Budget(tokens) if *tokens <= 8_192 => "medium".to_owned(),
            Reasoning::Budget(_) => "high".to_owned(),
        }
    }
}

/// One chat request in canonical form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    /// System prompts are messages with `Role::System`, in order; formats with a separate
    /// system field collect them.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    /// Choices to generate (OpenAI's `n`, Gemini's `candidateCount`).
    pub n: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub user: Option<String>,
    pub reasoning: Option<Reasoning>,
    pub stream: bool,
    /// The client asked for usage on its stream (OpenAI's `stream_options.include_usage`).
    pub stream_usage: bool,
    /// Fields of the source format with no canonical meaning, kept as raw JSON text. An encoder of the same
    /// family writes them back; others report them as unsupported.
    pub extra: Vec<(String, String)>,
    /// The format `extra` came from (its decoder's name); empty for a request built in code.
    pub extra_format: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// Anthropic's `pause_turn` and other formats' reasons with no counterpart.
    Other,
}

impl FinishReason {
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Other => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// Token usage. Counts a provider did not report are estimated and `estimated` is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Input tokens read from the provider's prompt cache (billed at the cached price).
    pub cached_tokens: u64,
    /// Input tokens written to the prompt cache (Anthropic bills these higher).
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub index: u32,
    /// Always `Role::Assistant`.
    pub message: Message,
    pub finish_reason: FinishReason,
    /// Which stop sequence ended the answer, when the provider says.
    pub stop_sequence: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
}

/// One step of a streamed answer, as every decoder produces and every encoder consumes.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The answer began; the first delta of every stream.
    Start {
        id: Option<String>,
        model: Option<String>,
    },
    Text {
        choice: u32,
        text: String,
    },
    Thinking {
        choice: u32,
        text: String,
    },
    ThinkingSignature {
        choice: u32,
        signature: String,
    },
    /// A tool call begins; `index` counts tool calls within the choice from 0.
    ToolCallStart {
        choice: u32,
        index: u32,
        id: String,
        name: String,
    },
    ToolCallArguments {
        choice: u32,
        index: u32,
        fragment: String,
    },
    Finish {
        choice: u32,
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// Usage so far; a later `Usage` replaces an earlier one.
    Usage(Usage),
}
