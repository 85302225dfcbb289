"""The auto-recovery loop: check everything every 10 s, repair, and keep incidents honest.

Per check and tick (leader only, see :mod:`.leader`):

- unhealthy: open or update the incident ``health:<check>`` (source ``health_check``), run the
  check's recovery strategy, and escalate the incident to a human when recovery fails;
- healthy again: resolve the incident ``by="auto"``; :class:`IncidentService` then sends the
  "auto-recovery completed" FYI (or the all-clear where someone was paged).

Incidents live in Postgres, so a new leader picks up where a dead one stopped: it looks for an
unresolved ``health:<check>`` incident before assuming there is none. When the failing check is
the database itself the incident cannot be written; the outage is remembered in memory and
recorded (opened at the first failure, then resolved) as soon as the database answers again.

Times kept in the incident's ``details``: ``first_failed_at`` (when a check first failed, which
is the detection time: when the fault itself began is unknowable here), ``detected_after_s``
(first failure to incident), ``recovered_at`` and ``recovery_time_s`` (open to resolve).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Gauge

from quarterdeck.config import Settings
from quarterdeck.health import repository as health_repo
from quarterdeck.health.checks import (
    CheckResult,
    HealthCheck,
    breaker_states,
)
from quarterdeck.health.defaults import default_checks
from quarterdeck.health.history import ProbeHistory
from quarterdeck.health.leader import Elector
from quarterdeck.health.recovery import (
    RecoveryResult,
    RecoveryStrategy,
    ScaleRequester,
)
from quarterdeck.incidents import repository as incidents_repo
from quarterdeck.incidents.models import ResolvedBy, Source
from quarterdeck.incidents.service import IncidentService
from quarterdeck.kit.clock import utcnow
from quarterdeck.metrics import REGISTRY
from quarterdeck.resilience.breaker import Breakers
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

CHECK_HEALTHY = Gauge(
    "claude_agent_health_check_healthy",
    "1 when the named health check passed on its last run (leader only), else 0",
    ["check"],
    registry=REGISTRY,
)

SUGGESTED_ACTIONS: dict[str, list[str]] = {
    "anthropic_api": [
        "Check https://status.anthropic.com and the API key's rate limits",
        "Consider model fallbacks (QUARTERDECK_MODEL_FALLBACKS)",
    ],
    "database": ["Check Postgres availability, connections and failover status"],
    "redis": ["Check Redis; breakers and rate limits run per process until it is back"],
    "filesystem": ["Free space or fix permissions on the data directory"],
    "agent_responsiveness": [
        "Check worker processes and their event loops (py-spy dump)",
        "Scale workers up if the queue is growing",
    ],
}


def dedup_key(check: str) -> str:
    return f"health:{check}"


@dataclass
class _State:
    """What the leader knows about one check; ``known`` False until synced with Postgres."""

    known: bool = False
    failing_since: datetime | None = None
    incident_id: str | None = None
    failures: int = 0
    reason: str | None = None
    last_recovery: RecoveryResult | None = None
    failed_recoveries: int = 0


class HealthMonitor:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        incidents: IncidentService,
        breakers: Breakers | None = None,
        *,
        elector: Elector | None = None,
        checks: Sequence[HealthCheck] | None = None,
        strategies: Mapping[str, RecoveryStrategy] | None = None,
        scaler: ScaleRequester | None = None,
        interval_s: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.incidents = incidents
        self.breakers = breakers
        self.elector = elector
        self.interval_s = interval_s
        self.clock = clock
        self.escalate_after = settings.health_escalate_after_failed_recoveries
        self.history = ProbeHistory(
            db, retention_days=settings.health_probe_retention_days, clock=clock
        )
        if checks is None:
            built_checks, built_strategies = default_checks(settings, db, breakers, scaler)
            self.checks: list[HealthCheck] = built_checks
            self.strategies = {**built_strategies, **(strategies or {})}
        else:
            self.checks = list(checks)
            self.strategies = dict(strategies or {})
        self.last: dict[str, CheckResult] = {}
        self.last_tick_at: datetime | None = None
        self._state: dict[str, _State] = {}
        self._was_leader = False
        # Set when this replica lost its term: if Postgres itself went away, no replica can be
        # leader to see it, so the one that lost the term watches and records the outage.
        self._outage_since: datetime | None = None
        self._outage_confirmed = False

    @property
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leader

    # -- loop ------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick every ``interval_s`` while leader; idle (and forget per-term state) otherwise."""
        while True:
            leader = self.is_leader
            if self._was_leader and not leader:
                self._outage_since, self._outage_confirmed = self.clock(), False
            if self._outage_since is not None:
                await self._watch_database_outage()
            if leader != self._was_leader:
                self._state.clear()  # a new term re-reads open incidents from Postgres
                self._was_leader = leader
                if not leader:
                    CHECK_HEALTHY.clear()  # only the leader's gauges mean anything
            if leader:
                started = time.monotonic()
                try:
                    await self.tick()
                except Exception:
                    log.exception("health.tick_failed")
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
            else:
                await asyncio.sleep(min(self.interval_s, 1.0))

    async def _watch_database_outage(self) -> None:
        """After losing the term: was it the database? If so, record the outage once it is back.

        A plain hand-over (stop(), a network blip to this replica only) sees a healthy database
        at once and records nothing.
        """
        check = next((c for c in self.checks if c.name == "database"), None)
        if check is None or self._outage_since is None:
            self._outage_since = None
            return
        result = await check.check()
        if not result.healthy:
            self._outage_confirmed = True
            return
        started, self._outage_since = self._outage_since, None
        if not self._outage_confirmed:
            return
        now = self.clock()
        try:
            incident, _ = await self.incidents.open_or_update(
                check.name,
                check.severity,
                f"{check.name} health check failing",
                "Postgres was unreachable; no replica could hold leadership until it returned",
                dedup_key(check.name),
                source=Source.health_check,
                affected_components=[check.name],
                suggested_actions=SUGGESTED_ACTIONS.get(check.name, []),
                details={
                    "check": check.name,
                    "first_failed_at": started.isoformat(),
                    "detected_after_s": 0.0,
                    "recorded_after_outage": True,
                    "recovered_at": now.isoformat(),
                    "recovery_time_s": round((now - started).total_seconds(), 3),
                },
                opened_at=started,
            )
            await self.incidents.resolve(
                incident.id, by=ResolvedBy.auto, note="the database answered again"
            )
        except Exception as exc:
            log.warning("health.outage_unrecorded", error=str(exc))

    async def tick(self) -> dict[str, CheckResult]:
        """Run every check once (concurrently), act on each result, then store the tick."""
        raw = await asyncio.gather(*(c.check() for c in self.checks), return_exceptions=True)
        self.last_tick_at = self.clock()
        for check, outcome in zip(self.checks, raw, strict=True):
            result = (
                CheckResult(check.name, False, f"check raised {type(outcome).__name__}: {outcome}")
                if isinstance(outcome, BaseException)
                else outcome
            )
            self.last[check.name] = result
            CHECK_HEALTHY.labels(check.name).set(1 if result.healthy else 0)
            try:
                if result.healthy:
                    await self._healthy(check, result)
                else:
                    await self._unhealthy(check, result)
            except Exception as exc:
                log.warning("health.handling_failed", check=check.name, error=str(exc))
        await self.history.record(self.last_tick_at, self.interval_s, self.checks, self.last)
        return dict(self.last)

    # -- per check -------------------------------------------------------------------------------
    async def _unhealthy(self, check: HealthCheck, result: CheckResult) -> None:
        state = self._state.setdefault(check.name, _State())
        now = self.clock()
        if state.failing_since is None:
            state.failing_since = now
        state.failures += 1
        log.warning("health.check_failed", check=check.name, reason=result.reason)
        try:
            await self._record_failure(check, result, state)
        except Exception as exc:  # e.g. the database is the failing check: act anyway
            log.warning("health.incident_unrecorded", check=check.name, error=str(exc))
        recovery = await self._recover(check, result, state, now)
        state.last_recovery = recovery
        if state.incident_id is None:
            return
        with contextlib.suppress(Exception):
            async with self.db.acquire() as conn:
                await health_repo.merge_incident_details(
                    conn, state.incident_id, {"last_recovery": recovery.to_dict()}
                )
        state.failed_recoveries = 0 if recovery.success else state.failed_recoveries + 1
        if state.failed_recoveries >= self.escalate_after:
            # Not on the first failed attempt: a blip that the next tick repairs should not
            # page anyone. The incident service escalates an incident once, however often asked.
            await self.incidents.escalate(
                state.incident_id,
                f"auto-recovery failed {state.failed_recoveries} times in a row for "
                f"{check.name}: {recovery.message}",
            )
        elif recovery.recheck is not None and recovery.recheck.healthy:
            self.last[check.name] = recovery.recheck
            CHECK_HEALTHY.labels(check.name).set(1)
            await self._healthy(check, recovery.recheck)

    async def _record_failure(self, check: HealthCheck, result: CheckResult, state: _State) -> None:
        """Open the incident, or update it when the reason changed (not every 10 s tick)."""
        assert state.failing_since is not None
        now = self.clock()
        details: dict[str, Any] = {
            "check": check.name,
            "reason": result.reason,
            "result": result.to_dict(),
            "first_failed_at": state.failing_since.isoformat(),
            "consecutive_failures": state.failures,
        }
        if state.incident_id is not None and state.reason == result.reason:
            async with self.db.acquire() as conn:
                if await health_repo.merge_incident_details(
                    conn, state.incident_id, details, only_unresolved=True
                ):
                    return
        incident, created = await self.incidents.open_or_update(
            check.name,
            check.severity,
            f"{check.name} health check failing",
            result.reason,
            dedup_key(check.name),
            source=Source.health_check,
            affected_components=[check.name],
            suggested_actions=SUGGESTED_ACTIONS.get(check.name, []),
            details=details,
            opened_at=state.failing_since,
        )
        if created:
            async with self.db.acquire() as conn:
                await health_repo.merge_incident_details(
                    conn,
                    incident.id,
                    {
                        "detected_at": now.isoformat(),
                        "detected_after_s": round((now - state.failing_since).total_seconds(), 3),
                    },
                )
        state.incident_id, state.known, state.reason = incident.id, True, result.reason

    async def _recover(
        self, check: HealthCheck, result: CheckResult, state: _State, now: datetime
    ) -> RecoveryResult:
        strategy = self.strategies.get(check.name)
        if strategy is None:
            return RecoveryResult(False, f"no recovery strategy for {check.name}", 0.0)
        failing_for = (now - state.failing_since).total_seconds() if state.failing_since else 0.0
        started = time.perf_counter()
        try:
            recovery = await strategy.recover(result, failing_for)
        except Exception as exc:
            recovery = RecoveryResult(
                False, f"recovery raised {type(exc).__name__}: {exc}", time.perf_counter() - started
            )
        log.info(
            "health.recovery",
            check=check.name,
            success=recovery.success,
            message=recovery.message,
            took_s=round(recovery.duration_s, 3),
        )
        return recovery

    async def _healthy(self, check: HealthCheck, result: CheckResult) -> None:
        state = self._state.setdefault(check.name, _State())
        if not state.known:
            async with self.db.acquire() as conn:
                found = await incidents_repo.find_unresolved(conn, dedup_key(check.name))
            if found is not None and found.source is Source.health_check:
                state.incident_id = found.id
            state.known = True
        if state.incident_id is None and state.failing_since is not None:
            # The outage could not be recorded while it lasted (the database was the outage).
            await self._record_failure(check, result, state)
        if state.incident_id is not None:
            incident_id = state.incident_id
            # A check passing on a fallback (see ProviderRecovery) says so in the note.
            degraded = bool(result.details.get("degraded"))
            note = f"{check.name} {'serving degraded' if degraded else 'healthy again'}"
            if state.last_recovery is not None:
                note += f" after: {state.last_recovery.message}"
            resolved = await self.incidents.resolve(incident_id, ResolvedBy.auto, note)
            async with self.db.acquire() as conn:
                await health_repo.merge_incident_details(
                    conn,
                    incident_id,
                    {
                        "recovered_at": (resolved.resolved_at or self.clock()).isoformat(),
                        "recovery_time_s": resolved.duration_s,
                        "recovered_by": "auto"
                        if resolved.resolved_by is ResolvedBy.auto
                        else str(resolved.resolved_by),
                    },
                )
            log.info("health.recovered", check=check.name, incident=incident_id)
        state.failing_since, state.incident_id, state.failures = None, None, 0
        state.last_recovery, state.reason = None, None

    # -- API -------------------------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        return {
            "leader": self.is_leader,
            "interval_s": self.interval_s,
            "last_tick_at": self.last_tick_at.isoformat() if self.last_tick_at else None,
            "checks": {
                c.name: (self.last[c.name].to_dict() if c.name in self.last else None)
                for c in self.checks
            },
            "open_incidents": {
                name: s.incident_id for name, s in self._state.items() if s.incident_id
            },
            "breakers": await breaker_states(self.breakers),
            "breakers_shared": self.breakers.shared if self.breakers is not None else None,
        }

    async def aclose(self) -> None:
        for check in self.checks:
            close = getattr(check, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
