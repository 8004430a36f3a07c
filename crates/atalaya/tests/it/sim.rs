//! The embedded default: no provider configured, the built-in simulator answers.

use crate::harness::*;

#[tokio::test]
async fn chat_is_deterministic_with_realistic_usage() {
    let server = serve(ServeOptions::default());
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, headers, first) = post(&url, ADMIN_KEY, &chat_body("sim-chat", false)).await;
    assert_eq!(status, 200, "{first}");
    assert!(headers.get("x-request-id").is_some());
    assert_eq!(first["object"], "chat.completion");
    assert_eq!(first["choices"][0]["message"]["role"], "assistant");
    let usage = &first["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(usage["completion_tokens"].as_u64().unwrap() >= 12);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let (_, _, second) = post(&url, ADMIN_KEY, &chat_body("sim-chat", false)).await;
    assert_eq!(
        first["choices"][0]["message"]["content"],
        second["choices"][0]["message"]["content"]
    );
}

#[tokio::test]
async fn streams_arrive_in_several_chunks_with_usage_only_when_asked() {
    let server = serve(ServeOptions::default());
    let url = format!("{}/v1/chat/completions", server.url());
    let response = client()
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .body(chat_body("sim-chat", true))
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
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() > 5, "{text}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    assert!(
        !text.contains("\"usage\":{"),
        "usage chunk sent without stream_options: {text}"
    );

    let body = serde_json::json!({
        "model": "sim-chat", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}],
    });
    let (status, _, value) = post(&url, ADMIN_KEY, &body.to_string()).await;
    assert_eq!(status, 200);
    let text = value.as_str().unwrap();
    let usage_event = text
        .split("\n\n")
        .find(|e| e.contains("\"usage\":{"))
        .expect("usage chunk");
    let usage: serde_json::Value =
        serde_json::from_str(usage_event.trim_start_matches("data: ")).unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn embeddings_and_models() {
    let server = serve(ServeOptions::default());
    let body = serde_json::json!({"model": "sim-embed", "input": ["one", "two"]}).to_string();
    let (status, _, value) =
        post(&format!("{}/v1/embeddings", server.url()), ADMIN_KEY, &body).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["data"].as_array().unwrap().len(), 2);
    assert_eq!(value["data"][0]["embedding"].as_array().unwrap().len(), 256);
    assert!(value["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (status, models) = get(&format!("{}/v1/models", server.url()), ADMIN_KEY).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["sim-chat", "sim-embed"]);
    let (status, model) = get(&format!("{}/v1/models/sim-chat", server.url()), ADMIN_KEY).await;
    assert_eq!((status, model["owned_by"].as_str()), (200, Some("sim")));
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let server = serve(ServeOptions::default());
    let (status, body) = get(&format!("{}/health/live", server.url()), "").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = get(&format!("{}/health/ready", server.url()), "").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let _ = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("sim-chat", false),
    )
    .await;
    let _ = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("sim-chat", true),
    )
    .await;
    let metrics = metrics_text(&server).await;
    for name in [
        "atalaya_requests_total{endpoint=\"chat_completions\",model=\"sim-chat\",provider=\"sim\",status=\"200\"} 2",
        "atalaya_request_duration_seconds_bucket",
        "atalaya_overhead_duration_seconds_bucket",
        "atalaya_time_to_first_token_seconds_bucket",
        "atalaya_tokens_total{provider=\"sim\",model=\"sim-chat\",kind=\"completion\"}",
        "# HELP atalaya_requests_total Data-plane requests",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
    let alias = client()
        .get(format!("{}/api/v1/metrics", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(alias.status(), 200);
}
