//! Client faults: bad input gets a clear error in the caller's format and is logged; a
//! client leaving mid-stream cancels the upstream call at once and leaks nothing.

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::harness::*;
use crate::*;

/// `body` sent `scale()` times: every answer is `status` with `code` in OpenAI's error shape.
async fn refused(scenario: &str, injected: &str, body: &str, key: &str, status: u16, code: &str) {
    let cluster = cluster("[server]\nmax_body_bytes = 65536\n");
    let n = scale();
    let url = format!("{}/v1/chat/completions", cluster.server.url());
    let mut tally = Tally {
        sent: n,
        ..Tally::default()
    };
    for _ in 0..n {
        let (got, _, answer) = post(&url, key, body).await;
        *tally.statuses.entry(got).or_default() += 1;
        assert_eq!(got, status, "{scenario}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{scenario}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Refused requests are not lost either: each has its row (authentication failures are
    // audited instead).
    let lost = if status == 401 {
        0
    } else {
        lost_rows(&cluster.server, n).await
    };
    record(
        scenario,
        injected,
        &tally,
        lost,
        &format!("clear {status} {code} in OpenAI's shape; upstream never called"),
    );
    assert_eq!(lost, 0);
    assert_eq!(mock_requests(&cluster.mocks[0]).await, 0);
}

#[tokio::test]
async fn malformed_client_json() {
    refused(
        "malformed client JSON",
        "a body cut mid-object",
        r#"{"model": "m", "messages": [{"#,
        ADMIN_KEY,
        400,
        "invalid_json",
    )
    .await;
}

#[tokio::test]
async fn wrong_field_types() {
    refused(
        "wrong field types",
        "messages as a string",
        r#"{"model": "m", "messages": "hello"}"#,
        ADMIN_KEY,
        400,
        "invalid_type",
    )
    .await;
}

#[tokio::test]
async fn unknown_model() {
    refused(
        "unknown model",
        "a model nobody serves",
        &chat_body("no-such-model", false),
        ADMIN_KEY,
        404,
        "model_not_found",
    )
    .await;
}

#[tokio::test]
async fn oversize_body() {
    let big = format!(
        r#"{{"model": "m", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(100_000)
    );
    refused(
        "oversize body",
        "100 kB over a 64 kB limit",
        &big,
        ADMIN_KEY,
        413,
        "request_too_large",
    )
    .await;
}

#[tokio::test]
async fn bad_key() {
    refused(
        "bad key",
        "an unknown virtual key",
        &ask(false),
        "sk-atl-not-a-key",
        401,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn large_prompt() {
    let cluster = cluster("");
    let n = scale().min(8);
    let body = format!(
        r#"{{"model": "m", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "lorem ipsum ".repeat(87_382)
    );
    let tally = fire(&cluster.server, "/v1/chat/completions", &body, n, false).await;
    all_served_and_logged(
        &cluster.server,
        "1 MB prompt",
        "1 MB of prompt text per request",
        &tally,
        "answered in full",
    )
    .await;
}

#[tokio::test]
async fn client_leaves_mid_stream() {
    let slow = mock(MockOptions {
        tokens_per_second: 10.0,
        ..MockOptions::default()
    });
    let server = serve(ServeOptions {
        config: &format!("{}{}{ROUTING}", providers_for(&[&slow]), model_m(1)),
        ..ServeOptions::default()
    });
    let n = scale().min(8);
    let mut tally = Tally {
        sent: n,
        ..Tally::default()
    };
    for _ in 0..n {
        let response = client()
            .post(format!("{}/v1/chat/completions", server.url()))
            .bearer_auth(ADMIN_KEY)
            .body(ask(true))
            .send()
            .await
            .unwrap();
        *tally
            .statuses
            .entry(response.status().as_u16())
            .or_default() += 1;
        let mut stream = response.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
        drop(stream);
    }
    let cancelled = eventually(Duration::from_secs(5), || async {
        let (_, stats) = get(&format!("{}/_mock/stats", slow.url()), "").await;
        (stats["streams_cancelled"].as_u64() == Some(n as u64)).then_some(n)
    })
    .await;
    let lost = lost_rows(&server, n).await;
    let rows = log_rows(&server).await;
    record(
        "client leaves mid-stream",
        "the client drops each stream after its first chunk",
        &tally,
        lost,
        &format!("{cancelled} upstream calls cancelled at once; rows say 499 client disconnected"),
    );
    assert!(rows.iter().all(|r| r["status"] == 499), "{rows:?}");
    assert_eq!(lost, 0);
    // Nothing leaked: the gateway holds no stream open afterwards.
    let (_, health) = get(&format!("{}/api/v1/health", server.url()), ADMIN_KEY).await;
    assert_eq!(health["level"], "OPTIMAL");
}
