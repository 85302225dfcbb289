"""Provider telemetry: what each call and failure adds to the Prometheus series."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quarterdeck.exceptions import ProviderError
from quarterdeck.metrics import REGISTRY
from quarterdeck.providers.telemetry import record_call, record_error, severity
from quarterdeck.providers.types import Usage


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_priced_call_counts_tokens_cost_latency_and_ttft():
    labels = {"agent_type": "tele-coder", "model": "claude-sonnet-4-5"}
    before = (
        value("claude_agent_tokens_used_total", **labels),
        value("claude_agent_api_cost_total", **labels),
        value(
            "claude_agent_provider_request_duration_seconds_count",
            provider="anthropic",
            model="claude-sonnet-4-5",
        ),
        value(
            "claude_agent_provider_time_to_first_token_seconds_count",
            provider="anthropic",
            model="claude-sonnet-4-5",
        ),
    )
    usage = Usage(
        input_tokens=100,
        output_tokens=50,
        cache_creation_input_tokens=20,
        cache_read_input_tokens=30,
    )
    record_call(
        "tele-coder",
        "anthropic",
        "claude-sonnet-4-5",
        usage,
        Decimal("0.0125"),
        latency_s=1.5,
        ttft_s=0.4,
    )
    after = (
        value("claude_agent_tokens_used_total", **labels),
        value("claude_agent_api_cost_total", **labels),
        value(
            "claude_agent_provider_request_duration_seconds_count",
            provider="anthropic",
            model="claude-sonnet-4-5",
        ),
        value(
            "claude_agent_provider_time_to_first_token_seconds_count",
            provider="anthropic",
            model="claude-sonnet-4-5",
        ),
    )
    assert after[0] - before[0] == 200
    assert after[1] - before[1] == pytest.approx(0.0125)
    assert after[2] - before[2] == 1 and after[3] - before[3] == 1
    assert value("claude_agent_unpriced_tokens_total", **labels) == 0


def test_unpriced_call_adds_no_cost_but_counts_unpriced_tokens():
    labels = {"agent_type": "tele-local", "model": "qwen2.5-coder"}
    ttft = {"provider": "openai", "model": "qwen2.5-coder"}
    ttft_before = value("claude_agent_provider_time_to_first_token_seconds_count", **ttft)
    record_call(
        "tele-local",
        "openai",
        "qwen2.5-coder",
        Usage(input_tokens=7, output_tokens=3),
        None,
        latency_s=0.2,
    )
    assert value("claude_agent_unpriced_tokens_total", **labels) == 10
    assert value("claude_agent_tokens_used_total", **labels) == 10
    assert REGISTRY.get_sample_value("claude_agent_api_cost_total", labels) is None
    # No ttft given (a non-streamed call): nothing observed. Other tests share the registry, so
    # compare with the value before this call.
    assert value("claude_agent_provider_time_to_first_token_seconds_count", **ttft) == ttft_before


def test_unbounded_label_values_are_collapsed():
    record_call(
        "agent with spaces/and junk",
        "anthropic",
        "x" * 200,
        Usage(input_tokens=1),
        None,
        latency_s=0.1,
    )
    assert value("claude_agent_unpriced_tokens_total", agent_type="other", model="other") >= 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ProviderError("x", status_code=429, error_type="rate_limit_error"), "medium"),
        (ProviderError("x", status_code=529, error_type="overloaded_error"), "medium"),
        (ProviderError("x", status_code=500, error_type="api_error"), "high"),
        (ProviderError("x", status_code=503, error_type="api_error"), "high"),
        (ProviderError("x", error_type="timeout"), "high"),
        (ProviderError("x", error_type="connection_error"), "high"),
        (ProviderError("x", status_code=401, error_type="authentication_error"), "critical"),
        (ProviderError("x", status_code=403, error_type="permission_error"), "critical"),
        (ProviderError("x", status_code=400, error_type="invalid_request_error"), "low"),
        (ProviderError("x", status_code=404, error_type="not_found_error"), "low"),
    ],
)
def test_severity(error: ProviderError, expected: str):
    assert severity(error) == expected


def test_record_error_labels_type_and_severity():
    labels = {"agent_type": "tele-err", "error_type": "overloaded_error", "severity": "medium"}
    before = value("claude_agent_errors_total", **labels)
    record_error("tele-err", ProviderError("busy", status_code=529, error_type="overloaded_error"))
    assert value("claude_agent_errors_total", **labels) - before == 1
