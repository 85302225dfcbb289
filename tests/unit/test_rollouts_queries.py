"""Per-version PromQL: labels, windows, check rendering; each query parsed by promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from quarterdeck.rollouts.queries import JOB, render_check, version_queries

PROMTOOL = shutil.which("promtool")


def test_keys_and_labels() -> None:
    queries = version_queries("canary", 300)
    assert set(queries) == {"requests", "errors", "latency_p95_s", "rate_per_s"}
    for query in queries.values():
        assert f'job="{JOB}"' in query
        assert 'version="canary"' in query
        assert "[300s]" in query
    assert queries["requests"].startswith("sum(increase(claude_agent_requests_total{")
    assert 'status=~"success|error"' in queries["requests"]
    assert 'status="error"' in queries["errors"]
    assert queries["latency_p95_s"].startswith("histogram_quantile(0.95, ")
    assert "claude_agent_request_duration_seconds_bucket{" in queries["latency_p95_s"]
    assert "by (le)" in queries["latency_p95_s"]
    assert queries["rate_per_s"].startswith("sum(rate(claude_agent_requests_total{")
    # counts fall back to 0 (no error series yet); latency does not (no requests: no p95)
    assert queries["errors"].endswith("or vector(0)")
    assert "vector(0)" not in queries["latency_p95_s"]
    stable = version_queries("stable", 300)
    assert all('version="stable"' in q and "canary" not in q for q in stable.values())


def test_window_is_whole_seconds_rounded_up() -> None:
    assert "[61s]" in version_queries("stable", 60.2)["requests"]
    assert "[1s]" in version_queries("stable", 0.1)["requests"]
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="window"):
            version_queries("stable", bad)


@pytest.mark.parametrize("version", ['canary"} or vector(1) #', "a b", "", "x\\", "{{version}}"])
def test_version_cannot_break_out_of_the_label(version: str) -> None:
    with pytest.raises(ValueError, match="version"):
        version_queries(version, 60)
    with pytest.raises(ValueError, match="version"):
        render_check('up{version="{{version}}"}', version)


def test_render_check() -> None:
    query = (
        'sum(rate(x_total{version="{{version}}"}[5m])) / sum(rate(y{version="{{ version }}"}[5m]))'
    )
    rendered = render_check(query, "canary")
    assert (
        rendered == 'sum(rate(x_total{version="canary"}[5m])) / sum(rate(y{version="canary"}[5m]))'
    )
    assert render_check("up", "stable") == "up"
    with pytest.raises(ValueError, match=r"args\.service"):
        render_check('up{service="{{args.service}}"}', "canary")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    exprs = [*version_queries("canary", 300).values(), *version_queries("stable", 60.5).values()]
    exprs.append(render_check('sum(rate(x_total{version="{{version}}"}[5m]))', "canary"))
    rules = ["groups:", "  - name: rollout_queries", "    rules:"]
    for i, expr in enumerate(exprs):
        rules += [f"      - record: rollout:query_{i}", f"        expr: '{expr}'"]
    good = tmp_path / "good.yml"
    good.write_text("\n".join(rules) + "\n")
    assert PROMTOOL is not None
    ok = subprocess.run([PROMTOOL, "check", "rules", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"{len(exprs)} rules found" in ok.stdout
    # the check can fail: a broken query is reported
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "\n".join([*rules[:3], "      - record: rollout:bad", "        expr: 'sum(rate(x[5m]'"])
    )
    broken = subprocess.run([PROMTOOL, "check", "rules", str(bad)], capture_output=True, text=True)
    assert broken.returncode != 0
