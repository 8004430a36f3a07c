-- Virtual API keys. Only the keyed hash of a key is stored; `key_prefix` is for display.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    key_hash      BLOB NOT NULL UNIQUE,
    key_prefix    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);

-- One row per data-plane request. `seq` orders rows and pages them; `request_id` may repeat
-- because clients can supply their own `x-request-id`.
CREATE TABLE request_logs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id        TEXT NOT NULL,
    created_at_ms     INTEGER NOT NULL,
    key_id            TEXT,
    endpoint          TEXT NOT NULL,
    model             TEXT,
    provider          TEXT,
    upstream_model    TEXT,
    stream            INTEGER NOT NULL DEFAULT 0,
    status            INTEGER NOT NULL,
    latency_ms        REAL NOT NULL,
    ttft_ms           REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    error             TEXT
);

CREATE INDEX request_logs_created ON request_logs (created_at_ms);
CREATE INDEX request_logs_request_id ON request_logs (request_id);
