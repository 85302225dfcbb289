"""``quarterdeck maintenance add|list|delete``: maintenance windows through the API.

Through the API, like ``quarterdeck incidents`` and ``quarterdeck report``: the API applies the
platform-only permissions and audits each change, which a direct database write would skip.
Times are ISO 8601 with an offset (``2026-10-03T22:00:00Z``); the server refuses naive ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from quarterdeck.kit.console import (
    Api,
    JsonOpt,
    UrlOpt,
    console,
    print_empty,
    print_json,
    query,
    safe_text,
)

app = typer.Typer(
    help="Maintenance windows: scheduled downtime the monthly report excuses (talks to the API).",
    no_args_is_help=True,
)


def _minutes(w: dict[str, Any]) -> str:
    start = datetime.fromisoformat(w["starts_at"])
    end = datetime.fromisoformat(w["ends_at"])
    return f"{(end - start).total_seconds() / 60:,.0f}"


@app.command("add")
def add(
    start: Annotated[str, typer.Option("--start", help="ISO 8601 with offset, e.g. ...Z")],
    end: Annotated[str, typer.Option("--end", help="ISO 8601 with offset; at most 7 days on")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in the report).")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Declare a maintenance window."""
    body = {"starts_at": start, "ends_at": end, "reason": reason}
    window = Api(url).json("POST", "/v1/maintenance", json=body)
    if as_json:
        print_json(window)
    else:
        console.print(
            f"{window['id']}: {window['starts_at']} to {window['ends_at']}", highlight=False
        )


@app.command("list")
def list_windows(
    start: Annotated[
        str | None, typer.Option("--from", help="Overlapping from (ISO 8601).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Overlapping until (ISO 8601).")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List maintenance windows, earliest first."""
    items = Api(url).json("GET", "/v1/maintenance", params=query(**{"from": start, "to": end}))
    if as_json:
        print_json(items)
        return
    if not items:
        print_empty("No maintenance windows.")
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    for name in ("starts_at", "ends_at", "minutes", "reason", "created_by"):
        table.add_column(name)
    for w in items:
        table.add_row(
            w["id"],
            w["starts_at"],
            w["ends_at"],
            _minutes(w),
            safe_text(w["reason"]),
            safe_text(w.get("created_by") or "-"),
        )
    console.print(table)


@app.command("delete")
def delete(window_id: str, url: UrlOpt = None) -> None:
    """Delete a maintenance window (its downtime counts as unscheduled again)."""
    Api(url).request("DELETE", f"/v1/maintenance/{quote(window_id, safe='')}")
    console.print(f"{safe_text(window_id)}: deleted", highlight=False)
