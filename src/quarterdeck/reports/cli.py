"""``quarterdeck report monthly|list|focus``: the monthly report through the API.

Why through the API rather than Postgres: the person asking for last month's report is usually
on a laptop with a key, and the API applies the same ``reports:read`` reach (a tenant's key gets
its own tenant) as the dashboard. Markdown and JSON print to stdout when no ``--out`` is given;
HTML and PDF are files, so they need ``--out``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.console import (
    Api,
    JsonOpt,
    UrlOpt,
    console,
    fail,
    print_empty,
    print_json,
    query,
    safe_text,
)
from quarterdeck.reports.compute import last_full_month

app = typer.Typer(
    help="Monthly operations reports and the FOCUS cost export.", no_args_is_help=True
)


class FormatChoice(StrEnum):
    json = "json"
    md = "md"
    html = "html"
    pdf = "pdf"


MonthOpt = Annotated[
    str | None, typer.Option("--month", help="YYYY-MM (UTC) [default: the last full month]")
]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", help="One tenant (keys of tenant '*'); default: yours.")
]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write to this file.")]


def _write(out: Path, body: bytes) -> None:
    try:
        out.write_bytes(body)
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"wrote {out} ({len(body)} bytes)", highlight=False)


@app.command("monthly")
def monthly(
    month: MonthOpt = None,
    fmt: Annotated[FormatChoice, typer.Option("--format", help="json, md, html or pdf.")] = (
        FormatChoice.md
    ),
    tenant: TenantOpt = None,
    out: OutOpt = None,
    hourly_cost: Annotated[
        float | None, typer.Option("--hourly-cost", min=0, help="ROI input: USD per hour.")
    ] = None,
    minutes_saved: Annotated[
        float | None,
        typer.Option("--minutes-saved", min=0, help="ROI input: minutes saved per success."),
    ] = None,
    url: UrlOpt = None,
) -> None:
    """One month's report (md or json to stdout; html and pdf need --out)."""
    if fmt in (FormatChoice.html, FormatChoice.pdf) and out is None:
        fail(f"--format {fmt.value} writes a file: give --out FILE")
    params = query(
        month=month or last_full_month(utcnow()),
        format=fmt.value,
        tenant=tenant,
        hourly_cost=hourly_cost,
        minutes_saved=minutes_saved,
    )
    response = Api(url, timeout=120.0).request("GET", "/v1/reports/monthly", params=params)
    if out is not None:
        _write(out, response.content)
    elif fmt is FormatChoice.json:
        print_json(response.json())
    else:
        typer.echo(response.text, nl=not response.text.endswith("\n"))


@app.command("list")
def list_reports(
    month: MonthOpt = None, tenant: TenantOpt = None, url: UrlOpt = None, as_json: JsonOpt = False
) -> None:
    """Reports stored by the leader (generated on the first of each month)."""
    items = Api(url).json("GET", "/v1/reports", params=query(month=month, tenant=tenant))
    if as_json:
        print_json(items)
        return
    if not items:
        print_empty(
            "No stored reports yet: the leader stores last month's on the 1st "
            "(`quarterdeck report monthly` computes any month now)."
        )
        return
    table = Table()
    for col in ("month", "tenant", "generated", "ROI inputs"):
        table.add_column(col)
    for r in items:
        inputs = r.get("inputs") or {}
        roi = (
            "-"
            if inputs.get("hourly_cost_usd") is None
            else f"{inputs['hourly_cost_usd']:g} USD/h, "
            f"{inputs.get('minutes_saved_per_successful_run') or 0:g} min/run"
        )
        table.add_row(
            safe_text(r["month"]),
            safe_text(r.get("tenant") or "(all)"),
            safe_text(r["generated_at"]),
            roi,
        )
    console.print(table)


@app.command("focus")
def focus(
    month: MonthOpt = None, tenant: TenantOpt = None, out: OutOpt = None, url: UrlOpt = None
) -> None:
    """The month's cost as FinOps FOCUS CSV (stdout without --out)."""
    params = query(month=month or last_full_month(utcnow()), tenant=tenant)
    response = Api(url, timeout=120.0).request("GET", "/v1/reports/focus", params=params)
    if out is not None:
        _write(out, response.content)
    else:
        typer.echo(response.text, nl=False)
