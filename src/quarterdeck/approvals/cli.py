"""``quarterdeck approvals``: see and decide tool calls the policy gate held for an operator."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from quarterdeck.kit.console import (
    Api,
    JsonOpt,
    UrlOpt,
    console,
    print_empty,
    print_json,
    safe_text,
)

app = typer.Typer(
    help="Tool calls held by the policy gate (require_approval): list, approve, reject.\n\n"
    "The run waits (its worker slot held) until you decide or the approval times out.",
    no_args_is_help=True,
)
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why; kept with the decision.")]


@app.command("list")
def list_approvals(
    status: Annotated[
        str, typer.Option(help="pending, approved, rejected, expired or cancelled.")
    ] = "pending",
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List approval requests (pending ones by default)."""
    items = Api(url).json("GET", "/v1/approvals", params={"status": status})
    if as_json:
        print_json(items)
        return
    if not items:
        print_empty(
            f"No {status} approvals. Tool calls a policy rule holds for a person show here."
        )
        return
    table = Table("id", "run", "tool", "rule", "severity", "status", "reason")
    for a in items:
        table.add_row(
            *(
                safe_text(a.get(k) or "")
                for k in ("id", "run_id", "tool", "rule_id", "severity", "status", "reason")
            )
        )
    console.print(table)


def _decide(verb: str, approval_id: str, note: str | None, url: str | None, as_json: bool) -> None:
    done = Api(url).json("POST", f"/v1/approvals/{approval_id}/{verb}", json={"note": note})
    if as_json:
        print_json(done)
    else:
        console.print(f"{done['id']}: {done['status']} ({done['tool']} in run {done['run_id']})")


@app.command()
def approve(
    approval_id: str, note: NoteOpt = None, url: UrlOpt = None, as_json: JsonOpt = False
) -> None:
    """Let the held tool call run."""
    _decide("approve", approval_id, note, url, as_json)


@app.command()
def reject(
    approval_id: str, note: NoteOpt = None, url: UrlOpt = None, as_json: JsonOpt = False
) -> None:
    """Refuse the held tool call; the model sees a clear tool error."""
    _decide("reject", approval_id, note, url, as_json)
