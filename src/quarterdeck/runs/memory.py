"""The in-memory twin of the run store: same interface, same transition rules, plain dicts.

Modelled on procrastinate's ``InMemoryConnector``: the worker, executor, submission and cancel
logic run against it in unit tests without Postgres, and a parity test runs one scenario against
both stores. It keeps a tiny job queue of its own (``jobs``, ``next_job``) standing in for
pgqueuer, so requeues and cancels can be observed. Every status change goes through
:func:`quarterdeck.runs.transitions.check`, so a rule the SQL guards would refuse is refused here
too; not for production (no durability, one process). Its tables and their primitives are
:mod:`.memory_tables`; the repair, cancel and erasure half is :mod:`.memory_repair`.
"""

from __future__ import annotations

from typing import Any

from quarterdeck.runs import transitions
from quarterdeck.runs.fencing import DISCARDED_CALL, fenced, holds
from quarterdeck.runs.memory_repair import MemoryRepairs
from quarterdeck.runs.memory_tables import MemoryRow
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus
from quarterdeck.runs.store_protocol import Finish, KeyTaken, QueueStats, TurnRecord
from quarterdeck.runs.workspace_state import WorkspaceDelta, WorkspaceState

_INSERTED = (
    *("id", "tenant", "agent_type", "operation", "prompt", "model", "max_attempts"),
    *("idempotency_key", "params", "budget_usd", "key_id"),
)
_ROUTED = ("config_version", "canary_id", "canary_arm")
_COUNTERS = ("attempts", "input_tokens", "output_tokens", "cache_creation_tokens", "turns")
_FRESH: dict[str, Any] = {
    **dict.fromkeys((*_COUNTERS, "cache_read_tokens"), 0),
    **dict.fromkeys(("started_at", "finished_at", "result", "error")),
}
"""What the ``runs`` table's defaults give a new row."""


class InMemoryRunStore(MemoryRepairs):
    """:class:`~quarterdeck.runs.store.RunStore` in plain dicts; ``clock`` is seconds (time)."""

    # -- submission ---------------------------------------------------------------------------
    async def create(self, items: list[tuple[dict[str, Any], bytes | None]]) -> list[Run]:
        taken = {(r.run.tenant, r.run.idempotency_key) for r in self.rows.values()}
        keys = [(row["tenant"], row["idempotency_key"]) for row, _ in items]
        keyed = [k for k in keys if k[1] is not None]
        if any(k in taken for k in keyed) or len(set(keyed)) != len(keyed):
            raise KeyTaken
        runs = []
        for row, archive in items:
            row["job_id"] = self._enqueue(row["id"])
            runs.append(self._insert(row, archive))
        return runs

    async def create_batch(self, rows: list[dict[str, Any]]) -> None:
        await self.create([(row, None) for row in rows])

    def _insert(self, row: dict[str, Any], archive: bytes | None) -> Run:
        run = Run(
            **{k: row[k] for k in _INSERTED},
            **{k: row.get(k) for k in _ROUTED},
            **_FRESH,
            status=RunStatus.queued,
            created_at=self._now(),
            cost_usd=0.0,
        )
        self.rows[run.id] = MemoryRow(
            run, job_id=row["job_id"], request_hash=row["request_hash"], archive=archive
        )
        self._event(run.id, "status", {"status": "queued"})
        return run

    async def find_by_idempotency_key(self, tenant: str, key: str) -> tuple[Run, str | None] | None:
        for row in self.rows.values():
            if row.run.tenant == tenant and row.run.idempotency_key == key:
                return row.run, row.request_hash
        return None

    async def find_by_idempotency_keys(
        self, tenant: str, keys: list[str]
    ) -> dict[str, tuple[str, str | None]]:
        wanted = set(keys)
        return {
            r.run.idempotency_key: (r.run.id, r.request_hash)
            for r in self.rows.values()
            if r.run.tenant == tenant and r.run.idempotency_key in wanted
        }

    # -- reads --------------------------------------------------------------------------------
    async def get(self, run_id: str, tenant: str | None = None) -> Run | None:
        row = self.rows.get(run_id)
        if row is None or (tenant is not None and row.run.tenant != tenant):
            return None
        return row.run

    async def list_runs(self, tenant: str | None, f: RunFilter) -> list[Run]:
        runs = [
            r.run
            for r in self.rows.values()
            if (tenant is None or r.run.tenant == tenant)
            and (f.tenant is None or r.run.tenant == f.tenant)
            and (not f.status or r.run.status in f.status)
            and (not f.agent_type or r.run.agent_type == f.agent_type)
            and (not f.model or r.run.model == f.model)
            and (not f.q or _found(r.run, f))
            and (not f.created_after or r.run.created_at >= f.created_after)
            and (not f.created_before or r.run.created_at < f.created_before)
            and (not f.cursor or r.run.id < f.cursor)
        ]
        return sorted(runs, key=lambda r: r.id, reverse=True)[: f.limit]

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[RunEvent]:
        return [e for e in self.timeline if e.run_id == run_id and e.id > after][:limit]

    async def diff(self, run_id: str, tenant: str | None) -> str | None:
        if await self.get(run_id, tenant) is None:
            raise LookupError(run_id)
        return self.rows[run_id].diff

    async def load_archive(self, run_id: str) -> bytes | None:
        row = self.rows.get(run_id)
        return row.archive if row else None

    async def last_checkpoint(self, run_id: str) -> tuple[int, list[Any]] | None:
        row = self.rows.get(run_id)
        if row is None or not row.checkpoints:
            return None
        turn = max(row.checkpoints)
        return turn, list(row.checkpoints[turn])

    async def tool_results(self, run_id: str, turn: int) -> dict[str, Any] | None:
        for e in reversed(self.timeline):
            if e.run_id == run_id and e.type == "tool_results" and e.turn == turn:
                return dict(e.data["message"])
        return None

    async def stats(self) -> QueueStats:
        queued: dict[str, int] = {}
        states: dict[str, int] = {}
        oldest = 0.0
        for r in self.rows.values():
            if r.run.status.terminal:
                continue
            states[r.run.status.value] = states.get(r.run.status.value, 0) + 1
            if r.run.status is RunStatus.queued:
                queued[r.run.agent_type] = queued.get(r.run.agent_type, 0) + 1
                oldest = max(oldest, self.clock() - r.run.created_at.timestamp())
        return QueueStats(queued, oldest, states)

    async def created_since(self, window_s: float) -> int:
        since = self.clock() - window_s
        return sum(1 for r in self.rows.values() if r.run.created_at.timestamp() >= since)

    async def running_per_worker(self, *, stale_after_s: float = 30.0) -> dict[str, int]:
        busy: dict[str, int] = {}
        for r in self.rows.values():
            fresh = r.heartbeat is not None and r.heartbeat >= self.clock() - stale_after_s
            if r.run.status is RunStatus.running and r.worker_id and fresh:
                host = r.worker_id.split(":", 1)[0]
                busy[host] = busy.get(host, 0) + 1
        return busy

    # -- execution ----------------------------------------------------------------------------
    async def claim(self, run_id: str, worker_id: str) -> tuple[Run, bool] | None:
        row = self.rows.get(run_id)
        if row is None or row.run.status not in transitions.CLAIMABLE:
            return None
        attempts, was = row.run.attempts + 1, (row.run.status, row.worker_id)
        self._move(
            row,
            RunStatus.running,
            attempts=attempts,
            started_at=row.run.started_at or self._now(),
        )
        row.worker_id, row.heartbeat = worker_id, self.clock()
        data: dict[str, Any] = {"status": "running", "attempt": attempts, "worker": worker_id}
        data["resumed"] = attempts > 1
        if was[0] is RunStatus.running:  # taken from an attempt that went silent
            data["superseded"] = {"attempt": attempts - 1, "worker": was[1]}
        self._event(run_id, "status", data)
        return row.run, attempts == 1

    def _fence(self, run_id: str, epoch: int) -> MemoryRow:
        """The run's row if attempt ``epoch`` holds it; else ``Fenced`` (the Postgres guard)."""
        row = self.rows.get(run_id)
        if row is None or not holds(row.run.status, row.run.attempts, epoch):
            raise fenced(run_id, epoch)
        return row

    async def save_turn(self, turn: TurnRecord, *, epoch: int) -> None:
        if turn.hold_id is not None:
            self.settled_holds.append(turn.hold_id)  # deleted recorded or not, as in Postgres
        row = self._fence(turn.run_id, epoch)
        if turn.turn in row.checkpoints:
            raise ValueError(f"turn {turn.turn} of {turn.run_id} is already checkpointed")
        row.checkpoints[turn.turn] = list(turn.messages)
        row.cost += turn.cost or 0
        row.cost_known = row.cost_known and turn.cost is not None
        u, r = turn.usage, row.run
        row.run = r.model_copy(
            update={
                "turns": turn.turn,
                "input_tokens": r.input_tokens + u["input_tokens"],
                "output_tokens": r.output_tokens + u["output_tokens"],
                "cache_creation_tokens": r.cache_creation_tokens + u["cache_creation_input_tokens"],
                "cache_read_tokens": r.cache_read_tokens + u["cache_read_input_tokens"],
                "cost_usd": float(row.cost) if row.cost_known else None,
            }
        )
        row.heartbeat = self.clock()
        self._event(turn.run_id, "turn", turn.event, turn.turn)

    async def append_events(
        self, run_id: str, events: list[tuple[str, int | None, dict[str, Any]]], *, epoch: int
    ) -> None:
        if events:
            self._fence(run_id, epoch)
        for type_, turn, data in events:
            self._event(run_id, type_, data, turn)

    async def check_attempt(self, run_id: str, *, epoch: int) -> None:
        self._fence(run_id, epoch)

    async def record_usage(self, run_id: str, usage: dict[str, Any], *, epoch: int) -> None:
        self._fence(run_id, epoch)
        row = self.rows[run_id]
        row.run = row.run.model_copy(update=metered(usage))

    async def discarded_call(self, run_id: str, data: dict[str, Any]) -> None:
        if run_id in self.rows:
            self._event(run_id, DISCARDED_CALL, data, data.get("turn"))

    # -- workspace checkpoints (the rules: runs/workspace_store.py) ------------------------------
    def _held(self, run_id: str, epoch: int) -> str:
        row = self.rows.get(run_id)
        status, attempts = (row.run.status, row.run.attempts) if row else (RunStatus.failed, -1)
        self.workspaces.check(run_id, status, attempts, epoch)
        assert row is not None
        return row.run.tenant

    async def save_workspace_base(self, run_id: str, base: WorkspaceDelta, *, epoch: int) -> None:
        self.workspaces.save(run_id, self._held(run_id, epoch), 0, base)

    async def save_tool_results(
        self,
        run_id: str,
        turn: int,
        events: list[tuple[str, int | None, dict[str, Any]]],
        workspace: WorkspaceDelta | None,
        *,
        epoch: int,
    ) -> None:
        self.workspaces.save(run_id, self._held(run_id, epoch), turn, workspace)
        for type_, at, data in events:
            self._event(run_id, type_, data, at)

    async def workspace_state(self, run_id: str) -> WorkspaceState | None:
        return self.workspaces.state(run_id)

    async def workspace_blobs(self, run_id: str, shas: list[str]) -> dict[str, bytes]:
        row = self.rows.get(run_id)
        return self.workspaces.load(row.run.tenant, shas) if row else {}

    async def heartbeat(self, run_ids: list[str], *, epochs: list[int]) -> list[str]:
        lost = []
        for run_id, epoch in zip(run_ids, epochs, strict=True):
            row = self.rows.get(run_id)
            if row is not None and holds(row.run.status, row.run.attempts, epoch):
                row.heartbeat = self.clock()
            else:
                lost.append(run_id)
        return lost

    async def finish(self, item: Finish, *, epoch: int | None = None) -> Run | None:
        transitions.require_end(item.status)
        row = self.rows.get(item.run_id)
        if row is None or row.run.status not in transitions.ENDABLE:
            return None
        if epoch is not None:
            self._fence(item.run_id, epoch)
        now = self._now()
        self._move(
            row,
            item.status,
            result=item.result,
            error=item.error,
            finished_at=now,
            started_at=row.run.started_at or now,
            **metered(item.usage),
        )
        data = {"status": item.status.value, "error": item.error, **(item.event or {})}
        self._event(item.run_id, "status", data)
        return row.run

    async def save_results(
        self,
        run_id: str,
        diff: str | None,
        changed_files: list[str],
        quality_score: float | None,
        coverage_percent: float | None,
        quality: dict[str, Any],
        event: dict[str, Any],
    ) -> None:
        row = self.rows.get(run_id)
        if row is None:
            return
        row.diff = diff
        row.run = row.run.model_copy(
            update={
                "changed_files": changed_files,
                "quality_score": quality_score,
                "coverage_percent": coverage_percent,
                "quality": quality,
            }
        )
        self._event(run_id, "result", event)

    async def aclose(self) -> None:
        return None


def _found(run: Run, f: RunFilter) -> bool:
    """The twin's search: the id prefix ``q`` names, or every word of ``q`` in the prompt (a
    substring match, where Postgres matches whole words)."""
    prefix = f.id_prefix()
    if prefix is not None and run.id.startswith(prefix):
        return True
    words = f.words()
    prompt = run.prompt.lower()
    return bool(words) and all(word in prompt for word in words)


def metered(usage: dict[str, Any] | None) -> dict[str, Any]:
    """The run fields a finish with totals metered elsewhere replaces (see ``Finish.usage``)."""
    fields = ("turns", "input_tokens", "output_tokens", "cache_creation_tokens")
    out: dict[str, Any] = {
        k: int(usage[k])
        for k in (*fields, "cache_read_tokens")
        if usage and usage.get(k) is not None
    }
    if usage and usage.get("cost_usd") is not None:
        out["cost_usd"] = float(usage["cost_usd"])
    return out
