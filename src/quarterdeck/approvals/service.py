"""Tool calls held for an operator: the ``require_approval`` decision of the policy gate.

The run keeps its worker slot and waits (polling Postgres once a second, which costs nothing
measurable: approvals are rare) until an operator approves or rejects the call through the API
or CLI, the run is cancelled, or ``QUARTERDECK_POLICY_APPROVAL_TIMEOUT`` passes (then the call is
rejected as expired). The request is keyed by the tool call, so a run resumed on another worker
waits on the same request rather than asking twice.

A request still pending when its run ends (cancelled, failed, timed out: any terminal status)
becomes ``cancelled`` in the transaction that ends the run: a trigger on ``runs`` does it
(migration 0016), because a run ends through several statements of the run store and none may
forget it. Deciding it afterwards is a 409, as for any request already decided.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from quarterdeck.approvals import repository as repo
from quarterdeck.approvals.models import Approval, ApprovalStatus
from quarterdeck.exceptions import InvalidState, NotFound
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import new_id
from quarterdeck.store.pool import Database


class ApprovalService:
    def __init__(self, db: Database, *, timeout_s: float = 3600.0, poll_s: float = 1.0) -> None:
        self.db = db
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    async def request(
        self,
        *,
        run_id: str,
        tenant: str,
        tool_use_id: str,
        tool: str,
        tool_input: dict[str, Any],
        rule_id: str,
        severity: str,
        reason: str,
    ) -> Approval:
        values = {
            "id": new_id("apr"),
            "run_id": run_id,
            "tenant": tenant,
            "tool_use_id": tool_use_id,
            "tool": tool,
            "input": tool_input,
            "rule_id": rule_id,
            "severity": severity,
            "reason": reason,
            "expires_at": utcnow() + timedelta(seconds=self.timeout_s),
        }
        async with self.db.acquire() as conn:
            return Approval.model_validate(dict(await repo.request(conn, values)))

    async def wait(self, approval: Approval) -> Approval:
        """Block until the request is decided or expires; returns it as it ended."""
        while True:
            async with self.db.acquire() as conn:
                row = await repo.status_of(conn, approval.id)
                if row is not None and row["status"] == "pending" and utcnow() >= row["expires_at"]:
                    await repo.expire(conn, approval.id, utcnow())
                    row = await repo.status_of(conn, approval.id)
            if row is None or row["status"] != "pending":
                return await self.get(approval.id, None)
            await asyncio.sleep(self.poll_s)

    async def get(self, approval_id: str, tenant: str | None) -> Approval:
        async with self.db.acquire() as conn:
            row = await repo.get(conn, approval_id, tenant)
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        return Approval.model_validate(dict(row))

    async def list(
        self,
        tenant: str | None,
        status: ApprovalStatus | None = None,
        limit: int = 100,
        *,
        run_id: str | None = None,
    ) -> list[Approval]:
        async with self.db.acquire() as conn:
            rows = await repo.listing(conn, tenant, status, limit, run_id)
        return [Approval.model_validate(dict(r)) for r in rows]

    async def decide(
        self,
        approval_id: str,
        approve: bool,
        *,
        tenant: str | None,
        by: str,
        note: str | None = None,
    ) -> Approval:
        status = "approved" if approve else "rejected"
        async with self.db.acquire() as conn:
            row = await repo.decide(conn, approval_id, tenant, status, by, note)
        if row is None:
            current = await self.get(approval_id, tenant)  # 404 when not visible
            raise InvalidState(f"approval {approval_id} is already {current.status}")
        return Approval.model_validate(dict(row))
