"""The batch appender against a fake writer: group commit, deadlines, retries, poison events and
shutdown. No database: the write function records what it was given and fails on command."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from quarterdeck.exceptions import StoreError, Unavailable
from quarterdeck.metrics import REGISTRY
from quarterdeck.security.audit import AuditEvent
from quarterdeck.security.audit.appender import BatchAppender
from quarterdeck.security.audit.writer import Prepared, prepare


def item(n: int, event_type: str = "tool.call") -> Prepared:
    return prepare(AuditEvent(event_type=event_type, tenant="acme", actor=f"key:{n}"))


class FakeWriter:
    def __init__(self) -> None:
        self.batches: list[list[str | None]] = []
        self.fail_with: list[Exception] = []
        self.poison: set[str] = set()
        self.gate: asyncio.Event | None = None

    async def __call__(self, batch: Sequence[Prepared]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with:
            raise self.fail_with.pop(0)
        if any(p.actor in self.poison for p in batch):
            raise StoreError("invalid byte sequence")
        self.batches.append([p.actor for p in batch])

    @property
    def written(self) -> list[str | None]:
        return [a for b in self.batches for a in b]


def dropped(reason: str) -> float:
    value = REGISTRY.get_sample_value("claude_agent_audit_events_dropped_total", {"reason": reason})
    return value or 0.0


async def test_durable_appends_share_a_batch_while_one_is_written() -> None:
    w = FakeWriter()
    w.gate = asyncio.Event()
    a = BatchAppender(w, max_delay=10)
    a.start()
    first = asyncio.create_task(a.append(item(0)))
    await asyncio.sleep(0.01)  # the flusher took event 0 and waits at the gate
    rest = [asyncio.create_task(a.append(item(n))) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    w.gate.set()
    await asyncio.gather(first, *rest)
    assert w.batches == [["key:0"], [f"key:{n}" for n in range(1, 6)]]
    await a.aclose()


async def test_fire_and_forget_events_wait_for_the_deadline_or_a_full_batch() -> None:
    w = FakeWriter()
    a = BatchAppender(w, max_delay=0.2, max_batch=10)
    a.start()
    a.append_nowait(item(1))
    await asyncio.sleep(0.05)
    assert w.batches == []  # not yet: within max_delay
    await asyncio.sleep(0.3)
    assert w.written == ["key:1"]
    for n in range(10):
        a.append_nowait(item(n))
    await asyncio.sleep(0.02)  # a full batch goes at once
    assert len(w.batches) == 2 and len(w.batches[1]) == 10
    await a.aclose()


async def test_an_idle_flusher_writes_a_lone_event_within_max_delay() -> None:
    """The flusher, idle on an empty buffer, must be woken by the first fire-and-forget event:
    nothing else (no durable append, no full batch, no flush) ever comes along here."""
    w = FakeWriter()
    a = BatchAppender(w, max_delay=0.05, max_batch=10)
    a.start()
    await asyncio.sleep(0.02)  # the flusher has run and now waits on an empty buffer
    for round_ in range(3):  # and again after each write has emptied it
        a.append_nowait(item(round_))
        await asyncio.sleep(0.2)
        assert w.written == [f"key:{n}" for n in range(round_ + 1)]
    await a.aclose()


async def test_unavailable_database_defers_buffered_events_and_fails_awaiting_callers() -> None:
    w = FakeWriter()
    w.fail_with = [Unavailable("db down"), Unavailable("db down")]
    a = BatchAppender(w, max_delay=0.01)
    a.start()
    a.append_nowait(item(1))
    with pytest.raises(Unavailable):
        await a.append(item(2))
    await a.flush()
    assert w.written == ["key:1"]  # retried after the outage; the awaited one was the caller's
    await a.aclose()


async def test_a_rejected_event_is_dropped_without_blocking_the_others() -> None:
    w = FakeWriter()
    w.poison = {"key:2"}
    before = dropped("rejected")
    a = BatchAppender(w, max_delay=0.01)
    a.start()
    for n in range(4):
        a.append_nowait(item(n))
    await a.flush()
    assert w.written == ["key:0", "key:1", "key:3"]
    assert dropped("rejected") == before + 1
    await a.aclose()


async def test_clean_shutdown_writes_everything_buffered() -> None:
    w = FakeWriter()
    a = BatchAppender(w, max_delay=60, max_batch=3)
    a.start()
    for n in range(7):
        a.append_nowait(item(n))
    await a.aclose()
    assert w.written == [f"key:{n}" for n in range(7)]


async def test_shutdown_gives_up_on_a_dead_database_and_counts_the_loss() -> None:
    w = FakeWriter()
    w.fail_with = [Unavailable("down")] * 1000
    before = dropped("shutdown")
    a = BatchAppender(w, max_delay=0.01)
    a.start()
    a.append_nowait(item(1))
    a.append_nowait(item(2))
    await a.aclose(timeout=0.3)
    assert w.written == [] and dropped("shutdown") == before + 2


async def test_a_full_buffer_drops_instead_of_growing() -> None:
    w = FakeWriter()
    before = dropped("overflow")
    a = BatchAppender(w, max_buffer=3)  # not started: nothing drains
    for n in range(5):
        a.append_nowait(item(n))
    assert a.pending == 3 and dropped("overflow") == before + 2
