//! Process metrics under their conventional names (`process_*`, as Prometheus client
//! libraries export them), read from `/proc/self` when `/metrics` is scraped. On systems
//! without `/proc` nothing is recorded.

use metrics::{Unit, describe_counter, describe_gauge};

const CPU: &str = "process_cpu_seconds_total";
const RSS: &str = "process_resident_memory_bytes";
const VIRTUAL: &str = "process_virtual_memory_bytes";
const OPEN_FDS: &str = "process_open_fds";
const MAX_FDS: &str = "process_max_fds";
const THREADS: &str = "process_threads";
const START: &str = "process_start_time_seconds";

pub(crate) fn describe() {
    describe_counter!(CPU, Unit::Seconds, "User and system CPU time spent.");
    describe_gauge!(RSS, Unit::Bytes, "Resident memory size.");
    describe_gauge!(VIRTUAL, Unit::Bytes, "Virtual memory size.");
    describe_gauge!(OPEN_FDS, "Open file descriptors.");
    describe_gauge!(MAX_FDS, "Most file descriptors the process may open.");
    describe_gauge!(THREADS, "OS threads.");
    describe_gauge!(
        START,
        Unit::Seconds,
        "Start time of the process since the Unix epoch."
    );
}

/// The fields of `/proc/self/stat` after the command name, which may contain spaces.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    Some(rest.split_whitespace().collect())
}

/// Reads `/proc/self` and sets the process metrics.
pub fn record() {
    // Linux's USER_HZ and page size for every architecture atalaya runs on.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some(fields) = stat_fields(&stat) else {
        return;
    };
    // After the name: state is field 3, so field n is at index n - 3.
    let number = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(user), Some(system)) = (number(14), number(15)) {
        metrics::counter!(CPU).absolute(((user + system) / TICKS) as u64);
    }
    if let Some(threads) = number(20) {
        metrics::gauge!(THREADS).set(threads);
    }
    if let Some(bytes) = number(23) {
        metrics::gauge!(VIRTUAL).set(bytes);
    }
    if let Some(pages) = number(24) {
        metrics::gauge!(RSS).set(pages * PAGE);
    }
    if let (Some(start_ticks), Ok(uptime), Ok(now)) = (
        number(22),
        std::fs::read_to_string("/proc/uptime"),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH),
    ) && let Some(up) = uptime
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
    {
        let boot = now.as_secs_f64() - up;
        metrics::gauge!(START).set((boot + start_ticks / TICKS).round());
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(OPEN_FDS).set(entries.count() as f64);
    }
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
        && let Some(soft) = line
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse::<f64>().ok())
    {
        metrics::gauge!(MAX_FDS).set(soft);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_spaces_and_parentheses_in_the_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[14 - 3], "250");
        assert_eq!(fields[20 - 3], "7");
        assert_eq!(fields[24 - 3], "2560");
        assert_eq!(stat_fields("1 (truncated)"), Some(vec![]));
        assert_eq!(stat_fields("no name"), None);
    }
}
