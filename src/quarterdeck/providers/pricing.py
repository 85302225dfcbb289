"""What a model call cost, from a price table kept as data (``pricing.yaml``), not code.

Prices change more often than code should; keeping them in a data file with ``as_of`` and
``source`` per row makes every number auditable and lets operators override them from config
without a release. Money is :class:`~decimal.Decimal` end to end, so summing millions of calls
does not drift.

:class:`PriceTable` alone says an unknown model's cost is unknown (``None``). Nothing that bills
uses that directly: :class:`Pricing` prices an unknown model as a configured fallback model or,
unset, the most expensive model in the table, and marks the cost estimated. A zero, or a None
summed as zero, would let any model name walk through every budget, so the run path and the
gateway share this one rule (``QUARTERDECK_UNKNOWN_MODEL_PRICE``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

import structlog
import yaml

from quarterdeck.exceptions import ConfigError
from quarterdeck.providers.types import Usage

log = structlog.get_logger()

MILLION = Decimal(1_000_000)
PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_ROW_FIELDS = {*PRICE_FIELDS, "as_of", "source", "same_as"}
# Anthropic's published multipliers of the input price, used to fill in cache prices for models
# added by override with only input/output given.
_DERIVED = {
    "cache_write_5m": Decimal("1.25"),
    "cache_write_1h": Decimal("2"),
    "cache_read": Decimal("0.1"),
}
# What may follow a known model name and still be the same model: a snapshot date, "latest", a
# Vertex "@date", a Bedrock "-v1:0". A bare "-7" is a different model and must not match.
_SUFFIX = re.compile(r"^(?:[-@](?:\d{8}|latest|v\d+(?::\d+)?))+$")
# Bedrock ("us.anthropic.claude-...") and gateway ("anthropic/claude-...") spellings.
_VENDOR_PREFIX = re.compile(r"^(?:[a-z]{2,4}\.)?anthropic[./]")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for each token class of one model."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    as_of: date | None = None
    source: str = ""

    def cost(self, usage: Usage) -> Decimal:
        """Each token class times its own price. Cache reads are never billed at the input rate
        and cache writes are counted once: the 5m/1h split when reported, and any part of
        ``cache_creation_input_tokens`` the split does not cover at the (default) 5m rate."""
        split = usage.cache_creation_5m_tokens + usage.cache_creation_1h_tokens
        unsplit = max(0, usage.cache_creation_input_tokens - split)
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + (usage.cache_creation_5m_tokens + unsplit) * self.cache_write_5m
            + usage.cache_creation_1h_tokens * self.cache_write_1h
            + usage.cache_read_input_tokens * self.cache_read
        )
        return total / MILLION


class PriceTable:
    """Model name -> :class:`ModelPrice`, resolving dated ids and vendor spellings by prefix."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = {name.lower(): price for name, price in prices.items()}
        self._warned: set[str] = set()

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> PriceTable:
        """The bundled ``pricing.yaml`` (or ``data`` in the same shape), with ``overrides``
        merged on top field by field: ``{"claude-sonnet-4-5": {"input": "2.50"}}`` changes one
        price; a new model needs ``input`` and ``output`` (cache prices then follow Anthropic's
        multipliers) or ``same_as``. Raises ConfigError naming every bad field."""
        if data is None:
            text = resources.files("quarterdeck.providers").joinpath("pricing.yaml").read_text()
            data = yaml.safe_load(text) or {}
        rows: dict[str, dict[str, Any]] = {
            str(k).lower(): dict(v) for k, v in (data.get("models") or {}).items()
        }
        for model, fields in (overrides or {}).items():
            key = str(model).lower()
            if "same_as" in fields:
                rows[key] = dict(fields)
            else:
                base = rows.get(key, {})
                merged = {} if "same_as" in base else dict(base)
                merged.update(fields)
                merged.setdefault("source", "config override")
                rows[key] = merged
        errors: list[tuple[str, str]] = []
        prices: dict[str, ModelPrice] = {}
        for name, row in rows.items():
            if "same_as" not in row:
                price = _parse_row(name, row, errors)
                if price is not None:
                    prices[name] = price
        for name, row in rows.items():
            if "same_as" in row:
                target = str(row["same_as"]).lower()
                if target in prices:
                    prices[name] = prices[target]
                elif target not in rows:  # (a target that failed to parse is reported already)
                    errors.append((f"pricing.{name}.same_as", f"unknown model {target!r}"))
        if errors:
            raise ConfigError(errors)
        return cls(prices)

    @property
    def models(self) -> list[str]:
        return sorted(self._prices)

    def resolve(self, model: str) -> str | None:
        """The table row a model id prices as, or None when no row safely applies."""
        name = _VENDOR_PREFIX.sub("", model.strip().lower())
        if name in self._prices:
            return name
        best: str | None = None
        for known in self._prices:
            if name.startswith(known) and _SUFFIX.match(name[len(known) :]):
                if best is None or len(known) > len(best):
                    best = known
        return best

    def price_for(self, model: str) -> ModelPrice | None:
        row = self.resolve(model)
        if row is None and model.startswith("simulated-"):
            # The simulated provider answers a run of a real model as ``simulated-<model>``:
            # priced like its namesake, so a demo's costs look real rather than the fallback's.
            row = self.resolve(model.removeprefix("simulated-"))
        return self._prices[row] if row is not None else None

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """USD for one call, or None when the model's price is unknown (never zero)."""
        price = self.price_for(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "pricing.unknown_model",
                    model=model,
                    hint="add it to pricing overrides; its cost is reported as unknown",
                )
            return None
        return price.cost(usage)


def _parse_row(
    name: str, row: Mapping[str, Any], errors: list[tuple[str, str]]
) -> ModelPrice | None:
    where = f"pricing.{name}"
    for unknown in sorted(set(row) - _ROW_FIELDS):
        errors.append((f"{where}.{unknown}", "unknown price field"))
    values: dict[str, Decimal] = {}
    for field in PRICE_FIELDS:
        if field not in row:
            continue
        try:
            value = Decimal(str(row[field]))
        except InvalidOperation:
            errors.append((f"{where}.{field}", f"not a number: {row[field]!r}"))
            continue
        if not value.is_finite() or value < 0:
            errors.append((f"{where}.{field}", "must be a non-negative number"))
            continue
        values[field] = value
    for required in ("input", "output"):
        if required not in row:
            errors.append((f"{where}.{required}", "missing"))
    if "input" not in values or "output" not in values:
        return None
    for field, factor in _DERIVED.items():
        values.setdefault(field, values["input"] * factor)
    as_of = row.get("as_of")
    if isinstance(as_of, str):
        try:
            as_of = date.fromisoformat(as_of)
        except ValueError:
            errors.append((f"{where}.as_of", f"not a date: {as_of!r}"))
            as_of = None
    return ModelPrice(
        input=values["input"],
        output=values["output"],
        cache_write_5m=values["cache_write_5m"],
        cache_write_1h=values["cache_write_1h"],
        cache_read=values["cache_read"],
        as_of=as_of if isinstance(as_of, date) else None,
        source=str(row.get("source", "")),
    )


_RESOLVED_CAP = 4096
"""Model names resolved per :class:`Pricing`: they come from clients, so the memo is bounded."""
_WARN_CAP = 32
"""Unknown models logged by name per :class:`Pricing` (names come from clients: bounded)."""


class Pricing:
    """Every model gets a price: its own row, else the fallback's (and the cost is an estimate).

    ``fallback_model`` names a known model whose price unknown models pay; None: the most
    expensive model of the table (:func:`most_expensive`), so an estimate errs high. Raises
    :class:`ConfigError` under ``setting`` when the fallback is not in the table or the table
    is empty.
    """

    def __init__(
        self,
        table: PriceTable,
        fallback_model: str | None = None,
        *,
        setting: str = "unknown_model_price",
    ) -> None:
        self.table = table
        if fallback_model is not None:
            fallback = table.price_for(fallback_model)
            if fallback is None:
                raise ConfigError(
                    [
                        (
                            setting,
                            f"{fallback_model!r} is not in the price table "
                            f"(known: {', '.join(table.models)})",
                        )
                    ]
                )
        else:
            fallback = most_expensive(table)
        self.fallback = fallback
        # model id -> (price, estimated): resolving dated ids scans the table, and the same few
        # model names arrive on every call.
        self._resolved: dict[str, tuple[ModelPrice, bool]] = {}
        self._warned: set[str] = set()

    @property
    def models(self) -> list[str]:
        return self.table.models

    def price(self, model: str) -> tuple[ModelPrice, bool]:
        """The model's price, and whether it is the fallback's (an estimate)."""
        found = self._resolved.get(model)
        if found is None:
            known = self.table.price_for(model)
            found = (known, False) if known is not None else (self.fallback, True)
            if found[1] and len(self._warned) <= _WARN_CAP and model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "pricing.unknown_model",
                    model=model[:128],
                    hint="priced as the fallback (QUARTERDECK_UNKNOWN_MODEL_PRICE) and marked "
                    "estimated; add it to pricing overrides for an exact cost",
                    more_not_logged=len(self._warned) > _WARN_CAP,
                )
            if len(self._resolved) >= _RESOLVED_CAP:
                self._resolved.clear()
            self._resolved[model] = found
        return found

    def priced(self, model: str, usage: Usage) -> tuple[Decimal, bool]:
        """USD for one call's usage, and whether it is an estimate (the fallback's price)."""
        price, estimated = self.price(model)
        return price.cost(usage), estimated

    def cost(self, model: str, usage: Usage) -> Decimal:
        """USD for one call's usage, never None: the run path's ``cost_of``."""
        return self.priced(model, usage)[0]


def most_expensive(table: PriceTable) -> ModelPrice:
    """The dearest model of ``table`` (by output, then input price). Raises ConfigError when the
    table is empty, since then nothing could price an unknown model."""
    prices = [p for p in (table.price_for(m) for m in table.models) if p is not None]
    if not prices:
        raise ConfigError([("pricing", "the price table has no models")])
    return max(prices, key=lambda p: (p.output, p.input, p.cache_write_1h))
