"""What the scaler observes (scaling/observe.py) from the run store's twin and real breakers, the
new per-worker read of the twin, and the scaler settings kept equal to the policy's defaults."""

from __future__ import annotations

from dataclasses import fields
from typing import get_args

from quarterdeck.config import Settings, load_settings
from quarterdeck.resilience.breaker import DATABASE, BreakerConfig, Breakers, breaker_name
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunCreate
from quarterdeck.runs.service import RunService
from quarterdeck.scaling.models import ScalerMode
from quarterdeck.scaling.observe import Observer
from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.scaling.wiring import scaler_config


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


async def add_runs(store: InMemoryRunStore, n: int) -> list[str]:
    """Queued runs through the real submission path, over the twin."""
    ids, _ = await RunService(load_settings(None), store).submit_batch(
        [RunCreate(prompt=f"p{i}") for i in range(n)]
    )
    return ids


def test_settings_defaults_are_the_policy_config_defaults() -> None:
    s = load_settings(None)
    made, default = scaler_config(s), ScalerConfig()
    for f in fields(ScalerConfig):
        if f.name == "concurrency_per_worker":
            assert (
                made.concurrency_per_worker
                == s.worker_concurrency
                == default.concurrency_per_worker
            )
            continue
        assert getattr(made, f.name) == getattr(default, f.name), f.name
    assert get_args(Settings.model_fields["scaler_mode"].annotation) == get_args(ScalerMode)


async def test_observes_queue_running_oldest_and_the_arrival_rate() -> None:
    clock = Clock()
    store = InMemoryRunStore(clock=clock)
    observer = Observer(store, arrivals_window_s=60.0)
    empty = await observer.observe(0.0, replicas=3, ready=2)
    assert (empty.queued, empty.running, empty.oldest_queued_s) == (0, 0, 0.0)
    assert empty.arrivals_per_s == 0.0 and (empty.replicas, empty.ready) == (3, 2)
    r1, r2, _, _ = await add_runs(store, 4)
    assert await store.claim(r1, "pod-a:1:x") is not None
    clock.t += 30
    obs = await observer.observe(10.0, replicas=3)
    assert (obs.queued, obs.running) == (3, 1)
    assert obs.oldest_queued_s is not None and 29 < obs.oldest_queued_s <= 31
    assert obs.arrivals_per_s == 4 / 60
    # A run that ended still arrived: the rate counts submissions, not what is in flight.
    await store.cancel(r2, None)
    assert (await observer.observe(20.0, replicas=3)).arrivals_per_s == 4 / 60
    clock.t += 31  # the four are older than the window now
    assert (await observer.observe(30.0, replicas=3)).arrivals_per_s == 0.0


async def test_an_open_provider_breaker_is_seen_and_the_database_breaker_is_not() -> None:
    breakers = Breakers(config=BreakerConfig(failure_threshold=1))
    provider = breaker_name("anthropic", "claude-sonnet-4-5")
    observer = Observer(InMemoryRunStore(), breakers, provider_breakers=[provider])
    assert not (await observer.observe(0.0, replicas=1)).provider_failing
    await breakers.record_failure(DATABASE)
    assert not (await observer.observe(1.0, replicas=1)).provider_failing
    await breakers.record_failure(provider)
    assert (await observer.observe(2.0, replicas=1)).provider_failing
    assert not (await Observer(InMemoryRunStore()).observe(0.0, replicas=1)).provider_failing


async def test_running_per_worker_counts_fresh_runs_by_host() -> None:
    clock = Clock()
    store = InMemoryRunStore(clock=clock)
    r1, r2, r3, _ = await add_runs(store, 4)
    await store.claim(r1, "pod-a:1:x")
    await store.claim(r2, "pod-a:2:y")
    await store.claim(r3, "pod-b:1:z")
    observer = Observer(store, heartbeat_stale_s=10.0)
    assert await observer.busy_pods() == {"pod-a": 2, "pod-b": 1}
    clock.t += 11  # no heartbeat since: those workers may be gone, their runs count for none
    assert await observer.busy_pods() == {}
