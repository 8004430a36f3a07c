//! Configuration reload through the API: `POST /api/v1/config/reload` asks the process that
//! owns the configuration (the binary's serve loop, which also reloads on SIGHUP) to read it
//! again, and answers with what happened; `GET` shows the last outcome.
//!
//! A file that does not load or validate changes nothing: the running configuration stays
//! and the answer says why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::Gateway;
use crate::audit::Actor;
use crate::error::ApiError;

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// Whether the new configuration is now serving.
    pub reloaded: bool,
    /// Counts the configurations served since start: 1 is the one read at start.
    pub generation: u64,
    pub at_ms: i64,
    /// Who asked: `signal` (SIGHUP), or the key id (`admin` for the admin key).
    pub requested_by: String,
    /// Why the file was refused; the running configuration was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Sections that differ from the configuration served before (secret values are not
    /// compared: a changed key is applied but not listed).
    pub changed: Vec<String>,
    /// Sections that changed but only take effect after a restart; they keep their old
    /// values until then.
    pub restart_needed: Vec<String>,
}

/// A request to reload, answered on `reply`.
pub struct ReloadRequest {
    pub actor: Actor,
    pub reply: oneshot::Sender<ReloadOutcome>,
}

/// The gateway's side of the reload channel, and the last outcome.
#[derive(Clone)]
pub struct Reloads {
    sender: mpsc::Sender<ReloadRequest>,
    last: Arc<Mutex<Option<ReloadOutcome>>>,
}

impl Reloads {
    /// The handle the gateway keeps, and the receiver the configuration owner serves.
    pub fn channel() -> (Reloads, mpsc::Receiver<ReloadRequest>) {
        let (sender, receiver) = mpsc::channel(4);
        (
            Reloads {
                sender,
                last: Arc::new(Mutex::new(None)),
            },
            receiver,
        )
    }

    /// Records an outcome (the owner calls this for reloads the API did not ask for too).
    pub fn record(&self, outcome: &ReloadOutcome) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(outcome.clone());
        }
    }

    fn last(&self) -> Option<ReloadOutcome> {
        self.last.lock().ok().and_then(|last| last.clone())
    }
}

/// How long an API caller waits for the reload (building clients, checking the file).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn reload(
    State(gateway): State<Arc<Gateway>>,
    extensions: axum::http::Extensions,
) -> Response {
    let Some(reloads) = &gateway.reloads else {
        return unavailable();
    };
    let (reply, answer) = oneshot::channel();
    let request = ReloadRequest {
        actor: crate::admin::actor(&extensions),
        reply,
    };
    if reloads.sender.send(request).await.is_err() {
        return unavailable();
    }
    match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
        Ok(Ok(outcome)) if outcome.reloaded => axum::Json(outcome).into_response(),
        Ok(Ok(outcome)) => {
            let message = format!(
                "The configuration was not reloaded; the running one is kept. {}",
                outcome.error.as_deref().unwrap_or("")
            );
            let error = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                message.trim_end(),
            );
            // The outcome goes along, so a script reads the same fields either way.
            let mut body: serde_json::Value =
                serde_json::from_slice(&error.body()).unwrap_or_default();
            body["reload"] = serde_json::to_value(&outcome).unwrap_or_default();
            error.render(body.to_string().into_bytes())
        }
        Ok(Err(_)) => unavailable(),
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "reload_timeout",
            "The reload did not finish within 30 s; GET /api/v1/config/reload shows its outcome.",
        )
        .into_response(),
    }
}

pub(crate) async fn last(State(gateway): State<Arc<Gateway>>) -> Response {
    let last = gateway.reloads.as_ref().and_then(Reloads::last);
    axum::Json(serde_json::json!({ "last": last })).into_response()
}

fn unavailable() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "reload_unavailable",
        "This server cannot reload its configuration now (it is starting or stopping).",
    )
    .into_response()
}
