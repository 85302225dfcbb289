"""A real advisory-lock elector already leading, for tests of a leader's loop (the scaler's,
the rollout controller's): taken on entry, released on exit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from quarterdeck.health.leader import LeaderElector


@contextlib.asynccontextmanager
async def leading(db_url: str, key: int, role: str) -> AsyncIterator[LeaderElector]:
    e = LeaderElector(db_url, key=key, retry_s=0.2, role=role)
    await e._step()  # take the lock now; run() would do the same on its first pass
    assert e.is_leader
    try:
        yield e
    finally:
        await e.stop()
