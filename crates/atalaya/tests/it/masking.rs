//! No secret reaches a log line, a stored row or a client's error message: a provider key sent
//! in a prompt, echoed in an upstream error, and logged at debug level is masked everywhere.

use serde_json::json;

use crate::harness::*;

const PROVIDER_KEY: &str = "sk-upstream-secret";

#[tokio::test]
async fn a_provider_key_never_appears_in_logs_rows_or_errors() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &config_with_openai_upstream(&upstream, ""),
        env: vec![
            ("UPSTREAM_KEY", PROVIDER_KEY.to_owned()),
            ("RUST_LOG", "debug".to_owned()),
        ],
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    let leaking = |content: &str| {
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
            .to_string()
    };

    // 1. In a prompt.
    let (status, _, _) = post(
        &url,
        ADMIN_KEY,
        &leaking(&format!("my key is {PROVIDER_KEY}")),
    )
    .await;
    assert_eq!(status, 200);

    // 2. Echoed back in the upstream's error, and a format nobody registered (an AWS key).
    post(
        &format!("{}/_mock/faults", upstream.url()),
        "",
        &json!({"status": 400, "times": 2, "message": format!("Invalid key {PROVIDER_KEY} (also AKIAIOSFODNN7EXAMPLE)")}).to_string(),
    )
    .await;
    let (status, _, body) = post(&url, ADMIN_KEY, &leaking("hello")).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("[REDACTED]") && message.contains("[REDACTED:aws-access-key]"),
        "{message}"
    );
    let (status, _, _) = post(&url, ADMIN_KEY, &json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string()).await;
    assert_eq!(status, 400);

    // 3. Stored rows and the database file.
    let rows = eventually(std::time::Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let stored = serde_json::to_string(&rows).unwrap();
    assert!(stored.contains("[REDACTED]"), "{stored}");
    for secret in [PROVIDER_KEY, "AKIAIOSFODNN7EXAMPLE", ADMIN_KEY] {
        assert!(!stored.contains(secret), "{secret} in {stored}");
        for file in ["atalaya.db", "atalaya.db-wal"] {
            assert!(
                !file_holds(&server.data_path().join(file), secret),
                "{secret} in {file}"
            );
        }
        // 4. Everything the server logged, at debug level.
        let output = server.process.output();
        assert!(output.contains("DEBUG"), "debug logging is on");
        assert!(!output.contains(secret), "{secret} in the logs:\n{output}");
    }
}
