//! Tracing: W3C trace context goes upstream (the caller's trace, or a new one), and log
//! lines written while a request is handled carry its request id and trace id.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

async fn upstream_headers(mock: &Process) -> Vec<Value> {
    let (_, seen) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    seen.as_array()
        .unwrap()
        .iter()
        .map(|request| request["headers"].clone())
        .collect()
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
}

#[tokio::test]
async fn trace_context_reaches_the_upstream_and_the_logs() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "{}[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 1\nwindow = 1\n",
            gpt_on(&upstream)
        ),
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, _, _) = post_with(
        &url,
        ADMIN_KEY,
        &chat_body("gpt-4o-mini", false),
        &[("traceparent", caller), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 200);
    let seen = upstream_headers(&upstream).await;
    assert_eq!(seen.len(), 2);
    let joined = header(&seen[0], "traceparent").unwrap();
    let parts: Vec<&str> = joined.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "our own span is the parent");
    assert_eq!(parts[3], "01");
    assert_eq!(header(&seen[0], "tracestate"), Some("vendor=abc"));
    let started = header(&seen[1], "traceparent").unwrap();
    assert_eq!(started.len(), 55, "{started}");
    assert!(!started.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert!(header(&seen[1], "tracestate").is_none());

    // A warning raised while a request is handled (its breaker opening) names the request.
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let (status, headers, _) = post_with(
        &url,
        ADMIN_KEY,
        &chat_body("gpt-4o-mini", false),
        &[("traceparent", caller)],
    )
    .await;
    assert_eq!(status, 502);
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let row = eventually(Duration::from_secs(10), || async {
        let (_, body) = get(&format!("{}/api/v1/server-logs", server.url()), ADMIN_KEY).await;
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["message"] == "Circuit breaker opened.")
            .cloned()
    })
    .await;
    assert_eq!(row["request_id"], request_id.as_str(), "{row}");
    let output = server.process.output();
    let line = output
        .lines()
        .find(|line| line.contains("Circuit breaker opened."))
        .unwrap();
    assert!(line.contains(&request_id), "{line}");
    assert!(line.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{line}");
}
