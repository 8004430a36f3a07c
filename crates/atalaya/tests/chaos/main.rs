#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The chaos suite: faults injected into providers, storage and clients around the real
//! binary, each scenario asserting what clients saw and that nothing that could have been
//! saved was lost. It prints one line per scenario:
//!
//! `CHAOS | scenario | injected | client success | rows lost | note`
//!
//! The quick form (8 requests a scenario) runs with the rest of the tests; `scripts/chaos`
//! runs the full form (`ATALAYA_CHAOS_FULL=1`: 100 requests, 16 at a time) and collects the
//! lines into a table (`ATALAYA_CHAOS_REPORT`).

#[path = "../it/harness.rs"]
#[allow(dead_code)]
mod harness;

mod client;
mod clock;
mod config;
mod provider;
mod storage;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;

use crate::harness::*;

/// Requests per scenario.
pub fn scale() -> usize {
    if std::env::var("ATALAYA_CHAOS_FULL").is_ok_and(|v| v == "1") {
        100
    } else {
        8
    }
}

pub fn concurrency() -> usize {
    scale().min(16)
}

/// Retries within the request, a breaker that opens after four failures and probes after a
/// second, and no retry budget in the way: a deployment that answers serves every request.
pub const ROUTING: &str = "[routing]\nmax_attempts = 3\nbackoff_base_ms = 10\nbackoff_max_ms = 50\n\
    max_retry_after_ms = 1\nretry_budget_ratio = 1.0\nretry_budget_floor = 100000\n\
    [routing.breaker]\nminimum_calls = 4\nwindow = 8\nopen_ms = 1000\n";

/// Model `m`: `p0` first, `p1` when it fails, with short timeouts so hangs fail over fast.
pub fn model_m(deployments: usize) -> String {
    model_with("priority", deployments)
}

pub fn model_with(strategy: &str, deployments: usize) -> String {
    let mut text = format!(
        "[[models]]\nname = \"m\"\nstrategy = \"{strategy}\"\nttfb_timeout_ms = 500\nidle_timeout_ms = 1000\n"
    );
    for index in 0..deployments {
        text.push_str(&format!(
            "[[models.deployments]]\nprovider = \"p{index}\"\nmodel = \"gpt-4o-mini\"\n"
        ));
    }
    text
}

pub struct Cluster {
    pub mocks: Vec<Process>,
    pub server: Server,
}

/// Two simulators behind model `m` (priority), plus `extra` config.
pub fn cluster(extra: &str) -> Cluster {
    cluster_with("priority", extra)
}

pub fn cluster_with(strategy: &str, extra: &str) -> Cluster {
    let mocks = vec![mock(MockOptions::default()), mock(MockOptions::default())];
    let refs: Vec<&Process> = mocks.iter().collect();
    let server = serve(ServeOptions {
        config: &format!(
            "{}{}{ROUTING}{extra}",
            providers_for(&refs),
            model_with(strategy, 2)
        ),
        ..ServeOptions::default()
    });
    Cluster { mocks, server }
}

pub fn ask(stream: bool) -> String {
    chat_body("m", stream)
}

/// What clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    pub statuses: BTreeMap<u16, usize>,
    /// A sample of what a failed request got.
    pub failure: Option<String>,
}

impl Tally {
    /// Adds another batch's counts to this one.
    pub fn absorb(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }

    pub fn seen(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{count}×{status}"))
            .collect();
        statuses.join(" ")
    }
}

/// Whether an answer is a complete success: 200, and for a stream, its end marker with no
/// error event.
fn succeeded(status: u16, body: &str, stream: bool) -> bool {
    status == 200
        && (!stream
            || ((body.contains("[DONE]") || body.contains("message_stop"))
                && !body.contains("\"error\"")))
}

/// Sends `count` requests (`concurrency` at a time) and tallies what came back.
pub async fn fire(server: &Server, path: &str, body: &str, count: usize, stream: bool) -> Tally {
    let client = client();
    let url = format!("{}{path}", server.url());
    let results: Vec<(u16, String)> = futures_util::stream::iter(0..count)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.to_owned());
            async move {
                match client
                    .post(&url)
                    .bearer_auth(ADMIN_KEY)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (status, response.text().await.unwrap_or_default())
                    }
                    Err(error) => (0, error.to_string()),
                }
            }
        })
        .buffer_unordered(concurrency())
        .collect()
        .await;
    let mut tally = Tally {
        sent: count,
        ..Tally::default()
    };
    for (status, text) in results {
        *tally.statuses.entry(status).or_default() += 1;
        if succeeded(status, &text, stream) {
            tally.ok += 1;
        } else if tally.failure.is_none() {
            // The end says most: a stream's error event comes last.
            let skip = text.chars().count().saturating_sub(400);
            tally.failure = Some(text.chars().skip(skip).collect());
        }
    }
    tally
}

/// Request-log rows missing once the writer has had time: every request sent, bad ones
/// included, must have its row.
pub async fn lost_rows(server: &Server, expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = log_row_count(server).await;
        if rows >= expected || std::time::Instant::now() > deadline {
            return expected.saturating_sub(rows);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every row in the request log, counted page by page through the admin API.
async fn log_row_count(server: &Server) -> usize {
    let mut count = 0;
    let mut before: Option<i64> = None;
    loop {
        let mut url = format!("{}/api/v1/logs?limit=1000", server.url());
        if let Some(before) = before {
            url.push_str(&format!("&before={before}"));
        }
        let (status, page) = get(&url, ADMIN_KEY).await;
        assert_eq!(status, 200, "{page}");
        count += page["data"].as_array().map_or(0, Vec::len);
        match page["next_before"].as_i64() {
            Some(next) => before = Some(next),
            None => return count,
        }
    }
}

/// Records the scenario and asserts the usual outcome: every request served, every row there.
pub async fn all_served_and_logged(
    server: &Server,
    scenario: &str,
    injected: &str,
    tally: &Tally,
    note: &str,
) {
    let lost = lost_rows(server, tally.sent).await;
    record(scenario, injected, tally, lost, note);
    assert_eq!(tally.ok, tally.sent, "{scenario}: {:?}", tally.failure);
    assert_eq!(lost, 0, "{scenario}");
}

/// Prints the scenario's line and adds it to `ATALAYA_CHAOS_REPORT` when set.
pub fn record(scenario: &str, injected: &str, tally: &Tally, lost: usize, note: &str) {
    let line = format!(
        "CHAOS | {scenario} | {injected} | {}/{} ({}) | {lost} | {note}",
        tally.ok,
        tally.sent,
        tally.seen()
    );
    println!("{line}");
    if let Ok(path) = std::env::var("ATALAYA_CHAOS_REPORT")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let row = json!({
            "scenario": scenario,
            "injected": injected,
            "sent": tally.sent,
            "ok": tally.ok,
            "statuses": tally.seen(),
            "lost": lost,
            "note": note,
        });
        let _ = writeln!(file, "{row}");
    }
}
