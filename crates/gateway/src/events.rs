//! The live event feed: request summaries, circuit-breaker transitions, budget crossings and
//! alerts, fanned out to every subscriber of `GET /api/v1/events` (Server-Sent Events, or a
//! WebSocket when the request asks to upgrade).
//!
//! Publishing costs nothing while nobody listens (one atomic read); with listeners an event
//! is serialized once and shared. A subscriber that falls behind by more than the channel's
//! capacity is told how many events it missed and carries on; it never slows the gateway.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::Gateway;
use crate::error::ApiError;

/// The kinds of event, as named on the wire.
pub const KINDS: [&str; 6] = ["request", "breaker", "budget", "error", "alert", "health"];

/// Events held for slow subscribers before they start missing some.
const CAPACITY: usize = 4_096;
/// An SSE comment this often keeps proxies from closing an idle feed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One published event: its kind and its JSON text (`{"type", "time_ms", "data"}`).
#[derive(Debug)]
pub struct Event {
    pub kind: &'static str,
    pub json: Box<str>,
}

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Events {
    /// Whether anyone is listening; check before building an expensive payload.
    pub fn active(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn publish(&self, kind: &'static str, data: &impl Serialize) {
        if !self.active() {
            return;
        }
        #[derive(Serialize)]
        struct Envelope<'a, T> {
            #[serde(rename = "type")]
            kind: &'a str,
            time_ms: i64,
            data: &'a T,
        }
        let envelope = Envelope {
            kind,
            time_ms: atalaya_store::now_ms(),
            data,
        };
        if let Ok(json) = serde_json::to_string(&envelope) {
            let _ = self.sender.send(Arc::new(Event {
                kind,
                json: json.into_boxed_str(),
            }));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

/// A breaker's change of state on the feed.
#[derive(Serialize)]
struct BreakerEvent<'a> {
    breaker: &'a str,
    from: &'a str,
    to: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_ms: Option<u64>,
}

/// Puts every deployment's breaker transitions on the feed, and hands them to the alerts.
pub fn announce_breakers(
    routing: &crate::Routing,
    events: &Events,
    alerts: Option<Arc<crate::alerts::Alerts>>,
) {
    for breaker in routing.breakers() {
        let events = events.clone();
        let alerts = alerts.clone();
        breaker.set_listener(Arc::new(move |transition| {
            if let Some(alerts) = &alerts {
                alerts.signal(crate::alerts::Signal::Breaker {
                    breaker: transition.breaker.to_owned(),
                    to: transition.to.as_str(),
                    reason: transition.reason.to_owned(),
                });
            }
            events.publish(
                "breaker",
                &BreakerEvent {
                    breaker: transition.breaker,
                    from: transition.from.as_str(),
                    to: transition.to.as_str(),
                    reason: transition.reason,
                    open_ms: transition.open_for.map(|d| d.as_millis() as u64),
                },
            );
        }));
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    /// Comma-separated kinds to receive; all when absent.
    types: Option<String>,
}

/// Which kinds a subscriber wants.
#[derive(Clone, Copy)]
struct Wanted([bool; KINDS.len()]);

impl Wanted {
    fn parse(types: Option<&str>) -> Result<Wanted, ApiError> {
        let Some(types) = types else {
            return Ok(Wanted([true; KINDS.len()]));
        };
        let mut wanted = [false; KINDS.len()];
        for name in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some(index) = KINDS.iter().position(|kind| *kind == name) else {
                return Err(ApiError::invalid_request(
                    "invalid_value",
                    format!(
                        "'types' lists unknown event type `{name}`; known: {}.",
                        KINDS.join(", ")
                    ),
                )
                .with_param("types"));
            };
            wanted[index] = true;
        }
        Ok(Wanted(wanted))
    }

    fn wants(self, kind: &str) -> bool {
        KINDS
            .iter()
            .position(|k| *k == kind)
            .is_some_and(|index| self.0[index])
    }
}

/// What a subscriber receives next: an event, or a note that it missed some.
enum Next {
    Event(Arc<Event>),
    Missed(u64),
    Closed,
}

async fn next(receiver: &mut broadcast::Receiver<Arc<Event>>, wanted: Wanted) -> Next {
    loop {
        match receiver.recv().await {
            Ok(event) if wanted.wants(event.kind) => return Next::Event(event),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => return Next::Missed(missed),
            Err(broadcast::error::RecvError::Closed) => return Next::Closed,
        }
    }
}

fn missed_json(missed: u64) -> String {
    serde_json::json!({
        "type": "lagged",
        "time_ms": atalaya_store::now_ms(),
        "data": {"missed": missed},
    })
    .to_string()
}

/// `GET /api/v1/events[?types=request,breaker]`.
pub(crate) async fn feed(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let query = Query::<Params>::try_from_uri(request.uri());
    let wanted = match query
        .map_err(|rejection| {
            ApiError::invalid_request(
                "invalid_query",
                format!("Invalid query string: {}", rejection.body_text()),
            )
        })
        .and_then(|Query(params)| Wanted::parse(params.types.as_deref()))
    {
        Ok(wanted) => wanted,
        Err(error) => return error.into_response(),
    };
    let receiver = gateway.events.subscribe();
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let (mut parts, _) = request.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade
                .on_upgrade(move |socket| websocket(socket, receiver, wanted))
                .into_response(),
            Err(rejection) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_websocket_upgrade",
                rejection.body_text(),
            )
            .into_response(),
        };
    }
    sse(receiver, wanted)
}

fn sse(receiver: broadcast::Receiver<Arc<Event>>, wanted: Wanted) -> Response {
    let opening = Bytes::from_static(b": atalaya live events\n\n");
    let events = futures_util::stream::unfold(
        (receiver, Some(opening)),
        move |(mut receiver, first)| async move {
            if let Some(first) = first {
                return Some((Ok::<Bytes, Infallible>(first), (receiver, None)));
            }
            let chunk = match tokio::time::timeout(KEEP_ALIVE, next(&mut receiver, wanted)).await {
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                Ok(Next::Event(event)) => {
                    Bytes::from(format!("event: {}\ndata: {}\n\n", event.kind, event.json))
                }
                Ok(Next::Missed(missed)) => {
                    Bytes::from(format!("event: lagged\ndata: {}\n\n", missed_json(missed)))
                }
                Ok(Next::Closed) => return None,
            };
            Some((Ok(chunk), (receiver, None)))
        },
    );
    crate::relay::event_stream(Body::from_stream(events))
}

async fn websocket(
    mut socket: WebSocket,
    mut receiver: broadcast::Receiver<Arc<Event>>,
    wanted: Wanted,
) {
    loop {
        let text = tokio::select! {
            next = next(&mut receiver, wanted) => match next {
                Next::Event(event) => event.json.to_string(),
                Next::Missed(missed) => missed_json(missed),
                Next::Closed => break,
            },
            incoming = socket.recv() => match incoming {
                // The feed is one-way: pings are answered by axum, anything else is ignored.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishing_without_listeners_is_free_and_listeners_get_what_they_asked_for() {
        let events = Events::default();
        assert!(!events.active());
        events.publish("request", &serde_json::json!({"n": 0}));
        let mut receiver = events.subscribe();
        events.publish("request", &serde_json::json!({"n": 1}));
        events.publish("breaker", &serde_json::json!({"n": 2}));
        let wanted = Wanted::parse(Some("breaker")).unwrap();
        let Next::Event(event) = next(&mut receiver, wanted).await else {
            panic!("no event");
        };
        assert_eq!(event.kind, "breaker");
        let value: serde_json::Value = serde_json::from_str(&event.json).unwrap();
        assert_eq!(value["type"], "breaker");
        assert_eq!(value["data"]["n"], 2);
        assert!(value["time_ms"].as_i64().unwrap() > 0);
        assert!(Wanted::parse(Some("request,nope")).is_err());
    }

    #[tokio::test]
    async fn a_slow_listener_is_told_what_it_missed() {
        let events = Events::default();
        let mut receiver = events.subscribe();
        for n in 0..CAPACITY + 10 {
            events.publish("request", &n);
        }
        let wanted = Wanted::parse(None).unwrap();
        assert!(matches!(
            next(&mut receiver, wanted).await,
            Next::Missed(10)
        ));
        assert!(matches!(next(&mut receiver, wanted).await, Next::Event(_)));
    }
}
