-- Run list filters and prompt search (the dashboard's Runs page, GET /v1/runs?status=&q=).
--
-- A listing is a keyset page, ORDER BY id DESC LIMIT n with id < cursor. Each common filter
-- gets a (column, id DESC) index so a page is read in index order and stops after n rows,
-- however rare the value; the tenant one exists since 0002 (runs_tenant_id). runs_status
-- (status) is kept for now: runs/insights_repository.py names it, though (status, id DESC)
-- would serve its lookups too.
--
-- Prompt search: no pg_trgm in the embedded Postgres, so built-in full-text search on the
-- 'simple' configuration (no stemming, no stop words: prompts are code talk in any language).
-- The expression must stay exactly to_tsvector('simple', prompt) in the queries
-- (runs/read_repository.py) for the index to apply.
--
-- Measured with EXPLAIN ANALYZE on 200,000 generated runs (embedded Postgres 18, 60% of runs
-- in one tenant, 90% succeeded, 1% agent_type 'docs', 0.1% on one model; runs_status dropped
-- for the measurement), first page of 51:
--   status = budget_exceeded (0.05%)      1.68 ms -> 0.44 ms
--   agent_type = docs (1%)                0.75 ms -> 0.13 ms  (Index Scan runs_agent_type_id)
--   model = one of 0.1%                   7.57 ms -> 0.14 ms  (Index Scan runs_model_id)
--   tenant of 60% and agent_type docs    29.9 ms  -> 2.1 ms
--   common statuses / tenants            ~0.1-0.3 ms either way (backward primary-key walk)
-- Prompt search (read_repository._search_runs: the newest 2,000 filtered runs first, then
-- the GIN index materialised, because the planner's own choice walks the primary key and
-- re-tokenises every prompt, 0.9-1.3 s for a rare or absent word even with this index):
--   list_runs wall time through asyncpg (51 rows decoded; median of 8, on a 2-core box shared
--   with other test runs, so an upper bound): two common words 72 ms, a word in 0.02% of
--   prompts 67 ms, a word in none 61 ms, a token in one prompt 57 ms, an id prefix 59 ms;
--   with the planner's own plan the rare and absent words took 870-1340 ms (EXPLAIN ANALYZE).
--   Most of it is re-tokenising the 2,000-run window; without a q a filtered page is 8-13 ms.
-- Sizes at 200k runs: table 54 MB, runs_prompt_fts 26 MB, each (column, id DESC) 11-14 MB.

CREATE INDEX runs_status_id ON runs (status, id DESC);
CREATE INDEX runs_agent_type_id ON runs (agent_type, id DESC);
CREATE INDEX runs_model_id ON runs (model, id DESC);
CREATE INDEX runs_prompt_fts ON runs USING gin (to_tsvector('simple', prompt));
