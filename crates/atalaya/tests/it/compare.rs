//! `POST /api/v1/compare` and `atalaya compare`: one prompt on several models, side by side.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// The built-in `sim`, a healthy simulator (`good`) and a failing one (`bad`).
fn server_with(good: &Process, bad: &Process) -> Server {
    serve(ServeOptions {
        config: &format!(
            "[sim]\nenabled = true\n\n\
             [[providers]]\nname = \"good\"\ntype = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\n\n\
             [[providers]]\nname = \"bad\"\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\nmodels = []\n\n\
             [[models]]\nname = \"broken\"\nprovider = \"bad\"\nmodel = \"gpt-4o-mini\"\n",
            good.url(),
            bad.url()
        ),
        ..ServeOptions::default()
    })
}

#[tokio::test]
async fn one_failing_model_leaves_the_others_answers() {
    let good = mock(MockOptions::default());
    let bad = mock(MockOptions {
        profile: Some("failing"),
        ..MockOptions::default()
    });
    let server = server_with(&good, &bad);
    let url = format!("{}/api/v1/compare", server.url());
    let body = json!({
        "models": ["sim-chat", "broken", "gpt-4o-mini", "no-such-model"],
        "prompt": "Which way to the harbor?",
        "max_tokens": 40,
        "judge": "gpt-4o",
        "criteria": "helpfulness"
    });
    let (status, _, answer) = post(&url, ADMIN_KEY, &body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let by = |model: &str| {
        results
            .iter()
            .find(|r| r["model"] == model)
            .unwrap()
            .clone()
    };

    for model in ["sim-chat", "gpt-4o-mini"] {
        let result = by(model);
        assert_eq!(result["status"], 200, "{result}");
        assert!(!result["content"].as_str().unwrap().is_empty(), "{result}");
        assert!(result["error"].is_null());
        assert!(result["latency_ms"].as_f64().unwrap() > 0.0);
        assert!(result["ttft_ms"].as_f64().unwrap() <= result["latency_ms"].as_f64().unwrap());
        assert!(result["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        let score = result["score"].as_u64().unwrap();
        assert!((1..=10).contains(&score), "{result}");
    }
    // Priced from the catalog: gpt-4o-mini has a price, the simulator does not.
    assert!(by("gpt-4o-mini")["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(by("gpt-4o-mini")["deployment"], "good/gpt-4o-mini");
    assert!(by("sim-chat")["cost_usd"].is_null());

    let broken = by("broken");
    assert_eq!(broken["status"], 502);
    assert_eq!(broken["error"]["code"], "upstream_error", "{broken}");
    assert!(broken["score"].is_null(), "failed answers are not judged");
    let missing = by("no-such-model");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["error"]["code"], "model_not_found");
    assert_eq!(answer["judge"]["model"], "gpt-4o");
    assert!(answer["judge"]["error"].is_null(), "{answer}");

    // Every leg, the judge's too, is in the request log with its own id.
    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() >= 5).then_some(rows)
    })
    .await;
    let leg_ids: Vec<&str> = results
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    for id in &leg_ids {
        assert!(
            rows.iter().any(|r| r["request_id"] == *id),
            "no log row for {id}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r["request_id"].as_str().unwrap().ends_with("-judge"))
    );
}

#[tokio::test]
async fn a_model_slower_than_the_timeout_fails_alone() {
    let good = mock(MockOptions::default());
    let slow = mock(MockOptions {
        latency_ms: 3000,
        ..MockOptions::default()
    });
    let server = server_with(&good, &slow);
    let body = json!({"models": ["gpt-4o-mini", "broken"], "prompt": "Hello", "timeout_ms": 500});
    let started = std::time::Instant::now();
    let (status, _, answer) = post(
        &format!("{}/api/v1/compare", server.url()),
        ADMIN_KEY,
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(answer["results"][0]["status"], 200);
    assert_eq!(
        answer["results"][1]["error"]["code"], "upstream_timeout",
        "{answer}"
    );
}

#[tokio::test]
async fn bad_compare_requests_get_clear_errors() {
    let server = serve(ServeOptions::default());
    let url = format!("{}/api/v1/compare", server.url());
    for (body, param) in [
        (json!({"prompt": "hi"}), "models"),
        (json!({"models": "sim-chat", "prompt": "hi"}), "models"),
        (json!({"models": ["sim-chat"]}), "prompt"),
        (
            json!({"models": ["sim-chat"], "prompt": "hi", "timeout_ms": "soon"}),
            "timeout_ms",
        ),
    ] {
        let (status, _, answer) = post(&url, ADMIN_KEY, &body.to_string()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
    let (status, _, answer) = post(&url, ADMIN_KEY, "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_json");
    let (status, _, _) = post(
        &url,
        "wrong-key",
        &json!({"models": ["sim-chat"], "prompt": "hi"}).to_string(),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_compare_command_prints_a_table() {
    let good = mock(MockOptions::default());
    let bad = mock(MockOptions {
        profile: Some("failing"),
        ..MockOptions::default()
    });
    let server = server_with(&good, &bad);
    let run = |extra: &[&str]| {
        let output = Command::new(binary())
            .args([
                "compare",
                "Which way to the harbor?",
                "--models",
                "sim-chat,broken,gpt-4o-mini",
                "--judge",
                "gpt-4o",
            ])
            .args(["--server", &server.url()])
            .args(extra)
            .env("ATALAYA_ADMIN_KEY", ADMIN_KEY)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let text = run(&[]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("MODEL") && lines[0].contains("TTFT") && lines[0].contains("SCORE"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("sim-chat") && lines[1].contains("/10"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("broken")
            && lines[2].contains("502")
            && lines[2].contains("upstream_error"),
        "{text}"
    );
    assert!(lines[3].starts_with("gpt-4o-mini"), "{text}");
    assert!(text.contains("judged by gpt-4o"), "{text}");

    let json: Value = serde_json::from_str(&run(&["--json"])).unwrap();
    assert_eq!(json["results"].as_array().unwrap().len(), 3);
}
