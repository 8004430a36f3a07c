//! Routing and failover end to end: several `mock-provider` instances as deployments of one
//! model, some of them failing on purpose through fault profiles.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

fn mocks(profiles: &[Option<&'static str>], latency_ms: &[u64]) -> Vec<Process> {
    profiles
        .iter()
        .enumerate()
        .map(|(index, profile)| {
            mock(MockOptions {
                profile: *profile,
                latency_ms: latency_ms.get(index).copied().unwrap_or(0),
                ..MockOptions::default()
            })
        })
        .collect()
}

/// A model `m` over one deployment per simulator (`p0/gpt-4o-mini`, ...), weights as given.
fn model(strategy: &str, weights: &[u32], extra: &str) -> String {
    let mut text = format!("[[models]]\nname = \"m\"\nstrategy = \"{strategy}\"\n{extra}\n");
    for (index, weight) in weights.iter().enumerate() {
        text.push_str(&format!(
            "[[models.deployments]]\nprovider = \"p{index}\"\nmodel = \"gpt-4o-mini\"\nweight = {weight}\n"
        ));
    }
    text
}

fn start(mocks: &[Process], models: &str, routing: &str) -> Server {
    let refs: Vec<&Process> = mocks.iter().collect();
    serve(ServeOptions {
        config: &format!("{}{models}\n{routing}", providers_for(&refs)),
        ..ServeOptions::default()
    })
}

fn ask(model: &str, stream: bool) -> String {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Which way to the harbor?"}]}).to_string()
}

async fn counts(mocks: &[Process]) -> Vec<u64> {
    let mut counts = Vec::new();
    for mock in mocks {
        counts.push(mock_requests(mock).await);
    }
    counts
}

const FAST_BREAKER: &str = "[routing.breaker]\nminimum_calls = 4\nwindow = 8\nopen_ms = 60000\n";

#[tokio::test]
async fn weighted_three_to_one_lands_within_three_percent() {
    let mocks = mocks(&[None, None], &[]);
    let server = start(&mocks, &model("weighted", &[3, 1], ""), "");
    let results = send_many(&server, "/v1/chat/completions", &ask("m", false), 4000, 16).await;
    assert!(results.iter().all(|(status, _)| *status == 200));
    let counts = counts(&mocks).await;
    let share = counts[0] as f64 / 4000.0;
    assert!((share - 0.75).abs() <= 0.03, "{counts:?}");
}

#[tokio::test]
async fn round_robin_is_exact() {
    let mocks = mocks(&[None, None, None], &[]);
    let server = start(&mocks, &model("round-robin", &[1, 1, 1], ""), "");
    send_many(&server, "/v1/chat/completions", &ask("m", false), 300, 8).await;
    assert_eq!(counts(&mocks).await, [100, 100, 100]);
}

#[tokio::test]
async fn least_connections_and_latency_steer_away_from_a_slow_deployment() {
    for strategy in ["least-connections", "latency"] {
        let mocks = mocks(&[None, None], &[0, 150]);
        let server = start(&mocks, &model(strategy, &[1, 1], ""), "");
        let results = send_many(&server, "/v1/chat/completions", &ask("m", false), 200, 8).await;
        assert!(results.iter().all(|(status, _)| *status == 200));
        let counts = counts(&mocks).await;
        assert!(
            counts[1] * 4 < counts[0],
            "{strategy}: the slow one got {counts:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_deployment_is_invisible_to_clients() {
    let mocks = mocks(&[None, Some("failing"), None], &[]);
    let server = start(&mocks, &model("round-robin", &[1, 1, 1], ""), FAST_BREAKER);
    for stream in [false, true] {
        let results = send_many(&server, "/v1/chat/completions", &ask("m", stream), 60, 4).await;
        assert!(
            results.iter().all(|(status, _)| *status == 200),
            "{results:?}"
        );
    }
    // Its breaker opened after a few failures: it stopped being called.
    let failing = mock_requests(&mocks[1]).await;
    assert!(
        failing <= 8,
        "the failing deployment was called {failing} times"
    );
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("atalaya_circuit_state{breaker=\"p1/gpt-4o-mini\"} 2"),
        "{metrics}"
    );
    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() >= 120).then_some(rows)
    })
    .await;
    assert!(
        rows.iter()
            .any(|r| r["retries"] == 1 && r["attempts"] == 2 && r["status"] == 200)
    );
}

#[tokio::test]
async fn a_hanging_deployment_costs_at_most_one_ttfb_timeout() {
    let mocks = mocks(&[Some("hang"), None], &[]);
    let server = start(
        &mocks,
        &model("round-robin", &[1, 1], "ttfb_timeout_ms = 400"),
        FAST_BREAKER,
    );
    for stream in [false, true] {
        let results = send_many(&server, "/v1/chat/completions", &ask("m", stream), 20, 4).await;
        assert!(
            results.iter().all(|(status, _)| *status == 200),
            "{results:?}"
        );
        let slowest = results.iter().map(|(_, took)| *took).max().unwrap();
        // The timeout, one backoff (at most 100 ms on the first retry) and the answer.
        assert!(
            slowest < Duration::from_millis(400 + 900),
            "slowest request took {slowest:?}"
        );
    }
}

#[tokio::test]
async fn all_down_answers_a_clear_503_fast_and_respects_the_retry_budget() {
    let mocks = mocks(&[Some("failing"), Some("down")], &[]);
    let server = start(
        &mocks,
        &model("round-robin", &[1, 1], ""),
        "[routing]\nretry_budget_floor = 5\n[routing.breaker]\nminimum_calls = 4\nwindow = 8\nopen_ms = 60000\n",
    );
    let url = format!("{}/v1/chat/completions", server.url());
    let mut statuses = Vec::new();
    for _ in 0..40 {
        let (status, headers, body) = post(&url, ADMIN_KEY, &ask("m", false)).await;
        statuses.push(status);
        if status == 503 {
            assert_eq!(body["error"]["code"], "no_healthy_deployment", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("p0/gpt-4o-mini")
            );
            assert!(headers.contains_key("retry-after"));
        }
    }
    assert!(
        statuses.iter().all(|s| *s == 502 || *s == 503),
        "{statuses:?}"
    );
    // 40 first attempts at most, plus retries within 20 % of 40 and the floor of 5.
    let calls: u64 = counts(&mocks).await.iter().sum();
    assert!(calls <= 40 + 8 + 5, "{calls} upstream calls");
    // With both breakers open, the answer needs no upstream call at all.
    let started = Instant::now();
    let (status, _, _) = post(&url, ADMIN_KEY, &ask("m", false)).await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(counts(&mocks).await.iter().sum::<u64>(), calls);
}

#[tokio::test]
async fn the_breaker_opens_rejects_half_opens_and_closes() {
    let mocks = mocks(&[None], &[]);
    let server = start(
        &mocks,
        &model("priority", &[1], ""),
        "[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 4\nwindow = 4\nopen_ms = 1500\n",
    );
    let url = format!("{}/v1/chat/completions", server.url());
    let state = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("atalaya_circuit_state{breaker=\"p0/gpt-4o-mini\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(state(&metrics_text(&server).await).as_deref(), Some("0"));
    set_profile(&mocks[0], r#"{"name": "failing"}"#).await;
    for _ in 0..4 {
        let (status, _, _) = post(&url, ADMIN_KEY, &ask("m", false)).await;
        assert_eq!(status, 502);
    }
    assert_eq!(
        state(&metrics_text(&server).await).as_deref(),
        Some("2"),
        "open after 4 failures"
    );
    // Open: rejected without calling the upstream.
    let before = mock_requests(&mocks[0]).await;
    let (status, headers, body) = post(&url, ADMIN_KEY, &ask("m", false)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit open")
    );
    assert!(headers.contains_key("retry-after"));
    assert_eq!(mock_requests(&mocks[0]).await, before);
    // After the open period a probe goes through; it succeeds and the breaker closes.
    set_profile(&mocks[0], r#"{"name": "healthy"}"#).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, _, _) = post(&url, ADMIN_KEY, &ask("m", false)).await;
    assert_eq!(status, 200);
    assert_eq!(state(&metrics_text(&server).await).as_deref(), Some("0"));
    let output = server.process.output();
    for transition in [
        "from=\"closed\" to=\"open\"",
        "from=\"open\" to=\"half_open\"",
        "from=\"half_open\" to=\"closed\"",
    ] {
        assert!(
            output.contains(transition),
            "no log of {transition}:\n{output}"
        );
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let mocks = mocks(&[None], &[]);
    let server = start(&mocks, &model("priority", &[1], ""), "");
    post(
        &format!("{}/_mock/faults", mocks[0].url()),
        "",
        r#"{"status": 429, "retry_after": 2, "times": 1}"#,
    )
    .await;
    let started = Instant::now();
    let (status, headers, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &ask("m", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "retried after {:?}",
        started.elapsed()
    );
    assert_eq!(headers["x-atalaya-attempts"], "2");
}

#[tokio::test]
async fn a_stream_cut_mid_way_ends_with_an_error_event() {
    let mocks = mocks(&[Some("cut")], &[]);
    let server = start(&mocks, &model("priority", &[1], ""), "");
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", server.url()),
        ADMIN_KEY,
        &ask("m", true),
    )
    .await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() >= 3, "{text}");
    let last: Value =
        serde_json::from_str(events.last().unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_error", "{text}");
    assert!(!text.contains("[DONE]"));
    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["status"], 502);
}

#[tokio::test]
async fn fallbacks_rules_and_context_overflow_choose_other_models() {
    let mocks = mocks(&[Some("failing"), None, None], &[]);
    let models = "[[models]]\nname = \"smart\"\nprovider = \"p0\"\nmodel = \"gpt-4o\"\nfallbacks = [\"cheap\"]\ncontext_fallback = \"long\"\n\n\
                  [[models]]\nname = \"cheap\"\nprovider = \"p1\"\nmodel = \"gpt-4o-mini\"\n\n\
                  [[models]]\nname = \"long\"\nprovider = \"p2\"\nmodel = \"gpt-4.1\"\n\n\
                  [[catalog.models]]\nprovider = \"p0\"\nmodel = \"gpt-4o\"\ncontext_window = 200\n";
    let server = start(
        &mocks,
        models,
        "[[routing.rules]]\nmodels = [\"smart\"]\nheaders = { \"x-tier\" = \"free\" }\nroute_to = \"long\"\n\n\
         [[routing.rules]]\nmetadata = { \"tier\" = \"batch\" }\nroute_to = \"long\"\n\n\
         [[routing.rules]]\nteams = [\"interns\"]\nroute_to = \"long\"\n",
    );
    let url = format!("{}/v1/chat/completions", server.url());
    let (status, headers, _) = post(&url, ADMIN_KEY, &ask("smart", false)).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-atalaya-deployment"], "p1/gpt-4o-mini",
        "failed over to the fallback model"
    );

    let long_prompt =
        json!({"model": "smart", "messages": [{"role": "user", "content": "word ".repeat(400)}]})
            .to_string();
    let (status, headers, _) = post(&url, ADMIN_KEY, &long_prompt).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-atalaya-deployment"], "p2/gpt-4.1",
        "too long for smart's window"
    );

    let response = client()
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .header("x-tier", "free")
        .body(ask("smart", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-atalaya-deployment"],
        "p2/gpt-4.1",
        "the rule for free tier"
    );
    let batch = json!({"model": "cheap", "metadata": {"tier": "batch"}, "messages": [{"role": "user", "content": "hi"}]});
    let (status, headers, _) = post(&url, ADMIN_KEY, &batch.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-atalaya-deployment"], "p2/gpt-4.1",
        "the rule on request metadata"
    );
    let intern = create_key(&server, json!({"team": "interns"})).await;
    let (status, headers, _) =
        post(&url, intern["key"].as_str().unwrap(), &ask("cheap", false)).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-atalaya-deployment"], "p2/gpt-4.1",
        "the rule on the key's team"
    );

    let rows = eventually(Duration::from_secs(5), || async {
        let rows = log_rows(&server).await;
        (rows.len() >= 5).then_some(rows)
    })
    .await;
    let fallback = rows
        .iter()
        .find(|r| r["deployment"] == "p1/gpt-4o-mini")
        .unwrap();
    assert_eq!(fallback["fallback_path"], "smart>cheap");
    assert_eq!(fallback["attempts"], 2);
    assert_eq!(fallback["model"], "smart");
    let overflow = rows
        .iter()
        .find(|r| r["fallback_path"] == "smart>long")
        .unwrap();
    assert_eq!(overflow["attempts"], 1);
}

#[tokio::test]
async fn a_refused_key_is_disabled_and_the_next_one_used() {
    let mocks = mocks(&[None], &[]);
    let server = serve(ServeOptions {
        config: &format!(
            "[[providers]]\nname = \"p0\"\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\napi_key = \"sk-revoked\"\napi_keys = [\"sk-upstream-secret\"]\nmodels = [\"gpt-4o-mini\"]\n",
            mocks[0].url()
        ),
        ..ServeOptions::default()
    });
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..4 {
        let (status, _, body) = post(&url, ADMIN_KEY, &ask("gpt-4o-mini", false)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, providers) = get(&format!("{}/api/v1/providers", server.url()), ADMIN_KEY).await;
    let provider = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p0")
        .unwrap()
        .clone();
    assert_eq!(provider["keys"], json!({"total": 2, "enabled": 1}));
    let output = server.process.output();
    assert!(
        output.contains("Upstream API key refused by the provider"),
        "{output}"
    );
    assert!(!output.contains("sk-revoked") && !output.contains("sk-upstream-secret"));
}

#[tokio::test]
async fn a_stream_idle_longer_than_the_limit_ends_with_an_error_event() {
    // 200 ms between chunks upstream.
    let mocks = mocks(&[Some("slow-stream")], &[]);
    let server = start(
        &mocks,
        &model("priority", &[1], "idle_timeout_ms = 100"),
        "",
    );
    let url = format!("{}/v1/chat/completions", server.url());
    // A short answer: a few chunks, 200 ms apart.
    let short = json!({"model": "m", "stream": true, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}).to_string();
    let started = Instant::now();
    let (status, _, body) = post(&url, ADMIN_KEY, &short).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(text.contains("no data for 100 ms"), "{text}");
    assert!(!text.contains("[DONE]"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A client may allow longer gaps for its own request.
    let (status, _, body) = post_with(
        &url,
        ADMIN_KEY,
        &short,
        &[("x-atalaya-idle-timeout-ms", "1000")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.as_str().unwrap().ends_with("data: [DONE]\n\n"),
        "{body}"
    );
}
