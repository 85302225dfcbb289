"""README's ``## HTTP API`` table lists every route of the app, with its permission, and no
route the app does not have: a route added, removed or re-guarded without the README fails here.

Paths are compared with their parameters unnamed (the README writes ``{id}``, the app
``{run_id}``) and without a query (``…/wait?timeout=``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.app import create_app
from quarterdeck.config import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s?]*)[^`]*`")
FRAMEWORK = {("GET", "/docs"), ("GET", "/openapi.json")}
"""Served by FastAPI itself, outside the document they serve."""


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def readme_routes(text: str) -> dict[tuple[str, str], str]:
    """``{(method, path shape): permission}`` from the ``## HTTP API`` table."""
    section = text.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    out: dict[tuple[str, str], str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) < 3 or not ROUTE.search(cells[0]):
            continue
        permission = cells[1].strip("`")
        for method, path in ROUTE.findall(cells[0]):
            out[(method, _shape(path))] = permission
    return out


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = load_settings(None, data_dir=tmp_path_factory.mktemp("data"), gateway_enabled=True)
    return create_app(settings).openapi()


def app_routes(document: dict[str, Any]) -> dict[tuple[str, str], str]:
    out = {}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            permission = op.get("x-permission") or "none"
            out[(method.upper(), _shape(path))] = (
                permission if isinstance(permission, str) else ", ".join(permission)
            )
    return out


def test_every_route_of_the_app_is_in_the_readme_with_its_permission(document):
    listed = readme_routes(README.read_text())
    served = app_routes(document)
    missing = sorted(set(served) - set(listed))
    assert not missing, f"routes missing from README's HTTP API table: {missing}"
    wrong = {r: (listed[r], p) for r, p in served.items() if listed[r] != p}
    assert not wrong, f"README names the wrong permission (README, app): {wrong}"


def test_the_readme_lists_no_route_the_app_does_not_have(document):
    listed = readme_routes(README.read_text())
    unknown = sorted(set(listed) - set(app_routes(document)) - FRAMEWORK)
    assert not unknown, f"README's HTTP API table lists routes the app does not serve: {unknown}"


def test_the_parser_reads_rows_naming_several_routes():
    table = (
        "\n## HTTP API\n\n| method and path | permission | what |\n| --- | --- | --- |\n"
        "| `GET /v1/runs/{id}/wait?timeout=`, `POST /v1/x` | `runs:read` | … |\n\n## Next\n"
    )
    assert readme_routes(table) == {
        ("GET", "/v1/runs/{}/wait"): "runs:read",
        ("POST", "/v1/x"): "runs:read",
    }
