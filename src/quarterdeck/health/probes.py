"""Kubernetes probes.

``/health`` is liveness: it answers from the event loop and touches no dependency, so a database
or API outage never gets healthy pods restarted (the guide's check paid for an Anthropic call every
10 s). It reports the shared dependencies as the last ``/ready`` saw them.

``/ready`` is readiness, and fails only for what is local to this pod: migrations not applied yet,
draining after SIGTERM, an event loop too busy to serve. A shared dependency that is down
(Postgres, Redis) is reported in its body but keeps the pod ready, so clients still get the app's
503 + ``Retry-After`` and cached reads rather than no pod at all. Why, in
:mod:`.dependencies`.
"""

from __future__ import annotations

from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from quarterdeck.config import Settings
from quarterdeck.health.checks import loop_lag_ms
from quarterdeck.health.dependencies import (
    Pingable,
    SharedDependencies,
    local_checks,
    verdict,
)
from quarterdeck.kit.wiring import provide

router = APIRouter(tags=["probes"])
_STATE_KEY = "shared_dependencies"


class Readiness(Protocol):
    """What ``/ready`` reads of the process; the runtime satisfies it.

    A protocol rather than the runtime itself: the runtime sits floors above this module. It is
    registered as soon as the app exists, before the runtime starts, so a starting process
    answers ``/ready`` with its checks (migrations not applied yet) rather than a bare 503.
    """

    @property
    def settings(self) -> Settings: ...
    @property
    def migrated(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def db(self) -> Pingable: ...


Process = Annotated[Readiness, Depends(provide(Readiness))]


def shared_dependencies(request: Request) -> SharedDependencies:
    """This app's one :class:`SharedDependencies` (what ``/health`` reports is what ``/ready``
    last saw in the same process)."""
    found = getattr(request.app.state, _STATE_KEY, None)
    if found is None:
        found = SharedDependencies()
        setattr(request.app.state, _STATE_KEY, found)
    assert isinstance(found, SharedDependencies)
    return found


Dependencies = Annotated[SharedDependencies, Depends(shared_dependencies)]


@router.get(
    "/health",
    summary="Liveness: the process and its event loop respond; shared dependencies as last seen",
)
async def health(dependencies: Dependencies) -> dict[str, object]:
    return {"status": "ok", "dependencies": dependencies.snapshot()}


@router.get(
    "/ready",
    summary="Readiness: migrations applied, not draining, event loop responsive "
    "(a shared dependency that is down is reported, not failed on)",
)
async def ready(runtime: Process, dependencies: Dependencies) -> JSONResponse:
    lag = await loop_lag_ms(samples=3, interval_s=0.002)
    checks = local_checks(migrated=runtime.migrated, draining=runtime.draining, loop_lag_ms=lag)
    db = getattr(runtime, "db", None)  # not set before the runtime starts
    redis = runtime.settings.redis_url
    states = await dependencies.refresh(db, redis.get_secret_value() if redis else None)
    status, word = verdict(checks, states)
    body = {
        "status": word,
        "checks": checks,
        "dependencies": {name: state.to_dict() for name, state in sorted(states.items())},
    }
    return JSONResponse(body, status_code=status)
