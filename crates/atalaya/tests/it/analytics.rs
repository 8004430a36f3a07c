//! Analytics API: totals, time series and breakdowns agree with the request log, whether the
//! rows are rolled up yet or not, and bad parameters get clear 400s.

use serde_json::{Value, json};

use crate::harness::*;

async fn analytics(server: &Server, key: &str, query: &str) -> (u16, Value) {
    get(&format!("{}/api/v1/analytics/{query}", server.url()), key).await
}

fn by_value(body: &Value) -> Vec<(String, u64)> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            (
                group["value"].as_str().unwrap_or("(none)").to_owned(),
                group["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn analytics_match_the_request_log_by_team_status_and_time() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "[analytics]\nrollup_interval_ms = 100\n\n[[providers]]\nname = \"priced\"\n\
             type = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-upstream-secret\"\n",
            upstream.url()
        ),
        ..ServeOptions::default()
    });
    let red = create_key(&server, json!({"name": "red-app", "team": "red"})).await;
    let blue = create_key(&server, json!({"name": "blue-app", "team": "blue"})).await;
    let (red, blue) = (red["key"].as_str().unwrap(), blue["key"].as_str().unwrap());
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..3 {
        let (status, _, body) = post(&url, red, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(status, 200, "{body}");
    }
    for _ in 0..2 {
        let response = client()
            .post(&url)
            .bearer_auth(blue)
            .header("content-type", "application/json")
            .body(chat_body("gpt-4o-mini", true))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("[DONE]"));
    }
    let (status, _, _) = post(&url, red, &chat_body("no-such-model", false)).await;
    assert_eq!(status, 404);
    eventually(std::time::Duration::from_secs(10), || async {
        (log_rows(&server).await.len() == 6).then_some(())
    })
    .await;

    // Whole hours around now: rollups plus the rows not rolled up yet.
    let range = format!("from=2h&to={}", now_ms() + 3_600_000);
    for pass in 0..2 {
        let (status, summary) = analytics(&server, ADMIN_KEY, &format!("summary?{range}")).await;
        assert_eq!(status, 200, "{summary}");
        let stats = &summary["stats"];
        assert_eq!(stats["requests"], 6, "pass {pass}: {summary}");
        assert_eq!(stats["errors"], 1);
        assert_eq!(stats["server_errors"], 0);
        assert!((stats["error_rate"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9);
        assert!(stats["prompt_tokens"].as_u64().unwrap() > 0);
        assert!(stats["completion_tokens"].as_u64().unwrap() > 0);
        assert!(stats["cost_usd"].as_f64().unwrap() > 0.0, "{summary}");
        let latency = &stats["latency_ms"];
        assert!(latency["p50"].as_f64().unwrap() > 0.0);
        assert!(latency["p99"].as_f64().unwrap() >= latency["p50"].as_f64().unwrap());
        assert!(
            stats["ttft_ms"]["p50"].as_f64().unwrap() > 0.0,
            "streams have TTFT"
        );

        let (_, teams) = analytics(&server, ADMIN_KEY, &format!("breakdown?by=team&{range}")).await;
        assert_eq!(
            by_value(&teams),
            [("red".into(), 4), ("blue".into(), 2)],
            "{teams}"
        );
        let (_, statuses) =
            analytics(&server, ADMIN_KEY, &format!("breakdown?by=status&{range}")).await;
        assert_eq!(by_value(&statuses), [("200".into(), 5), ("404".into(), 1)]);
        // Two filters at once: answered from the raw rows.
        let (_, priced) = analytics(
            &server,
            ADMIN_KEY,
            &format!("breakdown?by=team&model=gpt-4o-mini&status=200&{range}"),
        )
        .await;
        assert_eq!(
            by_value(&priced),
            [("red".into(), 3), ("blue".into(), 2)],
            "{priced}"
        );

        let (status, series) = analytics(
            &server,
            ADMIN_KEY,
            &format!("timeseries?step=1h&team=red&{range}"),
        )
        .await;
        assert_eq!(status, 200, "{series}");
        let points = series["points"].as_array().unwrap();
        // Buckets are whole UTC hours: the three hours of the range touch four of them.
        assert_eq!(points.len(), 4, "{series}");
        let total: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
        assert_eq!(total, 4);
        // The rollup task runs every 100 ms: the second pass reads rolled-up hours.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // The default range is the last 24 hours.
    let (_, summary) = analytics(&server, ADMIN_KEY, "summary").await;
    assert_eq!(summary["stats"]["requests"], 6);
    // A minute-by-minute series over the last hour.
    let (_, series) = analytics(&server, ADMIN_KEY, "timeseries?from=1h").await;
    assert_eq!(series["step_ms"], 60_000);
    let total: u64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 6);
}

#[tokio::test]
async fn bad_analytics_parameters_get_clear_errors() {
    let server = serve(ServeOptions::default());
    let cases = [
        ("breakdown", "by"),
        ("breakdown?by=colour", "by"),
        ("summary?from=yesterday", "from"),
        ("summary?from=1h&to=2h", "from"),
        ("summary?status=ok", "status"),
        ("summary?step=1h", "step"),
        ("timeseries?from=30d&step=1s", "step"),
        ("timeseries?step=fortnight", "step"),
        ("timeseries?by=model", "by"),
    ];
    for (query, param) in cases {
        let (status, body) = analytics(&server, ADMIN_KEY, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["param"], param, "{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = analytics(&server, ADMIN_KEY, "summary?colour=red").await;
    assert_eq!(status, 400, "{body}");
    // Reading analytics needs the read permission.
    let developer = create_key(&server, json!({"role": "developer"})).await;
    let (status, body) = analytics(&server, developer["key"].as_str().unwrap(), "summary").await;
    assert_eq!(status, 403, "{body}");
    let viewer = create_key(&server, json!({"role": "viewer"})).await;
    let (status, _) = analytics(&server, viewer["key"].as_str().unwrap(), "summary").await;
    assert_eq!(status, 200);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
