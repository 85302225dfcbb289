-- The gateway token of a run's agent process (a Claude Code CLI started by the worker): one row
-- per run, replaced by each attempt that mints one (security/auth/run_tokens.py). Only a SHA-256
-- digest of the token is kept, as for API keys. A token is live only while its run is 'running'
-- at the attempt that minted it: that is checked against runs on every use, so no row needs to
-- change when the run ends or is requeued; the row goes with its run (erasure, retention).
CREATE TABLE run_tokens (
    run_id      text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL CHECK (attempt > 0),
    digest      bytea NOT NULL CHECK (octet_length(digest) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
