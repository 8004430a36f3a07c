//! The HTTP client every upstream call goes through: hyper-util's pooled client, HTTP/1.1
//! and HTTP/2 (by ALPN over TLS, by prior knowledge over plain HTTP when configured), rustls
//! with the platform's trust roots.
//!
//! Why not reqwest (used until 2026-12): it wraps hyper-util's client in redirect and retry
//! layers that copy every request's URL and headers and re-parse the URL of every response,
//! and each waiting request held their state (about 4.5 KB in heaptrack) on top of
//! hyper-util's own. Measured on the same mock: about 20 % less gateway CPU a request, and
//! 10,000 h2c streams peaking at 333–350 MB instead of 362–373 (bench/gateway and bench/load
//! RESULTS.md). An API gateway follows no
//! redirects (a provider's 3xx is passed on as an upstream error), and hyper-util itself
//! retries a request that a pooled connection dropped before sending it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::{Instant, Sleep};

use hyper_util::client::legacy::Error;

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

#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(settings.http2_prior_knowledge)
            .build(connector);
        Ok(HttpClient {
            inner,
            defaults: Arc::new(settings.headers.clone()),
            read_timeout: settings.read_timeout,
        })
    }

    /// Sends `request` with the client's default headers where it sets none of its own;
    /// resolves when the response headers arrive.
    pub async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<UpstreamResponse, Error> {
        let headers = request.headers_mut();
        for (name, value) in self.defaults.iter() {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let response = self.inner.request(request).await?;
        Ok(UpstreamResponse {
            response,
            read_timeout: self.read_timeout,
        })
    }
}

/// An upstream's response, its body still to read.
pub(crate) struct UpstreamResponse {
    response: Response<Incoming>,
    read_timeout: Duration,
}

impl UpstreamResponse {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    pub fn headers(&self) -> &HeaderMap {
        self.response.headers()
    }

    /// The whole body (the caller bounds the time).
    pub async fn bytes(self) -> Result<Bytes, hyper::Error> {
        Ok(self.response.into_body().collect().await?.to_bytes())
    }

    /// The body's chunks as they arrive; a silence longer than the read timeout ends it with
    /// an error.
    pub fn into_stream(self) -> BodyStream {
        BodyStream {
            body: Some(self.response.into_body()),
            read_timeout: self.read_timeout,
            timer: Box::pin(tokio::time::sleep(self.read_timeout)),
        }
    }
}

/// See [`UpstreamResponse::into_stream`]; errors are the failure's description.
pub(crate) struct BodyStream {
    /// `None` once the body ended or failed.
    body: Option<Incoming>,
    read_timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(body) = this.body.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry nothing a relay passes on.
                    if let Ok(data) = frame.into_data() {
                        let deadline = Instant::now() + this.read_timeout;
                        this.timer.as_mut().reset(deadline);
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    this.body = None;
                    return Poll::Ready(Some(Err(crate::providers::error_chain(&error))));
                }
                Poll::Ready(None) => {
                    this.body = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(this.timer.as_mut().poll(cx));
                    this.body = None;
                    return Poll::Ready(Some(Err(format!(
                        "the upstream sent nothing for {} s (read timeout)",
                        this.read_timeout.as_secs_f64()
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use http::HeaderValue;
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
            .body(Full::new(Bytes::from_static(b"hi")))
            .unwrap();
        let response = client(Duration::from_secs(5)).send(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let head = head.await.unwrap();
        assert!(head.contains("x-default: kept\r\n"), "{head}");
        assert!(head.contains("content-type: text/plain\r\n"), "{head}");
        assert!(!head.contains("application/json"), "{head}");
        assert!(head.contains("content-length: 2\r\n"), "{head}");
    }

    #[tokio::test]
    async fn a_silent_stream_ends_with_a_read_timeout_error() {
        let (url, _head) = server(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )
        .await;
        let request = Request::get(url.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
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
}
