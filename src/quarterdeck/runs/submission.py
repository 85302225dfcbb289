"""Run submission: validation, idempotency, and group-committed inserts with their jobs.

A run and its pgqueuer job are committed in one transaction. Concurrent single submissions
share that transaction (see :mod:`quarterdeck.kit.coalesce`): pgqueuer's enqueue sends a NOTIFY,
and Postgres serialises every notifying commit behind one lock, so one commit per submission
capped the API near one submission per fsync. A tar workspace's bytes are decoded and checked
in :mod:`.workspace_upload` first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from quarterdeck.config import Settings
from quarterdeck.exceptions import (
    IdempotencyConflict,
    StoreError,
    Unavailable,
    ValidationFailed,
)
from quarterdeck.kit.coalesce import Coalescer
from quarterdeck.kit.ids import new_id
from quarterdeck.runs.config_routes import UNROUTED, Assignment, ConfigRoutes, assign
from quarterdeck.runs.models import Run, RunCreate
from quarterdeck.runs.store_protocol import KeyTaken, RunStore
from quarterdeck.runs.workspace_upload import MAX_ARCHIVE_BYTES as MAX_ARCHIVE_BYTES
from quarterdeck.runs.workspace_upload import decode_archive
from quarterdeck.security.trail import AuditTrail, RequestContext
from quarterdeck.tracing.propagation import trace_to_store

DEFAULT_TENANT = "default"


def request_hash(body: RunCreate) -> str:
    """What an idempotent replay compares: the same key with another body is a 409. Only
    computed (and stored) for keyed submissions; nothing else reads it."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def batch_hash(bodies: list[RunCreate]) -> str:
    """The fingerprint of a whole batch, stored on each of its runs: a replay under the same key
    must be the same batch, so a shorter, longer or reordered one is a 409, never a replay of
    the runs it shares with the first."""
    canonical = json.dumps(
        [b.model_dump(mode="json") for b in bodies], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(f"batch:{canonical}".encode()).hexdigest()


class AgentTypes(Protocol):
    """What submission needs of the agent catalog: an agent type by name (422 if unknown), and
    whether this deployment can run it now (None, or why not and how to fix it)."""

    def get(self, name: str) -> AgentDefaults: ...

    def unavailable_reason(self, name: str) -> str | None: ...

    def version(self, name: str, settings: Mapping[str, Any]) -> str:
        """The configuration version of type ``name`` with ``settings`` applied."""
        ...


class AgentDefaults(Protocol):
    @property
    def model(self) -> str | None: ...

    @property
    def budget_usd(self) -> float | None: ...

    @property
    def runner(self) -> str: ...


class Submissions:
    """Creating runs: the write side that :class:`~quarterdeck.runs.service.RunService` holds."""

    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        catalog: AgentTypes | None = None,
        *,
        trail: AuditTrail | None = None,
        routes: ConfigRoutes | None = None,
    ) -> None:
        """``routes``: the agent-configuration canaries' routing (None: YAML only)."""
        self.settings = settings
        self.store = store
        self.catalog = catalog  # validates agent types at submission
        self.trail = trail
        self.routes = routes
        self.submits: Coalescer[tuple[dict[str, Any], bytes | None], Run] = Coalescer(
            self.store.create, max_batch=100, fatal=(Unavailable, StoreError)
        )

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
        digest = request_hash(body) if idempotency_key else None
        if idempotency_key:
            existing = await self._replay(tenant, idempotency_key, digest)
            if existing:
                return existing, False
        params, archive = self._prepare(body)
        trace = trace_to_store()
        if trace is not None:
            params["trace"] = trace
        await self._require_available([body])
        run_id = new_id("run")
        routed = await self._assign(run_id, body, params)
        try:
            return await self._insert(
                run_id, body, tenant, idempotency_key, digest, params, archive, context, routed
            )
        except KeyTaken:
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
                archive = decode_archive(body.workspace.value or "")
                spec["value"] = None  # the archive is stored beside the run (run_archives)
            params["workspace"] = spec
        if self.catalog is not None:
            self.catalog.get(body.agent_type or self.settings.default_agent_type)  # 422 if unknown
        return params, archive

    async def _require_available(self, bodies: list[RunCreate], *, batch: bool = False) -> None:
        """422 for a run of a type this deployment cannot run now (a claude-code type without its
        CLI): refused here, saying how to fix it, not failed later on a worker. Native types are
        always runnable; the others are checked off the event loop (the first check runs the
        CLI's ``--version``)."""
        if self.catalog is None:
            return
        reasons: dict[str, str | None] = {}
        for i, body in enumerate(bodies):
            name = body.agent_type or self.settings.default_agent_type
            if name not in reasons:
                native = self.catalog.get(name).runner == "native"
                reasons[name] = (
                    None
                    if native
                    else await asyncio.to_thread(self.catalog.unavailable_reason, name)
                )
            reason = reasons[name]
            if reason is not None:
                field = f"runs.{i}.agent_type" if batch else "agent_type"
                raise ValidationFailed(
                    f"{field}: agent type {name!r} is unavailable on this deployment: {reason}",
                    errors=[{"field": field, "message": f"unavailable: {reason}"}],
                )

    async def _assign(self, run_id: str, body: RunCreate, params: dict[str, Any]) -> Assignment:
        """The run's configuration when its type has a canary (see ``config_routes``); the
        settings go into ``params`` so every worker that runs it applies the same ones."""
        if self.routes is None:
            return UNROUTED
        route = await self.routes.route(body.agent_type or self.settings.default_agent_type)
        pinned = frozenset(
            name
            for name, value in (
                ("model", body.model),
                ("max_turns", body.max_turns),
                ("timeout_s", body.timeout_s),
                ("budget_usd", body.budget_usd),
            )
            if value is not None
        )
        routed = assign(run_id, route, pinned)
        if routed.settings:
            params["agent_config"] = dict(routed.settings)
        return routed

    def _row(
        self,
        run_id: str,
        body: RunCreate,
        tenant: str,
        idempotency_key: str | None,
        digest: str | None,
        params: dict[str, Any],
        context: RequestContext | None,
        routed: Assignment = UNROUTED,
    ) -> dict[str, Any]:
        """The ``runs`` row to insert; the store fills in ``job_id`` when it enqueues. The
        submitting key is kept so the key's budget holds the run's calls too. ``routed``: the
        canary's settings override the type's model and budget (the request's own still win)."""
        agent_type = body.agent_type or self.settings.default_agent_type
        settings = routed.settings
        model = body.model if body.model is not None else settings.get("model")
        budget = body.budget_usd
        if budget is None:
            budget = settings.get("budget_usd", self.resolve_budget(None, agent_type))
        return {
            "id": run_id,
            "tenant": tenant,
            "agent_type": agent_type,
            "operation": body.operation,
            "prompt": body.prompt,
            "model": self.resolve_model(model, agent_type),
            "max_attempts": self.settings.max_attempts,
            "idempotency_key": idempotency_key,
            "request_hash": digest,
            "job_id": 0,
            "params": params,
            "budget_usd": budget,
            "key_id": context.key_id if context is not None else None,
            "config_version": (
                self.catalog.version(agent_type, settings) if self.catalog is not None else None
            ),
            "canary_id": routed.canary_id,
            "canary_arm": routed.arm,
        }

    def resolve_budget(self, requested: float | None, agent_type: str) -> float | None:
        """The run's own budget: the request's, else its agent type's. Stored on the run, so the
        budget reservation before each model call (``budgets.holds``) enforces it."""
        if requested is None and self.catalog is not None:
            return self.catalog.get(agent_type).budget_usd
        return requested

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
        ``KEY#index`` and stores the fingerprint of the whole batch; a replay of the same batch
        returns the same ids (created False), and any other batch under that key (another body,
        fewer or more runs) is a 409. Tar workspaces must go through ``POST /v1/runs``.
        """
        keys = [f"{idempotency_key}#{i}" for i in range(len(bodies))] if idempotency_key else None
        digest = batch_hash(bodies) if keys else None
        digests: list[str | None] = [digest] * len(bodies)
        if keys is not None:
            replayed = await self._replay_batch(tenant, keys, digests)
            if replayed is not None:
                return replayed, False
        prepared = []
        trace = trace_to_store()
        for i, body in enumerate(bodies):
            if body.workspace is not None and body.workspace.type == "tar":
                raise ValidationFailed(
                    "tar workspaces cannot be uploaded in a batch; submit that run alone",
                    errors=[{"field": f"runs.{i}.workspace", "message": "tar not allowed here"}],
                )
            try:
                params = self._prepare(body)[0]
            except ValidationFailed as exc:  # name the item: runs.3.agent_type
                errors = [
                    {**e, "field": f"runs.{i}.{e['field']}"} for e in exc.extra.get("errors", [])
                ]
                raise ValidationFailed(f"runs.{i}: {exc.detail}", errors=errors) from None
            if trace is not None:
                params["trace"] = trace  # one request, one trace: shared, never mutated
            prepared.append(params)
        await self._require_available(bodies, batch=True)
        run_ids = [new_id("run") for _ in bodies]
        routed = [
            await self._assign(r, b, p) for r, b, p in zip(run_ids, bodies, prepared, strict=True)
        ]
        try:
            return await self._insert_batch(
                run_ids, bodies, tenant, keys, digests, prepared, context, routed
            )
        except KeyTaken:
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
        digests: list[str | None],
        prepared: list[dict[str, Any]],
        context: RequestContext | None = None,
        routed: list[Assignment] | None = None,
    ) -> tuple[list[str], bool]:
        rows = [
            self._row(
                rid, b, tenant, keys[i] if keys else None, digests[i], params, context,
                routed[i] if routed else UNROUTED,
            )
            for i, (rid, b, params) in enumerate(zip(run_ids, bodies, prepared, strict=True))
        ]  # fmt: skip
        await self.store.create_batch(rows)  # KeyTaken: another request holds these keys
        if self.trail is not None:
            ctx = context or RequestContext()
            for row in rows:
                self.trail.run_created(row, ctx)
        return run_ids, True

    async def _replay_batch(
        self, tenant: str, keys: list[str], digests: list[str | None]
    ) -> list[str] | None:
        found = await self.store.find_by_idempotency_keys(tenant, keys)
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
        digest: str | None,
        params: dict[str, Any],
        archive: bytes | None,
        context: RequestContext | None = None,
        routed: Assignment = UNROUTED,
    ) -> tuple[Run, bool]:
        row = self._row(run_id, body, tenant, idempotency_key, digest, params, context, routed)
        # Group-committed with concurrent submissions: one transaction, one enqueue. A key that
        # another request holds fails the whole transaction (so no job is left without its
        # run); the coalescer then retries each submission alone and only that one sees KeyTaken.
        run = await self.submits.submit((row, archive))
        if self.trail is not None:
            self.trail.run_created(row, context or RequestContext())
        return run, True

    async def _replay(self, tenant: str, key: str, digest: str | None) -> Run | None:
        found = await self.store.find_by_idempotency_key(tenant, key)
        if found is None:
            return None
        run, stored = found
        if stored != digest:
            raise IdempotencyConflict(
                f"Idempotency-Key {key!r} was already used for run {run.id} with a different body"
            )
        return run
