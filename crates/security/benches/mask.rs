//! Masking throughput, `cargo bench -p atalaya-security --bench mask`: MB/s over log-like
//! text with no secrets (the common case on log paths; target ≥ 500 MB/s) and with a secret
//! every ~4 KB, with 20 known secrets loaded. Best of several passes over 8 MiB.

use std::hint::black_box;
use std::time::{Duration, Instant};

use atalaya_security::mask::Masker;

/// Log lines and JSON such as the gateway writes: words, ids, numbers, quotes, no secrets.
fn clean_text(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "request",
        "completed",
        "provider",
        "openai",
        "model",
        "gpt-4o-mini",
        "latency_ms",
        "status",
        "200",
        "tokens",
        "stream",
        "true",
        "harbor",
        "lighthouse",
        "the",
        "a",
        "of",
        "upstream",
        "answered",
        "in",
        "key_01J8ZK3M4",
        "deployment",
        "anthropic/claude",
        "retry",
        "budget",
        "circuit",
        "closed",
        "\"content\":",
        "{\"role\":\"user\"}",
        "task-force",
        "ask",
        "eye",
        "Bearer",
        "sk-",
        "AKIA",
        "--",
        "=",
        "12.5",
        "2026-11-23T17:00:00Z",
    ];
    let mut text = String::with_capacity(bytes + 64);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    while text.len() < bytes {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        text.push(if state.is_multiple_of(23) { '\n' } else { ' ' });
    }
    text
}

fn with_secrets(mut text: String) -> String {
    let secrets = [
        " sk-proj-abcdefghijklmnopqrstuvwxyz012345 ",
        " AKIAIOSFODNN7EXAMPLE ",
        " Bearer abcdefghijklmnop ",
        " known-secret-value-07 ",
    ];
    let mut out = String::with_capacity(text.len() + text.len() / 64);
    let mut index = 0;
    while !text.is_empty() {
        let mut take = 4096.min(text.len());
        while !text.is_char_boundary(take) {
            take += 1;
        }
        out.push_str(&text[..take]);
        out.push_str(secrets[index % secrets.len()]);
        index += 1;
        text.drain(..take);
    }
    out
}

fn throughput(masker: &Masker, text: &str) -> f64 {
    let mut best = Duration::MAX;
    for _ in 0..7 {
        let started = Instant::now();
        black_box(masker.mask(black_box(text)));
        best = best.min(started.elapsed());
    }
    text.len() as f64 / best.as_secs_f64() / 1e6
}

fn main() {
    let known: Vec<String> = (0..20)
        .map(|i| format!("known-secret-value-{i:02}"))
        .collect();
    let masker = Masker::new(known.iter().map(String::as_str)).unwrap_or_else(|error| {
        eprintln!("{error}");
        std::process::exit(1)
    });
    let clean = clean_text(8 << 20);
    let dirty = with_secrets(clean.clone());
    let clean_rate = throughput(&masker, &clean);
    let dirty_rate = throughput(&masker, &dirty);
    println!("mask clean text:            {clean_rate:>8.0} MB/s (target >= 500)");
    println!("mask text, a secret per 4KB: {dirty_rate:>7.0} MB/s");
    let line = &clean[..200];
    let started = Instant::now();
    let rounds = 200_000;
    for _ in 0..rounds {
        black_box(masker.mask(black_box(line)));
    }
    println!(
        "mask one 200-byte log line:  {:>6.0} ns",
        started.elapsed().as_nanos() as f64 / f64::from(rounds)
    );
}
