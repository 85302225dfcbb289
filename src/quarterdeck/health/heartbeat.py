"""Probes a process answers on its metrics port, for pods that serve no API (``quarterdeck worker``).

A worker pod has no HTTP API, so the kubelet cannot ask its event loop ``/health``. The metrics
listener runs on a thread of its own and would answer even with the loop stuck, so it must not
simply say "ok": the loop stamps :class:`LoopHeartbeat` every second, and the listener's
``/health`` fails once that stamp is older than ``stale_after_s``, which gets a worker whose loop
is stuck (a blocking call, a deadlock) restarted. ``/ready`` adds the process's own state:
migrations applied, not draining. Neither touches Postgres or Redis, for the reason
:mod:`.dependencies` gives. Both answer without the metrics token: they say nothing but ok or not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Protocol

PROBE_PATHS = frozenset({"/health", "/ready"})
STALE_AFTER_S = 10.0


class ProcessState(Protocol):
    @property
    def migrated(self) -> bool: ...
    @property
    def draining(self) -> bool: ...


class LoopHeartbeat:
    """A monotonic timestamp the event loop refreshes; read from any thread."""

    def __init__(
        self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def age(self) -> float:
        return max(0.0, self.clock() - self.last)

    async def run(self) -> None:
        while True:
            self.beat()
            await asyncio.sleep(self.interval_s)


def probe(
    path: str,
    *,
    loop_age_s: float,
    migrated: bool,
    draining: bool,
    stale_after_s: float = STALE_AFTER_S,
) -> tuple[int, dict[str, object]]:
    """(HTTP status, body) for ``/health`` or ``/ready`` on the metrics port (pure)."""
    checks: dict[str, dict[str, object]] = {
        "event_loop": {"ok": loop_age_s <= stale_after_s, "heartbeat_age_s": round(loop_age_s, 3)}
    }
    if path == "/ready":
        checks["migrations"] = {"ok": migrated}
        checks["draining"] = {"ok": not draining}
    ok = all(bool(c["ok"]) for c in checks.values())
    word = ("ok" if ok else "unhealthy") if path == "/health" else ("ready" if ok else "not_ready")
    return (200 if ok else 503), {"status": word, "checks": checks}


def probe_response(
    path: str, heartbeat: LoopHeartbeat, state: ProcessState, stale_after_s: float = STALE_AFTER_S
) -> tuple[str, bytes]:
    """The WSGI status line and JSON body for a probe path."""
    status, body = probe(
        path,
        loop_age_s=heartbeat.age(),
        migrated=state.migrated,
        draining=state.draining,
        stale_after_s=stale_after_s,
    )
    line = "200 OK" if status == 200 else "503 Service Unavailable"
    return line, json.dumps(body).encode()
