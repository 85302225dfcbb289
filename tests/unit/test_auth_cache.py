"""The key-record cache: TTL, cached misses, invalidation, one load per id at a time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from quarterdeck.kit.clock import FakeClock
from quarterdeck.security.auth.cache import KeyCache
from quarterdeck.security.auth.models import KeyRecord
from quarterdeck.security.auth.permissions import Role


def record(key_id: str, name: str = "k") -> KeyRecord:
    return KeyRecord(
        id=key_id,
        prefix="qd_dev_",
        digest=b"\0" * 32,
        name=name,
        tenant="acme",
        role=Role.submitter,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        created_by=None,
        expires_at=None,
        revoked_at=None,
        revoked_by=None,
    )


class Store:
    def __init__(self) -> None:
        self.rows: dict[str, KeyRecord] = {}
        self.loads: list[str] = []
        self.gate: asyncio.Event | None = None

    async def load(self, key_id: str) -> KeyRecord | None:
        self.loads.append(key_id)
        if self.gate is not None:
            await self.gate.wait()
        return self.rows.get(key_id)


async def test_hits_within_the_ttl_do_not_reload_and_expired_entries_do():
    clock, store = FakeClock(), Store()
    store.rows["a"] = record("a", "old")
    cache = KeyCache(ttl_s=5, clock=clock.now)
    assert (await cache.get("a", store.load)).name == "old"  # type: ignore[union-attr]
    store.rows["a"] = record("a", "new")
    clock.advance(4.9)
    assert (await cache.get("a", store.load)).name == "old"  # type: ignore[union-attr]
    clock.advance(0.1)  # t = 5.0
    assert (await cache.get("a", store.load)).name == "new"  # type: ignore[union-attr]
    assert store.loads == ["a", "a"]


async def test_misses_are_cached_too():
    clock, store = FakeClock(), Store()
    cache = KeyCache(ttl_s=5, clock=clock.now)
    for _ in range(3):
        assert await cache.get("nope", store.load) is None
    assert store.loads == ["nope"]


async def test_invalidate_forgets_at_once():
    store = Store()
    cache = KeyCache(ttl_s=60)
    assert await cache.get("a", store.load) is None
    store.rows["a"] = record("a")
    cache.invalidate("a")
    assert await cache.get("a", store.load) is not None


async def test_concurrent_misses_share_one_load():
    store = Store()
    store.rows["a"] = record("a")
    store.gate = asyncio.Event()
    cache = KeyCache(ttl_s=60)
    waiters = [asyncio.create_task(cache.get("a", store.load)) for _ in range(10)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*waiters)
    assert store.loads == ["a"] and all(r is not None for r in results)


async def test_a_load_that_raced_an_invalidation_is_not_kept():
    store = Store()
    store.rows["a"] = record("a", "before revoke")
    store.gate = asyncio.Event()
    cache = KeyCache(ttl_s=60)
    first = asyncio.create_task(cache.get("a", store.load))
    await asyncio.sleep(0)
    store.rows["a"] = record("a", "after revoke")
    cache.invalidate("a")
    store.gate.set()
    await first
    store.gate = None
    assert (await cache.get("a", store.load)).name == "after revoke"  # type: ignore[union-attr]


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached():
    calls = 0

    async def broken(key_id: str) -> KeyRecord | None:
        nonlocal calls
        calls += 1
        raise ConnectionError("db down")

    cache = KeyCache(ttl_s=60)
    with pytest.raises(ConnectionError):
        await cache.get("a", broken)
    with pytest.raises(ConnectionError):
        await cache.get("a", broken)
    assert calls == 2


async def test_a_cancelled_caller_does_not_cancel_the_load_for_others():
    store = Store()
    store.rows["a"] = record("a")
    store.gate = asyncio.Event()
    cache = KeyCache(ttl_s=60)
    gone = asyncio.create_task(cache.get("a", store.load))
    stays = asyncio.create_task(cache.get("a", store.load))
    await asyncio.sleep(0)
    gone.cancel()
    store.gate.set()
    assert await stays is not None
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_the_cache_is_bounded_oldest_first():
    store = Store()
    cache = KeyCache(ttl_s=60, max_entries=2)
    for key_id in ("a", "b", "a", "c"):  # "a" is used again, so "b" is the oldest
        await cache.get(key_id, store.load)
    await cache.get("a", store.load)
    await cache.get("b", store.load)
    assert len(cache) == 2
    assert store.loads == ["a", "b", "c", "b"]
