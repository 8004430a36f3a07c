-- How each request was routed: the deployment that served (or last failed), how many
-- upstream calls it took, how many were retries, and the fallback models tried.
ALTER TABLE request_logs ADD COLUMN deployment TEXT;
ALTER TABLE request_logs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE request_logs ADD COLUMN fallback_path TEXT;
