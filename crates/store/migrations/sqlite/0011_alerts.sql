-- Every alert fired or resolved, whether or not a channel was told (rate limits and
-- de-duplication are recorded in `suppressed`).
CREATE TABLE alerts (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    rule       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    severity   TEXT NOT NULL,
    subject    TEXT NOT NULL,
    state      TEXT NOT NULL,
    summary    TEXT NOT NULL,
    details    TEXT NOT NULL,
    channels   TEXT NOT NULL,
    suppressed TEXT
);
CREATE INDEX alerts_time ON alerts (time_ms);
