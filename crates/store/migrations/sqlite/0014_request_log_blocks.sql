-- The request log is stored in blocks: one row per batch the writer commits, its rows encoded
-- together (crates/store/src/log_block.rs). A row per request cost SQLite a 22-column record
-- and two B-tree inserts each; a block costs one insert per batch.
--
-- `first_seq` is the lowest seq the block may hold and `last_seq` its highest; the created
-- range and row count let readers pass over blocks without decoding them. `data` goes last so
-- that reading the other columns does not touch its overflow pages.
CREATE TABLE request_log_blocks (
    first_seq      INTEGER PRIMARY KEY,
    last_seq       INTEGER NOT NULL,
    min_created_ms INTEGER NOT NULL,
    max_created_ms INTEGER NOT NULL,
    rows           INTEGER NOT NULL,
    data           BLOB NOT NULL
);

-- Time ranges (analytics' partial hours, log pages filtered by time, retention) start here.
CREATE INDEX request_log_blocks_max_created ON request_log_blocks (max_created_ms);

-- The next seq to give a row. It only grows, so seqs are never reused after retention deletes
-- the newest blocks, and it continues from the rows of the old table.
INSERT INTO analytics_state (name, value) VALUES (
    'next_log_seq',
    MAX(
        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'request_logs'), 0),
        COALESCE((SELECT MAX(seq) FROM request_logs), 0)
    ) + 1
);

-- The rows of the old `request_logs` table are moved into blocks when the store opens (the
-- encoding is the application's), and the table is dropped once it is empty.
