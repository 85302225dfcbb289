"""Every dashboard route under ``/ui``, and its static files.

Each page module owns one router; this is the one place they are put together, so the app
includes a single router (left out of the OpenAPI document: these are pages, not the API).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from quarterdeck.ui import (
    audit_page,
    budgets_page,
    gateway_page,
    incidents_page,
    keys_page,
    live,
    login,
    overview,
    reports_page,
    rollouts_page,
    run_detail,
    runs_list,
    scaling_page,
)
from quarterdeck.ui.paths import STATIC_PREFIX

STATIC_DIR = Path(__file__).parent / "static"


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    router.include_router(login.router)
    router.include_router(overview.router)
    router.include_router(gateway_page.router)
    router.include_router(incidents_page.router)
    router.include_router(audit_page.router)
    router.include_router(budgets_page.router)
    router.include_router(keys_page.router)
    router.include_router(scaling_page.router)
    router.include_router(reports_page.router)
    router.include_router(rollouts_page.router)
    router.include_router(live.router)
    router.include_router(runs_list.router)
    router.include_router(run_detail.router)  # last: /ui/runs/{run_id} after literal /ui/runs/x
    return router


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app``: its pages and its vendored static files."""
    app.include_router(build_router())
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="ui-static")
