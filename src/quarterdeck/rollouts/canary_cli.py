"""``quarterdeck canary start|status|promote|abort|history``: agent-configuration canaries.

Why a command of its own when a canary is a rollout underneath: the person trialling a cheaper
model thinks in agent types and settings (``--agent-type coder --set model=…``), not targets and
images, and wants to see the two arms' runs side by side. Promote and abort are the rollout
commands themselves (same endpoints, same audit).
"""

from __future__ import annotations

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
from quarterdeck.rollouts import cli as rollout_cli

app = typer.Typer(
    help="Agent-configuration canaries: send a share of new runs of an agent type to a "
    "candidate model, prompt or limit, compare how they end, promote or roll back.",
    no_args_is_help=True,
)
app.command("promote")(rollout_cli.promote)
app.command("abort")(rollout_cli.abort)

KIND = "agent-config"


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["model=claude-haiku-4-5", "max_turns=20"]`` into typed settings (exit 2 when bad)."""
    from quarterdeck.agents.configured import parse_setting
    from quarterdeck.exceptions import ValidationFailed

    out: dict[str, Any] = {}
    for item in items:
        try:
            name, value = parse_setting(item)
        except ValidationFailed as exc:
            fail(safe_text(f"--set {item}: {exc.detail}"), code=2)
        out[name] = value
    return out


@app.command()
def start(
    agent_type: Annotated[str, typer.Option("--agent-type", help="The agent type, e.g. coder.")],
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="A candidate setting NAME=VALUE (model, system_prompt, max_turns, max_tokens, "
            "thinking_budget, cache_ttl, timeout_s, budget_usd). Repeatable.",
        ),
    ],
    steps: Annotated[str, typer.Option(help="Shares of new runs in %, ending at 100.")] = (
        "10,25,50,100"
    ),
    pause: Annotated[
        str, typer.Option(help="Each step's pause, e.g. 15m (the last repeats; `manual` waits).")
    ] = "15m",
    min_runs: Annotated[
        int | None,
        typer.Option(help="Finished runs each arm needs [default: 3 / max-success-drop]."),
    ] = None,
    max_success_drop: Annotated[
        float, typer.Option(help="How far the candidate's success rate may fall (absolute).")
    ] = 0.05,
    max_cost_increase: Annotated[
        float, typer.Option(help="How much its cost per successful run may rise (relative).")
    ] = 0.10,
    interval: Annotated[float, typer.Option(help="Seconds between analyses.")] = 60.0,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a canary of AGENT_TYPE with the --set settings; it then runs on the server."""
    body: dict[str, Any] = {
        "agent_type": agent_type,
        "set": parse_sets(set_),
        "steps": steps,
        "pauses": pause,
        "min_runs": min_runs,
        "max_success_drop": max_success_drop,
        "max_cost_increase": max_cost_increase,
        "analysis_interval_s": interval,
    }
    rollout = Api(url).json("POST", "/v1/canaries", json=body)
    if as_json:
        print_json(rollout)
        return
    console.print(f"started {rollout['id']}", highlight=False)
    show_canary(rollout)


def show_canary(rollout: dict[str, Any]) -> None:
    rollout_cli.show_rollout(rollout)
    spec = rollout.get("spec") or {}
    base = spec.get("base") or {}
    changed = {k: v for k, v in (spec.get("settings") or {}).items() if base.get(k) != v}
    for name, value in changed.items():
        shown = str(value) if len(str(value)) <= 80 else f"{str(value)[:77]}..."
        console.print(
            f"  {name}: {safe_text(str(base.get(name, '(as configured)')))} -> {safe_text(shown)}",
            highlight=False,
        )
    arms = (rollout.get("last_analysis") or {}).get("arms")
    if arms:
        table = Table("arm", "runs", "succeeded", "cost $", "turns", "p95 s")
        for arm in ("stable", "candidate"):
            a = arms.get(arm) or {}
            table.add_row(
                arm,
                str(a.get("runs", 0)),
                str(a.get("succeeded", 0)),
                f"{a.get('cost_usd', 0.0):.4f}",
                _num(a.get("turns_mean")),
                _num(a.get("duration_p95_s")),
            )
        console.print(table)


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}"


@app.command()
def status(
    rollout_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A canary [default: every live one].")
    ] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A canary's step, share, arms and last analysis (no ID: the live ones)."""
    rollout_cli.show_status(
        rollout_id,
        url,
        as_json,
        kind=KIND,
        show=show_canary,
        none_live="No canary is live (see `quarterdeck canary history`).",
    )


@app.command()
def history(
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Agent-configuration canaries, newest first."""
    page = Api(url).json("GET", "/v1/rollouts", params=query(limit=limit, cursor=cursor, kind=KIND))
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        print_empty("No canaries yet.")
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=29)
    for name in ("agent type", "candidate", "phase", "share", "started", "reason"):
        table.add_column(name)
    for r in page["items"]:
        table.add_row(
            r["id"],
            safe_text(str(r["target"]).removeprefix("agent:")),
            safe_text(r["image"]),
            rollout_cli._phase(r["phase"]),
            f"{r['weight']} %",
            str(r["created_at"])[:19],
            safe_text(r.get("pause_reason") or ""),
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"older canaries: --cursor {page['next_cursor']}", highlight=False)
