"""The health checks the monitor runs every 10 s. None of them costs money.

The Anthropic API check lives in :mod:`.provider`: passive (real traffic, breakers) plus a free
``GET /v1/models`` probe, never a paid message as in the guide.

Every check returns a :class:`CheckResult` and never raises: a check that fails to run is an
unhealthy result whose ``reason`` says why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from quarterdeck.incidents.models import Severity
from quarterdeck.resilience.breaker import Breakers, CircuitStatus
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.runs.store_protocol import RunStore
from quarterdeck.store.pool import Database

ANTHROPIC_API = "anthropic_api"
DATABASE = "database"
REDIS = "redis"
FILESYSTEM = "filesystem"
AGENT_RESPONSIVENESS = "agent_responsiveness"
GiB = 1024**3

if TYPE_CHECKING:  # redis is imported only when a Redis URL is configured
    from redis.asyncio import Redis


@dataclass(frozen=True)
class CheckResult:
    name: str
    healthy: bool
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "healthy": self.healthy,
            "reason": self.reason,
            "details": self.details,
            "latency_ms": round(self.latency_ms, 2),
            "checked_at": self.checked_at.isoformat(),
        }


class HealthCheck(Protocol):
    """``name`` keys the incident (``health:<name>``); ``severity`` is the incident's."""

    name: str
    severity: Severity

    async def check(self) -> CheckResult: ...


async def timed(name: str, body: Any, timeout_s: float) -> CheckResult:
    """Run a check body returning (healthy, reason, details) with a deadline; never raises."""
    started = time.perf_counter()
    try:
        healthy, reason, details = await asyncio.wait_for(body, timeout=timeout_s)
    except TimeoutError:
        healthy, reason, details = False, f"no answer within {timeout_s:g}s", {}
    except Exception as exc:
        healthy, reason, details = False, describe_error(exc), {"error_type": type(exc).__name__}
    return CheckResult(name, healthy, reason, details, (time.perf_counter() - started) * 1e3)


def describe_error(exc: BaseException) -> str:
    text = getattr(exc, "detail", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- breakers ----------------------------------------------------------------------------------
async def breaker_states(breakers: Breakers | None, prefix: str = "") -> dict[str, str]:
    """Current state of each known breaker (``closed``/``half_open``/``open``)."""
    if breakers is None:
        return {}
    out: dict[str, str] = {}
    for name in sorted(breakers._breakers):  # read-only view of the registry
        if name.startswith(prefix):
            out[name] = CircuitStatus(await breakers.state(name)).name.lower()
    return out


# --- database, redis ---------------------------------------------------------------------------
class DatabaseCheck:
    name = DATABASE
    severity = Severity.critical

    def __init__(self, db: Database, timeout_s: float = 3.0) -> None:
        self.db = db
        self.timeout_s = timeout_s

    async def check(self) -> CheckResult:
        async def body() -> tuple[bool, str, dict[str, Any]]:
            await self.db.ping()
            pool = self.db._pool  # sizes only, for the details
            sizes = {"size": pool.get_size(), "idle": pool.get_idle_size()} if pool else {}
            return True, "", {"pool": sizes}

        return await timed(self.name, body(), self.timeout_s)


class RedisCheck:
    """PING on a client of its own (short timeouts, no retries): never blocks run traffic."""

    name = REDIS
    severity = Severity.medium

    def __init__(self, url: str | None, timeout_s: float = 1.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client: Redis | None = None

    def client(self) -> Redis | None:
        if self._client is None and self.url is not None:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    async def reconnect(self) -> None:
        """Drop pooled sockets so the next PING dials afresh (after a Redis restart)."""
        if self._client is not None:
            await self._client.connection_pool.disconnect()

    async def check(self) -> CheckResult:
        if self.url is None:
            return CheckResult(self.name, True, "not configured", {"configured": False})

        client = self.client()
        assert client is not None  # a URL is configured

        async def body() -> tuple[bool, str, dict[str, Any]]:
            await client.ping()
            return True, "", {"configured": True}

        return await timed(self.name, body(), self.timeout_s * 2 + 0.5)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


# --- filesystem --------------------------------------------------------------------------------
class FilesystemCheck:
    """The data dir (embedded Postgres, workspaces) accepts a new file and has room left.

    Unhealthy when free space is under ``min_free_bytes`` *or* under ``min_free_ratio`` of the
    volume: an absolute floor for small volumes, a relative one for large.
    """

    name = FILESYSTEM
    severity = Severity.high

    def __init__(
        self,
        path: Path,
        *,
        min_free_bytes: int = GiB,
        min_free_ratio: float = 0.05,
        timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.min_free_bytes = min_free_bytes
        self.min_free_ratio = min_free_ratio
        self.timeout_s = timeout_s

    async def check(self) -> CheckResult:
        return await timed(self.name, asyncio.to_thread(self._probe), self.timeout_s)

    def _probe(self) -> tuple[bool, str, dict[str, Any]]:
        details: dict[str, Any] = {"path": str(self.path)}
        problems: list[str] = []
        try:
            fd, tmp = tempfile.mkstemp(prefix=".qd-health-", dir=self.path)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(tmp)
            details["writable"] = True
        except OSError as exc:
            details["writable"] = False
            problems.append(f"{self.path} is not writable: {exc.strerror or exc}")
        try:
            usage = shutil.disk_usage(self.path)
        except OSError as exc:
            problems.append(f"cannot stat {self.path}: {exc.strerror or exc}")
        else:
            ratio = usage.free / usage.total if usage.total else 0.0
            details.update(
                free_bytes=usage.free, total_bytes=usage.total, free_ratio=round(ratio, 4)
            )
            if usage.free < self.min_free_bytes or ratio < self.min_free_ratio:
                problems.append(
                    f"only {usage.free / GiB:.2f} GiB ({ratio:.1%}) free on {self.path}; "
                    f"need {self.min_free_bytes / GiB:.2f} GiB and {self.min_free_ratio:.0%}"
                )
        return (not problems), "; ".join(problems), details


# --- agents ------------------------------------------------------------------------------------
class AgentResponsivenessCheck:
    """Runs nobody is driving, runs far past their deadline, and a starved event loop.

    - *lapsed*: ``running`` runs whose ``heartbeat_at`` is older than ``stale_after_s`` (3x the
      worker heartbeat timeout): the worker that claimed them stopped heartbeating;
    - *overdue*: ``running`` runs older than their timeout plus ``overdue_grace_s``, which the
      executor should have ended itself;
    - *loop lag*: the worst lateness of short sleeps over a 100 ms sample; a blocked loop
      delays every run and heartbeat in this process.
    """

    name = AGENT_RESPONSIVENESS
    severity = Severity.high

    def __init__(
        self,
        db: Database,
        *,
        stale_after_s: float = 30.0,
        default_timeout_s: float = 3600.0,
        overdue_grace_s: float = 300.0,
        max_loop_lag_ms: float = 500.0,
        lag_samples: int = 10,
        timeout_s: float = 5.0,
        runs: RunStore | None = None,
    ) -> None:
        self.db = db
        self.runs: RunStore = runs or PostgresRunStore(db)
        self.stale_after_s = stale_after_s
        self.default_timeout_s = default_timeout_s
        self.overdue_grace_s = overdue_grace_s
        self.max_loop_lag_ms = max_loop_lag_ms
        self.lag_samples = lag_samples
        self.timeout_s = timeout_s

    async def check(self) -> CheckResult:
        return await timed(self.name, self._check(), self.timeout_s)

    async def _check(self) -> tuple[bool, str, dict[str, Any]]:
        lag_ms = await loop_lag_ms(self.lag_samples)
        lapsed = await self.runs.lapsed(self.stale_after_s)
        overdue = await self.runs.overdue(self.default_timeout_s, self.overdue_grace_s)
        details: dict[str, Any] = {
            "lapsed_runs": lapsed,
            "overdue_runs": overdue,
            "loop_lag_ms": round(lag_ms, 3),
            "stale_after_s": self.stale_after_s,
        }
        problems = []
        if lapsed:
            problems.append(
                f"{len(lapsed)} running run(s) without a heartbeat for over {self.stale_after_s:g}s"
            )
        if overdue:
            problems.append(f"{len(overdue)} run(s) past their timeout")
        if lag_ms > self.max_loop_lag_ms:
            problems.append(f"event loop lag {lag_ms:.0f} ms > {self.max_loop_lag_ms:g} ms")
        return (not problems), "; ".join(problems), details


async def loop_lag_ms(samples: int = 10, interval_s: float = 0.01) -> float:
    """Worst lateness of short sleeps over ``samples * interval_s`` (100 ms by default).

    A sleep that wakes late measures exactly what a blocked loop does to every other task (runs,
    heartbeats, HTTP handlers); the first sample is ``sleep(0)``, the pure scheduling delay.
    """
    loop = asyncio.get_running_loop()
    worst = 0.0
    for i in range(max(1, samples)):
        wanted = 0.0 if i == 0 else interval_s
        started = loop.time()
        await asyncio.sleep(wanted)
        worst = max(worst, loop.time() - started - wanted)
    return worst * 1e3
