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
