"""The rollout controller: every interval, on the leader only, apply, measure, decide, apply.

Why leader-only: two processes moving one canary's weight fight, and two that both roll back
open two incidents. Every API replica may run a :class:`RolloutController`; only the one whose
elector leads (advisory lock ``locks.ROLLOUTS``, or the ``quarterdeck-rollouts`` Lease) ticks.

Why everything goes through the row: the controller keeps nothing it needs in memory. The
machine's state, the frozen spec and the *pending* actions (decided, not yet carried out) are
stored together, so a controller killed between deciding and acting, or a new leader, applies
what is pending and continues from the stored step and pause time. An action leaves the pending
list in the same transaction that records it done; one that fails (the Kubernetes API refused)
is an ``error`` event and stays pending for the next tick. Nothing a rollout does crashes the
loop, and one broken rollout does not stop the others.

Each tick, per rollout: (1) apply pending actions; (2) measure the step through Prometheus
(an error is no result: the machine extends, then pauses, never passes); (3) ``machine.tick``,
storing the new state, an ``analysis`` event and the new actions in one transaction, then apply
them at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from quarterdeck.health.leader import Elector
from quarterdeck.health.loop import LeaderLoop
from quarterdeck.incidents.models import Severity, Source
from quarterdeck.incidents.service import IncidentService
from quarterdeck.kit.clock import utcnow
from quarterdeck.rollouts import canary_repository, machine
from quarterdeck.rollouts import repository as repo
from quarterdeck.rollouts.actuator import ActuatorFactory, TrafficActuator
from quarterdeck.rollouts.analysis import AnalysisResult
from quarterdeck.rollouts.canary_spec import AgentCanarySpec
from quarterdeck.rollouts.config_analysis import ArmSample, judge_config
from quarterdeck.rollouts.machine import (
    Action,
    CleanupOld,
    OpenIncident,
    PromoteFully,
    Rollback,
    RolloutState,
    SetWeight,
)
from quarterdeck.rollouts.prometheus import ANALYSES, ERRORS, Prometheus, clear, show
from quarterdeck.rollouts.repository import AnyPlan
from quarterdeck.rollouts.spec import RolloutSpec
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

__all__ = ["RolloutController", "TrafficActuator", "analysis_window"]

_PODS = re.compile(r"(\d+) canary of (\d+) pods")


def analysis_window(spec: AnyPlan, state: RolloutState, now: float) -> float:
    """Seconds of history to judge: since the step (or extension, or soak) began, capped at
    what the machine is waiting for, at least one second."""
    interval = spec.analysis.interval_s
    cap = interval
    if state.phase == "soaking":
        cap = max(spec.stable_soak_s, interval)
    elif state.phase == "progressing" and not state.extensions:
        cap = spec.steps[state.step_index].pause_s or interval
    return max(1.0, min(now - state.step_started_at, cap))


def effective_weight(mode: str | None, weight: int, split: str | None) -> float:
    """The canary's real share: the weight behind nginx, the pod share by replicas (read from
    the actuator's ``describe_split`` line)."""
    match = _PODS.search(split or "") if mode == "replicas" else None
    if match is None:
        return float(weight)
    canary, total = int(match.group(1)), int(match.group(2))
    return 100.0 * canary / total if total else 0.0


class RolloutController(LeaderLoop):
    """One process's controller loop; it acts only while ``elector`` says this process leads."""

    name = "rollouts"

    def __init__(
        self,
        db: Database,
        elector: Elector,
        actuators: ActuatorFactory,
        incidents: IncidentService,
        *,
        prometheus: Prometheus | None,
        interval_s: float = 15.0,
        own_elector: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(elector, interval_s=interval_s, own_elector=own_elector)
        self.db, self.actuators = db, actuators
        self.incidents, self.prometheus = incidents, prometheus
        self.clock = clock
        self._leading = False
        self._actuator_cache: dict[str, TrafficActuator] = {}
        self._last_recorded: dict[str, float] = {}  # rollout id -> last analysis event (epoch)

    # -- the loop (LeaderLoop runs it) --------------------------------------------------------
    def on_tick_error(self) -> None:
        ERRORS.inc()

    async def on_stopped(self) -> None:
        self._step_down()
        if self.prometheus is not None:
            await self.prometheus.aclose()

    async def tick(self) -> int:
        """One pass over the work list; returns how many rollouts were looked at (0 when not
        leading)."""
        if not self.elector.is_leader:
            if self._leading:
                log.info("rollouts.leadership_lost")
                self._step_down()
            return 0
        if not self._leading:
            self._leading = True
            log.info("rollouts.leadership_gained")
        async with self.db.acquire() as conn:
            ids = await repo.work_list(conn)
        for rollout_id in ids:
            try:
                await self.reconcile(rollout_id)
            except Exception as exc:
                ERRORS.inc()
                log.exception("rollouts.reconcile_failed", rollout=rollout_id)
                with contextlib.suppress(Exception):
                    await self._event(rollout_id, "error", f"reconcile failed: {_detail(exc)}")
        return len(ids)

    def _step_down(self) -> None:
        self._leading = False
        self._actuator_cache.clear()
        self._last_recorded.clear()
        clear()

    # -- one rollout ----------------------------------------------------------------------------
    async def reconcile(self, rollout_id: str) -> None:
        if not await self._apply_pending(rollout_id):
            return  # an action failed: no judging a step whose traffic is not what it should be
        async with self.db.acquire() as conn:
            row = await repo.get_rollout(conn, rollout_id)
        assert row is not None
        spec, state = repo.spec_from_json(row["spec"]), repo.state_of(row)
        if state.terminal:
            show(spec.target, state.phase, state.weight)
            self._actuator_cache.pop(rollout_id, None)
            return
        now = self.clock()
        weight = 100.0 if state.phase == "soaking" else float(state.weight)
        if row["traffic_mode"] == "replicas" and row["effective_weight"] is not None:
            weight = float(row["effective_weight"])
        result, raw = await self._measure(rollout_id, spec, state, weight, now.timestamp())
        ANALYSES.labels(spec.target, result.verdict if result else "error").inc()
        new, actions = machine.tick(spec, state, now.timestamp(), result)
        await self._record(rollout_id, spec, state, new, actions, result, raw, now)
        show(spec.target, new.phase, new.weight)
        if actions:
            await self._apply_pending(rollout_id)

    async def _measure(
        self, rollout_id: str, spec: AnyPlan, state: RolloutState, weight: float, now: float
    ) -> tuple[AnalysisResult | None, dict[str, Any]]:
        if isinstance(spec, AgentCanarySpec):
            return await self._measure_runs(rollout_id, spec)
        window = analysis_window(spec, state, now)
        if self.prometheus is None:
            return None, {"window_s": window, "error": "no Prometheus configured"}
        try:
            return await self.prometheus.analyse(spec, weight=weight, window_s=window)
        except Exception as exc:
            log.warning("rollouts.analysis_failed", target=spec.target, error=_detail(exc))
            return None, {"window_s": window, "error": _detail(exc)}

    async def _measure_runs(
        self, rollout_id: str, spec: AgentCanarySpec
    ) -> tuple[AnalysisResult | None, dict[str, Any]]:
        """An agent-configuration canary: every run of each arm finished since it started."""
        try:
            async with self.db.acquire() as conn:
                arms = await canary_repository.arm_samples(conn, rollout_id)
        except Exception as exc:
            log.warning("rollouts.arms_unreadable", target=spec.target, error=_detail(exc))
            return None, {"error": _detail(exc)}
        stable, candidate = arm_sample(arms.get("stable")), arm_sample(arms.get("candidate"))
        raw = {"arms": {"stable": dataclasses.asdict(stable),
                        "candidate": dataclasses.asdict(candidate)}}  # fmt: skip
        return judge_config(spec.analysis, stable, candidate), raw

    async def _record(
        self,
        rollout_id: str,
        spec: AnyPlan,
        state: RolloutState,
        new: RolloutState,
        actions: list[Action],
        result: AnalysisResult | None,
        raw: dict[str, Any],
        now: datetime,
    ) -> None:
        """State, analysis event and new pending actions in one transaction, unless a person
        changed the rollout since it was read (then the next tick judges the new state)."""
        analysis = {"verdict": result.verdict if result else None, **raw}
        if result is not None:
            analysis["reason"] = result.reason
            analysis["samples"], analysis["required"] = result.samples, result.required
            analysis["measurements"] = [
                {"name": m.name, "value": m.value, "limit": m.limit, "verdict": m.verdict,
                 "detail": m.detail}
                for m in result.measurements
            ]  # fmt: skip
        analysis["at"] = now.isoformat()
        changed = new is not state
        ts = now.timestamp()
        due = ts - self._last_recorded.get(rollout_id, float("-inf")) >= spec.analysis.interval_s
        async with self.db.transaction() as conn:
            row = await repo.get_rollout(conn, rollout_id, lock=True)
            if row is None or repo.state_of(row) != state:
                return
            if changed or actions:
                pending = repo.queue(list(row["pending"]), actions)
                await repo.save_state(conn, rollout_id, new, pending, last_analysis=analysis)
            else:
                await repo.set_last_analysis(conn, rollout_id, analysis)
            if changed or due:
                verdict = analysis["verdict"] or "no result"
                why = result.reason if result else raw.get("error", "")
                await repo.append_event(
                    conn, rollout_id, "analysis", f"{verdict}: {why}", analysis, at=now
                )
                self._last_recorded[rollout_id] = ts
            if changed:
                kind, message = _transition(spec, state, new)
                await repo.append_event(
                    conn,
                    rollout_id,
                    kind,
                    message,
                    {"phase": new.phase, "step_index": new.step_index, "weight": new.weight},
                    at=now,
                )

    # -- actions --------------------------------------------------------------------------------
    async def _apply_pending(self, rollout_id: str) -> bool:
        """Carry out pending actions in order; False when one failed (it stays pending)."""
        for _ in range(20):  # a bound, never reached: each pass removes one action
            async with self.db.acquire() as conn:
                row = await repo.get_rollout(conn, rollout_id)
            if row is None:
                return False
            pending: list[dict[str, Any]] = list(row["pending"])
            if not pending:
                return True
            head = pending[0]
            spec = repo.spec_from_json(row["spec"])
            try:
                action = repo.action_from_json(head)
                found = await self._apply(rollout_id, row["traffic_mode"], spec, action)
            except Exception as exc:
                ERRORS.inc()
                log.warning("rollouts.action_failed", rollout=rollout_id, action=head,
                            error=_detail(exc))  # fmt: skip
                await self._event(
                    rollout_id, "error", f"{head['type']} failed: {_detail(exc)}", {"action": head}
                )
                return False
            async with self.db.transaction() as conn:
                locked = await repo.get_rollout(conn, rollout_id, lock=True)
                assert locked is not None
                left: list[dict[str, Any]] = list(locked["pending"])
                if left and left[0] == head:
                    left = left[1:]
                message = found.pop("message")
                stored = {k: found[k] for k in ("traffic_mode", "split", "effective_weight")
                          if k in found}  # fmt: skip
                await repo.set_applied(conn, rollout_id, left, **stored)
                await repo.append_event(
                    conn, rollout_id, "action", message, {"action": head, **found}, at=self.clock()
                )
        return False

    async def _apply(
        self, rollout_id: str, mode: str | None, spec: AnyPlan, action: Action
    ) -> dict[str, Any]:
        """Do one action; returns what to store about it (``message`` for the event)."""
        if isinstance(spec, AgentCanarySpec) and not isinstance(action, OpenIncident):
            return _runs_share(spec, action)
        if isinstance(action, OpenIncident):
            incident, created = await self.incidents.open_or_update(
                spec.target,
                Severity.high,
                action.summary,
                action.detail,
                dedup_key=f"rollout:{rollout_id}",
                source=Source.health_check,
                affected_components=[_component(spec)],
                suggested_actions=[f"quarterdeck rollout status {rollout_id}"],
                details={"rollout_id": rollout_id, "image": spec.image},
            )
            verb = "opened" if created else "updated"
            return {"message": f"{verb} incident {incident.id}", "incident_id": incident.id}
        assert isinstance(spec, RolloutSpec)  # an agent canary's actions returned above
        if mode is None and isinstance(action, Rollback | CleanupOld):
            return {"message": f"{_name(action)}: nothing was deployed yet"}
        actuator = self._actuator_cache.get(rollout_id)
        if actuator is None:
            actuator = await self.actuators(spec)
        if mode is None:
            await actuator.prepare(spec)
            mode = actuator.mode
        self._actuator_cache[rollout_id] = actuator
        found: dict[str, Any] = {"traffic_mode": mode}
        if isinstance(action, SetWeight):
            split = await actuator.set_weight(spec, action.weight)
            found["split"] = split
            found["effective_weight"] = effective_weight(mode, action.weight, split)
            found["message"] = f"weight {action.weight} %: {split}"
        elif isinstance(action, Rollback):
            await actuator.rollback(spec)
            found["split"], found["effective_weight"] = "all traffic to the stable version", 0.0
            found["message"] = f"rolled back: {action.reason}"
        elif isinstance(action, PromoteFully):
            await actuator.promote_fully(spec)
            found["split"], found["effective_weight"] = f"{spec.image} is the stable version", 100.0
            found["message"] = f"promoted {spec.image} fully"
        else:
            await actuator.cleanup(spec)
            found["message"] = "removed the canary Deployment, Service and Ingress"
        return found

    async def _event(
        self, rollout_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        async with self.db.acquire() as conn:
            await repo.append_event(conn, rollout_id, kind, message, data, at=self.clock())


def arm_sample(row: Any) -> ArmSample:
    """One arm's stored figures (no row: no finished run yet)."""
    if row is None:
        return ArmSample(0, 0, 0.0, None, None, None, 0, None, 0)
    return ArmSample(
        runs=int(row["runs"]),
        succeeded=int(row["succeeded"]),
        cost_usd=float(row["cost_usd"]),
        turns_mean=row["turns_mean"],
        duration_p95_s=row["duration_p95_s"],
        quality_mean=row["quality_mean"],
        quality_n=int(row["quality_n"]),
        coverage_mean=row["coverage_mean"],
        coverage_n=int(row["coverage_n"]),
    )


def _runs_share(spec: AgentCanarySpec, action: Action) -> dict[str, Any]:
    """An agent-configuration canary moves no traffic itself: the stored weight *is* the share
    of new runs every replica's router reads. The action is recorded for the history."""
    kind = spec.agent_type
    if isinstance(action, SetWeight):
        message = f"{action.weight} % of new {kind} runs get {spec.version}"
        return {"message": message, "split": message, "effective_weight": float(action.weight)}
    if isinstance(action, Rollback):
        message = f"new {kind} runs get {spec.stable_version} again: {action.reason}"
        return {"message": message, "split": f"all new runs: {spec.stable_version}",
                "effective_weight": 0.0}  # fmt: skip
    if isinstance(action, PromoteFully):
        message = f"{spec.version} is the configuration of every new {kind} run"
        return {"message": message, "split": f"all new runs: {spec.version}",
                "effective_weight": 100.0}  # fmt: skip
    return {"message": "nothing to clean up: the configuration lives in the canary"}


def _component(spec: AnyPlan) -> str:
    if isinstance(spec, AgentCanarySpec):
        return f"agent_type={spec.agent_type}"
    return f"deployment={spec.target}"


def _transition(spec: AnyPlan, old: RolloutState, new: RolloutState) -> tuple[str, str]:
    """The event kind and message of a state change the machine made."""
    if new.phase in ("rolled_back", "completed", "aborted"):
        return new.phase, new.pause_reason or f"rollout {new.phase}"
    if new.phase == "soaking" and old.phase != "soaking":
        return "promoted", f"fully promoted; soaking for {spec.stable_soak_s:g} s"
    if new.phase in ("paused", "inconclusive"):
        return "paused", new.pause_reason or new.phase
    if new.step_index != old.step_index:
        n = len(spec.steps)
        return "step", f"step {new.step_index + 1}/{n} at {new.weight} %"
    if new.extensions != old.extensions:
        limit = spec.analysis.max_extensions
        return "step", f"step extended by {spec.analysis.interval_s:g} s ({new.extensions}/{limit})"
    return "step", f"now {new.phase}"


def _name(action: Action) -> str:
    return str(repo.action_to_json(action)["type"])


def _detail(exc: BaseException) -> str:
    text = getattr(exc, "detail", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
