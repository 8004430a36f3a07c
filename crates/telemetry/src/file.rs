//! Log files rotated daily (UTC): `<dir>/atalaya.YYYY-MM-DD.log`, files older than the
//! retention deleted at each rotation. Lines are masked like every other log destination.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::civil::civil_from_days;

const DAY_SECS: i64 = 86_400;

pub struct DailyFiles {
    dir: PathBuf,
    retention_days: Option<u32>,
    current: Mutex<Option<(i64, File)>>,
}

impl DailyFiles {
    pub fn new(dir: &Path, retention_days: Option<u32>) -> std::io::Result<DailyFiles> {
        std::fs::create_dir_all(dir)?;
        Ok(DailyFiles {
            dir: dir.to_owned(),
            retention_days,
            current: Mutex::new(None),
        })
    }

    /// The file name for a day number (days since the Unix epoch).
    pub fn file_name(day: i64) -> String {
        let (year, month, day) = civil_from_days(day);
        format!("atalaya.{year:04}-{month:02}-{day:02}.log")
    }

    /// Writes one line to today's file, rotating first when the day changed.
    pub fn write_line(&self, line: &[u8], now_secs: i64) {
        let day = now_secs.div_euclid(DAY_SECS);
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        if current
            .as_ref()
            .is_none_or(|(open_day, _)| *open_day != day)
        {
            let path = self.dir.join(Self::file_name(day));
            *current = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok()
                .map(|file| (day, file));
            self.prune(day);
        }
        if let Some((_, file)) = current.as_mut() {
            // A line that cannot be written has nowhere else to go.
            let _ = file.write_all(line);
        }
    }

    /// Deletes the files of days before the retention.
    fn prune(&self, today: i64) {
        let Some(keep) = self.retention_days else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let oldest_kept = Self::file_name(today - i64::from(keep) + 1);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Names sort by date, so a string comparison finds the old ones.
            if name.starts_with("atalaya.") && name.ends_with(".log") && *name < *oldest_kept {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_name_their_files() {
        assert_eq!(DailyFiles::file_name(0), "atalaya.1970-01-01.log");
        assert_eq!(DailyFiles::file_name(19_782), "atalaya.2024-02-29.log");
        assert_eq!(DailyFiles::file_name(20_415), "atalaya.2025-11-23.log");
    }

    #[test]
    fn lines_go_to_the_day_file_and_old_days_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let files = DailyFiles::new(dir.path(), Some(2)).unwrap();
        let day = 20_000 * DAY_SECS;
        files.write_line(b"one\n", day + 5);
        files.write_line(b"two\n", day + 50);
        files.write_line(b"three\n", day + DAY_SECS + 1);
        files.write_line(b"four\n", day + 2 * DAY_SECS + 1);
        let read = |d: i64| std::fs::read_to_string(dir.path().join(DailyFiles::file_name(d)));
        assert!(read(20_000).is_err(), "older than two days");
        assert_eq!(read(20_001).unwrap(), "three\n");
        assert_eq!(read(20_002).unwrap(), "four\n");
    }
}
