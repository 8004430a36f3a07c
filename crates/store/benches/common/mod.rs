//! Shared by the store's benchmarks.

#![allow(clippy::unwrap_used)]

/// The process's user + system CPU time in seconds, from /proc (0 where there is none).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Runs the `;`-separated statements of `ATALAYA_BENCH_SQL`, if set, on the database at `url`
/// (say, `DROP INDEX ...` to time a schema variant).
pub async fn run_bench_sql(url: &str) {
    let Ok(sql) = std::env::var("ATALAYA_BENCH_SQL") else {
        return;
    };
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    for stmt in sql.split(';').filter(|s| !s.trim().is_empty()) {
        sqlx::query(sqlx::AssertSqlSafe(stmt.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
