//! Small JSON helpers shared by the decoders: top-level objects as raw fields, typed field
//! reads with errors that name the field.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::TranslateError;

/// A JSON object's fields in order, values left unparsed; names borrow from the body unless
/// they hold escapes.
pub struct RawObject<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(name)) = map.next_key::<Name<'a>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((name, value));
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A field name, borrowed when the JSON text allows.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Name<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }
            fn visit_string<E>(self, name: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

pub(crate) fn parse_object(body: &[u8]) -> Result<RawObject<'_>, TranslateError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(TranslateError::coded(
            "invalid_json",
            None,
            "The request body is empty; send a JSON object.",
        ));
    }
    serde_json::from_slice::<RawObject<'_>>(body).map_err(|error| {
        TranslateError::coded(
            "invalid_json",
            None,
            format!("The request body is not valid JSON ({error}); send a JSON object with Content-Type: application/json."),
        )
    })
}

/// The JSON kind of a raw value, from its first byte.
/// The value of `key` in the top-level JSON object `body`: the bytes from the value on (where
/// it ends is left to the parser that reads it). Found by skipping strings and counting
/// brackets, without parsing any other value: reading an answer's `usage` through serde,
/// even skipping every other field, lexed the whole answer (3.3 % of the gateway's CPU in
/// `perf` at chat.json c=32). Only a key directly in the top-level object counts (a `usage`
/// nested elsewhere, as in Groq's `x_groq`, does not). `None` if there is no such key or the
/// body ends inside a string.
pub(crate) fn top_level_field<'a>(body: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        match byte {
            b'"' => {
                let end = string_end(body, at + 1)?;
                // A string followed by `:` is a key; values never are.
                if depth == 1 && &body[at + 1..end] == key.as_bytes() {
                    let after = &body[end + 1..];
                    let colon = after.iter().position(|b| !b.is_ascii_whitespace())?;
                    if after[colon] == b':' {
                        return Some(&after[colon + 1..]);
                    }
                }
                at = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            _ => at += 1,
        }
    }
    None
}

/// Where the string whose contents start at `at` ends: its closing quote.
fn string_end(body: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let found = at + memchr::memchr2(b'"', b'\\', body.get(at..)?)?;
        if body[found] == b'"' {
            return Some(found);
        }
        // A backslash: the character after it is part of the string, whatever it is.
        at = found + 2;
    }
}

/// A cursor over JSON text for reading a few known fields without building anything: each
/// step either moves past what it read or says it cannot (`None`/`false`), and the caller
/// then falls back to serde, which decides what the text means.
pub(crate) struct Scan<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(text: &'a [u8]) -> Scan<'a> {
        Scan { text, at: 0 }
    }

    fn space(&mut self) {
        while matches!(self.text.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Moves past `byte` (after any whitespace) if it is next.
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        self.space();
        let next = self.text.get(self.at) == Some(&byte);
        self.at += usize::from(next);
        next
    }

    /// Moves past `null` if it is next.
    pub(crate) fn null(&mut self) -> bool {
        self.space();
        let next = self.text[self.at.min(self.text.len())..].starts_with(b"null");
        self.at += if next { 4 } else { 0 };
        next
    }

    /// A string without escapes, its contents; `None` for anything else.
    pub(crate) fn plain_string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let end = self.at + memchr::memchr2(b'"', b'\\', self.text.get(self.at..)?)?;
        if self.text[end] != b'"' {
            return None;
        }
        let contents = &self.text[self.at..end];
        self.at = end + 1;
        Some(contents)
    }

    /// A non-negative integer as JSON writes one (no sign, fraction, exponent or leading
    /// zero) that fits a `u64`; `None` for anything else.
    pub(crate) fn integer(&mut self) -> Option<u64> {
        self.space();
        let rest = self.text.get(self.at..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0
            || (digits > 1 && rest[0] == b'0')
            || matches!(rest.get(digits), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let value = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        self.at += digits;
        Some(value)
    }

    /// Moves past one value of any kind. Strings and nesting are followed exactly; numbers
    /// and literals are taken up to the next delimiter, unchecked.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        self.space();
        match *self.text.get(self.at)? {
            b'"' => self.at = string_end(self.text, self.at + 1)? + 1,
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match *self.text.get(self.at)? {
                        b'"' => self.at = string_end(self.text, self.at + 1)?,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                let start = self.at;
                while !matches!(
                    self.text.get(self.at),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.at += 1;
                }
                if self.at == start {
                    return None;
                }
            }
        }
        Some(())
    }
}

pub(crate) fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

pub(crate) fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// Reads `raw` as `T`, or says which field was wrong and what it should have been.
pub(crate) fn field<T: DeserializeOwned>(
    raw: &RawValue,
    name: &str,
    expected: &str,
) -> Result<T, TranslateError> {
    serde_json::from_str(raw.get()).map_err(|error| {
        let detail = error.to_string();
        let detail = detail.split(" at line").next().unwrap_or(&detail);
        TranslateError::coded(
            "invalid_type",
            Some(name.to_owned()),
            format!(
                "Invalid '{name}': expected {expected}, but got {} ({detail}).",
                kind(raw)
            ),
        )
    })
}

/// Same as [`field`] for a parsed value.
pub(crate) fn value_field<T: DeserializeOwned>(
    value: &Value,
    name: &str,
    expected: &str,
) -> Result<T, TranslateError> {
    T::deserialize(value).map_err(|error| {
        TranslateError::invalid(
            Some(name.to_owned()),
            format!("Invalid '{name}': expected {expected} ({error})."),
        )
    })
}

pub(crate) fn missing(name: &str) -> TranslateError {
    TranslateError::coded(
        "missing_required_parameter",
        Some(name.to_owned()),
        format!("Missing required parameter: '{name}'."),
    )
}

/// Parses tool-call arguments for formats that carry them as objects.
pub(crate) fn arguments_object(arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(format!("expected a JSON object, got {other}")),
        Err(error) => Err(error.to_string()),
    }
}

/// A tool call's arguments as the JSON object formats other than OpenAI's carry.
pub(crate) fn call_arguments(
    call: &crate::ToolCall,
    param: &str,
    format: &str,
) -> Result<Value, TranslateError> {
    arguments_object(&call.arguments).map_err(|error| {
        TranslateError::invalid(
            Some(format!("{param}.tool_calls")),
            format!(
                "The arguments of tool call `{}` are not a JSON object ({error}); {format} needs one.",
                call.id
            ),
        )
    })
}

/// Appends a turn to a conversation, merging it into the last one when the role repeats
/// (formats that want strictly alternating turns, and tool results in one turn).
pub(crate) fn push_turn(
    turns: &mut Vec<Value>,
    role: &str,
    content_key: &str,
    mut items: Vec<Value>,
) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut()
        && last["role"] == role
        && let Some(existing) = last[content_key].as_array_mut()
    {
        existing.append(&mut items);
        return;
    }
    let mut turn = serde_json::Map::new();
    turn.insert("role".into(), Value::String(role.to_owned()));
    turn.insert(content_key.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// Writes a JSON value to text; serialising a `Value` cannot fail.
pub(crate) fn to_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn to_vec<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Appends `value` as JSON; serialising plain data into a `Vec` cannot fail.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// An SSE frame `data: <json>\n\n`, optionally with an `event:` line.
pub(crate) fn sse_frame<T: serde::Serialize>(out: &mut Vec<u8>, event: Option<&str>, value: &T) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_top_level_field_is_found_and_nothing_else_is() {
        use super::top_level_field;
        let find = |body: &str| {
            top_level_field(body.as_bytes(), "usage")
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(
            find(r#"{"id":"x","usage":{"a":1}}"#).as_deref(),
            Some(r#"{"a":1}}"#)
        );
        assert_eq!(
            find(r#"{ "usage" : 7 , "b": 2}"#).as_deref(),
            Some(" 7 , \"b\": 2}")
        );
        // Nested, inside strings, or as a value: not the field.
        assert_eq!(
            find(r#"{"x_groq":{"usage":{"a":9}},"usage":{"a":1}}"#).as_deref(),
            Some(r#"{"a":1}}"#)
        );
        assert_eq!(find(r#"{"x_groq":{"usage":{"a":9}}}"#), None);
        assert_eq!(find(r#"{"text":"say \"usage\": 3","n":1}"#), None);
        assert_eq!(
            find(r#"{"text":"ends with a backslash \\","usage":2}"#).as_deref(),
            Some("2}")
        );
        assert_eq!(find(r#"{"a":"usage","b":["usage"]}"#), None);
        assert_eq!(find(r#"[{"usage":1}]"#), None);
        assert_eq!(find(r#"{"usage"#), None);
        assert_eq!(find(r#"{"text":"unterminated"#), None);
        assert_eq!(find(""), None);
    }
}
