"""Run use-cases: submit, read, list, cancel, wait and follow events.

Endpoints and the CLI call these; they own transactions and error mapping, repositories own SQL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from quarterdeck.config import Settings
from quarterdeck.exceptions import (
    IdempotencyConflict,
    InvalidState,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from quarterdeck.kit.ids import new_id
from quarterdeck.runs import queue
from quarterdeck.runs import repository as repo
from quarterdeck.runs.events import RunEventHub
from quarterdeck.runs.models import Run, RunCreate, RunEvent, RunFilter, RunPage, RunStatus
from quarterdeck.runs.worker import record_outcome
from quarterdeck.security.trail import AuditTrail, RequestContext
from quarterdeck.store.pool import Database

DEFAULT_TENANT = "default"


MAX_ARCHIVE_BYTES = 50 * 1024 * 1024
RECENT_RUNS = 10_000
"""Runs kept in memory to answer reads while the database is down."""


def _decode_archive(value: str) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(
            "workspace.value must be a base64-encoded tar archive",
            errors=[{"field": "workspace.value", "message": "not valid base64"}],
        ) from None
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ValidationFailed(
            f"workspace archive is {len(data)} bytes; the limit is {MAX_ARCHIVE_BYTES}",
            errors=[{"field": "workspace.value", "message": "archive too large"}],
        )
    return data


class _KeyTaken(Exception):
    """Another request inserted the same idempotency key first."""


def request_hash(body: RunCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class RunService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        hub: RunEventHub | None = None,
        catalog: Any | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.catalog = catalog  # AgentCatalog: validates agent types at submission
        self._recent: OrderedDict[str, tuple[Run, float]] = OrderedDict()
        self.trail: AuditTrail | None = None  # set by the runtime when the audit log runs

    def resolve_model(self, requested: str | None, agent_type: str | None = None) -> str:
        model = requested
        if model is None and self.catalog is not None and agent_type is not None:
            model = self.catalog.get(agent_type).model
        model = model or self.settings.model
        if self.settings.provider_name == "simulated" and not model.startswith("simulated-"):
            model = f"simulated-{model}"
        return model

    async def submit(
        self,
        body: RunCreate,
        *,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        context: RequestContext | None = None,
    ) -> tuple[Run, bool]:
        """Create and enqueue a run. Returns (run, created); created is False on an idempotent replay."""
        digest = request_hash(body)
        if idempotency_key:
            existing = await self._replay(tenant, idempotency_key, digest)
            if existing:
                return existing, False
        params, archive = self._prepare(body)
        run_id = new_id("run")
        try:
            return await self._insert(
                run_id, body, tenant, idempotency_key, digest, params, archive, context
            )
        except _KeyTaken:
            existing = await self._replay(tenant, idempotency_key or "", digest)
            if existing is None:  # pragma: no cover - the key holder was deleted meanwhile
                raise
            return existing, False

    def _prepare(self, body: RunCreate) -> tuple[dict[str, Any], bytes | None]:
        """Validate a submission against the catalog; return (params, tar archive or None)."""
        params: dict[str, Any] = {"metadata": body.metadata}
        if body.max_turns:
            params["max_turns"] = body.max_turns
        if body.timeout_s:
            params["timeout_s"] = body.timeout_s
        archive: bytes | None = None
        if body.workspace is not None:
            spec = body.workspace.model_dump()
            if body.workspace.type == "tar":
                archive = _decode_archive(body.workspace.value or "")
                spec["value"] = None  # the archive is stored beside the run (run_archives)
            params["workspace"] = spec
        if self.catalog is not None:
            self.catalog.get(body.agent_type or self.settings.default_agent_type)  # 422 if unknown
        return params, archive

    def _row(
        self,
        run_id: str,
        body: RunCreate,
        tenant: str,
        idempotency_key: str | None,
        digest: str,
        params: dict[str, Any],
        job_id: int,
    ) -> dict[str, Any]:
        agent_type = body.agent_type or self.settings.default_agent_type
        return {
            "id": run_id,
            "tenant": tenant,
            "agent_type": agent_type,
            "operation": body.operation,
            "prompt": body.prompt,
            "model": self.resolve_model(body.model, agent_type),
            "max_attempts": self.settings.max_attempts,
            "idempotency_key": idempotency_key,
            "request_hash": digest,
            "job_id": job_id,
            "params": params,
            "budget_usd": body.budget_usd,
        }

    async def submit_batch(
        self,
        bodies: list[RunCreate],
        *,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        context: RequestContext | None = None,
    ) -> tuple[list[str], bool]:
        """Create and enqueue many runs in one transaction: all of them or none.

        One multi-row INSERT and one pgqueuer enqueue for the whole batch, so a batch costs about
        as much as a single submission. With an ``Idempotency-Key`` each run is keyed
        ``KEY#index``; a replay of the same batch returns the same ids (created False), and a
        replay with a different body is a 409. Tar workspaces must go through ``POST /v1/runs``.
        """
        digests = [request_hash(b) for b in bodies]
        keys = [f"{idempotency_key}#{i}" for i in range(len(bodies))] if idempotency_key else None
        if keys is not None:
            replayed = await self._replay_batch(tenant, keys, digests)
            if replayed is not None:
                return replayed, False
        prepared = []
        for i, body in enumerate(bodies):
            if body.workspace is not None and body.workspace.type == "tar":
                raise ValidationFailed(
                    "tar workspaces cannot be uploaded in a batch; submit that run alone",
                    errors=[{"field": f"runs.{i}.workspace", "message": "tar not allowed here"}],
                )
            try:
                prepared.append(self._prepare(body)[0])
            except ValidationFailed as exc:  # name the item: runs.3.agent_type
                errors = [
                    {**e, "field": f"runs.{i}.{e['field']}"} for e in exc.extra.get("errors", [])
                ]
                raise ValidationFailed(f"runs.{i}: {exc.detail}", errors=errors) from None
        run_ids = [new_id("run") for _ in bodies]
        try:
            return await self._insert_batch(
                run_ids, bodies, tenant, keys, digests, prepared, context
            )
        except _KeyTaken:
            replayed = await self._replay_batch(tenant, keys or [], digests)
            if replayed is None:  # pragma: no cover - the key holders were deleted meanwhile
                raise IdempotencyConflict("a concurrent batch holds this Idempotency-Key") from None
            return replayed, False

    async def _insert_batch(
        self,
        run_ids: list[str],
        bodies: list[RunCreate],
        tenant: str,
        keys: list[str] | None,
        digests: list[str],
        prepared: list[dict[str, Any]],
        context: RequestContext | None = None,
    ) -> tuple[list[str], bool]:
        async with self.db.transaction() as conn:
            job_ids = await queue.enqueue_runs(conn, run_ids)
            rows = [
                self._row(rid, b, tenant, keys[i] if keys else None, digests[i], params, job)
                for i, (rid, b, params, job) in enumerate(
                    zip(run_ids, bodies, prepared, job_ids, strict=True)
                )
            ]
            inserted = await repo.insert_runs(conn, rows)
            if inserted != len(rows):
                raise _KeyTaken  # rolls back; another request holds these keys
        if self.trail is not None:
            ctx = context or RequestContext()
            for row in rows:
                self.trail.run_created(row, ctx)
        return run_ids, True

    async def _replay_batch(
        self, tenant: str, keys: list[str], digests: list[str]
    ) -> list[str] | None:
        async with self.db.acquire() as conn:
            found = await repo.find_by_idempotency_keys(conn, tenant, keys)
        if not found:
            return None
        if len(found) != len(keys) or any(
            found.get(k, ("", ""))[1] != d for k, d in zip(keys, digests, strict=True)
        ):
            raise IdempotencyConflict(
                f"Idempotency-Key {keys[0].rsplit('#', 1)[0]!r} was already used for a different"
                " batch"
            )
        return [found[k][0] for k in keys]

    async def _insert(
        self,
        run_id: str,
        body: RunCreate,
        tenant: str,
        idempotency_key: str | None,
        digest: str,
        params: dict[str, Any],
        archive: bytes | None,
        context: RequestContext | None = None,
    ) -> tuple[Run, bool]:
        async with self.db.transaction() as conn:
            job_id = await queue.enqueue_run(conn, run_id)
            row = self._row(run_id, body, tenant, idempotency_key, digest, params, job_id)
            run = await repo.insert_run(conn, row)
            if run is None:  # lost a race for this key: roll back our job, answer with theirs
                raise _KeyTaken
            if archive is not None:
                await repo.save_archive(conn, run_id, archive)
        if self.trail is not None:
            self.trail.run_created(row, context or RequestContext())
        return run, True

    async def _replay(self, tenant: str, key: str, digest: str) -> Run | None:
        async with self.db.acquire() as conn:
            found = await repo.find_by_idempotency_key(conn, tenant, key)
        if found is None:
            return None
        run, stored = found
        if stored != digest:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for run {run.id} with a different body"
            )
        return run

    async def get(self, run_id: str, tenant: str | None = DEFAULT_TENANT) -> Run:
        async with self.db.acquire() as conn:
            run = await repo.get_run(conn, run_id, tenant)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        self._remember(run)
        return run

    async def get_or_cached(
        self, run_id: str, tenant: str | None = DEFAULT_TENANT
    ) -> tuple[Run, float | None]:
        """(run, None) from Postgres; while the database is down, (last copy read, its age).

        Reads keep answering through a database outage with what this process last saw; the
        age lets the caller say so (``Cache-Status``, ``Age``). Writes still get 503.
        """
        try:
            return await self.get(run_id, tenant), None
        except Unavailable:
            cached = self._recent.get(run_id)
            if cached is None or (tenant is not None and cached[0].tenant != tenant):
                raise
            return cached[0], time.monotonic() - cached[1]

    def _remember(self, run: Run) -> None:
        self._recent[run.id] = (run, time.monotonic())
        self._recent.move_to_end(run.id)
        while len(self._recent) > RECENT_RUNS:
            self._recent.popitem(last=False)

    async def list_page(self, f: RunFilter, tenant: str | None = DEFAULT_TENANT) -> RunPage:
        async with self.db.acquire() as conn:
            items = await repo.list_runs(conn, tenant, f)
        cursor = items[-1].id if len(items) == f.limit else None
        return RunPage(items=items, next_cursor=cursor)

    async def cancel(
        self,
        run_id: str,
        tenant: str | None = DEFAULT_TENANT,
        context: RequestContext | None = None,
    ) -> Run:
        """Cancel a queued run at once; ask the worker holding a running run to stop."""
        async with self.db.transaction() as conn:
            run = await repo.get_run(conn, run_id, tenant)
            if run is None:
                raise NotFound(f"run {run_id} not found")
            if run.status.terminal:
                raise InvalidState(f"run {run_id} is already {run.status.value}")
            job_id = await conn.fetchval("SELECT job_id FROM runs WHERE id = $1 FOR UPDATE", run_id)
            finished: Run | None = None
            if run.status is RunStatus.queued:
                finished = await repo.finish(
                    conn, run_id, RunStatus.cancelled, error="cancelled before it started"
                )
            else:
                await repo.request_cancel(conn, run_id)
                await repo.append_event(conn, run_id, "cancel_requested", {})
            if job_id is not None:
                await queue.cancel_jobs(conn, [int(job_id)])
        if finished is not None:
            record_outcome(finished)
        result = finished or await self.get(run_id, tenant)
        if self.trail is not None:
            self.trail.run_cancelled(result, context or RequestContext())
        return result

    async def diff(self, run_id: str, tenant: str | None = DEFAULT_TENANT) -> str | None:
        """The unified diff of the run's workspace; None until the run has produced one."""
        async with self.db.acquire() as conn:
            try:
                return await repo.get_diff(conn, run_id, tenant)
            except LookupError:
                raise NotFound(f"run {run_id} not found") from None

    async def events(
        self, run_id: str, tenant: str | None = DEFAULT_TENANT, after: int = 0, limit: int = 1000
    ) -> list[RunEvent]:
        await self.get(run_id, tenant)
        async with self.db.acquire() as conn:
            return await repo.list_events(conn, run_id, after, limit)

    async def wait(self, run_id: str, timeout: float, tenant: str | None = DEFAULT_TENANT) -> Run:
        """Return the run once it is terminal, or as it stands when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        with self._subscribe(run_id) as changed:
            while True:
                run = await self.get(run_id, tenant)
                remaining = deadline - time.monotonic()
                if run.status.terminal or remaining <= 0:
                    return run
                await self._wait_change(changed, min(remaining, 1.0))

    async def follow(
        self, run_id: str, after: int = 0, tenant: str | None = DEFAULT_TENANT
    ) -> AsyncIterator[RunEvent]:
        """Yield events after ``after`` as they are written; end once the run is terminal."""
        await self.get(run_id, tenant)
        with self._subscribe(run_id) as changed:
            while True:
                async with self.db.acquire() as conn:
                    batch = await repo.list_events(conn, run_id, after, 500)
                    run = await repo.get_run(conn, run_id)
                for event in batch:
                    after = event.id
                    yield event
                if len(batch) == 500:
                    continue
                if run is None or run.status.terminal:
                    async with self.db.acquire() as conn:
                        tail = await repo.list_events(conn, run_id, after, 500)
                    for event in tail:
                        yield event
                    return
                await self._wait_change(changed, 1.0)

    def _subscribe(self, run_id: str) -> Any:
        import contextlib

        if self.hub is None:
            return contextlib.nullcontext(None)
        return self.hub.subscribe(run_id)

    @staticmethod
    async def _wait_change(changed: asyncio.Event | None, timeout: float) -> None:
        if changed is None:
            await asyncio.sleep(min(timeout, 0.25))
            return
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass
        changed.clear()
