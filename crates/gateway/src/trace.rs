//! W3C Trace Context: a request joins the caller's trace (`traceparent`) or starts one, and
//! every upstream call carries it on with a fresh parent id, so a provider's logs and ours
//! line up. The trace id is on the request's span, so it is in every log line.

use std::sync::Arc;

use atalaya_telemetry::otlp::{self, SpanId};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng as _;

#[derive(Debug, Clone)]
pub(crate) struct Trace {
    /// 32 lowercase hex digits.
    pub id: Arc<str>,
    /// The caller's span, when the request joined a trace.
    pub parent: Option<SpanId>,
    /// The caller's trace flags (`01`: sampled); for a trace started here, whether the span
    /// export samples it.
    flags: u8,
    /// The caller's `tracestate`, passed on unchanged.
    state: Option<HeaderValue>,
}

/// Names made once: parsing a non-standard name allocates, and looking one up by `&str`
/// parses it.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Appends `value`'s low `digits` hex digits, lowercase and zero-padded (what `{:0Nx}` writes,
/// without the formatting machinery, which was most of a trace's cost per request).
fn push_hex(text: &mut String, value: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for at in (0..digits).rev() {
        text.push(char::from(HEX[((value >> (at * 4)) & 0xf) as usize]));
    }
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Trace {
    /// The caller's trace when its `traceparent` is valid, else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Trace {
        let parsed = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(Trace::parse);
        match parsed {
            Some((id, parent, flags)) => Trace {
                id: Arc::from(id),
                parent: Some(SpanId(parent)),
                flags,
                state: headers.get(TRACESTATE).cloned(),
            },
            None => Trace::new(),
        }
    }

    pub fn new() -> Trace {
        let id: u128 = rand::rng().random::<u128>().max(1);
        let mut text = String::with_capacity(32);
        push_hex(&mut text, id, 32);
        Trace {
            id: Arc::from(text),
            parent: None,
            flags: u8::from(otlp::samples(id)),
            state: None,
        }
    }

    /// `00-TRACE-PARENT-FLAGS`: version 00 only (a higher version's first four fields are
    /// read the same way), ids not all zeros.
    fn parse(text: &str) -> Option<(String, u64, u8)> {
        let mut parts = text.trim().split('-');
        let version = parts.next()?;
        let (trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let valid = is_hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && is_hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && is_hex(parent, 16)
            && parent.bytes().any(|b| b != b'0')
            && is_hex(flags, 2);
        valid.then(|| {
            (
                trace.to_owned(),
                u64::from_str_radix(parent, 16).unwrap_or(0),
                u8::from_str_radix(flags, 16).unwrap_or(0),
            )
        })
    }

    /// Whether this trace's spans are exported (the caller's flag, or our sampler's).
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 1
    }

    /// The headers for one upstream call: this trace with `span` (the upstream call's own
    /// span) as the parent.
    pub fn upstream_headers(&self, span: SpanId) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::with_capacity(2);
        // `00-{id}-{span:016x}-{flags:02x}`
        let mut text = String::with_capacity(55);
        text.push_str("00-");
        text.push_str(&self.id);
        text.push('-');
        push_hex(&mut text, u128::from(span.0), 16);
        text.push('-');
        push_hex(&mut text, u128::from(self.flags & 0x01), 2);
        if let Ok(value) = HeaderValue::try_from(text) {
            headers.push((TRACEPARENT, value));
        }
        if let Some(state) = &self.state {
            headers.push((TRACESTATE, state.clone()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
        headers.insert("tracestate", HeaderValue::from_static("vendor=1"));
        headers
    }

    #[test]
    fn a_valid_traceparent_is_joined_and_passed_on_with_a_new_parent() {
        let trace = Trace::from_headers(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(&*trace.id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent.map(|p| p.0), Some(0x00f067aa0ba902b7));
        assert!(trace.sampled());
        let out = trace.upstream_headers(SpanId::random());
        let parent = out[0].1.to_str().unwrap();
        assert!(parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(parent.ends_with("-01"));
        assert!(!parent.contains("00f067aa0ba902b7"));
        assert_eq!(out[1].0, "tracestate");
        assert_eq!(out[1].1, HeaderValue::from_static("vendor=1"));
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for value in [
            0u128,
            1,
            0xf,
            0x10,
            0xabcdef,
            u128::from(u64::MAX),
            u128::MAX,
        ] {
            let mut text = String::new();
            push_hex(&mut text, value, 32);
            assert_eq!(text, format!("{value:032x}"));
            let mut text = String::new();
            push_hex(&mut text, value & u128::from(u64::MAX), 16);
            assert_eq!(text, format!("{:016x}", value & u128::from(u64::MAX)));
        }
        let trace = Trace::new();
        let span = SpanId(0x00f067aa0ba902b7);
        let out = trace.upstream_headers(span);
        assert_eq!(
            out[0].1.to_str().unwrap(),
            format!("00-{}-{span}-{:02x}", trace.id, u8::from(trace.sampled()))
        );
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let trace = Trace::from_headers(&headers(bad));
            assert_ne!(&*trace.id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(is_hex(&trace.id, 32));
            assert!(
                trace.state.is_none(),
                "{bad}: tracestate goes with its traceparent"
            );
            assert!(
                trace.upstream_headers(SpanId::random())[0]
                    .1
                    .to_str()
                    .unwrap()
                    .ends_with("-00")
            );
        }
    }
}
