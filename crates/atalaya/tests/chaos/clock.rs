//! Clock jumps: the wall clock stepped forwards and backwards under a running gateway (as NTP
//! or an operator can), through libfaketime. Rate limits run on the monotonic clock, so a jump
//! neither refills a spent limit nor locks a key out.

use std::path::PathBuf;

use crate::harness::*;
use crate::*;

fn libfaketime() -> Option<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketime.so.1")))
        .find(|path| path.exists())
}

#[tokio::test]
async fn clock_jumps_leave_rate_limits_alone() {
    let Some(library) = libfaketime() else {
        assert!(
            std::env::var("ATALAYA_TEST_REQUIRE_SERVICES").is_err(),
            "libfaketime is missing: scripts/install-tools installs it"
        );
        eprintln!("notice: libfaketime not installed; the clock-jump scenario is skipped");
        return;
    };
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let upstream = mock(MockOptions::default());
    let server = serve(ServeOptions {
        config: &format!("{}{}{ROUTING}", providers_for(&[&upstream]), model_m(1)),
        env: vec![
            ("LD_PRELOAD", library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", clock.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            // Only the wall clock jumps, as it does on a real machine.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ],
        ..ServeOptions::default()
    });
    let created = create_key(&server, serde_json::json!({"rpm_limit": 5})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/chat/completions", server.url());
    let mut tally = Tally::default();
    let ask_once = |expected: u16| {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let (status, _, body) = post(&url, &key, &ask(false)).await;
            assert_eq!(status, expected, "{body}");
            status
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(ask_once(200).await);
    }
    statuses.push(ask_once(429).await);
    // Two hours forward: a limiter on the wall clock would refill here.
    std::fs::write(&clock, "+2h\n").unwrap();
    statuses.push(ask_once(429).await);
    // And back again, four hours: one on the wall clock could lock the key out for hours.
    std::fs::write(&clock, "-2h\n").unwrap();
    statuses.push(ask_once(429).await);
    let (status, _) = get(&format!("{}/health/ready", server.url()), "").await;
    for status in &statuses {
        tally.sent += 1;
        *tally.statuses.entry(*status).or_default() += 1;
        tally.ok += usize::from(*status == 200);
    }
    let lost = lost_rows(&server, tally.sent).await;
    record(
        "clock jumps",
        "wall clock +2 h then -2 h under a key at 5 requests/min",
        &tally,
        lost,
        &format!("5 served, then 429 before and after both jumps; ready {status}"),
    );
    assert_eq!(status, 200);
    assert_eq!(lost, 0);
    // The jumps took: the request log's wall-clock times moved with them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let times: Vec<i64> = log_rows(&server)
        .await
        .iter()
        .filter_map(|row| row["created_at_ms"].as_i64())
        .collect();
    let hour = 3_600_000;
    assert!(times.iter().any(|t| *t > now + hour), "{times:?}");
    assert!(times.iter().any(|t| *t < now - hour), "{times:?}");
}
