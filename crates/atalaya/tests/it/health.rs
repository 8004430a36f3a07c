//! Health score and levels through the API: a deployment's breaker opening drops the level at
//! once and switches features off with a clear 503; recovery raises it again on its own,
//! after the hysteresis hold. Each change is audited and alerted.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

async fn health(server: &Server) -> Value {
    let (status, body) = get(&format!("{}/api/v1/health", server.url()), ADMIN_KEY).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn all_on(report: &Value) -> bool {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["enabled"] == true)
}

#[tokio::test]
async fn the_level_falls_with_a_provider_sheds_features_and_recovers_on_its_own() {
    let upstream = mock(MockOptions::default());
    let hook = HookReceiver::start().await;
    let server = serve(ServeOptions {
        config: &format!(
            "{}[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 2\nwindow = 2\nopen_ms = 1500\n\
             [health]\ninterval_ms = 100\nrecover_after_ms = 400\n\
             [alerts]\nevaluate_interval_ms = 100\n[[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}/alerts\"\n",
            gpt_on(&upstream),
            hook.url
        ),
        ..ServeOptions::default()
    });
    let base = server.url();
    let report = health(&server).await;
    assert_eq!(report["level"], "OPTIMAL", "{report}");
    assert_eq!(report["score"], 100.0);
    let dependencies = report["dependencies"].as_array().unwrap();
    assert_eq!(dependencies[0]["name"], "database");
    assert_eq!(dependencies[0]["weight"], 30.0);
    assert!(
        dependencies.iter().any(|d| d["kind"] == "provider"
            && d["name"] == "p0/gpt-4o-mini"
            && d["weight"] == 50.0),
        "{report}"
    );
    assert!(all_on(&report), "{report}");
    assert!(report["predicted_recovery"].is_null());

    // The only deployment fails: its breaker opens, providers count 0, the score is 30/80.
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let chat = format!("{base}/v1/chat/completions");
    for _ in 0..3 {
        post(&chat, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    }
    let report = eventually(Duration::from_secs(10), || async {
        let report = health(&server).await;
        (report["level"] == "MINIMAL").then_some(report)
    })
    .await;
    assert_eq!(report["score"], 37.5, "{report}");
    let provider = report["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "provider")
        .unwrap();
    assert_eq!(provider["state"], "down", "{report}");
    assert_eq!(report["recent_changes"][0]["to"], "MINIMAL");
    assert!(
        report["predicted_recovery"]["basis"].is_string(),
        "{report}"
    );

    // Shed features answer a clear 503 at once; the live feed and readiness stay.
    let (status, headers, body) = post(
        &format!("{base}/api/v1/compare"),
        ADMIN_KEY,
        r#"{"models": ["gpt-4o-mini"], "messages": [{"role": "user", "content": "hi"}]}"#,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "feature_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MINIMAL"),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    let (status, body) = get(&format!("{base}/api/v1/analytics/summary"), ADMIN_KEY).await;
    assert_eq!(status, 503, "{body}");
    let (status, _) = get(&format!("{base}/health/ready"), "").await;
    assert_eq!(status, 200, "MINIMAL is still ready");

    // The provider comes back: probes close the breaker and, after the hold, the level rises.
    set_profile(&upstream, r#"{"name": "healthy"}"#).await;
    let report = eventually(Duration::from_secs(15), || async {
        post(&chat, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
        let report = health(&server).await;
        (report["level"] == "OPTIMAL").then_some(report)
    })
    .await;
    assert!(all_on(&report), "{report}");
    let (status, _) = get(&format!("{base}/api/v1/analytics/summary"), ADMIN_KEY).await;
    assert_eq!(status, 200);

    // Audited both ways, alerted and resolved.
    let (_, audit) = get(&format!("{base}/api/v1/audit"), ADMIN_KEY).await;
    let changes: Vec<&Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["action"] == "health.level_changed")
        .collect();
    assert!(changes.len() >= 2, "{audit}");
    let sent = eventually(Duration::from_secs(10), || async {
        let bodies = hook.bodies("/alerts");
        let health: Vec<Value> = bodies
            .into_iter()
            .filter(|b| b["alert"]["rule"] == "health-level")
            .collect();
        health
            .iter()
            .any(|b| b["alert"]["state"] == "resolved")
            .then_some(health)
    })
    .await;
    assert_eq!(sent[0]["alert"]["state"], "firing", "{sent:?}");
    assert!(
        sent[0]["alert"]["summary"]
            .as_str()
            .unwrap()
            .contains("compare"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_backup_no_traffic_reaches_recovers_through_probes() {
    let primary = mock(MockOptions::default());
    let backup = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!(
            "{}[[models]]\nname = \"m\"\nstrategy = \"priority\"\n\
             [[models.deployments]]\nprovider = \"p0\"\nmodel = \"gpt-4o-mini\"\n\
             [[models.deployments]]\nprovider = \"p1\"\nmodel = \"gpt-4o-mini\"\n\
             [routing]\nmax_attempts = 2\nbackoff_base_ms = 1\nretry_budget_ratio = 1.0\nretry_budget_floor = 1000\n\
             [routing.breaker]\nminimum_calls = 2\nwindow = 2\nopen_ms = 300\n\
             [health]\ninterval_ms = 100\nrecover_after_ms = 200\n",
            providers_for(&[&primary, &backup])
        ),
        ..ServeOptions::default()
    });
    let chat = format!("{}/v1/chat/completions", server.url());
    // Both down: each request fails on p0, then on p1, until both breakers are open.
    for upstream in [&primary, &backup] {
        set_profile(upstream, r#"{"name": "down"}"#).await;
    }
    let providers_down = |report: &Value| {
        report["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "provider")
            .all(|d| d["state"] == "down")
    };
    eventually(Duration::from_secs(10), || async {
        post(&chat, ADMIN_KEY, &chat_body("m", false)).await;
        providers_down(&health(&server).await).then_some(())
    })
    .await;
    // The probes keep finding them down: the breakers stay open.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = health(&server).await;
    assert!(
        report["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "provider")
            .all(|d| d["state"] != "healthy"),
        "{report}"
    );

    // Both back, and no request comes: the probes find them up, the breakers close, and the
    // score and level recover with no traffic at all.
    let chats = |upstream: &Process| {
        let url = format!("{}/_mock/requests", upstream.url());
        async move {
            let (_, recorded) = get(&url, "").await;
            recorded.as_array().unwrap().clone()
        }
    };
    let before = chats(&backup).await.len();
    for upstream in [&primary, &backup] {
        set_profile(upstream, r#"{"name": "healthy"}"#).await;
    }
    let report = eventually(Duration::from_secs(15), || async {
        let report = health(&server).await;
        (report["level"] == "OPTIMAL").then_some(report)
    })
    .await;
    assert_eq!(report["score"], 100.0, "{report}");
    let recorded = chats(&backup).await;
    let since: Vec<&Value> = recorded[before..].iter().collect();
    assert!(
        since
            .iter()
            .all(|r| r["method"] == "GET" && r["path"] == "/v1/models"),
        "only probes reached the backup: {since:?}"
    );
    assert!(!since.is_empty());
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains(
            "atalaya_provider_probes_total{deployment=\"p1/gpt-4o-mini\",outcome=\"up\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "atalaya_provider_probes_total{deployment=\"p1/gpt-4o-mini\",outcome=\"down\"}"
        ),
        "{metrics}"
    );
}
