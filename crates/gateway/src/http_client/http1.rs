//! HTTP/1.1 client connections of our own: the request is written and the response read by
//! the task that made the request, on the connection it checked out.
//!
//! Why not hyper's connection-level client (used until 2026-12): it runs each connection as
//! a task of its own and hands the response body over through a channel one chunk at a time,
//! each hand-over a round trip between the two tasks. A streamed answer of 25 SSE events
//! arrived as 25 chunks, 25 round trips; the connection task and the relay's per-chunk work
//! were a third of the gateway's CPU for a streamed request (frame-pointer `perf`,
//! bench/gateway/RESULTS.md). Here one read hands over everything that arrived with it.

use std::io::Write as _;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::relay::Frame;

/// The byte stream under a connection: TCP, or TLS over it.
pub(super) type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4 * 1024;
/// Bodies up to this size go out in the same write as the head (copied after it).
const SMALL_BODY: usize = 64 * 1024;
/// What a read asks the kernel for at least.
const READ_SIZE: usize = 8 * 1024;

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Http1Error {
    #[error("the upstream connection failed")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before its answer was complete")]
    Closed,
    #[error("the upstream's answer is not valid HTTP/1.1: {0}")]
    Invalid(&'static str),
}

pub(super) struct Connection {
    /// Boxed: with TLS it is kilobytes, and a streamed body holds its connection.
    io: Box<Io>,
    /// Bytes read and not yet consumed.
    buffer: BytesMut,
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// Everything up to the end of the connection.
    UntilClose,
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data, at its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// A response head; the body is read with [`Body`].
pub(super) struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: RawHeaders,
}

/// A response's header fields as they came: names and values are ranges of the head's
/// bytes. Building an `http::HeaderMap` (a name allocated and hashed per field) cost ~5k
/// instructions per answer, while a proxied answer reads two or three fields; the map is
/// built only when asked for ([`RawHeaders::into_map`]).
pub(crate) struct RawHeaders {
    head: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl RawHeaders {
    /// The values of every field called `name` (any case), in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| {
                self.head[field.clone()].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|(_, value)| &self.head[value.clone()])
    }

    /// The first value of the field called `name`.
    pub(crate) fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        let (_, value) = self.fields.iter().find(|(field, _)| {
            self.head[field.clone()].eq_ignore_ascii_case(name.as_str().as_bytes())
        })?;
        HeaderValue::from_maybe_shared(self.head.slice(value.clone())).ok()
    }

    pub(crate) fn into_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for (field, value) in self.fields {
            // Both were checked when the head was read.
            if let (Some(name), Ok(value)) = (
                crate::header_names::upstream_name(&self.head[field]),
                HeaderValue::from_maybe_shared(self.head.slice(value)),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

/// What `HeaderValue` accepts: visible ASCII, obs-text, space and tab.
fn valid_value(value: &[u8]) -> bool {
    value.iter().all(|&b| (b >= 32 && b != 127) || b == b'\t')
}

/// A response body being read from its connection, which it owns: dropped before the end,
/// the connection is closed; read to the end, [`Body::into_idle`] gives it back for reuse.
pub(super) struct Body {
    connection: Connection,
    framing: Framing,
    reusable: bool,
}

impl Connection {
    pub(super) fn new(io: Io) -> Connection {
        Connection {
            io: Box::new(io),
            buffer: BytesMut::new(),
        }
    }

    /// Whether an idle connection can take a request: the server has neither closed it nor
    /// sent anything unasked. Polls the socket once, without waiting.
    pub(super) fn usable(&mut self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Reads what the socket has into the buffer: `Ready(Ok(0))` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.buffer.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.buffer)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes the request: its head (in HTTP/1.1 form: path and `Host`) and body in one
    /// write when the body is small. An error here means the request may not have been sent
    /// whole; nothing was read.
    pub(super) async fn write_request(
        &mut self,
        head: &http::request::Parts,
        uri: &Uri,
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut out =
            Vec::with_capacity(256 + head.headers.len() * 32 + body.len().min(SMALL_BODY));
        out.extend_from_slice(head.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            uri.path_and_query()
                .map_or("/", |path| path.as_str())
                .as_bytes(),
        );
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !head.headers.contains_key(http::header::HOST)
            && let Some(host) = uri.host()
        {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(host.as_bytes());
            let default_port = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            if let Some(port) = uri.port_u16().filter(|port| *port != default_port) {
                // Writing into a Vec cannot fail.
                let _ = write!(out, ":{port}");
            }
            out.extend_from_slice(b"\r\n");
        }
        for (name, value) in &head.headers {
            // The body is always sent whole, with its length.
            if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !body.is_empty() || head.method == http::Method::POST || head.method == http::Method::PUT
        {
            let _ = write!(out, "content-length: {}\r\n", body.len());
        }
        out.extend_from_slice(b"\r\n");
        if body.len() <= SMALL_BODY {
            out.extend_from_slice(body);
            self.io.write_all(&out).await
        } else {
            self.io.write_all(&out).await?;
            self.io.write_all(body).await
        }
    }

    /// Reads the response head (skipping interim 1xx answers); the body follows with the
    /// returned [`Body`]. `method_head` says whether the request was a HEAD (no body).
    pub(super) async fn read_head(mut self, method_head: bool) -> Result<(Head, Body), Http1Error> {
        loop {
            if !self.buffer.is_empty() {
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut parsed = httparse::Response::new(&mut slots);
                match parsed.parse(&self.buffer) {
                    Ok(httparse::Status::Complete(length)) => {
                        let code = parsed.code.unwrap_or(0);
                        let status = StatusCode::from_u16(code)
                            .map_err(|_| Http1Error::Invalid("a status code out of range"))?;
                        let version = if parsed.version == Some(0) {
                            Version::HTTP_10
                        } else {
                            Version::HTTP_11
                        };
                        // Names and values stay in the head's bytes: where each lies in the
                        // buffer is noted, then the head is split off.
                        let start = self.buffer.as_ptr() as usize;
                        let within = |part: &[u8]| {
                            (part.as_ptr() as usize)
                                .checked_sub(start)
                                .filter(|at| at + part.len() <= length)
                                .map(|at| at..at + part.len())
                        };
                        let mut fields = Vec::with_capacity(parsed.headers.len());
                        for header in parsed.headers.iter() {
                            // httparse has checked the name's characters.
                            let name = within(header.name.as_bytes())
                                .filter(|name| !name.is_empty())
                                .ok_or(Http1Error::Invalid("a bad header name"))?;
                            // An empty value may point anywhere; any other lies in the head.
                            let value = if header.value.is_empty() {
                                0..0
                            } else {
                                within(header.value)
                                    .ok_or(Http1Error::Invalid("a header value outside the head"))?
                            };
                            if !valid_value(header.value) {
                                return Err(Http1Error::Invalid("a bad header value"));
                            }
                            fields.push((name, value));
                        }
                        let headers = RawHeaders {
                            head: self.buffer.split_to(length).freeze(),
                            fields,
                        };
                        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                            continue;
                        }
                        let (framing, reusable) = framing(status, version, &headers, method_head)?;
                        let head = Head {
                            status,
                            version,
                            headers,
                        };
                        let body = Body {
                            connection: self,
                            framing,
                            reusable,
                        };
                        return Ok((head, body));
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(error) => return Err(Http1Error::Invalid(parse_error(error))),
                }
                if self.buffer.len() > MAX_HEAD {
                    return Err(Http1Error::Invalid("a response head over 64 KB"));
                }
            }
            if self.fill().await? == 0 {
                return Err(Http1Error::Closed);
            }
        }
    }
}

fn parse_error(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::TooManyHeaders => "more than 128 header lines",
        httparse::Error::Status => "a bad status line",
        httparse::Error::Version => "a bad HTTP version",
        _ => "a malformed response head",
    }
}

/// How the body of a response with these headers ends, and whether the connection can take
/// another request after it (RFC 9112 §6.3).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &RawHeaders,
    method_head: bool,
) -> Result<(Framing, bool), Http1Error> {
    let close = headers
        .get_all("connection")
        .any(|value| has_token(value, "close"));
    let keep_alive = match version {
        Version::HTTP_10 => headers
            .get_all("connection")
            .any(|value| has_token(value, "keep-alive")),
        _ => !close,
    };
    if method_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Done, keep_alive));
    }
    if let Some(coding) = headers.get_all("transfer-encoding").last() {
        // Chunked must be the last coding; anything else runs to the connection's end.
        let chunked = std::str::from_utf8(coding)
            .ok()
            .and_then(|codings| codings.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            (Framing::Chunked(Chunk::Size), keep_alive)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut lengths = headers.get_all("content-length");
    if let Some(first) = lengths.next() {
        let length = std::str::from_utf8(first)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or(Http1Error::Invalid("a bad content-length"))?;
        if lengths.any(|other| other != first) {
            return Err(Http1Error::Invalid("conflicting content-lengths"));
        }
        return Ok((
            if length == 0 {
                Framing::Done
            } else {
                Framing::Length(length)
            },
            keep_alive,
        ));
    }
    Ok((Framing::UntilClose, false))
}

fn has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value).is_ok_and(|text| {
        text.split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    })
}

impl Body {
    /// The body's next bytes: everything the last read completed, however many chunks it
    /// held; `None` at its end.
    pub(super) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Http1Error>>> {
        loop {
            // Pieces gathered from one buffer: a single piece passes without a copy.
            let mut out = Frame::default();
            if let Err(error) = decode(&mut self.framing, &mut self.connection.buffer, &mut out) {
                return Poll::Ready(Some(Err(error)));
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(out.into_bytes())));
            }
            if self.framing == Framing::Done {
                return Poll::Ready(None);
            }
            match self.connection.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(Ok(0)) => {
                    if self.framing == Framing::UntilClose {
                        self.framing = Framing::Done;
                        self.reusable = false;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Http1Error::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// The connection, once the body was read to its end and the server allows another
    /// request on it.
    pub(super) fn into_idle(self) -> Option<Connection> {
        (self.framing == Framing::Done && self.reusable && self.connection.buffer.is_empty())
            .then_some(self.connection)
    }
}

/// Moves the body bytes the buffer holds into `out`, as far as the framing allows.
fn decode(framing: &mut Framing, buffer: &mut BytesMut, out: &mut Frame) -> Result<(), Http1Error> {
    loop {
        match *framing {
            Framing::Done => return Ok(()),
            Framing::UntilClose => {
                if !buffer.is_empty() {
                    out.push(buffer.split().freeze());
                }
                return Ok(());
            }
            Framing::Length(left) => {
                let Some(left) = take_data(buffer, left, out) else {
                    return Ok(());
                };
                *framing = match left {
                    0 => Framing::Done,
                    left => Framing::Length(left),
                };
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let Some(left) = take_data(buffer, left, out) else {
                    return Ok(());
                };
                *framing = Framing::Chunked(match left {
                    0 => Chunk::DataEnd,
                    left => Chunk::Data(left),
                });
            }
            Framing::Chunked(Chunk::DataEnd) => match buffer.first() {
                None => return Ok(()),
                Some(b'\n') => {
                    buffer.advance(1);
                    *framing = Framing::Chunked(Chunk::Size);
                }
                Some(b'\r') => match buffer.get(1) {
                    None => return Ok(()),
                    Some(b'\n') => {
                        buffer.advance(2);
                        *framing = Framing::Chunked(Chunk::Size);
                    }
                    Some(_) => return Err(Http1Error::Invalid("a chunk longer than its size")),
                },
                Some(_) => return Err(Http1Error::Invalid("a chunk longer than its size")),
            },
            Framing::Chunked(Chunk::Size) => {
                let Some(line) = take_line(buffer)? else {
                    return Ok(());
                };
                let digits = line
                    .split(|b| *b == b';')
                    .next()
                    .map(<[u8]>::trim_ascii)
                    .unwrap_or_default();
                if digits.is_empty() || digits.len() > 15 {
                    return Err(Http1Error::Invalid("a bad chunk size"));
                }
                let mut size = 0u64;
                for digit in digits {
                    let value = (*digit as char)
                        .to_digit(16)
                        .ok_or(Http1Error::Invalid("a bad chunk size"))?;
                    size = size * 16 + u64::from(value);
                }
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::Trailers) => {
                let Some(line) = take_line(buffer)? else {
                    return Ok(());
                };
                // Trailers carry nothing a relay passes on.
                if line.is_empty() {
                    *framing = Framing::Done;
                }
            }
        }
    }
}

/// Moves up to `left` body bytes from `buffer` to `out`: how many are still to come, or
/// `None` when the buffer is empty.
fn take_data(buffer: &mut BytesMut, left: u64, out: &mut Frame) -> Option<u64> {
    if buffer.is_empty() {
        return None;
    }
    let take = left.min(buffer.len() as u64);
    out.push(buffer.split_to(take as usize).freeze());
    Some(left - take)
}

/// Takes one line (without its CRLF or LF) off the front of `buffer`, if a whole one is there.
fn take_line(buffer: &mut BytesMut) -> Result<Option<Bytes>, Http1Error> {
    let Some(end) = memchr::memchr(b'\n', buffer) else {
        if buffer.len() > MAX_LINE {
            return Err(Http1Error::Invalid("a chunk line over 4 KB"));
        }
        return Ok(None);
    };
    let mut line = buffer.split_to(end + 1).freeze();
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: deterministic and cheap.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Feeds `wire` to the decoder in pieces `split` chooses; the body, or the first error.
    fn decode_in_pieces(
        framing: Framing,
        wire: &[u8],
        mut split: impl FnMut(usize) -> usize,
    ) -> Result<(Vec<u8>, Framing), Http1Error> {
        let mut framing = framing;
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let step = split(wire.len() - at).clamp(1, wire.len() - at);
            buffer.extend_from_slice(&wire[at..at + step]);
            at += step;
            let mut out = Frame::default();
            decode(&mut framing, &mut buffer, &mut out)?;
            body.extend_from_slice(&out.into_bytes());
        }
        Ok((body, framing))
    }

    #[test]
    fn chunked_bodies_decode_whole_however_they_are_cut() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2_000 {
            let mut body = Vec::new();
            let mut wire = Vec::new();
            for _ in 0..rng.below(6) {
                let size = 1 + rng.below(300);
                let chunk: Vec<u8> = (0..size).map(|_| rng.below(256) as u8).collect();
                let extension = if rng.below(4) == 0 { ";name=value" } else { "" };
                let hex = if rng.below(2) == 0 {
                    format!("{size:x}")
                } else {
                    format!("{size:X}")
                };
                wire.extend_from_slice(format!("{hex}{extension}\r\n").as_bytes());
                wire.extend_from_slice(&chunk);
                wire.extend_from_slice(if rng.below(8) == 0 { b"\n" } else { b"\r\n" });
                body.extend_from_slice(&chunk);
            }
            wire.extend_from_slice(b"0\r\n");
            if rng.below(3) == 0 {
                wire.extend_from_slice(b"x-checksum: abc\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let (decoded, framing) =
                decode_in_pieces(Framing::Chunked(Chunk::Size), &wire, |left| {
                    1 + rng.below(left.min(64))
                })
                .unwrap();
            assert_eq!(decoded, body);
            assert_eq!(framing, Framing::Done);
        }
    }

    #[test]
    fn arbitrary_bytes_end_in_an_error_or_a_state_never_a_panic() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let alphabet = b"0123456789abcdefxyzABCDEF;= \r\n\r\n\n";
        for _ in 0..5_000 {
            let length = rng.below(200);
            let wire: Vec<u8> = (0..length)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.below(256) as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            for framing in [
                Framing::Chunked(Chunk::Size),
                Framing::Length(rng.below(300) as u64 + 1),
                Framing::UntilClose,
            ] {
                let result = decode_in_pieces(framing, &wire, |left| 1 + rng.below(left));
                if let Ok((body, _)) = result {
                    assert!(body.len() <= wire.len());
                }
            }
        }
    }

    #[test]
    fn a_length_framed_body_stops_at_its_length() {
        let (body, framing) =
            decode_in_pieces(Framing::Length(5), b"hello", |left| left.min(2)).unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(framing, Framing::Done);
    }
}
