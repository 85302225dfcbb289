"""The hot writes of a worker process (claim, turn checkpoint, finish), group-committed.

Machinery of :class:`~quarterdeck.runs.store.PostgresRunStore`, which owns one; nothing else
calls it.

Every run makes these three writes. One statement per write capped a two-core box at a few
hundred runs per second, in round trips, statement overhead and commits rather than in work; so
concurrent writes of the same kind share one statement (see :mod:`quarterdeck.kit.coalesce`).
Each caller still waits until its own write is committed, so a checkpointed turn is as durable as
before, and a bad item is retried alone rather than failing its neighbours.
"""

from __future__ import annotations

from quarterdeck.exceptions import StoreError, Unavailable
from quarterdeck.kit.coalesce import Coalescer
from quarterdeck.runs import attempt_repository as repo
from quarterdeck.runs.fencing import fenced
from quarterdeck.runs.models import Run
from quarterdeck.store.pool import Database

_FATAL = (Unavailable, StoreError)


class RunWriter:
    def __init__(self, db: Database, *, max_batch: int = 200) -> None:
        self.db = db
        self._starts: dict[str, Coalescer[str, tuple[Run, bool] | None]] = {}
        self._turns: Coalescer[repo.TurnRecord, bool] = Coalescer(
            self._save_turns, max_batch=max_batch, fatal=_FATAL
        )
        self._finishes: Coalescer[repo.Finish, tuple[Run | None, bool]] = Coalescer(
            self._finish, max_batch=max_batch, fatal=_FATAL
        )
        self.max_batch = max_batch

    async def start(self, run_id: str, worker_id: str) -> tuple[Run, bool] | None:
        """Claim a run: (run, first start), or None when it is already terminal."""
        coalescer = self._starts.get(worker_id)
        if coalescer is None:

            async def flush(ids: list[str]) -> list[tuple[Run, bool] | None]:
                async with self.db.acquire() as conn:
                    claimed = await repo.start_attempts(conn, ids, worker_id)
                return [claimed.get(i) for i in ids]

            coalescer = Coalescer(flush, max_batch=self.max_batch, fatal=_FATAL)
            self._starts[worker_id] = coalescer
        return await coalescer.submit(run_id)

    async def save_turn(self, turn: repo.TurnRecord) -> None:
        """Record the turn; raises ``Fenced`` when its attempt (``turn.epoch``) lost the run.

        A fenced turn is a result, not a failed batch: its neighbours commit in the same
        statement."""
        if not await self._turns.submit(turn):
            raise fenced(turn.run_id, turn.epoch)

    async def finish(self, item: repo.Finish) -> Run | None:
        """Move the run to its terminal status; None if it already was terminal, ``Fenced``
        if it is still going under another attempt than ``item.epoch``."""
        done, lost = await self._finishes.submit(item)
        if lost:
            raise fenced(item.run_id, item.epoch or 0)
        return done

    async def _save_turns(self, turns: list[repo.TurnRecord]) -> list[bool]:
        async with self.db.acquire() as conn:
            recorded = await repo.save_turns(conn, turns)
        return [(t.run_id, t.epoch) in recorded for t in turns]

    async def _finish(self, items: list[repo.Finish]) -> list[tuple[Run | None, bool]]:
        async with self.db.acquire() as conn:
            done = await repo.finish_many(conn, items)
            missed = [i.run_id for i in items if i.epoch is not None and i.run_id not in done]
            # Rare (a lost race or a lost attempt): only then one more read tells them apart.
            lost = await repo.unfinished(conn, missed) if missed else set()
        return [(done.get(i.run_id), i.run_id in lost) for i in items]

    async def aclose(self) -> None:
        """Wait for writes in flight, so shutdown never drops an accepted checkpoint."""
        for start in self._starts.values():
            await start.aclose()
        await self._turns.aclose()
        await self._finishes.aclose()
