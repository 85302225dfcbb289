"""The SQL an agent-configuration canary needs beyond a rollout's own row: which canary
decides each agent type's configuration, and how each arm's runs ended.

Why apart from ``repository.py``: that module owns the rollout row and its codecs; these read
other state (the newest canary per type for the routers of every API replica, and ``runs``,
which the run store owns: read here, never written).
"""

from __future__ import annotations

import asyncpg


async def newest_canaries(
    conn: asyncpg.Connection, target: str | None = None
) -> list[asyncpg.Record]:
    """The newest agent-configuration canary of each agent type (or of ``target``): what
    decides the configuration new runs of that type get."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT DISTINCT ON (target) id, target, phase, weight, spec
          FROM rollouts
         WHERE kind = 'agent-config' AND ($1::text IS NULL OR target = $1)
         ORDER BY target, created_at DESC, id DESC
        """,
        target,
    )
    return rows


async def arm_samples(conn: asyncpg.Connection, canary_id: str) -> dict[str, asyncpg.Record]:
    """How each arm's finished runs ended, since the canary started (cancelled runs are a
    person's decision, not the configuration's, so they are left out). Reads ``runs`` only:
    the run store owns their state; this is the canary's view of it."""
    rows = await conn.fetch(
        """
        SELECT canary_arm,
               count(*) AS runs,
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
               avg(turns)::float8 AS turns_mean,
               percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY extract(epoch FROM finished_at - coalesce(started_at, created_at))
               ) AS duration_p95_s,
               avg(quality_score)::float8 AS quality_mean,
               count(quality_score) AS quality_n,
               avg(coverage_percent)::float8 AS coverage_mean,
               count(coverage_percent) AS coverage_n
          FROM runs
         WHERE canary_id = $1 AND canary_arm IS NOT NULL
           AND status NOT IN ('queued', 'running', 'cancelled')
         GROUP BY canary_arm
        """,
        canary_id,
    )
    return {r["canary_arm"]: r for r in rows}
