"""The Anthropic API check, passive first, with a free probe; and the traffic window feeding it.

The guide's check POSTed a 10-token message every 10 s: ~260k paid calls a month per replica, and
a healthy result that said nothing about the calls real runs make. This one judges the provider
calls runs actually made (recorded by :func:`observe_provider_call` from the resilient caller)
and the provider's breaker states, and probes with ``GET /v1/models``, which costs nothing, at
most once per ``probe_interval_s``. It never sends a message.

An open breaker fails the check: that is how a dead model is *detected*. When the model has a
configured fallback whose breaker is closed, the caller already routes every call there, so the
provider recovery (:class:`~quarterdeck.health.recovery.ProviderRecovery`) accepts
that model as *degraded* (:meth:`ProviderCheck.accept_degraded`): from then on the check passes
and says so (``details["degraded"]``, a "degraded" reason), and the incident resolves as an
auto-recovery, as the guide counts "switched to the fallback model and it works". The entry is
dropped only when the model's breaker is closed again (not when it goes half-open: a dead model
cycles open -> half-open -> open every ``open_for_s``, which must not flap incidents), or when
the fallback's own breaker opens (nothing serves: the check fails and a new incident opens).
That the primary is still dead stays visible to operators through ``CircuitBreakerOpen``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from quarterdeck.health.checks import (
    ANTHROPIC_API,
    CheckResult,
    breaker_states,
    describe_error,
    timed,
)
from quarterdeck.incidents.models import Severity
from quarterdeck.resilience.breaker import Breakers, CircuitStatus, breaker_name
from quarterdeck.resilience.traffic import PROVIDER_CALLS as PROVIDER_CALLS
from quarterdeck.resilience.traffic import ProviderCallWindow as ProviderCallWindow
from quarterdeck.resilience.traffic import observe_provider_call as observe_provider_call

DEFAULT_ANTHROPIC_BASE = "https://api.anthropic.com"


class ProviderCheck:
    """Anthropic (or any provider) health without paid calls; see the module docstring."""

    name = ANTHROPIC_API
    severity = Severity.high

    def __init__(
        self,
        provider: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        breakers: Breakers | None = None,
        window: ProviderCallWindow = PROVIDER_CALLS,
        window_s: float = 300.0,
        max_error_rate: float = 0.5,
        min_calls: int = 5,
        probe_interval_s: float = 30.0,
        timeout_s: float = 5.0,
        client: httpx.AsyncClient | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.provider = provider
        self.api_key = api_key
        self.base_url = (base_url or DEFAULT_ANTHROPIC_BASE).rstrip("/")
        self.breakers = breakers
        self.window = window
        self.window_s = window_s
        self.max_error_rate = max_error_rate
        self.min_calls = min_calls
        self.probe_interval_s = probe_interval_s
        self.timeout_s = timeout_s
        self._client = client
        self._last_probe: tuple[float, dict[str, Any]] | None = None
        # The resilient caller's chains (settings.model_fallbacks), read the same way it does.
        self.fallbacks = {m: list(f) for m, f in (fallbacks or {}).items()}
        self._degraded: dict[str, str] = {}  # model -> the fallback accepted as serving it

    @property
    def probes(self) -> bool:
        return self.provider == "anthropic" and bool(self.api_key)

    async def check(self) -> CheckResult:
        return await timed(self.name, self._check(), self.timeout_s + 1.0)

    async def _check(self) -> tuple[bool, str, dict[str, Any]]:
        stats = self.window.stats(self.window_s)
        details: dict[str, Any] = {"provider": self.provider, "traffic": stats}
        problems: list[str] = []
        if stats["calls"] >= self.min_calls and stats["error_rate"] >= self.max_error_rate:
            problems.append(
                f"{stats['errors']} of {stats['calls']} provider calls failed in the last "
                f"{int(self.window_s)}s"
            )
        degraded = await self._still_degraded()
        states = await breaker_states(self.breakers, prefix=f"{self.provider}:")
        details["breakers"] = states
        accepted = {breaker_name(self.provider, m) for m in degraded}
        open_ = sorted(n for n, s in states.items() if s == "open" and n not in accepted)
        if open_:
            problems.append(f"circuit open for {', '.join(open_)}")
        if self.probes:
            probe = await self._probe()
            details["probe"] = probe
            if not probe["ok"]:
                problems.append(f"GET /v1/models: {probe['error']}")
        else:
            details["probe"] = {"skipped": f"no free probe for provider {self.provider!r}"}
        if degraded:
            details["degraded"] = dict(degraded)
        if problems or not degraded:
            return (not problems), "; ".join(problems), details
        return True, "degraded: " + describe_degraded(degraded, states, self.provider), details

    # -- degraded models -------------------------------------------------------------------------
    async def serving_fallback(self, model: str) -> str | None:
        """The fallback the caller routes ``model``'s calls to now: the first in its chain whose
        breaker is closed (a half-open one lets a single probe through, so it serves nobody)."""
        for fallback in self.fallbacks.get(model, []):
            if await self._state(fallback) == "closed":
                return fallback
        return None

    def accept_degraded(self, model: str, fallback: str) -> None:
        """Pass the check despite ``model``'s open breaker while ``fallback`` serves it."""
        self._degraded[model] = fallback

    @property
    def degraded(self) -> dict[str, str]:
        return dict(self._degraded)

    async def _still_degraded(self) -> dict[str, str]:
        """Drop accepted models whose breaker closed (healthy again) or whose fallback's breaker
        opened (nothing serves them); keep them through half-open probes that fail."""
        for model, fallback in list(self._degraded.items()):
            if await self._state(model) == "closed" or await self._state(fallback) == "open":
                del self._degraded[model]
        return dict(self._degraded)

    async def _state(self, model: str) -> str:
        """A model's breaker state, read through the shared store even if this process has not
        called that model yet (its local registry would not list it)."""
        if self.breakers is None:
            return "closed"
        status = await self.breakers.state(breaker_name(self.provider, model))
        return CircuitStatus(status).name.lower()

    async def _probe(self) -> dict[str, Any]:
        """``GET /v1/models?limit=1``: authenticated, free, and served by the same API edge."""
        now = time.monotonic()
        if self._last_probe is not None and now - self._last_probe[0] < self.probe_interval_s:
            return {**self._last_probe[1], "cached": True}
        headers = {"x-api-key": self.api_key or "", "anthropic-version": "2023-06-01"}
        started = time.perf_counter()
        client = self._client or httpx.AsyncClient(timeout=self.timeout_s)
        try:
            response = await client.get(
                f"{self.base_url}/v1/models", params={"limit": 1}, headers=headers
            )
            status: int | None = response.status_code
            ok = response.status_code < 500 and response.status_code not in (401, 403, 408)
            error = None if response.is_success else f"HTTP {response.status_code}"
            if response.status_code in (401, 403):
                error = f"HTTP {response.status_code}: the API key was rejected"
        except httpx.HTTPError as exc:
            status, ok, error = None, False, describe_error(exc)
        finally:
            if self._client is None:
                await client.aclose()
        result = {
            "ok": ok,
            "status": status,
            "error": error,
            "latency_ms": round((time.perf_counter() - started) * 1e3, 2),
        }
        self._last_probe = (now, result)
        return result


def describe_degraded(degraded: Mapping[str, str], states: Mapping[str, str], provider: str) -> str:
    """``claude-sonnet-4-5 circuit open; fallback claude-haiku-4-5 serving`` per model."""
    return "; ".join(
        f"{model} circuit {states.get(breaker_name(provider, model), 'open')}; "
        f"fallback {fallback} serving"
        for model, fallback in sorted(degraded.items())
    )
