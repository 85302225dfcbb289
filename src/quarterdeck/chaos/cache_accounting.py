"""Prompt-cache billing for the Messages API stand-in: one :class:`PromptCache` per API key.

The stand-in's cache-accounting mode exists so a test or benchmark can see what a client's
``cache_control`` breakpoints would really save: a reply's input-side usage is computed from the
request by :mod:`quarterdeck.kit.prompt_cache` (the same model the simulated provider uses),
against the cache this API key has built so far, instead of a number a script chose. A client
that sends no breakpoints reads nothing, exactly as against the real API.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from quarterdeck.kit.clock import Clock, SystemClock
from quarterdeck.kit.prompt_cache import CacheUsage, PromptCache


def api_key(headers: Mapping[str, str]) -> str:
    """The key a request is billed to: ``x-api-key``, else a bearer token (lower-cased headers)."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip()


class CacheAccounting:
    """Per-key caches and the clock their TTLs run on; thread-safe (the server runs in a thread).

    Every accounted request is kept in :attr:`history` as (key, usage), so a test can assert what
    each turn read and wrote without parsing replies.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._caches: dict[str, PromptCache] = {}
        self._lock = threading.Lock()
        self.history: list[tuple[str, CacheUsage]] = []

    def account(self, headers: Mapping[str, str], payload: Mapping[str, Any]) -> CacheUsage:
        """The request's input usage; raises ``CacheRequestError`` for breakpoints the API
        rejects (the caller answers 400)."""
        key = api_key(headers)
        with self._lock:
            cache = self._caches.setdefault(key, PromptCache())
            usage = cache.account(payload, self.clock.now())
            self.history.append((key, usage))
        return usage

    def usage_json(self, usage: CacheUsage, output_tokens: int) -> dict[str, Any]:
        """A usage object as the API sends it, with the TTL split of the writes."""
        return {
            "input_tokens": usage.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_creation_5m_tokens,
                "ephemeral_1h_input_tokens": usage.cache_creation_1h_tokens,
            },
        }
