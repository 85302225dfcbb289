"""Models without a price are priced by the shared fallback (never free), the old setting name
still works, and user-given label values are bounded by configuration."""

from __future__ import annotations

from decimal import Decimal

import pytest
import structlog

from quarterdeck import metrics
from quarterdeck.config import load_settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.gateway.prices import GatewayPrices
from quarterdeck.providers.factory import build_pricing, configure_metric_labels
from quarterdeck.providers.pricing import PriceTable, Pricing, most_expensive
from quarterdeck.providers.types import Usage

USAGE = Usage(input_tokens=1_000, output_tokens=500, cache_read_input_tokens=2_000)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


def test_an_unknown_model_pays_the_dearest_price_and_is_marked_estimated(table: PriceTable):
    pricing = Pricing(table)
    cost, estimated = pricing.priced("mystery-model-7", USAGE)
    assert estimated and cost == most_expensive(table).cost(USAGE) and cost > 0
    assert pricing.cost("mystery-model-7", USAGE) == cost, "the run path's cost_of: never None"
    known, estimated = pricing.priced("claude-sonnet-4-5-20250929", USAGE)
    assert not estimated and known == table.cost("claude-sonnet-4-5", USAGE)


def test_a_configured_fallback_model_prices_unknown_models(table: PriceTable):
    pricing = Pricing(table, "claude-haiku-4-5")
    cost, estimated = pricing.priced("mystery-model-7", USAGE)
    assert estimated and cost == table.cost("claude-haiku-4-5", USAGE)
    with pytest.raises(ConfigError) as caught:
        Pricing(table, "gpt-9")
    assert caught.value.errors[0][0] == "unknown_model_price"


def test_the_gateway_and_the_run_path_share_one_rule(tmp_path):
    settings = load_settings(None, data_dir=tmp_path, unknown_model_price="claude-haiku-4-5")
    pricing = build_pricing(settings)
    gateway = GatewayPrices(pricing)
    assert gateway.price("mystery-model-7") == pricing.price("mystery-model-7")
    assert gateway.fallback == pricing.fallback == pricing.table.price_for("claude-haiku-4-5")


def test_the_old_gateway_setting_name_still_works_with_a_deprecation_warning(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("QUARTERDECK_GATEWAY_UNKNOWN_MODEL_PRICE", "claude-haiku-4-5")
    with structlog.testing.capture_logs() as logs:
        settings = load_settings(None, data_dir=tmp_path)
    assert settings.unknown_model_price == "claude-haiku-4-5"
    warned = [e for e in logs if e["event"] == "config.deprecated_setting"]
    assert warned and warned[0]["use"] == "QUARTERDECK_UNKNOWN_MODEL_PRICE"
    monkeypatch.setenv("QUARTERDECK_UNKNOWN_MODEL_PRICE", "claude-opus-4-1")
    assert load_settings(None, data_dir=tmp_path).unknown_model_price == "claude-opus-4-1"


def test_label_settings_are_comma_lists_of_label_values(tmp_path, monkeypatch):
    monkeypatch.setenv("QUARTERDECK_METRIC_OPERATIONS", "task, deploy")
    monkeypatch.setenv("QUARTERDECK_METRIC_PROJECTS", "calc-repo")
    settings = load_settings(None, data_dir=tmp_path)
    assert settings.metric_operations == ["task", "deploy"]
    assert settings.metric_projects == ["calc-repo"] and settings.metric_models == []
    assert load_settings(None, data_dir=tmp_path / "x").metric_operations  # defaults set
    monkeypatch.setenv("QUARTERDECK_METRIC_MODELS", "has space")
    with pytest.raises(ConfigError) as caught:
        load_settings(None, data_dir=tmp_path)
    assert caught.value.errors[0][0] == "QUARTERDECK_METRIC_MODELS"


def test_configured_bounds_keep_known_values_and_make_the_rest_other(tmp_path):
    settings = load_settings(
        None,
        data_dir=tmp_path,
        metric_operations=["task", "deploy"],
        metric_projects=["calc-repo"],
        metric_models=["qwen2.5-coder"],
        model_fallbacks={"claude-opus-4-1": ["my-fallback-model"]},
    )
    configure_metric_labels(settings, build_pricing(settings))
    try:
        assert metrics.operation("deploy") == "deploy"
        assert metrics.operation("op-123") == "other"
        assert metrics.project("calc-repo") == "calc-repo"
        assert metrics.project("workspace") == "workspace" and metrics.project("x") == "other"
        assert metrics.model("qwen2.5-coder") == "qwen2.5-coder"  # configured
        assert metrics.model("my-fallback-model") == "my-fallback-model"  # a fallback chain
        assert metrics.model("claude-sonnet-4-5") == "claude-sonnet-4-5"  # the price table
        # a dated id counts as its row: the date could be anything
        assert metrics.model("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
        assert metrics.model("claude-sonnet-4-5-20990101") == "claude-sonnet-4-5"
        assert metrics.model("mystery-model-7") == "other"
        assert metrics.dependency("anthropic:mystery-model-7") == "anthropic:other"
        assert metrics.dependency("postgres") == "postgres"
    finally:
        metrics.configure_labels(None)


def test_unconfigured_model_labels_are_still_capped():
    bounds = metrics.LabelBounds()
    kept = {bounds.model(f"model-{i}") for i in range(1_000)}
    assert len(kept) == metrics.UNCONFIGURED_MODELS + 1  # the first ones, and "other"
    assert bounds.model("model-0") == "model-0" and bounds.model("model-999") == "other"
    assert bounds.model("x" * 200) == "other"
    assert bounds.operation("task") == "task" and bounds.operation("anything") == "other"


def test_an_estimated_cost_counts_as_cost_and_its_tokens_as_unpriced():
    from quarterdeck.providers.telemetry import record_call

    labels = {"agent_type": "unpriced-tele", "model": "other"}

    def value(name: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    metrics.configure_labels(metrics.LabelBounds(models=[]))
    try:
        before = value("claude_agent_unpriced_tokens_total"), value("claude_agent_api_cost_total")
        record_call(
            "unpriced-tele", "simulated", "mystery", USAGE, Decimal("0.5"), 0.1, unpriced=True
        )
    finally:
        metrics.configure_labels(None)
    assert value("claude_agent_unpriced_tokens_total") - before[0] == USAGE.total_tokens
    assert value("claude_agent_api_cost_total") - before[1] == pytest.approx(0.5)


def test_a_simulated_run_of_a_real_model_is_priced_like_its_namesake() -> None:
    from quarterdeck.providers.pricing import PriceTable, Pricing
    from quarterdeck.providers.types import Usage

    pricing = Pricing(PriceTable.load(None))
    usage = Usage(1000, 100)
    assert pricing.priced("simulated-claude-sonnet-4-5", usage) == (
        pricing.cost("claude-sonnet-4-5", usage),
        False,
    )
    assert pricing.priced("simulated-mystery", usage)[1] is True
