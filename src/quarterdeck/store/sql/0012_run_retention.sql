-- Retention of run data (tenants/): per-tenant overrides of QUARTERDECK_RUN_RETENTION_DAYS, and
-- when each scheduled maintenance task (run-data purge, audit purge, full audit verification)
-- last ran, so any replica can tell whether one is due and the compliance report can show that
-- purges really run.

CREATE TABLE run_retention (
    tenant             text PRIMARY KEY,
    retention_seconds  double precision NOT NULL CHECK (retention_seconds > 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE maintenance_runs (
    task         text PRIMARY KEY,
    last_run_at  timestamptz NOT NULL,
    ok           boolean NOT NULL,
    summary      jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- The run-data purge looks for finished runs by end time.
CREATE INDEX runs_finished_at ON runs (finished_at) WHERE finished_at IS NOT NULL;
