"""Typed service lookup for FastAPI routes: a registry keyed by type, and ``provide(cls)``.

Routers live inside their domains and the composition root (``app``, ``runtime``) sits above
all of them, so no module in between can hold every service: it would import every domain and
be imported by every domain. The mechanism therefore lives here, on the lowest helper floor,
and knows no service. The composition root fills an app's :class:`Services` at startup; each
router declares its own alias once::

    Runs = Annotated[RunService, Depends(provide(RunService))]

    @router.get("/{run_id}")
    async def get_run(run_id: str, runs: Runs) -> Run: ...

A route whose service is not registered (the app is not started, or this process does not run
that part) answers 503 rather than failing with an ``AttributeError`` deep in a handler. Tests
that mount a router on a bare ``FastAPI()`` register exactly the stand-ins they need with
``services(app).add(...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from fastapi import Request
from starlette.applications import Starlette

from quarterdeck.exceptions import Unavailable

T = TypeVar("T")

Key = Callable[..., T]
"""A service's key: its class, or a ``Protocol`` it satisfies.

Typed as a callable rather than ``type[T]`` because mypy refuses protocols and other abstract
classes where ``type[T]`` is expected, and a protocol is the right key for a collaborator that
only needs a few attributes of a bigger object (the readiness probe and the runtime, say).
"""

STATE_ATTRIBUTE = "services"
"""Where an app keeps its registry: one per app, so test apps never share services."""


class Services:
    """Service instances keyed by the type the routes ask for."""

    def __init__(self) -> None:
        self._by_key: dict[object, object] = {}

    def add(self, key: Key[T], instance: T) -> None:
        """Register ``instance`` as the ``key`` service, replacing an earlier one.

        Under a protocol key, pass the instance through a variable annotated with the protocol:
        mypy otherwise solves ``T`` from the instance's class and rejects the key.
        """
        self._by_key[key] = instance

    def get(self, key: Key[T]) -> T | None:
        """The ``key`` service, or None when nothing registered one."""
        # The cast is sound: add() is the only writer and pairs each key with its own type.
        return cast("T | None", self._by_key.get(key))

    def __contains__(self, key: object) -> bool:
        return key in self._by_key


def services(app: Starlette) -> Services:
    """``app``'s registry, created empty on first use (bare test apps never set one up)."""
    found = getattr(app.state, STATE_ATTRIBUTE, None)
    if isinstance(found, Services):
        return found
    registry = Services()
    setattr(app.state, STATE_ATTRIBUTE, registry)
    return registry


_required: dict[tuple[object, str | None], Callable[[Request], object]] = {}
_optional: dict[object, Callable[[Request], object]] = {}


def provide(key: Key[T], *, unavailable: str | None = None) -> Callable[[Request], T]:
    """A FastAPI dependency returning the app's ``key`` service, or raising 503 without one.

    ``unavailable`` is the 503's detail. The same arguments return the same dependency, so
    FastAPI resolves it once per request and ``app.dependency_overrides`` can target it.
    """
    cache_key = (key, unavailable)
    cached = _required.get(cache_key)
    if cached is not None:
        return cast("Callable[[Request], T]", cached)
    name = getattr(key, "__name__", repr(key))
    detail = unavailable or f"{name} is not available in this process (not started yet?)"

    def dependency(request: Request) -> T:
        found = services(request.app).get(key)
        if found is None:
            raise Unavailable(detail)
        return found

    dependency.__name__ = f"provide_{name}"
    _required[cache_key] = dependency
    return dependency


def provide_optional(key: Key[T]) -> Callable[[Request], T | None]:
    """A FastAPI dependency returning the app's ``key`` service, or None without one.

    For services a route can do without: the audit trail of a process that does not audit.
    """
    cached = _optional.get(key)
    if cached is not None:
        return cast("Callable[[Request], T | None]", cached)

    def dependency(request: Request) -> T | None:
        return services(request.app).get(key)

    dependency.__name__ = f"provide_optional_{getattr(key, '__name__', 'service')}"
    _optional[key] = dependency
    return dependency
