"""The Runs page: find runs (filters, search, keyset pages), submit one, cancel many.

It reads and acts only through :class:`RunService`, with the API's rules: the viewer's
``tenant_filter`` as reach (``runs/api.py list_runs``), ``tenant_for_new`` for a submission and
the same audit context (``submit_run``), ``cancel`` per run with the same reach
(``cancel_run``), so another tenant's run is *not found* here exactly as it is there.

The first page's rows are a live region: they re-fetch ``/ui/runs/rows`` with the same filters
when ``/ui/live/changes`` says runs changed. Later pages stay still: a keyset page that moved
under its reader would skip or repeat runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.exceptions import InvalidState, NotFound, ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide, provide_optional
from quarterdeck.runs.api import context, tenant_reach
from quarterdeck.runs.models import Run, RunCreate, RunFilter, RunStatus
from quarterdeck.runs.service import RunService
from quarterdeck.security.auth import Permission, Role
from quarterdeck.ui.confirm import ask, confirmed
from quarterdeck.ui.guard import RunsReader, RunsWriter
from quarterdeck.ui.web import Viewer, render

router = APIRouter()
Runs = Annotated[RunService, Depends(provide(RunService))]
Catalog = Annotated[AgentCatalog | None, Depends(provide_optional(AgentCatalog))]

PAGE_SIZE = 50
MAX_CANCEL = 500
"""Runs one bulk cancel may name: a page's worth many times over, and a bounded post."""
STATUSES = [s.value for s in RunStatus]


class Listing:
    """The filters of one request, parsed as the API parses them, and the query that repeats
    them in links (next page, the live fragment)."""

    def __init__(
        self,
        viewer: Viewer,
        *,
        status: list[str],
        agent_type: str,
        model: str,
        tenant: str,
        after: str,
        before: str,
        q: str,
        cursor: str,
    ) -> None:
        bad = [s for s in status if s not in STATUSES]
        if bad:
            raise _invalid("status", f"unknown status {bad[0]!r}")
        if cursor and not is_id(cursor, "run"):
            raise _invalid("cursor", "cursor is malformed")
        self.values = {
            "agent_type": agent_type.strip(),
            "model": model.strip(),
            "tenant": tenant.strip(),
            "after": after.strip(),
            "before": before.strip(),
            "q": q.strip(),
        }
        self.status = list(dict.fromkeys(status))
        self.cursor = cursor or None
        v = self.values
        self.filter = RunFilter(
            status=[RunStatus(s) for s in self.status] or None,
            agent_type=v["agent_type"] or None,
            model=v["model"] or None,
            tenant=tenant_reach(viewer.principal, v["tenant"] or None),
            q=v["q"] or None,
            created_after=_utc(v["after"], "after"),
            created_before=_utc(v["before"], "before"),
            cursor=self.cursor,
            limit=PAGE_SIZE,
        )

    def query(self, **extra: str) -> str:
        pairs = [("status", s) for s in self.status]
        pairs += [(k, v) for k, v in self.values.items() if v]
        pairs += [(k, v) for k, v in extra.items() if v]
        return urlencode(pairs)

    @property
    def active(self) -> bool:
        return bool(self.status or any(self.values.values()))


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"field": field, "message": message}])


def _utc(value: str, field: str) -> datetime | None:
    """A ``datetime-local`` input (no zone), read as UTC, as the form says."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(field, f"{field} must be a date and time, e.g. 2025-01-31T09:30") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def listing(
    viewer: RunsReader,
    status: Annotated[list[str], Query(max_length=len(STATUSES))] = [],  # noqa: B006
    agent_type: Annotated[str, Query(max_length=64)] = "",
    model: Annotated[str, Query(max_length=128)] = "",
    tenant: Annotated[str, Query(max_length=64)] = "",
    after: Annotated[str, Query(max_length=32)] = "",
    before: Annotated[str, Query(max_length=32)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str, Query(max_length=64)] = "",
) -> Listing:
    return Listing(
        viewer,
        status=status,
        agent_type=agent_type,
        model=model,
        tenant=tenant,
        after=after,
        before=before,
        q=q,
        cursor=cursor,
    )


Filters = Annotated[Listing, Depends(listing)]


def duration_of(run: Run) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at or datetime.now(UTC)
    return max(0.0, (end - run.started_at).total_seconds())


def _row_context(viewer: Viewer, runs: list[Run]) -> dict[str, Any]:
    return {
        "runs": runs,
        "show_tenant": viewer.tenant is None,
        "can_write": viewer.can(Permission.RUNS_WRITE),
        "duration_of": duration_of,
    }


async def _page(
    request: Request,
    viewer: Viewer,
    runs: RunService,
    catalog: AgentCatalog | None,
    found: Listing,
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    error: str | None = None,
) -> Response:
    page = await runs.list_page(found.filter, viewer.tenant)
    flash = {
        k: int(v)
        for k, v in request.query_params.items()
        if k in ("cancelled", "not_found", "finished") and v.isdigit() and len(v) < 6
    }
    return render(
        request,
        "runs.html",
        viewer,
        status=status,
        found=found,
        statuses=STATUSES,
        agent_types=[t.name for t in catalog.list()] if catalog is not None else [],
        next_url=f"/ui/runs?{found.query(cursor=page.next_cursor)}" if page.next_cursor else None,
        first_url=f"/ui/runs?{found.query()}" if found.cursor else None,
        rows_url=f"/ui/runs/rows?{found.query()}",
        live=found.cursor is None,
        flash=flash,
        form=form or {},
        error=error,
        **_row_context(viewer, page.items),
    )


@router.get("/ui/runs", summary="Runs")
async def runs_page(
    request: Request, viewer: RunsReader, runs: Runs, catalog: Catalog, found: Filters
) -> Response:
    return await _page(request, viewer, runs, catalog, found)


@router.get("/ui/runs/rows", summary="Runs: the table's rows (live fragment)")
async def runs_rows(request: Request, viewer: RunsReader, runs: Runs, found: Filters) -> Response:
    page = await runs.list_page(found.filter, viewer.tenant)
    return render(request, "fragments/runs_rows.html", viewer, **_row_context(viewer, page.items))


@router.post("/ui/runs", summary="Submit a run")
async def submit_run(
    request: Request, viewer: RunsWriter, runs: Runs, catalog: Catalog
) -> Response:
    form = await request.form()
    typed = {
        k: v.strip() if k != "prompt" else v
        for k in ("prompt", "agent_type", "model", "max_turns")
        if isinstance(v := form.get(k, ""), str)
    }
    try:
        body = RunCreate.model_validate(  # no workspace from this form: a prompt and choices
            {
                "prompt": typed.get("prompt", ""),
                "agent_type": typed.get("agent_type") or None,
                "model": typed.get("model") or None,
                "max_turns": typed.get("max_turns") or None,  # pydantic parses the digits
            }
        )
        principal = viewer.principal
        run, _ = await runs.submit(
            body,
            tenant=principal.tenant_for_new(),
            context=context(request, principal),
            admin=principal.role is Role.admin,
        )
    except ValidationError as exc:
        message = "; ".join(_field_error(e) for e in exc.errors())
    except ValidationFailed as exc:
        message = exc.detail
    else:
        return RedirectResponse(f"/ui/runs/{run.id}", status_code=303)
    empty = Listing(
        viewer, status=[], agent_type="", model="", tenant="", after="", before="", q="", cursor=""
    )
    return await _page(request, viewer, runs, catalog, empty, status=422, form=typed, error=message)


def _field_error(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "input"
    return f"{where}: {str(error.get('msg', 'invalid')).removeprefix('Value error, ')}"


@router.post("/ui/runs/cancel", summary="Cancel the selected runs")
async def cancel_runs(request: Request, viewer: RunsWriter, runs: Runs) -> Response:
    form = await request.form()
    ids = list(dict.fromkeys(v for v in form.getlist("run_id") if isinstance(v, str)))
    if not ids:
        raise _invalid("run_id", "select at least one run to cancel")
    if len(ids) > MAX_CANCEL:
        raise _invalid("run_id", f"at most {MAX_CANCEL} runs can be cancelled at once")
    bad = [i for i in ids if not is_id(i, "run")]
    if bad:
        raise _invalid("run_id", f"run id {bad[0][:80]!r} is malformed")
    if not await confirmed(request):
        n = len(ids)
        return await ask(
            request,
            viewer,
            message=f"Cancel {n} selected run{'s' if n != 1 else ''}? "
            "Queued runs stop at once; running ones stop after their current step.",
            verb=f"cancel {n} run{'s' if n != 1 else ''}",
            back="/ui/runs",
        )
    counts = {"cancelled": 0, "not_found": 0, "finished": 0}
    audit = context(request, viewer.principal)
    for run_id in ids:
        try:
            await runs.cancel(run_id, viewer.tenant, audit)
        except NotFound:
            counts["not_found"] += 1
        except InvalidState:  # already ended: nothing to cancel
            counts["finished"] += 1
        else:
            counts["cancelled"] += 1
    shown = {k: str(v) for k, v in counts.items() if v or k == "cancelled"}
    return RedirectResponse(f"/ui/runs?{urlencode(shown)}", status_code=303)
