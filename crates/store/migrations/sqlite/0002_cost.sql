-- Cost and usage detail per request: the catalog price applied to the usage, the cached
-- share of the prompt, and whether the token counts were estimated by the gateway.
ALTER TABLE request_logs ADD COLUMN cost_usd REAL;
ALTER TABLE request_logs ADD COLUMN cached_tokens INTEGER;
ALTER TABLE request_logs ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
