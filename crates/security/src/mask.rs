//! The masking engine: hides secrets in text before it is logged, stored or returned.
//!
//! Two kinds of findings, searched in one pass by one Aho-Corasick automaton:
//! - **known secrets** — every value the platform holds (provider API keys, the admin key...),
//!   matched exactly and replaced by `[REDACTED]`;
//! - **credential formats** — the start of a common token shape (`sk-`, `AKIA`, `ghp_`, `eyJ`,
//!   `-----BEGIN ... PRIVATE KEY-----`, `Bearer `, ...) is found by the automaton and the
//!   token's extent checked by hand, so a secret nobody told us about is hidden too.
//!
//! Clean text (the common case) is scanned once and returned borrowed, without a copy.
//! [`Masking`] is the shared, updatable handle: when secrets change, a new engine replaces the
//! old one for every holder at once.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, RwLock};

use aho_corasick::{AhoCorasick, Input, MatchKind};

/// The automaton could not be built (only past its size limits: millions of secrets).
#[derive(Debug, thiserror::Error)]
#[error("building the masking engine: {0}")]
pub struct MaskError(String);

/// What replaces a known secret.
pub const REDACTED: &str = "[REDACTED]";

/// Known secrets shorter than this are not matched: they would mask ordinary words.
pub const MIN_SECRET_LEN: usize = 8;

/// A credential shape: the literal it starts with and how to find its end.
#[derive(Debug, Clone, Copy)]
struct Detector {
    prefix: &'static str,
    kind: &'static str,
    shape: Shape,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    /// The prefix, then at least `min` bytes of `class` (as many as there are).
    Run { class: Class, min: usize },
    /// The prefix, then exactly `len` bytes of `class`, not followed by another.
    Exact { class: Class, len: usize },
    /// `eyJ...` `.` `...` `.` `...`: a JSON Web Token.
    Jwt,
    /// `-----BEGIN <label> PRIVATE KEY-----` through its `-----END ... PRIVATE KEY-----`.
    Pem,
    /// `Bearer <token>`: the token is masked, the scheme kept.
    Bearer,
}

#[derive(Debug, Clone, Copy)]
enum Class {
    /// Letters and digits.
    Alnum,
    /// Upper-case letters and digits.
    UpperAlnum,
    /// Letters, digits, `-` and `_` (base64url and most API keys).
    Token,
    /// Letters, digits and `-`.
    Dashed,
    /// Letters, digits, `_`.
    Word,
}

impl Class {
    fn contains(self, byte: u8) -> bool {
        match self {
            Class::Alnum => byte.is_ascii_alphanumeric(),
            Class::UpperAlnum => byte.is_ascii_uppercase() || byte.is_ascii_digit(),
            Class::Token => byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_',
            Class::Dashed => byte.is_ascii_alphanumeric() || byte == b'-',
            Class::Word => byte.is_ascii_alphanumeric() || byte == b'_',
        }
    }
}

const DETECTORS: &[Detector] = &[
    // OpenAI (`sk-`, `sk-proj-`), Anthropic (`sk-ant-`), atalaya's own keys (`sk-atl-`) and
    // many OpenAI-compatible providers.
    Detector {
        prefix: "sk-",
        kind: "api-key",
        shape: Shape::Run {
            class: Class::Token,
            min: 20,
        },
    },
    Detector {
        prefix: "AKIA",
        kind: "aws-access-key",
        shape: Shape::Exact {
            class: Class::UpperAlnum,
            len: 16,
        },
    },
    Detector {
        prefix: "ASIA",
        kind: "aws-access-key",
        shape: Shape::Exact {
            class: Class::UpperAlnum,
            len: 16,
        },
    },
    Detector {
        prefix: "ghp_",
        kind: "github-token",
        shape: Shape::Run {
            class: Class::Alnum,
            min: 36,
        },
    },
    Detector {
        prefix: "gho_",
        kind: "github-token",
        shape: Shape::Run {
            class: Class::Alnum,
            min: 36,
        },
    },
    Detector {
        prefix: "ghu_",
        kind: "github-token",
        shape: Shape::Run {
            class: Class::Alnum,
            min: 36,
        },
    },
    Detector {
        prefix: "ghs_",
        kind: "github-token",
        shape: Shape::Run {
            class: Class::Alnum,
            min: 36,
        },
    },
    Detector {
        prefix: "ghr_",
        kind: "github-token",
        shape: Shape::Run {
            class: Class::Alnum,
            min: 36,
        },
    },
    Detector {
        prefix: "github_pat_",
        kind: "github-token",
        shape: Shape::Run {
            class: Class::Word,
            min: 22,
        },
    },
    Detector {
        prefix: "AIza",
        kind: "google-api-key",
        shape: Shape::Run {
            class: Class::Token,
            min: 35,
        },
    },
    Detector {
        prefix: "xoxb-",
        kind: "slack-token",
        shape: Shape::Run {
            class: Class::Dashed,
            min: 10,
        },
    },
    Detector {
        prefix: "xoxp-",
        kind: "slack-token",
        shape: Shape::Run {
            class: Class::Dashed,
            min: 10,
        },
    },
    Detector {
        prefix: "eyJ",
        kind: "jwt",
        shape: Shape::Jwt,
    },
    Detector {
        prefix: "-----BEGIN ",
        kind: "private-key",
        shape: Shape::Pem,
    },
    Detector {
        prefix: "Bearer ",
        kind: "bearer",
        shape: Shape::Bearer,
    },
    Detector {
        prefix: "bearer ",
        kind: "bearer",
        shape: Shape::Bearer,
    },
    Detector {
        prefix: "BEARER ",
        kind: "bearer",
        shape: Shape::Bearer,
    },
];

/// One immutable engine: the automaton over detector prefixes and known secrets.
#[derive(Debug)]
pub struct Masker {
    automaton: AhoCorasick,
    /// Patterns `0..DETECTORS.len()` are detector prefixes; the rest known secrets.
    secrets: usize,
}

/// A stretch of text to replace.
struct Finding {
    start: usize,
    end: usize,
    replacement: Replacement,
}

enum Replacement {
    Known,
    Kind(&'static str),
}

impl Masker {
    /// An engine for these known secrets (values shorter than [`MIN_SECRET_LEN`] are
    /// skipped) and the built-in credential formats.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Result<Masker, MaskError> {
        let mut patterns: Vec<&str> = DETECTORS.iter().map(|d| d.prefix).collect();
        let mut known: Vec<&str> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        known.sort_unstable();
        known.dedup();
        let secrets = known.len();
        patterns.extend(known);
        let automaton = AhoCorasick::builder()
            // A known secret that starts with a detector's prefix is matched whole.
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|error| MaskError(error.to_string()))?;
        Ok(Masker { automaton, secrets })
    }

    /// The credential formats alone.
    fn empty() -> Masker {
        // The detector prefixes are fixed, short literals: building them cannot fail.
        Masker::new(std::iter::empty()).unwrap_or_else(|_| unreachable!("fixed detector set"))
    }

    /// How many known secrets the engine matches.
    pub fn known_secrets(&self) -> usize {
        self.secrets
    }

    /// `text` with every secret replaced; borrowed when there was none.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let bytes = text.as_bytes();
        let mut findings: Vec<Finding> = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let Some(found) = self.automaton.find(Input::new(bytes).span(at..bytes.len())) else {
                break;
            };
            let pattern = found.pattern().as_usize();
            let finding = if pattern >= DETECTORS.len() {
                Some(Finding {
                    start: found.start(),
                    end: found.end(),
                    replacement: Replacement::Known,
                })
            } else {
                detect(&DETECTORS[pattern], bytes, found.start(), found.end())
            };
            match finding {
                Some(finding) => {
                    at = finding.end;
                    findings.push(finding);
                }
                None => at = found.start() + 1,
            }
        }
        if findings.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for finding in findings {
            out.push_str(&text[copied..finding.start]);
            match finding.replacement {
                Replacement::Known => out.push_str(REDACTED),
                Replacement::Kind(kind) => {
                    out.push_str("[REDACTED:");
                    out.push_str(kind);
                    out.push(']');
                }
            }
            copied = finding.end;
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }

    /// Masks `bytes` that may not be UTF-8 (invalid sequences are kept as they are).
    pub fn mask_bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        match std::str::from_utf8(bytes) {
            Ok(text) => match self.mask(text) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(masked) => Cow::Owned(masked.into_bytes()),
            },
            Err(_) => match self.mask(&String::from_utf8_lossy(bytes)) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(masked) => Cow::Owned(masked.into_bytes()),
            },
        }
    }
}

/// Whether the token starting at `start` is glued to a word before it (`task-...` is not
/// an `sk-` key).
fn glued(bytes: &[u8], start: usize) -> bool {
    start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
}

/// The end of the run of `class` from `from`.
fn run_end(bytes: &[u8], from: usize, class: Class) -> usize {
    from + bytes[from..]
        .iter()
        .take_while(|b| class.contains(**b))
        .count()
}

/// Whether the detector's shape holds at this prefix match, and where the token ends.
fn detect(detector: &Detector, bytes: &[u8], start: usize, end: usize) -> Option<Finding> {
    let finding = |start: usize, end: usize| {
        Some(Finding {
            start,
            end,
            replacement: Replacement::Kind(detector.kind),
        })
    };
    match detector.shape {
        Shape::Run { class, min } => {
            if glued(bytes, start) {
                return None;
            }
            let stop = run_end(bytes, end, class);
            (stop - end >= min).then_some(())?;
            finding(start, stop)
        }
        Shape::Exact { class, len } => {
            if glued(bytes, start) {
                return None;
            }
            let stop = run_end(bytes, end, class);
            (stop - end == len && !bytes.get(stop).is_some_and(u8::is_ascii_alphanumeric))
                .then_some(())?;
            finding(start, stop)
        }
        Shape::Jwt => {
            if glued(bytes, start) {
                return None;
            }
            let class = Class::Token;
            let header = run_end(bytes, end, class);
            if header - start < 10 || bytes.get(header) != Some(&b'.') {
                return None;
            }
            let payload = run_end(bytes, header + 1, class);
            if payload - header - 1 < 10 || bytes.get(payload) != Some(&b'.') {
                return None;
            }
            let signature = run_end(bytes, payload + 1, class);
            finding(start, signature)
        }
        Shape::Pem => {
            const LABEL_MAX: usize = 40;
            const PRIVATE: &[u8] = b"PRIVATE KEY-----";
            let window = &bytes[end..bytes.len().min(end + LABEL_MAX + PRIVATE.len())];
            memchr::memmem::find(window, PRIVATE)?;
            // To the end marker's last dash, or to the end of the text if it is cut off.
            let close = memchr::memmem::find(&bytes[end..], b"-----END ")
                .and_then(|at| {
                    let from = end + at;
                    memchr::memmem::find(&bytes[from..], PRIVATE).map(|p| from + p + PRIVATE.len())
                })
                .unwrap_or(bytes.len());
            finding(start, close)
        }
        Shape::Bearer => {
            let stop = run_end(bytes, end, Class::Token);
            // Base64 and opaque tokens also use `.`, `~`, `+`, `/` and `=`.
            let stop = stop
                + bytes[stop..]
                    .iter()
                    .take_while(|b| {
                        Class::Token.contains(**b)
                            || matches!(**b, b'.' | b'~' | b'+' | b'/' | b'=')
                    })
                    .count();
            (stop - end >= 8).then_some(())?;
            // The scheme stays readable: `Bearer [REDACTED:bearer]`.
            finding(end, stop)
        }
    }
}

/// The shared handle: cheap to clone, read on every log line, replaced when secrets change.
#[derive(Debug, Clone)]
pub struct Masking {
    current: Arc<RwLock<Arc<Masker>>>,
}

impl Masking {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Result<Masking, MaskError> {
        Ok(Masking {
            current: Arc::new(RwLock::new(Arc::new(Masker::new(secrets)?))),
        })
    }

    /// Replaces the known secrets for every holder of this handle. On error the previous
    /// engine stays.
    pub fn set_secrets<'a>(
        &self,
        secrets: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), MaskError> {
        let masker = Arc::new(Masker::new(secrets)?);
        match self.current.write() {
            Ok(mut current) => *current = masker,
            Err(poisoned) => *poisoned.into_inner() = masker,
        }
        Ok(())
    }

    /// The engine now.
    pub fn masker(&self) -> Arc<Masker> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match self.masker().mask(text) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(masked) => Cow::Owned(masked),
        }
    }
}

/// The process's engine: every log line, stored error and error message goes through it. It
/// starts with the credential formats only; `serve` adds the secrets it holds as it loads them.
pub fn global() -> &'static Masking {
    static GLOBAL: OnceLock<Masking> = OnceLock::new();
    GLOBAL.get_or_init(|| Masking {
        current: Arc::new(RwLock::new(Arc::new(Masker::empty()))),
    })
}

/// Masks with the process's engine.
pub fn mask(text: &str) -> Cow<'_, str> {
    global().mask(text)
}

#[cfg(test)]
mod tests;
