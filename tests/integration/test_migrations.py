"""Migrations: a fresh database and one upgraded step by step end with the same schema."""

from __future__ import annotations

import asyncpg
import pytest

from quarterdeck.store import migrations
from tests.conftest import with_database

pytestmark = pytest.mark.asyncio

SCHEMA_QUERY = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type || ' '
       || is_nullable || ' ' || coalesce(column_default, '') AS item
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', tablename || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger', tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'function', proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'type', typname FROM pg_type WHERE typnamespace = 'public'::regnamespace AND typtype = 'e'
ORDER BY 1, 2
"""


async def _fresh_db(base: str, name: str) -> str:
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return with_database(base, name)


async def _schema(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r["kind"], r["item"]) for r in await conn.fetch(SCHEMA_QUERY)]
    finally:
        await conn.close()


async def test_fresh_and_stepwise_migrated_schemas_match(pg_base_url: str):
    fresh = await _fresh_db(pg_base_url, "qd_schema_fresh")
    assert await migrations.upgrade(fresh) == [m.version for m in migrations.MIGRATIONS]

    stepped = await _fresh_db(pg_base_url, "qd_schema_stepped")
    for m in migrations.MIGRATIONS:
        assert await migrations.upgrade(stepped, target=m.version) == [m.version]
    assert await migrations.upgrade(stepped) == []  # idempotent

    assert await _schema(fresh) == await _schema(stepped)
    assert len(await _schema(fresh)) > 20


async def test_job_tables_match_the_pinned_library_declaration(template_url: str):
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(template_url)
    try:
        plan = await Queries(AsyncpgDriver(conn)).plan_upgrade()
        assert list(plan.statements) == []
        assert await migrations.is_current(conn)
    finally:
        await conn.close()


async def test_concurrent_upgrades_apply_each_step_once(pg_base_url: str):
    import asyncio

    url = await _fresh_db(pg_base_url, "qd_schema_race")
    results = await asyncio.gather(*(migrations.upgrade(url) for _ in range(3)))
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in migrations.MIGRATIONS]
