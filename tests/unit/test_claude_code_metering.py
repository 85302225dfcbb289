"""A claude-code run's bill: the gateway's metering, with the CLI's own estimate kept beside it
and a disagreement beyond the tolerance recorded (agents/claude_code/metering.py)."""

from __future__ import annotations

from decimal import Decimal

from quarterdeck.agents.claude_code.metering import reconcile
from quarterdeck.gateway.models import UsageRow


def usage(cost: str, calls: int = 3) -> UsageRow:
    return UsageRow(
        group={},
        calls=calls,
        errors=0,
        input_tokens=1200,
        output_tokens=340,
        cache_write_tokens=900,
        cache_read_tokens=2700,
        web_search_requests=0,
        cost_usd=Decimal(cost),
        cost_estimated_calls=0,
    )


def test_the_gateway_s_figures_are_the_run_s_and_an_agreeing_cli_adds_no_event() -> None:
    metered, events = reconcile(usage("0.052100"), turns=3, cli_cost=0.0521)
    assert metered == {
        "turns": 3,
        "input_tokens": 1200,
        "output_tokens": 340,
        "cache_creation_tokens": 900,
        "cache_read_tokens": 2700,
        "cost_usd": "0.052100",
    }
    assert [kind for kind, _, _ in events] == ["metered"]
    assert events[0][2]["cli_cost_usd"] == 0.0521 and events[0][2]["calls"] == 3


def test_a_cli_estimate_off_by_more_than_the_tolerance_is_a_mismatch_event() -> None:
    _, within = reconcile(usage("1.000000"), turns=1, cli_cost=1.0099)  # under 1 %
    assert [kind for kind, _, _ in within] == ["metered"]
    _, off = reconcile(usage("1.000000"), turns=1, cli_cost=1.02)
    assert [kind for kind, _, _ in off] == ["metered", "cost_mismatch"]
    assert off[1][2] == {"gateway_usd": "1.000000", "cli_usd": "1.02"}
    # tiny bills: an absolute floor of $0.0001, not 1 % of almost nothing
    _, tiny = reconcile(usage("0.000050"), turns=1, cli_cost=0.00012)
    assert [kind for kind, _, _ in tiny] == ["metered"]


def test_without_a_numeric_cli_cost_only_the_metering_is_recorded() -> None:
    for claim in (None, "0.05", True):  # JSON's true is not a number of dollars
        _, events = reconcile(usage("0.05"), turns=1, cli_cost=claim)
        assert [kind for kind, _, _ in events] == ["metered"]
        assert "cli_cost_usd" not in events[0][2]
