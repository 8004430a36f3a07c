//! Analytics on a million request-log rows, `cargo bench -p atalaya-store --bench analytics`.
//!
//! Writes 1,000,000 rows spread over 30 days (50 keys in 5 teams, 12 models on 4 providers,
//! 3 % errors) into a fresh SQLite database through the request-log batch insert, folds them
//! into the hourly rollups, then times the queries the analytics API runs (best of 5).
//! Target: every query under 200 ms. Set `ATALAYA_BENCH_ROWS` for another size.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use atalaya_store::{AnalyticsFilter, Dimension, Grouping, HOUR_MS, RequestLogRow, Store};

const DAY_MS: i64 = 24 * HOUR_MS;

/// xorshift: deterministic and cheap.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Roughly log-normal latency around `median` ms.
    fn latency(&mut self, median: f64) -> f64 {
        let u = (self.below(10_000) as f64 + 0.5) / 10_000.0;
        median * (3.0 * (u - 0.5)).exp()
    }
}

fn row(rng: &mut Rng, i: u64, created_at_ms: i64) -> RequestLogRow {
    let key = rng.below(keys());
    let model = rng.below(12);
    let provider = model % 4;
    let status = match rng.below(100) {
        0 => 502,
        1 => 429,
        2 => 500,
        _ => 200,
    };
    let stream = rng.below(2) == 0;
    let prompt = 50 + rng.below(4_000) as i64;
    let completion = rng.below(800) as i64;
    RequestLogRow {
        seq: 0,
        request_id: format!("req-{i:08}").into(),
        created_at_ms,
        key_id: Some(format!("key_{key:02}")),
        team: Some(format!("team-{}", key % 5).into()),
        endpoint: "chat".into(),
        model: Some(format!("model-{model:02}")),
        provider: Some(format!("provider-{provider}").into()),
        upstream_model: Some(format!("model-{model:02}").into()),
        stream,
        status,
        latency_ms: rng.latency(300.0 + 100.0 * model as f64),
        ttft_ms: stream.then(|| rng.latency(120.0)),
        prompt_tokens: Some(prompt),
        completion_tokens: Some(completion),
        cached_tokens: None,
        usage_estimated: false,
        cost_usd: Some((prompt as f64 * 2.5 + completion as f64 * 10.0) / 1e6),
        deployment: Some(format!("provider-{provider}/model-{model:02}").into()),
        attempts: 1,
        retries: 0,
        fallback_path: None,
        error: (status != 200).then(|| "upstream answered 502".to_owned()),
    }
}

/// Distinct keys the rows spread over (`ATALAYA_BENCH_KEYS`, default 50).
fn keys() -> u64 {
    static KEYS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KEYS.get_or_init(|| {
        std::env::var("ATALAYA_BENCH_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50)
    })
}

fn main() {
    let total: u64 = std::env::var("ATALAYA_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    runtime.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        common::run_bench_sql(&url).await;
        let now = atalaya_store::now_ms();
        let start_ms = now - 30 * DAY_MS;
        let spacing = (30 * DAY_MS) / total as i64;
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);

        let started = Instant::now();
        let cpu_before = common::cpu_seconds();
        let mut batch = Vec::with_capacity(512);
        for i in 0..total {
            batch.push(row(&mut rng, i, start_ms + i as i64 * spacing));
            if batch.len() == 512 {
                store.insert_request_logs(&batch).await.unwrap();
                batch.clear();
            }
        }
        store.insert_request_logs(&batch).await.unwrap();
        let insert = started.elapsed();
        let cpu = common::cpu_seconds() - cpu_before;
        println!(
            "insert   {total} rows in {:.1} s: {:.0} rows/s (batches of 512), {:.2} µs CPU per row",
            insert.as_secs_f64(),
            total as f64 / insert.as_secs_f64(),
            cpu * 1e6 / total as f64
        );

        let started = Instant::now();
        let mut rolled = 0;
        loop {
            let n = store.roll_up_request_logs(50_000).await.unwrap();
            if n == 0 {
                break;
            }
            rolled += n;
        }
        let roll = started.elapsed();
        println!(
            "roll-up  {rolled} rows in {:.1} s: {:.0} rows/s",
            roll.as_secs_f64(),
            rolled as f64 / roll.as_secs_f64()
        );

        let month = AnalyticsFilter {
            from_ms: start_ms - 1,
            to_ms: now + 1,
            equals: vec![],
        };
        let day = AnalyticsFilter {
            from_ms: now - DAY_MS,
            ..month.clone()
        };
        let hour = AnalyticsFilter {
            from_ms: now - HOUR_MS,
            ..month.clone()
        };
        let one_key = AnalyticsFilter {
            equals: vec![(Dimension::Key, "key_07".to_owned())],
            ..month.clone()
        };
        let key_and_model = AnalyticsFilter {
            equals: vec![
                (Dimension::Key, "key_07".to_owned()),
                (Dimension::Model, "model-03".to_owned()),
            ],
            ..day.clone()
        };
        let key_and_model_month = AnalyticsFilter {
            from_ms: month.from_ms,
            ..key_and_model.clone()
        };
        let queries: Vec<(&str, AnalyticsFilter, Grouping)> = vec![
            ("summary, 30 days", month.clone(), Grouping::Total),
            (
                "series, 30 days by hour",
                month.clone(),
                Grouping::Time { step_ms: HOUR_MS },
            ),
            (
                "series, 30 days by day",
                month.clone(),
                Grouping::Time { step_ms: DAY_MS },
            ),
            (
                "by model, 30 days",
                month.clone(),
                Grouping::By(Dimension::Model),
            ),
            (
                "by key, 30 days",
                month.clone(),
                Grouping::By(Dimension::Key),
            ),
            (
                "by deployment, 30 days",
                month.clone(),
                Grouping::By(Dimension::Deployment),
            ),
            (
                "by status, 30 days",
                month.clone(),
                Grouping::By(Dimension::Status),
            ),
            (
                "one key by hour, 30 days",
                one_key,
                Grouping::Time { step_ms: HOUR_MS },
            ),
            ("summary, 24 h", day.clone(), Grouping::Total),
            (
                "series, 1 h by minute (raw)",
                hour,
                Grouping::Time { step_ms: 60_000 },
            ),
            (
                "key+model by team, 24 h (raw)",
                key_and_model,
                Grouping::By(Dimension::Team),
            ),
            (
                "key+model by team, 30 d (raw)",
                key_and_model_month,
                Grouping::By(Dimension::Team),
            ),
        ];
        println!(
            "{:<32} {:>10} {:>8} {:>10}",
            "query", "best ms", "groups", "requests"
        );
        let mut slowest = Duration::ZERO;
        for (name, filter, grouping) in queries {
            let mut times = Vec::new();
            let mut result = Vec::new();
            for _ in 0..5 {
                let started = Instant::now();
                result = store.analytics(&filter, grouping).await.unwrap();
                times.push(started.elapsed());
            }
            let best = times.iter().min().copied().unwrap_or_default();
            slowest = slowest.max(best);
            let requests: u64 = result.iter().map(|(_, agg)| agg.requests).sum();
            println!(
                "{name:<32} {:>10.1} {:>8} {:>10}",
                best.as_secs_f64() * 1e3,
                result.len(),
                requests
            );
        }
        println!(
            "slowest query {:.1} ms (target < 200 ms)",
            slowest.as_secs_f64() * 1e3
        );
    });
}
