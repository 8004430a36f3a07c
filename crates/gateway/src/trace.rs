//! W3C Trace Context: a request joins the caller's trace (`traceparent`) or starts one, and
//! every upstream call carries it on with a fresh parent id, so a provider's logs and ours
//! line up. The trace id is on the request's span, so it is in every log line.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use rand::Rng as _;

#[derive(Debug, Clone)]
pub(crate) struct Trace {
    /// 32 lowercase hex digits.
    pub id: Arc<str>,
    /// The caller's trace flags (`01`: sampled); `00` for a trace started here.
    flags: u8,
    /// The caller's `tracestate`, passed on unchanged.
    state: Option<HeaderValue>,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Trace {
    /// The caller's trace when its `traceparent` is valid, else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Trace {
        let parsed = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(Trace::parse);
        match parsed {
            Some((id, flags)) => Trace {
                id: Arc::from(id),
                flags,
                state: headers.get("tracestate").cloned(),
            },
            None => Trace::new(),
        }
    }

    pub fn new() -> Trace {
        let id: u128 = rand::rng().random::<u128>().max(1);
        Trace {
            id: Arc::from(format!("{id:032x}")),
            flags: 0,
            state: None,
        }
    }

    /// `00-TRACE-PARENT-FLAGS`: version 00 only (a higher version's first four fields are
    /// read the same way), ids not all zeros.
    fn parse(text: &str) -> Option<(String, u8)> {
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
        valid.then(|| (trace.to_owned(), u8::from_str_radix(flags, 16).unwrap_or(0)))
    }

    /// The headers for one upstream call: this trace with a new parent id.
    pub fn upstream_headers(&self) -> Vec<(&'static str, HeaderValue)> {
        let parent: u64 = rand::rng().random::<u64>().max(1);
        let mut headers = Vec::with_capacity(2);
        if let Ok(value) = HeaderValue::from_str(&format!(
            "00-{}-{parent:016x}-{:02x}",
            self.id,
            self.flags & 0x01
        )) {
            headers.push(("traceparent", value));
        }
        if let Some(state) = &self.state {
            headers.push(("tracestate", state.clone()));
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
        let out = trace.upstream_headers();
        let parent = out[0].1.to_str().unwrap();
        assert!(parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(parent.ends_with("-01"));
        assert!(!parent.contains("00f067aa0ba902b7"));
        assert_eq!(out[1], ("tracestate", HeaderValue::from_static("vendor=1")));
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
                trace.upstream_headers()[0]
                    .1
                    .to_str()
                    .unwrap()
                    .ends_with("-00")
            );
        }
    }
}
