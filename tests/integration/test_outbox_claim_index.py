"""The outbox's claim uses an index of claimable rows only (migration 0028).

Why it matters: 'suppressed' rows (pages a maintenance window silenced) are final and kept as
history; in the old index (every row not 'sent') each claim walked past all of them, more with
every silenced page.
"""

from __future__ import annotations

import json

import pytest

from quarterdeck.incidents.outbox_repository import CLAIM_SQL
from quarterdeck.store.pool import Database

pytestmark = pytest.mark.asyncio


async def test_the_claim_index_holds_only_claimable_states_and_the_claim_uses_it(
    db: Database,
) -> None:
    async with db.acquire() as conn:
        definition = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'notifications_claimable'"
        )
        assert definition is not None
        for state in ("pending", "failed", "sending"):
            assert f"'{state}'" in definition, definition
        for final in ("suppressed", "held", "sent"):
            assert f"'{final}'" not in definition, definition
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'notifications_undelivered'"
        )
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + CLAIM_SQL, None, 30.0, 5, 100)
    indexes = set()

    def walk(node: dict[str, object]) -> None:
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        for child in node.get("Plans", []):  # type: ignore[attr-defined]
            walk(child)

    walk((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
    assert "notifications_claimable" in indexes, indexes
