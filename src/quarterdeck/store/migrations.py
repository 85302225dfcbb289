"""Versioned schema migrations, applied at start-up and by ``quarterdeck db upgrade``.

A migration is either a SQL file in ``store/sql`` or a Python step (the job library installs its
own tables through its API, pinned to the library version we ship). Applied versions are recorded
in ``quarterdeck_migrations``; a session advisory lock makes concurrent starts apply each step
exactly once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from quarterdeck.exceptions import StoreError
from quarterdeck.store import locks
from quarterdeck.store.pool import connect_once

log = structlog.get_logger(__name__)
_LOCK_KEY = locks.MIGRATIONS


async def _install_pgqueuer(conn: asyncpg.Connection) -> None:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    queries = Queries(AsyncpgDriver(conn))
    if not await queries.schema_is_installed():
        await queries.install()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql_file: str | None = None
    step: Callable[[asyncpg.Connection], Awaitable[None]] | None = None

    async def apply(self, conn: asyncpg.Connection) -> None:
        if self.step is not None:
            await self.step(conn)
        if self.sql_file is not None:
            sql = resources.files("quarterdeck.store").joinpath("sql", self.sql_file).read_text()
            await conn.execute(sql)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "pgqueuer job tables", step=_install_pgqueuer),
    Migration(2, "runs, events and checkpoints", sql_file="0002_runs.sql"),
    Migration(3, "agent runtime results", sql_file="0003_agent_runtime.sql"),
    Migration(4, "incidents, timeline and notification outbox", sql_file="0004_incidents.sql"),
    Migration(5, "tenant budgets", sql_file="0005_budgets.sql"),
    Migration(6, "audit log, chains and checkpoints", sql_file="0006_audit.sql"),
    Migration(7, "API keys, roles and tenants", sql_file="0007_auth.sql"),
    Migration(8, "tool calls held for approval", sql_file="0008_approvals.sql"),
    Migration(9, "shared notification rate limits", sql_file="0009_notification_slots.sql"),
    Migration(10, "gateway calls, key budgets and budget holds", sql_file="0010_gateway.sql"),
    Migration(11, "per-key gateway fallback, daily gateway spend", sql_file="0011_key_gateway.sql"),
    Migration(12, "run-data retention and maintenance runs", sql_file="0012_run_retention.sql"),
    Migration(14, "workspace checkpoints", sql_file="0014_workspace_checkpoints.sql"),
    Migration(15, "the key that submitted a run", sql_file="0015_run_key.sql"),
    Migration(
        16, "pending approvals end with their run", sql_file="0016_approvals_end_with_run.sql"
    ),
    Migration(17, "gateway tokens minted for one run", sql_file="0017_run_tokens.sql"),
    Migration(18, "web dashboard sessions", sql_file="0018_ui_sessions.sql"),
    Migration(19, "run list filters and prompt search", sql_file="0019_run_list_indexes.sql"),
    Migration(20, "the autoscaler's decisions", sql_file="0020_scaling_decisions.sql"),
    Migration(21, "rollouts and their events", sql_file="0021_rollouts.sql"),
    Migration(22, "agent-configuration canaries", sql_file="0022_agent_canaries.sql"),
    Migration(23, "monthly operations reports", sql_file="0023_monthly_reports.sql"),
    Migration(24, "health probe history and maintenance windows", sql_file="0024_availability.sql"),
    Migration(25, "maintenance windows silence paging", sql_file="0025_maintenance_silence.sql"),
    Migration(26, "when each API key was last used", sql_file="0026_key_last_used.sql"),
    Migration(27, "scale-up requests for the scaler leader", sql_file="0027_scaling_requests.sql"),
    Migration(
        28, "the outbox's claim index: claimable rows only", sql_file="0028_outbox_claim_index.sql"
    ),
)

HEAD = MIGRATIONS[-1].version


async def current_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('quarterdeck_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM quarterdeck_migrations"))


async def upgrade(url: str, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (default: all). Returns the versions applied."""
    target = HEAD if target is None else target
    conn = await connect_once(url)
    applied: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS quarterdeck_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        have = await current_version(conn)
        for migration in MIGRATIONS:
            if migration.version <= have or migration.version > target:
                continue
            async with conn.transaction():
                await migration.apply(conn)
                await conn.execute(
                    "INSERT INTO quarterdeck_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration.version)
            log.info("migration_applied", version=migration.version, name=migration.name)
    except asyncpg.PostgresError as exc:
        raise StoreError(f"migration failed: {exc}") from exc
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        finally:
            await conn.close()
    return applied


async def is_current(conn: asyncpg.Connection) -> bool:
    return await current_version(conn) >= HEAD
