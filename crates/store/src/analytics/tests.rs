use std::collections::BTreeMap;

use super::*;
use crate::RequestLogRow;

fn row(i: i64, created_at_ms: i64) -> RequestLogRow {
    let models = ["gpt-4o", "claude", "sim-chat"];
    RequestLogRow {
        seq: 0,
        request_id: format!("req-{i}").into(),
        created_at_ms,
        key_id: (i % 5 != 0).then(|| format!("key-{}", i % 3)),
        team: (i % 2 == 0).then(|| "red".into()),
        endpoint: "chat".into(),
        model: Some(models[(i % 3) as usize].to_owned()),
        provider: Some(format!("p{}", i % 2).into()),
        upstream_model: None,
        stream: i % 4 == 0,
        status: if i % 7 == 0 {
            502
        } else if i % 11 == 0 {
            429
        } else {
            200
        },
        latency_ms: 1.0 + (i * 37 % 1000) as f64,
        ttft_ms: (i % 4 == 0).then_some(0.5 + (i % 90) as f64),
        prompt_tokens: Some(10 + i % 13),
        completion_tokens: Some(i % 17),
        cached_tokens: None,
        usage_estimated: false,
        cost_usd: Some(0.001 * (i % 5) as f64),
        deployment: Some(format!("p{}/{}", i % 2, models[(i % 3) as usize]).into()),
        attempts: 1,
        retries: 0,
        fallback_path: None,
        error: None,
    }
}

const T0: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;

async fn store_with_rows(count: i64) -> (tempfile::TempDir, Store, Vec<RequestLogRow>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/analytics.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    // Rows every 97 s from 30 min before T0 for ~8 hours, inserted out of time order.
    let mut rows: Vec<RequestLogRow> = (0..count)
        .map(|i| row(i, T0 - 1_800_000 + i * 97_000))
        .collect();
    rows.reverse();
    // A row written first, far before every range queried and alone (too few to fold at
    // insert), leaves the rollups behind: the rows below are then rolled up by reading them
    // back, not at insert.
    let gap = RequestLogRow {
        request_id: "gap".into(),
        ..row(1, T0 - 100 * HOUR_MS)
    };
    store.insert_request_logs(&[gap]).await.unwrap();
    store.insert_request_logs(&rows).await.unwrap();
    (dir, store, rows)
}

/// What every query must return: the aggregate computed directly from the rows.
fn expected(
    rows: &[RequestLogRow],
    filter: &AnalyticsFilter,
    grouping: Grouping,
) -> Vec<(GroupKey, Aggregate)> {
    let mut groups: BTreeMap<GroupKey, Aggregate> = BTreeMap::new();
    for row in rows {
        let facts = Facts::from(row);
        let inside = facts.created_at_ms >= filter.from_ms
            && facts.created_at_ms < filter.to_ms
            && filter
                .equals
                .iter()
                .all(|(dim, value)| facts.value(*dim).text() == value.as_str());
        if inside {
            let key = match grouping {
                Grouping::By(dim) => group_key(grouping, facts.created_at_ms, || {
                    facts.value(dim).text().into_owned()
                }),
                _ => group_key(grouping, facts.created_at_ms, String::new),
            };
            groups.entry(key).or_default().add(&facts);
        }
    }
    groups.into_iter().collect()
}

fn assert_same(actual: &[(GroupKey, Aggregate)], expected: &[(GroupKey, Aggregate)]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?}\n{expected:?}");
    for ((key_a, a), (key_e, e)) in actual.iter().zip(expected) {
        assert_eq!(key_a, key_e);
        assert_eq!(a.requests, e.requests, "{key_a:?}");
        assert_eq!(a.errors, e.errors);
        assert_eq!(a.server_errors, e.server_errors);
        assert_eq!(a.prompt_tokens, e.prompt_tokens);
        assert_eq!(a.completion_tokens, e.completion_tokens);
        assert!((a.cost_usd - e.cost_usd).abs() < 1e-9);
        assert!((a.latency_ms_sum - e.latency_ms_sum).abs() < 1e-6);
        assert_eq!(a.latency, e.latency);
        assert_eq!(a.ttft, e.ttft);
    }
}

fn cases() -> Vec<(AnalyticsFilter, Grouping)> {
    let ranges = [
        (T0 - 3_600_000, T0 + 10 * HOUR_MS),
        (T0 + 1_234_567, T0 + 5 * HOUR_MS + 99),
        (T0 + 60_000, T0 + 120_000),
        (T0 + HOUR_MS, T0 + 3 * HOUR_MS),
    ];
    let mut cases = Vec::new();
    for (from_ms, to_ms) in ranges {
        let filters = [
            vec![],
            vec![(Dimension::Model, "claude".to_owned())],
            vec![(Dimension::Key, String::new())],
            vec![(Dimension::Status, "502".to_owned())],
            vec![
                (Dimension::Team, "red".to_owned()),
                (Dimension::Provider, "p1".to_owned()),
            ],
        ];
        for equals in filters {
            let filter = AnalyticsFilter {
                from_ms,
                to_ms,
                equals,
            };
            for grouping in [
                Grouping::Total,
                Grouping::Time { step_ms: HOUR_MS },
                Grouping::Time {
                    step_ms: 2 * HOUR_MS,
                },
                Grouping::Time { step_ms: 300_000 },
                Grouping::By(Dimension::Model),
                Grouping::By(Dimension::Key),
                Grouping::By(Dimension::Status),
            ] {
                cases.push((filter.clone(), grouping));
            }
        }
    }
    cases
}

#[tokio::test]
async fn rollups_and_raw_rows_give_the_same_answers_at_every_stage() {
    let (_dir, store, rows) = store_with_rows(300).await;
    // Nothing rolled up, a part rolled up (the watermark in the middle of hours), all of it.
    for roll in [0_u32, 123, 1_000] {
        if roll > 0 {
            store.roll_up_request_logs(roll).await.unwrap();
        }
        for (filter, grouping) in cases() {
            let actual = store.analytics(&filter, grouping).await.unwrap();
            assert_same(&actual, &expected(&rows, &filter, grouping));
        }
    }
    // Rows written after a roll-up: a varied batch is left to be read back and rolled up on
    // top of the existing rollups...
    let late: Vec<RequestLogRow> = (300..340).map(|i| row(i, T0 + (i % 7) * 600_000)).collect();
    store.insert_request_logs(&late).await.unwrap();
    let mut all: Vec<RequestLogRow> = rows.iter().chain(&late).cloned().collect();
    for roll in [0_u32, 1_000] {
        if roll > 0 {
            assert_eq!(store.roll_up_request_logs(roll).await.unwrap(), 40);
        }
        for (filter, grouping) in cases() {
            let actual = store.analytics(&filter, grouping).await.unwrap();
            assert_same(&actual, &expected(&all, &filter, grouping));
        }
    }
    // ...while a large batch of alike rows, once the rollups are caught up, is folded in as it
    // is inserted: nothing is left to read back.
    let alike: Vec<RequestLogRow> = (0..128)
        .map(|i| RequestLogRow {
            request_id: format!("alike-{i}").into(),
            ..row(3, T0 + 5 * HOUR_MS + i * 1_000)
        })
        .collect();
    store.insert_request_logs(&alike).await.unwrap();
    all.extend(alike);
    for roll in [0_u32, 1_000] {
        if roll > 0 {
            assert_eq!(store.roll_up_request_logs(roll).await.unwrap(), 0);
        }
        for (filter, grouping) in cases() {
            let actual = store.analytics(&filter, grouping).await.unwrap();
            assert_same(&actual, &expected(&all, &filter, grouping));
        }
    }
    assert_eq!(store.roll_up_request_logs(1_000).await.unwrap(), 0);
}

#[test]
fn histogram_quantiles_are_within_four_percent() {
    let mut histogram = Histogram::default();
    for ms in 1..=10_000 {
        histogram.record(f64::from(ms) / 10.0);
    }
    for (q, truth) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
        let estimate = histogram.quantile(q).unwrap();
        assert!((estimate / truth - 1.0).abs() < 0.04, "{q}: {estimate}");
    }
    let mut decoded = Histogram::default();
    decoded.merge_encoded(&histogram.encode());
    assert_eq!(decoded, histogram);
    assert_eq!(Histogram::default().quantile(0.5), None);
    let stats = Aggregate::default().stats();
    assert_eq!(stats.latency_ms, None);
    assert_eq!(stats.error_rate, 0.0);
}

#[tokio::test]
async fn retention_deletes_old_rows_after_rolling_them_up() {
    let (_dir, store, rows) = store_with_rows(300).await;
    let whole_range = AnalyticsFilter {
        from_ms: T0 - 4 * HOUR_MS,
        to_ms: T0 + 12 * HOUR_MS,
        equals: vec![],
    };
    let before = store
        .analytics(&whole_range, Grouping::Total)
        .await
        .unwrap();
    // Keep one day as of T0 + 1 day + 3 h: rows before T0 + 3 h go.
    let retention = crate::Retention {
        request_logs: Some(std::time::Duration::from_secs(86_400)),
        rollups: None,
        errors: None,
        server_logs: None,
        alerts: None,
    };
    let deleted = store
        .apply_retention(&retention, T0 + 27 * HOUR_MS)
        .await
        .unwrap();
    let old = rows
        .iter()
        .filter(|row| row.created_at_ms < T0 + 3 * HOUR_MS)
        .count() as u64;
    assert!(old > 0);
    assert_eq!(deleted.request_logs, old + 1, "and the early gap row");
    assert_eq!(
        store.count_request_logs().await.unwrap() as u64,
        rows.len() as u64 - old
    );
    // The deleted rows live on in the hourly rollups.
    let after = store
        .analytics(&whole_range, Grouping::Total)
        .await
        .unwrap();
    assert_same(&after, &before);
    // Rollups have a retention of their own.
    let retention = crate::Retention {
        request_logs: None,
        rollups: Some(std::time::Duration::from_secs(86_400)),
        errors: None,
        server_logs: None,
        alerts: None,
    };
    let deleted = store
        .apply_retention(&retention, T0 + 27 * HOUR_MS)
        .await
        .unwrap();
    assert!(deleted.rollups > 0);
    let after = store
        .analytics(&whole_range, Grouping::Total)
        .await
        .unwrap();
    assert!(after[0].1.requests < before[0].1.requests);
}

#[tokio::test]
async fn budget_spend_is_exact_before_and_after_rolling_up() {
    let (_dir, store, rows) = store_with_rows(300).await;
    let since = T0 + HOUR_MS + 1_234;
    let direct = |keep: &dyn Fn(&RequestLogRow) -> bool| -> f64 {
        rows.iter()
            .filter(|r| r.created_at_ms >= since && keep(r))
            .filter_map(|r| r.cost_usd)
            .sum()
    };
    let want_key = direct(&|r| r.key_id.as_deref() == Some("key-1"));
    let want_team = direct(&|r| r.team.as_deref() == Some("red"));
    assert!(want_key > 0.0 && want_team > 0.0);
    for max_rows in [0, 120, 100_000] {
        if max_rows > 0 {
            store.roll_up_request_logs(max_rows).await.unwrap();
        }
        let key = store.key_spend("key-1", since).await.unwrap();
        let team = store.team_spend("red", since).await.unwrap();
        assert!(
            (key - want_key).abs() < 1e-9,
            "{max_rows}: {key} vs {want_key}"
        );
        assert!(
            (team - want_team).abs() < 1e-9,
            "{max_rows}: {team} vs {want_team}"
        );
    }
    assert_eq!(store.key_spend("key-nobody", since).await.unwrap(), 0.0);
}
