-- Per-tenant spending limits. Spend is not stored: it is summed from run_turns.cost_usd (the
-- billing record, written once per completed turn) joined to runs.tenant, so it can never drift
-- from what was actually charged.

CREATE TABLE tenant_budgets (
    tenant       text PRIMARY KEY,
    daily_usd    numeric(20, 10) CHECK (daily_usd IS NULL OR daily_usd >= 0),
    monthly_usd  numeric(20, 10) CHECK (monthly_usd IS NULL OR monthly_usd >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Spend for a UTC day or month is a range scan of this index joined to runs by primary key.
CREATE INDEX run_turns_created_at ON run_turns (created_at);
