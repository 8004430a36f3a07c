-- Nothing looks request-log rows up by request id (pages go by seq, filters by key, team,
-- model, provider, deployment, status and time), and every insert paid for the index.
DROP INDEX IF EXISTS request_logs_request_id;
