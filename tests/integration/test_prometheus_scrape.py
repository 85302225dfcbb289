"""A real Prometheus scrapes a running Quarterdeck and the error-rate alert goes pending, then firing.

This is the end-to-end proof that the alert rule, the metric names and the exposition format fit
together: Debian's ``prometheus`` binary scrapes ``quarterdeck up`` (simulated provider with
injected errors) every second and evaluates a test copy of the real HighErrorRate rule, generated
from rules/claude_agent_alerts.yml with a shorter window, a shorter ``for`` and a smaller
traffic guard so the test finishes in a bounded time. Everything else in the expression is the
production rule.

The listener requires a bearer token here (``QUARTERDECK_METRICS_TOKEN``; Prometheus reads it
with ``authorization: credentials_file``, as deploy/monitoring/prometheus.yml documents), and a
budgeted tenant's name reaches Prometheus only as its pseudonym. The listener itself (401s,
pseudonyms, the opt-out) is tested in-process below, without Prometheus.

Why the error rate is 0.8, not 0.5: the executor retries a provider error 4 times, so a run fails
only when 5 calls in a row fail. At 0.5 that is 3% of runs, under the rule's 10% threshold; at
0.8 it is 0.8**5 = 33%, so the alert must fire while most runs still succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from quarterdeck.chaos.process import Process, free_port, http_ok
from quarterdeck.config import load_settings
from quarterdeck.metrics import AUDIT_CHAIN_VALID, BUDGET_LIMIT, tenant_pseudonym
from quarterdeck.server import start_metrics_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "rules" / "claude_agent_alerts.yml"
ERROR_RATE = "0.8"
WINDOW = "1m"  # production: 5m
FOR = "5s"  # production: 2m
MIN_RUNS = 3  # production: 10 finished runs in the window
DEADLINE_S = 420.0  # a bound on waiting, not an assertion about speed
TOKEN = "metrics-token-for-the-scrape-test-0123456789"
TENANT = "initech-confidential"


def test_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """The real HighErrorRate rule with the window, ``for`` and traffic guard shortened."""
    expr = rule["expr"]
    assert expr.count("[5m]") == 3 and re.search(r">= 10\s*$", expr), "rule changed: update test"
    expr = re.sub(r">= 10\s*$", f">= {MIN_RUNS}\n", expr.replace("[5m]", f"[{WINDOW}]"))
    return {**rule, "expr": expr, "for": FOR}


test_rule.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test


def test_error_rate_alert_goes_pending_then_firing(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail(
            "`prometheus` is not installed; `make test` installs it "
            "(apt-get install -y prometheus)."
        )
    quarterdeck = Path(sys.executable).parent / "quarterdeck"
    if not quarterdeck.exists():
        pytest.fail(f"{quarterdeck} is missing: install the project (pip install -e .)")

    http_port, metrics_port, prom_port = free_port(), free_port(), free_port()
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    rules = yaml.safe_load(RULES.read_text())
    real = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "HighErrorRate")
    (tmp_path / "rules.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "test", "interval": "1s", "rules": [test_rule(real)]}]})
    )
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["rules.yml"],
                "scrape_configs": [
                    {
                        "job_name": "claude-agents",
                        "metrics_path": "/metrics",
                        "authorization": {"credentials_file": str(token_file)},
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARTERDECK_")}
    for name in ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    env.update(
        {
            "QUARTERDECK_DATA_DIR": str(tmp_path / "data"),
            "QUARTERDECK_HTTP_PORT": str(http_port),
            "QUARTERDECK_METRICS_PORT": str(metrics_port),
            "QUARTERDECK_METRICS_TOKEN": TOKEN,
            "QUARTERDECK_SIMULATED_ERROR_RATE": ERROR_RATE,
            "QUARTERDECK_SIMULATED_TURNS": "1",
            "QUARTERDECK_SIMULATED_LATENCY": "0",  # not `up`'s demo latency
            # One attempt per call: a failing run fails at once instead of after the guide's
            # 1+2+4+8 s of retries, so the error ratio builds in seconds (this test is about the
            # alert pipeline, not retries).
            "QUARTERDECK_RETRY_MAX_ATTEMPTS": "1",
            "QUARTERDECK_PROVIDER": "simulated",
            # Runs are still failing and retrying when the test stops it: a short drain lets it exit
            # within started()'s wait, so it stops its embedded Postgres instead of being killed.
            "QUARTERDECK_DRAIN_TIMEOUT": "5s",
        }
    )
    api = f"http://127.0.0.1:{http_port}"
    prom = f"http://127.0.0.1:{prom_port}"
    qd_log, prom_log = tmp_path / "quarterdeck.log", tmp_path / "prometheus.log"

    with (
        Process([str(quarterdeck), "up"], env=env, log=qd_log, stop_timeout=30) as qd,
        Process(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            env=dict(os.environ),
            log=prom_log,
            stop_timeout=30,
        ) as prom_proc,
        httpx.Client(timeout=10) as client,
    ):
        qd.wait_ready(http_ok(f"{api}/ready"), timeout=180, interval=0.5)
        prom_proc.wait_ready(http_ok(f"{prom}/-/ready"), timeout=180, interval=0.5)
        assert client.get(f"http://127.0.0.1:{metrics_port}/metrics").status_code == 401
        budget = client.put(f"{api}/v1/tenants/{TENANT}/budget", json={"daily_usd": 5})
        assert budget.status_code == 200, budget.text

        stop = threading.Event()
        accepted: list[int] = []

        def submit() -> None:
            with httpx.Client(timeout=10) as sender:
                while not stop.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        reply = sender.post(f"{api}/v1/runs", json={"prompt": "fix the bug"})
                        accepted.append(reply.status_code)
                    stop.wait(0.5)

        sender = threading.Thread(target=submit, daemon=True)
        sender.start()
        states: list[str] = []
        try:
            end = time.monotonic() + DEADLINE_S
            while time.monotonic() < end and "firing" not in states:
                if not qd.alive:
                    pytest.fail(f"quarterdeck exited:\n{qd.log_tail()}")
                alerts = client.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
                states += [
                    a["state"] for a in alerts if a["labels"]["alertname"] == "HighErrorRate"
                ]
                time.sleep(0.5)
        finally:
            stop.set()
            sender.join(timeout=15)

        assert accepted and set(accepted) == {202}, f"run submissions answered {set(accepted)}"
        errors = client.get(
            f"{prom}/api/v1/query",
            params={
                "query": 'sum(claude_agent_requests_total{job="claude-agents",status="error"})'
            },
        ).json()["data"]["result"]
        assert errors and float(errors[0]["value"][1]) > 0, "no failed runs were scraped"
        assert "firing" in states, (
            f"HighErrorRate did not fire within {DEADLINE_S:.0f}s (states seen: {set(states)});"
            f"\n{qd_log.read_text()[-2000:]}"
        )
        assert "pending" in states[: states.index("firing")] or _was_pending(client, prom), (
            "the alert never went through pending"
        )
        labels = next(
            a["labels"]
            for a in client.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
            if a["labels"]["alertname"] == "HighErrorRate"
        )
        assert labels["severity"] == "warning" and labels["agent_type"]
        limits = client.get(
            f"{prom}/api/v1/query", params={"query": "claude_agent_budget_limit_usd"}
        ).json()["data"]["result"]
        assert [r["metric"]["tenant"] for r in limits] == [tenant_pseudonym(TENANT)]
        names = client.get(f"{prom}/api/v1/label/tenant/values").json()["data"]
        assert TENANT not in names


def _was_pending(client: httpx.Client, prom: str) -> bool:
    """Prometheus records every pending/firing alert in the ALERTS series; look back for it."""
    result = client.get(
        f"{prom}/api/v1/query",
        params={
            "query": f'max_over_time(ALERTS{{alertname="HighErrorRate",'
            f'alertstate="pending"}}[{int(DEADLINE_S)}s])'
        },
    ).json()["data"]["result"]
    return bool(result)


def _serve(tmp_path: Path, **settings: Any) -> tuple[str, Any]:
    port = free_port()
    server = start_metrics_server(
        load_settings(None, data_dir=tmp_path, metrics_port=port, **settings)
    )
    return f"http://127.0.0.1:{port}/metrics", server


def test_the_listener_requires_its_token_and_pseudonymises_tenants(tmp_path: Path) -> None:
    BUDGET_LIMIT.labels(TENANT, "daily").set(7)
    AUDIT_CHAIN_VALID.labels(tenant="all").set(1)
    url, server = _serve(tmp_path, metrics_token=TOKEN)
    try:
        assert httpx.get(url).status_code == 401
        wrong = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and "Bearer" in wrong.headers["www-authenticate"]
        assert httpx.get(url, headers={"Authorization": TOKEN}).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        for query in ({}, {"name[]": "claude_agent_budget_limit_usd"}):
            r = httpx.get(url, headers=good, params=query)
            assert r.status_code == 200
            pseudonym = tenant_pseudonym(TENANT)
            line = f'claude_agent_budget_limit_usd{{period="daily",tenant="{pseudonym}"}} 7.0'
            assert line in r.text, r.text[-2000:]
            assert TENANT not in r.text
        # the audit chain's all-tenants series is not a tenant: it keeps its value
        text = httpx.get(url, headers=good).text
        assert 'claude_agent_audit_chain_valid{tenant="all"} 1.0' in text
    finally:
        server.shutdown()
        server.server_close()


def test_tenant_names_and_an_open_listener_only_when_configured(tmp_path: Path) -> None:
    BUDGET_LIMIT.labels(TENANT, "daily").set(7)
    url, server = _serve(tmp_path, metrics_tenant_labels=True)
    try:
        r = httpx.get(url)  # no token configured: open, as before
        assert r.status_code == 200
        assert f'claude_agent_budget_limit_usd{{period="daily",tenant="{TENANT}"}} 7.0' in r.text
    finally:
        server.shutdown()
        server.server_close()
    assert tenant_pseudonym("acme") == "t-" + hashlib.sha256(b"acme").hexdigest()[:8]
