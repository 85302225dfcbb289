"""The group-commit coalescer: concurrent submissions share a flush, bad items fail alone."""

from __future__ import annotations

import asyncio

import pytest

from quarterdeck.kit.coalesce import Coalescer

pytestmark = pytest.mark.asyncio


class Down(Exception):
    pass


async def test_concurrent_items_share_one_flush_and_get_their_own_results():
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0)
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(flush)
    results = await asyncio.gather(*(c.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert calls == [list(range(50))]


async def test_batches_are_capped_and_everything_is_flushed():
    calls: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    c: Coalescer[int, int] = Coalescer(flush, max_batch=7)
    assert await asyncio.gather(*(c.submit(i) for i in range(30))) == list(range(30))
    assert max(len(b) for b in calls) <= 7
    assert sorted(i for b in calls for i in b) == list(range(30))


async def test_a_bad_item_fails_alone_after_a_one_by_one_retry():
    async def flush(items: list[int]) -> list[int]:
        if 3 in items:
            raise ValueError("item 3 violates a constraint")
        return items

    c: Coalescer[int, int] = Coalescer(flush)
    results = await asyncio.gather(*(c.submit(i) for i in range(6)), return_exceptions=True)
    assert [r for r in results if not isinstance(r, Exception)] == [0, 1, 2, 4, 5]
    assert isinstance(results[3], ValueError)


async def test_a_fatal_error_fails_the_whole_batch_without_retrying():
    calls = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        raise Down("database unavailable")

    c: Coalescer[int, int] = Coalescer(flush, fatal=(Down,))
    results = await asyncio.gather(*(c.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, Down) for r in results) and calls == 1


async def test_a_cancelled_caller_does_not_cancel_its_write():
    written: list[int] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        await gate.wait()
        written.extend(items)
        return items

    c: Coalescer[int, int] = Coalescer(flush)
    waiter = asyncio.create_task(c.submit(1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    gate.set()
    await c.aclose()
    assert written == [1]
