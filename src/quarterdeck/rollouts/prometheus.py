"""Prometheus both ways for rollouts: measuring a canary step through Prometheus's HTTP API
(``/api/v1/query``), and the rollout metrics the controller exports for Prometheus to scrape.

Why errors raise instead of reading as zero: a canary judged on numbers that were never fetched
could pass. Any failure (Prometheus down, a timeout, a query it rejects, a query matching more
than one series) is :class:`PrometheusUnavailable`; the controller then hands the machine no
result, which extends the step and then pauses it for a person, and never passes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx
from prometheus_client import Counter, Gauge

from quarterdeck.exceptions import Unavailable
from quarterdeck.metrics import REGISTRY
from quarterdeck.rollouts import queries
from quarterdeck.rollouts.analysis import AnalysisResult, VersionSample, judge
from quarterdeck.rollouts.spec import RolloutSpec

__all__ = ["ANALYSES", "ERRORS", "PHASE", "WEIGHT", "Prometheus", "PrometheusUnavailable"]

TIMEOUT_S = 5.0
PHASES = (
    "progressing", "paused", "inconclusive", "soaking", "completed", "aborted", "rolled_back"
)  # fmt: skip

PHASE = Gauge(
    "claude_agent_rollout_phase",
    "1 for the current phase of the newest rollout of each target (leader only)",
    ["target", "phase"],
    registry=REGISTRY,
)
WEIGHT = Gauge(
    "claude_agent_rollout_weight",
    "Percent of traffic the rollout last sent to the new version (leader only)",
    ["target"],
    registry=REGISTRY,
)
ANALYSES = Counter(
    "claude_agent_rollout_analysis_total",
    "Canary analyses by verdict (error: Prometheus gave no answer)",
    ["target", "verdict"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "claude_agent_rollout_errors_total",
    "Rollout controller failures: actions Kubernetes refused, failed ticks",
    registry=REGISTRY,
)


def show(target: str, phase: str, weight: int) -> None:
    """Export one rollout's phase (1 for it, 0 for the others) and weight."""
    for p in PHASES:
        PHASE.labels(target, p).set(1.0 if p == phase else 0.0)
    WEIGHT.labels(target).set(weight)


def clear() -> None:
    """A follower exports no rollout state (only the leader knows it is current)."""
    PHASE.clear()
    WEIGHT.clear()


class PrometheusUnavailable(Unavailable):
    """Prometheus could not answer a query the analysis needs."""


class Prometheus:
    """A small client: one instant query at a time, answered as a single number or None."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def query(self, promql: str) -> float | None:
        """The value of an instant query: None for an empty vector; NaN is returned as is."""
        try:
            resp = await self._client.get(f"{self.base_url}/api/v1/query", params={"query": promql})
            body: dict[str, Any] = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusUnavailable(f"prometheus query failed: {exc!r}") from exc
        if resp.status_code != 200 or body.get("status") != "success":
            error = body.get("error") or f"HTTP {resp.status_code}"
            raise PrometheusUnavailable(f"prometheus refused {promql!r}: {error}")
        return _value(promql, body.get("data") or {})

    async def sample(self, version: str, window_s: float) -> VersionSample:
        """What ``version`` did over the last ``window_s`` seconds."""
        values = {
            name: await self.query(q)
            for name, q in queries.version_queries(version, window_s).items()
        }
        return VersionSample(
            requests=_count(values["requests"]),
            errors=_count(values["errors"]),
            latency_p95_s=values["latency_p95_s"],
            rate_per_s=values["rate_per_s"],
        )

    async def analyse(
        self, spec: RolloutSpec, *, weight: float, window_s: float
    ) -> tuple[AnalysisResult, dict[str, Any]]:
        """Judge the window: both versions and the user's checks (on the canary).

        Returns the result and the raw numbers, for the rollout's history.
        """
        stable = await self.sample("stable", window_s)
        canary = await self.sample("canary", window_s)
        checks: dict[str, float | None] = {}
        for check in spec.analysis.checks:
            checks[check.name] = await self.query(queries.render_check(check.query, "canary"))
        result = judge(spec.analysis, weight=weight, stable=stable, canary=canary, checks=checks)
        raw = {
            "window_s": window_s,
            "weight": weight,
            "stable": _sample_json(stable),
            "canary": _sample_json(canary),
            "checks": checks,
        }
        return result, raw


def _value(promql: str, data: Mapping[str, Any]) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])  # type: ignore[index]
        if kind == "vector":
            assert isinstance(result, list)
            if not result:
                return None
            if len(result) > 1:
                raise PrometheusUnavailable(
                    f"{promql!r} returned {len(result)} series; a check needs one number"
                )
            return float(result[0]["value"][1])
    except (TypeError, KeyError, IndexError, ValueError, AssertionError) as exc:
        raise PrometheusUnavailable(f"unreadable answer to {promql!r}: {exc!r}") from exc
    raise PrometheusUnavailable(f"{promql!r} returned a {kind}, not a number")


def _count(value: float | None) -> int:
    """``increase()`` extrapolates to fractions; counts are rounded (no value, or NaN, is 0)."""
    if value is None or not math.isfinite(value):
        return 0
    return max(0, round(value))


def _sample_json(s: VersionSample) -> dict[str, Any]:
    return {
        "requests": s.requests,
        "errors": s.errors,
        "latency_p95_s": s.latency_p95_s,
        "rate_per_s": s.rate_per_s,
    }
