-- Error tracking: one group per fingerprint (where it happened and what kind of failure),
-- with severity, location, counts, first/last seen and a resolved flag; a sample of recent
-- occurrences with their context; and warnings and errors from the server's own log.
CREATE TABLE error_groups (
    fingerprint    TEXT PRIMARY KEY NOT NULL,
    severity       TEXT NOT NULL,
    service        TEXT NOT NULL,
    component      TEXT NOT NULL,
    code           TEXT,
    message        TEXT NOT NULL,
    module         TEXT,
    file           TEXT,
    line           INTEGER,
    count          INTEGER NOT NULL,
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL,
    resolved       INTEGER NOT NULL DEFAULT 0,
    resolved_at_ms INTEGER,
    -- Times it came back after being resolved.
    regressions    INTEGER NOT NULL DEFAULT 0,
    last_context   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX error_groups_last_seen ON error_groups (last_seen_ms);

CREATE TABLE error_occurrences (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    message     TEXT NOT NULL,
    context     TEXT NOT NULL
);
CREATE INDEX error_occurrences_group ON error_occurrences (fingerprint, seq);
CREATE INDEX error_occurrences_time ON error_occurrences (time_ms);

CREATE TABLE server_logs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms    INTEGER NOT NULL,
    level      TEXT NOT NULL,
    service    TEXT NOT NULL,
    component  TEXT NOT NULL,
    message    TEXT NOT NULL,
    file       TEXT,
    line       INTEGER,
    request_id TEXT,
    fields     TEXT NOT NULL
);
CREATE INDEX server_logs_time ON server_logs (time_ms);
