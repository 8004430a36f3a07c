//! Inbound OpenAI requests: validation with errors that name the field, and rewriting for
//! the upstream without re-serialising the payload.
//!
//! The body is split once into its top-level fields as raw JSON slices. Known fields are
//! type-checked; every field, known or not, is forwarded byte for byte except `model`
//! (replaced by the upstream model) and `stream_options` (usage is always requested so it
//! is never lost).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use atalaya_translate::RawObject;
use atalaya_translate::openai::Quirks;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    fn of(raw: &RawValue) -> Kind {
        match raw.get().as_bytes().first() {
            Some(b'n') => Kind::Null,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'"') => Kind::String,
            Some(b'[') => Kind::Array,
            Some(b'{') => Kind::Object,
            _ => Kind::Number,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// What a known field must be. `null` is accepted for every optional field, as OpenAI does.
#[derive(Clone, Copy)]
enum Expect {
    Bool,
    Number,
    Integer,
    String,
    Array,
    Object,
    StringOrArray,
    StringOrObject,
}

impl Expect {
    fn describe(self) -> &'static str {
        match self {
            Expect::Bool => "a boolean",
            Expect::Number => "a number",
            Expect::Integer => "an integer",
            Expect::String => "a string",
            Expect::Array => "an array",
            Expect::Object => "an object",
            Expect::StringOrArray => "a string or an array",
            Expect::StringOrObject => "a string or an object",
        }
    }

    fn accepts(self, raw: &RawValue) -> bool {
        let kind = Kind::of(raw);
        match self {
            Expect::Bool => kind == Kind::Bool,
            Expect::Number => kind == Kind::Number,
            Expect::Integer => kind == Kind::Number && raw.get().parse::<i64>().is_ok(),
            Expect::String => kind == Kind::String,
            Expect::Array => kind == Kind::Array,
            Expect::Object => kind == Kind::Object,
            Expect::StringOrArray => matches!(kind, Kind::String | Kind::Array),
            Expect::StringOrObject => matches!(kind, Kind::String | Kind::Object),
        }
    }
}

fn chat_field(name: &str) -> Option<Expect> {
    Some(match name {
        "model" | "user" | "reasoning_effort" | "service_tier" => Expect::String,
        "messages" | "tools" | "functions" | "modalities" => Expect::Array,
        "stream" | "logprobs" | "parallel_tool_calls" | "store" => Expect::Bool,
        "temperature" | "top_p" | "presence_penalty" | "frequency_penalty" => Expect::Number,
        "n" | "max_tokens" | "max_completion_tokens" | "seed" | "top_logprobs" => Expect::Integer,
        "stream_options" | "response_format" | "metadata" | "logit_bias" | "audio"
        | "prediction" => Expect::Object,
        "stop" => Expect::StringOrArray,
        "tool_choice" | "function_call" => Expect::StringOrObject,
        _ => return None,
    })
}

fn embedding_field(name: &str) -> Option<Expect> {
    Some(match name {
        "model" | "encoding_format" | "user" => Expect::String,
        "input" => Expect::StringOrArray,
        "dimensions" => Expect::Integer,
        _ => return None,
    })
}

fn wrong_type(field: &str, expect: Expect, raw: &RawValue) -> ApiError {
    ApiError::invalid_request(
        "invalid_type",
        format!(
            "Invalid type for '{field}': expected {}, but got {}.",
            expect.describe(),
            Kind::of(raw).name()
        ),
    )
    .with_param(field)
}

fn missing(field: &str) -> ApiError {
    ApiError::invalid_request(
        "missing_required_parameter",
        format!("Missing required parameter: '{field}'."),
    )
    .with_param(field)
}

fn parse_object(body: &[u8]) -> Result<RawObject<'_>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_request(
            "invalid_json",
            "The request body is empty; send a JSON object such as {\"model\": \"...\", \"messages\": [...]}.",
        ));
    }
    serde_json::from_slice::<RawObject<'_>>(body).map_err(|error| {
        ApiError::invalid_request(
            "invalid_json",
            format!("The request body is not valid JSON ({error}); send a JSON object with Content-Type: application/json."),
        )
    })
}

fn string_value(raw: &RawValue) -> Result<String, serde_json::Error> {
    serde_json::from_str::<String>(raw.get())
}

/// Checks every known field's type, then returns the required string `model`.
fn check_fields(
    fields: &[(Cow<'_, str>, &RawValue)],
    expect_of: fn(&str) -> Option<Expect>,
) -> Result<String, ApiError> {
    let mut model = None;
    for (name, raw) in fields {
        let Some(expect) = expect_of(name) else {
            continue;
        };
        if Kind::of(raw) == Kind::Null && name != "model" {
            continue;
        }
        if !expect.accepts(raw) {
            return Err(wrong_type(name, expect, raw));
        }
        if name == "model" {
            model = Some(string_value(raw).map_err(|_| wrong_type(name, expect, raw))?);
        }
    }
    match model {
        Some(model) if !model.is_empty() => Ok(model),
        Some(_) => Err(
            ApiError::invalid_request("invalid_value", "'model' must not be empty.")
                .with_param("model"),
        ),
        None => Err(missing("model")),
    }
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Whether a raw JSON string is one of `ROLES`: read in place when it holds no escapes.
fn known_role(role: &RawValue) -> Result<bool, ()> {
    let text = role.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(ROLES.contains(&inner)),
        _ => string_value(role)
            .map(|name| ROLES.contains(&name.as_str()))
            .map_err(|_| ()),
    }
}

/// Each message an object with a known `role` and a string, array or null `content`. One
/// pass reads the array as objects; only a request that fails it is read again, element by
/// element, to say which message is wrong.
fn check_messages(raw: &RawValue) -> Result<(), ApiError> {
    let Ok(messages) = serde_json::from_str::<Vec<RawObject<'_>>>(raw.get()) else {
        return Err(bad_message(raw));
    };
    if messages.is_empty() {
        return Err(empty_messages());
    }
    for (index, RawObject(fields)) in messages.iter().enumerate() {
        let role = fields.iter().find(|(name, _)| name == "role");
        let content = fields.iter().find(|(name, _)| name == "content");
        let content_ok = content
            .is_none_or(|(_, c)| matches!(Kind::of(c), Kind::String | Kind::Array | Kind::Null));
        if !(role.is_some_and(|(_, role)| known_role(role) == Ok(true)) && content_ok) {
            return check_message(index, fields);
        }
    }
    Ok(())
}

fn empty_messages() -> ApiError {
    ApiError::invalid_request(
        "empty_array",
        "Invalid 'messages': empty array. Send at least one message, e.g. [{\"role\": \"user\", \"content\": \"Hello\"}].",
    )
    .with_param("messages")
}

/// The error for a `messages` that is not an array of objects, naming the first element
/// that is not one.
fn bad_message(raw: &RawValue) -> ApiError {
    let Ok(messages) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        return wrong_type("messages", Expect::Array, raw);
    };
    for (index, message) in messages.iter().enumerate() {
        let object = (Kind::of(message) == Kind::Object)
            .then(|| serde_json::from_str::<RawObject<'_>>(message.get()).ok())
            .flatten();
        match object {
            None => return wrong_type(&format!("messages[{index}]"), Expect::Object, message),
            Some(RawObject(fields)) => {
                if let Err(error) = check_message(index, &fields) {
                    return error;
                }
            }
        }
    }
    wrong_type("messages", Expect::Array, raw)
}

/// What is wrong with message `index`, whose fields are `fields`.
fn check_message(index: usize, fields: &[(Cow<'_, str>, &RawValue)]) -> Result<(), ApiError> {
    let field = |name: &str| format!("messages[{index}].{name}");
    let role = fields
        .iter()
        .find(|(name, _)| name == "role")
        .map(|(_, raw)| *raw);
    let Some(role) = role else {
        return Err(missing(&field("role")));
    };
    let role_name =
        string_value(role).map_err(|_| wrong_type(&field("role"), Expect::String, role))?;
    if !ROLES.contains(&role_name.as_str()) {
        return Err(ApiError::invalid_request(
            "invalid_value",
            format!(
                "Invalid value for '{}': '{role_name}'. Supported values are: {}.",
                field("role"),
                ROLES.join(", ")
            ),
        )
        .with_param(field("role")));
    }
    if let Some((_, content)) = fields.iter().find(|(name, _)| name == "content")
        && !matches!(Kind::of(content), Kind::String | Kind::Array | Kind::Null)
    {
        return Err(wrong_type(
            &field("content"),
            Expect::StringOrArray,
            content,
        ));
    }
    Ok(())
}

/// A validated chat completion request.
pub(crate) struct ChatRequest<'a> {
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for the usage chunk.
    pub client_wants_usage: bool,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> ChatRequest<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        let RawObject(fields) = parse_object(body)?;
        let model = check_fields(&fields, chat_field)?;
        let messages = fields
            .iter()
            .find(|(name, _)| name == "messages")
            .map(|(_, raw)| *raw);
        match messages {
            Some(raw) if Kind::of(raw) != Kind::Null => check_messages(raw)?,
            _ => return Err(missing("messages")),
        }
        let stream = fields
            .iter()
            .any(|(name, raw)| name == "stream" && raw.get() == "true");
        let client_wants_usage = stream
            && fields
                .iter()
                .find(|(name, _)| name == "stream_options")
                .and_then(|(_, raw)| serde_json::from_str::<StreamOptions>(raw.get()).ok())
                .is_some_and(|options| options.include_usage == Some(true));
        Ok(ChatRequest {
            model,
            stream,
            client_wants_usage,
            fields,
        })
    }

    /// Whether the request has the top-level field `name` (not null).
    pub fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|(field, raw)| field == name && raw.get() != "null")
    }

    /// The output limit asked for, if any.
    pub fn max_tokens(&self) -> Option<u32> {
        self.fields
            .iter()
            .find(|(field, _)| field == "max_completion_tokens" || field == "max_tokens")
            .and_then(|(_, raw)| raw.get().parse().ok())
    }

    /// Whether the raw body can go to an OpenAI-dialect server as it is (with only the
    /// rewrites `upstream_body` makes), rather than through canonical form.
    pub fn passes_through(&self, quirks: &Quirks) -> bool {
        let has = |field: &str| self.fields.iter().any(|(name, _)| name == field);
        quirks.seed_field == "seed"
            && quirks.tool_choice_required == "required"
            && !quirks.nine_char_tool_ids
            && (quirks.tools || !(has("tools") || has("functions")))
            // Without streamed usage, the translating relay counts the tokens itself.
            && (quirks.stream_options || !self.stream)
    }

    /// The body to send upstream: same fields, `model` replaced, usage requested on streams,
    /// the output limit under the name the server knows.
    pub fn upstream_body(&self, upstream_model: &str, quirks: &Quirks) -> Vec<u8> {
        let size: usize = self
            .fields
            .iter()
            .map(|(name, raw)| name.len() + raw.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + upstream_model.len() + 48);
        out.push(b'{');
        let mut saw_stream_options = false;
        let has_max_tokens = self.fields.iter().any(|(name, _)| name == "max_tokens");
        for (name, raw) in &self.fields {
            let key = match name.as_ref() {
                "max_completion_tokens" if quirks.legacy_max_tokens => {
                    if has_max_tokens {
                        continue;
                    }
                    "max_tokens"
                }
                "stream_options" if !quirks.stream_options => continue,
                other => other,
            };
            if out.len() > 1 {
                out.push(b',');
            }
            write_key(&mut out, key);
            match key {
                "model" => write_string(&mut out, upstream_model),
                "stream_options" if self.stream => {
                    saw_stream_options = true;
                    write_stream_options(&mut out, raw);
                }
                _ => out.extend_from_slice(raw.get().as_bytes()),
            }
        }
        if self.stream && quirks.stream_options && !saw_stream_options {
            out.extend_from_slice(br#","stream_options":{"include_usage":true}"#);
        }
        out.push(b'}');
        out
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    write_string(out, key);
    out.push(b':');
}

fn write_string(out: &mut Vec<u8>, value: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn write_stream_options(out: &mut Vec<u8>, raw: &RawValue) {
    let mut options: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw.get()).unwrap_or_default();
    options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    let _ = serde_json::to_writer(&mut *out, &options);
}

/// `body` with its top-level `model` replaced, every other field byte for byte.
pub(crate) fn replace_model(body: &[u8], model: &str) -> Result<Vec<u8>, ApiError> {
    let RawObject(fields) = parse_object(body)?;
    let mut out = Vec::with_capacity(body.len() + model.len());
    out.push(b'{');
    for (name, raw) in &fields {
        if out.len() > 1 {
            out.push(b',');
        }
        write_key(&mut out, name);
        if name == "model" {
            write_string(&mut out, model);
        } else {
            out.extend_from_slice(raw.get().as_bytes());
        }
    }
    out.push(b'}');
    Ok(out)
}

/// A validated embeddings request.
pub(crate) struct EmbeddingRequest<'a> {
    pub model: String,
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> EmbeddingRequest<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, ApiError> {
        let RawObject(fields) = parse_object(body)?;
        let model = check_fields(&fields, embedding_field)?;
        match fields.iter().find(|(name, _)| name == "input") {
            Some((_, raw)) if Kind::of(raw) != Kind::Null => {}
            _ => return Err(missing("input")),
        }
        Ok(EmbeddingRequest { model, fields })
    }

    fn field(&self, name: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, raw)| *raw)
            .filter(|raw| raw.get() != "null")
    }

    /// The inputs as text, for providers that take no token arrays.
    pub fn texts(&self) -> Result<Vec<String>, ApiError> {
        let raw = self.field("input").ok_or_else(|| missing("input"))?;
        let texts = match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::String(text)) => vec![text],
            Ok(serde_json::Value::Array(items)) if items.iter().all(|i| i.is_string()) => items
                .into_iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => {
                return Err(ApiError::invalid_request(
                    "invalid_value",
                    "This provider embeds text only: send 'input' as a string or an array of strings, not token ids.",
                )
                .with_param("input"));
            }
        };
        if texts.is_empty() || texts.iter().any(String::is_empty) {
            return Err(ApiError::invalid_request(
                "invalid_value",
                "'input' must not be empty or contain empty strings.",
            )
            .with_param("input"));
        }
        Ok(texts)
    }

    pub fn dimensions(&self) -> Option<u32> {
        self.field("dimensions")
            .and_then(|raw| raw.get().parse().ok())
    }

    /// `encoding_format: "base64"`.
    pub fn base64(&self) -> bool {
        self.field("encoding_format")
            .is_some_and(|raw| raw.get() == "\"base64\"")
    }

    pub fn upstream_body(&self, upstream_model: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.fields
                .iter()
                .map(|(n, r)| n.len() + r.get().len() + 4)
                .sum::<usize>()
                + 32,
        );
        out.push(b'{');
        for (name, raw) in &self.fields {
            if out.len() > 1 {
                out.push(b',');
            }
            write_key(&mut out, name);
            if name == "model" {
                write_string(&mut out, upstream_model);
            } else {
                out.extend_from_slice(raw.get().as_bytes());
            }
        }
        out.push(b'}');
        out
    }
}

#[cfg(test)]
mod tests;
