"""``quarterdeck run ...``: submit and follow runs through the HTTP API."""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from quarterdeck.kit.console import (
    Api,
    JsonOpt,
    UrlOpt,
    console,
    err_console,
    fail,
    print_empty,
    print_json,
    query,
    safe_text,
)
from quarterdeck.runs.timeline import STATUS_STYLES, Timeline

if TYPE_CHECKING:
    from rich.status import Status

app = typer.Typer(
    help="Submit, inspect, follow and cancel agent runs (talks to the API).", no_args_is_help=True
)
MAX_UPLOAD = 50 * 1024 * 1024


def pack_directory(path: Path, exclude: list[str]) -> str:
    """A base64 tar of ``path`` for upload, without .git, caches, and ``exclude`` globs."""
    skip = {".git", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in skip for p in parts) or any(fnmatch.fnmatch(info.name, g) for g in exclude):
            return None
        if not (info.isfile() or info.isdir()):
            return None  # links and devices are not uploaded
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for child in sorted(path.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    if buffer.tell() > MAX_UPLOAD:
        fail(
            f"{path} packs to {buffer.tell()} bytes; the upload limit is {MAX_UPLOAD}. "
            "Use --exclude, or --git to let the server clone it."
        )
    return base64.b64encode(buffer.getvalue()).decode()


TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "max_turns", "budget_exceeded"}


def _age(ts: str, now: datetime) -> str:
    """How long ago ``ts`` was, in the unit a person reads at a glance: 12s, 3m, 5h, 2d."""
    try:
        then = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return safe_text(ts)
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _tokens(run: dict[str, Any]) -> int:
    keys = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
    return sum(int(run.get(k) or 0) for k in keys)


def _progress(run: dict[str, Any]) -> str:
    """One line of where a run is: status, turn, tokens, cost."""
    return (
        f"{run['status']} · turn {run.get('turns') or 0} · {_tokens(run):,} tokens · "
        f"${float(run.get('cost_usd') or 0):.4f}"
    )


def _follow(api: Api, run: dict[str, Any], out: Console) -> dict[str, Any]:
    """Wait for ``run`` to end, showing its progress: a live status line on a terminal, a plain
    line per change otherwise (a log or a pipe gets no spinner frames). ``/wait`` returns as
    soon as the run ends, else after a second with the run as it is."""
    last = ""
    live = out.is_terminal
    spinner: contextlib.AbstractContextManager[Status | None] = (
        out.status(_progress(run)) if live else contextlib.nullcontext()
    )
    with spinner as status:
        while run["status"] not in TERMINAL:
            line = _progress(run)
            if status is not None:
                status.update(line)
            elif line != last:
                out.print(f"  {line}", highlight=False)
            last = line
            run = api.json("GET", f"/v1/runs/{run['id']}/wait", params={"timeout": 1}, timeout=15)
    return run


def _summary(run: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key in (
        "id",
        "status",
        "agent_type",
        "operation",
        "model",
        "attempts",
        "turns",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "cost_usd",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "result",
    ):
        value = run.get(key)
        if value is not None:
            table.add_row(f"[bold]{key}[/]", safe_text(value))
    console.print(table)


@app.command("submit")
def submit(
    prompt: Annotated[str, typer.Argument(help="What the agent should do.")],
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent type.")] = None,
    operation: Annotated[str, typer.Option(help="Operation label for metrics.")] = "task",
    model: Annotated[str | None, typer.Option(help="Model; defaults to the server's.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submission key.")] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Local directory the agent works on (uploaded as a tar "
            "archive; .git and files matched by --exclude are skipped).",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ] = None,
    git: Annotated[
        str | None, typer.Option("--git", help="Git URL the server clones instead.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Glob to leave out of the upload (repeatable).")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", min=0.0001, help="Stop the run before it spends more USD."),
    ] = None,
    max_turns: Annotated[int | None, typer.Option(min=1, help="Turn limit for this run.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the run to its end, showing its progress.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the run id (for id=$(...)).")
    ] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a run. Prints its id at once; with --wait, then a live progress line (status,
    turn, tokens, cost) until it ends, and its summary."""
    api = Api(url)
    body: dict[str, Any] = {"prompt": prompt, "operation": operation}
    if agent:
        body["agent_type"] = agent
    if model:
        body["model"] = model
    if budget is not None:
        body["budget_usd"] = budget
    if max_turns is not None:
        body["max_turns"] = max_turns
    if workspace and git:
        fail("use either --workspace or --git, not both")
    if workspace:
        body["workspace"] = {"type": "tar", "value": pack_directory(workspace, exclude or [])}
    elif git:
        body["workspace"] = {"type": "git", "value": git}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    run = api.json("POST", "/v1/runs", json=body, headers=headers)
    if quiet and not as_json:
        typer.echo(run["id"])
    out = err_console if as_json or quiet else console  # stdout: only the JSON, or the id
    if not (as_json or quiet) or wait:
        out.print(f"[green]submitted[/] {run['id']} ({run['status']})", highlight=False)
    if wait:
        try:
            run = _follow(api, run, out)
        except KeyboardInterrupt:  # the run goes on; say how to pick it up again
            err_console.print(
                f"stopped waiting; {run['id']} goes on. Follow it with "
                f"`quarterdeck run logs {run['id']} --follow`, stop it with "
                f"`quarterdeck run cancel {run['id']}`.",
                highlight=False,
                markup=False,
            )
            raise typer.Exit(130) from None
    if as_json:
        print_json(run)
    elif wait and not quiet:
        _summary(run)
    if wait and run["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("diff")
def diff(run_id: str, url: UrlOpt = None) -> None:
    """Print the unified diff of the run's workspace (what the agent changed)."""
    typer.echo(Api(url).request("GET", f"/v1/runs/{run_id}/diff").text, nl=False)


@app.command("list")
def list_runs(
    status: Annotated[list[str] | None, typer.Option(help="Filter by status (repeatable).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    params = query(limit=limit, status=status, agent_type=agent, cursor=cursor)
    page = Api(url).json("GET", "/v1/runs", params=params)
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        print_empty(
            "No runs match these filters."
            if params.keys() - {"limit"}
            else 'No runs yet. Submit one with `quarterdeck run submit "fix the failing test"`.'
        )
        return
    # Ids are what every other command takes: never cut, never wrapped. At 80 columns the rest
    # must give way: a compact table, ages instead of timestamps, the model only when wide.
    wide = console.width >= 100
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True, min_width=max(len(r["id"]) for r in page["items"]))
    table.add_column("status", overflow="fold")
    table.add_column("agent", overflow="fold")
    if wide:
        table.add_column("model", overflow="fold")
    table.add_column("turns", justify="right")
    table.add_column("cost_usd", justify="right")
    table.add_column("created", justify="right", no_wrap=True)
    now = datetime.now(UTC)
    for run in page["items"]:
        style = STATUS_STYLES.get(run["status"], "")
        cells = [run["id"], f"[{style}]{safe_text(run['status'])}[/]"]
        cells.append(safe_text(run["agent_type"]))
        if wide:
            cells.append(safe_text(run["model"]))
        cells += [str(run["turns"]), f"{float(run['cost_usd'] or 0):.4f}"]
        cells.append(_age(run["created_at"], now))
        table.add_row(*cells)
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"next page: --cursor {page['next_cursor']}")


@app.command("show")
def show(run_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show one run."""
    run = Api(url).json("GET", f"/v1/runs/{run_id}")
    print_json(run) if as_json else _summary(run)


@app.command("cancel")
def cancel(run_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a queued run, or stop a running one (within about 2 s)."""
    run = Api(url).json("POST", f"/v1/runs/{run_id}/cancel")
    if as_json:
        print_json(run)
    else:
        console.print(
            f"{run['id']}: {run['status']}"
            + (" (stop requested)" if run["status"] == "running" else "")
        )


@app.command("wait")
def wait(
    run_id: str,
    timeout: Annotated[float, typer.Option(min=0, max=300)] = 60,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a run is finished (or the timeout passes) and show it."""
    run = Api(url, timeout=timeout + 10).json(
        "GET", f"/v1/runs/{run_id}/wait", params={"timeout": timeout}
    )
    print_json(run) if as_json else _summary(run)


def _show(timeline: Timeline, event: dict[str, Any]) -> None:
    for line in timeline.render(event):
        console.print(line, highlight=False)
    total = timeline.summary() if event.get("type") == "status" else None
    if total is not None:
        console.print(total, highlight=False)


@app.command("logs")
def logs(
    run_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's history: status changes, what the agent said each turn, its tool calls with
    the policy decision and their (clipped) results, and the cost; --follow streams it live
    (SSE); --json prints the raw events."""
    import httpx  # here, not at the top: `quarterdeck --help` needs no HTTP client

    api = Api(url, timeout=None)  # type: ignore[arg-type]
    timeline = Timeline()
    if not follow:
        events = api.json("GET", f"/v1/runs/{run_id}/events")
        if as_json:
            print_json(events)
        else:
            for event in events:
                _show(timeline, event)
        return
    try:
        with api.client.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
        ) as response:
            if response.status_code >= 400:
                response.read()
                fail(f"{response.status_code}: {response.json().get('detail', response.text)}")
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if not event:
                    break
                typer.echo(json.dumps(event)) if as_json else _show(timeline, event)
    except httpx.ConnectError:
        fail(
            f"cannot reach Quarterdeck at {api.base}. Is `quarterdeck up` running? "
            "Set QUARTERDECK_URL or --url to point elsewhere."
        )
    except httpx.HTTPError as exc:
        fail(f"the event stream from {api.base} broke off: {exc}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
