"""1,000 distinct operations, models and projects leave every claude_agent_* metric's series
count bounded.

The values go in the way users send them: runs submitted through the run service (what
``POST /v1/runs`` calls) to its in-memory twin, handled by the worker, executed by the executor,
their model calls made and counted by the resilient caller against the simulated provider;
coverage goes through the planner's
``project_label`` and ``record_coverage``, as its finalize step does. The label bounds are the
ones the runtime configures at start.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from quarterdeck import metrics
from quarterdeck.agents.coverage import CoverageResult, record_coverage
from quarterdeck.agents.planner import project_label
from quarterdeck.config import load_settings
from quarterdeck.kit.latency import parse_latency
from quarterdeck.providers.factory import build_pricing, configure_metric_labels
from quarterdeck.providers.simulated import SimulatedProvider
from quarterdeck.resilience import Breakers
from quarterdeck.resilience.calls import ResilientCaller
from quarterdeck.runs.executor import ExecutorConfig, RunExecutor
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunCreate, RunStatus
from quarterdeck.runs.service import RunService
from quarterdeck.runs.worker import WorkerPool
from tests.unit.test_worker_logic import Ctx, Plain

N = 1_000
REACHED = {
    "requests": (
        "claude_agent_requests_total",
        {"agent_type": "coder", "status": "success", "operation": "other"},
    ),
    "turns": ("claude_agent_turns_total", {"agent_type": "coder", "model": "other"}),
    "coverage": (
        "claude_agent_test_coverage_percent_count",
        {"agent_type": "coder", "project": "other"},
    ),
}


def value(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def series() -> Counter[str]:
    """Samples per claude_agent_* metric family in the registry."""
    counts: Counter[str] = Counter()
    for family in metrics.REGISTRY.collect():
        if family.name.startswith("claude_agent_"):
            counts[family.name] += len(family.samples)
    return counts


async def test_a_thousand_distinct_values_leave_every_series_count_bounded(tmp_path: Path):
    settings = load_settings(None, data_dir=tmp_path, max_attempts=1)
    pricing = build_pricing(settings)
    configure_metric_labels(settings, pricing)
    try:
        store = InMemoryRunStore()
        provider = SimulatedProvider(parse_latency("0"), turns=2)
        caller = ResilientCaller(provider, pricing=pricing, breakers=Breakers())
        executor = RunExecutor(
            store, provider, Plain(max_turns=5), pricing.cost, ExecutorConfig(), caller
        )
        worker = WorkerPool(settings, store, executor, database_url="postgresql://unused")
        service = RunService(settings, store)
        coverage = CoverageResult(percent=80.0, tests_passed=True, exit_code=0, summary="")

        before = series()
        reached_before = {k: value(*v) for k, v in REACHED.items()}
        for i in range(N):
            run, _ = await service.submit(
                RunCreate(prompt=f"task {i}", operation=f"op-{i}", model=f"model-{i}")
            )
            job = store.next_job()
            assert job is not None
            await worker.handle(job[1], Ctx())
            done = await store.get(run.id)
            assert done is not None and done.status == RunStatus.succeeded, done
            spec = {"type": "git", "value": f"https://github.com/acme/project-{i}.git"}
            record_coverage(run.agent_type, project_label(spec), coverage)
        after = series()
    finally:
        metrics.configure_labels(None)

    grown = {name: after[name] - before[name] for name in after if after[name] > before[name]}
    # The calls did reach the series as "other" (else the bound below would hold vacuously) ...
    reached = {k: value(*v) - reached_before[k] for k, v in REACHED.items()}
    assert reached == {"requests": N, "turns": 2 * N, "coverage": N}, reached
    assert value("claude_agent_unpriced_tokens_total", {"agent_type": "coder", "model": "other"})
    # ... and each metric grew by a handful of series (the "other" ones), not by thousands.
    assert max(grown.values()) <= 40, grown


def test_every_outcome_series_exists_at_zero_before_its_first_run() -> None:
    """``increase()`` cannot count a series' first value: a canary's first error would be lost
    if its ``status="error"`` series appeared only then (the rollout analysis reads it)."""

    def sample(status: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(
            "claude_agent_requests_total",
            {"agent_type": "zeroed-type", "status": status, "operation": "task"},
        )

    assert sample("error") is None
    metrics.zero_outcomes(["zeroed-type"])
    assert (sample("success"), sample("error"), sample("cancelled")) == (0.0, 0.0, 0.0)
    other = metrics.REGISTRY.get_sample_value(
        "claude_agent_requests_total",
        {"agent_type": "zeroed-type", "status": "error", "operation": "other"},
    )
    assert other == 0.0
