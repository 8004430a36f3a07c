//! The HTTP surface's own limits: CORS off by default and exact when configured, and a cap
//! on header size.

use crate::harness::*;

/// A chat request with the admin key from a browser at `origin`.
async fn from_origin(url: &str, origin: &str) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(ADMIN_KEY)
        .header("origin", origin)
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_only_configured_origins() {
    let plain = serve(ServeOptions::default());
    let response = from_origin(
        &format!("{}/v1/chat/completions", plain.url()),
        "https://app.example.com",
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let server = serve(ServeOptions {
        config: "[server]\ncors_origins = [\"https://app.example.com\"]\n",
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    // A browser's preflight: answered without a key.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    // The call itself exposes the headers a client reads.
    let response = from_origin(&url, "https://app.example.com").await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    // Another origin gets nothing to go on.
    let response = from_origin(&url, "https://evil.example.net").await;
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let server = serve(ServeOptions {
        config: "[server]\nmax_header_bytes = 4096\n",
        ..ServeOptions::default()
    });
    let response = client()
        .post(format!("{}/v1/chat/completions", server.url()))
        .bearer_auth(ADMIN_KEY)
        .header("x-padding", "a".repeat(5000))
        .body(chat_body("sim-chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_headers_too_large");
    assert!(response_ok(&server).await);
}

async fn response_ok(server: &Server) -> bool {
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &chat_body("sim-chat", false),
    )
    .await;
    status == 200
}
