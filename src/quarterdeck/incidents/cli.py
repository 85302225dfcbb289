"""``quarterdeck incidents ...``: list, show, acknowledge and resolve incidents via the API."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

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
    help="List, inspect, acknowledge and resolve incidents (talks to the API).",
    invoke_without_command=True,
)
SEVERITY_COLOUR = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry in a minimal container
        return "cli"


def _summary(incident: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "status",
        "severity",
        "service",
        "title",
        "description",
        "source",
        "occurrences",
        "opened_at",
        "acknowledged_at",
        "acknowledged_by",
        "escalated_at",
        "resolved_at",
        "resolved_by",
        "resolution_note",
    ):
        value = incident.get(key)
        if value not in (None, ""):
            table.add_row(f"[bold]{key}[/]", safe_text(value))
    for key in ("affected_components", "suggested_actions"):
        if incident.get(key):
            table.add_row(f"[bold]{key}[/]", safe_text("\n".join(incident[key])))
    console.print(table)


@app.callback()
def _default(
    ctx: typer.Context,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Without a subcommand: list open and acknowledged incidents."""
    if ctx.invoked_subcommand is None:
        list_incidents(status=["open", "acknowledged"], url=url, as_json=as_json)


@app.command("list")
def list_incidents(
    status: Annotated[
        list[str] | None, typer.Option(help="open, acknowledged or resolved (repeatable).")
    ] = None,
    severity: Annotated[list[str] | None, typer.Option(help="Filter by severity.")] = None,
    service: Annotated[str | None, typer.Option(help="Filter by service.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List incidents, newest first."""
    params = query(limit=limit, status=status, severity=severity, service=service, cursor=cursor)
    page = Api(url).json("GET", "/v1/incidents", params=params)
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        filtered = params.keys() - {"limit"}
        print_empty("No incidents match these filters." if filtered else "No incidents yet.")
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=30)  # ids are what you paste into `show`
    for name in ("status", "severity", "service", "title", "opened_at"):
        table.add_column(name)
    for inc in page["items"]:
        colour = SEVERITY_COLOUR.get(inc["severity"], "")
        table.add_row(
            inc["id"],
            inc["status"],
            f"[{colour}]{inc['severity']}[/]" if colour else inc["severity"],
            safe_text(inc["service"]),
            safe_text(inc["title"]),
            inc["opened_at"],
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"next page: --cursor {page['next_cursor']}")


@app.command("show")
def show(incident_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show one incident with its timeline and notifications."""
    incident = Api(url).json("GET", f"/v1/incidents/{incident_id}")
    if as_json:
        print_json(incident)
        return
    _summary(incident)
    console.print("[bold]timeline[/]")
    for event in incident.get("timeline", []):
        brief = ", ".join(f"{k}={v}" for k, v in (event.get("data") or {}).items())
        console.print(safe_text(f"  {event['ts']}  {event['type']}  {brief}"), highlight=False)
    for n in incident.get("notifications", []):
        line = f"  notified {n['channel']} ({n['kind']}): {n['status']} after {n['attempts']}"
        console.print(
            safe_text(line + (f" - {n['last_error']}" if n.get("last_error") else "")),
            highlight=False,
        )
        if n.get("note"):  # why a maintenance window held, suppressed or delayed it
            console.print(safe_text(f"    {n['note']}"), highlight=False)


@app.command("ack")
def ack(
    incident_id: str,
    actor: Annotated[str | None, typer.Option(help="Who owns it [default: cli:$USER].")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge an incident: you own it, and it will not escalate for staleness."""
    incident = Api(url).json(
        "POST", f"/v1/incidents/{incident_id}/ack", json={"actor": actor or _actor()}
    )
    if as_json:
        print_json(incident)
    else:
        console.print(f"{incident['id']}: {incident['status']}")


@app.command("resolve")
def resolve(
    incident_id: str,
    note: Annotated[str | None, typer.Option(help="What fixed it.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve an incident (by a human)."""
    body: dict[str, Any] = {"by": "human"}
    if note:
        body["note"] = note
    incident = Api(url).json("POST", f"/v1/incidents/{incident_id}/resolve", json=body)
    if as_json:
        print_json(incident)
    else:
        console.print(f"{incident['id']}: {incident['status']}")
