//! Alerts end to end: an error-rate rule and a circuit rule fire to a local webhook, a
//! Slack-format webhook and an SMTP sink; they are not repeated while firing, resolve when
//! the errors stop, respect each channel's hourly limit, and are all recorded.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn alerts_fire_to_webhook_slack_and_email_then_resolve() {
    let upstream = mock(MockOptions::default());
    let hooks = HookReceiver::start().await;
    let smtp = SmtpSink::start().await;
    let config = format!(
        "{providers}[routing]\nmax_attempts = 1\n[routing.breaker]\nminimum_calls = 3\nwindow = 3\nopen_ms = 60000\n\n\
         [alerts]\nevaluate_interval_ms = 200\nmax_per_hour = 2\n\n\
         [[alerts.channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hooks}/hook\"\nheaders = {{ authorization = \"Bearer hook-secret-123\" }}\n\n\
         [[alerts.channels]]\nname = \"slack\"\ntype = \"slack\"\nurl = \"{hooks}/slack\"\n\n\
         [[alerts.channels]]\nname = \"mail\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp}\nfrom = \"atalaya@localhost\"\nto = [\"ops@localhost\", \"lead@localhost\"]\n\n\
         [[alerts.rules]]\nname = \"upstream-errors\"\nkind = \"error_rate\"\nthreshold = 0.5\nwindow_seconds = 2\nmin_requests = 3\nseverity = \"critical\"\n\n\
         [[alerts.rules]]\nname = \"breaker\"\nkind = \"circuit_open\"\nchannels = [\"hook\"]\n",
        providers = gpt_on(&upstream),
        hooks = hooks.url,
        smtp = smtp.port,
    );
    let server = serve(ServeOptions {
        config: &config,
        ..ServeOptions::default()
    });
    let mut feed = crate::events::Feed::open(&server, ADMIN_KEY, "?types=alert").await;
    set_profile(&upstream, r#"{"name": "failing"}"#).await;
    let url = format!("{}/v1/chat/completions", server.url());
    for _ in 0..3 {
        let (status, _, _) = post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
        assert_eq!(status, 502);
    }

    // The webhook hears both rules, Slack and email only the error rate.
    let hook = eventually(Duration::from_secs(10), || async {
        let bodies = hooks.bodies("/hook");
        (bodies.len() == 2).then_some(bodies)
    })
    .await;
    let rule_of = |body: &Value| body["alert"]["rule"].as_str().unwrap().to_owned();
    let mut rules: Vec<String> = hook.iter().map(rule_of).collect();
    rules.sort();
    assert_eq!(rules, ["breaker", "upstream-errors"]);
    let errors = hook
        .iter()
        .find(|b| rule_of(b) == "upstream-errors")
        .unwrap();
    assert_eq!(errors["source"], "atalaya");
    assert_eq!(errors["alert"]["state"], "firing");
    assert_eq!(errors["alert"]["severity"], "critical");
    assert_eq!(errors["alert"]["subject"], "p0/gpt-4o-mini");
    assert_eq!(errors["alert"]["details"]["errors"], 3);
    let breaker = hook.iter().find(|b| rule_of(b) == "breaker").unwrap();
    assert_eq!(breaker["alert"]["kind"], "circuit_open");
    assert!(
        breaker["alert"]["summary"]
            .as_str()
            .unwrap()
            .contains("circuit opened")
    );
    let authorization = hooks
        .received
        .lock()
        .unwrap()
        .iter()
        .find(|(path, _, _)| path == "/hook")
        .map(|(_, headers, _)| headers["authorization"].clone())
        .unwrap();
    assert_eq!(authorization, "Bearer hook-secret-123");

    let slack = eventually(Duration::from_secs(10), || async {
        let bodies = hooks.bodies("/slack");
        (!bodies.is_empty()).then_some(bodies)
    })
    .await;
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING critical] upstream-errors:"),
        "{}",
        slack[0]
    );
    assert_eq!(slack[0]["attachments"][0]["color"], "#d40e0d");
    let mail = eventually(Duration::from_secs(10), || async {
        smtp.messages().into_iter().next()
    })
    .await;
    assert_eq!(mail.0, ["ops@localhost", "lead@localhost"]);
    assert!(
        mail.1
            .contains("Subject: [atalaya] [FIRING critical] upstream-errors:"),
        "{}",
        mail.1
    );
    assert!(mail.1.contains("From: atalaya@localhost"));
    assert!(mail.1.contains("error rate 100 %"));

    let event = feed.next_of("alert").await;
    assert_eq!(event["data"]["state"], "firing");

    // Still failing (the breaker refuses now): no repeat while the alert fires.
    for _ in 0..3 {
        post(&url, ADMIN_KEY, &chat_body("gpt-4o-mini", false)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hooks.bodies("/slack").len(), 1);

    // No failing traffic left in the 2 s window: resolved to Slack and email; the webhook
    // has used its two notifications this hour, so it is skipped and that is recorded.
    let slack = eventually(Duration::from_secs(15), || async {
        let bodies = hooks.bodies("/slack");
        (bodies.len() == 2).then_some(bodies)
    })
    .await;
    assert!(
        slack[1]["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED critical]")
    );
    assert_eq!(slack[1]["attachments"][0]["color"], "#2eb886");
    eventually(Duration::from_secs(10), || async {
        (smtp.messages().len() == 2).then_some(())
    })
    .await;
    assert_eq!(hooks.bodies("/hook").len(), 2);

    let (status, recorded) = get(&format!("{}/api/v1/alerts", server.url()), ADMIN_KEY).await;
    assert_eq!(status, 200, "{recorded}");
    let rows = recorded["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{recorded}");
    let resolved = &rows[0];
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["rule"], "upstream-errors");
    assert_eq!(resolved["channels"], serde_json::json!(["slack", "mail"]));
    assert!(
        metric(
            &server,
            "atalaya_alerts_suppressed_total{reason=\"rate_limited\"}"
        )
        .await
            >= 1.0
    );
    // The webhook's secret header never reaches the logs.
    assert!(!server.process.output().contains("hook-secret-123"));
}

#[tokio::test]
async fn bad_alert_config_names_the_key() {
    let cases = [
        (
            "[[alerts.channels]]\nname = \"x\"\ntype = \"pager\"\n",
            "alerts.channels[0].type",
        ),
        (
            "[[alerts.channels]]\nname = \"x\"\ntype = \"webhook\"\nurl = \"ftp://x\"\n",
            "alerts.channels[0].url",
        ),
        (
            "[[alerts.channels]]\nname = \"x\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\nfrom = \"a@b\"\n",
            "alerts.channels[0].to",
        ),
        (
            "[[alerts.rules]]\nname = \"r\"\nkind = \"error_rate\"\n",
            "alerts.rules[0].threshold",
        ),
        (
            "[[alerts.rules]]\nname = \"r\"\nkind = \"p95_latency\"\nthreshold = 5\nwindow_seconds = 99999\n",
            "alerts.rules[0].window_seconds",
        ),
        (
            "[[alerts.rules]]\nname = \"r\"\nkind = \"budget\"\nchannels = [\"nope\"]\n",
            "alerts.rules[0].channels",
        ),
        (
            "[[alerts.rules]]\nname = \"r\"\nkind = \"budget\"\nseverity = \"dire\"\n",
            "alerts.rules[0].severity",
        ),
    ];
    for (config, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atalaya.toml");
        std::fs::write(&path, config).unwrap();
        let output = std::process::Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{config}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{config}: {stderr}");
    }
}
