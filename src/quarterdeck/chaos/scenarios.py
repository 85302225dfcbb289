"""The six faults of the chaos suite: what each injects, heals, and which incident it expects.

A scenario only says *what* to break and *how* to mend it; :mod:`.runner` owns the load, the
timing and the audit, so every scenario is measured the same way. Faults with a duration
(provider errors, a dead Redis, a stopped Postgres) hold for ``fault_s``, then heal; kills are
instant and the runner then measures how the deployment routes around the dead process. A
*permanent* fault (the primary model dies for good) is never healed while the runner measures:
the deployment has to recover around it (the fallback serves), and only the runner's cleanup
heals the shared fake provider before the next scenario's fresh deployment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from quarterdeck.chaos.deploy import LocalDeployment, start_postgres, stop_postgres
from quarterdeck.chaos.measure import leader_of
from quarterdeck.chaos.messages_api import MessagesAPIServer

PRIMARY = "claude-sonnet-4-5"
FALLBACK = "claude-haiku-4-5"


class Context(Protocol):
    deployment: LocalDeployment
    provider: MessagesAPIServer
    state: dict[str, object]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    inject: Callable[[Context], list[str]]
    heal: Callable[[Context], list[str]] = lambda ctx: []
    expect_incident: str | None = None  # the health check whose incident must open and resolve
    timed: bool = True  # holds for fault_s (False: an instant kill)
    permanent: bool = False  # never healed while measured: recovery counts from the fault's start
    env: dict[str, str] = field(default_factory=dict)


def _provider_down(ctx: Context) -> list[str]:
    ctx.provider.set_fault("429+529")
    return ["provider answers 429 (retry-after) and 529 alternately, every model"]


def _provider_up(ctx: Context) -> list[str]:
    ctx.provider.heal()
    return ["provider healthy"]


def _primary_down(ctx: Context) -> list[str]:
    ctx.provider.set_fault("500", PRIMARY)
    return [f"{PRIMARY} answers 500 on every call, for good; {FALLBACK} healthy"]


def _redis_kill(ctx: Context) -> list[str]:
    assert ctx.deployment.redis is not None
    ctx.deployment.redis.kill()
    return ["redis-server SIGKILLed"]


def _redis_start(ctx: Context) -> list[str]:
    assert ctx.deployment.redis is not None
    ctx.deployment.redis.start()
    return ["redis-server restarted (empty)"]


def _pg_stop(ctx: Context) -> list[str]:
    ctx.state["socket_dir"] = stop_postgres(ctx.deployment.pgdata)
    return ["postgres stopped (pg_ctl -m fast)"]


def _pg_start(ctx: Context) -> list[str]:
    start_postgres(ctx.deployment.pgdata, str(ctx.state["socket_dir"]))
    return ["postgres started"]


def _worker_kill(ctx: Context) -> list[str]:
    victim = next(r for r in ctx.deployment.replicas if r.command == "worker" and r.alive)
    victim.kill()
    return [f"SIGKILL {victim.name} (pid {victim.popen.pid}) mid-run"]


def _leader_kill(ctx: Context) -> list[str]:
    urls = [r.url for r in ctx.deployment.api_replicas()]
    deadline = time.monotonic() + 30
    leader = leader_of(urls)
    while leader is None and time.monotonic() < deadline:
        time.sleep(0.5)
        leader = leader_of(urls)
    if leader is None:
        return ["no leader found; nothing killed"]
    victim = next(r for r in ctx.deployment.replicas if r.http_port and r.url == leader)
    victim.kill()
    ctx.state["killed_leader"] = victim.url
    return [f"SIGKILL leader {victim.name} (pid {victim.popen.pid})"]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "provider-errors",
            "provider 429/529, then recovers",
            _provider_down,
            _provider_up,
            expect_incident="anthropic_api",
        ),
        Scenario(
            "primary-down",
            "primary model fails for good, fallback serves",
            _primary_down,
            expect_incident="anthropic_api",
            permanent=True,
            env={"QUARTERDECK_MODEL_FALLBACKS": f'{{"{PRIMARY}": ["{FALLBACK}"]}}'},
        ),
        Scenario(
            "redis-kill",
            "Redis killed, then restarted",
            _redis_kill,
            _redis_start,
            expect_incident="redis",
        ),
        Scenario(
            "postgres-restart",
            "Postgres restarted",
            _pg_stop,
            _pg_start,
            expect_incident="database",
        ),
        Scenario("worker-kill", "a worker is SIGKILLed", _worker_kill, timed=False),
        Scenario("leader-kill", "the leader replica is SIGKILLed", _leader_kill, timed=False),
    )
}
