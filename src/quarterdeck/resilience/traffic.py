"""Outcomes of recent provider calls in this process.

The resilient caller records every attempt here; the health monitor's API check judges the
provider from it (passively, from real traffic) instead of paying for probe messages. It lives in
the resilience layer, which produces the data, so that layer never imports the monitor.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any


class ProviderCallWindow:
    """Outcomes of recent provider calls in this process (the passive half of the API check).

    Only failures that say the provider is unwell count as errors: no answer at all, 408, 5xx
    and 529. A 400 is our request's fault and a 429 our quota's; both are counted separately.
    """

    def __init__(self, horizon_s: float = 900.0, max_items: int = 50_000) -> None:
        self.horizon_s = horizon_s
        self._calls: deque[tuple[float, bool, int | None]] = deque(maxlen=max_items)

    def observe(self, ok: bool, status: int | None, now: float | None = None) -> None:
        self._calls.append((time.monotonic() if now is None else now, ok, status))

    def stats(self, window_s: float, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        while self._calls and now - self._calls[0][0] > self.horizon_s:
            self._calls.popleft()
        recent = [c for c in self._calls if now - c[0] <= window_s]
        errors = sum(1 for _, ok, s in recent if not ok and (s is None or s >= 500 or s == 408))
        limited = sum(1 for _, ok, s in recent if not ok and s == 429)
        total = len(recent)
        return {
            "calls": total,
            "errors": errors,
            "rate_limited": limited,
            "error_rate": round(errors / total, 4) if total else 0.0,
            "window_s": window_s,
        }

    def clear(self) -> None:
        self._calls.clear()


PROVIDER_CALLS = ProviderCallWindow()


def observe_provider_call(ok: bool, status: int | None) -> None:
    """Record one provider call's outcome (call it once per attempt, from the executor path)."""
    PROVIDER_CALLS.observe(ok, status)
