"""``quarterdeck scaler status`` and ``quarterdeck scaler decisions``: what the running scaler is
set to do and what it decided, read through the API.

Why through the API rather than Postgres: the operator asking "why did it not scale out?" is
usually on a laptop with a key, not inside the cluster, and the API applies the same
``scaling:read`` rule as the dashboard. The commands are added to the ``scaler`` sub-app by
:func:`register`, so the offline simulator (``cli.py``) and these stay separate modules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from quarterdeck.kit.console import (
    Api,
    JsonOpt,
    UrlOpt,
    clip,
    console,
    print_empty,
    print_json,
    query,
    safe_text,
)


class DirectionChoice(StrEnum):
    """``--direction``'s values (typer shows and checks them as a choice)."""

    up = "up"
    down = "down"
    hold = "hold"


DIRECTION_COLOUR = {"up": "green", "down": "cyan", "hold": "dim"}
REASON_WIDTH = 80
OFF_HINT = (
    "The scaler is off. Set QUARTERDECK_SCALER_MODE=dry-run (decide and record only), metric "
    "(export the desired count for KEDA or an HPA) or kubernetes (scale the worker Deployment) "
    "and restart the server."
)


def ago(seconds: float | None) -> str:
    """``seconds`` as a person reads an age: ``45 s``, ``3m 05s``, ``2h 10m``."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def when(value: str) -> str:
    """An API timestamp as ``2026-03-01 12:00:05 UTC``: whole seconds, one zone, short enough
    for a table column (the API's own text when it is not a timestamp)."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return safe_text(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _direction(value: str) -> str:
    colour = DIRECTION_COLOUR.get(value)
    return f"[{colour}]{value}[/]" if colour else safe_text(value)


def _change(decision: dict[str, Any]) -> str:
    return f"{decision['current']} \u2192 {decision['desired']}"


def show_status(status: dict[str, Any]) -> None:
    """Print a status as ``GET /v1/scaling/status`` returns it."""
    table = Table(show_header=False, box=None)
    table.add_row("[bold]mode[/]", safe_text(status["mode"]))
    table.add_row("[bold]policy[/]", safe_text(status["policy"]))
    table.add_row("[bold]target[/]", safe_text(status.get("target") or "-"))
    table.add_row("[bold]interval[/]", f"{status['interval_s']:g} s")
    table.add_row(
        "[bold]leader[/]",
        "yes (the server that answered runs the scaler)" if status["leader"] else "no",
    )
    last = status.get("last")
    if last:
        table.add_row(
            "[bold]last decision[/]",
            f"{when(last['at'])} ({ago(status.get('last_age_s'))} ago)",
        )
        applied = "" if last.get("applied") is None else f", applied {last['applied']}"
        table.add_row(
            "[bold]change[/]", f"{_change(last)} {_direction(last['direction'])}{applied}"
        )
        table.add_row("[bold]reason[/]", safe_text(last["reason"]))
        if last.get("error"):
            table.add_row("[bold]error[/]", f"[red]{safe_text(last['error'])}[/]")
    else:
        table.add_row("[bold]last decision[/]", "none stored yet")
    console.print(table)
    if status["mode"] == "off":
        console.print(OFF_HINT, highlight=False, markup=False)
    elif status.get("stale"):
        interval = float(status["interval_s"])
        console.print(
            f"[yellow]warning: no decision stored for over {ago(3 * interval)} (three "
            "intervals): no replica holds the scaler's leadership, or the leader cannot reach "
            "Postgres or Kubernetes. Check the server logs.[/]",
            highlight=False,
        )


def show_decisions(page: dict[str, Any], *, filtered: bool) -> None:
    """Print a page as ``GET /v1/scaling/decisions`` returns it."""
    if not page["items"]:
        print_empty(
            "No decisions match this filter."
            if filtered
            else "No scaling decisions stored yet (see `quarterdeck scaler status`)."
        )
        return
    table = Table()
    table.add_column("time", no_wrap=True)
    table.add_column("direction")
    table.add_column("current\u2192desired", justify="right", no_wrap=True)
    table.add_column("applied", justify="right")
    table.add_column("reason")
    for d in page["items"]:
        reason = clip(d["reason"], REASON_WIDTH, lines=1)
        if d.get("error"):
            reason += f" [error: {clip(d['error'], REASON_WIDTH, lines=1)}]"
        table.add_row(
            when(d["at"]),
            _direction(d["direction"]),
            _change(d),
            "-" if d.get("applied") is None else str(d["applied"]),
            safe_text(reason),
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"older decisions: --cursor {page['next_cursor']}", highlight=False)


def status(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The scaler's mode, policy, target and leadership, and its newest decision."""
    data = Api(url).json("GET", "/v1/scaling/status")
    if as_json:
        print_json(data)
    else:
        show_status(data)


def decisions(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
    direction: Annotated[
        DirectionChoice | None, typer.Option(help="Only up, down or hold.")
    ] = None,
    cursor: Annotated[
        str | None, typer.Option(help="Continue from a previous page (its next cursor).")
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The scaler's decisions, newest first (--json includes each decision's factors)."""
    params = query(limit=limit, direction=direction.value if direction else None, cursor=cursor)
    page = Api(url).json("GET", "/v1/scaling/decisions", params=params)
    if as_json:
        print_json(page)
    else:
        show_decisions(page, filtered=direction is not None or cursor is not None)


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``decisions`` to the ``scaler`` sub-app."""
    app.command("status")(status)
    app.command("decisions")(decisions)
