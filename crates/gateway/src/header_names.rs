//! Header names the data plane reads or writes on every request, made once.
//!
//! A name given as `&str` is parsed at each use (`HeaderMap::get("x-…")`, or `insert` with
//! `HeaderName::from_static` called at run time, which validates it again); as constants
//! they cost nothing. In a callgrind profile of a plain chat request the parsing was
//! about 3 % of the gateway's instructions.

use axum::http::HeaderName;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
pub(crate) const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

pub(crate) const X_ATALAYA_DEPLOYMENT: HeaderName = HeaderName::from_static("x-atalaya-deployment");
pub(crate) const X_ATALAYA_ATTEMPTS: HeaderName = HeaderName::from_static("x-atalaya-attempts");
pub(crate) const X_ATALAYA_MAX_ATTEMPTS: HeaderName =
    HeaderName::from_static("x-atalaya-max-attempts");
pub(crate) const X_ATALAYA_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-atalaya-timeout-ms");
pub(crate) const X_ATALAYA_TTFB_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-atalaya-ttfb-timeout-ms");
pub(crate) const X_ATALAYA_IDLE_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-atalaya-idle-timeout-ms");
pub(crate) const X_ATALAYA_DROP_PARAMS: HeaderName =
    HeaderName::from_static("x-atalaya-drop-params");

/// An upstream's remaining rate-limit capacity, as OpenAI and Anthropic send it, and as the
/// gateway passes it on.
pub(crate) const OPENAI_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
pub(crate) const OPENAI_REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-tokens");
pub(crate) const ANTHROPIC_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("anthropic-ratelimit-requests-remaining");
pub(crate) const ANTHROPIC_REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("anthropic-ratelimit-tokens-remaining");
pub(crate) const UPSTREAM_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-atalaya-upstream-ratelimit-remaining-requests");
pub(crate) const UPSTREAM_REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("x-atalaya-upstream-ratelimit-remaining-tokens");

/// Names providers send on most answers (OpenAI's and Anthropic's rate-limit and request-id
/// headers) that `http` does not know: the HTTP/1.1 client takes these constants instead of
/// copying and checking each name into a new allocation, answer after answer.
static UPSTREAM: [HeaderName; 12] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    OPENAI_REMAINING_REQUESTS,
    OPENAI_REMAINING_TOKENS,
    HeaderName::from_static("x-ratelimit-reset-requests"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
    X_REQUEST_ID,
    HeaderName::from_static("openai-processing-ms"),
    HeaderName::from_static("request-id"),
    ANTHROPIC_REMAINING_REQUESTS,
    ANTHROPIC_REMAINING_TOKENS,
    HeaderName::from_static("anthropic-ratelimit-requests-limit"),
];

/// A header name read off the wire: one of [`UPSTREAM`] when it is one (in any case), else
/// parsed (`None` when it is not a valid name).
pub(crate) fn upstream_name(bytes: &[u8]) -> Option<HeaderName> {
    let mut lower = [0u8; 40];
    if let Some(buffer) = lower.get_mut(..bytes.len()) {
        for (to, from) in buffer.iter_mut().zip(bytes) {
            *to = from.to_ascii_lowercase();
        }
        let index = match &*buffer {
            b"x-ratelimit-limit-requests" => Some(0),
            b"x-ratelimit-limit-tokens" => Some(1),
            b"x-ratelimit-remaining-requests" => Some(2),
            b"x-ratelimit-remaining-tokens" => Some(3),
            b"x-ratelimit-reset-requests" => Some(4),
            b"x-ratelimit-reset-tokens" => Some(5),
            b"x-request-id" => Some(6),
            b"openai-processing-ms" => Some(7),
            b"request-id" => Some(8),
            b"anthropic-ratelimit-requests-remaining" => Some(9),
            b"anthropic-ratelimit-tokens-remaining" => Some(10),
            b"anthropic-ratelimit-requests-limit" => Some(11),
            _ => None,
        };
        if let Some(index) = index {
            return Some(UPSTREAM[index].clone());
        }
    }
    HeaderName::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_are_the_same_whichever_way_they_are_found() {
        for name in &UPSTREAM {
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(upstream_name(upper.as_bytes()).as_ref(), Some(name));
            assert_eq!(
                upstream_name(name.as_str().as_bytes()).unwrap(),
                HeaderName::from_bytes(name.as_str().as_bytes()).unwrap()
            );
        }
        for other in [
            "content-type",
            "X-Custom",
            "a",
            "x-ratelimit-limit-requestz",
        ] {
            assert_eq!(
                upstream_name(other.as_bytes()),
                HeaderName::from_bytes(other.as_bytes()).ok()
            );
        }
        assert_eq!(upstream_name(b"bad name"), None);
        assert_eq!(upstream_name(b""), None);
    }
}
