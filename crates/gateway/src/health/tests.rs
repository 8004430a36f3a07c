use secrecy::SecretString;

use super::*;

async fn monitor(settings: HealthSettings) -> (tempfile::TempDir, Arc<HealthMonitor>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/health.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    let auditor = Arc::new(Auditor::new(
        store.clone(),
        atalaya_security::audit::ChainKey::new(&SecretString::from("k".repeat(32))),
    ));
    let monitor = HealthMonitor::new(
        settings,
        Vec::new(),
        store,
        Events::default(),
        None,
        auditor,
    );
    (dir, monitor)
}

fn provider(health: f64) -> Dependency {
    Dependency {
        name: "p/m".to_owned(),
        kind: "provider",
        state: state_of(health),
        health,
        detail: String::new(),
        retry_at_ms: None,
    }
}

fn set_database(monitor: &HealthMonitor, health: f64) {
    monitor.state.lock().unwrap().database.health = health;
}

#[test]
fn scores_fall_in_the_documented_levels() {
    for (score, level) in [
        (100.0, Level::Optimal),
        (90.0, Level::Optimal),
        (89.9, Level::Degraded),
        (70.0, Level::Degraded),
        (69.0, Level::Limited),
        (50.0, Level::Limited),
        (49.0, Level::Minimal),
        (20.0, Level::Minimal),
        (19.9, Level::Emergency),
        (0.0, Level::Emergency),
    ] {
        assert_eq!(Level::of(score), level, "{score}");
    }
    assert_eq!(Level::parse("limited"), Some(Level::Limited));
    assert!(Level::Optimal > Level::Degraded && Level::Minimal > Level::Emergency);
}

#[tokio::test]
async fn the_score_weighs_what_is_configured_and_sheds_features_in_order() {
    let (_dir, monitor) = monitor(HealthSettings::default()).await;
    let now = Instant::now();
    // Providers 50, database 30; no cache or object storage configured: they drop out.
    let half = [provider(1.0), provider(0.0)];
    assert_eq!(monitor.decide(&half, now).unwrap().to, Level::Limited);
    assert_eq!(monitor.score(), 68.8, "(30 + 50 × 0.5) / 80");
    assert!(monitor.require("compare").is_err());
    assert!(monitor.require("analytics").is_ok());
    let error = monitor.require("compare").unwrap_err();
    assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error.code, "feature_disabled");
    assert!(error.message.contains("LIMITED"), "{}", error.message);
    assert!(
        error.message.contains("DEGRADED or better"),
        "{}",
        error.message
    );

    set_database(&monitor, 0.0);
    let change = monitor.decide(&half, now).unwrap();
    assert_eq!((change.from, change.to), (Level::Limited, Level::Minimal));
    assert_eq!(change.disabled, ["analytics", "analytics_rollups"]);
    assert!(
        !monitor
            .switch("analytics_rollups")
            .unwrap()
            .load(Ordering::Acquire)
    );
    assert!(monitor.require("live_feed").is_ok());

    let down = [provider(0.0), provider(0.0)];
    let change = monitor.decide(&down, now).unwrap();
    assert_eq!(change.to, Level::Emergency);
    assert_eq!(change.disabled, ["live_feed"]);
    let report = monitor.report();
    assert_eq!(report["level"], "EMERGENCY");
    assert_eq!(report["score"], 0.0);
    assert_eq!(report["features"][0]["enabled"], false);
    assert_eq!(report["recent_changes"][0]["to"], "EMERGENCY");
}

#[tokio::test]
async fn the_level_rises_only_after_holding_above_the_floor_plus_hysteresis() {
    let settings = HealthSettings {
        recover_after: Duration::from_secs(10),
        ..HealthSettings::default()
    };
    let (_dir, monitor) = monitor(settings).await;
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    set_database(&monitor, 0.0);
    // Database down, providers fine: 50 / 80 = 62.5, LIMITED.
    let fine = [provider(1.0)];
    assert_eq!(monitor.decide(&fine, at(0)).unwrap().to, Level::Limited);
    // Database slow (0.5): 76.3. That is DEGRADED, and clears 70 + 5: rising starts.
    set_database(&monitor, 0.5);
    assert!(monitor.decide(&fine, at(1)).is_none());
    assert!(
        monitor.decide(&fine, at(6)).is_none(),
        "not held long enough"
    );
    // A dip resets the clock, even without changing the level.
    set_database(&monitor, 0.2);
    assert!(monitor.decide(&fine, at(7)).is_none());
    set_database(&monitor, 0.5);
    assert!(monitor.decide(&fine, at(8)).is_none());
    assert!(monitor.decide(&fine, at(17)).is_none());
    let change = monitor.decide(&fine, at(18)).unwrap();
    assert_eq!((change.from, change.to), (Level::Limited, Level::Degraded));
    assert_eq!(change.enabled, ["compare"], "compare needs DEGRADED");
    assert!(monitor.require("compare").is_ok());
    // A score just above a floor does not rise: 90.6 is OPTIMAL's range but not 90 + 5.
    let almost = [provider(1.0), provider(1.0), provider(1.0), provider(1.0)];
    set_database(&monitor, 0.75);
    assert!(monitor.score_of(&almost, &monitor.state.lock().unwrap().database) > 90.0);
    for s in 20..60 {
        assert!(monitor.decide(&almost, at(s)).is_none());
    }
    // Falling is immediate.
    let change = monitor.decide(&[provider(0.0)], at(61)).unwrap();
    assert_eq!(change.to, Level::Minimal);
}

#[tokio::test]
async fn a_feature_level_can_be_changed_and_recovery_is_predicted() {
    let settings = HealthSettings {
        feature_levels: vec![("compare".to_owned(), Level::Emergency)],
        ..HealthSettings::default()
    };
    let (_dir, monitor) = monitor(settings).await;
    let now = Instant::now();
    let mut open = provider(0.0);
    open.retry_at_ms = Some(now_ms() + 30_000);
    monitor.decide(&[open.clone()], now).unwrap();
    assert!(
        monitor.require("compare").is_ok(),
        "kept on down to EMERGENCY"
    );
    let state = monitor.state.lock().unwrap();
    let prediction = monitor.prediction(&state, &[open]);
    assert_eq!(prediction["basis"], "breaker_schedule");
    assert!(prediction["at_ms"].as_i64().unwrap() > now_ms());
}
