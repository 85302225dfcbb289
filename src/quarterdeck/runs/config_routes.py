"""Which configuration a new run gets when its agent type has a canary: the routing decision.

Why at submission, and stored on the run: the share is decided once, when the run is created,
and written into the run (its settings in ``params["agent_config"]``, its canary and arm in
their columns), so a run keeps its configuration through retries, requeues and resumes on any
worker, and the comparison counts exactly the runs that were routed, however long they take.

Why a hash of the run id rather than a random draw: the same id always lands in the same arm, so
an assignment can be re-derived and tested, and arms are independent of submission order.

The routes come from the newest canary of each agent type (``rollouts/`` implements
:class:`ConfigRoutes`, cached per process); this module only decides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

Arm = Literal["stable", "candidate"]
_EMPTY: Mapping[str, Any] = MappingProxyType({})
BUCKETS = 10_000


@dataclass(frozen=True, slots=True)
class ConfigRoute:
    """The configuration in force for one agent type, according to its newest canary.

    ``stable``: the settings the stable arm runs with (what was in force when the canary
    started: empty, or an earlier promoted canary's). ``candidate``: the candidate arm's.
    ``live``: the canary is in progress and ``weight`` % of new runs go to the candidate;
    otherwise it ended, and everyone gets ``candidate`` if it was ``promoted``, else ``stable``.
    """

    canary_id: str
    live: bool
    weight: int
    stable: Mapping[str, Any] = field(default_factory=dict)
    candidate: Mapping[str, Any] = field(default_factory=dict)
    promoted: bool = False


class ConfigRoutes(Protocol):
    """Where submission finds the route of an agent type (None: no canary ever, YAML only)."""

    async def route(self, agent_type: str) -> ConfigRoute | None: ...


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one new run gets: the settings to apply over its agent type, and its arm."""

    settings: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    canary_id: str | None = None
    arm: Arm | None = None


UNROUTED = Assignment()


def bucket_of(run_id: str) -> int:
    """0..9999, uniform over run ids (the first four bytes of their SHA-256)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big") % BUCKETS


def assign(run_id: str, route: ConfigRoute | None, pinned: frozenset[str]) -> Assignment:
    """The arm of run ``run_id``. ``pinned``: settings the request itself fixes (``model``,
    ``max_turns``, ``timeout_s``, ``budget_usd``). A run that pins a setting the candidate
    changes is not enrolled: it would not run the candidate as configured, and counting it would
    blur the comparison. It gets the stable settings, as every run of an ended canary gets the
    settings that ended in force."""
    if route is None:
        return UNROUTED
    if not route.live:
        return Assignment(route.candidate if route.promoted else route.stable)
    changed = {k for k, v in route.candidate.items() if route.stable.get(k, _MISSING) != v}
    if changed & pinned:
        return Assignment(route.stable)
    if bucket_of(run_id) < route.weight * (BUCKETS // 100):
        return Assignment(route.candidate, route.canary_id, "candidate")
    return Assignment(route.stable, route.canary_id, "stable")


_MISSING = object()
