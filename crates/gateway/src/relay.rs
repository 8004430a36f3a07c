//! Streaming passthrough: upstream SSE bytes go to the client as they arrive, event
//! boundaries intact, without re-serialising.
//!
//! The relay only looks inside events that carry a `usage` object (to record tokens, and to
//! drop the usage-only chunk the gateway asked for on the client's behalf) and watches for
//! `data: [DONE]`. It records the request exactly once: when the stream ends, fails, or is
//! dropped because the client went away — dropping it also drops the upstream body, which
//! closes the upstream connection at once.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::Instant;

use crate::openai::chunk_usage;
use crate::{Deferred, Exchange, Gateway, RequestContext};

pub(crate) type UpstreamStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// Status recorded for a stream the client abandoned (nginx's convention).
pub(crate) const CLIENT_CLOSED: u16 = 499;

pub(crate) fn sse_response(
    gateway: Arc<Gateway>,
    context: RequestContext,
    exchange: Exchange,
    upstream: UpstreamStream,
    upstream_started: Instant,
    strip_usage_only_chunks: bool,
) -> Response {
    let relay = Relay {
        upstream,
        pending: BytesMut::new(),
        strip_usage_only_chunks,
        saw_done: false,
        finished: false,
        record: Some(Record {
            gateway,
            context,
            exchange,
            upstream_started,
        }),
    };
    let mut response = Response::new(Body::from_stream(relay));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells a fronting nginx not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.extensions_mut().insert(Deferred);
    response
}

struct Record {
    gateway: Arc<Gateway>,
    context: RequestContext,
    exchange: Exchange,
    upstream_started: Instant,
}

struct Relay {
    upstream: UpstreamStream,
    /// An incomplete event carried over to the next upstream chunk.
    pending: BytesMut,
    strip_usage_only_chunks: bool,
    saw_done: bool,
    finished: bool,
    record: Option<Record>,
}

impl Relay {
    fn finish(&mut self, status: u16, error: Option<(&'static str, String)>) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        self.finished = true;
        record.exchange.upstream_time = record.upstream_started.elapsed();
        if let Some((class, message)) = error {
            record.exchange.upstream_error_class = Some(class);
            record.exchange.error = Some(message);
        }
        record
            .gateway
            .record(&record.context, status, &record.exchange);
    }

    fn exchange(&mut self) -> Option<&mut Exchange> {
        self.record.as_mut().map(|record| &mut record.exchange)
    }

    /// Returns the complete events received so far, ready to send, if any.
    fn take_events(&mut self, chunk: Bytes) -> Option<Bytes> {
        if let Some(record) = self.record.as_mut()
            && record.exchange.ttft.is_none()
        {
            record.exchange.ttft = Some(record.context.started.elapsed());
        }
        let region = if self.pending.is_empty() && last_boundary_end(&chunk) == Some(chunk.len()) {
            chunk
        } else {
            self.pending.extend_from_slice(&chunk);
            let end = last_boundary_end(&self.pending)?;
            self.pending.split_to(end).freeze()
        };
        Some(self.inspect(region))
    }

    fn inspect(&mut self, region: Bytes) -> Bytes {
        if memchr::memmem::find(&region, b"[DONE]").is_some() {
            self.saw_done = true;
        }
        if !has_usage_object(&region) {
            return region;
        }
        let mut kept = Vec::with_capacity(region.len());
        let mut start = 0;
        for end in boundary_ends(&region) {
            let event = &region[start..end];
            start = end;
            let data = event_data(event);
            if let Some((usage, usage_only)) = chunk_usage(&data) {
                if let Some(exchange) = self.exchange() {
                    exchange.usage = Some(usage);
                }
                if usage_only && self.strip_usage_only_chunks {
                    continue;
                }
            }
            kept.extend_from_slice(event);
        }
        kept.extend_from_slice(&region[start..]);
        Bytes::from(kept)
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(events) = this.take_events(chunk)
                        && !events.is_empty()
                    {
                        return Poll::Ready(Some(Ok(events)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    // A partial event would be a truncated JSON line: drop it, end with an error
                    // event the SDKs raise.
                    this.pending.clear();
                    let message = format!("The upstream stream failed: {error}");
                    let event = error_event(&message);
                    this.finish(StatusCode::BAD_GATEWAY.as_u16(), Some(("stream", message)));
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(None) => {
                    let rest = this.pending.split().freeze();
                    let mut out = if rest.is_empty() {
                        Bytes::new()
                    } else {
                        this.inspect(rest)
                    };
                    if this.saw_done {
                        this.finish(StatusCode::OK.as_u16(), None);
                    } else {
                        let message = "The upstream stream ended before `data: [DONE]`.".to_owned();
                        let mut with_error = BytesMut::from(&out[..]);
                        if !with_error.is_empty() && !with_error.ends_with(b"\n\n") {
                            with_error.extend_from_slice(b"\n\n");
                        }
                        with_error.extend_from_slice(&error_event(&message));
                        out = with_error.freeze();
                        this.finish(StatusCode::BAD_GATEWAY.as_u16(), Some(("stream", message)));
                    }
                    return Poll::Ready(if out.is_empty() { None } else { Some(Ok(out)) });
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.record.is_some() {
            self.finish(
                CLIENT_CLOSED,
                Some((
                    "client",
                    "The client disconnected before the stream ended.".to_owned(),
                )),
            );
        }
    }
}

/// An OpenAI-style error event; the OpenAI SDKs raise `APIError` on it.
fn error_event(message: &str) -> Bytes {
    let body =
        crate::error::ApiError::new(StatusCode::BAD_GATEWAY, "upstream_stream_error", message)
            .body();
    let mut event = Vec::with_capacity(body.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// Offsets just past each blank line (`\n\n` or `\n\r\n`) that ends an event.
fn boundary_ends(buffer: &[u8]) -> impl Iterator<Item = usize> + '_ {
    memchr::memchr_iter(b'\n', buffer).filter_map(move |at| match buffer.get(at + 1) {
        Some(b'\n') => Some(at + 2),
        Some(b'\r') if buffer.get(at + 2) == Some(&b'\n') => Some(at + 3),
        _ => None,
    })
}

fn last_boundary_end(buffer: &[u8]) -> Option<usize> {
    boundary_ends(buffer).last()
}

fn has_usage_object(region: &[u8]) -> bool {
    memchr::memmem::find_iter(region, b"\"usage\"").any(|at| {
        let after = &region[at + 7..];
        let mut rest = after.iter().skip_while(|b| b.is_ascii_whitespace());
        rest.next() == Some(&b':') && rest.find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    })
}

/// The joined `data:` lines of one event.
fn event_data(event: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_cover_both_line_endings() {
        let buffer = b"data: a\n\ndata: b\r\n\r\ndata: c";
        let ends: Vec<usize> = boundary_ends(buffer).collect();
        assert_eq!(ends, vec![9, 20]);
        assert_eq!(last_boundary_end(b"data: partial"), None);
    }

    #[test]
    fn usage_objects_are_told_from_nulls() {
        assert!(has_usage_object(
            br#"data: {"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(has_usage_object(
            br#"data: {"usage" : { "prompt_tokens":1}}"#
        ));
        assert!(!has_usage_object(br#"data: {"choices":[],"usage":null}"#));
    }

    #[test]
    fn event_data_joins_lines() {
        assert_eq!(
            event_data(b"event: x\r\ndata: {\"a\":\ndata: 1}\r\n\r\n"),
            b"{\"a\":\n1}"
        );
    }
}
