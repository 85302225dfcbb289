"""What ``/ready`` decides, and the shared dependencies it reports without failing on them.

Readiness answers one question for the Service in front of the pods: *should this pod get
traffic?* A shared dependency (Postgres, Redis) is down for every pod at once, so failing
readiness on it would take every pod out of the Service together, and clients would get
connection errors instead of what the app serves in an outage: 503 problem+json with
``Retry-After`` for writes, cached reads (``Cache-Status``), probes and docs. So ``/ready`` fails
only for what is local to this pod and what another pod would not share:

- ``migrations``: not applied yet (the process is still starting);
- ``draining``: SIGTERM arrived, new work should go to the other pods;
- ``event_loop``: this process's loop is so busy that a request waits seconds for its turn (a
  loop stuck for good never answers at all, and the probe's own timeout catches that).

Postgres and Redis are still checked on every ``/ready`` (so the probe keeps their state fresh);
the result goes into its body, into ``/health`` (as last seen, touching nothing) and into
``claude_agent_dependency_up``, which ``QuarterdeckDatabaseDown`` alerts on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from quarterdeck.health.checks import RedisCheck, describe_error
from quarterdeck.metrics import DEPENDENCY_UP

PING_TIMEOUT_S = 1.0
"""Per dependency, per probe, under the manifests' readiness ``timeoutSeconds`` (3): a blackholed
database must not make the probe itself time out, which would fail readiness after all."""
MAX_LOOP_LAG_MS = 2000.0
"""A request waiting 2 s for the loop is a pod to route around; the liveness probe restarts one
that stays stuck."""


class Pingable(Protocol):
    async def ping(self) -> None: ...


@dataclass(frozen=True)
class DependencyState:
    """One shared dependency as this process last saw it."""

    name: str
    ok: bool
    checked_at: datetime
    latency_ms: float = 0.0
    error: str | None = None

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "checked_at": self.checked_at.isoformat(),
            "latency_ms": round(self.latency_ms, 2),
        }
        if now is not None:
            out["age_s"] = round((now - self.checked_at).total_seconds(), 1)
        if self.error:
            out["error"] = self.error
        return out


def local_checks(*, migrated: bool, draining: bool, loop_lag_ms: float) -> dict[str, Any]:
    """The pod-local checks ``/ready`` fails on (pure: the caller measures)."""
    return {
        "migrations": {"ok": bool(migrated)},
        "draining": {"ok": not draining},
        "event_loop": {
            "ok": loop_lag_ms <= MAX_LOOP_LAG_MS,
            "lag_ms": round(loop_lag_ms, 2),
            "max_lag_ms": MAX_LOOP_LAG_MS,
        },
    }


def verdict(checks: dict[str, Any], dependencies: dict[str, DependencyState]) -> tuple[int, str]:
    """(HTTP status, status word): 503 only for a local check; ``degraded`` when a shared
    dependency is down but this pod can still serve."""
    if not all(c["ok"] for c in checks.values()):
        return 503, "not_ready"
    if not all(d.ok for d in dependencies.values()):
        return 200, "degraded"
    return 200, "ready"


class SharedDependencies:
    """Pings Postgres and Redis (when configured), remembers the last result, sets the gauge.

    One per app (kept on ``app.state``). Redis gets a client of its own per check, with short
    timeouts and no retries, closed right after: a probe every few seconds costs one connection
    and leaves nothing open to clean up at shutdown.
    """

    def __init__(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.last: dict[str, DependencyState] = {}

    async def refresh(
        self, db: Pingable | None, redis_url: str | None
    ) -> dict[str, DependencyState]:
        probes = [self._ping("database", db)]
        if redis_url is not None:
            probes.append(self._redis(redis_url))
        for state in await asyncio.gather(*probes):
            self.last[state.name] = state
            DEPENDENCY_UP.labels(dependency=state.name).set(1 if state.ok else 0)
        return dict(self.last)

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        """As last seen, with each result's age; empty until the first ``/ready``."""
        at = now or datetime.now(UTC)
        return {name: state.to_dict(at) for name, state in sorted(self.last.items())}

    async def _ping(self, name: str, target: Pingable | None) -> DependencyState:
        started = time.perf_counter()
        try:
            if target is None:
                raise RuntimeError("not connected yet")
            await asyncio.wait_for(target.ping(), timeout=self.timeout_s)
        except TimeoutError:
            return self._state(name, started, f"no answer within {self.timeout_s:g}s")
        except Exception as exc:
            return self._state(name, started, describe_error(exc))
        return self._state(name, started, None)

    async def _redis(self, url: str) -> DependencyState:
        check = RedisCheck(url, timeout_s=self.timeout_s / 2)
        started = time.perf_counter()
        try:
            result = await check.check()
        finally:
            await check.aclose()
        return self._state("redis", started, None if result.healthy else result.reason)

    @staticmethod
    def _state(name: str, started: float, error: str | None) -> DependencyState:
        return DependencyState(
            name,
            error is None,
            datetime.now(UTC),
            (time.perf_counter() - started) * 1e3,
            error,
        )
