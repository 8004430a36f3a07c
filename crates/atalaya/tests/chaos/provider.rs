//! Provider faults: the first deployment misbehaves, the second is healthy, so every request
//! must still succeed (a healthy deployment could serve it) and every request must be logged.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::*;

/// `p0` under `profile`: every request must be served (by `p1`) and logged.
async fn fails_over(scenario: &str, injected: &str, profile: &str, stream: bool) {
    let cluster = cluster("");
    set_profile(&cluster.mocks[0], profile).await;
    let n = scale();
    let tally = fire(
        &cluster.server,
        "/v1/chat/completions",
        &ask(stream),
        n,
        stream,
    )
    .await;
    all_served_and_logged(
        &cluster.server,
        scenario,
        injected,
        &tally,
        "served by the healthy deployment",
    )
    .await;
}

#[tokio::test]
async fn provider_500_burst() {
    fails_over(
        "provider 500 burst",
        "p0 answers 500",
        r#"{"name": "failing"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn provider_502_burst() {
    fails_over(
        "provider 502 burst",
        "p0 answers 502",
        r#"{"rules": [{"status": 502}]}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn provider_503_burst() {
    fails_over(
        "provider 503 burst",
        "p0 answers 503",
        r#"{"name": "down"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn provider_429_burst() {
    fails_over(
        "provider 429 burst",
        "p0 answers 429, Retry-After 2 s",
        r#"{"name": "throttled"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn provider_hangs() {
    fails_over(
        "provider hangs",
        "p0 never answers",
        r#"{"name": "hang"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn slow_first_byte() {
    fails_over(
        "slow first byte",
        "p0 waits 3 s before headers (TTFB limit 500 ms)",
        r#"{"rules": [{"latency_ms": 3000}]}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn stream_500_before_first_byte() {
    fails_over(
        "stream, 500 before first byte",
        "p0 answers 500 to streams",
        r#"{"name": "failing"}"#,
        true,
    )
    .await;
}

#[tokio::test]
async fn malformed_json() {
    fails_over(
        "malformed JSON",
        "p0 sends broken JSON with 200",
        r#"{"name": "malformed"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn wrong_content_type() {
    fails_over(
        "wrong content type",
        "p0 sends an HTML page with 200",
        r#"{"name": "html"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn upstream_key_refused() {
    fails_over(
        "upstream key refused",
        "p0 answers 401 (key disabled)",
        r#"{"rules": [{"status": 401}]}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn flaky_provider() {
    fails_over(
        "flaky provider",
        "p0 fails half its calls",
        r#"{"name": "flaky"}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn jittery_latency() {
    fails_over(
        "jittery latency",
        "p0 latency varies widely",
        r#"{"name": "jittery"}"#,
        true,
    )
    .await;
}

#[tokio::test]
async fn slow_chunks() {
    // Slower than usual but within the idle limit: the stream completes where it started.
    fails_over(
        "slow chunks",
        "p0 streams a chunk every 50 ms (idle limit 1 s)",
        r#"{"rules": [{"slow_chunk_ms": 50}]}"#,
        true,
    )
    .await;
}

/// `p0` at an address that fails before HTTP: connection refused, or TLS to a plain server.
/// Returns the server, for a look at what it logged.
async fn unreachable(
    scenario: &str,
    injected: &str,
    base_url: impl Fn(&Process) -> String,
) -> Server {
    let healthy = mock(MockOptions::default());
    let target = mock(MockOptions::default());
    let config = format!(
        "[[providers]]\nname = \"p0\"\ntype = \"openai-compatible\"\nbase_url = \"{}\"\napi_key = \"sk-upstream-secret\"\nmodels = []\n\n\
         [[providers]]\nname = \"p1\"\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\nmodels = []\n\n{}{ROUTING}",
        base_url(&target),
        healthy.url(),
        model_m(2)
    );
    let server = serve(ServeOptions {
        config: &config,
        ..ServeOptions::default()
    });
    let n = scale();
    let tally = fire(&server, "/v1/chat/completions", &ask(false), n, false).await;
    all_served_and_logged(
        &server,
        scenario,
        injected,
        &tally,
        "served by the healthy deployment",
    )
    .await;
    server
}

#[tokio::test]
async fn connection_refused() {
    unreachable("connection refused", "p0 at a closed port", |_| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/v1")
    })
    .await;
}

#[tokio::test]
async fn tls_failure() {
    unreachable(
        "TLS failure",
        "p0 over https to a plain-HTTP server",
        |target| format!("{}/v1", target.url().replace("http://", "https://")),
    )
    .await;
}

#[tokio::test]
async fn name_resolution_failure() {
    // A 70-byte label is more than DNS allows (63): the system resolver refuses the name
    // before any query leaves the machine, so nothing is sent past 127.0.0.1.
    let host = format!("{}.invalid", "a".repeat(70));
    let server = unreachable("DNS failure", "p0's host name cannot be resolved", |_| {
        format!("http://{host}/v1")
    })
    .await;
    // The gateway tried p0 and said why it failed.
    let output = server.process.output();
    assert!(
        output.contains("dns error") || output.contains("lookup address"),
        "{output}"
    );
}

#[tokio::test]
async fn concurrent_burst_on_a_failing_deployment() {
    let cluster = cluster("");
    set_profile(&cluster.mocks[0], r#"{"name": "failing"}"#).await;
    let n = scale() * 4;
    let tally = fire(
        &cluster.server,
        "/v1/chat/completions",
        &ask(false),
        n,
        false,
    )
    .await;
    all_served_and_logged(
        &cluster.server,
        "burst on a failing deployment",
        "p0 answers 500 under a 4× burst",
        &tally,
        "breaker opens, p1 serves",
    )
    .await;
}

#[tokio::test]
async fn anthropic_client_fails_over() {
    let cluster = cluster("");
    set_profile(&cluster.mocks[0], r#"{"name": "down"}"#).await;
    let n = scale();
    let body = r#"{"model": "m", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Which way to the harbor?"}]}"#;
    let tally = fire(&cluster.server, "/v1/messages", body, n, true).await;
    all_served_and_logged(
        &cluster.server,
        "Anthropic client, provider down",
        "p0 answers 503 to an Anthropic-format stream",
        &tally,
        "translated answer from p1",
    )
    .await;
}

#[tokio::test]
async fn upstream_400_is_the_clients_not_a_failover() {
    let cluster = cluster("");
    set_profile(
        &cluster.mocks[0],
        r#"{"rules": [{"status": 400, "message": "max_tokens is too large"}]}"#,
    )
    .await;
    let n = scale();
    let tally = fire(
        &cluster.server,
        "/v1/chat/completions",
        &ask(false),
        n,
        false,
    )
    .await;
    let lost = lost_rows(&cluster.server, n).await;
    record(
        "upstream 400",
        "p0 rejects the request as invalid",
        &tally,
        lost,
        "the client's 400 passed on; no failover, breaker stays closed",
    );
    assert_eq!(tally.statuses.get(&400), Some(&n), "{:?}", tally.failure);
    assert!(tally.failure.unwrap().contains("max_tokens is too large"));
    assert_eq!(mock_requests(&cluster.mocks[1]).await, 0);
    let (_, health) = get(
        &format!("{}/api/v1/health", cluster.server.url()),
        ADMIN_KEY,
    )
    .await;
    assert_eq!(health["level"], "OPTIMAL", "{health}");
    assert_eq!(lost, 0);
}

#[tokio::test]
async fn mid_stream_disconnect() {
    let cluster = cluster("");
    set_profile(&cluster.mocks[0], r#"{"name": "cut"}"#).await;
    let n = scale();
    let tally = fire(&cluster.server, "/v1/chat/completions", &ask(true), n, true).await;
    let lost = lost_rows(&cluster.server, n).await;
    record(
        "mid-stream disconnect",
        "p0 drops the connection after 3 events",
        &tally,
        lost,
        "a cut stream ends with an error event (chunks already sent cannot be taken back) and its row records it; once p0's breaker opens, p1 serves whole streams",
    );
    // Failing over after bytes reached the client would duplicate text, so the client is
    // told clearly instead; once p0's breaker opens, p1 serves the rest whole.
    assert_eq!(tally.statuses.get(&200), Some(&n));
    assert!(tally.ok < n, "p0 cut at least the first streams");
    assert!(
        tally.failure.as_deref().unwrap_or("").contains("error"),
        "{:?}",
        tally.failure
    );
    assert_eq!(lost, 0);
    let rows = log_rows(&cluster.server).await;
    let with_error = rows.iter().filter(|r| !r["error"].is_null()).count();
    assert_eq!(
        with_error,
        n - tally.ok,
        "every cut stream's row says so: {rows:?}"
    );
}

#[tokio::test]
async fn all_providers_down_then_recovering() {
    // Priority: after the outage traffic goes to p0 only; p1's breaker closes through the
    // health probes of its model list, so the level comes back to OPTIMAL all the same.
    let cluster = cluster("[health]\ninterval_ms = 100\nrecover_after_ms = 300\n");
    for mock in &cluster.mocks {
        set_profile(mock, r#"{"name": "down"}"#).await;
    }
    let n = scale();
    let down = fire(
        &cluster.server,
        "/v1/chat/completions",
        &ask(false),
        n,
        false,
    )
    .await;
    let level = eventually(Duration::from_secs(30), || async {
        let (_, health) = get(
            &format!("{}/api/v1/health", cluster.server.url()),
            ADMIN_KEY,
        )
        .await;
        let level = health["level"].as_str().unwrap_or("").to_owned();
        (level != "OPTIMAL" && level != "DEGRADED").then_some(level)
    })
    .await;
    for mock in &cluster.mocks {
        set_profile(mock, r#"{"name": "healthy"}"#).await;
    }
    // No restart: breakers probe after `open_ms` and close on success.
    let back = eventually(Duration::from_secs(30), || async {
        let tally = fire(
            &cluster.server,
            "/v1/chat/completions",
            &ask(false),
            n,
            false,
        )
        .await;
        (tally.ok == n).then_some(tally)
    })
    .await;
    eventually(Duration::from_secs(30), || async {
        let (_, health) = get(
            &format!("{}/api/v1/health", cluster.server.url()),
            ADMIN_KEY,
        )
        .await;
        (health["level"] == "OPTIMAL").then_some(())
    })
    .await;
    let sent = log_rows(&cluster.server).await.len();
    let lost = lost_rows(&cluster.server, sent).await;
    record(
        "all providers down, then recovering",
        "p0 and p1 answer 503, then recover",
        &back,
        lost,
        &format!(
            "while down: {} ({}, level {level}); recovered without restart, level back to OPTIMAL",
            down.seen(),
            if down
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("\"error\""))
            {
                "clear OpenAI errors"
            } else {
                "unclear errors"
            }
        ),
    );
    assert_eq!(down.ok, 0);
    assert!(
        down.statuses.keys().all(|s| *s >= 500 && *s < 600),
        "{}",
        down.seen()
    );
    let failure: Value = serde_json::from_str(down.failure.as_deref().unwrap()).unwrap();
    assert!(failure["error"]["message"].is_string(), "{failure}");
    assert_eq!(lost, 0);
}

#[tokio::test]
async fn breaker_recovers_the_primary() {
    let cluster = cluster("");
    set_profile(&cluster.mocks[0], r#"{"name": "failing"}"#).await;
    let n = scale().max(8);
    let first = fire(
        &cluster.server,
        "/v1/chat/completions",
        &ask(false),
        n,
        false,
    )
    .await;
    set_profile(&cluster.mocks[0], r#"{"name": "healthy"}"#).await;
    let before = mock_requests(&cluster.mocks[0]).await;
    // After `open_ms` a probe goes to p0, succeeds, and traffic returns to it.
    eventually(Duration::from_secs(10), || async {
        fire(
            &cluster.server,
            "/v1/chat/completions",
            &ask(false),
            2,
            false,
        )
        .await;
        (mock_requests(&cluster.mocks[0]).await > before + 1).then_some(())
    })
    .await;
    all_served_and_logged(
        &cluster.server,
        "breaker recovery",
        "p0 fails until its breaker opens, then heals",
        &first,
        "half-open probe closes the breaker; traffic returns to p0",
    )
    .await;
}

#[tokio::test]
async fn provider_504_burst() {
    fails_over(
        "provider 504 burst",
        "p0 answers 504",
        r#"{"rules": [{"status": 504}]}"#,
        false,
    )
    .await;
}

#[tokio::test]
async fn malformed_stream() {
    fails_over(
        "malformed stream",
        "p0 streams a broken first event",
        r#"{"name": "malformed"}"#,
        true,
    )
    .await;
}
