//! A data-plane request's headers and body, owned by the handler.
//!
//! hyper parses a request's head, and a body that arrives with it, into slices of the
//! connection's 8 KB read buffer. While any of those slices lives, hyper cannot reuse the
//! buffer: to watch the connection for a client hang-up it allocates a second one, and a
//! handler that keeps the header map and body while it waits on the upstream (every chat
//! request does, for failover) holds two buffers for the whole wait. Copying the few hundred
//! bytes a request usually has frees the first buffer at once: measured with 2,000 streams
//! through an h2c upstream, peak RSS 120 → 108 MB (bench/load/RESULTS.md).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue};
use bytes::BytesMut;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::Gateway;

/// Bodies up to this size are copied; a larger one holds a buffer about its own size.
const COPIED_BODY_BYTES: usize = 64 * 1024;

/// The request's headers and body (or why the body could not be read), sharing nothing
/// with the connection's read buffer.
pub(crate) struct Owned {
    pub headers: HeaderMap,
    pub body: Result<Bytes, BodyError>,
}

/// Why a request's body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Longer than `server.max_body_bytes`.
    TooLarge,
    /// The client's stream failed (say, it hung up mid-body).
    Unreadable(String),
}

impl Owned {
    /// Reads the whole body, refusing one longer than `limit` bytes.
    pub(crate) async fn read(request: Request, limit: usize) -> Owned {
        let (parts, body) = request.into_parts();
        let headers = owned_headers(&parts.headers);
        drop(parts);
        let body = read_body(body, limit).await.map(|body| {
            if body.len() <= COPIED_BODY_BYTES {
                Bytes::copy_from_slice(&body)
            } else {
                body
            }
        });
        Owned { headers, body }
    }
}

impl FromRequest<Arc<Gateway>> for Owned {
    type Rejection = Infallible;

    async fn from_request(request: Request, gateway: &Arc<Gateway>) -> Result<Self, Infallible> {
        Ok(Owned::read(request, gateway.max_body_bytes).await)
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(error) => Err(BodyError::Unreadable(error.to_string())),
    }
}

/// Every value copied into one new buffer (one allocation, not one per header), each then a
/// slice of it.
fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let total = headers.iter().map(|(_, value)| value.len()).sum();
    let mut buffer = BytesMut::with_capacity(total);
    for (_, value) in headers {
        buffer.extend_from_slice(value.as_bytes());
    }
    let buffer = buffer.freeze();
    let mut owned = HeaderMap::with_capacity(headers.len());
    let mut at = 0;
    for (name, value) in headers {
        let end = at + value.len();
        // Bytes taken from a valid value are valid; the clone is never used.
        let copy = HeaderValue::from_maybe_shared(buffer.slice(at..end))
            .map(|mut copy| {
                copy.set_sensitive(value.is_sensitive());
                copy
            })
            .unwrap_or_else(|_| value.clone());
        at = end;
        owned.append(name.clone(), copy);
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_keep_every_header_and_the_body() {
        let buffer = Bytes::from_static(b"sk-atl-key{\"model\":\"m\"}");
        let mut value = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        value.set_sensitive(true);
        let request = Request::builder()
            .header("authorization", value)
            .header("x-extra", "one")
            .header("x-extra", "two")
            .body(axum::body::Body::from(buffer.slice(10..)))
            .unwrap();
        let owned = Owned::read(request, 1024).await;
        let authorization = &owned.headers["authorization"];
        assert_eq!(authorization, "sk-atl-key");
        assert!(authorization.is_sensitive());
        assert_ne!(authorization.as_bytes().as_ptr(), buffer.as_ptr());
        let extra: Vec<_> = owned.headers.get_all("x-extra").iter().collect();
        assert_eq!(extra, ["one", "two"]);
        let body = owned.body.unwrap();
        assert_eq!(&body[..], b"{\"model\":\"m\"}");
        assert_ne!(body.as_ptr(), buffer[10..].as_ptr());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let request = Request::builder()
            .body(axum::body::Body::from(vec![b'x'; 11]))
            .unwrap();
        assert!(matches!(
            Owned::read(request, 10).await.body,
            Err(BodyError::TooLarge)
        ));
        let request = Request::builder()
            .body(axum::body::Body::from(vec![b'x'; 10]))
            .unwrap();
        assert_eq!(Owned::read(request, 10).await.body.unwrap().len(), 10);
    }
}
