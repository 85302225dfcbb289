"""PromQL that measures one version (stable or canary) of Quarterdeck for the analysis.

The ``version`` label is not something the app exports: the rollout labels its pods
``rollouts.quarterdeck.dev/version: stable|canary`` and the ServiceMonitor relabels that pod
label onto every series it scrapes, so the same ``claude_agent_*`` metrics split by version
with no change to the app, and a pod moved from canary to stable changes label with its pod.

Why ``or vector(0)`` on the counts and rates: the app's counters create a labelled child on its
first use, so a version that has had no error has no ``status="error"`` series at all, and
``sum(...)`` of nothing is no result, not 0. For counts, "none seen" is 0. Latency keeps no
fallback: no requests means no p95, which the analysis calls inconclusive rather than fast.
"""

from __future__ import annotations

import math
import re

JOB = "claude-agents"
VERSION_LABEL = "version"  # relabelled from the pod label rollouts.quarterdeck.dev/version
POD_VERSION_LABEL = "rollouts.quarterdeck.dev/version"
VERSIONS = ("stable", "canary")

_VERSION = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_PLACEHOLDER = re.compile(r"\{\{\s*version\s*\}\}")
_LEFTOVER = re.compile(r"\{\{.*?\}\}")


def _check_version(version: str) -> None:
    """A label value put inside a quoted PromQL string: only plain characters, so no quote or
    backslash can end the string and change the query."""
    if not _VERSION.fullmatch(version):
        raise ValueError(f"version label must be letters, digits, '_', '.', '-'; got {version!r}")


def _duration(window_s: float) -> str:
    """Whole seconds, rounded up (a range shorter than asked could miss a scrape)."""
    if not math.isfinite(window_s) or window_s <= 0:
        raise ValueError(f"window must be a positive number of seconds, got {window_s}")
    return f"{max(1, math.ceil(window_s))}s"


def version_queries(version: str, window_s: float) -> dict[str, str]:
    """The four queries the analysis needs for one version over the last ``window_s`` seconds:
    ``requests`` and ``errors`` (finished runs, counted), ``latency_p95_s`` and ``rate_per_s``.

    Finished means ``success`` or ``error``: a cancelled run says nothing about the version's
    health (the SLO rules count the same way).
    """
    _check_version(version)
    window = _duration(window_s)
    sel = f'job="{JOB}",{VERSION_LABEL}="{version}"'
    finished = f'claude_agent_requests_total{{{sel},status=~"success|error"}}'
    errors = f'claude_agent_requests_total{{{sel},status="error"}}'
    buckets = f"claude_agent_request_duration_seconds_bucket{{{sel}}}"
    return {
        "requests": f"sum(increase({finished}[{window}])) or vector(0)",
        "errors": f"sum(increase({errors}[{window}])) or vector(0)",
        "latency_p95_s": f"histogram_quantile(0.95, sum by (le) (rate({buckets}[{window}])))",
        "rate_per_s": f"sum(rate({finished}[{window}])) or vector(0)",
    }


def render_check(query: str, version: str) -> str:
    """A user check's query with ``{{version}}`` (spaces inside the braces allowed) replaced.

    Any other ``{{...}}`` left over is an error here, not a query Prometheus rejects at every
    interval (or, worse, one that matches nothing and reads as no data).
    """
    _check_version(version)
    rendered = _PLACEHOLDER.sub(version, query)
    leftover = _LEFTOVER.search(rendered)
    if leftover:
        raise ValueError(
            f"unknown placeholder {leftover.group()!r} in query; only {{{{version}}}} is known"
        )
    return rendered
