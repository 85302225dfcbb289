"""Kubernetes probes.

``/health`` is liveness: it answers from the event loop and touches no dependency, so a database
or API outage never gets healthy pods restarted (the guide's check paid for an Anthropic call every
10 s). ``/ready`` is readiness: migrations applied, database reachable, not draining.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from quarterdeck.kit.wiring import provide

router = APIRouter(tags=["probes"])


class Pingable(Protocol):
    async def ping(self) -> None: ...


class Readiness(Protocol):
    """What ``/ready`` reads of the process; the runtime satisfies it.

    A protocol rather than the runtime itself: the runtime sits floors above this module. It is
    registered as soon as the app exists, before the runtime starts, so a starting process
    answers ``/ready`` with its checks (database not reachable yet) rather than a bare 503.
    """

    @property
    def migrated(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def db(self) -> Pingable: ...


Process = Annotated[Readiness, Depends(provide(Readiness))]


@router.get("/health", summary="Liveness: the process and its event loop respond")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: migrations applied, database reachable, not draining")
async def ready(runtime: Process) -> JSONResponse:
    checks: dict[str, dict[str, Any]] = {}
    checks["migrations"] = {"ok": bool(runtime.migrated)}
    started = time.perf_counter()
    try:
        await asyncio.wait_for(runtime.db.ping(), timeout=2.0)
        checks["database"] = {
            "ok": True,
            "latency_ms": round((time.perf_counter() - started) * 1e3, 2),
        }
    except Exception as exc:
        checks["database"] = {"ok": False, "error": str(exc) or type(exc).__name__}
    checks["draining"] = {"ok": not runtime.draining}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
    )
