-- Roles, teams, model allowlists, expiry and metadata for virtual keys.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'developer';
ALTER TABLE api_keys ADD COLUMN team TEXT;
-- JSON array of model names the key may call; NULL: any.
ALTER TABLE api_keys ADD COLUMN models TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at_ms INTEGER;
-- JSON object.
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
