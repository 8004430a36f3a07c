//! The HTTP client every upstream call goes through, with a pool of our own: HTTP/1.1 on a
//! client connection of our own ([`http1`]: the requesting task writes and reads the socket
//! itself), HTTP/2 (by ALPN over TLS, or by prior knowledge over
//! plain HTTP when configured) on the `h2` crate directly; rustls with the platform's trust
//! roots.
//!
//! Why not reqwest (used until 2026-12): it wraps hyper-util's client in redirect and retry
//! layers that copy every request's URL and headers and re-parse the URL of every response,
//! and each waiting request held their state (about 4.5 KB in heaptrack). Why not hyper-util's
//! pooled client (used after that): each request's checkout-or-connect future was boxed
//! (2.6 KB a waiting request), a streamed HTTP/1.1 response cost a task that waited to put its
//! connection back, and hyper's HTTP/2 client spawns one or two tasks per request (see
//! [`Http2Connection`]). With 10,000 streams starting at once through an h2c upstream, the
//! gateway's peak RSS went from 322–335 MB to 278–289 MB (bench/load/RESULTS.md).
//!
//! Every request to an HTTP/2 host shares one connection (a burst waits for it to open rather
//! than opening one each, and shares its failure; a burst to an HTTPS host not yet reached
//! waits for the first connection, whose ALPN answer says which protocol it speaks); an
//! HTTP/1.1 connection goes back to the pool when its response body has been read to the end
//! (one dropped before that is closed), is checked for a close or unasked bytes from the
//! server before reuse, and is closed after 90 s unused. An API gateway follows no redirects
//! (a provider's 3xx is passed on as an upstream error). A request whose write failed on a
//! reused HTTP/1.1 connection (the server had closed it) is sent once more on another; one
//! written whole is never re-sent (a chat completion sent twice is paid twice);
//! over HTTP/2, a request that finds the connection gone fails as an attempt (routing retries
//! or fails over as configured) and the next request opens a new connection.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tower_service::Service as _;

mod http1;

/// How one client is built; providers with equal settings share one client and its pool.
#[derive(PartialEq)]
pub(crate) struct ClientSettings {
    /// Sent with every request that does not set them itself.
    pub headers: HeaderMap,
    pub connect_timeout: Duration,
    /// Longest silence while a streamed body is read.
    pub read_timeout: Duration,
    pub http2_prior_knowledge: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an unused HTTP/1.1 connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often checkouts look for idle connections past `IDLE_TIMEOUT` or closed.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("connecting to the upstream failed")]
    Connect(#[source] BoxError),
    #[error("the upstream connection failed")]
    Send(#[source] http1::Http1Error),
    #[error("the upstream HTTP/2 connection failed")]
    Http2(#[source] h2::Error),
    #[error("reading the upstream's answer failed")]
    Body(#[source] BoxError),
    #[error("the URL {0} has no scheme or host")]
    Url(Uri),
}

impl Error {
    /// Whether no connection could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

#[derive(Clone)]
pub(crate) struct HttpClient {
    pool: Arc<Pool>,
    defaults: Arc<HeaderMap>,
    read_timeout: Duration,
}

impl HttpClient {
    pub fn new(settings: &ClientSettings) -> Result<HttpClient, rustls::Error> {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        // https:// URLs reach the TLS layer through this connector.
        http.enforce_http(false);
        // Nagle's algorithm meeting delayed ACKs stalls small request writes by ~40 ms.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(HttpClient {
            pool: Arc::new(Pool {
                connector,
                http2_only: settings.http2_prior_knowledge,
                hosts: Mutex::new(Hosts {
                    map: HashMap::default(),
                    swept: Instant::now(),
                }),
            }),
            defaults: Arc::new(settings.headers.clone()),
            read_timeout: settings.read_timeout,
        })
    }

    /// Sends `request` (its URI absolute) with the client's default headers where it sets
    /// none of its own; resolves when the response headers arrive.
    pub async fn send(&self, mut request: Request<Bytes>) -> Result<UpstreamResponse, Error> {
        let headers = request.headers_mut();
        for (name, value) in self.defaults.iter() {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let uri = request.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(Error::Url(uri));
        };
        let key = Key {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        let (head, body) = request.into_parts();
        let mut retried = false;
        loop {
            let (connection, reused) = self.pool.connection(&key, &uri).await?;
            let mut connection = match connection {
                Connection::Http2(connection) => {
                    let mut response = connection.send(head, body).await?;
                    let headers = UpstreamHeaders::Map(std::mem::take(response.headers_mut()));
                    return Ok(UpstreamResponse {
                        response: response.map(UpstreamBody::Http2),
                        headers,
                        read_timeout: self.read_timeout,
                        idle: None,
                    });
                }
                Connection::Http1(connection) => connection,
            };
            if let Err(error) = connection.write_request(&head, &uri, &body).await {
                // A reused connection the server had closed: the request did not get through
                // whole, so it is sent once more on another.
                if reused && !retried {
                    retried = true;
                    continue;
                }
                return Err(Error::Send(error.into()));
            }
            let (answer, body) = connection
                .read_head(head.method == http::Method::HEAD)
                .await
                .map_err(Error::Send)?;
            let mut response = Response::new(UpstreamBody::Http1(body));
            *response.status_mut() = answer.status;
            *response.version_mut() = answer.version;
            return Ok(UpstreamResponse {
                response,
                headers: UpstreamHeaders::Raw(answer.headers),
                read_timeout: self.read_timeout,
                idle: Some(IdleReturn {
                    pool: self.pool.clone(),
                    key,
                }),
            });
        }
    }
}

/// A host the pool keeps connections for, compared and hashed by its URL's bytes as written.
/// (`http`'s `Authority` hashes itself a lowercased byte at a time: with the default hasher
/// that was 50-odd hasher calls a request, counted with callgrind.)
#[derive(Clone)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.authority.as_str() == other.authority.as_str() && self.scheme == other.scheme
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.authority.as_str().hash(state);
    }
}

struct Pool {
    connector: HttpsConnector<HttpConnector>,
    http2_only: bool,
    hosts: Mutex<Hosts>,
}

struct Hosts {
    map: HashMap<Key, Host, crate::FastHash>,
    swept: Instant,
}

#[derive(Default)]
struct Host {
    /// The connection every request to an HTTP/2 host shares.
    http2: Option<Http2Connection>,
    /// Whether the host speaks HTTP/2 (by ALPN, or prior knowledge is configured): then a
    /// burst of requests waits for one connection instead of opening one each.
    speaks_http2: bool,
    /// Whether a connection has been opened yet, so the protocol is known. Until then a burst
    /// waits for the first connection too: if ALPN picks HTTP/2, it serves them all.
    protocol_known: bool,
    /// Held while the HTTP/2 connection is being opened.
    opening: Arc<tokio::sync::Mutex<()>>,
    /// When opening it last failed, and why.
    failed: Option<(Instant, Arc<str>)>,
    /// HTTP/1.1 connections not in use, with when each came back; the most recent last.
    idle: Vec<(http1::Connection, Instant)>,
}

enum Connection {
    Http1(http1::Connection),
    Http2(Http2Connection),
}

/// An HTTP/2 connection, driven by the `h2` crate directly. hyper's HTTP/2 client spawns a
/// task per request to wait for its response (and another to send its body), each sized for
/// hyper's largest connection future: 2.5 KB, 5 KB a request in all, the largest part of
/// what a request waiting on its upstream held. Here a waiting request holds h2's stream
/// handle, and its body is queued with its headers.
#[derive(Clone)]
struct Http2Connection {
    sender: h2::client::SendRequest<Bytes>,
    /// Cleared when the connection ends, or a request finds it unusable.
    alive: Arc<AtomicBool>,
}

/// Headers that HTTP/2 forbids (RFC 9113 §8.2.2); a request carrying them would be refused.
const CONNECTION_HEADERS: [http::HeaderName; 5] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

impl Http2Connection {
    fn is_closed(&self) -> bool {
        !self.alive.load(Ordering::Relaxed)
    }

    async fn send(
        &self,
        mut head: http::request::Parts,
        body: Bytes,
    ) -> Result<Response<h2::RecvStream>, Error> {
        for name in &CONNECTION_HEADERS {
            head.headers.remove(name);
        }
        if head
            .headers
            .get(http::header::TE)
            .is_some_and(|te| te != "trailers")
        {
            head.headers.remove(http::header::TE);
        }
        if !body.is_empty() && !head.headers.contains_key(http::header::CONTENT_LENGTH) {
            head.headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let failed = |error: h2::Error| {
            if error.is_io() || error.is_go_away() {
                self.alive.store(false, Ordering::Relaxed);
            }
            Error::Http2(error)
        };
        let mut sender = self.sender.clone().ready().await.map_err(|error| {
            self.alive.store(false, Ordering::Relaxed);
            Error::Http2(error)
        })?;
        let (response, mut stream) = sender
            .send_request(Request::from_parts(head, ()), body.is_empty())
            .map_err(failed)?;
        if !body.is_empty() {
            // Queued whole: flow control paces the DATA frames, not this call.
            stream.send_data(body, true).map_err(failed)?;
        }
        response.await.map_err(failed)
    }
}

/// What a checkout without a usable connection has to do.
struct Open {
    http2: bool,
    opening: Arc<tokio::sync::Mutex<()>>,
    /// The last failure to open the HTTP/2 connection.
    failed: Option<(Instant, Arc<str>)>,
}

impl Pool {
    fn hosts(&self) -> MutexGuard<'_, Hosts> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection to `key` and whether it was in use before.
    async fn connection(&self, key: &Key, uri: &Uri) -> Result<(Connection, bool), Error> {
        let open = match self.reuse(key) {
            Ok(connection) => return Ok((connection, true)),
            Err(open) => open,
        };
        // Boxed: opening a connection (TLS and HTTP/2 state included) takes kilobytes, and
        // inline it would size every waiting request's future, though few ever open one.
        if !open.http2 {
            return Ok((Box::pin(self.open(key, uri)).await?, false));
        }
        let queued = Instant::now();
        let turn = open.opening.lock().await;
        // The request before this one in line may have opened it, or failed to: then the
        // burst shares that failure rather than trying once each, one after another. If the
        // host turned out to speak HTTP/1.1, each request opens its own, without waiting.
        match self.reuse(key) {
            Ok(connection) => return Ok((connection, true)),
            Err(Open {
                failed: Some((at, message)),
                ..
            }) if at >= queued => return Err(Error::Connect(message.to_string().into())),
            Err(Open { http2: false, .. }) => {
                drop(turn);
                return Ok((Box::pin(self.open(key, uri)).await?, false));
            }
            Err(_) => {}
        }
        match Box::pin(self.open(key, uri)).await {
            Ok(connection) => Ok((connection, false)),
            Err(error) => {
                let message = match &error {
                    Error::Connect(source) => atalaya_telemetry::error_chain(&**source),
                    other => other.to_string(),
                };
                let mut hosts = self.hosts();
                let host = hosts.map.entry(key.clone()).or_default();
                host.failed = Some((Instant::now(), message.into()));
                Err(error)
            }
        }
    }

    fn reuse(&self, key: &Key) -> Result<Connection, Open> {
        let mut hosts = self.hosts();
        if hosts.swept.elapsed() >= SWEEP_EVERY {
            hosts.swept = Instant::now();
            hosts.map.retain(|_, host| {
                host.idle.retain_mut(|(connection, since)| {
                    since.elapsed() < IDLE_TIMEOUT && connection.usable()
                });
                if host.http2.as_ref().is_some_and(|sender| sender.is_closed()) {
                    host.http2 = None;
                }
                host.protocol_known || host.http2.is_some() || !host.idle.is_empty()
            });
        }
        let host = match hosts.map.get_mut(key) {
            Some(host) => host,
            None => hosts.map.entry(key.clone()).or_default(),
        };
        if let Some(sender) = &host.http2 {
            if !sender.is_closed() {
                return Ok(Connection::Http2(sender.clone()));
            }
            host.http2 = None;
        }
        while let Some((mut connection, since)) = host.idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && connection.usable() {
                return Ok(Connection::Http1(connection));
            }
        }
        Err(Open {
            // Plain HTTP without prior knowledge can only be HTTP/1.1; over TLS, ALPN decides.
            http2: self.http2_only
                || host.speaks_http2
                || (!host.protocol_known && key.scheme == Scheme::HTTPS),
            opening: host.opening.clone(),
            failed: host.failed.clone(),
        })
    }

    async fn open(&self, key: &Key, uri: &Uri) -> Result<Connection, Error> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(Error::Connect)?;
        let io = connector.call(uri.clone()).await.map_err(Error::Connect)?;
        if self.http2_only || io.connected().is_negotiated_h2() {
            // hyper's HTTP/2 client settings.
            let (sender, connection) = h2::client::Builder::new()
                .initial_window_size(2 << 20)
                .initial_connection_window_size(5 << 20)
                .max_frame_size(16 << 10)
                .max_header_list_size(16 << 10)
                .max_send_buffer_size(1 << 20)
                .max_local_error_reset_streams(Some(1024))
                // Streams cancelled (a client went away) are remembered for a second, so
                // frames already on their way for them are ignored. With h2's default of 50, a
                // thousand clients leaving at once made each late frame a protocol error, and
                // at 1,024 of those h2 closed the connection, failing every other stream on it.
                .max_concurrent_reset_streams(100_000)
                .enable_push(false)
                .handshake::<_, Bytes>(TokioIo::new(io))
                .await
                .map_err(|error| Error::Connect(error.into()))?;
            let alive = Arc::new(AtomicBool::new(true));
            let ended = alive.clone();
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "An upstream HTTP/2 connection ended with an error.");
                }
                ended.store(false, Ordering::Relaxed);
            });
            tracing::debug!(host = %key.authority, protocol = "HTTP/2", "Opened an upstream connection.");
            let connection = Http2Connection { sender, alive };
            let mut hosts = self.hosts();
            let host = hosts.map.entry(key.clone()).or_default();
            host.speaks_http2 = true;
            host.protocol_known = true;
            host.http2 = Some(connection.clone());
            Ok(Connection::Http2(connection))
        } else {
            tracing::debug!(host = %key.authority, protocol = "HTTP/1.1", "Opened an upstream connection.");
            self.hosts()
                .map
                .entry(key.clone())
                .or_default()
                .protocol_known = true;
            Ok(Connection::Http1(http1::Connection::new(TokioIo::new(io))))
        }
    }
}

/// An HTTP/1.1 connection to put back in the pool once its response has been read to the
/// end; dropped sooner, it closes.
struct IdleReturn {
    pool: Arc<Pool>,
    key: Key,
}

impl IdleReturn {
    /// Gives `body`'s connection back, if it was read to its end and may take another request.
    fn put_back(self, body: UpstreamBody) {
        let UpstreamBody::Http1(body) = body else {
            return;
        };
        if let Some(connection) = body.into_idle() {
            let mut hosts = self.pool.hosts();
            let host = hosts.map.entry(self.key).or_default();
            host.idle.push((connection, Instant::now()));
        }
    }
}

/// An upstream answer's headers: an HTTP/2 answer's map, or an HTTP/1.1 answer's fields as
/// they were read (a map is built only if asked for).
pub(crate) enum UpstreamHeaders {
    Map(HeaderMap),
    Raw(http1::RawHeaders),
}

impl UpstreamHeaders {
    /// The first value of the header `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        match self {
            UpstreamHeaders::Map(map) => map.get(name).cloned(),
            UpstreamHeaders::Raw(raw) => raw.get(name),
        }
    }

    pub fn into_map(self) -> HeaderMap {
        match self {
            UpstreamHeaders::Map(map) => map,
            UpstreamHeaders::Raw(raw) => raw.into_map(),
        }
    }
}

/// An upstream's response, its body still to read.
pub(crate) struct UpstreamResponse {
    /// Its headers are in `headers`.
    response: Response<UpstreamBody>,
    headers: UpstreamHeaders,
    read_timeout: Duration,
    /// HTTP/1.1: the connection, for the pool once the body is read.
    idle: Option<IdleReturn>,
}

impl UpstreamResponse {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The first value of the header `name`.
    pub fn header(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.headers.get(name)
    }

    /// The headers, moved out (reading the body needs none of them).
    pub fn take_headers(&mut self) -> UpstreamHeaders {
        std::mem::replace(&mut self.headers, UpstreamHeaders::Map(HeaderMap::new()))
    }

    /// The whole body (the caller bounds the time).
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let mut body = self.response.into_body();
        let mut whole = bytes::BytesMut::new();
        let mut first = None;
        while let Some(chunk) = poll_fn(|cx| body.poll_chunk(cx)).await {
            let chunk = chunk.map_err(Error::Body)?;
            // A body in one chunk (the usual case) is passed on without a copy.
            match first.take() {
                None if whole.is_empty() => first = Some(chunk),
                None => whole.extend_from_slice(&chunk),
                Some(earlier) => {
                    whole.extend_from_slice(&earlier);
                    whole.extend_from_slice(&chunk);
                }
            }
        }
        if let Some(idle) = self.idle {
            idle.put_back(body);
        }
        Ok(first.unwrap_or_else(|| whole.freeze()))
    }

    /// The body's chunks as they arrive; a silence longer than the read timeout ends it with
    /// an error.
    pub fn into_stream(self) -> BodyStream {
        BodyStream {
            body: Some(self.response.into_body()),
            read_timeout: self.read_timeout,
            timer: Box::pin(tokio::time::sleep(self.read_timeout)),
            idle: self.idle,
        }
    }
}

/// See [`UpstreamResponse::into_stream`]; errors are the failure's description.
pub(crate) struct BodyStream {
    /// `None` once the body ended or failed.
    body: Option<UpstreamBody>,
    read_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    idle: Option<IdleReturn>,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match body.poll_chunk(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let deadline = Instant::now() + this.read_timeout;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.body = None;
                this.idle = None;
                Poll::Ready(Some(Err(crate::providers::error_chain(&*error))))
            }
            Poll::Ready(None) => {
                if let (Some(idle), Some(body)) = (this.idle.take(), this.body.take()) {
                    idle.put_back(body);
                }
                this.body = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                this.body = None;
                this.idle = None;
                Poll::Ready(Some(Err(format!(
                    "the upstream sent nothing for {} s (read timeout)",
                    this.read_timeout.as_secs_f64()
                ))))
            }
        }
    }
}

/// A response body from either protocol.
enum UpstreamBody {
    Http1(http1::Body),
    Http2(h2::RecvStream),
}

impl UpstreamBody {
    /// The next chunk of data; trailers carry nothing a relay passes on.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        match self {
            UpstreamBody::Http1(body) => match ready!(body.poll_chunk(cx)) {
                Some(Ok(data)) => Poll::Ready(Some(Ok(data))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            UpstreamBody::Http2(body) => match ready!(body.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read, so the upstream may send as much again.
                    let _ = body.flow_control().release_capacity(data.len());
                    Poll::Ready(Some(Ok(data)))
                }
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use http::HeaderValue;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    fn client(read_timeout: Duration) -> HttpClient {
        let mut headers = HeaderMap::new();
        headers.insert("x-default", HeaderValue::from_static("kept"));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        HttpClient::new(&ClientSettings {
            headers,
            connect_timeout: Duration::from_secs(5),
            read_timeout,
            http2_prior_knowledge: false,
        })
        .unwrap()
    }

    /// A server that reads one request head, hands it over, and answers with `answer`, then
    /// stays silent with the connection open.
    async fn server(answer: &'static [u8]) -> (String, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = socket.read(&mut buffer).await.unwrap();
                assert!(read > 0, "the client closed before its request head");
                head.extend_from_slice(&buffer[..read]);
            }
            let _ = head_tx.send(String::from_utf8_lossy(&head).to_lowercase());
            socket.write_all(answer).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        (url, head_rx)
    }

    #[tokio::test]
    async fn defaults_are_sent_unless_the_request_sets_them() {
        let (url, head) = server(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let request = Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Bytes::from_static(b"hi"))
            .unwrap();
        let response = client(Duration::from_secs(5)).send(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let head = head.await.unwrap();
        assert!(head.contains("x-default: kept\r\n"), "{head}");
        assert!(head.contains("content-type: text/plain\r\n"), "{head}");
        assert!(!head.contains("application/json"), "{head}");
        assert!(head.contains("content-length: 2\r\n"), "{head}");
    }

    /// An HTTP/1.1 server answering every request on a connection with "ok" (or, for a
    /// path of `/stream`, a chunked body sent in two parts 100 ms apart); counts the
    /// connections it accepted. A request for `/close` gets its answer and the connection
    /// closed.
    async fn http1_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buffer = [0u8; 1024];
                    loop {
                        let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match socket.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => pending.extend_from_slice(&buffer[..read]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                        pending.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                        if path == "/stream" {
                            socket
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n")
                                .await
                                .unwrap();
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let _ = socket.write_all(b"2\r\nok\r\n0\r\n\r\n").await;
                        } else {
                            socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .unwrap();
                        }
                        if path == "/close" {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    fn get(url: &str) -> Request<Bytes> {
        Request::get(url).body(Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn http1_connections_are_reused_once_a_body_is_read_and_closed_if_dropped_sooner() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = http1_server().await;
        let client = client(Duration::from_secs(5));
        for _ in 0..3 {
            let response = client.send(get(&format!("{url}/"))).await.unwrap();
            assert_eq!(response.bytes().await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // A streamed body read to its end gives the connection back too.
        let response = client.send(get(&format!("{url}/stream"))).await.unwrap();
        let chunks: Vec<_> = response.into_stream().collect().await;
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        let response = client.send(get(&format!("{url}/"))).await.unwrap();
        assert_eq!(response.bytes().await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Dropped half-way, it cannot be reused: the next request opens another.
        let response = client.send(get(&format!("{url}/stream"))).await.unwrap();
        let mut stream = response.into_stream();
        stream.next().await.unwrap().unwrap();
        drop(stream);
        let response = client.send(get(&format!("{url}/"))).await.unwrap();
        assert_eq!(response.bytes().await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = http1_server().await;
        let client = client(Duration::from_secs(5));
        let response = client.send(get(&format!("{url}/close"))).await.unwrap();
        assert_eq!(response.bytes().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = client.send(get(&format!("{url}/"))).await.unwrap();
        assert_eq!(response.bytes().await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// An HTTP/2 (h2c) server echoing each request's body; counts the connections it
    /// accepted, and closes each after `lifetime`.
    async fn http2_server(lifetime: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let body = http_body_util::BodyExt::collect(request.into_body())
                        .await?
                        .to_bytes();
                    Ok::<_, hyper::Error>(Response::new(Full::new(body)))
                });
                let connection =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service);
                tokio::spawn(tokio::time::timeout(lifetime, connection));
            }
        });
        (url, accepted)
    }

    fn http2_client() -> HttpClient {
        HttpClient::new(&ClientSettings {
            headers: HeaderMap::new(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            http2_prior_knowledge: true,
        })
        .unwrap()
    }

    async fn echo(client: &HttpClient, url: &str, text: String) -> Result<Bytes, Error> {
        let request = Request::post(url).body(Bytes::from(text)).unwrap();
        client.send(request).await?.bytes().await
    }

    #[tokio::test]
    async fn a_burst_to_an_http2_host_shares_one_connection() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = http2_server(Duration::from_secs(60)).await;
        let client = http2_client();
        let sends = (0..50).map(|index| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let text = format!("request {index}");
                assert_eq!(echo(&client, &url, text.clone()).await.unwrap(), text);
            }
        });
        futures_util::future::join_all(sends).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_http2_connection_that_ended_is_replaced() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = http2_server(Duration::from_millis(200)).await;
        let client = http2_client();
        assert_eq!(echo(&client, &url, "one".into()).await.unwrap(), "one");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(echo(&client, &url, "two".into()).await.unwrap(), "two");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_burst_to_an_http2_host_that_refuses_fails_as_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let client = http2_client();
        let sends = (0..20).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            async move { echo(&client, &url, "x".into()).await.unwrap_err() }
        });
        for error in futures_util::future::join_all(sends).await {
            assert!(error.is_connect(), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_stream_ends_with_a_read_timeout_error() {
        let (url, _head) = server(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await;
        let request = Request::get(url.as_str()).body(Bytes::new()).unwrap();
        let response = client(Duration::from_millis(300))
            .send(request)
            .await
            .unwrap();
        let mut stream = response.into_stream();
        assert_eq!(stream.next().await.unwrap().unwrap(), "hello");
        let error = stream.next().await.unwrap().unwrap_err();
        assert!(error.contains("read timeout"), "{error}");
        assert!(stream.next().await.is_none());
    }

    /// A server that answers one request with `answer` written `step` bytes at a time, each
    /// piece flushed on its own, then closes the connection.
    async fn trickling_server(answer: &'static [u8], step: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let read = socket.read(&mut buffer).await.unwrap();
                assert!(read > 0);
                head.extend_from_slice(&buffer[..read]);
            }
            for piece in answer.chunks(step) {
                if socket.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        url
    }

    /// The body's bytes, or the first error.
    async fn read_body(answer: &'static [u8], step: usize) -> Result<Vec<u8>, String> {
        let url = trickling_server(answer, step).await;
        let response = client(Duration::from_secs(5))
            .send(get(&url))
            .await
            .map_err(|error| atalaya_telemetry::error_chain(&error))?;
        let mut body = Vec::new();
        let mut stream = response.into_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok(body)
    }

    #[tokio::test]
    async fn http1_bodies_decode_however_the_bytes_arrive() {
        let chunked: &'static [u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
9\r\ndata: a\n\n\r\nA;ext=1\r\ndata: bc\n\n\r\n0\r\nx-trailer: t\r\n\r\n";
        let length: &'static [u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let until_close: &'static [u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end";
        for step in [1, 2, 3, 7, 1024] {
            assert_eq!(
                read_body(chunked, step).await.unwrap(),
                b"data: a\n\ndata: bc\n\n",
                "step {step}"
            );
            assert_eq!(
                read_body(length, step).await.unwrap(),
                b"hello",
                "step {step}"
            );
            assert_eq!(
                read_body(until_close, step).await.unwrap(),
                b"to the end",
                "step {step}"
            );
        }
    }

    #[tokio::test]
    async fn http1_header_values_come_through_as_sent() {
        // Values share the head's bytes; the same whether the head arrives whole or a byte at
        // a time (then it is parsed again after each read, and split off once complete).
        let answer: &'static [u8] = b"HTTP/1.1 201 Created\r\nx-empty:\r\nContent-Length: 2\r\n\
x-ratelimit-remaining-tokens:  29999000 \r\nX-Mixed-Case: Value\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\nok";
        for step in [1, 5, 1024] {
            let url = trickling_server(answer, step).await;
            let mut response = client(Duration::from_secs(5))
                .send(get(&url))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let headers = response.take_headers();
            assert_eq!(
                headers
                    .get(&HeaderName::from_static("x-mixed-case"))
                    .unwrap(),
                "Value"
            );
            let headers = headers.into_map();
            assert_eq!(headers["x-empty"], "", "step {step}");
            assert_eq!(headers["x-ratelimit-remaining-tokens"], "29999000");
            assert_eq!(headers["x-mixed-case"], "Value");
            let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
            assert_eq!(cookies, ["a=1", "b=2"]);
            assert_eq!(&response.bytes().await.unwrap()[..], b"ok");
        }
    }

    #[tokio::test]
    async fn broken_http1_answers_are_errors_not_bodies() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
                "closed the connection",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
                "longer than its size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
                "closed the connection",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "content-length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                "conflicting content-lengths",
            ),
            (b"HTTP/9 200 OK\r\n\r\n", "not valid HTTP/1.1"),
            (b"", "closed the connection"),
        ] {
            let leaked: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let error = read_body(leaked, 1024).await.unwrap_err();
            assert!(
                error.contains(expected),
                "{:?}: {error}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn events_that_arrive_together_come_out_as_one_piece() {
        // Two chunks written at once reach the client in one read (loopback, one write).
        let answer: &'static [u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        let url = trickling_server(answer, answer.len()).await;
        let response = client(Duration::from_secs(5))
            .send(get(&url))
            .await
            .unwrap();
        let pieces: Vec<_> = response.into_stream().collect().await;
        let pieces: Vec<Bytes> = pieces.into_iter().map(Result::unwrap).collect();
        assert_eq!(pieces, vec![Bytes::from_static(b"abcdef")]);
    }
}
