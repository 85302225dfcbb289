"""The scaler's loop: every interval, on the leader only, observe, decide, act, record.

Why leader-only: two scalers writing one replica count fight each other exactly as the guide's
scaler fights its own HPA. Every replica runs a :class:`Scaler`, but only the one whose
:class:`~quarterdeck.health.leader.Elector` holds leadership ticks; the others wait, export no
replica gauges (see :mod:`quarterdeck.scaling.gauges`) and take over within one elector retry
when the leader dies.

Why one policy instance kept across ticks, rebuilt on gaining leadership: the policies are
small state machines (stabilization windows, cooldown). A new leader knows nothing of the old
one's windows, so it starts fresh; the policy seeds its windows with the current replica count
(as the HPA does after a restart), so a new leader never shrinks the pool on its first tick.

Why every decision is stored, holds and failures included: the table is how a person finds out
later why the pool was the size it was. An action that fails (the Kubernetes API refused, an
HPA owns the Deployment) is a row with ``error`` set and ``applied`` null, never a crash of the
loop: the next tick tries again.

Why the health monitor's emergency scale-up goes through here (:meth:`Scaler.emergency_scale_up`,
asked by ``scaling/emergency.py``): the count keeps one writer, the leader, by its own path and
refusals, under the same lock as its ticks, and the step is held against its next ticks. A
follower does not refuse it: it hands it to the leader through Postgres (``handover.py``), and
the leader takes such requests at the start of each tick.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from quarterdeck.exceptions import ScalingConflict, ScalingError
from quarterdeck.health.leader import Elector
from quarterdeck.health.loop import LeaderLoop
from quarterdeck.health.recovery import ScaleAnswer
from quarterdeck.kit.clock import utcnow
from quarterdeck.scaling import repository as repo
from quarterdeck.scaling.gauges import CURRENT, DESIRED, ERRORS
from quarterdeck.scaling.handover import HandOver
from quarterdeck.scaling.kube import ScaleTarget
from quarterdeck.scaling.models import DecisionRecord, ScalerMode
from quarterdeck.scaling.observe import Observer
from quarterdeck.scaling.outcome import Outcome
from quarterdeck.scaling.outcome import detail as _detail
from quarterdeck.scaling.outcome import record as store_decision
from quarterdeck.scaling.policy import (
    EmergencyFloor,
    Observation,
    Policy,
    PolicyName,
    ScalerConfig,
    clamp,
    make_policy,
)
from quarterdeck.scaling.quarterdeck_policy import backlog_step
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

__all__ = ["PURGE_EVERY_S", "Scaler"]

PURGE_EVERY_S = 3600.0
"""Old decisions are purged at most this often (by the leader)."""


class Scaler(LeaderLoop):
    """One process's scaler loop; it acts only while ``elector`` says this process leads.

    ``mode`` ``kubernetes`` needs ``target``; ``metric`` and ``dry-run`` act on nothing, and
    their "current" count is the last desired one (seeded from the newest stored decision).
    ``own_elector``: this scaler started the elector and runs and stops it with itself; a
    shared one (the health monitor's) is run by its owner. ``request_ttl_s``: how long a
    request handed over by a follower may wait (default :func:`~.handover.request_ttl`).
    """

    name = "scaler"

    def __init__(
        self,
        db: Database,
        observer: Observer,
        elector: Elector,
        *,
        mode: ScalerMode,
        policy: PolicyName,
        config: ScalerConfig,
        interval_s: float,
        target_name: str,
        target: ScaleTarget | None = None,
        own_elector: bool = False,
        retention_s: float = 7 * 86_400.0,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        request_ttl_s: float | None = None,
    ) -> None:
        if mode == "off":
            raise ValueError("a scaler in mode off is not built")
        if (mode == "kubernetes") != (target is not None):
            raise ValueError("mode kubernetes needs a scale target, and only it takes one")
        config.validate()
        super().__init__(elector, interval_s=interval_s, own_elector=own_elector)
        self.db, self.observer = db, observer
        self.mode: ScalerMode = mode
        self.policy_name: PolicyName = policy
        self.config = config
        self.target_name = target.name if target is not None else target_name
        self.target = target
        self.retention_s = retention_s
        self.clock, self.monotonic = clock, monotonic
        self.handover = HandOver(db, interval_s=interval_s, ttl_s=request_ttl_s, clock=clock)
        self._policy: Policy | None = None  # None while not leading
        self._emergency: EmergencyFloor | None = None  # the health monitor's, while leading
        self._acting = asyncio.Lock()  # a tick and an emergency never interleave
        self._current: int | None = None  # last known replicas (virtual count off kubernetes)
        self._owner_checked = False
        self._last_purge: float | None = None

    # -- the loop (LeaderLoop runs it) --------------------------------------------------------
    def log_fields(self) -> dict[str, Any]:
        return {"mode": self.mode, "policy": self.policy_name, "target": self.target_name}

    def on_tick_error(self) -> None:
        ERRORS.inc()

    async def on_stopped(self) -> None:
        self._step_down()

    async def tick(self) -> DecisionRecord | None:
        """One pass: nothing unless leading; else decide, act by mode, store and count.

        Returns the stored decision (None when not leading, or when storing it failed).
        """
        if not self.elector.is_leader:
            if self._policy is not None:
                log.info("scaler.leadership_lost", target=self.target_name)
                self._step_down()
            return None
        await self.handover.serve(self._emergency_now)  # requests followers handed over
        async with self._acting:
            if self._policy is None:
                await self._step_up()
            at = self.monotonic()
            if self.target is not None:
                outcome = await self._tick_kubernetes(at, self.target)
            else:
                outcome = await self._tick_virtual(at)
            record = await self._record(outcome)
        await self._purge_if_due()
        return record

    # -- leadership ---------------------------------------------------------------------------
    async def _step_up(self) -> None:
        """A fresh policy and arrival rate; off Kubernetes, the count to continue from."""
        if self.target is None:
            async with self.db.acquire() as conn:
                last = await repo.latest_decision(conn)
            seed = int(last["desired"]) if last is not None else self.config.min_replicas
            self._current = clamp(seed, self.config.min_replicas, self.config.max_replicas)
        self._policy = make_policy(self.policy_name, self.config)
        self._emergency = EmergencyFloor(self.config)
        self.observer.reset()
        self._owner_checked = False
        log.info("scaler.leadership_gained", target=self.target_name, current=self._current)

    def _step_down(self) -> None:
        """Forget the policy and stop exporting the replica gauges (a follower exports none)."""
        self._policy = self._emergency = None
        DESIRED.clear()
        CURRENT.clear()

    # -- acting ---------------------------------------------------------------------------------
    async def _tick_virtual(self, at: float) -> Outcome:
        """``metric``/``dry-run``: decide on the last desired count; only metric exports it."""
        assert self._policy is not None and self._current is not None
        obs = await self.observer.observe(at, replicas=self._current)
        outcome = self._decide(obs)
        self._current = outcome.desired  # what KEDA is told (metric) or would be (dry-run)
        CURRENT.set(outcome.current)
        if self.mode == "metric":
            DESIRED.set(outcome.desired)
        return outcome

    async def _tick_kubernetes(self, at: float, target: ScaleTarget) -> Outcome:
        """Read the Deployment, decide, and write its scale unless another autoscaler owns it."""
        assert self._policy is not None
        try:
            state = await target.read()
        except ScalingError as exc:
            known = self._current if self._current is not None else 0
            return self._failed(known, "could not read the target's replicas", exc)
        self._current = state.replicas
        CURRENT.set(state.replicas)
        checked_now = not self._owner_checked
        if checked_now:  # on gaining leadership, and every tick until a conflict is gone
            refused = await self._check_owner(target, state.replicas)
            if refused is not None:
                return refused
        obs = await self.observer.observe(at, replicas=state.replicas, ready=state.ready)
        outcome = self._decide(obs)
        DESIRED.set(outcome.desired)
        if outcome.direction == "hold":
            return outcome
        try:
            if not checked_now:  # an HPA created since: never write against it
                await target.check_owner()
            if outcome.direction == "down":
                # Busy pods get a higher deletion cost first, so the ReplicaSet removes idle
                # ones; if that cannot be done, no scale-down this tick (it is never urgent).
                await target.mark_busy(await self.observer.busy_pods())
            await target.write(outcome.desired)
        except (ScalingConflict, ScalingError) as exc:
            self._owner_checked = not isinstance(exc, ScalingConflict)
            return self._with_error(outcome, exc)
        except Exception as exc:  # the busy-pod read (Postgres) failed: same rule
            return self._with_error(outcome, exc)
        outcome.applied = outcome.desired
        self._current = outcome.desired
        return outcome

    def _decide(self, obs: Observation) -> Outcome:
        """The policy's decision, honouring an emergency scale-up's floor while it holds.

        Quarterdeck's policy takes the floor as an input; the guide's two policies are kept as
        the guide wrote them and know none, so their answer is lifted to it here.
        """
        assert self._policy is not None and self._emergency is not None
        floor = self._emergency.floor(obs.at)
        outcome = Outcome.of(self._policy.decide(dataclasses.replace(obs, floor=floor)))
        if floor is not None and outcome.desired < min(floor, self.config.max_replicas):
            wanted, outcome.desired = outcome.desired, min(floor, self.config.max_replicas)
            outcome.factors["emergency_floor"] = outcome.desired
            outcome.reason = f"hold at {outcome.current}" if outcome.direction == "hold" else ""
            outcome.reason = outcome.reason or f"scale {outcome.current}→{outcome.desired}"
            outcome.reason += ": the health monitor's emergency scale-up is held for its window "
            outcome.reason += f"(the policy wanted {wanted})."
        return outcome

    # -- the health monitor's emergency scale-up (scaling/emergency.py asks) ----------------------
    async def emergency_scale_up(self, why: str) -> ScaleAnswer:
        """One bounded step up now, held against the next ticks (see :class:`EmergencyFloor`).

        Only a leader that acts does it: ``dry-run`` only records, and a follower is not the one
        writer of the count, so it hands the request to the leader (``handover.py``) and answers
        so. A leader stores each request it answers as a decision whose reason starts
        ``health monitor: <why>:``.
        """
        if not self.elector.is_leader:
            return await self.handover.emergency_scale_up(why)
        return await self._emergency_now(why)

    async def _emergency_now(self, why: str, request: int | None = None) -> ScaleAnswer:
        """The leader's step for the health monitor; ``request``: the id it was handed over as."""
        async with self._acting:
            if self._policy is None:
                await self._step_up()
            known = self._current if self._current is not None else 0
            if self.mode == "dry-run":
                note = "not scaled: the scaler is in dry-run mode (it recommends, never acts)"
                outcome = Outcome(known, known, note, {"emergency": True})
            else:
                outcome = await self._emergency_step(self.monotonic(), known)
            text = outcome.reason
            via = "" if request is None else f" (handed over by a follower as request {request})"
            outcome.reason = f"health monitor: {why}: {text}{via}."
            if request is not None:
                outcome.factors["request"] = request
            await self._record(outcome)
        if outcome.error is not None:
            return ScaleAnswer(False, f"{text}: {outcome.error}")
        return ScaleAnswer(outcome.direction == "up", text)

    async def _emergency_step(self, at: float, known: int) -> Outcome:
        """Read (and, on Kubernetes, check no HPA owns the target: always, being off the ticks'
        path), take the policy's own step for the load, bounded and rate-limited, and act."""
        assert self._emergency is not None
        target, ready = self.target, None
        if target is not None:
            try:
                state = await target.read()
                known, ready, self._current = state.replicas, state.ready, state.replicas
                await target.check_owner()
            except (ScalingConflict, ScalingError) as exc:
                conflict = isinstance(exc, ScalingConflict)
                self._owner_checked = self._owner_checked and not conflict
                why = "another autoscaler owns the target" if conflict else "the target failed"
                return self._failed(known, f"not scaled: {why}", exc, hold=False)
        obs = await self.observer.observe(at, replicas=known, ready=ready)
        step = backlog_step(obs.arrivals_per_s, self.config)
        failing = obs.provider_failing and bool(obs.queued)
        grant = self._emergency.request(at, known, step, provider_failing=failing)
        factors = {**grant.factors, "queued": obs.queued, "running": obs.running}
        outcome = Outcome(known, grant.desired, grant.reason, factors)
        if not grant.accepted:
            return outcome
        if target is not None:  # metric mode: the exported desired count is the action
            try:
                await target.write(grant.desired)
            except ScalingError as exc:
                outcome.reason = f"not scaled: writing {grant.desired} replicas failed"
                return self._with_error(outcome, exc)
            outcome.applied = grant.desired
        self._emergency.commit(grant)
        self._current = grant.desired
        DESIRED.set(grant.desired)
        return outcome

    async def _check_owner(self, target: ScaleTarget, current: int) -> Outcome | None:
        """None when no other autoscaler owns the target; else the refusal to record."""
        try:
            await target.check_owner()
        except ScalingConflict as exc:
            log.error("scaler.refused", target=self.target_name, error=exc.detail)
            return self._failed(current, "refused to act: another autoscaler owns it", exc)
        except ScalingError as exc:
            return self._failed(current, "could not check for another autoscaler", exc)
        self._owner_checked = True
        return None

    def _failed(self, current: int, why: str, exc: BaseException, hold: bool = True) -> Outcome:
        """A hold that is no decision of the policy: the action could not even be considered."""
        ERRORS.inc()
        detail = _detail(exc)
        log.warning("scaler.failed", target=self.target_name, reason=why, error=detail)
        reason = f"hold at {current}: {why}." if hold else why
        return Outcome(current, current, reason, {}, None, detail)

    def _with_error(self, outcome: Outcome, exc: BaseException) -> Outcome:
        ERRORS.inc()
        outcome.error = _detail(exc)
        refused = isinstance(exc, ScalingConflict)  # never fight another autoscaler: loud
        (log.error if refused else log.warning)(
            "scaler.refused" if refused else "scaler.action_failed",
            target=self.target_name,
            error=outcome.error,
        )
        return outcome

    # -- recording ------------------------------------------------------------------------------
    async def _record(self, outcome: Outcome) -> DecisionRecord | None:
        return await store_decision(
            self.db,
            outcome,
            at=self.clock(),
            policy=self.policy_name,
            mode=self.mode,
            target=self.target_name,
        )

    async def _purge_if_due(self) -> None:
        now = self.monotonic()
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = now
        before = self.clock() - timedelta(seconds=self.retention_s)
        try:
            async with self.db.acquire() as conn:
                purged = await repo.purge_decisions(conn, before)
            requests = await self.handover.purge(before)
        except Exception as exc:
            log.warning("scaler.purge_failed", error=_detail(exc))
            return
        if purged or requests:
            log.info("scaler.purged", decisions=purged, requests=requests)
