-- When each API key was last used (security/auth/usage.py writes it in batches, at most every
-- 30 s per process): what an operator reads to retire keys nobody uses.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS last_used_at timestamptz;
