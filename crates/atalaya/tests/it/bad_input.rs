//! Bad input gets OpenAI's error JSON with a clear message; the server keeps serving.

use crate::harness::*;

async fn expect_error(
    server: &Server,
    path: &str,
    body: &[u8],
    status: u16,
    code: &str,
) -> serde_json::Value {
    let response = client()
        .post(format!("{}{path}", server.url()))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        status,
        "{}",
        String::from_utf8_lossy(body)
    );
    assert!(response.headers().get("x-request-id").is_some());
    assert_eq!(response.headers()["content-type"], "application/json");
    let value: serde_json::Value = response.json().await.unwrap();
    assert_eq!(value["error"]["code"], code, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "{value}"
    );
    assert!(value["error"]["type"].is_string(), "{value}");
    value
}

#[tokio::test]
async fn malformed_and_mistyped_requests() {
    let server = serve(ServeOptions {
        config: "[server]\nmax_body_bytes = 4096\n",
        ..ServeOptions::default()
    });
    let chat = "/v1/chat/completions";
    expect_error(
        &server,
        chat,
        b"{\"model\": \"sim-chat\", \"messages\": [",
        400,
        "invalid_json",
    )
    .await;
    expect_error(&server, chat, b"", 400, "invalid_json").await;
    expect_error(&server, chat, b"\xff\xfe\x00garbage", 400, "invalid_json").await;
    expect_error(&server, chat, br#"["model"]"#, 400, "invalid_json").await;
    let value = expect_error(
        &server,
        chat,
        br#"{"model":"sim-chat"}"#,
        400,
        "missing_required_parameter",
    )
    .await;
    assert_eq!(value["error"]["param"], "messages");
    let value = expect_error(
        &server,
        chat,
        br#"{"model":"sim-chat","messages":[{"role":"user","content":"x"}],"temperature":"warm"}"#,
        400,
        "invalid_type",
    )
    .await;
    assert_eq!(value["error"]["param"], "temperature");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected a number, but got a string")
    );
    expect_error(
        &server,
        chat,
        br#"{"model":["a"],"messages":[{"role":"user","content":"x"}]}"#,
        400,
        "invalid_type",
    )
    .await;
    let value = expect_error(
        &server,
        chat,
        br#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
        404,
        "model_not_found",
    )
    .await;
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-9")
    );
    expect_error(
        &server,
        chat,
        br#"{"model":"sim-embed","messages":[{"role":"user","content":"x"}]}"#,
        400,
        "model_not_supported",
    )
    .await;
    expect_error(
        &server,
        "/v1/embeddings",
        br#"{"model":"sim-embed"}"#,
        400,
        "missing_required_parameter",
    )
    .await;
    expect_error(
        &server,
        "/v1/embeddings",
        br#"{"model":"sim-chat","input":"x"}"#,
        400,
        "model_not_supported",
    )
    .await;

    let big = format!(
        r#"{{"model":"sim-chat","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(8192)
    );
    let value = expect_error(&server, chat, big.as_bytes(), 413, "request_too_large").await;
    assert!(value["error"]["message"].as_str().unwrap().contains("4096"));

    let missing = client()
        .get(format!("{}/v1/nothing-here", server.url()))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Still serving after all of that.
    let (status, _, _) = post(
        &format!("{}{chat}", server.url()),
        ADMIN_KEY,
        &chat_body("sim-chat", false),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn garbage_never_breaks_the_server() {
    let server = serve(ServeOptions::default());
    let url = format!("{}/v1/chat/completions", server.url());
    // A deterministic spread of truncations and byte flips of a valid body.
    let valid = chat_body("sim-chat", false).into_bytes();
    let mut seed: u64 = 0x5eed;
    for round in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut body = valid.clone();
        if round % 2 == 0 {
            body.truncate((seed as usize) % valid.len());
        } else {
            let at = (seed as usize) % body.len();
            body[at] = (seed >> 32) as u8;
        }
        let response = client()
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            status == 200 || (400..500).contains(&status),
            "status {status} for {}",
            String::from_utf8_lossy(&body)
        );
        let _ = response.bytes().await.unwrap();
    }
    let (status, _) = get(&format!("{}/health/live", server.url()), "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // Bind then drop: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[[providers]]\nname = \"down\"\ntype = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodels = [\"m\"]\nconnect_timeout_ms = 1000\n"
    );
    let server = serve(ServeOptions {
        config: &config,
        ..ServeOptions::default()
    });
    let value = expect_error(
        &server,
        "/v1/chat/completions",
        chat_body("m", false).as_bytes(),
        502,
        "upstream_unreachable",
    )
    .await;
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`down`")
    );
    expect_error(
        &server,
        "/v1/chat/completions",
        chat_body("m", true).as_bytes(),
        502,
        "upstream_unreachable",
    )
    .await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let mock = mock(MockOptions {
        latency_ms: 3_000,
        ..MockOptions::default()
    });
    let server = serve(ServeOptions {
        config: &config_with_openai_upstream(&mock, "")
            .replace("models =", "timeout_ms = 300\nmodels ="),
        env: vec![("UPSTREAM_KEY", "sk-upstream-secret".to_owned())],
        ..ServeOptions::default()
    });
    let started = std::time::Instant::now();
    let value = expect_error(
        &server,
        "/v1/chat/completions",
        chat_body("gpt-4o-mini", false).as_bytes(),
        504,
        "upstream_timeout",
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2_500),
        "the timeout did not cut the wait"
    );
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms")
    );
}
