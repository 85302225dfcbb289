"""What the monitor does about a failing check, one strategy per check.

Most dependencies already heal themselves in the request path (retries with backoff, breakers,
model fallbacks, the Redis fallback to in-process state), so a strategy does the little that is
left and then *re-checks*: success means the check passes again, not that an action ran. A
failed recovery is what escalates an incident to a human.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from quarterdeck.health.checks import (
    AgentResponsivenessCheck,
    CheckResult,
    DatabaseCheck,
    HealthCheck,
    RedisCheck,
    breaker_states,
)
from quarterdeck.health.provider import ProviderCheck, describe_degraded
from quarterdeck.resilience.breaker import Breakers
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RecoveryResult:
    success: bool
    message: str
    duration_s: float
    recheck: CheckResult | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "message": self.message,
            "duration_s": round(self.duration_s, 3),
            "recheck_healthy": None if self.recheck is None else self.recheck.healthy,
            **({"details": self.details} if self.details else {}),
        }


class RecoveryStrategy(Protocol):
    async def recover(self, failed: CheckResult, failing_for_s: float) -> RecoveryResult: ...


@dataclass(frozen=True)
class ScaleAnswer:
    """A scale-up request's answer with its reason, so the recovery result can say why not
    (the scaler recommends only, an HPA owns the Deployment, one was just made)."""

    accepted: bool
    reason: str

    def __bool__(self) -> bool:
        return self.accepted


class ScaleRequester(Protocol):
    """Asks for more workers. The autoscaler's (``scaling/emergency.py``) adds a bounded step
    when its scaler acts in this process; the default only logs.

    Returns whether capacity was added; a :class:`ScaleAnswer` also says why or why not.
    """

    async def request_scale_up(
        self, reason: str, details: dict[str, Any]
    ) -> bool | ScaleAnswer: ...


class LoggingScaleRequester:
    """Records the request (log + a list for the API) without scaling anything."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def request_scale_up(self, reason: str, details: dict[str, Any]) -> bool:
        self.requests.append({"reason": reason, "details": details, "at": time.time()})
        log.warning("health.emergency_scale_up_requested", reason=reason, **details)
        return False


def _result(started: float, recheck: CheckResult, done: str, **details: Any) -> RecoveryResult:
    message = done if recheck.healthy else f"{done}; still unhealthy: {recheck.reason}"
    return RecoveryResult(
        recheck.healthy, message, time.perf_counter() - started, recheck, dict(details)
    )


class RecheckOnly:
    """For checks with nothing safe to do automatically (a full or read-only disk)."""

    def __init__(self, check: HealthCheck, action: str = "no automatic action") -> None:
        self.check = check
        self.action = action

    async def recover(self, failed: CheckResult, failing_for_s: float) -> RecoveryResult:
        started = time.perf_counter()
        return _result(started, await self.check.check(), self.action)


class ProviderRecovery:
    """Retries, breakers and fallbacks act on every call already; note them, accept a dead model
    as degraded while a fallback serves it, and otherwise give the provider ``give_up_after_s``
    before calling it a failed recovery (which pages a human).

    A model whose breaker is open but whose configured fallback has a closed breaker is not an
    outage any more: the caller sends its calls to the fallback without waiting (see
    :mod:`quarterdeck.resilience.calls`). That is the guide's successful auto-recovery ("switched
    to the fallback model and it works"), so the check is told to accept the model as degraded
    and the re-check passes: the incident resolves in the same tick, its note naming the dead
    model and the serving fallback. Operators still learn that the primary is down from the
    ``CircuitBreakerOpen`` alert, which fires on the breaker itself. A model without a fallback,
    or whose fallbacks' breakers are open too, is not covered and keeps the check failing.
    """

    def __init__(
        self, check: ProviderCheck, breakers: Breakers | None, give_up_after_s: float = 300.0
    ) -> None:
        self.check = check
        self.breakers = breakers
        self.give_up_after_s = give_up_after_s

    async def recover(self, failed: CheckResult, failing_for_s: float) -> RecoveryResult:
        started = time.perf_counter()
        prefix = f"{self.check.provider}:"
        states = await breaker_states(self.breakers, prefix=prefix)
        covered, uncovered = await self._coverage(states)
        for model, fallback in covered.items():
            self.check.accept_degraded(model, fallback)
        recheck = await self.check.check()
        details: dict[str, Any] = {"breakers": states}
        degraded = recheck.details.get("degraded") or {}
        if degraded:
            details["degraded"] = degraded
        if uncovered:
            details["uncovered"] = uncovered
        action = (
            "provider calls are protected by retries with backoff, breakers and fallbacks "
            f"(breakers: {states or 'none yet'})"
        )
        accepted = self.check.degraded  # this tick's and earlier ticks' (still valid) entries
        if accepted:
            action = (
                f"{describe_degraded(accepted, states, self.check.provider)}: accepted as "
                "degraded (the CircuitBreakerOpen alert keeps reporting the dead model)"
                + (f"; no fallback serves {', '.join(uncovered)}" if uncovered else "")
            )
        if recheck.healthy or failing_for_s < self.give_up_after_s:
            message = action if recheck.healthy else f"{action}; waiting for the provider"
            return RecoveryResult(True, message, time.perf_counter() - started, recheck, details)
        return RecoveryResult(
            False,
            f"provider unhealthy for {failing_for_s:.0f}s despite {action}: {recheck.reason}",
            time.perf_counter() - started,
            recheck,
            details,
        )

    async def _coverage(self, states: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """Open breakers' models split into those a fallback serves (model -> fallback) and
        those nothing serves."""
        prefix = f"{self.check.provider}:"
        covered: dict[str, str] = {}
        uncovered: list[str] = []
        for name, state in sorted(states.items()):
            model = name.removeprefix(prefix)
            if state != "open" or model in self.check.degraded:
                continue
            fallback = await self.check.serving_fallback(model)
            if fallback is None:
                uncovered.append(model)
            else:
                covered[model] = fallback
        return covered, uncovered


class DatabaseRecovery:
    """Expire every pooled connection (stale after a failover or restart), then re-check."""

    def __init__(self, db: Database, check: DatabaseCheck) -> None:
        self.db = db
        self.check = check

    async def recover(self, failed: CheckResult, failing_for_s: float) -> RecoveryResult:
        started = time.perf_counter()
        await self.db.recycle()
        return _result(started, await self.check.check(), "recycled the connection pool")


class RedisRecovery:
    """Breakers and rate limits already fell back to in-process state; try to reconnect.

    Redis is an optimisation (see :mod:`quarterdeck.resilience.redis_backend`), so a Redis
    outage is degraded service, not an outage: recovery counts as working while the fallback
    carries the load, and fails (escalates) only after ``give_up_after_s`` without Redis.
    """

    def __init__(
        self, check: RedisCheck, breakers: Breakers | None = None, give_up_after_s: float = 300.0
    ) -> None:
        self.check = check
        self.breakers = breakers
        self.give_up_after_s = give_up_after_s

    async def recover(self, failed: CheckResult, failing_for_s: float) -> RecoveryResult:
        started = time.perf_counter()
        await self.check.reconnect()
        shared = self.breakers.shared if self.breakers is not None else None
        recheck = await self.check.check()
        if recheck.healthy:
            return _result(started, recheck, "reconnected to Redis", breakers_shared=shared)
        fallback = "breakers and rate limits use in-process state while Redis is away"
        within = failing_for_s < self.give_up_after_s
        return RecoveryResult(
            within,
            f"reconnect failed ({recheck.reason}); {fallback}"
            + ("" if within else f"; Redis unreachable for {failing_for_s:.0f}s"),
            time.perf_counter() - started,
            recheck,
            {"breakers_shared": shared},
        )


class AgentRecovery:
    """Requeue runs nobody drives, end runs far past their timeout, ask for more workers."""

    def __init__(
        self,
        check: AgentResponsivenessCheck,
        scaler: ScaleRequester | None = None,
    ) -> None:
        self.check = check
        self.scaler = scaler or LoggingScaleRequester()

    async def recover(self, failed: CheckResult, failing_for_s: float) -> RecoveryResult:
        started = time.perf_counter()
        stale = self.check.stale_after_s
        runs = self.check.runs
        requeued = await runs.requeue_lapsed(stale)
        orphans = await runs.requeue_orphans(stale)
        overdue = [r for r in failed.details.get("overdue_runs", []) if r not in requeued]
        # Only runs whose worker still heartbeats (lapsed ones were requeued, and the executor
        # times them out on resume); the cancelled job stops the worker, whose own finish then
        # finds the run terminal and changes nothing.
        ended = await runs.time_out(overdue, self.check.default_timeout_s)
        actions = []
        if requeued or orphans:
            actions.append(f"requeued {len(requeued) + len(orphans)} stuck run(s)")
        if ended:
            actions.append(f"timed out {len(ended)} overdue run(s)")
        scaled = None
        if requeued or orphans or failed.details.get("loop_lag_ms", 0) > self.check.max_loop_lag_ms:
            answer = await self.scaler.request_scale_up(
                "agent_responsiveness", {"requeued": len(requeued) + len(orphans)}
            )
            scaled = bool(answer)
            why = f" ({answer.reason})" if isinstance(answer, ScaleAnswer) else ""
            actions.append(f"requested an emergency scale-up{why}")
        if requeued or orphans or ended:
            log.warning("health.runs_recovered", requeued=requeued, orphans=orphans, ended=ended)
        return _result(
            started,
            await self.check.check(),
            "; ".join(actions) or "nothing to repair",
            requeued=requeued + orphans,
            timed_out=ended,
            scale_up_accepted=scaled,
        )
