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

fn exported_spans(collector: &HookReceiver) -> Vec<Value> {
    collector
        .bodies("/v1/traces")
        .iter()
        .flat_map(|body| {
            body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

#[tokio::test]
async fn spans_are_exported_over_otlp_and_line_up_with_the_upstream() {
    let collector = HookReceiver::start().await;
    let upstream = mock(MockOptions {
        tokens_per_second: 400.0,
        ..MockOptions::default()
    });
    let server = serve(ServeOptions {
        config: &format!(
            "{}[routing]\nmax_attempts = 1\n[telemetry.otlp]\nendpoint = \"{}\"\nflush_interval_ms = 100\nservice_name = \"atalaya-it\"\nheaders = {{ \"x-collector-token\" = \"collector-secret-4242\" }}\n",
            gpt_on(&upstream),
            collector.url
        ),
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let joined = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let declined = "00-11111111111111111111111111111111-00f067aa0ba902b7-00";
    for traceparent in [Some(joined), Some(declined), None] {
        let headers: Vec<(&str, &str)> = traceparent
            .map(|t| ("traceparent", t))
            .into_iter()
            .collect();
        let (status, _, _) =
            post_with(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false), &headers).await;
        assert_eq!(status, 200);
    }
    let seen = upstream_headers(&upstream).await;
    let sent: Vec<&str> = seen
        .iter()
        .map(|h| header(h, "traceparent").unwrap())
        .collect();
    assert!(
        sent[1].ends_with("-00"),
        "a declined trace stays declined: {}",
        sent[1]
    );
    assert!(
        sent[2].ends_with("-01"),
        "a trace started here is sampled: {}",
        sent[2]
    );
    let started = sent[2].split('-').nth(1).unwrap().to_owned();

    let spans = eventually(Duration::from_secs(10), || async {
        let spans = exported_spans(&collector);
        (spans.len() >= 6).then_some(spans)
    })
    .await;
    assert!(
        !spans
            .iter()
            .any(|s| s["traceId"] == "11111111111111111111111111111111"),
        "the caller declined sampling"
    );
    for (trace, upstream_traceparent) in [
        ("4bf92f3577b34da6a3ce929d0e0e4736", sent[0]),
        (started.as_str(), sent[2]),
    ] {
        let of_trace: Vec<&Value> = spans.iter().filter(|s| s["traceId"] == trace).collect();
        let named = |name: &str| {
            *of_trace
                .iter()
                .find(|s| s["name"] == name)
                .unwrap_or_else(|| panic!("no {name} span in {of_trace:?}"))
        };
        let (request, attempt, call) = (named("request"), named("attempt"), named("upstream"));
        assert_eq!(request["kind"], 2, "{request}");
        assert_eq!(call["kind"], 3, "{call}");
        assert_eq!(attempt["parentSpanId"], request["spanId"]);
        assert_eq!(call["parentSpanId"], attempt["spanId"]);
        assert_eq!(
            upstream_traceparent.split('-').nth(2).unwrap(),
            call["spanId"],
            "the provider's parent is our upstream span"
        );
        assert_eq!(
            attribute(request, "http.response.status_code").unwrap()["intValue"],
            "200"
        );
        assert_eq!(
            attribute(attempt, "deployment").unwrap()["stringValue"],
            "p0/gpt-4o-mini"
        );
        let start: u64 = request["startTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let end: u64 = request["endTimeUnixNano"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(end >= start && start > 0);
    }
    let joined_request = spans
        .iter()
        .find(|s| s["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736" && s["name"] == "request")
        .unwrap();
    assert_eq!(
        joined_request["parentSpanId"], "00f067aa0ba902b7",
        "the caller's span"
    );

    // A stream's request span lasts until its last chunk, not just until its headers.
    let response = client()
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .header(
            "traceparent",
            "00-22222222222222222222222222222222-00f067aa0ba902b7-01",
        )
        .header("content-type", "application/json")
        .body(chat_body("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers_at = std::time::Instant::now();
    let body = response.text().await.unwrap();
    let streamed = headers_at.elapsed();
    assert!(body.contains("[DONE]"));
    let stream_span = eventually(Duration::from_secs(10), || async {
        exported_spans(&collector)
            .into_iter()
            .find(|s| s["traceId"] == "22222222222222222222222222222222" && s["name"] == "request")
    })
    .await;
    let nanos = |key: &str| -> u64 { stream_span[key].as_str().unwrap().parse().unwrap() };
    let span_length = Duration::from_nanos(nanos("endTimeUnixNano") - nanos("startTimeUnixNano"));
    assert!(
        span_length >= streamed,
        "span {span_length:?} shorter than the stream's {streamed:?} after its headers"
    );

    // A failed call is marked failed at every level.
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let (status, _, _) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 502);
    let failed = eventually(Duration::from_secs(10), || async {
        exported_spans(&collector)
            .into_iter()
            .find(|s| s["name"] == "request" && s["status"]["code"] == 2)
    })
    .await;
    let attempt = eventually(Duration::from_secs(10), || async {
        exported_spans(&collector)
            .into_iter()
            .find(|s| s["name"] == "attempt" && s["traceId"] == failed["traceId"])
    })
    .await;
    assert_eq!(attempt["status"]["code"], 2, "{attempt}");
    assert!(attribute(&attempt, "error.type").is_some(), "{attempt}");

    let received = collector.received.lock().unwrap().clone();
    let (_, headers, body) = &received[0];
    assert_eq!(headers["x-collector-token"], "collector-secret-4242");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
        "atalaya-it"
    );
    assert!(
        !server.process.output().contains("collector-secret-4242"),
        "the collector's token is masked in logs"
    );
}
