"""HTTP endpoints for tool calls held for approval. Thin: parse, call the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from quarterdeck.approvals.models import Approval, ApprovalStatus, Decision
from quarterdeck.approvals.service import ApprovalService
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import ChangeRecorder, Changes

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
CanRead = Annotated[Principal, Depends(require(Permission.RUNS_READ))]
CanDecide = Annotated[Principal, Depends(require(Permission.APPROVALS_WRITE))]
Approvals = Annotated[ApprovalService, Depends(provide(ApprovalService))]


def _check(approval_id: str) -> str:
    if not is_id(approval_id, "apr"):
        raise ValidationFailed(
            f"approval id {approval_id!r} is malformed",
            errors=[{"field": "approval_id", "message": "malformed"}],
        )
    return approval_id


@router.get("", response_model=list[Approval], summary="Tool calls held for approval")
async def list_approvals(
    principal: CanRead,
    approvals: Approvals,
    status: ApprovalStatus | None = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    run_id: Annotated[str | None, Query(max_length=64, description="Only this run's")] = None,
) -> list[Approval]:
    return await approvals.list(principal.tenant_filter(), status, limit, run_id=run_id)


@router.get("/{approval_id}", response_model=Approval, summary="One approval request")
async def get_approval(approval_id: str, principal: CanRead, approvals: Approvals) -> Approval:
    return await approvals.get(_check(approval_id), principal.tenant_filter())


async def decide_as(
    approvals: ApprovalService,
    changes: ChangeRecorder,
    principal: Principal,
    approval_id: str,
    approve: bool,
    note: str | None,
) -> Approval:
    """An approval decided by ``principal``, within its tenant, and recorded as a change: the
    API's and the dashboard's one way to decide (``ui/run_actions.py``)."""
    done = await approvals.decide(
        _check(approval_id),
        approve,
        tenant=principal.tenant_filter(),
        by=f"key:{principal.key_id}",
        note=note,
    )
    await changes.record(
        principal.key_id,
        f"approval.{done.status}",
        done.tenant,
        {
            "approval_id": done.id,
            "run_id": done.run_id,
            "tool": done.tool,
            "rule_id": done.rule_id,
            "note": note,
        },
    )
    return done


@router.post("/{approval_id}/approve", response_model=Approval, summary="Let the tool call run")
async def approve(
    approval_id: str,
    principal: CanDecide,
    approvals: Approvals,
    changes: Changes,
    body: Decision | None = None,
) -> Approval:
    note = body.note if body else None
    return await decide_as(approvals, changes, principal, approval_id, True, note)


@router.post("/{approval_id}/reject", response_model=Approval, summary="Refuse the tool call")
async def reject(
    approval_id: str,
    principal: CanDecide,
    approvals: Approvals,
    changes: Changes,
    body: Decision | None = None,
) -> Approval:
    note = body.note if body else None
    return await decide_as(approvals, changes, principal, approval_id, False, note)
