//! An OpenAI-compatible upstream (`mock-provider`) behind the gateway.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::Value;

use crate::harness::*;

const UPSTREAM_KEY: &str = "sk-upstream-secret";

fn upstream_server(mock: &Process, extra: &str) -> Server {
    serve(ServeOptions {
        config: &config_with_openai_upstream(mock, extra),
        env: vec![("UPSTREAM_KEY", UPSTREAM_KEY.to_owned())],
        ..ServeOptions::default()
    })
}

async fn recorded(mock: &Process) -> Vec<Value> {
    let (_, value) = get(&format!("{}/_mock/requests", mock.url()), "").await;
    value.as_array().cloned().unwrap()
}

fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn chat_goes_to_the_upstream_with_its_key_headers_and_model() {
    let mock = mock(MockOptions::default());
    let server = upstream_server(
        &mock,
        "[[models]]\nname = \"fast\"\nprovider = \"upstream\"\nmodel = \"gpt-4o-mini\"\n",
    );
    let (status, headers, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("fast", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "gpt-4o-mini");
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();

    let seen = recorded(&mock).await;
    let last = seen.last().unwrap();
    assert_eq!(last["path"], "/v1/chat/completions");
    assert_eq!(last["body"]["model"], "gpt-4o-mini");
    assert_eq!(
        last["body"]["messages"][0]["content"],
        "Say something about watchtowers."
    );
    assert_eq!(
        header(last, "authorization"),
        Some("Bearer sk-upstream-secret")
    );
    assert_eq!(header(last, "x-team"), Some("blue"));
    assert_eq!(header(last, "x-request-id"), Some(request_id.as_str()));

    // The provider prefix reaches any upstream model; the simulator is off with a provider set.
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("upstream/gpt-4o", false),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("sim-chat", false),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );

    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        rows.iter()
            .any(|r| r["request_id"] == request_id.as_str())
            .then_some(rows)
    })
    .await;
    let row = rows
        .iter()
        .find(|r| r["request_id"] == request_id.as_str())
        .unwrap();
    assert_eq!(row["model"], "fast");
    assert_eq!(row["provider"], "upstream");
    assert_eq!(row["upstream_model"], "gpt-4o-mini");
    assert!(
        row["prompt_tokens"].as_i64().unwrap() > 0
            && row["completion_tokens"].as_i64().unwrap() > 0
    );
    assert!(
        !server.process.output().contains(UPSTREAM_KEY),
        "upstream key leaked into logs"
    );
    // Prefix routes share one metric label: clients cannot mint new label values.
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("model=\"upstream/*\""), "{metrics}");
    assert!(!metrics.contains("model=\"upstream/gpt-4o\""), "{metrics}");
}

#[tokio::test]
async fn streams_ask_upstream_for_usage_and_keep_it() {
    let mock = mock(MockOptions::default());
    let server = upstream_server(&mock, "");
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, headers, body) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("\"usage\":{"),
        "the client did not ask for usage: {text}"
    );
    let last = recorded(&mock).await.pop().unwrap();
    assert_eq!(last["body"]["stream_options"]["include_usage"], true);

    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    let row = eventually(Duration::from_secs(5), || async {
        log_rows(&server)
            .await
            .into_iter()
            .find(|r| r["request_id"] == request_id.as_str())
    })
    .await;
    assert_eq!(row["stream"], true);
    assert_eq!(row["status"], 200);
    assert!(row["completion_tokens"].as_i64().unwrap() > 0, "{row}");
    assert!(row["ttft_ms"].as_f64().is_some());
}

#[tokio::test]
async fn embeddings_pass_through() {
    let mock = mock(MockOptions::default());
    let server = upstream_server(&mock, "");
    let body =
        serde_json::json!({"model": "text-embedding-3-small", "input": "hello", "dimensions": 8})
            .to_string();
    let (status, _, value) =
        post(&format!("{}/v1/embeddings", server.url()), ADMIN_KEY, &body).await;
    assert_eq!(status, 200, "{value}");
    assert_eq!(value["data"][0]["embedding"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn openai_env_vars_turn_on_the_openai_preset() {
    let mock = mock(MockOptions::default());
    let server = serve(ServeOptions {
        env: vec![
            ("OPENAI_API_KEY", UPSTREAM_KEY.to_owned()),
            ("OPENAI_BASE_URL", format!("{}/v1", mock.url())),
        ],
        ..ServeOptions::default()
    });
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("gpt-4o-mini", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, providers) = get(&format!("{}/api/v1/providers", server.url()), ADMIN_KEY).await;
    assert_eq!(providers["data"][0]["name"], "openai");
    assert!(
        providers["data"][0]["source"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY")
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_upstream_call() {
    client_leaving_mid_stream_cancels_the_upstream_call("").await;
}

#[tokio::test]
async fn a_client_leaving_mid_stream_cancels_the_upstream_call_over_http2() {
    client_leaving_mid_stream_cancels_the_upstream_call("http2_prior_knowledge = true").await;
}

async fn client_leaving_mid_stream_cancels_the_upstream_call(extra: &str) {
    // 10 tokens/s: the whole answer would take seconds.
    let mock = mock(MockOptions {
        tokens_per_second: 10.0,
        ..MockOptions::default()
    });
    let server = upstream_server(&mock, extra);
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .bearer_auth(ADMIN_KEY)
        .body(chat_body("gpt-4o-mini", true))
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(stream);

    let stats = eventually(Duration::from_secs(3), || async {
        let (_, stats) = get(&format!("{}/_mock/stats", mock.url()), "").await;
        (stats["streams_cancelled"] == 1).then_some(stats)
    })
    .await;
    let over_http2 = u64::from(!extra.is_empty());
    assert_eq!(stats["http2_requests"], over_http2, "{stats}");
    let row = eventually(Duration::from_secs(5), || async {
        log_rows(&server)
            .await
            .into_iter()
            .find(|r| r["request_id"] == request_id.as_str())
    })
    .await;
    assert_eq!(row["status"], 499);
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("client disconnected")
    );
}

#[tokio::test]
async fn upstream_errors_are_mapped() {
    let mock = mock(MockOptions::default());
    // A wrong upstream key: the client's key is fine, so this is the gateway's 502.
    let server = serve(ServeOptions {
        config: &config_with_openai_upstream(&mock, ""),
        env: vec![("UPSTREAM_KEY", "sk-wrong".to_owned())],
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("upstream_auth_failed")),
        "{body}"
    );
    let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", true)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("upstream_auth_failed")),
        "{body}"
    );

    // The upstream's own 404 passes through with its message.
    let server = upstream_server(&mock, "");
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("upstream/no-such-model", false),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{body}"
    );
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains(
            "atalaya_upstream_errors_total{provider=\"upstream\",class=\"status_4xx\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_leaving_before_a_plain_answer_is_still_logged() {
    let mock = mock(MockOptions {
        latency_ms: 5_000,
        ..MockOptions::default()
    });
    let server = upstream_server(&mock, "");
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let result = quick
        .post(format!("{}/v1/chat/completions", server.url()))
        .bearer_auth(ADMIN_KEY)
        .header("x-request-id", "leaving-early")
        .body(chat_body("gpt-4o-mini", false))
        .send()
        .await;
    assert!(result.is_err(), "the client should have given up");
    let row = eventually(Duration::from_secs(5), || async {
        log_rows(&server)
            .await
            .into_iter()
            .find(|r| r["request_id"] == "leaving-early")
    })
    .await;
    assert_eq!(row["status"], 499);
}

#[tokio::test]
async fn http2_prior_knowledge_shares_connections_with_an_h2c_upstream() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &gpt_on(&upstream).replace(
            "models = [\"gpt-4o-mini\"]",
            "models = [\"gpt-4o-mini\"]\nhttp2_prior_knowledge = true",
        ),
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    send_many_ok(
        &server,
        "/v1/chat/completions",
        &chat_body("gpt-4o-mini", true),
        20,
        10,
    )
    .await;
    let (status, _, body) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 200, "{body}");
    let (_, stats) = get(&format!("{}/_mock/stats", upstream.url()), "").await;
    assert_eq!(stats["http2_requests"], 21, "{stats}");
    assert_eq!(stats["streams_completed"], 20, "{stats}");
}
