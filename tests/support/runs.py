"""A running ``Run`` record for tests that drive tools, the guard or the trail without a store."""

from __future__ import annotations

from typing import Any

from quarterdeck.kit.clock import utcnow
from quarterdeck.runs.models import Run, RunStatus


def running_run(
    run_id: str,
    *,
    tenant: str = "acme",
    agent_type: str = "coder",
    params: dict[str, Any] | None = None,
) -> Run:
    now = utcnow()
    return Run(
        id=run_id,
        tenant=tenant,
        agent_type=agent_type,
        operation="task",
        prompt="p",
        model="claude-sonnet-4-5",
        status=RunStatus.running,
        attempts=1,
        max_attempts=3,
        created_at=now,
        started_at=now,
        finished_at=None,
        input_tokens=0,
        output_tokens=0,
        cache_creation_tokens=0,
        cache_read_tokens=0,
        cost_usd=None,
        turns=0,
        result=None,
        error=None,
        idempotency_key=None,
        params={"workspace": {"type": "empty"}} if params is None else params,
    )
