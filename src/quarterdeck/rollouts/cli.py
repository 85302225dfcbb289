"""``quarterdeck rollout start|status|promote|abort|history|export``: progressive delivery from a
terminal, through the API.

Why through the API: the person deciding whether a canary goes on is on a laptop with a key,
and the server applies the same platform-only ``rollouts:*`` rule and audits the promote or
abort as it does for the dashboard. ``status`` answers the questions a person has during a
rollout in one screen: which step, how much traffic the canary *really* gets (a "5 %" step on
three pods is a third), how long the pause still runs, and which measurement holds it back.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

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
from quarterdeck.kit.durations import parse_duration

app = typer.Typer(
    help="Progressive delivery: start a canary or blue-green rollout, watch it, promote or "
    "abort it, and export it for Argo Rollouts (talks to the API).",
    no_args_is_help=True,
)

PHASE_COLOUR = {
    "progressing": "cyan",
    "paused": "yellow",
    "inconclusive": "yellow",
    "soaking": "cyan",
    "completed": "green",
    "aborted": "dim",
    "rolled_back": "red",
}
VERDICT_COLOUR = {"pass": "green", "fail": "red", "inconclusive": "yellow"}


class StrategyChoice(StrEnum):
    canary = "canary"
    blue_green = "blue-green"


class TrafficChoice(StrEnum):
    auto = "auto"
    nginx = "nginx"
    replicas = "replicas"


class ExportFormat(StrEnum):
    argo = "argo"


def parse_check(text: str) -> dict[str, str]:
    """``NAME=QUERY:CONDITION`` as the API's check: the condition after the *last* colon (a
    PromQL recording rule's name has colons of its own) is the success condition; ``!`` in
    front of it makes it a failure condition instead. Raises ``ValueError`` saying why."""
    name, eq, rest = text.partition("=")
    query_text, colon, condition = rest.rpartition(":")
    name, query_text, condition = name.strip(), query_text.strip(), condition.strip()
    if not eq or not colon or not name or not query_text or condition in ("", "!"):
        raise ValueError(
            f"--check {text!r}: expected NAME=QUERY:CONDITION, e.g. "
            "'errors=sum(rate(errors{version=\"{{version}}\"}[1m])):result < 0.05'"
        )
    if condition.startswith("!"):
        return {"name": name, "query": query_text, "failure": condition[1:].strip()}
    return {"name": name, "query": query_text, "success": condition}


def seconds(value: float | None) -> str:
    """A duration as a person reads it: ``45 s``, ``3m 05s``, ``2h 10m``."""
    if value is None:
        return "-"
    s = max(0.0, float(value))
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _phase(value: str) -> str:
    colour = PHASE_COLOUR.get(value)
    return f"[{colour}]{safe_text(value)}[/]" if colour else safe_text(value)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return safe_text(value)


def weight_text(rollout: dict[str, Any]) -> str:
    """The weight asked for and what it really is, e.g. ``5 % (really 25 %: replicas: 1 canary
    of 4 pods)``."""
    text = f"{rollout['weight']} %"
    real = rollout.get("effective_weight")
    split = rollout.get("split")
    if real is not None and abs(float(real) - float(rollout["weight"])) > 1e-9:
        text += f" (really {float(real):.3g} %"
        text += f": {split})" if split else ")"
    elif split:
        text += f" ({split})"
    return text


def show_rollout(r: dict[str, Any]) -> None:
    """One rollout's status, as ``GET /v1/rollouts/{id}`` returns it."""
    table = Table(show_header=False, box=None)
    table.add_row("[bold]id[/]", r["id"])
    table.add_row("[bold]target[/]", f"{safe_text(r['target'])} \u2190 {safe_text(r['image'])}")
    table.add_row("[bold]strategy[/]", f"{r['strategy']}, traffic by {r['traffic']}")
    table.add_row("[bold]phase[/]", _phase(r["phase"]))
    table.add_row("[bold]step[/]", f"{min(r['step_index'] + 1, r['steps'])}/{r['steps']}")
    table.add_row("[bold]weight[/]", safe_text(weight_text(r)))
    if r.get("remaining_pause_s") is not None:
        table.add_row("[bold]pause left[/]", seconds(r["remaining_pause_s"]))
    if r.get("pause_reason"):
        table.add_row("[bold]reason[/]", f"[yellow]{safe_text(r['pause_reason'])}[/]")
    table.add_row(
        "[bold]started[/]", f"{r['created_at']} by {safe_text(r.get('created_by') or '-')}"
    )
    console.print(table)
    last = r.get("last_analysis")
    if last:
        show_analysis(last)


def show_analysis(last: dict[str, Any]) -> None:
    """The newest analysis: its verdict and each measurement's value against its limit."""
    verdict = str(last.get("verdict") or "no result")
    colour = VERDICT_COLOUR.get(verdict, "")
    head = f"last analysis: [{colour}]{verdict}[/]" if colour else f"last analysis: {verdict}"
    if last.get("error"):
        head += f" ([red]{safe_text(last['error'])}[/])"
    if last.get("samples") is not None:
        head += f" on {last['samples']} samples"
        if last.get("required") is not None:
            head += f" (needs {last['required']})"
    console.print(head, highlight=False)
    measurements = last.get("measurements") or []
    if not measurements:
        if last.get("reason"):
            console.print(safe_text(last["reason"]), highlight=False)
        return
    table = Table()
    for column in ("measurement", "value", "limit", "verdict", "detail"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for m in measurements:
        v = str(m.get("verdict", ""))
        c = VERDICT_COLOUR.get(v)
        table.add_row(
            safe_text(m.get("name", "")),
            _number(m.get("value")),
            safe_text(m.get("limit", "")),
            f"[{c}]{v}[/]" if c else safe_text(v),
            safe_text(m.get("detail", "")),
        )
    console.print(table)


def show_events(events: list[dict[str, Any]]) -> None:
    if not events:
        return
    console.print("[bold]events[/]")
    for e in events:
        console.print(f"  {e['at']}  {e['kind']}  {safe_text(e['message'])}", highlight=False)


@app.command()
def start(
    image: Annotated[str, typer.Option(help="The new image, e.g. registry/app:1.4.2.")],
    target: Annotated[str, typer.Option(help="The Deployment rolled out.")] = "claude-agent-api",
    strategy: Annotated[StrategyChoice, typer.Option()] = StrategyChoice.canary,
    steps: Annotated[str, typer.Option(help="Canary weights in %, ending at 100.")] = (
        "5,20,50,80,100"
    ),
    pause: Annotated[
        str | None,
        typer.Option(
            help="Each step's analysis pause, e.g. 5m,3m (the last repeats; `manual` "
            "waits for a promote); by default 5m, then 3m.",
        ),
    ] = None,
    traffic: Annotated[
        TrafficChoice, typer.Option(help="How traffic is shifted (auto: nginx if present).")
    ] = TrafficChoice.auto,
    max_error_rate: Annotated[float, typer.Option(help="Highest canary error rate.")] = 0.01,
    max_latency: Annotated[str, typer.Option(help="Highest canary p95 latency.")] = "5s",
    check: Annotated[
        list[str] | None,
        typer.Option(
            help="A PromQL check NAME=QUERY:CONDITION ({{version}} in the query; the condition "
            "on `result` must hold, or with a leading ! must not). Repeatable."
        ),
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a rollout of IMAGE to TARGET; it then runs on the server."""
    try:
        latency = parse_duration(max_latency)
        checks = [parse_check(c) for c in check or []]
    except ValueError as exc:
        fail(safe_text(str(exc)), code=2)
    body: dict[str, Any] = {
        "target": target,
        "image": image,
        "strategy": strategy.value,
        "steps": steps,
        "traffic": traffic.value,
        "max_error_rate": max_error_rate,
        "max_latency_p95_s": latency,
        "checks": checks,
    }
    if pause:
        body["pauses"] = pause
    rollout = Api(url).json("POST", "/v1/rollouts", json=body)
    if as_json:
        print_json(rollout)
        return
    console.print(f"started {rollout['id']}", highlight=False)
    show_rollout(rollout)


@app.command()
def status(
    rollout_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A rollout [default: every live one].")
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A rollout's phase, step, real split, pause and last analysis (no ID: the live ones)."""
    show_status(rollout_id, url, as_json)


def show_status(
    rollout_id: str | None,
    url: str | None,
    as_json: bool,
    *,
    kind: str | None = None,
    show: Callable[[dict[str, Any]], None] = show_rollout,
    none_live: str = "No rollout is live (see `quarterdeck rollout history`).",
) -> None:
    """One rollout with its events, or every live one (of ``kind``), each drawn by ``show``."""
    api = Api(url)
    if rollout_id:
        detail = api.json("GET", f"/v1/rollouts/{rollout_id}")
        if as_json:
            print_json(detail)
            return
        show(detail)
        show_events(detail.get("events") or [])
        return
    page = api.json("GET", "/v1/rollouts", params=query(live="true", limit=50, kind=kind))
    if as_json:
        print_json(page["items"])
        return
    if not page["items"]:
        print_empty(none_live)
        return
    for i, rollout in enumerate(page["items"]):
        if i:
            console.print()
        show(rollout)


@app.command()
def promote(
    rollout_id: Annotated[str, typer.Argument(metavar="ID")],
    full: Annotated[bool, typer.Option("--full", help="Skip every remaining step.")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Skip the rest of the current step (--full: go to 100 % now)."""
    rollout = Api(url).json("POST", f"/v1/rollouts/{rollout_id}/promote", json={"full": full})
    if as_json:
        print_json(rollout)
    else:
        console.print(f"{rollout['id']}: {rollout['phase']}, weight {weight_text(rollout)}")


@app.command()
def abort(
    rollout_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="Why (stored with the rollout and audited).")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Abort: all traffic back to the stable version."""
    if not reason.strip():
        fail("--reason must say why", code=2)
    rollout = Api(url).json("POST", f"/v1/rollouts/{rollout_id}/abort", json={"reason": reason})
    if as_json:
        print_json(rollout)
    else:
        console.print(f"{rollout['id']}: {rollout['phase']}")


@app.command()
def history(
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rollouts, newest first."""
    page = Api(url).json("GET", "/v1/rollouts", params=query(limit=limit, cursor=cursor))
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        print_empty("No rollouts yet.")
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=29)
    for name in ("target", "image", "phase", "step", "weight", "started", "reason"):
        table.add_column(name)
    for r in page["items"]:
        table.add_row(
            r["id"],
            safe_text(r["target"]),
            safe_text(r["image"]),
            _phase(r["phase"]),
            f"{min(r['step_index'] + 1, r['steps'])}/{r['steps']}",
            f"{r['weight']} %",
            str(r["created_at"])[:19],
            safe_text(r.get("pause_reason") or ""),
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"older rollouts: --cursor {page['next_cursor']}", highlight=False)


@app.command()
def export(
    rollout_id: Annotated[str, typer.Argument(metavar="ID")],
    format_: Annotated[
        ExportFormat, typer.Option("--format", help="Only argo (Argo Rollouts manifests).")
    ] = ExportFormat.argo,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    url: UrlOpt = None,
) -> None:
    """The rollout as Argo Rollouts manifests (a Rollout and its AnalysisTemplates)."""
    text = Api(url).request("GET", f"/v1/rollouts/{rollout_id}/{format_.value}").text
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
    console.print(f"wrote {out}", highlight=False)
