"""A month's cost as FinOps FOCUS rows (CSV), for finance tools that read FOCUS.

Why FOCUS: it is the column set cost tools already import (BilledCost, EffectiveCost, ListCost,
the billing and charge periods, ServiceName, SubAccountId, Tags), so a month of agent spend
lands next to cloud bills without a custom mapping. One row is one UTC day x tenant x model x
source (a run's own model calls, or gateway calls) x agent type, summed by Postgres from the same
billing records the report's cost section uses, so the rows' BilledCost sums to its total.

How the columns are filled (FOCUS 1.x, see the research notes §4.2):
- BilledCost = EffectiveCost = the recorded cost (no commitments or amortized purchases exist).
- ListCost = the token classes priced at the current price table; the recorded cost when the
  model has no price (never a made-up zero).
- ConsumedQuantity = every token (input, output, cache writes and reads), ConsumedUnit Tokens;
  PricingQuantity = the same in millions, PricingUnit "1M Tokens" (prices are per million).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from quarterdeck.providers.pricing import PriceTable
from quarterdeck.reports.build import Period

__all__ = ["FOCUS_COLUMNS", "focus_csv", "focus_records"]

FOCUS_COLUMNS: tuple[str, ...] = (
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "ChargeDescription",
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingCurrency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "PricingQuantity",
    "PricingUnit",
    "ServiceName",
    "ServiceCategory",
    "ResourceId",
    "SubAccountId",
    "Tags",
)
"""The header, in this order always (a consumer may map columns by position)."""

MILLION = Decimal(1_000_000)
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def service_name(model: str, source: str) -> str:
    """The provider's API the charge is for: the gateway speaks Anthropic's Messages API; a
    run's own calls go to the model's provider."""
    if source == "gateway" or "claude" in model.lower():
        return "Anthropic Messages API"
    if model.lower().startswith("simulated"):
        return "Simulated provider"
    return "OpenAI-compatible API"


def _tokens(row: Any) -> int:
    return int(
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_write_5m_tokens"]
        + row["cache_write_1h_tokens"]
        + row["cache_read_tokens"]
    )


def list_cost(row: Any, prices: PriceTable) -> Decimal:
    price = prices.price_for(str(row["model"]))
    if price is None:
        return Decimal(row["cost"])
    total: Decimal = (
        row["input_tokens"] * price.input
        + row["output_tokens"] * price.output
        + row["cache_write_5m_tokens"] * price.cache_write_5m
        + row["cache_write_1h_tokens"] * price.cache_write_1h
        + row["cache_read_tokens"] * price.cache_read
    )
    return total / MILLION


def focus_records(p: Period, rows: Sequence[Any], prices: PriceTable) -> list[dict[str, str]]:
    """The FOCUS rows of ``rows`` (from :func:`cost_repository.focus_rows`), as strings."""
    out: list[dict[str, str]] = []
    for r in rows:
        day = r["day"]
        tokens = _tokens(r)
        cost = Decimal(r["cost"])
        what = "model calls of runs" if r["source"] == "run" else "gateway calls"
        tags = {"source": r["source"], "agent_type": r["agent_type"]}
        out.append(
            {
                "BillingPeriodStart": p.start.strftime(_TIME),
                "BillingPeriodEnd": p.end.strftime(_TIME),
                "ChargePeriodStart": f"{day.isoformat()}T00:00:00Z",
                "ChargePeriodEnd": _next_day(day),
                "ChargeCategory": "Usage",
                "ChargeDescription": f"{r['model']}: {r['records']} {what}",
                "BilledCost": _money(cost),
                "EffectiveCost": _money(cost),
                "ListCost": _money(list_cost(r, prices)),
                "BillingCurrency": "USD",
                "ConsumedQuantity": str(tokens),
                "ConsumedUnit": "Tokens",
                "PricingQuantity": _money(Decimal(tokens) / MILLION),
                "PricingUnit": "1M Tokens",
                "ServiceName": service_name(str(r["model"]), str(r["source"])),
                "ServiceCategory": "AI and Machine Learning",
                "ResourceId": str(r["model"]),
                "SubAccountId": str(r["tenant"]),
                "Tags": json.dumps(tags, sort_keys=True),
            }
        )
    return out


def _next_day(day: date) -> str:
    return f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z"


def _money(value: Decimal) -> str:
    """Fixed-point text with 10 decimals (the stored precision), never an exponent."""
    return f"{value.quantize(Decimal('0.0000000001')):f}"


def focus_csv(records: Sequence[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FOCUS_COLUMNS), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue().encode()
