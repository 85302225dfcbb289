"""A run of a model without a price is priced at the fallback and stopped by a tenant budget,
through the real runtime (Postgres, worker, executor, resilient caller, simulated provider)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quarterdeck.metrics import REGISTRY
from quarterdeck.providers.types import Usage
from quarterdeck.runs.models import RunCreate, RunStatus
from quarterdeck.runtime import Runtime

pytestmark = pytest.mark.asyncio

TENANT = "unpriced-co"
MODEL = "mystery-model-7"  # the simulated provider answers as "simulated-mystery-model-7"


def unpriced_tokens() -> float:
    # The model label is bounded: an unpriced model is "other" unless configured.
    labels = {"agent_type": "coder", "model": "other"}
    return REGISTRY.get_sample_value("claude_agent_unpriced_tokens_total", labels) or 0.0


async def test_an_unpriced_model_is_charged_the_fallback_and_stopped_by_the_tenant_budget(
    make_settings,
) -> None:
    rt = Runtime(make_settings(provider="simulated", simulated_turns=2))
    await rt.start()
    try:
        tokens_before = unpriced_tokens()
        first, _ = await rt.runs.submit(RunCreate(prompt="fix the bug", model=MODEL), tenant=TENANT)
        done = await rt.runs.wait(first.id, 30, tenant=TENANT)
        assert done.status == RunStatus.succeeded, done.error
        turns = [e for e in await rt.runs.events(first.id, TENANT) if e.type == "turn"]
        assert turns and all(t.data["cost_estimated"] is True for t in turns)
        fallback = rt.pricing.fallback  # unset QUARTERDECK_UNKNOWN_MODEL_PRICE: the dearest
        assert fallback == max(
            (rt.pricing.table.price_for(m) for m in rt.pricing.models),
            key=lambda p: (p.output, p.input, p.cache_write_1h),  # type: ignore[union-attr]
        )
        expected = sum(fallback.cost(Usage.from_dict(t.data["usage"])) for t in turns)
        assert done.cost_usd == pytest.approx(float(expected)) and expected > 0
        assert [t.data["cost_usd"] for t in turns] == pytest.approx(
            [float(fallback.cost(Usage.from_dict(t.data["usage"]))) for t in turns]
        )
        used = sum(Usage.from_dict(t.data["usage"]).total_tokens for t in turns)
        assert unpriced_tokens() - tokens_before == used, "still counted as unpriced tokens"

        # What the tenant spent is the fallback-priced cost: a daily budget just above it leaves
        # less than the next call's worst case, so the next run is refused before calling.
        spent = (await rt.budgets.status(TENANT)).daily_spent_usd
        assert spent == pytest.approx(expected)
        await rt.budgets.set(TENANT, daily=Decimal(str(expected)) * Decimal("1.01"), monthly=None)
        second, _ = await rt.runs.submit(RunCreate(prompt="again", model=MODEL), tenant=TENANT)
        stopped = await rt.runs.wait(second.id, 30, tenant=TENANT)
        assert stopped.status == RunStatus.budget_exceeded, stopped.error
        assert stopped.turns == 0 and (stopped.cost_usd or 0) == 0
        assert (await rt.budgets.status(TENANT)).daily_spent_usd == pytest.approx(expected)
    finally:
        await rt.stop()
