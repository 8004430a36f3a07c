-- Analytics. The calling key's team is recorded per request so spend and traffic break down
-- by team. Hourly rollups keep analytics fast on millions of rows: one row per hour and per
-- value of each dimension (dim '' is the total), with counts, sums and log-bucket latency
-- histograms. `analytics_state.rolled_seq` is the last request_logs.seq folded into them;
-- queries add the raw rows above it, so results are exact up to the histogram resolution.
ALTER TABLE request_logs ADD COLUMN team TEXT;

CREATE TABLE request_rollups (
    dim               TEXT NOT NULL,
    value             TEXT NOT NULL,
    bucket_ms         INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    errors            INTEGER NOT NULL,
    server_errors     INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd          REAL NOT NULL,
    latency_ms_sum    REAL NOT NULL,
    latency_hist      BLOB NOT NULL,
    ttft_hist         BLOB NOT NULL,
    PRIMARY KEY (dim, value, bucket_ms)
) WITHOUT ROWID;

CREATE INDEX request_rollups_bucket ON request_rollups (bucket_ms);

CREATE TABLE analytics_state (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO analytics_state (name, value) VALUES ('rolled_seq', 0);
