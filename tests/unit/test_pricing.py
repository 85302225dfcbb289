"""PriceTable: exact Decimal costs per token class, prefix aliases, overrides, unknown models."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from quarterdeck.exceptions import ConfigError
from quarterdeck.providers import pricing
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.providers.types import Usage


class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.warnings.append((event, kw))


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.load()


def test_mixed_usage_cost_matches_hand_calculation(table: PriceTable):
    usage = Usage(
        input_tokens=1_200,
        output_tokens=850,
        cache_creation_input_tokens=14_000,
        cache_creation_5m_tokens=10_000,
        cache_creation_1h_tokens=4_000,
        cache_read_input_tokens=50_000,
    )
    # claude-sonnet-4-5, USD per MTok: input 3, output 15, 5m write 3.75, 1h write 6, read 0.30
    #   input       1,200 x 3.00  =  3,600
    #   output        850 x 15.00 = 12,750
    #   5m write   10,000 x 3.75  = 37,500
    #   1h write    4,000 x 6.00  = 24,000
    #   cache read 50,000 x 0.30  = 15,000
    #   total                       92,850 micro-dollars-per-token -> $0.09285
    assert table.cost("claude-sonnet-4-5-20250929", usage) == Decimal("0.09285")


def test_unsplit_cache_writes_are_priced_once_at_the_5m_rate(table: PriceTable):
    # No TTL split reported: 2,000 x 3.75 = 7,500 -> $0.0075 (not also at the input rate).
    usage = Usage(cache_creation_input_tokens=2_000)
    assert table.cost("claude-sonnet-4-5", usage) == Decimal("0.0075")
    # A split that covers only part of the total: 1h part at 6.00, the rest at 3.75.
    # 1,000 x 6.00 + 1,000 x 3.75 = 9,750 -> $0.00975
    partial = Usage(cache_creation_input_tokens=2_000, cache_creation_1h_tokens=1_000)
    assert table.cost("claude-sonnet-4-5", partial) == Decimal("0.00975")


def test_cache_reads_never_cost_the_input_rate(table: PriceTable):
    reads = table.cost("claude-opus-4-1", Usage(cache_read_input_tokens=1_000_000))
    fresh = table.cost("claude-opus-4-1", Usage(input_tokens=1_000_000))
    assert reads == Decimal("1.50") and fresh == Decimal("15.00")


def test_haiku_and_opus_prices(table: PriceTable):
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost("claude-haiku-4-5-20251001", usage) == Decimal("6.00")
    assert table.cost("claude-3-5-haiku-20241022", usage) == Decimal("4.80")
    assert table.cost("claude-opus-4-20250514", usage) == Decimal("90.00")


def test_simulated_models_cost_like_their_namesakes(table: PriceTable):
    usage = Usage(
        input_tokens=123,
        output_tokens=456,
        cache_read_input_tokens=7_890,
        cache_creation_input_tokens=100,
        cache_creation_1h_tokens=100,
    )
    assert table.cost("simulated-sonnet", usage) == table.cost("claude-sonnet-4-5", usage)
    assert table.cost("simulated-haiku", usage) == table.cost("claude-haiku-4-5", usage)
    assert table.cost("simulated-opus", usage) == table.cost("claude-opus-4-1", usage)


@pytest.mark.parametrize(
    ("model", "row"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("Claude-Opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        # A different (newer) model is not the nearest known one: unknown, never a guess.
        ("claude-sonnet-4-7", None),
        ("claude-sonnet-4-5-fast", None),
        ("gpt-4o", None),
    ],
)
def test_prefix_aliases(table: PriceTable, model: str, row: str | None):
    assert table.resolve(model) == row


def test_unknown_model_costs_none_and_warns_once(table: PriceTable, monkeypatch):
    log = RecordingLog()
    monkeypatch.setattr(pricing, "log", log)
    usage = Usage(input_tokens=10, output_tokens=10)
    assert table.cost("qwen2.5-coder:32b", usage) is None
    assert table.cost("qwen2.5-coder:32b", usage) is None
    assert table.cost("llama3.3", Usage()) is None
    assert [(e, kw["model"]) for e, kw in log.warnings] == [
        ("pricing.unknown_model", "qwen2.5-coder:32b"),
        ("pricing.unknown_model", "llama3.3"),
    ]


def test_overrides_merge_field_by_field():
    table = PriceTable.load(
        {
            "claude-sonnet-4-5": {"input": "2.50"},
            "qwen2.5-coder": {"input": "0.10", "output": "0.30", "source": "our GPU bill"},
            "simulated-sonnet": {"same_as": "claude-haiku-4-5"},
        }
    )
    sonnet = table.price_for("claude-sonnet-4-5-20250929")
    assert sonnet is not None
    assert sonnet.input == Decimal("2.50") and sonnet.output == Decimal("15.00")
    assert sonnet.cache_write_5m == Decimal("3.75")  # untouched fields keep the bundled value

    qwen = table.price_for("qwen2.5-coder")
    assert qwen is not None and qwen.source == "our GPU bill"
    # Unspecified cache prices follow Anthropic's multipliers: 1.25x, 2x, 0.1x of input.
    assert (qwen.cache_write_5m, qwen.cache_write_1h, qwen.cache_read) == (
        Decimal("0.125"),
        Decimal("0.20"),
        Decimal("0.010"),
    )
    # 1M input x 0.10 + 1M output x 0.30 = $0.40
    assert table.cost("qwen2.5-coder", Usage(input_tokens=10**6, output_tokens=10**6)) == (
        Decimal("0.40")
    )
    assert table.price_for("simulated-sonnet") == table.price_for("claude-haiku-4-5")


def test_bad_overrides_name_every_problem():
    with pytest.raises(ConfigError) as info:
        PriceTable.load(
            {
                "claude-sonnet-4-5": {"input": "cheap"},
                "mystery": {"output": "-1", "colour": "red"},
                "alias": {"same_as": "nonexistent"},
            }
        )
    fields = {name for name, _ in info.value.errors}
    assert fields == {
        "pricing.claude-sonnet-4-5.input",
        "pricing.mystery.output",
        "pricing.mystery.colour",
        "pricing.mystery.input",
        "pricing.alias.same_as",
    }


def test_bundled_rows_are_dated_sourced_and_follow_the_published_rule(table: PriceTable):
    for name in table.models:
        price = table.price_for(name)
        assert price is not None
        assert price.as_of is not None and price.source.startswith("https://"), name
        if name == "claude-3-haiku":  # published rounded: $0.30 and $0.03, not $0.3125/$0.025
            continue
        assert price.cache_write_5m == price.input * Decimal("1.25"), name
        assert price.cache_write_1h == price.input * 2, name
        assert price.cache_read == price.input / 10, name
