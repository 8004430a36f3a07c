-- Budgets read a period's spend from the analytics rollups (plus the rows not yet rolled up),
-- so the request log no longer needs an index per key: with many keys, inserts into it landed
-- all over the index and cost more than the row itself.
DROP INDEX IF EXISTS request_logs_key_time;
