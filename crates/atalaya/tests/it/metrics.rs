//! `/metrics`: spend per key and team, process metrics, and the whole page passes
//! `promtool check metrics`.

use serde_json::json;

use crate::harness::*;

/// `promtool`, or `None` (with a notice) when it is not installed and not required.
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var("ATALAYA_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
        "promtool is required (scripts/install-tools installs it)"
    );
    eprintln!("notice: promtool not installed; skipping `promtool check metrics`");
    None
}

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample starting with {prefix}"))
}

#[tokio::test]
async fn metrics_show_spend_per_key_and_process_figures_and_pass_promtool() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "[[providers]]\nname = \"priced\"\ntype = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\n",
            upstream.url()
        ),
        ..ServeOptions::default()
    });
    let created = create_key(&server, json!({"team": "red"})).await;
    let (key, id) = (
        created["key"].as_str().unwrap(),
        created["id"].as_str().unwrap(),
    );
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..2 {
        let (status, _, _) = post(&url, key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = post(&url, "sk-atl-wrong", &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 401);
    let text = metrics_text(&server).await;
    let prompt = format!("atalaya_key_tokens_total{{key=\"{id}\",team=\"red\",kind=\"prompt\"}}");
    assert!(value(&text, &prompt) > 0.0, "{text}");
    let cost = format!("atalaya_key_cost_usd{{key=\"{id}\",team=\"red\"}}");
    assert!(value(&text, &cost) > 0.0);
    assert!(value(&text, "process_resident_memory_bytes") > 1e6);
    assert!(value(&text, "process_open_fds") > 3.0);
    assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
    assert!(value(&text, "process_threads") >= 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&text, "process_start_time_seconds");
    assert!(
        (now - 600.0..=now + 5.0).contains(&started),
        "{started} vs {now}"
    );
    assert!(value(&text, "atalaya_error_reports_pending") >= 0.0);

    if let Some(promtool) = promtool() {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
