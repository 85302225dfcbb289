"""The run page's buttons: cancel, resubmit, and deciding a held tool call.

Each does what its API route does, with the same service call, tenant rule and actor, so the
dashboard can never do more than the key behind its session could: ``POST /v1/runs/{id}/cancel``
(confirmed first: cancelling loses the run's work), ``POST /v1/runs`` for a resubmission (the
workspace source checked for this viewer again, never copied on the original submitter's
authority), ``POST /v1/approvals/{id}/approve|reject``. Each answers 303 back to a page
(Post/Redirect/Get), so a reload never posts twice.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from quarterdeck.approvals.api import decide_as
from quarterdeck.approvals.service import ApprovalService
from quarterdeck.exceptions import InvalidState, NotFound, ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.runs.api import context
from quarterdeck.runs.models import Run, RunCreate, WorkspaceSpec
from quarterdeck.runs.service import RunService
from quarterdeck.security.auth import Role
from quarterdeck.security.trail import Changes
from quarterdeck.ui.confirm import ask, confirmed
from quarterdeck.ui.guard import Approver, RunsWriter
from quarterdeck.ui.paths import UI_PREFIX

router = APIRouter()
Runs = Annotated[RunService, Depends(provide(RunService))]
Approvals = Annotated[ApprovalService, Depends(provide(ApprovalService))]
PREFIX = f"{UI_PREFIX}/runs"
NOTE_CHARS = 2000


def checked(run_id: str) -> str:
    """A run id from a path; a malformed one is simply a run that is not there."""
    if not is_id(run_id, "run"):
        raise NotFound(f"run {run_id} not found")
    return run_id


def page_of(run_id: str) -> str:
    return f"{PREFIX}/{run_id}"


def resubmit_blocked(run: Run) -> str | None:
    """Why ``run`` cannot be submitted again as it was, or None when it can."""
    workspace = run.params.get("workspace")
    if isinstance(workspace, dict) and workspace.get("type") == "tar":
        return (
            "Its workspace was an uploaded archive, which is not kept for a resubmission: "
            "submit it again from the CLI."
        )
    return None


def resubmission(run: Run) -> RunCreate:
    """The ``POST /v1/runs`` body that asks for ``run`` again: its prompt, agent type, operation,
    model, budget and what ``Submissions`` kept of the original body in ``run.params``."""
    blocked = resubmit_blocked(run)
    if blocked is not None:
        raise InvalidState(f"run {run.id} cannot be resubmitted: {blocked}")
    params = run.params
    workspace = params.get("workspace")
    try:
        return RunCreate(
            prompt=run.prompt,
            agent_type=run.agent_type,
            operation=run.operation,
            model=run.model,
            max_turns=params.get("max_turns"),
            timeout_s=params.get("timeout_s"),
            metadata=params.get("metadata") or {},
            workspace=WorkspaceSpec.model_validate(workspace) if workspace else None,
            budget_usd=run.budget_usd,
        )
    except ValidationError as exc:
        raise ValidationFailed(
            f"run {run.id} cannot be resubmitted as it was: {exc.errors()[0]['msg']}"
        ) from exc


@router.post(PREFIX + "/{run_id}/cancel", summary="Cancel a run")
async def cancel(request: Request, run_id: str, viewer: RunsWriter, runs: Runs) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)  # another tenant's: 404, not a question
    if not await confirmed(request):
        return await ask(
            request,
            viewer,
            message=f"Cancel run {run.id}? Its work so far is kept, but it will not finish.",
            verb="cancel the run",
            back=page_of(run.id),
        )
    await runs.cancel(run.id, viewer.tenant, context(request, viewer.principal))
    return RedirectResponse(page_of(run.id), status_code=303)


@router.post(PREFIX + "/{run_id}/resubmit", summary="Submit a run again")
async def resubmit(request: Request, run_id: str, viewer: RunsWriter, runs: Runs) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    principal = viewer.principal
    again, _ = await runs.submit(
        resubmission(run),
        # The original's tenant: the viewer could read the run, so it is within reach (a
        # tenant's key gets its own tenant whatever is asked; an admin's lands where the run was,
        # not in the default tenant).
        tenant=principal.tenant_for_new(run.tenant),
        context=context(request, principal),
        admin=principal.role is Role.admin,  # a server path source: admins only, as the API
    )
    return RedirectResponse(page_of(again.id), status_code=303)


@router.post(PREFIX + "/{run_id}/approvals/{approval_id}", summary="Decide a held tool call")
async def decide(
    request: Request,
    run_id: str,
    approval_id: str,
    viewer: Approver,
    runs: Runs,
    approvals: Approvals,
    changes: Changes,
) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    if not is_id(approval_id, "apr"):
        raise NotFound(f"approval {approval_id} not found")
    held = await approvals.get(approval_id, viewer.tenant)
    if held.run_id != run.id:
        raise NotFound(f"approval {approval_id} not found for run {run.id}")
    form = await request.form()
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        raise ValidationFailed(
            "decision must be approve or reject",
            errors=[{"field": "decision", "message": "approve or reject"}],
        )
    raw_note = form.get("note")
    note = raw_note.strip() if isinstance(raw_note, str) else ""
    if len(note) > NOTE_CHARS:
        raise ValidationFailed(
            f"the reason is {len(note)} characters; the limit is {NOTE_CHARS}",
            errors=[{"field": "note", "message": "too long"}],
        )
    await decide_as(
        approvals, changes, viewer.principal, held.id, decision == "approve", note or None
    )
    return RedirectResponse(page_of(run.id), status_code=303)
