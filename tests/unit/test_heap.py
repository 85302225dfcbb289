"""kit/heap.py: start-up objects leave the full collections, garbage made before is freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from quarterdeck.kit.heap import freeze_startup_heap


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it found it


def test_startup_objects_leave_the_collected_generations(thawed: None) -> None:
    kept = [{"n": i} for i in range(20_000)]
    assert len(gc.get_objects()) > 20_000
    frozen = freeze_startup_heap()
    assert frozen >= 20_000 and gc.get_freeze_count() == frozen
    # What a full collection walks from now on: only objects allocated after the freeze.
    assert len(gc.get_objects()) < 1_000
    assert kept[-1] == {"n": 19_999}


def test_garbage_cycles_from_start_up_are_freed_not_frozen(thawed: None) -> None:
    class Node:
        pass

    gc.disable()  # the cycle stays garbage until freeze_startup_heap collects it
    try:
        a, b = Node(), Node()
        a.peer, b.peer = b, a  # type: ignore[attr-defined]
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None
        freeze_startup_heap()
        assert gone() is None  # frozen instead, it would live as long as the process
    finally:
        gc.enable()
