-- The append-only audit log. hash = HMAC(chain key, prev_hash, seq, at_ms, fields); prev_hash is
-- the previous entry's hash (zeros for the first). Only `atalaya audit verify` reads it whole.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY NOT NULL,
    at_ms      INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    source_ip  TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL
);
