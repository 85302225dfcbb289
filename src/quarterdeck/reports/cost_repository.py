"""The monthly report's cost SQL: the billing records, summed per tenant, model, day and source.

Why these tables: ``run_turns.cost_usd`` (a run's own model calls, one row per completed turn)
and ``gateway_calls.cost_usd`` (every call through the gateway, claude-code runs' included) are
the billing records that tenant budgets are enforced against (see ``budgets/repository.py``), so
the report's spend is the spend the budgets saw, never a second estimate. A claude-code run has
no turns of its own; its cost is its gateway calls, so adding both sources never counts a call
twice. Each function returns rows already grouped by Postgres; the caller only rolls them up.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = ["budgets", "focus_rows", "run_costs", "spend_groups"]


async def spend_groups(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> list[asyncpg.Record]:
    """Per (source, tenant, model): cost, cache-read tokens, and how many records had an
    unknown (turns) or estimated (gateway) cost."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT 'run' AS source, r.tenant, t.model,
               coalesce(sum(t.cost_usd), 0)::float8 AS cost,
               coalesce(sum(t.cache_read_tokens), 0)::bigint AS cache_read,
               count(*) FILTER (WHERE t.cost_usd IS NULL) AS uncertain
          FROM run_turns t JOIN runs r ON r.id = t.run_id
         WHERE t.created_at >= $1 AND t.created_at < $2 AND ($3::text IS NULL OR r.tenant = $3)
         GROUP BY 2, 3
        UNION ALL
        SELECT 'gateway', g.tenant, g.model,
               coalesce(sum(g.cost_usd), 0)::float8,
               coalesce(sum(g.cache_read_tokens), 0)::bigint,
               count(*) FILTER (WHERE g.cost_estimated)
          FROM gateway_calls g
         WHERE g.created_at >= $1 AND g.created_at < $2 AND ($3::text IS NULL OR g.tenant = $3)
         GROUP BY 2, 3
         ORDER BY 1, 2, 3
        """,
        start,
        end,
        tenant,
    )
    return rows


async def run_costs(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> asyncpg.Record:
    """Runs submitted in the period: their whole recorded cost, how many, how many succeeded,
    and how many have a cost that is not fully known."""
    row = await conn.fetchrow(
        """
        SELECT coalesce(sum(cost_usd), 0)::float8 AS cost, count(*) AS runs,
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE NOT cost_known) AS unknown
          FROM runs
         WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR tenant = $3)
        """,
        start,
        end,
        tenant,
    )
    assert row is not None
    return row


async def budgets(conn: asyncpg.Connection, tenant: str | None) -> list[asyncpg.Record]:
    """Tenant budgets (of one tenant, or all) that set any limit."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT tenant, daily_usd::float8 AS daily, monthly_usd::float8 AS monthly
          FROM tenant_budgets
         WHERE ($1::text IS NULL OR tenant = $1)
           AND (daily_usd IS NOT NULL OR monthly_usd IS NOT NULL)
         ORDER BY tenant
        """,
        tenant,
    )
    return rows


async def focus_rows(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> list[asyncpg.Record]:
    """One row per UTC day x tenant x model x source x agent type, with the token classes
    summed: the FOCUS export's charges. A gateway call made for a run carries that run's agent
    type; other calls have none."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT (t.created_at AT TIME ZONE 'UTC')::date AS day, r.tenant, t.model,
               'run' AS source, r.agent_type,
               coalesce(sum(t.cost_usd), 0) AS cost,
               count(*) FILTER (WHERE t.cost_usd IS NULL) AS uncertain,
               sum(t.input_tokens)::bigint AS input_tokens,
               sum(t.output_tokens)::bigint AS output_tokens,
               sum(t.cache_creation_tokens)::bigint AS cache_write_5m_tokens,
               0::bigint AS cache_write_1h_tokens,
               sum(t.cache_read_tokens)::bigint AS cache_read_tokens,
               count(*) AS records
          FROM run_turns t JOIN runs r ON r.id = t.run_id
         WHERE t.created_at >= $1 AND t.created_at < $2 AND ($3::text IS NULL OR r.tenant = $3)
         GROUP BY 1, 2, 3, 5
        UNION ALL
        SELECT (g.created_at AT TIME ZONE 'UTC')::date, g.tenant, g.model, 'gateway',
               r.agent_type,
               coalesce(sum(g.cost_usd), 0),
               count(*) FILTER (WHERE g.cost_estimated),
               sum(g.input_tokens)::bigint, sum(g.output_tokens)::bigint,
               sum(g.cache_write_5m_tokens)::bigint, sum(g.cache_write_1h_tokens)::bigint,
               sum(g.cache_read_tokens)::bigint, count(*)
          FROM gateway_calls g LEFT JOIN runs r ON r.id = g.run_id
         WHERE g.created_at >= $1 AND g.created_at < $2 AND ($3::text IS NULL OR g.tenant = $3)
         GROUP BY 1, 2, 3, 5
         ORDER BY 1, 2, 3, 4, 5 NULLS FIRST
        """,
        start,
        end,
        tenant,
    )
    return rows
