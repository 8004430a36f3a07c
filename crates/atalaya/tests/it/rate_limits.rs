//! Rate limits per key and per team: GCRA request limits with `x-ratelimit-*` headers and
//! 429 + Retry-After, token limits that reserve an estimate and settle the real usage.

use serde_json::{Value, json};

use crate::harness::*;

async fn key(server: &Server, body: Value) -> String {
    create_key(server, body).await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn ask(max_tokens: u32) -> String {
    json!({"model": "sim-chat", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello there"}]}).to_string()
}

#[tokio::test]
async fn a_request_limit_admits_its_share_then_says_when_to_retry() {
    let server = serve(ServeOptions::default());
    let limited = key(&server, json!({"rpm_limit": 3})).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = post(&url, &limited, &ask(20)).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(
            headers["x-ratelimit-reset-requests"]
                .to_str()
                .unwrap()
                .ends_with('s')
        );
    }
    let (status, headers, body) = post(&url, &limited, &ask(20)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // 3 per minute: the next one is due 20 s after the first.
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "{retry}");
    // The Anthropic endpoint answers in its own shape.
    let response = client()
        .post(format!("{}/v1/messages", server.url()))
        .header("x-api-key", &limited)
        .header("anthropic-version", "2023-06-01")
        .body(json!({"model": "sim-chat", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Other keys, and the admin key, are not limited.
    let (status, _, _) = post(&url, ADMIN_KEY, &ask(20)).await;
    assert_eq!(status, 200);
    assert!(
        metric(
            &server,
            "atalaya_rate_limited_total{kind=\"requests\",scope=\"key\"}"
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn token_limits_reserve_an_estimate_and_settle_the_real_usage() {
    let server = serve(ServeOptions::default());
    let limited = key(&server, json!({"tpm_limit": 1000})).await;
    let url = format!("{}/v1/chat/completions", server.url());
    // Each reserves ~600 tokens; the simulator uses far fewer, and the difference comes back,
    // so both pass although 2 x 600 > 1000.
    for _ in 0..2 {
        let (status, headers, body) = post(&url, &limited, &ask(600)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    }
    // More than the whole limit can never pass, and says so (no Retry-After).
    let (status, headers, body) = post(&url, &limited, &ask(5000)).await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("can never pass"),
        "{body}"
    );
    assert!(!headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_team_limit_is_shared_by_its_keys() {
    let server = serve(ServeOptions {
        config: "[[teams]]\nname = \"blue\"\nrpm_limit = 2\n",
        ..ServeOptions::default()
    });
    let first = key(&server, json!({"team": "blue"})).await;
    let second = key(&server, json!({"team": "blue"})).await;
    let outsider = key(&server, json!({"team": "red"})).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for caller in [&first, &second] {
        let (status, _, _) = post(&url, caller, &ask(10)).await;
        assert_eq!(status, 200);
    }
    let (status, _, body) = post(&url, &first, &ask(10)).await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team allows 2 requests"),
        "{body}"
    );
    let (status, _, _) = post(&url, &outsider, &ask(10)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sixty_per_minute_is_a_burst_of_sixty_then_429() {
    let server = serve(ServeOptions::default());
    let limited = key(&server, json!({"rpm_limit": 60})).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let mut passed = 0;
    let mut refused = None;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let (status, headers, body) = post(&url, &limited, &ask(20)).await;
        if status == 200 {
            passed += 1;
            assert_eq!(headers["x-ratelimit-limit-requests"], "60");
        } else {
            refused = Some((status, headers, body));
            break;
        }
    }
    // The burst, plus one per second the run took (a slow machine refills as it goes).
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        passed >= 60 && passed <= 60 + refilled,
        "{passed} passed in {:?}",
        started.elapsed()
    );
    let (status, headers, body) = refused.expect("a request past the burst is refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // One per second: the next is due within a second.
    assert_eq!(headers["retry-after"], "1");
}
