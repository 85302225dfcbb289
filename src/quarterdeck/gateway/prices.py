"""What a gateway call cost, and the most it could cost (what a budget reserves before it).

A client can name any model, and a call priced at zero would walk through every budget. So an
unknown model is priced as the configured fallback model or, when none is set, the most
expensive model in the table, and marked estimated: never free. That rule is
:class:`~quarterdeck.providers.pricing.Pricing`'s, shared with the run path. A stream that
ended before its final usage is billed at least a floor for the text it relayed (~4 characters
per token), and marked estimated too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from quarterdeck.gateway.meter import Metered
from quarterdeck.providers.pricing import (
    MILLION,
    ModelPrice,
    PriceTable,
    Pricing,
    most_expensive,
)

__all__ = ["GatewayPrices", "most_expensive", "server_tool_worst_case"]

WEB_SEARCH_USD = Decimal(10) / Decimal(1000)
"""Anthropic's server-side web search: $10 per 1,000 requests, on top of tokens."""
UNCAPPED_WEB_SEARCHES = 10
"""Searches held for a ``web_search`` tool that sets no ``max_uses``: the API caps nothing
there, so this is an assumption, not a bound (documented in the README)."""
CHARS_PER_TOKEN = 4
"""The floor estimate of output for a stream cut short: characters relayed / 4, rounded up."""


class GatewayPrices:
    """Prices gateway calls; every model gets a price (the rule is :class:`Pricing`'s, shared
    with the run path)."""

    def __init__(self, table: PriceTable | Pricing, fallback_model: str | None = None) -> None:
        self._pricing = table if isinstance(table, Pricing) else Pricing(table, fallback_model)

    @property
    def fallback(self) -> ModelPrice:
        """What an unknown model is priced as."""
        return self._pricing.fallback

    def price(self, model: str) -> tuple[ModelPrice, bool]:
        """The model's price, and whether it is the fallback's (an estimate)."""
        return self._pricing.price(model)

    def cost(self, model: str, metered: Metered) -> tuple[Decimal, bool]:
        """USD for one call and whether it is an estimate.

        Each token class at its own price (cache reads never at the input rate, 5-minute and
        1-hour cache writes apart, see :meth:`ModelPrice.cost`), plus web search requests. A
        call whose stream did not finish pays at least ``ceil(text_chars / 4)`` output tokens.
        An upstream error answered before any message started (a 4xx/5xx body, or an ``error``
        event first) costs exactly nothing: the upstream bills no tokens for it.
        """
        price, estimated = self.price(model)
        if metered.error_type is not None and not metered.started:
            return Decimal(0), False  # an error answer before any message is not billed
        usage = metered.usage
        if not metered.finished:
            estimated = True
            floor = math.ceil(metered.text_chars / CHARS_PER_TOKEN)
            if usage.output_tokens < floor:
                usage = replace(usage, output_tokens=floor)
        usd = price.cost(usage)
        if metered.web_search_requests:
            usd += metered.web_search_requests * WEB_SEARCH_USD
        return usd, estimated

    def worst_case(self, model: str, input_tokens: int, max_tokens: int) -> Decimal:
        """An upper bound of a call's cost before it is made, for a budget hold.

        Every input token at the dearest input-side rate (a prompt may be written to the 1-hour
        cache, which costs more than plain input) and ``max_tokens`` at the output price.
        Server-side tool fees are added by :func:`server_tool_worst_case`.
        """
        price, _ = self.price(model)
        input_rate = max(price.input, price.cache_write_5m, price.cache_write_1h)
        total = max(0, input_tokens) * input_rate + max(0, max_tokens) * price.output
        return total / MILLION


def server_tool_worst_case(body: Mapping[str, Any]) -> Decimal:
    """Fees a call's server-side tools may add on top of its tokens, for a budget hold.

    Each ``web_search`` tool may run up to its ``max_uses`` searches in one call (that is exact);
    one without ``max_uses`` is held for :data:`UNCAPPED_WEB_SEARCHES`. Other server tools carry
    no per-use fee."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return Decimal(0)
    searches = 0
    for tool in tools:
        if not isinstance(tool, dict) or not str(tool.get("type", "")).startswith("web_search"):
            continue
        uses = tool.get("max_uses")
        if isinstance(uses, int) and not isinstance(uses, bool) and uses > 0:
            searches += uses
        else:
            searches += UNCAPPED_WEB_SEARCHES
    return searches * WEB_SEARCH_USD
