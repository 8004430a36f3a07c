//! The request log's spill: rows the database cannot take in time go to JSON-lines files in a
//! directory, within a byte budget, and are written to the database from there once it is
//! back, at start-up included. A file is renamed into place only once complete, and deleted
//! only after its rows are committed, so a crash at any point loses nothing that was spilled
//! (a crash between commit and delete writes a file's rows twice).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::RequestLogRow;

const SUFFIX: &str = ".jsonl";

#[derive(Debug)]
pub(crate) struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    used: u64,
    next: u64,
    /// Files spilled and not yet replayed.
    count: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpillError {
    #[error("the spill is full ({used} of {max} bytes used)")]
    Full { used: u64, max: u64 },
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Spill {
    /// Opens (creating) `dir` and counts what is already spilled there.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spill> {
        std::fs::create_dir_all(dir)?;
        let mut spill = Spill {
            dir: dir.to_owned(),
            max_bytes,
            used: 0,
            next: 0,
            count: 0,
        };
        for path in spill.files() {
            spill.used += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            spill.count += 1;
        }
        // Leftover partial files from a crash mid-write hold nothing committed to them.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(spill)
    }

    /// Spilled files, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.to_string_lossy().ends_with(SUFFIX))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes `rows` to a new file, whole or not at all.
    pub fn write(&mut self, rows: &[RequestLogRow]) -> Result<(), SpillError> {
        let mut text = Vec::with_capacity(rows.len() * 400);
        for row in rows {
            if serde_json::to_writer(&mut text, row).is_ok() {
                text.push(b'\n');
            }
        }
        let size = text.len() as u64;
        if self.used + size > self.max_bytes {
            return Err(SpillError::Full {
                used: self.used,
                max: self.max_bytes,
            });
        }
        let now = crate::now_ms();
        self.next += 1;
        let name = format!("request-log-{now:013}-{:06}", self.next);
        let temporary = self.dir.join(format!("{name}.tmp"));
        let done = self.dir.join(format!("{name}{SUFFIX}"));
        let io = |source: std::io::Error| SpillError::Io {
            path: temporary.display().to_string(),
            source,
        };
        let written = (|| {
            // No fsync: spilling must keep pace with requests during an outage. A process
            // crash loses nothing written here (the page cache survives it); a machine crash
            // can lose the newest files, as it would lose rows held in memory.
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&text)?;
            std::fs::rename(&temporary, &done)
        })();
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(io(source));
        }
        self.used += size;
        self.count += 1;
        Ok(())
    }

    /// The rows of one spilled file; lines that do not parse are skipped and counted.
    pub fn read(path: &Path) -> std::io::Result<(Vec<RequestLogRow>, usize)> {
        let text = std::fs::read(path)?;
        let mut rows = Vec::new();
        let mut bad = 0;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice(line) {
                Ok(row) => rows.push(row),
                Err(_) => bad += 1,
            }
        }
        Ok((rows, bad))
    }

    /// Stops counting a file that cannot be read (it stays for an operator to look at).
    pub fn forget(&mut self, path: &Path) {
        let unreadable = path.with_extension("unreadable");
        let _ = std::fs::rename(path, unreadable);
        self.count = self.count.saturating_sub(1);
    }

    /// Deletes a file whose rows are committed.
    pub fn remove(&mut self, path: &Path) {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(path).is_ok() {
            self.used = self.used.saturating_sub(size);
            self.count = self.count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> RequestLogRow {
        RequestLogRow {
            seq: 0,
            request_id: format!("req-{i}").into(),
            created_at_ms: 1_700_000_000_000 + i,
            key_id: Some("key".into()),
            team: None,
            endpoint: "chat".into(),
            model: Some("m".into()),
            provider: None,
            upstream_model: None,
            stream: i % 2 == 0,
            status: 200,
            latency_ms: 1.5,
            ttft_ms: None,
            prompt_tokens: Some(3),
            completion_tokens: Some(4),
            cached_tokens: None,
            usage_estimated: false,
            cost_usd: Some(0.001),
            deployment: None,
            attempts: 1,
            retries: 0,
            fallback_path: None,
            error: Some("quote \" and\nnewline".into()),
        }
    }

    #[test]
    fn rows_round_trip_in_order_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path(), 1 << 20).unwrap();
        assert!(spill.is_empty());
        let first: Vec<RequestLogRow> = (0..3).map(row).collect();
        let second: Vec<RequestLogRow> = (3..5).map(row).collect();
        spill.write(&first).unwrap();
        spill.write(&second).unwrap();
        let files = spill.files();
        assert_eq!(files.len(), 2);
        assert_eq!(Spill::read(&files[0]).unwrap(), (first, 0));
        assert_eq!(Spill::read(&files[1]).unwrap(), (second, 0));
        // Reopening counts what is there; a half-written file from a crash is cleared.
        std::fs::write(dir.path().join("request-log-x.tmp"), b"{\"partial").unwrap();
        let used = spill.used;
        let mut reopened = Spill::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.used, used);
        assert_eq!(reopened.files().len(), 2);
        assert!(!dir.path().join("request-log-x.tmp").exists());
        reopened.remove(&files[0]);
        assert_eq!(reopened.files().len(), 1);
        assert!(reopened.used < used);
    }

    #[test]
    fn a_full_budget_refuses_and_a_broken_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::open(dir.path(), 600).unwrap();
        spill.write(&[row(1)]).unwrap();
        let error = spill.write(&[row(2), row(3)]).unwrap_err();
        assert!(matches!(error, SpillError::Full { .. }), "{error}");
        let file = &spill.files()[0];
        let mut text = std::fs::read(file).unwrap();
        text.extend_from_slice(b"{not json\n");
        std::fs::write(file, text).unwrap();
        let (rows, bad) = Spill::read(file).unwrap();
        assert_eq!((rows.len(), bad), (1, 1));
    }
}
