use super::*;

fn rule(name: &str, kind: RuleKind) -> AlertRule {
    AlertRule {
        name: name.to_owned(),
        kind,
        severity: AlertSeverity::Critical,
        channels: None,
    }
}

async fn alerts(rules: Vec<AlertRule>) -> (tempfile::TempDir, Arc<Alerts>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/a.db", dir.path().display()))
        .await
        .unwrap();
    let settings = AlertSettings {
        evaluate_interval: Duration::from_secs(1),
        dedupe: Duration::from_secs(60),
        max_per_hour: 30,
        rules,
        channels: Vec::new(),
    };
    (dir, Alerts::new(settings, store, Events::default()))
}

#[tokio::test]
async fn an_error_rate_rule_fires_once_then_resolves() {
    let (_dir, alerts) = alerts(vec![rule(
        "errors",
        RuleKind::ErrorRate {
            threshold: 0.5,
            window: Duration::from_secs(60),
            min_requests: 4,
        },
    )])
    .await;
    let deployment: Arc<str> = Arc::from("p0/m");
    let now = atalaya_store::now_ms();
    for _ in 0..3 {
        alerts.observe(&deployment, 502, 10.0);
    }
    assert!(
        alerts.conditions(now).await.is_empty(),
        "3 requests are below the minimum"
    );
    alerts.observe(&deployment, 200, 10.0);
    let fired = alerts.conditions(now).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].state, "firing");
    assert_eq!(fired[0].subject, "p0/m");
    assert!(fired[0].summary.contains("75 %"), "{}", fired[0].summary);
    assert!(
        alerts.conditions(now).await.is_empty(),
        "no repeat while firing"
    );
    for _ in 0..20 {
        alerts.observe(&deployment, 200, 10.0);
    }
    let resolved = alerts.conditions(now).await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].state, "resolved");
}

#[tokio::test]
async fn one_off_signals_are_deduplicated_and_breakers_fire_and_resolve() {
    let (_dir, alerts) = alerts(vec![
        rule("budget", RuleKind::Budget),
        rule("breakers", RuleKind::CircuitOpen),
    ])
    .await;
    let budget = || Signal::Budget {
        scope: "key:k1".into(),
        which: "soft",
        spent: 1.0,
        limit: 0.5,
    };
    alerts.signal(budget());
    alerts.signal(budget());
    alerts.signal(Signal::Breaker {
        breaker: "p0/m".into(),
        to: "open",
        reason: "2 of the last 2 calls failed".into(),
    });
    let now = atalaya_store::now_ms();
    let fired = alerts.conditions(now).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(fired[0].rule, "budget");
    assert_eq!(
        fired[1].summary,
        "p0/m: circuit opened (2 of the last 2 calls failed)"
    );
    alerts.signal(budget());
    alerts.signal(Signal::Breaker {
        breaker: "p0/m".into(),
        to: "half_open",
        reason: "probing".into(),
    });
    assert!(alerts.conditions(now + 1_000).await.is_empty());
    alerts.signal(Signal::Breaker {
        breaker: "p0/m".into(),
        to: "closed",
        reason: "the probes succeeded".into(),
    });
    let resolved = alerts.conditions(now + 2_000).await;
    assert_eq!(resolved[0].state, "resolved");
    // After the de-duplication window the same budget alert goes out again.
    alerts.signal(budget());
    assert_eq!(alerts.conditions(now + 61_000).await.len(), 1);
}

#[test]
fn the_mad_detector_flags_a_latency_jump_but_not_noise() {
    let mut detector = MadDetector::new(60, 12);
    for i in 0..40 {
        let value = 100.0 + f64::from(i % 7) * 3.0;
        assert_eq!(detector.observe(value, 6.0), None, "noise at {i}");
    }
    let normal = detector.observe(400.0, 6.0).expect("a jump");
    assert!((100.0..120.0).contains(&normal));
    assert_eq!(detector.observe(108.0, 6.0), None);
}

#[test]
fn the_ewma_detector_flags_an_error_burst_after_warm_up() {
    let mut detector = EwmaDetector::new(0.1, 12);
    assert_eq!(
        detector.observe(0.9, 6.0),
        None,
        "no verdict while warming up"
    );
    let mut detector = EwmaDetector::new(0.1, 12);
    for i in 0..30 {
        let rate = if i % 5 == 0 { 0.02 } else { 0.0 };
        assert_eq!(detector.observe(rate, 6.0), None, "noise at {i}");
    }
    assert!(detector.observe(0.6, 6.0).is_some());
    assert_eq!(
        detector.observe(0.05, 6.0),
        None,
        "a small rise is not an anomaly"
    );
}

#[test]
fn latency_buckets_cover_milliseconds_to_hours() {
    assert_eq!(latency_bucket(0.5), 0);
    assert!(bucket_upper_ms(latency_bucket(250.0)) >= 250.0);
    assert!(bucket_upper_ms(latency_bucket(250.0)) < 250.0 * 1.25 + 1e-9);
    assert_eq!(latency_bucket(1e12), 63);
}

#[test]
fn email_headers_cannot_be_injected_and_slack_has_text() {
    let notice = Notice {
        rule: "r".into(),
        kind: "budget",
        severity: AlertSeverity::Warning,
        subject: "key:k1 soft".into(),
        state: "firing",
        summary: "spent\r\nBcc: evil@example.com".into(),
        details: serde_json::json!({"a": 1}),
        time_ms: 1_700_000_000_000,
    };
    let message = notify::email("a@localhost", &["b@localhost".into()], &notice);
    let headers = message.split("\r\n\r\n").next().unwrap();
    assert!(!headers.contains("\r\nBcc:"), "{headers}");
    assert!(headers.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000"));
    assert!(
        notify::slack_body(&notice)["text"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING warning] r:")
    );
}
