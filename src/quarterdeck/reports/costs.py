"""The report's cost and ROI sections: spend rolled up from the billing records, cache savings
priced with the deployment's price table, budget use, and the ROI estimate from user inputs.

Why ROI only from inputs: "hours saved" and "ROI 312 %" are assumptions, not measurements (the
guide's figures were constants). The section computes them only from an hourly cost and minutes
saved per successful run that a person supplied, prints those inputs beside the result, and
says which settings to set when they are missing.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from quarterdeck.providers.pricing import PriceTable
from quarterdeck.reports import cost_repository as repo
from quarterdeck.reports.build import Period
from quarterdeck.reports.compute import ratio
from quarterdeck.reports.models import (
    BudgetUse,
    CacheSavings,
    CostGroup,
    CostSection,
    RoiInputs,
    RoiSection,
)

__all__ = ["ROI_MISSING_NOTE", "cost", "roi"]

MILLION = Decimal(1_000_000)

ROI_MISSING_NOTE = (
    "ROI is an estimate from your inputs, and none were given. Set "
    "QUARTERDECK_REPORT_HOURLY_COST_USD and QUARTERDECK_REPORT_MINUTES_SAVED_PER_RUN, or pass "
    "--hourly-cost and --minutes-saved (API: hourly_cost= and minutes_saved=)."
)


def _group(key: str, runs_usd: float, gateway_usd: float) -> CostGroup:
    return CostGroup(
        key=key, runs_usd=runs_usd, gateway_usd=gateway_usd, total_usd=runs_usd + gateway_usd
    )


def cache_savings(tokens_by_model: dict[str, int], prices: PriceTable) -> CacheSavings:
    """What the cache-read tokens would have cost at each model's input price, against what
    they cost at its cache-read price."""
    at_input = at_cache = Decimal(0)
    unpriced: list[str] = []
    for model, tokens in sorted(tokens_by_model.items()):
        if tokens == 0:
            continue
        price = prices.price_for(model)
        if price is None:
            unpriced.append(model)
            continue
        at_input += tokens * price.input / MILLION
        at_cache += tokens * price.cache_read / MILLION
    return CacheSavings(
        cache_read_tokens=sum(tokens_by_model.values()),
        at_input_price_usd=float(at_input),
        at_cache_price_usd=float(at_cache),
        savings_usd=float(at_input - at_cache),
        unpriced_models=unpriced,
    )


async def cost(conn: asyncpg.Connection, p: Period, prices: PriceTable) -> CostSection:
    groups = await repo.spend_groups(conn, p.start, p.end, p.tenant)
    runs = await repo.run_costs(conn, p.start, p.end, p.tenant)
    tenants: dict[str, list[float]] = {}
    models: dict[str, list[float]] = {}
    cache_tokens: dict[str, int] = {}
    uncertain = {"run": 0, "gateway": 0}
    for g in groups:
        i = 0 if g["source"] == "run" else 1
        for table, key in ((tenants, str(g["tenant"])), (models, str(g["model"]))):
            table.setdefault(key, [0.0, 0.0])[i] += float(g["cost"])
        cache_tokens[g["model"]] = cache_tokens.get(g["model"], 0) + int(g["cache_read"])
        uncertain[g["source"]] += int(g["uncertain"])
    runs_usd = sum(v[0] for v in tenants.values())
    gateway_usd = sum(v[1] for v in tenants.values())
    budgets = []
    for b in await repo.budgets(conn, p.tenant):
        spent = sum(tenants.get(str(b["tenant"]), [0.0, 0.0]))
        budgets.append(
            BudgetUse(
                tenant=b["tenant"],
                monthly_usd=b["monthly"],
                daily_usd=b["daily"],
                spent_usd=spent,
                used=None if b["monthly"] is None else ratio(spent, b["monthly"]),
            )
        )
    if not groups and int(runs["runs"]) == 0:
        return CostSection(
            has_data=False, note=f"No spend was recorded in {p.month}.", budgets=budgets
        )
    notes = []
    if uncertain["run"] or int(runs["unknown"]):
        notes.append(f"{int(runs['unknown'])} run(s) have a cost that is not fully known")
    if uncertain["gateway"]:
        notes.append(f"{uncertain['gateway']} gateway call(s) were priced at a fallback price")
    cache = cache_savings(cache_tokens, prices)
    if cache.unpriced_models:
        notes.append("cache savings leave out models without a price")
    by = sorted(tenants.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    by_model = sorted(models.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
    return CostSection(
        has_data=True,
        note="; ".join(notes).capitalize() + "." if notes else None,
        total_usd=runs_usd + gateway_usd,
        runs_usd=runs_usd,
        gateway_usd=gateway_usd,
        per_run_usd=ratio(float(runs["cost"]), int(runs["runs"])),
        per_successful_run_usd=ratio(float(runs["cost"]), int(runs["succeeded"])),
        unknown_cost_runs=int(runs["unknown"]),
        estimated_cost_calls=uncertain["gateway"],
        by_tenant=[_group(k, v[0], v[1]) for k, v in by],
        by_model=[_group(k, v[0], v[1]) for k, v in by_model],
        cache=cache,
        budgets=budgets,
    )


def roi(inputs: RoiInputs, succeeded: int, total_cost_usd: float) -> RoiSection:
    """The estimate from the inputs, or a section that says which inputs to set."""
    hourly, minutes = inputs.hourly_cost_usd, inputs.minutes_saved_per_successful_run
    if hourly is None or minutes is None:
        return RoiSection(has_data=False, note=ROI_MISSING_NOTE, inputs=inputs)
    if succeeded == 0 and total_cost_usd == 0:
        return RoiSection(
            has_data=False,
            note="No successful runs and no spend were recorded: there is nothing to estimate.",
            inputs=inputs,
        )
    hours = succeeded * minutes / 60.0
    value = hours * hourly
    return RoiSection(
        has_data=True,
        note="An estimate from the inputs shown, not a measurement.",
        inputs=inputs,
        successful_runs=succeeded,
        hours_saved=hours,
        value_usd=value,
        cost_usd=total_cost_usd,
        net_usd=value - total_cost_usd,
        roi=ratio(value - total_cost_usd, total_cost_usd),
    )
