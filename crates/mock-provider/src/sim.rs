//! Deterministic text and vector generation shared by the standalone simulator and the
//! gateway's built-in `sim` provider.
//!
//! Everything here is a pure function of its input: the same prompt always yields the same
//! reply, token counts and embedding, so tests can assert on them and benchmarks are repeatable.

/// One generated reply, split into the pieces a streaming upstream would send one per chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub pieces: Vec<String>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

impl Reply {
    pub fn text(&self) -> String {
        self.pieces.concat()
    }

    /// Completion tokens: one per piece, as with real tokenizers where a word with its leading
    /// space is usually one token.
    pub fn tokens(&self) -> u32 {
        u32::try_from(self.pieces.len()).unwrap_or(u32::MAX)
    }
}

const WORDS: &[&str] = &[
    "the",
    "watchtower",
    "sees",
    "every",
    "request",
    "that",
    "passes",
    "through",
    "gateway",
    "model",
    "answer",
    "stream",
    "token",
    "latency",
    "provider",
    "route",
    "healthy",
    "fast",
    "simple",
    "careful",
    "signal",
    "window",
    "river",
    "mountain",
    "light",
    "quiet",
    "steady",
    "clear",
    "path",
    "bridge",
    "harbor",
    "lantern",
    "compass",
    "garden",
    "morning",
    "evening",
    "across",
    "beyond",
    "under",
    "over",
    "with",
    "without",
    "before",
    "after",
    "while",
    "because",
    "data",
    "system",
    "engine",
    "circuit",
    "breaker",
    "retry",
    "budget",
    "key",
    "limit",
    "log",
    "metric",
    "trace",
    "agent",
    "job",
    "queue",
    "bot",
    "flow",
    "message",
    "channel",
    "tenant",
    "is",
    "was",
    "becomes",
    "remains",
    "moves",
    "waits",
    "returns",
    "carries",
    "holds",
    "keeps",
    "a",
    "an",
    "one",
    "two",
    "several",
    "many",
    "few",
    "each",
    "some",
    "this",
    "another",
    "bright",
    "calm",
    "distant",
    "near",
    "open",
    "closed",
    "green",
    "blue",
    "golden",
    "silver",
];

/// FNV-1a: tiny, stable across platforms and releases (unlike `DefaultHasher`).
pub fn seed_of(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64: a fast deterministic sequence from one seed.
pub struct Sequence(u64);

impl Sequence {
    pub fn new(seed: u64) -> Self {
        Sequence(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_unit(&mut self) -> f32 {
        // 24 bits are all an f32 mantissa holds.
        let bits = (self.next_u64() >> 40) as u32;
        (bits as f32 / (1u32 << 23) as f32) - 1.0
    }
}

/// A reply of 12 to 60 tokens chosen by the prompt, cut at `max_tokens` (then it finishes with
/// `length`, as real providers do).
pub fn reply(seed: u64, max_tokens: Option<u32>) -> Reply {
    let mut sequence = Sequence::new(seed);
    let natural = 12 + (sequence.next_u64() % 49) as usize;
    let limit = max_tokens.map(|m| m as usize).unwrap_or(usize::MAX);
    let count = natural.min(limit);
    let mut pieces = Vec::with_capacity(count);
    for index in 0..count {
        let word = WORDS[(sequence.next_u64() % WORDS.len() as u64) as usize];
        let piece = if index == 0 {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        } else if index + 1 == natural {
            format!(" {word}.")
        } else if index % 9 == 8 {
            format!(" {word},")
        } else {
            format!(" {word}")
        };
        pieces.push(piece);
    }
    let finish_reason = if count < natural {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    Reply {
        pieces,
        finish_reason,
    }
}

/// Roughly what a BPE tokenizer gives for English text: one token per four characters, at
/// least one per word-ish run.
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4).max(u32::from(!text.is_empty()))
}

/// Prompt tokens for a chat: OpenAI's published accounting adds 3 tokens of framing per
/// message and 3 to prime the reply.
pub fn chat_prompt_tokens<'a>(message_texts: impl IntoIterator<Item = &'a str>) -> u32 {
    let mut total = 3;
    for text in message_texts {
        total += 3 + estimate_tokens(text);
    }
    total
}

/// A unit-length embedding of `dimensions` values for `input`.
pub fn embedding(input: &[u8], dimensions: usize) -> Vec<f32> {
    let mut sequence = Sequence::new(seed_of(input));
    let mut vector: Vec<f32> = (0..dimensions).map(|_| sequence.next_unit()).collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for value in &mut vector {
            *value /= norm;
        }
    }
    vector
}

#[cfg(test)]
mod tests;

/// A tool the simulated model may call, with the JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub schema: serde_json::Value,
}

/// Whether and which tool the request allows or forces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolMode {
    #[default]
    Auto,
    None,
    Required,
    Named(String),
}

/// What the simulated model does in one turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Text(Reply),
    /// A call of one tool; `arguments` is JSON text matching the tool's schema.
    Call {
        id_seed: u64,
        name: String,
        arguments: String,
    },
}

impl Output {
    /// The pieces a stream sends: words of the text, or slices of the arguments.
    pub fn pieces(&self) -> Vec<String> {
        match self {
            Output::Text(reply) => reply.pieces.clone(),
            Output::Call { arguments, .. } => {
                let chars: Vec<char> = arguments.chars().collect();
                chars.chunks(8).map(|c| c.iter().collect()).collect()
            }
        }
    }

    pub fn tokens(&self) -> u32 {
        match self {
            Output::Text(reply) => reply.tokens(),
            Output::Call {
                name, arguments, ..
            } => estimate_tokens(name) + estimate_tokens(arguments),
        }
    }

    /// The tool call id in a provider's style, e.g. `call_` or `toolu_01`.
    pub fn call_id(&self, prefix: &str) -> String {
        match self {
            Output::Call { id_seed, .. } => format!("{prefix}{id_seed:016x}"),
            Output::Text(_) => String::new(),
        }
    }
}

/// Decides the turn: a tool call when tools are offered and allowed (with `Auto`, only when
/// the conversation does not end with a tool result, so a tool loop ends after one round),
/// JSON matching `json_schema` when JSON output is asked for, text otherwise.
pub fn decide(
    seed: u64,
    max_tokens: Option<u32>,
    tools: &[ToolSpec],
    mode: &ToolMode,
    last_is_tool_result: bool,
    json_schema: Option<&serde_json::Value>,
) -> Output {
    let chosen = match mode {
        ToolMode::None => None,
        ToolMode::Named(name) => tools.iter().find(|t| &t.name == name),
        ToolMode::Required => tools.first(),
        ToolMode::Auto if last_is_tool_result => None,
        ToolMode::Auto => tools.first(),
    };
    if let Some(tool) = chosen {
        let mut sequence = Sequence::new(seed ^ seed_of(tool.name.as_bytes()));
        let arguments = arguments_for(&tool.schema, &mut sequence, 0);
        return Output::Call {
            id_seed: sequence.next_u64(),
            name: tool.name.clone(),
            arguments: serde_json::to_string(&arguments).unwrap_or_else(|_| "{}".to_owned()),
        };
    }
    if let Some(schema) = json_schema {
        let mut sequence = Sequence::new(seed);
        let value = match schema.get("type").and_then(|t| t.as_str()) {
            Some("object") | None if schema.get("properties").is_some() => {
                arguments_for(schema, &mut sequence, 0)
            }
            _ => serde_json::json!({"answer": reply(seed, None).text()}),
        };
        let text = serde_json::to_string(&value).unwrap_or_else(|_| "{}".to_owned());
        let chars: Vec<char> = text.chars().collect();
        return Output::Text(Reply {
            pieces: chars.chunks(6).map(|c| c.iter().collect()).collect(),
            finish_reason: FinishReason::Stop,
        });
    }
    Output::Text(reply(seed, max_tokens))
}

/// A value of the shape `schema` describes: objects get their required properties (all of
/// them when none are listed), enums their first value.
pub fn arguments_for(
    schema: &serde_json::Value,
    sequence: &mut Sequence,
    depth: usize,
) -> serde_json::Value {
    use serde_json::{Value, json};
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("string"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" if depth < 4 => {
            let mut out = serde_json::Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                let required: Vec<&str> = schema
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_else(|| properties.keys().map(String::as_str).collect());
                for (name, property) in properties {
                    if required.contains(&name.as_str()) {
                        out.insert(name.clone(), arguments_for(property, sequence, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
        "object" => json!({}),
        "array" => match schema.get("items") {
            Some(items) if depth < 4 => json!([arguments_for(items, sequence, depth + 1)]),
            _ => json!([]),
        },
        "integer" => json!(sequence.next_u64() % 100),
        "number" => json!((sequence.next_u64() % 10_000) as f64 / 100.0),
        "boolean" => json!(sequence.next_u64().is_multiple_of(2)),
        "null" => Value::Null,
        _ => json!(WORDS[(sequence.next_u64() % WORDS.len() as u64) as usize]),
    }
}

/// A chat request as every simulated format reduces it: enough to decide the turn.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub model: String,
    pub stream: bool,
    pub max_tokens: Option<u32>,
    pub prompt_tokens: u32,
    pub seed: u64,
    pub tools: Vec<ToolSpec>,
    pub tool_mode: ToolMode,
    pub last_is_tool_result: bool,
    pub json_schema: Option<serde_json::Value>,
}

impl Prompt {
    /// Starts a prompt from its messages' (role, text) pairs: the seed and token count are
    /// functions of them, as in every format.
    pub fn from_texts<'a>(
        model: String,
        texts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Prompt {
        let mut seed_input = Vec::new();
        let mut bodies = Vec::new();
        for (role, text) in texts {
            seed_input.extend_from_slice(role.as_bytes());
            seed_input.push(0);
            seed_input.extend_from_slice(text.as_bytes());
            seed_input.push(0);
            bodies.push(text);
        }
        Prompt {
            model,
            prompt_tokens: chat_prompt_tokens(bodies),
            seed: seed_of(&seed_input),
            ..Prompt::default()
        }
    }

    pub fn output(&self) -> Output {
        decide(
            self.seed,
            self.max_tokens,
            &self.tools,
            &self.tool_mode,
            self.last_is_tool_result,
            self.json_schema.as_ref(),
        )
    }
}
