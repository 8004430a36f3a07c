//! Appends to the tamper-evident audit log: admin actions, key changes, secret access, auth
//! failures (at most a burst per window, the rest counted) and role denials.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use atalaya_security::audit::{ChainKey, Link, link_hash};
use atalaya_store::{AuditRow, NewAuditEntry, Store};
use axum::extract::ConnectInfo;
use axum::http::Extensions;
use tokio::time::Instant;

/// Auth failures recorded per window; the rest are counted into the next record.
const AUTH_FAILURE_BURST: u32 = 10;
const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// Writes audit entries; one per server, shared by every worker.
pub struct Auditor {
    store: Store,
    key: ChainKey,
    auth_failures: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    recorded: u32,
    suppressed: u64,
}

/// Who did it, from where.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub name: String,
    pub source_ip: String,
}

impl Auditor {
    pub fn new(store: Store, key: ChainKey) -> Auditor {
        Auditor {
            store,
            key,
            auth_failures: Mutex::new(Window {
                started: None,
                recorded: 0,
                suppressed: 0,
            }),
        }
    }

    /// Appends one entry. A failure is logged, never hidden: the log must not have silent gaps.
    pub async fn record(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Option<AuditRow> {
        let entry = NewAuditEntry {
            actor: actor.name.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            source_ip: actor.source_ip.clone(),
            detail: atalaya_security::mask::mask(&detail.to_string()).into_owned(),
        };
        let key = &self.key;
        match self
            .store
            .append_audit(entry, |row| link_hash(key, &link(row)))
            .await
        {
            Ok(row) => Some(row),
            Err(error) => {
                metrics::counter!(atalaya_telemetry::names::AUDIT_WRITE_ERRORS).increment(1);
                tracing::error!(action, target, error = %crate::providers::error_chain(&error), "Could not append to the audit log.");
                None
            }
        }
    }

    /// Records a failed authentication, unless the window's burst is spent (then it is
    /// counted and reported with the next one recorded).
    pub fn auth_failure(self: &std::sync::Arc<Self>, source_ip: String, reason: &'static str) {
        let suppressed = {
            let Ok(mut window) = self.auth_failures.lock() else {
                return;
            };
            let now = Instant::now();
            if window
                .started
                .is_none_or(|started| now.duration_since(started) >= AUTH_FAILURE_WINDOW)
            {
                window.started = Some(now);
                window.recorded = 0;
            }
            if window.recorded >= AUTH_FAILURE_BURST {
                window.suppressed += 1;
                return;
            }
            window.recorded += 1;
            std::mem::take(&mut window.suppressed)
        };
        let auditor = self.clone();
        tokio::spawn(async move {
            let actor = Actor {
                name: "anonymous".into(),
                source_ip,
            };
            auditor
                .record(
                    &actor,
                    "auth.failure",
                    "",
                    serde_json::json!({"reason": reason, "not_recorded_before": suppressed}),
                )
                .await;
        });
    }
}

/// A stored row as the chain sees it.
pub fn link(row: &AuditRow) -> Link<'_> {
    Link {
        seq: row.seq,
        at_ms: row.at_ms,
        actor: &row.actor,
        action: &row.action,
        target: &row.target,
        source_ip: &row.source_ip,
        detail: &row.detail,
        prev_hash: &row.prev_hash,
        hash: &row.hash,
    }
}

/// The client's address, when the server recorded it.
pub fn source_ip(extensions: &Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_default()
}

/// `("METHOD /path", source IP)` of a request being denied.
pub(crate) fn denied_request<B>(request: &axum::http::Request<B>) -> (String, String) {
    (
        format!("{} {}", request.method(), request.uri().path()),
        source_ip(request.extensions()),
    )
}
