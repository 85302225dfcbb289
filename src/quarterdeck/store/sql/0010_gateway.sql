-- The Anthropic-compatible gateway: one row per relayed /v1/messages call (the billing record of
-- traffic Quarterdeck did not start), per-key budgets, and budget holds.
--
-- A hold is the worst-case cost of a call in flight, reserved before the call in one statement
-- that locks the budget rows it checks; it is deleted in the same transaction that records the
-- call's metered cost, so spend + holds never drops below what was really spent. A hold whose
-- process died is ignored after expires_at.

CREATE TABLE gateway_calls (
    id                   text PRIMARY KEY,
    created_at           timestamptz NOT NULL,
    tenant               text NOT NULL,
    key_id               text,
    run_id               text,
    session_id           text,
    agent_id             text,
    model                text NOT NULL,
    served_model         text,
    stream               boolean NOT NULL,
    status               integer NOT NULL,
    error_type           text,
    input_tokens         bigint NOT NULL DEFAULT 0,
    output_tokens        bigint NOT NULL DEFAULT 0,
    cache_write_5m_tokens bigint NOT NULL DEFAULT 0,
    cache_write_1h_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens    bigint NOT NULL DEFAULT 0,
    web_search_requests  integer NOT NULL DEFAULT 0,
    cost_usd             numeric(20, 10) NOT NULL DEFAULT 0,
    cost_estimated       boolean NOT NULL DEFAULT false,
    ttfb_ms              double precision,
    duration_ms          double precision NOT NULL DEFAULT 0,
    upstream_request_id  text,
    client_disconnected  boolean NOT NULL DEFAULT false
);

-- Budget spend per tenant or key is a range scan that never touches the heap.
CREATE INDEX gateway_calls_tenant_time ON gateway_calls (tenant, created_at) INCLUDE (cost_usd);
CREATE INDEX gateway_calls_key_time ON gateway_calls (key_id, created_at) INCLUDE (cost_usd)
    WHERE key_id IS NOT NULL;
CREATE INDEX gateway_calls_run ON gateway_calls (run_id) INCLUDE (cost_usd) WHERE run_id IS NOT NULL;
CREATE INDEX gateway_calls_session ON gateway_calls (session_id, created_at)
    WHERE session_id IS NOT NULL;
CREATE INDEX gateway_calls_time ON gateway_calls (created_at);

CREATE TABLE key_budgets (
    key_id       text PRIMARY KEY,
    daily_usd    numeric(20, 10) CHECK (daily_usd IS NULL OR daily_usd >= 0),
    monthly_usd  numeric(20, 10) CHECK (monthly_usd IS NULL OR monthly_usd >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE budget_holds (
    id          text PRIMARY KEY,
    tenant      text NOT NULL,
    key_id      text,
    run_id      text,
    amount_usd  numeric(20, 10) NOT NULL CHECK (amount_usd >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

CREATE INDEX budget_holds_tenant ON budget_holds (tenant, expires_at);
CREATE INDEX budget_holds_key ON budget_holds (key_id, expires_at) WHERE key_id IS NOT NULL;
CREATE INDEX budget_holds_run ON budget_holds (run_id, expires_at) WHERE run_id IS NOT NULL;

-- The reservation runs server-side, as one call: the row locks are held only while Postgres
-- executes it, never across a round trip to a busy client, so reservations against one budget
-- queue for microseconds rather than milliseconds. It is a PL/pgSQL function because each of its
-- queries takes a fresh snapshot: the check runs after the locks are held, so it sees the holds
-- of every reservation that held them before. (A single SQL statement keeps the snapshot from
-- before it waited for the lock and admits calls over the limit: 50 of 50 in the concurrency
-- test, against 20 allowed.) Steps:
--   1. No limit applies (the common case): return no row, lock and write nothing.
--   2. Lock the budget rows, always tenant, key, run, so two reservations never deadlock. FOR NO
--      KEY UPDATE conflicts with itself but not with the KEY SHARE locks that inserting a run's
--      turns and events takes on the runs row. A run's budget applies to its own tenant only,
--      and only that tenant's calls count against it: another tenant naming the run in
--      x-quarterdeck-run cannot spend it.
--   3. One query (one snapshot, so a call settled meanwhile is counted once: as its cost or as
--      its hold) sums spend + live holds for the scopes with a limit only (a condition on
--      variables alone is a one-time filter: unlimited scopes are never scanned), and inserts
--      the hold if every limit has room. Reaching a limit exactly is allowed.
-- A hold is ephemeral (the call's cost is recorded durably), so its commit does not wait for the
-- WAL flush.
CREATE OR REPLACE FUNCTION qd_reserve_budget(
    p_hold text, p_tenant text, p_key text, p_run text, p_amount numeric,
    p_day timestamptz, p_month timestamptz, p_end timestamptz, p_now timestamptz,
    p_expires timestamptz, p_lock_timeout_ms integer)
RETURNS TABLE (o_t_daily numeric, o_t_monthly numeric, o_k_daily numeric, o_k_monthly numeric,
               o_r_total numeric, o_t_day numeric, o_t_month numeric, o_k_day numeric,
               o_k_month numeric, o_r_spent numeric, o_hold text)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tenant_budgets b WHERE b.tenant = p_tenant
                      AND (b.daily_usd IS NOT NULL OR b.monthly_usd IS NOT NULL))
       AND NOT EXISTS (SELECT 1 FROM key_budgets b WHERE b.key_id = p_key
                      AND (b.daily_usd IS NOT NULL OR b.monthly_usd IS NOT NULL))
       AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = p_run AND r.tenant = p_tenant
                      AND r.budget_usd IS NOT NULL) THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT b.daily_usd, b.monthly_usd INTO o_t_daily, o_t_monthly
      FROM tenant_budgets b WHERE b.tenant = p_tenant FOR NO KEY UPDATE;
    SELECT b.daily_usd, b.monthly_usd INTO o_k_daily, o_k_monthly
      FROM key_budgets b WHERE b.key_id = p_key FOR NO KEY UPDATE;
    SELECT r.budget_usd INTO o_r_total
      FROM runs r WHERE r.id = p_run AND r.tenant = p_tenant AND r.budget_usd IS NOT NULL
       FOR NO KEY UPDATE;
    IF num_nonnulls(o_t_daily, o_t_monthly, o_k_daily, o_k_monthly, o_r_total) = 0 THEN
        RETURN;  -- removed since the first look
    END IF;
    WITH s AS (
        SELECT tt.day + tg.day + th.held AS t_day, tt.month + tg.month + th.held AS t_month,
               kg.day + kh.held AS k_day, kg.month + kh.held AS k_month,
               rr.cost + rg.cost + rh.held AS r_total
          FROM (SELECT coalesce(sum(t.cost_usd) FILTER (WHERE t.created_at >= p_day), 0) AS day,
                       coalesce(sum(t.cost_usd), 0) AS month
                  FROM run_turns t JOIN runs r ON r.id = t.run_id
                 WHERE (o_t_daily IS NOT NULL OR o_t_monthly IS NOT NULL)
                   AND r.tenant = p_tenant AND t.created_at >= p_month AND t.created_at < p_end
               ) tt,
               (SELECT coalesce(sum(g.cost_usd) FILTER (WHERE g.created_at >= p_day), 0) AS day,
                       coalesce(sum(g.cost_usd), 0) AS month
                  FROM gateway_calls g
                 WHERE (o_t_daily IS NOT NULL OR o_t_monthly IS NOT NULL)
                   AND g.tenant = p_tenant AND g.created_at >= p_month AND g.created_at < p_end
               ) tg,
               (SELECT coalesce(sum(h.amount_usd), 0) AS held FROM budget_holds h
                 WHERE (o_t_daily IS NOT NULL OR o_t_monthly IS NOT NULL)
                   AND h.tenant = p_tenant AND h.expires_at > p_now) th,
               (SELECT coalesce(sum(g.cost_usd) FILTER (WHERE g.created_at >= p_day), 0) AS day,
                       coalesce(sum(g.cost_usd), 0) AS month
                  FROM gateway_calls g
                 WHERE (o_k_daily IS NOT NULL OR o_k_monthly IS NOT NULL)
                   AND g.key_id = p_key AND g.created_at >= p_month AND g.created_at < p_end
               ) kg,
               (SELECT coalesce(sum(h.amount_usd), 0) AS held FROM budget_holds h
                 WHERE (o_k_daily IS NOT NULL OR o_k_monthly IS NOT NULL)
                   AND h.key_id = p_key AND h.expires_at > p_now) kh,
               (SELECT coalesce(sum(r.cost_usd), 0) AS cost FROM runs r
                 WHERE o_r_total IS NOT NULL AND r.id = p_run) rr,
               (SELECT coalesce(sum(g.cost_usd), 0) AS cost FROM gateway_calls g
                 WHERE o_r_total IS NOT NULL AND g.run_id = p_run AND g.tenant = p_tenant) rg,
               (SELECT coalesce(sum(h.amount_usd), 0) AS held FROM budget_holds h
                 WHERE o_r_total IS NOT NULL AND h.run_id = p_run AND h.tenant = p_tenant
                   AND h.expires_at > p_now) rh
    ), ins AS (
        INSERT INTO budget_holds (id, tenant, key_id, run_id, amount_usd, created_at, expires_at)
        SELECT p_hold, p_tenant, p_key, p_run, p_amount, p_now, p_expires FROM s
         WHERE (o_t_daily IS NULL OR s.t_day + p_amount <= o_t_daily)
           AND (o_t_monthly IS NULL OR s.t_month + p_amount <= o_t_monthly)
           AND (o_k_daily IS NULL OR s.k_day + p_amount <= o_k_daily)
           AND (o_k_monthly IS NULL OR s.k_month + p_amount <= o_k_monthly)
           AND (o_r_total IS NULL OR s.r_total + p_amount <= o_r_total)
        RETURNING id
    )
    SELECT s.t_day, s.t_month, s.k_day, s.k_month, s.r_total, (SELECT id FROM ins)
      INTO o_t_day, o_t_month, o_k_day, o_k_month, o_r_spent, o_hold
      FROM s;
    RETURN NEXT;
END
$fn$;
