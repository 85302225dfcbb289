"""Rollout use-cases every API replica serves: start, read, promote, abort, export.

Why the service never talks to Kubernetes: only the leader's controller does (two replicas
moving one canary's weight would fight). A person's ``promote`` or ``abort`` runs the pure
machine on the stored state under ``SELECT … FOR UPDATE`` and stores the actions it decides as
*pending*; the controller carries them out on its next tick, and a controller killed before
that leaves them for the next leader. The row is the only truth, so any replica answers reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from quarterdeck.exceptions import Conflict, InvalidState, NotFound, ValidationFailed
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import is_id, new_id
from quarterdeck.rollouts import argo, canary_repository, conditions, machine, queries
from quarterdeck.rollouts import repository as repo
from quarterdeck.rollouts.canary_spec import TARGET_PREFIX, AgentCanarySpec
from quarterdeck.rollouts.models import (
    CanaryCreate,
    Rollout,
    RolloutCreate,
    RolloutDetail,
    RolloutEvent,
    RolloutPage,
)
from quarterdeck.rollouts.spec import Analysis, MetricCheck, RolloutSpec, checked_steps
from quarterdeck.store.pool import Database

if TYPE_CHECKING:
    from quarterdeck.agents.templates import AgentCatalog
    from quarterdeck.rollouts.routing import CanaryRouter

__all__ = ["MAX_PAGE", "RolloutService", "rollout_of", "spec_of"]

MAX_PAGE = 200
_FIELD = re.compile(r"^(steps\[\d+\]\.\w+|steps|analysis\.\w+|stable_soak|target)\b")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _field_of(message: str) -> str:
    """The request field a ``RolloutSpec.validate`` message is about."""
    match = _FIELD.match(message)
    if match:
        return match.group(1)
    return "steps" if "step" in message else "analysis" if "analysis" in message else "spec"


def spec_of(body: RolloutCreate) -> RolloutSpec:
    """The frozen plan from the request; ``ValidationFailed`` names the first bad field."""
    steps = checked_steps(body.steps, body.pauses)
    checks: list[MetricCheck] = []
    for i, c in enumerate(body.checks):
        for kind, text in (("success", c.success), ("failure", c.failure)):
            if text is not None:
                try:
                    conditions.validate(text)
                except ValueError as exc:
                    raise _invalid(f"checks[{i}].{kind}", str(exc)) from exc
        try:
            queries.render_check(c.query, "canary")
        except ValueError as exc:
            raise _invalid(f"checks[{i}].query", str(exc)) from exc
        checks.append(MetricCheck(c.name, c.query, c.success, c.failure))
    if len({c.name for c in checks}) != len(checks):
        raise _invalid("checks", "check names must be unique")
    spec = RolloutSpec(
        target=body.target,
        image=body.image,
        strategy=body.strategy,
        steps=steps,
        analysis=Analysis(
            interval_s=body.analysis_interval_s,
            max_error_rate=body.max_error_rate,
            max_latency_p95_s=body.max_latency_p95_s,
            min_throughput_ratio=body.min_throughput_ratio,
            min_samples=body.min_samples,
            max_extensions=body.max_extensions,
            checks=tuple(checks),
        ),
        traffic=body.traffic,
        stable_soak_s=body.stable_soak_s,
    )
    try:
        spec.validate()
    except ValueError as exc:
        raise _invalid(_field_of(str(exc)), str(exc)) from exc
    return spec


def rollout_of(row: asyncpg.Record, now: datetime) -> Rollout:
    """A stored row as the API shows it (``remaining_pause_s`` as of ``now``)."""
    spec = repo.spec_from_json(row["spec"])
    state = repo.state_of(row)
    return Rollout(
        id=row["id"],
        kind=row["kind"],
        target=row["target"],
        image=row["image"],
        strategy=row["strategy"],
        traffic=row["traffic_mode"] or spec.traffic,
        phase=state.phase,
        step_index=state.step_index,
        steps=len(spec.steps),
        weight=state.weight,
        effective_weight=row["effective_weight"],
        split=row["split"],
        pause_reason=state.pause_reason,
        remaining_pause_s=machine.remaining_pause_s(spec, state, now.timestamp()),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        spec=row["spec"],
        last_analysis=row["last_analysis"],
    )


def _started(spec: repo.AnyPlan) -> str:
    if isinstance(spec, AgentCanarySpec):
        changes = ", ".join(f"{k}={v!r}" for k, v in spec.changes().items())
        return (
            f"canary of agent type {spec.agent_type} started: {changes} "
            f"({spec.version} against {spec.stable_version})"
        )
    return f"rollout of {spec.target} to {spec.image} started"


class RolloutService:
    def __init__(
        self,
        db: Database,
        *,
        catalog: AgentCatalog | None = None,
        router: CanaryRouter | None = None,
        controller_enabled: bool = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``catalog``: the agent types, for agent-configuration canaries (None: refused);
        ``router``: this process's routes, re-read at once after a canary changes here;
        ``controller_enabled``: whether this deployment runs the rollout controller."""
        self.db = db
        self.catalog, self.router = catalog, router
        self.controller_enabled = controller_enabled
        self.clock = clock

    async def start(self, body: RolloutCreate, *, by: str | None) -> Rollout:
        """Store a new rollout at its first step; the controller applies the first weight."""
        return await self._start(spec_of(body), by=by)

    async def start_canary(self, body: CanaryCreate, *, by: str | None) -> Rollout:
        """A share of new runs of ``body.agent_type`` gets the candidate settings from now on
        (every replica's router within seconds); the controller judges how their runs end."""
        from quarterdeck.rollouts.canary_plan import canary_of

        if self.catalog is None:
            raise InvalidState("agent-configuration canaries need the agent catalog here")
        async with self.db.acquire() as conn:
            newest = await canary_repository.newest_canaries(
                conn, f"{TARGET_PREFIX}{body.agent_type}"
            )
        spec = canary_of(body, self.catalog, newest[0] if newest else None)
        if not self.controller_enabled:
            # After the request is validated (a bad one is a 422 either way). Unlike a
            # Deployment rollout, which waits for a controller, a canary's share applies at
            # submission at once: without a controller nothing would ever judge it.
            raise InvalidState(
                "agent-configuration canaries need the rollout controller: set "
                "QUARTERDECK_ROLLOUTS_ENABLED=true on this deployment's API processes"
            )
        rollout = await self._start(spec, by=by)
        if self.router is not None:
            self.router.forget()
        return rollout

    async def _start(self, spec: repo.AnyPlan, *, by: str | None) -> Rollout:
        now = self.clock()
        state, actions = machine.start(spec, now.timestamp())
        rollout_id = new_id("ro")
        try:
            async with self.db.transaction() as conn:
                row = await repo.insert_rollout(
                    conn,
                    rollout_id=rollout_id,
                    spec=spec,
                    state=state,
                    pending=repo.queue([], actions),
                    created_by=by,
                )
                await repo.append_event(
                    conn,
                    rollout_id,
                    "started",
                    _started(spec) + (f" by {by}" if by else ""),
                    {
                        "by": by,
                        "steps": [s.weight for s in spec.steps],
                        "spec_hash": state.spec_hash,
                    },
                    at=now,
                )
        except asyncpg.UniqueViolationError as exc:
            async with self.db.acquire() as conn:
                live = await repo.live_rollout_of(conn, spec.target)
            raise Conflict(
                f"a rollout of {spec.target} is already in progress ({live}); "
                "promote or abort it first",
                extra={"rollout_id": live},
            ) from exc
        return rollout_of(row, now)

    async def get(self, rollout_id: str) -> RolloutDetail:
        if not is_id(rollout_id, "ro"):
            raise NotFound(f"rollout {rollout_id} not found")
        async with self.db.acquire() as conn:
            row = await repo.get_rollout(conn, rollout_id)
            if row is None:
                raise NotFound(f"rollout {rollout_id} not found")
            events = await repo.list_events(conn, rollout_id)
        rollout = rollout_of(row, self.clock())
        return RolloutDetail(
            **rollout.model_dump(),
            events=[RolloutEvent.model_validate(dict(e)) for e in events],
        )

    async def list(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        live_only: bool = False,
        kind: str | None = None,
    ) -> RolloutPage:
        """Newest first; ``cursor`` is the id of the last item of the previous page."""
        if not 1 <= limit <= MAX_PAGE:
            raise _invalid("limit", f"must be between 1 and {MAX_PAGE}")
        if cursor is not None and not is_id(cursor, "ro"):
            raise _invalid("cursor", "malformed: pass next_cursor from the previous page")
        async with self.db.acquire() as conn:
            rows = await repo.list_rollouts(
                conn, limit=limit, before_id=cursor, live_only=live_only, kind=kind
            )
        now = self.clock()
        items = [rollout_of(r, now) for r in rows]
        return RolloutPage(items=items, next_cursor=items[-1].id if len(items) == limit else None)

    async def promote(self, rollout_id: str, *, full: bool, by: str | None) -> Rollout:
        """The next step (or with ``full`` full promotion) now; ``InvalidState`` (409) when the
        machine refuses (soaking, spec changed) or the rollout is finished."""

        def decide(spec: machine.Plan, state: machine.RolloutState, now: float) -> Any:
            return machine.promote(spec, state, now, full=full)

        what = "fully promoted" if full else "promoted to the next step"
        return await self._person(rollout_id, decide, "promoted", what, by, {"full": full})

    async def abort(self, rollout_id: str, *, reason: str, by: str | None) -> Rollout:
        """Traffic back to the stable version (no incident: a person decided)."""

        def decide(spec: machine.Plan, state: machine.RolloutState, now: float) -> Any:
            return machine.abort(spec, state, now, reason)

        return await self._person(
            rollout_id, decide, "aborted", f"aborted: {reason}", by, {"reason": reason}
        )

    def export_argo(self, rollout: Rollout) -> str:
        """The same plan as Argo Rollouts manifests (``Rollout`` + ``AnalysisTemplate``s), as one
        YAML document: a ``v1`` ``List`` of them, which ``kubectl apply -f`` takes as it is and
        which any YAML reader parses (a multi-document stream is not one value)."""
        spec = repo.spec_from_json(rollout.spec)
        if isinstance(spec, AgentCanarySpec):
            raise InvalidState(
                "an agent-configuration canary has no Argo Rollouts equivalent: Argo moves "
                "traffic between Pods, not runs between configurations"
            )
        return argo.to_yaml([{"apiVersion": "v1", "kind": "List", "items": argo.export_argo(spec)}])

    async def _person(
        self,
        rollout_id: str,
        decide: Callable[[machine.Plan, machine.RolloutState, float], machine.Transition],
        kind: str,
        what: str,
        by: str | None,
        data: dict[str, Any],
    ) -> Rollout:
        if not is_id(rollout_id, "ro"):
            raise NotFound(f"rollout {rollout_id} not found")
        now = self.clock()
        async with self.db.transaction() as conn:
            row = await repo.get_rollout(conn, rollout_id, lock=True)
            if row is None:
                raise NotFound(f"rollout {rollout_id} not found")
            spec, state = repo.spec_from_json(row["spec"]), repo.state_of(row)
            if state.terminal:
                raise InvalidState(f"rollout {rollout_id} is already {state.phase}")
            new, actions = decide(spec, state, now.timestamp())
            pending = repo.queue(list(row["pending"]), actions)
            await repo.save_state(conn, rollout_id, new, pending)
            message = f"{what}" + (f" by {by}" if by else "")
            payload = {**data, "by": by, "phase": new.phase, "step_index": new.step_index}
            await repo.append_event(conn, rollout_id, kind, message, payload, at=now)
            row = await repo.get_rollout(conn, rollout_id)
        assert row is not None
        if row["kind"] == AgentCanarySpec.kind and self.router is not None:
            self.router.forget()
        return rollout_of(row, now)
