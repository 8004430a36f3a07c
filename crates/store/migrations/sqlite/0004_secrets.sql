-- Secrets under envelope encryption: the value encrypted under its own data key, the data key
-- wrapped by the master key named by master_key_id. No plaintext ever lands here.
CREATE TABLE secrets (
    name          TEXT PRIMARY KEY NOT NULL,
    ciphertext    BLOB NOT NULL,
    nonce         BLOB NOT NULL,
    wrapped_key   BLOB NOT NULL,
    key_nonce     BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
