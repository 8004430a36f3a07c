//! The live event feed: request summaries and breaker transitions arrive over SSE and over a
//! WebSocket as they happen; bad subscriptions get clear errors.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::harness::*;

/// An open SSE subscription.
pub struct Feed {
    response: reqwest::Response,
    buffer: String,
}

impl Feed {
    pub async fn open(server: &Server, key: &str, query: &str) -> Feed {
        let response = client_without_timeout()
            .get(format!("{}/api/v1/events{query}", server.url()))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Feed {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (its `event:` name and parsed `data:`), skipping comments.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(value).unwrap());
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return (name, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("no event within 10 s")
                .unwrap()
                .expect("the feed ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let (name, data) = self.next().await;
            if name == kind {
                return data;
            }
        }
    }
}

async fn next_message<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<tungstenite::Message, tungstenite::Error>> + Unpin,
{
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("no message within 10 s")
        .unwrap()
        .unwrap();
    serde_json::from_str(message.to_text().unwrap()).unwrap()
}

fn client_without_timeout() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn requests_and_breaker_transitions_stream_over_sse_and_websocket() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "{}[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 2\nwindow = 2\nopen_ms = 60000\n",
            gpt_on(&upstream)
        ),
        ..ServeOptions::default()
    });
    let viewer = create_key(&server, json!({"role": "viewer"})).await;
    let mut sse = Feed::open(
        &server,
        viewer["key"].as_str().unwrap(),
        "?types=request,breaker",
    )
    .await;

    let ws_url = format!(
        "ws://{}/api/v1/events?types=request",
        server.process.address
    );
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_KEY}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let url = format!("{}/v1/chat/completions", server.url());
    let (status, headers, _) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 200);
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();

    let event = sse.next_of("request").await;
    assert_eq!(event["type"], "request");
    assert!(event["time_ms"].as_i64().unwrap() > 0);
    let data = &event["data"];
    assert_eq!(data["request_id"], request_id.as_str(), "{event}");
    assert_eq!(data["status"], 200);
    assert_eq!(data["model"], "gpt-4o-mini");
    assert_eq!(data["deployment"], "p0/gpt-4o-mini");
    assert!(data["latency_ms"].as_f64().unwrap() > 0.0);

    let event = next_message(&mut socket).await;
    assert_eq!(event["type"], "request");
    assert_eq!(event["data"]["request_id"], request_id.as_str());

    // A failure in a window of two opens the deployment's breaker: the feed says so, and the
    // next call is refused without reaching the upstream.
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    for expected in [502, 503] {
        let (status, _, _) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(status, expected);
    }
    let breaker = sse.next_of("breaker").await;
    assert_eq!(breaker["data"]["breaker"], "p0/gpt-4o-mini", "{breaker}");
    assert_eq!(breaker["data"]["from"], "closed");
    assert_eq!(breaker["data"]["to"], "open");
    assert_eq!(breaker["data"]["open_ms"], 60000);
    assert!(
        breaker["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("failed")
    );

    // The WebSocket asked for requests only: the next thing it sees is the next request.
    let event = next_message(&mut socket).await;
    assert_eq!(event["type"], "request", "{event}");
    assert_eq!(event["data"]["status"], 502);
    socket
        .send(tungstenite::Message::Close(None))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_subscriptions_are_refused_clearly() {
    let server = serve(ServeOptions::default());
    let (status, body) = get(
        &format!("{}/api/v1/events?types=request,gossip", server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "types");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gossip")
    );
    let (status, _) = get(&format!("{}/api/v1/events", server.url()), "sk-atl-wrong").await;
    assert_eq!(status, 401);
    let developer = create_key(&server, json!({"role": "developer"})).await;
    let (status, _) = get(
        &format!("{}/api/v1/events", server.url()),
        developer["key"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    // A WebSocket without a key is refused before the upgrade.
    let ws_url = format!("ws://{}/api/v1/events", server.process.address);
    match tokio_tungstenite::connect_async(ws_url).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
}
