//! Error tracking: failed requests are grouped by fingerprint with severity, location and
//! context; groups resolve and regress; warnings land in the database log; logs go to a daily
//! file as well, masked.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

async fn errors(server: &Server, key: &str, query: &str) -> (u16, Value) {
    get(&format!("{}/api/v1/errors{query}", server.url()), key).await
}

async fn open_groups(server: &Server) -> Vec<Value> {
    let (status, body) = errors(server, ADMIN_KEY, "").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn failed_requests_are_grouped_resolved_and_regress() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "{}[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 100\n",
            gpt_on(&upstream)
        ),
        ..ServeOptions::default()
    });
    let team_key = create_key(&server, json!({"team": "red"})).await;
    let team_key = team_key["key"].as_str().unwrap();
    let mut feed = crate::events::Feed::open(&server, ADMIN_KEY, "?types=error").await;
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let url = format!("{}/v1/chat/completions", server.url());
    let mut last_id = String::new();
    for _ in 0..3 {
        let (status, headers, _) = post(&url, team_key, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(status, 502);
        last_id = headers["x-request-id"].to_str().unwrap().to_owned();
    }
    // Client mistakes are not the gateway's errors.
    let (status, _, _) = post(&url, team_key, &chat_body("no-such-model", false)).await;
    assert_eq!(status, 404);

    let groups = eventually(Duration::from_secs(10), || async {
        let groups = open_groups(&server).await;
        (groups.first().is_some_and(|g| g["count"] == 3)).then_some(groups)
    })
    .await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    let group = &groups[0];
    assert_eq!(group["severity"], "medium");
    assert_eq!(group["service"], "gateway");
    assert_eq!(group["component"], "gateway.upstream");
    assert!(
        group["code"].as_str().unwrap().starts_with("upstream_"),
        "{group}"
    );
    assert!(
        group["file"]
            .as_str()
            .unwrap()
            .starts_with("crates/gateway/src/")
    );
    assert!(group["line"].as_u64().unwrap() > 0);
    assert!(
        group["module"]
            .as_str()
            .unwrap()
            .starts_with("atalaya_gateway")
    );
    assert!(group["first_seen_ms"].as_i64().unwrap() <= group["last_seen_ms"].as_i64().unwrap());
    assert_eq!(group["resolved"], false);
    let context = &group["last_context"];
    assert_eq!(context["request_id"], last_id.as_str());
    assert_eq!(context["team"], "red");
    assert_eq!(context["deployment"], "p0/gpt-4o-mini");
    assert!(context["key_id"].as_str().is_some());
    let fingerprint = group["fingerprint"].as_str().unwrap().to_owned();
    // A new group is announced on the live feed.
    let event = feed.next_of("error").await;
    assert_eq!(
        event["data"]["fingerprint"],
        fingerprint.as_str(),
        "{event}"
    );
    assert_eq!(event["data"]["new"], true);

    let (status, detail) = errors(&server, ADMIN_KEY, &format!("/{fingerprint}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["occurrences"].as_array().unwrap().len(), 3);
    let (_, stats) = errors(&server, ADMIN_KEY, "/stats").await;
    assert_eq!(stats["by_service"][0]["service"], "gateway", "{stats}");
    assert_eq!(stats["by_service"][0]["occurrences"], 3);
    assert_eq!(stats["by_component"][0]["component"], "gateway.upstream");

    // A viewer reads but may not resolve; an operator may.
    let viewer = create_key(&server, json!({"role": "viewer"})).await;
    let viewer = viewer["key"].as_str().unwrap();
    let resolve = format!("{}/api/v1/errors/{fingerprint}/resolve", server.url());
    let (status, _, _) = post(&resolve, viewer, "").await;
    assert_eq!(status, 403);
    let operator = create_key(&server, json!({"role": "operator"})).await;
    let (status, _, resolved) = post(&resolve, operator["key"].as_str().unwrap(), "").await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["resolved"], true);
    assert!(open_groups(&server).await.is_empty());
    let (_, all) = errors(&server, viewer, "?status=resolved").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);

    // It happens again: the group reopens and counts a regression.
    let (status, _, _) = post(&url, team_key, &chat_body("gpt-4o-mini", false)).await;
    assert_eq!(status, 502);
    let group = eventually(Duration::from_secs(10), || async {
        open_groups(&server).await.into_iter().next()
    })
    .await;
    assert_eq!(group["fingerprint"], fingerprint.as_str());
    assert_eq!(group["count"], 4);
    assert_eq!(group["regressions"], 1);

    let (status, missing) = post(
        &format!("{}/api/v1/errors/0000/resolve", server.url()),
        ADMIN_KEY,
        "",
    )
    .await
    .into_status_body();
    assert_eq!(status, 404, "{missing}");
    let (status, _) = errors(&server, ADMIN_KEY, "?severity=dire").await;
    assert_eq!(status, 400);
}

trait StatusBody {
    fn into_status_body(self) -> (u16, Value);
}

impl StatusBody for (u16, reqwest::header::HeaderMap, Value) {
    fn into_status_body(self) -> (u16, Value) {
        (self.0, self.2)
    }
}

#[tokio::test]
async fn warnings_reach_the_database_log_and_logs_reach_a_daily_file() {
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "{}[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 2\nwindow = 2\n",
            gpt_on(&upstream)
        ),
        ..ServeOptions::default()
    });
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..2 {
        post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    }
    // The breaker opening is a warning from the resilience crate.
    let row = eventually(Duration::from_secs(10), || async {
        let (status, body) = get(&format!("{}/api/v1/server-logs", server.url()), ADMIN_KEY).await;
        assert_eq!(status, 200, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["message"] == "Circuit breaker opened.")
            .cloned()
    })
    .await;
    assert_eq!(row["level"], "warn");
    assert_eq!(row["service"], "resilience");
    assert_eq!(row["fields"]["breaker"], "p0/gpt-4o-mini", "{row}");
    assert!(row["file"].as_str().unwrap().ends_with("breaker.rs"));

    let logs = server.data_path().join("logs");
    let file = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(".log"))
        .expect("a daily log file");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("atalaya.20") && name.len() == "atalaya.2026-11-23.log".len());
    let text = std::fs::read_to_string(&file).unwrap();
    let line: Value = serde_json::from_str(
        text.lines()
            .find(|line| line.contains("Listening on"))
            .expect("the listening line"),
    )
    .unwrap();
    assert_eq!(line["level"], "INFO");
    assert!(text.contains("Circuit breaker opened."));
    assert!(!file_holds(&file, ADMIN_KEY));
    assert!(!file_holds(&file, "sk-upstream-secret"));
}
