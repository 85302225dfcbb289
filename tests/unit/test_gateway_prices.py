"""GatewayPrices: every model has a price, cache classes priced apart, floors, worst case."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quarterdeck.exceptions import ConfigError
from quarterdeck.gateway.meter import Metered
from quarterdeck.gateway.prices import (
    UNCAPPED_WEB_SEARCHES,
    WEB_SEARCH_USD,
    GatewayPrices,
    most_expensive,
    server_tool_worst_case,
)
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.providers.types import Usage

M = Decimal(1_000_000)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.load()


def finished(**usage: int) -> Metered:
    return Metered(usage=Usage(**usage), started=True, finished=True)


def test_a_known_model_is_priced_per_token_class(table: PriceTable):
    m = finished(
        input_tokens=1000,
        output_tokens=500,
        cache_creation_input_tokens=300,
        cache_creation_5m_tokens=100,
        cache_creation_1h_tokens=200,
        cache_read_input_tokens=4000,
    )
    cost, estimated = GatewayPrices(table).cost("claude-sonnet-4-5-20250929", m)
    # sonnet 4.5: in 3, out 15, 5m write 3.75, 1h write 6, read 0.30 (USD / MTok)
    expected = (1000 * 3 + 500 * 15 + 100 * Decimal("3.75") + 200 * 6 + 4000 * Decimal("0.3")) / M
    assert cost == expected and not estimated


def test_cache_reads_are_never_priced_at_the_input_rate(table: PriceTable):
    prices = GatewayPrices(table)
    reads, _ = prices.cost("claude-sonnet-4-5", finished(cache_read_input_tokens=1_000_000))
    inputs, _ = prices.cost("claude-sonnet-4-5", finished(input_tokens=1_000_000))
    assert reads == Decimal("0.3") and inputs == Decimal(3)


def test_an_unsplit_cache_write_is_priced_at_the_5m_rate(table: PriceTable):
    cost, _ = GatewayPrices(table).cost(
        "claude-sonnet-4-5", finished(cache_creation_input_tokens=1_000_000)
    )
    assert cost == Decimal("3.75")


def test_an_unknown_model_is_never_free_it_pays_the_most_expensive_price(table: PriceTable):
    prices = GatewayPrices(table)
    cost, estimated = prices.cost("claude-nova-9", finished(input_tokens=1000, output_tokens=100))
    dearest = most_expensive(table)
    assert dearest.output == Decimal(75)  # opus 4 / 4.1 in the bundled table
    assert cost == (1000 * dearest.input + 100 * dearest.output) / M
    assert cost > 0 and estimated


def test_an_unknown_model_pays_the_configured_fallback(table: PriceTable):
    prices = GatewayPrices(table, fallback_model="claude-haiku-4-5")
    cost, estimated = prices.cost("my-alias", finished(input_tokens=1_000_000))
    assert cost == Decimal(1) and estimated
    known, estimated_known = prices.cost("claude-opus-4-1", finished(input_tokens=1_000_000))
    assert known == Decimal(15) and not estimated_known


def test_a_fallback_that_is_not_in_the_table_is_a_config_error(table: PriceTable):
    with pytest.raises(ConfigError) as caught:
        GatewayPrices(table, fallback_model="gpt-9")
    assert caught.value.errors[0][0] == "unknown_model_price"


def test_an_empty_table_cannot_price_unknown_models():
    with pytest.raises(ConfigError):
        GatewayPrices(PriceTable({}))


def test_an_unfinished_stream_pays_at_least_a_char_floor(table: PriceTable):
    prices = GatewayPrices(table)
    cut = Metered(usage=Usage(input_tokens=100, output_tokens=1), started=True, text_chars=401)
    cost, estimated = prices.cost("claude-sonnet-4-5", cut)
    assert estimated
    assert cost == (100 * 3 + 101 * 15) / M  # ceil(401 / 4) = 101 output tokens
    # A reported output count above the floor is kept.
    more = Metered(usage=Usage(output_tokens=500), started=True, text_chars=40)
    assert prices.cost("claude-sonnet-4-5", more)[0] == 500 * 15 / M


def test_web_search_costs_ten_dollars_per_thousand(table: PriceTable):
    m = finished()
    m.web_search_requests = 7
    cost, _ = GatewayPrices(table).cost("claude-sonnet-4-5", m)
    assert cost == Decimal("0.07")


def test_worst_case_is_an_upper_bound_of_any_cost(table: PriceTable):
    prices = GatewayPrices(table)
    bound = prices.worst_case("claude-opus-4-5", input_tokens=10_000, max_tokens=2_000)
    # opus 4.5: 1h cache write 10 > input 5, output 25
    assert bound == (10_000 * 10 + 2_000 * 25) / M
    for split in (
        Usage(input_tokens=10_000, output_tokens=2_000),
        Usage(
            cache_creation_input_tokens=10_000, cache_creation_1h_tokens=10_000, output_tokens=2_000
        ),
        Usage(cache_creation_input_tokens=10_000, output_tokens=2_000),
        Usage(cache_read_input_tokens=10_000, output_tokens=2_000),
    ):
        cost, _ = prices.cost("claude-opus-4-5", Metered(usage=split, finished=True))
        assert cost <= bound


def test_worst_case_of_an_unknown_model_uses_the_fallback(table: PriceTable):
    prices = GatewayPrices(table)
    dearest = most_expensive(table)
    assert prices.worst_case("mystery", 0, 1_000_000) == dearest.output
    assert prices.worst_case("mystery", -5, -5) == 0


def test_resolved_prices_are_cached_and_bounded(table: PriceTable):
    prices = GatewayPrices(table)
    for i in range(5000):
        prices.price(f"unknown-{i}")
    assert len(prices._pricing._resolved) <= 4096  # the shared Pricing memo is bounded
    assert prices.price("claude-sonnet-4-5-20250929") == (
        table.price_for("claude-sonnet-4-5"),
        False,
    )


def test_an_error_before_any_message_costs_exactly_nothing(table: PriceTable):
    prices = GatewayPrices(table)
    assert prices.cost("claude-sonnet-4-5", Metered(error_type="invalid_request_error")) == (
        Decimal(0),
        False,
    )
    # An error after message_start is billed for what was known, as an estimate.
    late = Metered(usage=Usage(input_tokens=1000), started=True, error_type="overloaded_error")
    assert prices.cost("claude-sonnet-4-5", late) == (Decimal("0.003"), True)


def test_web_search_fees_are_held_by_max_uses_or_an_assumed_cap() -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    assert server_tool_worst_case({}) == 0
    assert server_tool_worst_case({"tools": [{"name": "bash", "input_schema": {}}]}) == 0
    assert server_tool_worst_case({"tools": [{**search, "max_uses": 3}]}) == Decimal("0.03")
    assert server_tool_worst_case({"tools": [search]}) == UNCAPPED_WEB_SEARCHES * WEB_SEARCH_USD
    assert server_tool_worst_case({"tools": [{**search, "max_uses": True}]}) == Decimal("0.10")
    # Whatever the metered cost of a call with max_uses searches, the hold covered the fee.
    prices = GatewayPrices(PriceTable.load())
    metered = Metered(usage=Usage(input_tokens=10), finished=True, web_search_requests=3)
    cost, _ = prices.cost("claude-sonnet-4-5", metered)
    bound = prices.worst_case("claude-sonnet-4-5", 10, 0)
    assert cost <= bound + server_tool_worst_case({"tools": [{**search, "max_uses": 3}]})
    assert cost > bound
