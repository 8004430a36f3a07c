-- Spend limits per key (USD per period; NULL: none) and an index for summing a period's spend.
ALTER TABLE api_keys ADD COLUMN budget_usd REAL;
ALTER TABLE api_keys ADD COLUMN soft_budget_usd REAL;
ALTER TABLE api_keys ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'month';
CREATE INDEX request_logs_key_time ON request_logs (key_id, created_at_ms);
