//! The request-log writer's cost per row, `cargo bench -p atalaya-store --bench log_write`.
//!
//! Rows shaped like a gateway under load (a UUID request id, 20 keys, one model and
//! deployment, timestamps a few per millisecond) go into a fresh SQLite database in batches
//! of 512 — the writer's default batch — through the same insert the request-log writer
//! uses, hourly rollups folded in as it folds them. Prints rows/s and CPU µs per row (all
//! threads), minus the cost of copying the batches, which the writer does not pay.
//! `ATALAYA_BENCH_ROWS` sets the row count (default 300,000); `ATALAYA_BENCH_BATCH` the batch.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use atalaya_store::{RequestLogRow, Store};

/// As the `atalaya` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn row(i: usize, created_at_ms: i64) -> RequestLogRow {
    let key = i % 20;
    RequestLogRow {
        seq: 0,
        request_id: uuid::Uuid::now_v7().to_string().into(),
        created_at_ms,
        key_id: Some(format!("key_{key:02}xxxxxxxxxxxxxxxxxxxxxx")),
        team: None,
        endpoint: "chat".into(),
        model: Some("gpt-4o-mini".to_owned()),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-4o-mini".into()),
        stream: false,
        status: 200,
        latency_ms: 1.0 + (i % 7) as f64 * 0.13,
        ttft_ms: None,
        prompt_tokens: Some(24),
        completion_tokens: Some(40 + (i % 9) as i64),
        cached_tokens: None,
        usage_estimated: false,
        cost_usd: Some(0.000_027_6),
        deployment: Some("openai/gpt-4o-mini".into()),
        attempts: 1,
        retries: 0,
        fallback_path: None,
        error: None,
    }
}

fn main() {
    let total = env_or("ATALAYA_BENCH_ROWS", 300_000);
    let batch = env_or("ATALAYA_BENCH_BATCH", 512).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let start_ms = atalaya_store::now_ms();
    let batches: Vec<Vec<RequestLogRow>> = (0..total)
        .map(|i| row(i, start_ms + i as i64 / 4))
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(<[RequestLogRow]>::to_vec)
        .collect();

    // What copying the batches costs (the bench's insert copies them; the writer does not).
    let cpu_before = common::cpu_seconds();
    let mut copied = 0;
    for _ in 0..3 {
        for rows in &batches {
            copied += std::hint::black_box(rows.to_vec()).len();
        }
    }
    let copy_us = (common::cpu_seconds() - cpu_before) * 1e6 / copied as f64;

    runtime.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        common::run_bench_sql(&url).await;
        let started = Instant::now();
        let cpu_before = common::cpu_seconds();
        for rows in &batches {
            store.insert_request_logs(rows).await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_us = (common::cpu_seconds() - cpu_before) * 1e6 / total as f64 - copy_us;
        println!(
            "request-log write: {total} rows in batches of {batch} in {elapsed:.2} s: {:.0} rows/s, {cpu_us:.2} µs CPU per row (copying the batches, {copy_us:.2} µs a row, taken out)",
            total as f64 / elapsed
        );
    });
}
