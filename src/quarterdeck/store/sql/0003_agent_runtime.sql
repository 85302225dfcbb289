-- The agent runtime's results on the run: its workspace diff, budget, quality and coverage.

ALTER TABLE runs
    ADD COLUMN budget_usd        numeric(20, 10),
    ADD COLUMN diff              text,
    ADD COLUMN changed_files     jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN quality_score     double precision,
    ADD COLUMN coverage_percent  double precision,
    ADD COLUMN quality           jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Uploaded workspace archives live beside the run, not in runs.params, so listing runs never
-- drags megabytes of tar through the API.
CREATE TABLE run_archives (
    run_id   text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    archive  bytea NOT NULL
);
