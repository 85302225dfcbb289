"""The relay's pure rules: request parsing, header handling, error mapping, retry decisions,
the tokens-per-minute limit, drain slots and the models list. No I/O."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from quarterdeck.budgets.models import BudgetExceeded
from quarterdeck.config import load_settings
from quarterdeck.exceptions import NotFound, ProviderError, Unavailable, ValidationFailed
from quarterdeck.gateway import anthropic_error_response, is_gateway_path
from quarterdeck.gateway.api import attribution, parse_request, uses_simulated
from quarterdeck.gateway.errors import (
    InvalidRequest,
    RequestTooLarge,
    TokenRateLimited,
    UpstreamUnreachable,
    classify,
)
from quarterdeck.gateway.key_tokens import KeyTokens, estimate_input_tokens
from quarterdeck.gateway.relay import DrainSlots, Outgoing, Relay, fallback_chain, should_retry
from quarterdeck.gateway.upstream import (
    forwarded_headers,
    models_body,
    relayed_headers,
    upstream_keys,
    upstream_url,
)
from quarterdeck.kit.clock import FakeClock
from quarterdeck.resilience.breaker import CircuitOpenError
from quarterdeck.resilience.retry import RetryPolicy
from quarterdeck.security.auth.errors import Forbidden, RateLimited, Unauthenticated


# -- parsing ---------------------------------------------------------------------------------
def test_parse_reads_model_stream_and_max_tokens_once() -> None:
    raw = b'{"model":"claude-sonnet-4-5","max_tokens":64000,"stream":true,"messages":[]}'
    parsed = parse_request(raw)
    assert (parsed.model, parsed.stream, parsed.max_tokens) == ("claude-sonnet-4-5", True, 64000)
    assert parse_request(b'{"model":"m","messages":[]}').max_tokens == 4096  # assumed


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "model"),
        (b'{"model": "", "messages": []}', "model"),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "m"}', "messages"),
        (b'{"model": "m", "messages": {}}', "messages"),
        (b'{"model": "m", "messages": [], "max_tokens": "9"}', "max_tokens"),
        (b'{"model": "m", "messages": [], "max_tokens": 0}', "max_tokens"),
        (b'{"model": "m", "messages": [], "max_tokens": true}', "max_tokens"),
        (b'{"model": "m", "messages": [], "max_tokens": 9223372036854775808}', "max_tokens"),
        (b'{"model": "m\\u0000x", "messages": [], "max_tokens": 5}', "model"),
        (b'{"model": "m\\nx", "messages": [], "max_tokens": 5}', "model"),
        (b'{"model": "m", "messages": [], "max_tokens": 5, "stream": "yes"}', "stream"),
    ],
)
def test_parse_refuses_what_no_upstream_takes(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle) as info:
        parse_request(raw)
    assert classify(info.value)[:2] == (400, "invalid_request_error")


RUN = "run_01M95CK6W5QJCMBZXQT6TNPDWQ"


def test_attribution_headers_are_bounded() -> None:
    assert attribution({"x-quarterdeck-run": f" {RUN} "}, "x-quarterdeck-run") == RUN
    assert attribution({}, "x-claude-code-session-id") is None
    assert attribution({"x-claude-code-agent-id": "  "}, "x-claude-code-agent-id") is None
    with pytest.raises(InvalidRequest, match="at most 64"):
        attribution({"x-quarterdeck-run": "r" * 65}, "x-quarterdeck-run")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-quarterdeck-run", "../../etc"),
        ("x-quarterdeck-run", "run-9"),
        ("x-quarterdeck-tenant", "acme corp"),
        ("x-quarterdeck-tenant", "*"),
    ],
)
def test_run_and_tenant_headers_must_name_a_run_and_a_tenant(header: str, value: str) -> None:
    with pytest.raises(InvalidRequest, match=header):
        attribution({header: value}, header)


def test_input_estimate_is_an_upper_bound_of_tokens() -> None:
    assert estimate_input_tokens(0) == 1
    assert estimate_input_tokens(80_000) == 80_001  # a token is at least one byte sent


# -- headers ---------------------------------------------------------------------------------
def test_request_headers_forwarded_without_credentials_or_hop_by_hop() -> None:
    sent = [
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "a-2025,never-heard-of-it-2099"),
        ("anthropic-beta", "second-line"),
        ("content-type", "application/json"),
        ("x-claude-code-session-id", "s"),
        ("authorization", "Bearer client"),
        ("x-api-key", "client"),
        ("host", "gw"),
        ("content-length", "10"),
        ("accept-encoding", "gzip"),
        ("connection", "keep-alive"),
        ("x-quarterdeck-run", "run_1"),
    ]
    assert forwarded_headers(sent) == [
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "a-2025,never-heard-of-it-2099"),
        ("anthropic-beta", "second-line"),
        ("content-type", "application/json"),
        ("x-claude-code-session-id", "s"),
    ]


def test_response_headers_relayed_except_hop_by_hop() -> None:
    got = [
        ("request-id", "req_1"),
        ("retry-after", "3"),
        ("anthropic-ratelimit-tokens-remaining", "5"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("date", "x"),
        ("server", "cloudflare"),
    ]
    assert relayed_headers(got) == got[:3]


def test_upstream_url_and_keys_follow_settings_precedence() -> None:
    base = load_settings(None)
    assert upstream_url(base) == "https://api.anthropic.com"
    s = load_settings(None, anthropic_base_url="http://a/", anthropic_api_key="k1")
    assert upstream_url(s) == "http://a" and upstream_keys(s) == ("k1", {})
    s = load_settings(
        None,
        anthropic_base_url="http://a",
        gateway_upstream_url="http://g",
        anthropic_api_key="k1",
        gateway_upstream_api_key="k2",
        gateway_tenant_upstream_keys={"acme": "k3"},
    )
    assert upstream_url(s) == "http://g" and upstream_keys(s) == ("k2", {"acme": "k3"})


def test_simulated_only_without_any_key_or_url() -> None:
    assert uses_simulated(load_settings(None, anthropic_api_key=None))
    assert uses_simulated(load_settings(None, provider="simulated", anthropic_api_key="k"))
    assert not uses_simulated(load_settings(None, anthropic_api_key="k"))
    assert not uses_simulated(load_settings(None, gateway_upstream_url="http://local"))
    assert not uses_simulated(load_settings(None, gateway_tenant_upstream_keys={"t": "k"}))


# -- errors ----------------------------------------------------------------------------------
def test_gateway_paths() -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/models/x"):
        assert is_gateway_path(path)
    for path in ("/v1/runs", "/v1/messagesx", "/v1/gateway/calls", "/", "/v1/modelsx"):
        assert not is_gateway_path(path)


def test_budget_refusal_is_429_billing_error_that_must_not_be_retried() -> None:
    exc = BudgetExceeded(
        "acme", "daily", Decimal(1), Decimal(1), Decimal("0.5"), retry_after_s=3600
    )
    status, kind, message, headers = classify(exc)
    assert (status, kind) == (429, "billing_error") and "acme" in message
    assert headers == {"x-should-retry": "false", "retry-after": "3600"}
    run = BudgetExceeded("t", "total", Decimal(1), Decimal(1), Decimal(1), scope="run")
    assert classify(run)[3] == {"x-should-retry": "false"}  # a run budget never resets


@pytest.mark.parametrize(
    ("exc", "status", "kind", "header"),
    [
        (Unauthenticated("no key"), 401, "authentication_error", "WWW-Authenticate"),
        (Forbidden("nope", permission="gateway:use"), 403, "permission_error", None),
        (RateLimited("slow", retry_after=7, headers={}), 429, "rate_limit_error", "retry-after"),
        (TokenRateLimited("tpm", retry_after_s=0.2), 429, "rate_limit_error", "retry-after"),
        (CircuitOpenError("anthropic:m", 12.5), 529, "overloaded_error", "retry-after"),
        (Unavailable("db down", retry_after=5), 503, "overloaded_error", "retry-after"),
        (ValidationFailed("bad"), 400, "invalid_request_error", None),
        (RequestTooLarge("big"), 413, "request_too_large", None),
        (NotFound("gone"), 404, "not_found_error", None),
        (HTTPException(405, "Method Not Allowed"), 405, "invalid_request_error", None),
        (HTTPException(404, "Not Found"), 404, "not_found_error", None),
        (UpstreamUnreachable("down"), 502, "api_error", None),
        (ProviderError("boom"), 502, "api_error", None),
        (RuntimeError("secret detail"), 500, "api_error", None),
    ],
)
def test_exceptions_map_to_anthropic_errors(
    exc: Exception, status: int, kind: str, header: str | None
) -> None:
    response = anthropic_error_response(exc)
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert body["request_id"] == response.headers["request-id"]
    if header is not None:
        assert response.headers[header]
    assert "secret detail" not in body["error"]["message"]  # internals never leak


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert classify(TokenRateLimited("tpm", retry_after_s=0.2))[3]["retry-after"] == "1"
    assert classify(CircuitOpenError("x", 12.5))[3]["retry-after"] == "13"


def test_request_validation_error_is_400() -> None:
    exc = RequestValidationError([{"loc": ("query", "limit"), "msg": "bad", "type": "x"}])
    status, kind, message, _ = classify(exc)
    assert (status, kind) == (400, "invalid_request_error") and "limit" in message


# -- retries before the first byte -----------------------------------------------------------
POLICY = RetryPolicy(schedule=(0.5,), jitter=0.0, max_attempts=2, max_retry_after=10.0)


def upstream_error(status: int, **kw: object) -> ProviderError:
    return ProviderError("x", status_code=status, **kw)  # type: ignore[arg-type]


def test_transient_statuses_retry_once_then_stop() -> None:
    for status in (408, 429, 500, 503, 529):
        assert should_retry(upstream_error(status), 1, POLICY, 0.0, 0.0, 10.0) == 0.5
        assert should_retry(upstream_error(status), 2, POLICY, 0.0, 0.0, 10.0) is None


def test_caller_errors_are_never_retried() -> None:
    for status in (400, 401, 403, 404, 413):
        assert should_retry(upstream_error(status), 1, POLICY, 0.0, 0.0, 10.0) is None


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    assert should_retry(upstream_error(429, retry_after=3.0), 1, POLICY, 0, 0, 10.0) == 3.0
    # Longer than the cap: the client's own backoff waits, not a held connection.
    assert should_retry(upstream_error(429, retry_after=30.0), 1, POLICY, 0, 0, 10.0) is None


def test_x_should_retry_false_is_obeyed() -> None:
    error = upstream_error(529, retryable=False)
    assert should_retry(error, 1, POLICY, 0.0, 0.0, 10.0) is None


def test_spend_limits_and_connection_errors() -> None:
    billing = upstream_error(400, error_type="billing_error")
    assert should_retry(billing, 1, POLICY, 0.0, 0.0, 10.0) is None
    dead = ProviderError("refused", error_type="connection_error")
    assert should_retry(dead, 1, POLICY, 0.0, 0.0, 10.0) == 0.5


# -- limits ----------------------------------------------------------------------------------
def test_key_tokens_take_the_estimate_then_charge_the_real_usage() -> None:
    clock = FakeClock(start=1000.0)
    tokens = KeyTokens(600, clock=clock.now)  # 10 tokens a second
    assert tokens.take("k", 200) == 200
    tokens.correct("k", 500 - 200)  # the call really used 500
    assert tokens.take("k", 100) == 100  # 600 - 500 = 100 left
    with pytest.raises(TokenRateLimited) as info:
        tokens.take("k", 50)
    assert info.value.headers["retry-after"] == "5"  # 50 tokens at 10/s
    assert tokens.take("other", 50) == 50  # per key
    clock.advance(5)
    assert tokens.take("k", 50) == 50


def test_key_tokens_clamp_an_oversized_estimate_and_give_back_overestimates() -> None:
    clock = FakeClock(start=0.0)
    tokens = KeyTokens(60, clock=clock.now)
    assert tokens.take("k", 10_000) == 60  # more than a minute's worth: waits for a full bucket
    tokens.correct("k", 20 - 60)  # it used 20: 40 come back
    assert tokens.take("k", 40) == 40


def test_drain_slots_are_bounded() -> None:
    slots = DrainSlots(2)
    assert slots.try_acquire() and slots.try_acquire() and not slots.try_acquire()
    slots.release()
    assert slots.try_acquire() and slots.active == 2
    assert not DrainSlots(0).try_acquire()


def test_models_body_merges_upstream_and_price_table() -> None:
    upstream = [{"type": "model", "id": "claude-x", "display_name": "X"}]
    body = json.loads(models_body(upstream, ["claude-x", "claude-y"]))
    assert [m["id"] for m in body["data"]] == ["claude-x", "claude-y"]
    assert body["data"][0]["display_name"] == "X"  # the upstream's entry wins
    assert (body["first_id"], body["last_id"], body["has_more"]) == ("claude-x", "claude-y", False)
    assert json.loads(models_body([], []))["data"] == []


CHAINS = {"claude-opus-4-1": ["claude-sonnet-4-5", "claude-haiku-4-5"]}


@pytest.mark.parametrize(
    ("key_config", "default_on", "expected"),
    [
        (None, False, ()),  # the deployment default, off
        (None, True, ("claude-sonnet-4-5", "claude-haiku-4-5")),  # ... on: its chain
        ((), True, ()),  # the key opted out
        (("*",), False, ("claude-sonnet-4-5", "claude-haiku-4-5")),  # the chain, switch off
        (("claude-haiku-4-5", "claude-opus-4-1", "claude-haiku-4-5"), False, ("claude-haiku-4-5",)),
    ],
)
def test_fallback_chain_follows_the_keys_config(
    key_config: tuple[str, ...] | None, default_on: bool, expected: tuple[str, ...]
) -> None:
    got = fallback_chain("claude-opus-4-1", key_config, default_on=default_on, chains=CHAINS)
    assert got == expected
    out = Outgoing("/v1/messages", [], b"{}", "claude-opus-4-1", "t", fallbacks=got)
    assert Relay.candidates(out) == ["claude-opus-4-1", *expected]


def test_a_model_without_a_chain_has_no_fallback_unless_the_key_names_one() -> None:
    assert fallback_chain("claude-haiku-4-5", ("*",), default_on=True, chains=CHAINS) == ()
    own = fallback_chain("claude-haiku-4-5", ("claude-sonnet-4-5",), default_on=False, chains={})
    assert own == ("claude-sonnet-4-5",)
