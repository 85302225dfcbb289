"""HTTP endpoints for tool calls held for approval. Thin: parse, call the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from quarterdeck.approvals.service import Approval, ApprovalService, ApprovalStatus, Decision
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import record_change

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
CanRead = Annotated[Principal, Depends(require(Permission.RUNS_READ))]
CanDecide = Annotated[Principal, Depends(require(Permission.APPROVALS_WRITE))]


def _service(request: Request) -> ApprovalService:
    service: ApprovalService = request.app.state.runtime.approvals
    return service


def _check(approval_id: str) -> str:
    if not is_id(approval_id, "apr"):
        raise ValidationFailed(
            f"approval id {approval_id!r} is malformed",
            errors=[{"field": "approval_id", "message": "malformed"}],
        )
    return approval_id


@router.get("", response_model=list[Approval], summary="Tool calls held for approval")
async def list_approvals(
    request: Request,
    principal: CanRead,
    status: ApprovalStatus | None = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[Approval]:
    return await _service(request).list(principal.tenant_filter(), status, limit)


@router.get("/{approval_id}", response_model=Approval, summary="One approval request")
async def get_approval(approval_id: str, request: Request, principal: CanRead) -> Approval:
    return await _service(request).get(_check(approval_id), principal.tenant_filter())


async def _decide(
    request: Request, principal: Principal, approval_id: str, approve: bool, note: str | None
) -> Approval:
    done = await _service(request).decide(
        _check(approval_id),
        approve,
        tenant=principal.tenant_filter(),
        by=f"key:{principal.key_id}",
        note=note,
    )
    await record_change(
        request,
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
    approval_id: str, request: Request, principal: CanDecide, body: Decision | None = None
) -> Approval:
    return await _decide(request, principal, approval_id, True, body.note if body else None)


@router.post("/{approval_id}/reject", response_model=Approval, summary="Refuse the tool call")
async def reject(
    approval_id: str, request: Request, principal: CanDecide, body: Decision | None = None
) -> Approval:
    return await _decide(request, principal, approval_id, False, body.note if body else None)
