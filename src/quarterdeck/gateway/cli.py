"""``quarterdeck gateway calls|usage``: recorded gateway traffic and its cost, via the API.

Talks to ``/v1/gateway/*`` like the other client commands (``QUARTERDECK_URL``,
``QUARTERDECK_API_KEY``), so it shows exactly what the API allows the key to see.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from quarterdeck.kit.console import Api, JsonOpt, UrlOpt, console, print_empty, print_json, query

app = typer.Typer(
    help="Calls relayed by the Anthropic-compatible gateway, and their cost (talks to the API).",
    no_args_is_help=True,
)
SinceOpt = Annotated[
    datetime | None, typer.Option(help="From this time (ISO 8601; no zone means UTC).")
]
UntilOpt = Annotated[datetime | None, typer.Option(help="Until this time (exclusive).")]
TenantOpt = Annotated[str | None, typer.Option(help="Only this tenant (keys of tenant '*' only).")]


def _stamp(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _tokens(call: dict[str, Any]) -> str:
    cache = call["cache_write_5m_tokens"] + call["cache_write_1h_tokens"]
    text = f"{call['input_tokens']} in / {call['output_tokens']} out"
    if cache or call["cache_read_tokens"]:
        text += f" / {cache} cw / {call['cache_read_tokens']} cr"
    return text


def _cost(value: float, estimated: bool) -> str:
    return f"{value:.6f}" + (" ~" if estimated else "")


@app.command("calls")
def calls(
    tenant: TenantOpt = None,
    key: Annotated[str | None, typer.Option("--key", help="Only this API key id.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run id.")] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Only this Claude Code session id.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only calls asking for this model.")] = None,
    status: Annotated[int | None, typer.Option(min=100, max=599, help="Only this status.")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List recorded gateway calls, newest first."""
    params = query(
        tenant=tenant,
        key_id=key,
        run_id=run,
        session_id=session,
        model=model,
        status=status,
        since=_stamp(since),
        until=_stamp(until),
        limit=limit,
        cursor=cursor,
    )
    page = Api(url).json("GET", "/v1/gateway/calls", params=params)
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        print_empty(
            "No gateway calls match. Point a client at the gateway: "
            "ANTHROPIC_BASE_URL=http://127.0.0.1:8080."
        )
        return
    table = Table("created_at", "tenant", "key", "model", "status", "tokens", "cost_usd", "ms")
    for call in page["items"]:
        served = call.get("served_model")
        table.add_row(
            call["created_at"],
            call["tenant"],
            call.get("key_id") or "-",
            call["model"] + (f" -> {served}" if served and served != call["model"] else ""),
            str(call["status"]) + (f" {call['error_type']}" if call.get("error_type") else ""),
            _tokens(call),
            _cost(call["cost_usd"], call["cost_estimated"]),
            f"{call['duration_ms']:.0f}",
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"next page: --cursor {page['next_cursor']}")


@app.command("usage")
def usage(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by", help="Group by tenant, key, model, session or day (repeatable or a,b)."
        ),
    ] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    tenant: TenantOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Token and cost totals of gateway calls (default: this UTC month), grouped."""
    params = query(group_by=by, since=_stamp(since), until=_stamp(until), tenant=tenant)
    report = Api(url).json("GET", "/v1/gateway/usage", params=params)
    if as_json:
        print_json(report)
        return
    if not report["rows"]:
        print_empty(f"No gateway calls between {report['since']} and {report['until']}.")
        return
    groups = report["group_by"]
    table = Table(title=f"gateway usage {report['since']} .. {report['until']}")
    for group in groups:
        table.add_column(group, no_wrap=True)
    for heading in ("calls", "errors", "input", "output", "cache w", "cache r", "search"):
        table.add_column(heading, justify="right")
    table.add_column("usd", justify="right", no_wrap=True)
    for row in report["rows"]:
        estimated = row["cost_estimated_calls"]
        table.add_row(
            *(str(row["group"].get(g) or "-") for g in groups),
            str(row["calls"]),
            str(row["errors"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            str(row["cache_write_tokens"]),
            str(row["cache_read_tokens"]),
            str(row["web_search_requests"]),
            _cost(row["cost_usd"], bool(estimated)),
        )
    console.print(table)
    if any(r["cost_estimated_calls"] for r in report["rows"]):
        console.print("~ includes estimated costs (unknown model or a stream cut short)")
