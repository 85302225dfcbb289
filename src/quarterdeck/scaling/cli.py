"""``quarterdeck scaler simulate``: replay a load trace through the scaling policies, offline.

The simulation runs the same pure policy code the scaler will run (``policy.py`` and its
policies) against a modelled pool of workers (``simulate.py``), so a policy can be judged on a
day of load before it runs a cluster. It needs no server and no database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from quarterdeck.kit.console import JsonOpt, console, fail, print_json

app = typer.Typer(
    help="The queue-aware scaler: replay a load trace through scaling policies (simulate).",
    no_args_is_help=True,
)
SAMPLES = ("synthetic-day", "coding-agent-day")


@app.command()
def simulate(
    trace: Annotated[
        str,
        typer.Option(
            "--trace",
            "-t",
            help="A trace file (CSV or JSON, optionally .gz; format: `quarterdeck.scaling.trace`)"
            f" or a shipped sample: {', '.join(SAMPLES)}.",
        ),
    ] = "synthetic-day",
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="A policy to compare (repeat): quarterdeck, guide-hpa, guide-pressure "
            "[default: all three].",
        ),
    ] = None,
    min_replicas: Annotated[int, typer.Option(help="Fewest workers.")] = 3,
    max_replicas: Annotated[int, typer.Option(help="Most workers.")] = 20,
    concurrency: Annotated[int, typer.Option(help="Runs one worker holds at once.")] = 50,
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
    """Replay TRACE through each policy with the same pool and load; print queue waits,
    worker-hours, scale events and flaps side by side."""
    from quarterdeck.scaling.policy import PolicyName, ScalerConfig
    from quarterdeck.scaling.report import compare, render_svg
    from quarterdeck.scaling.trace import SAMPLES_DIR, load_trace

    names = policy or list(get_args(PolicyName))
    unknown = [n for n in names if n not in get_args(PolicyName)]
    if unknown:
        fail(f"unknown policy {unknown[0]!r}; choose from {', '.join(get_args(PolicyName))}")
    config = ScalerConfig(
        min_replicas=min_replicas, max_replicas=max_replicas, concurrency_per_worker=concurrency
    )
    try:
        config.validate()
    except ValueError as exc:
        fail(str(exc))
    path = SAMPLES_DIR / f"{trace}.csv.gz" if trace in SAMPLES else Path(trace)
    if not path.is_file():
        fail(f"no trace file {str(path)!r}; give a CSV or JSON file or one of {', '.join(SAMPLES)}")
    try:
        loaded = load_trace(path)
    except ValueError as exc:
        fail(f"{path}: {exc}")
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

    rows = result.table_rows()
    table = Table(title=f"{loaded.name}: {len(loaded.runs):,} runs")
    for column in rows[0]:
        if column == "policy":  # the name is the row's point: never cut on a narrow terminal
            table.add_column(column, no_wrap=True, min_width=len("guide-pressure"))
        else:
            table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    ratios = result.ratios()
    if ratios:
        shown = {k: f"{v:.2f}" if isinstance(v, float) else str(v) for k, v in ratios.items()}
        console.print(
            " · ".join(f"{k.replace('_', ' ')}: {v}" for k, v in shown.items()), highlight=False
        )
    for written in (svg, out):
        if written is not None:
            console.print(f"wrote {written}")
