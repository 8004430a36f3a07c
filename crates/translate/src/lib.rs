//! Wire formats of the provider APIs atalaya speaks, and the canonical chat types they
//! translate through: OpenAI chat completions, Anthropic Messages, Google Gemini
//! `generateContent`, Cohere v2 chat and AWS Bedrock Converse — requests, responses, streamed
//! events and error bodies — plus the framing they ride on (SSE, AWS event streams) and AWS
//! Signature Version 4.
//!
//! Everything here is a pure function of bytes: no I/O, no clocks except where a format
//! stamps one, no knowledge of routing or keys. The gateway decides *when* to translate; this
//! crate only knows *how*. Decoders accept what the real APIs send (and ignore fields they do
//! not need); encoders write what the real APIs accept and refuse, with
//! [`TranslateError::Unsupported`], anything the target format cannot carry.

pub mod anthropic;
pub mod bedrock;
pub mod chat;
pub mod cohere;
pub mod eventstream;
pub mod gemini;
pub mod openai;
pub mod sigv4;
pub mod sse;
mod wire;

pub use wire::RawObject;

use serde_json::{Value, json};

pub use chat::{
    ChatRequest, ChatResponse, Choice, Delta, FinishReason, Image, ImageSource, Message, Part,
    Reasoning, ResponseFormat, Role, Tool, ToolCall, ToolChoice, Usage,
};

/// Why a translation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is malformed for its own format.
    #[error("{message}")]
    Invalid {
        /// A stable snake_case code: `invalid_json`, `invalid_type`,
        /// `missing_required_parameter` or `invalid_value`.
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// The request uses something the target format cannot carry.
    #[error(
        "`{feature}` cannot be sent to provider `{provider}` ({format} API): {reason} Remove it, or send `x-atalaya-drop-params: true` to drop what a provider cannot take."
    )]
    Unsupported {
        feature: String,
        provider: String,
        format: &'static str,
        reason: String,
    },
    /// The provider's answer is not what its format promises.
    #[error("the provider's answer could not be read: {0}")]
    Upstream(String),
}

impl TranslateError {
    pub fn invalid(param: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        TranslateError::coded("invalid_value", param, message)
    }

    pub fn coded(
        code: &'static str,
        param: impl Into<Option<String>>,
        message: impl Into<String>,
    ) -> Self {
        TranslateError::Invalid {
            code,
            message: message.into(),
            param: param.into(),
        }
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        TranslateError::Upstream(message.into())
    }

    /// The request field the error is about, if any.
    pub fn param(&self) -> Option<&str> {
        match self {
            TranslateError::Invalid { param, .. } => param.as_deref(),
            TranslateError::Unsupported { feature, .. } => Some(feature),
            TranslateError::Upstream(_) => None,
        }
    }
}

/// How an encoder treats what its format cannot carry.
#[derive(Debug, Clone)]
pub struct Target {
    /// The configured provider's name, for error messages.
    pub provider: String,
    /// Drop what cannot be carried instead of refusing the request.
    pub drop_unsupported: bool,
}

impl Target {
    pub fn new(provider: impl Into<String>) -> Self {
        Target {
            provider: provider.into(),
            drop_unsupported: false,
        }
    }

    /// `Ok(false)` when the feature should be silently dropped, an error when it must not be.
    pub(crate) fn refuse(
        &self,
        format: &'static str,
        feature: &str,
        reason: &str,
    ) -> Result<bool, TranslateError> {
        if self.drop_unsupported {
            return Ok(false);
        }
        Err(TranslateError::Unsupported {
            feature: feature.to_owned(),
            provider: self.provider.clone(),
            format,
            reason: reason.to_owned(),
        })
    }
}

/// A streamed error reported by the provider inside its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamError {
    /// The provider's error type (`overloaded_error`, `ThrottlingException`, ...).
    pub kind: String,
    pub message: String,
}

/// What a stream decoder makes of one event.
pub type Decoded = Result<Vec<Delta>, StreamFailure>;

#[derive(Debug, Clone, PartialEq)]
pub enum StreamFailure {
    /// The provider sent an error event.
    Provider(StreamError),
    /// An event could not be read.
    Malformed(String),
}

impl std::fmt::Display for StreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamFailure::Provider(error) => {
                write!(f, "the provider reported {}: {}", error.kind, error.message)
            }
            StreamFailure::Malformed(detail) => write!(f, "malformed stream event: {detail}"),
        }
    }
}

/// Refuses (or drops) the canonical fields a format has no place for.
pub(crate) fn refuse_unsupported(
    request: &ChatRequest,
    target: &Target,
    format: &'static str,
    fields: &[&str],
) -> Result<(), TranslateError> {
    for name in fields {
        let present = match *name {
            "n" => request.n.is_some_and(|n| n > 1),
            "seed" => request.seed.is_some(),
            "presence_penalty" => request.presence_penalty.is_some_and(|v| v != 0.0),
            "frequency_penalty" => request.frequency_penalty.is_some_and(|v| v != 0.0),
            "top_k" => request.top_k.is_some(),
            "reasoning" => request.reasoning.is_some(),
            _ => false,
        };
        if present {
            target.refuse(format, name, "the provider's format has no equivalent.")?;
        }
    }
    Ok(())
}

/// The input schema and description of the JSON-output tool, for formats that emulate JSON
/// mode with a forced tool call.
pub(crate) fn json_tool_schema(
    format: &ResponseFormat,
    target: &Target,
    format_name: &'static str,
) -> Result<Option<(Value, String)>, TranslateError> {
    match format {
        ResponseFormat::Text => Ok(None),
        ResponseFormat::JsonObject => Ok(Some((
            json!({"type": "object"}),
            "Respond with a JSON object.".to_owned(),
        ))),
        ResponseFormat::JsonSchema {
            schema,
            description,
            name,
            ..
        } => {
            if schema
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "object")
            {
                target.refuse(
                    format_name,
                    "response_format.json_schema.schema",
                    "structured output is emulated with a tool call here, and tool inputs must be objects.",
                )?;
                return Ok(None);
            }
            Ok(Some((
                schema.clone(),
                description
                    .clone()
                    .unwrap_or_else(|| format!("Respond with the `{name}` JSON object.")),
            )))
        }
    }
}

/// Refuses (or drops) request fields kept raw from another format.
pub(crate) fn refuse_extra(
    request: &ChatRequest,
    target: &Target,
    format: &'static str,
) -> Result<(), TranslateError> {
    for (name, _) in &request.extra {
        if openai::IGNORABLE_FIELDS.contains(&name.as_str()) {
            continue;
        }
        target.refuse(format, name, "the provider's format has no such field.")?;
    }
    Ok(())
}

/// Unix seconds now, for formats that stamp a creation time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The name of the tool used to emulate JSON output on formats without a JSON mode
/// (Anthropic, Bedrock): the model is forced to call it and its input becomes the answer.
pub const JSON_TOOL: &str = "json_response";
