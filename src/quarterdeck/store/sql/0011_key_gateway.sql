-- Gateway follow-ups: per-key gateway config, and a daily spend rollup for budget reservations.

-- Per-key gateway config (gateway/, security/auth): which models a key's gateway calls may fail
-- over to when the model asked for is overloaded or down before the first byte.
--   NULL         the deployment default: QUARTERDECK_GATEWAY_FALLBACK decides whether the
--                chain in QUARTERDECK_MODEL_FALLBACKS applies (what every existing key keeps)
--   '{}'         never fail over: the caller gets the upstream's error (its own client retries)
--   '{*}'        the deployment's chain (QUARTERDECK_MODEL_FALLBACKS), even with the switch off
--   '{m1,m2}'    these models, in this order, after the one asked for
-- Unlike role and tenant this may change on a live key (PATCH /v1/admin/keys/{id},
-- `quarterdeck keys update`): it routes the key's calls, it does not widen what the key may do.

ALTER TABLE api_keys
    ADD COLUMN gateway_fallback text[]
        CHECK (
            gateway_fallback IS NULL
            OR (
                cardinality(gateway_fallback) <= 8
                AND array_position(gateway_fallback, NULL) IS NULL
                AND ('*' <> ALL (gateway_fallback) OR cardinality(gateway_fallback) = 1)
            )
        );


-- Gateway spend per UTC day, per tenant and per key, kept by triggers on gateway_calls, so a
-- budget reservation reads at most 31 rows per scope instead of summing every call of the month
-- under the budget row's lock (at 100k calls a month that scan took ~16 ms a reservation, and
-- every concurrent reservation of the tenant waited behind it). The triggers run in the
-- transaction that inserts (the recorder's, which also settles the holds) or deletes (tenant
-- erasure, retention) the calls, so the rollup and the calls never disagree. Runs' own turns
-- (run_turns) are still summed from their rows.
CREATE TABLE gateway_spend_daily (
    scope_kind  text NOT NULL CHECK (scope_kind IN ('tenant', 'key')),
    scope       text NOT NULL,
    day         date NOT NULL,  -- UTC
    cost_usd    numeric NOT NULL,
    calls       bigint NOT NULL,
    PRIMARY KEY (scope_kind, scope, day)
);

INSERT INTO gateway_spend_daily (scope_kind, scope, day, cost_usd, calls)
SELECT 'tenant', tenant, (created_at AT TIME ZONE 'UTC')::date, sum(cost_usd), count(*)
  FROM gateway_calls GROUP BY 2, 3
UNION ALL
SELECT 'key', key_id, (created_at AT TIME ZONE 'UTC')::date, sum(cost_usd), count(*)
  FROM gateway_calls WHERE key_id IS NOT NULL GROUP BY 2, 3;

CREATE FUNCTION qd_gateway_spend_added() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO gateway_spend_daily AS d (scope_kind, scope, day, cost_usd, calls)
    SELECT * FROM (
        SELECT 'tenant' AS kind, n.tenant AS scope, (n.created_at AT TIME ZONE 'UTC')::date AS day,
               sum(n.cost_usd), count(*)
          FROM qd_new n GROUP BY 2, 3
        UNION ALL
        SELECT 'key', n.key_id, (n.created_at AT TIME ZONE 'UTC')::date, sum(n.cost_usd), count(*)
          FROM qd_new n WHERE n.key_id IS NOT NULL GROUP BY 2, 3
    ) s
    ORDER BY 1, 2, 3  -- one lock order for every batch: concurrent recorders never deadlock
    ON CONFLICT (scope_kind, scope, day) DO UPDATE
        SET cost_usd = d.cost_usd + excluded.cost_usd, calls = d.calls + excluded.calls;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION qd_gateway_spend_removed() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    WITH gone AS (
        SELECT 'tenant' AS kind, o.tenant AS scope, (o.created_at AT TIME ZONE 'UTC')::date AS day,
               sum(o.cost_usd) AS cost, count(*) AS n
          FROM qd_old o GROUP BY 2, 3
        UNION ALL
        SELECT 'key', o.key_id, (o.created_at AT TIME ZONE 'UTC')::date, sum(o.cost_usd), count(*)
          FROM qd_old o WHERE o.key_id IS NOT NULL GROUP BY 2, 3
    )
    UPDATE gateway_spend_daily d SET cost_usd = d.cost_usd - g.cost, calls = d.calls - g.n
      FROM gone g
     WHERE d.scope_kind = g.kind AND d.scope = g.scope AND d.day = g.day;
    -- An erased tenant (or key) leaves no row naming it behind.
    DELETE FROM gateway_spend_daily d
     USING (SELECT DISTINCT o.tenant, o.key_id FROM qd_old o) s
     WHERE d.calls <= 0
       AND ((d.scope_kind = 'tenant' AND d.scope = s.tenant)
            OR (d.scope_kind = 'key' AND d.scope = s.key_id));
    RETURN NULL;
END
$fn$;

CREATE TRIGGER gateway_calls_spend_added AFTER INSERT ON gateway_calls
    REFERENCING NEW TABLE AS qd_new FOR EACH STATEMENT EXECUTE FUNCTION qd_gateway_spend_added();
CREATE TRIGGER gateway_calls_spend_removed AFTER DELETE ON gateway_calls
    REFERENCING OLD TABLE AS qd_old FOR EACH STATEMENT EXECUTE FUNCTION qd_gateway_spend_removed();

-- The reservation of 0010, reading the gateway's spend from the rollup (tg, kg).
CREATE OR REPLACE FUNCTION qd_reserve_budget(
    p_hold text, p_tenant text, p_key text, p_run text, p_amount numeric,
    p_day timestamptz, p_month timestamptz, p_end timestamptz, p_now timestamptz,
    p_expires timestamptz, p_lock_timeout_ms integer)
RETURNS TABLE (o_t_daily numeric, o_t_monthly numeric, o_k_daily numeric, o_k_monthly numeric,
               o_r_total numeric, o_t_day numeric, o_t_month numeric, o_k_day numeric,
               o_k_month numeric, o_r_spent numeric, o_hold text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_day date := (p_day AT TIME ZONE 'UTC')::date;
    v_month date := (p_month AT TIME ZONE 'UTC')::date;
    v_end date := (p_end AT TIME ZONE 'UTC')::date;
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
               (SELECT coalesce(sum(d.cost_usd) FILTER (WHERE d.day >= v_day), 0) AS day,
                       coalesce(sum(d.cost_usd), 0) AS month
                  FROM gateway_spend_daily d
                 WHERE (o_t_daily IS NOT NULL OR o_t_monthly IS NOT NULL)
                   AND d.scope_kind = 'tenant' AND d.scope = p_tenant
                   AND d.day >= v_month AND d.day <= v_end
               ) tg,
               (SELECT coalesce(sum(h.amount_usd), 0) AS held FROM budget_holds h
                 WHERE (o_t_daily IS NOT NULL OR o_t_monthly IS NOT NULL)
                   AND h.tenant = p_tenant AND h.expires_at > p_now) th,
               (SELECT coalesce(sum(d.cost_usd) FILTER (WHERE d.day >= v_day), 0) AS day,
                       coalesce(sum(d.cost_usd), 0) AS month
                  FROM gateway_spend_daily d
                 WHERE (o_k_daily IS NOT NULL OR o_k_monthly IS NOT NULL)
                   AND d.scope_kind = 'key' AND d.scope = p_key
                   AND d.day >= v_month AND d.day <= v_end
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
