//! A plain-HTTP accept loop: HTTP/1.1, and HTTP/2 for clients that open with its preface
//! (h2c with prior knowledge), on one port. The gateway's workers and mock-provider use it.
//!
//! Why not `axum::serve`: it tells the protocols apart by reading the connection's first
//! bytes and handing them back through a rewinding wrapper, and hyper's HTTP/1 read buffer,
//! filled first with those 24 bytes, then grows from 8 to 16 KB on the next read (measured with
//! heaptrack and gdb: one 16 KB reallocation per connection). Peeking at the socket instead
//! leaves the bytes in the kernel, so every HTTP/1 connection keeps an 8 KB read buffer: 80 MB
//! less for 10,000 open streams.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
pub use tokio_util::sync::CancellationToken;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new connection may take to send enough bytes to tell its protocol.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(30);

/// What the HTTP/2 side accepts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Streams one HTTP/2 connection may have open at once; `None`: hyper's default (200).
    /// A client past it waits for a stream to end.
    pub http2_max_concurrent_streams: Option<u32>,
}

/// A connection's service: what hyper can drive over HTTP/1 and HTTP/2 (an axum `Router`
/// is one).
pub trait HttpService:
    tower_service::Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    type Body: http_body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;
}

impl<S, B> HttpService for S
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
}

/// Accepts until `shutdown`, then waits for every connection to finish its requests.
/// `service` builds each connection's service from the peer's address.
pub async fn serve<F, S>(
    listener: TcpListener,
    service: F,
    options: Options,
    shutdown: CancellationToken,
) where
    F: Fn(SocketAddr) -> S,
    S: HttpService,
{
    // Each connection holds a receiver; `closed()` resolves when the last one is gone.
    let (open, connections) = watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::error!(%error, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = service(peer);
        let held = connections.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(tcp, service, options, shutdown).await;
            drop(held);
        });
    }
    drop(listener);
    drop(connections);
    open.closed().await;
}

async fn serve_connection<S: HttpService>(
    tcp: TcpStream,
    service: S,
    options: Options,
    shutdown: CancellationToken,
) {
    let http2 = match tokio::time::timeout(SNIFF_TIMEOUT, starts_with_preface(&tcp)).await {
        Ok(Ok(http2)) => http2,
        // Closed, failed or silent before saying anything useful.
        _ => return,
    };
    let io = TokioIo::new(tcp);
    let service = TowerToHyperService::new(service);
    // Each protocol in a function of its own, HTTP/2's boxed: an async fn's state machine
    // lays out every branch's locals side by side, and one function holding both
    // connection types took 3 KB of every connection's task; HTTP/1 alone needs under 1 KB.
    if http2 {
        Box::pin(serve_http2(io, service, options, shutdown)).await;
    } else {
        serve_http1(io, service, shutdown).await;
    }
}

type Io = TokioIo<TcpStream>;

/// Until the connection ends; on shutdown, finish the requests in flight and stop.
macro_rules! drive {
    ($connection:expr, $shutdown:expr) => {{
        let mut connection = std::pin::pin!($connection);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = $shutdown.cancelled() => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }};
}

async fn serve_http1<S: HttpService>(
    io: Io,
    service: TowerToHyperService<S>,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    // No timer is set: hyper's default header timeout would only warn.
    builder.header_read_timeout(None);
    drive!(
        builder.serve_connection(io, service).with_upgrades(),
        shutdown
    );
}

async fn serve_http2<S: HttpService>(
    io: Io,
    service: TowerToHyperService<S>,
    options: Options,
    shutdown: CancellationToken,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // WebSockets over HTTP/2 (RFC 8441) for the live feed.
    builder.enable_connect_protocol();
    if let Some(streams) = options.http2_max_concurrent_streams {
        builder.max_concurrent_streams(streams);
    }
    drive!(builder.serve_connection(io, service), shutdown);
}

/// Whether the client opened with HTTP/2's preface; peeks, so nothing is consumed.
async fn starts_with_preface(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut buffer = [0u8; PREFACE.len()];
    loop {
        let read = tcp.peek(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buffer[..read] != PREFACE[..read] {
            return Ok(false);
        }
        if read == PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface so far: wait for more. Peeking again at once would spin,
        // since the bytes already there stay readable.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A connected pair: what the client writes, the server side peeks at.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn the_preface_is_recognised_even_in_pieces_and_nothing_is_consumed() {
        let (mut client, server) = pair().await;
        client.write_all(&PREFACE[..3]).await.unwrap();
        let sniff = tokio::spawn(async move {
            let http2 = starts_with_preface(&server).await.unwrap();
            (http2, server)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.write_all(&PREFACE[3..]).await.unwrap();
        let (http2, server) = sniff.await.unwrap();
        assert!(http2);
        // The bytes are still there for hyper to read.
        let mut buffer = [0u8; 64];
        let read = server.peek(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..read], PREFACE);
    }

    #[tokio::test]
    async fn http1_and_a_closed_connection_are_told_apart() {
        let (mut client, server) = pair().await;
        client.write_all(b"PUT / HTTP/1.1\r\n").await.unwrap();
        assert!(!starts_with_preface(&server).await.unwrap());

        let (client, server) = pair().await;
        drop(client);
        assert!(starts_with_preface(&server).await.is_err());
    }
}
