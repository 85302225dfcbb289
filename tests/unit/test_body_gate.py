"""The body gate's pure decisions: which limit a path gets, whether a request carries a body,
what its declared length is, which key it presents, and when a refusal closes the connection."""

from __future__ import annotations

import asyncio

import pytest
from starlette.datastructures import Headers
from starlette.types import Message

from quarterdeck.app import body_limits
from quarterdeck.config import load_settings
from quarterdeck.security.auth import body_gate
from quarterdeck.security.auth.body_gate import (
    DRAIN_MAX,
    BodyLimits,
    BodyTooLarge,
    carries_body,
    declared_length,
    keep_alive,
    presented_key,
)

LIMITS = BodyLimits(
    default=10, exact={"/v1/runs": 100, "/v1/runs/batch": 100}, under=(("/v1/messages", 50),)
)


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("/v1/runs", 100),
        ("/v1/runs/batch", 100),
        ("/v1/runs/run_1/cancel", 10),  # exact: a run's other routes take the default
        ("/v1/messages", 50),
        ("/v1/messages/count_tokens", 50),
        ("/v1/messagesx", 10),  # a prefix only at a path boundary
        ("/v1/admin/keys", 10),
    ],
)
def test_each_path_gets_its_limit(path: str, limit: int) -> None:
    assert LIMITS.limit_for(path) == limit


def test_the_apps_limits_come_from_the_settings() -> None:
    settings = load_settings(
        None, max_body_bytes=2048, run_max_body_bytes=4096, gateway_max_body_bytes=8192
    )
    limits = body_limits(settings)
    assert limits.limit_for("/v1/admin/keys") == 2048
    assert limits.limit_for("/v1/runs") == limits.limit_for("/v1/runs/batch") == 4096
    assert limits.limit_for("/v1/messages/count_tokens") == 8192


def test_defaults_fit_the_largest_legitimate_bodies() -> None:
    settings = load_settings(None)
    assert settings.gateway_max_body_bytes == 32 * 1024 * 1024  # the Messages API's own limit
    # A tar workspace is at most 70,000,000 base64 characters (RunCreate), plus a prompt of at
    # most 200,000 characters, each at most 12 bytes as JSON (a \\uXXXX surrogate pair).
    assert settings.run_max_body_bytes > 70_000_000 + 200_000 * 12 + 64 * 1024
    assert settings.max_body_bytes == 4 * 1024 * 1024


@pytest.mark.parametrize("field", ["max_body_bytes", "run_max_body_bytes"])
@pytest.mark.parametrize("value", [0, 1023, 2 * 1024**3, "lots"])
def test_limits_are_validated(field: str, value: object) -> None:
    from quarterdeck.exceptions import ConfigError

    with pytest.raises(ConfigError, match=f"QUARTERDECK_{field.upper()}: "):
        load_settings(None, **{field: value})


@pytest.mark.parametrize(
    ("raw", "length", "body"),
    [
        ({}, None, False),
        ({"content-length": "0"}, 0, False),
        ({"content-length": "12"}, 12, True),
        ({"content-length": " 12 "}, 12, True),
        ({"content-length": "-1"}, None, True),  # not a number: counted as it comes
        ({"content-length": "1e9"}, None, True),
        ({"content-length": "\u00b2"}, None, True),  # a digit to str.isdigit, not to int()
        ({"transfer-encoding": "chunked"}, None, True),
    ],
)
def test_declared_length_and_body(raw: dict[str, str], length: int | None, body: bool) -> None:
    headers = Headers(raw)
    assert declared_length(headers) == length
    assert carries_body(headers, declared_length(headers)) is body


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({}, None),
        ({"authorization": "Bearer qd_abc"}, "qd_abc"),
        ({"authorization": "bearer qd_abc"}, "qd_abc"),
        ({"authorization": "Basic dXNlcjpwdw=="}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": "qd_xyz"}, "qd_xyz"),
        ({"authorization": "Basic x", "x-api-key": "qd_xyz"}, "qd_xyz"),
        ({"authorization": "Bearer qd_abc", "x-api-key": "qd_xyz"}, "qd_abc"),
        ({"x-api-key": ""}, None),
    ],
)
def test_the_key_is_read_as_require_reads_it(raw: dict[str, str], key: str | None) -> None:
    assert presented_key(Headers(raw)) == key


class Body:
    """A ``receive`` giving ``chunks`` bytes at a time (then waiting for ever, if ``stall``)."""

    def __init__(self, total: int, chunk: int = 64 * 1024, *, stall: bool = False) -> None:
        self.left, self.chunk, self.stall, self.calls = total, chunk, stall, 0

    async def __call__(self) -> Message:
        self.calls += 1
        if self.left <= 0 and self.stall:
            await asyncio.Event().wait()
        n = min(self.chunk, self.left)
        self.left -= n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.left > 0 or self.stall}


async def test_a_declared_body_is_skipped_by_the_server_only_when_short() -> None:
    body = Body(10)
    assert await keep_alive(Headers({}), DRAIN_MAX, body)
    assert not await keep_alive(Headers({}), DRAIN_MAX + 1, body)
    assert body.calls == 0, "a declared body is left to the server"


async def test_a_chunked_body_is_skipped_here_when_it_ends_soon() -> None:
    short = Body(DRAIN_MAX - 1)
    assert await keep_alive(Headers({}), None, short)
    assert short.left == 0
    long = Body(10 * DRAIN_MAX)
    assert not await keep_alive(Headers({}), None, long)
    assert long.left >= 8 * DRAIN_MAX, "read no more than DRAIN_MAX of it"


async def test_a_stalled_or_gone_client_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(body_gate, "DRAIN_SECONDS", 0.05)
    assert not await keep_alive(Headers({}), None, Body(1000, 100, stall=True))

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    assert not await keep_alive(Headers({}), None, gone)


async def test_a_client_expecting_100_continue_is_closed_on() -> None:
    body = Body(10)
    assert not await keep_alive(Headers({"expect": "100-continue"}), 10, body)
    assert not await keep_alive(Headers({"expect": "100-Continue"}), None, body)
    assert body.calls == 0


def test_the_413_names_the_limit() -> None:
    exc = BodyTooLarge(4096)
    assert exc.status == 413 and exc.extra == {"limit": 4096}
    assert "4096" in exc.detail and exc.problem_type.endswith("/request-too-large")
