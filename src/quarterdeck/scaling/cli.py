"""``quarterdeck scaler simulate|status|decisions``: the simulator here, the live scaler's
status and stored decisions in ``cli_decisions.py``.

``simulate`` replays a load trace through the scaling policies, offline.

The simulation runs the same pure policy code the scaler will run (``policy.py`` and its
policies) against a modelled pool of workers (``simulate.py``), so a policy can be judged on a
day of load before it runs a cluster. It needs no server and no database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from quarterdeck.kit.console import JsonOpt, console, fail, print_json
from quarterdeck.scaling.cli_decisions import register

app = typer.Typer(
    help="The queue-aware scaler: its status and decisions (from the server), and a simulator "
    "that replays a load trace through the scaling policies offline.",
    no_args_is_help=True,
)
SAMPLES = ("synthetic-day", "coding-agent-day", "overload-day")  # trace.SAMPLES, not imported
# at start-up: the CLI loads the scaling package only when the command runs.
register(app)


@app.command()
def simulate(
    trace: Annotated[
        str,
        typer.Option(
            "--trace",
            "-t",
            help="A trace file (CSV or JSON, optionally .gz; format: `quarterdeck.scaling.trace_format`)"
            f" or a shipped sample's name: {', '.join(SAMPLES)}.",
        ),
    ] = SAMPLES[0],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="A policy to compare (repeat): quarterdeck, guide-hpa, guide-pressure "
            "[default: all three].",
        ),
    ] = None,
    min_replicas: Annotated[
        int | None, typer.Option(help="Fewest workers [default: the scaler's, 2].")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option(help="Most workers [default: the scaler's, 20].")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Runs one worker holds at once [default: 50].")
    ] = None,
    pod_start: Annotated[
        float, typer.Option(help="Seconds from a scale-up until a new worker serves.")
    ] = 60.0,
    wait_target: Annotated[
        float, typer.Option(help="A run waiting longer than this (s) counts against its minute.")
    ] = 60.0,
    svg: Annotated[
        Path | None, typer.Option(help="Write the replicas-and-backlog chart here (SVG).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the full result (with time series) here as JSON.")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Replay a load trace through each policy; compare waits, worker-hours and flaps.

    Every policy gets the same pool model and load; the table shows queue wait p50/p99,
    worker-hours, scale events and flaps side by side, then the issue's goal clauses.
    """
    import dataclasses

    from quarterdeck.scaling.policy import PolicyName, ScalerConfig
    from quarterdeck.scaling.report import compare, render_svg
    from quarterdeck.scaling.trace import load_sample_or_file

    names = policy or list(get_args(PolicyName))
    unknown = [n for n in names if n not in get_args(PolicyName)]
    if unknown:
        fail(f"unknown policy {unknown[0]!r}; choose from {', '.join(get_args(PolicyName))}")
    given = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "concurrency_per_worker": concurrency,
    }
    config = dataclasses.replace(
        ScalerConfig(), **{k: v for k, v in given.items() if v is not None}
    )
    try:
        config.validate()
    except ValueError as exc:
        fail(str(exc))
    try:
        loaded = load_sample_or_file(trace)
    except FileNotFoundError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"{trace}: {exc}")
    with console.status(f"replaying {len(loaded.runs):,} runs through {len(names)} policies"):
        result = compare(
            loaded,
            names,  # type: ignore[arg-type]  # checked against PolicyName above
            config,
            pod_start_s=pod_start,
            wait_target_s=wait_target,
        )
    if svg is not None:
        svg.write_text(render_svg(result))
    if out is not None:
        out.write_text(result.to_json())
    if json_:
        print_json(result.to_dict(series=False))
        return
    from rich.table import Table

    header, rows = result.table_columns()
    table = Table(title=f"{loaded.name}: {len(loaded.runs):,} runs")
    table.add_column(header[0], no_wrap=True)
    for name in header[1:]:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for line in result.goal_lines():
        console.print(line, highlight=False, soft_wrap=True)
    for written in (svg, out):
        if written is not None:
            console.print(f"wrote {written}")
