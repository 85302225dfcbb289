"""100 concurrent runs from two worker processes against a small tenant budget: never overspent.

Each model call first reserves its worst case against the tenant budget in Postgres (the
gateway's budget holds), so the two processes' 100 concurrent runs cannot all see the same room
left, as a check-then-call budget lets them. Every run ends ``succeeded`` or
``budget_exceeded``, none is lost, the recorded spend stays within the limit, and no hold is
left behind once they have all ended.
"""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

BUDGET = Decimal("2.00")


def test_concurrent_runs_from_two_processes_never_overspend_a_tenant_budget(
    deployment: Deployment,
) -> None:
    sim = {"QUARTERDECK_SIMULATED_LATENCY": "20ms", "QUARTERDECK_SIMULATED_TURNS": "3"}
    deployment.start("serve", **sim)
    workers = [deployment.start("worker", wait=False, **sim) for _ in range(2)]
    for worker in workers:
        deployment.wait_ready(worker)
    client = httpx.Client(base_url=deployment.url, timeout=60)
    put = client.put("/v1/tenants/default/budget", json={"daily_usd": str(BUDGET)})
    assert put.status_code == 200, put.text

    started = time.monotonic()
    batch = client.post(
        "/v1/runs/batch", json={"runs": [{"prompt": f"task {i}"} for i in range(100)]}
    )
    assert batch.status_code == 202, batch.text
    ids = [r["id"] for r in batch.json()["runs"]]
    assert len(ids) == 100
    runs = [
        client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 60}, timeout=90).json()
        for run_id in ids
    ]
    elapsed = time.monotonic() - started

    statuses = [r["status"] for r in runs]
    assert set(statuses) <= {"succeeded", "budget_exceeded"}, statuses
    assert "succeeded" in statuses and "budget_exceeded" in statuses, statuses
    refused = [r for r in runs if r["status"] == "budget_exceeded"]
    assert all("tenant 'default' daily budget" in r["error"] for r in refused)
    # Spread over both processes: the reservations really were concurrent across them.
    workers_used = {
        e["data"]["worker"].split(":")[1]
        for run_id in ids[:40]
        for e in client.get(f"/v1/runs/{run_id}/events").json()
        if e["type"] == "status" and e["data"]["status"] == "running"
    }
    assert len(workers_used) == 2, workers_used

    spent = sum(Decimal(str(r["cost_usd"])) for r in runs)
    assert Decimal(0) < spent <= BUDGET, spent
    status = client.get("/v1/tenants/default/budget").json()
    # The tenant's spend counts live holds too: equal to the runs' cost means none is left.
    assert Decimal(str(status["daily_spent_usd"])) == pytest.approx(spent)
    assert elapsed < 60
