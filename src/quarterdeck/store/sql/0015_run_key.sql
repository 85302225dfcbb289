-- The API key that submitted a run: the run's model calls reserve against that key's budget
-- (budgets.holds), as the key's gateway calls do. NULL for runs submitted without auth.
ALTER TABLE runs ADD COLUMN key_id text;
