"""The README's five-minute tour, run literally against a real ``quarterdeck up``.

The commands come from the README's ``## A five-minute tour`` block, not from a copy here, at 80
columns and without a terminal, with ``run_01M8…`` replaced by the id the first submission
printed and ``localhost:8080``/``localhost:9090`` by this deployment's ports. Each command must
exit 0 and show what the README says it shows; a command this test does not know fails it, so
the tour and its check change together.

``curl`` lines and ``quarterdeck doctor`` run through bash, as typed. The other ``quarterdeck``
lines are split as a shell would (``shlex``) and run in this process through typer's CliRunner:
the binary's start-up (one to two seconds each on a busy machine, importing every sub-command)
would otherwise be most of this test's time; ``tests/integration/test_cli.py`` drives the real
binary.

One more liberty: six model calls of 300 ms a run (``up`` alone would give the simulated provider
its demo latency, about a second a call, and 2 to 6 calls), so the tour runs in seconds and a run
still lasts (1.8 s) long enough to be followed and cancelled.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from quarterdeck.cli import app
from tests.e2e.conftest import BIN, Deployment

README = Path(__file__).parents[2] / "README.md"
PLACEHOLDER = "run_01M8…"
RUN_ID = re.compile(r"run_[0-9A-Z]{26}")
SUBMITTED = re.compile(r"submitted (run_[0-9A-Z]{26}) \((queued|running)\)")
ASSIGN = re.compile(r"^(\w+)=\$\((.*)\)$")


def tour_commands(text: str) -> list[str]:
    """The tour's shell commands: backslash continuations joined, comment lines left out."""
    section = text.split("## A five-minute tour", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    pending = ""
    for raw in block.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    return commands


def _strip_comment(command: str) -> str:
    """The command without its trailing ``# ...`` (none of the tour's quotes hold a ``#``)."""
    return re.sub(r"\s+#.*$", "", command).strip()


class Tour:
    def __init__(self, dep: Deployment, metrics_port: int) -> None:
        self.dep = dep
        self.metrics_port = metrics_port
        self.first_id: str | None = None
        self.vars: dict[str, str] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUARTERDECK_")}
        for name in ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY", "LOG_LEVEL"):
            env.pop(name, None)
        env.update(
            QUARTERDECK_URL=dep.url,
            PATH=f"{BIN.parent}:{env.get('PATH', '')}",
            COLUMNS="80",
            TERM="dumb",
        )
        self.env = env

    def substitute(self, command: str) -> str:
        if PLACEHOLDER in command:
            assert self.first_id, f"{command!r} needs the first run's id, and none was printed"
            command = command.replace(PLACEHOLDER, self.first_id)
        command = command.replace("localhost:8080", f"127.0.0.1:{self.dep.http_port}")
        return command.replace("localhost:9090", f"127.0.0.1:{self.metrics_port}")

    def run(self, command: str, extra_env: dict[str, str] | None = None) -> tuple[str, str]:
        bare = _strip_comment(command)
        if bare.startswith("quarterdeck ") and bare != "quarterdeck doctor":
            for name, value in self.vars.items():
                bare = bare.replace(f"${name}", value)
            result = CliRunner(env={**self.env, **(extra_env or {})}).invoke(
                app, shlex.split(bare)[1:]
            )
            assert result.exit_code == 0, f"{command}\nexit {result.exit_code}\n{result.output}"
            return result.stdout, result.stderr
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            env={**self.env, **self.vars, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.dep.root,
            check=False,
        )
        assert done.returncode == 0, (
            f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout, done.stderr


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_readme_tour_works_literally(deployment: Deployment):
    commands = tour_commands(README.read_text())
    assert len(commands) >= 10, commands
    up = deployment.start(
        "up", QUARTERDECK_SIMULATED_LATENCY="300ms", QUARTERDECK_SIMULATED_TURNS="6"
    )
    tour = Tour(deployment, up.metrics_port)
    cli = CliRunner(env={"QUARTERDECK_URL": deployment.url, "QUARTERDECK_API_KEY": ""})

    # A fresh deployment: every list command says so in a sentence, not an empty table.
    empty = {
        ("run", "list"): "No runs yet. Submit one with `quarterdeck run submit",
        ("run", "list", "--status", "failed"): "No runs match these filters.",
        ("incidents", "list"): "No incidents yet.",
        ("approvals", "list"): "No pending approvals.",
        ("gateway", "calls"): "No gateway calls match.",
    }
    for args, sentence in empty.items():
        result = cli.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        assert sentence in _flat(result.stdout) and "┃" not in result.stdout, result.stdout

    # A prompt that tries to drive the terminal; the simulated model repeats it in its answer.
    hostile = "fix \x1b]0;pwned\x07 \x1b[2J[bold red]it[/] \u202eboom"
    result = cli.invoke(app, ["run", "submit", hostile, "--quiet"])
    assert result.exit_code == 0, result.output
    hostile_id = result.stdout.strip()

    def submitted(out: str, err: str) -> None:
        found = SUBMITTED.search(out)
        assert found, out
        tour.first_id = tour.first_id or found.group(1)

    def listed(out: str, err: str) -> None:
        assert tour.first_id and tour.first_id in out.split(), out  # whole, at 80 columns
        assert "status" in out.splitlines()[0]

    def shown(out: str, err: str) -> None:
        flat = _flat(out)
        assert tour.first_id in flat
        for field in ("status", "turns", "input_tokens", "output_tokens", "cost_usd"):
            assert field in flat, out

    def history(out: str, err: str) -> None:
        assert "{'" not in out and "status=" not in out, "dict reprs, not a history"
        assert "Done: fix the failing test" in out  # what the agent said, not just its calls
        for needle in ("status", "queued", "running", "turn 1", "tool", "[allow]", "⎿"):
            assert needle in out, (needle, out)
        assert "succeeded" in out and re.search(
            r"total\s+6 turns · [\d,]+ tokens · \$0\.\d{4}", out
        )

    def waited(out: str, err: str) -> None:
        assert SUBMITTED.search(out), out
        assert re.search(r"running · turn \d · [\d,]+ tokens · \$\d", out), out  # progress
        flat = _flat(out)
        assert "succeeded" in flat and "cost_usd" in flat

    def cancelled(out: str, err: str) -> None:
        run_id = tour.vars["id"]
        assert RUN_ID.fullmatch(run_id), run_id
        assert re.fullmatch(rf"{run_id}: (cancelled|running \(stop requested\))\n", out), out

    def posted(out: str, err: str) -> None:
        run = json.loads(out)
        assert RUN_ID.fullmatch(run["id"]) and run["status"] in {"queued", "running"}

    def awaited(out: str, err: str) -> None:
        run = json.loads(out)
        assert run["id"] == tour.first_id and run["status"] == "succeeded", run

    def streamed(out: str, err: str) -> None:
        data = [json.loads(x[6:]) for x in out.splitlines() if x.startswith("data: ")]
        events = [e for e in data if e]  # the stream ends with an empty `end` event
        assert data[-1] == {} and events[-1]["data"]["status"] == "succeeded", out

    def scraped(out: str, err: str) -> None:
        lines = out.splitlines()
        assert lines and all(line.startswith("claude_agent_") for line in lines)
        assert any(line.startswith("claude_agent_api_cost_total") for line in lines), out

    def doctored(out: str, err: str) -> None:
        assert "postgres" in out, out

    checks: list[tuple[str, Callable[[str, str], None]]] = [
        (r'quarterdeck run submit "[^"]+"$', submitted),
        (r"quarterdeck run list$", listed),
        (r"quarterdeck run show run_01M8…$", shown),
        (r"quarterdeck run logs run_01M8… --follow$", history),
        (r'quarterdeck run submit "[^"]+" --wait$', waited),
        (r"quarterdeck run cancel \$id$", cancelled),
        (r"curl -s -XPOST .*/v1/runs .*", posted),
        (r"curl -s '.*/v1/runs/run_01M8…/wait\?timeout=30'$", awaited),
        (r"curl -sN .*/v1/runs/run_01M8…/events .*text/event-stream'$", streamed),
        (r"curl -s .*:9090/metrics \| grep \^claude_agent_$", scraped),
        (r"quarterdeck doctor$", doctored),
    ]
    seen = set()
    for command in commands:
        bare = _strip_comment(command)
        assign = ASSIGN.match(bare)
        if assign:  # id=$(quarterdeck run submit ... --quiet)
            out, _ = tour.run(tour.substitute(assign.group(2)))
            assert RUN_ID.fullmatch(out.strip()), f"{bare!r} printed {out!r}, not only an id"
            tour.vars[assign.group(1)] = out.strip()
            continue
        matched = [(p, check) for p, check in checks if re.fullmatch(p, bare)]
        assert matched, f"the README tour has a command this test does not check: {bare!r}"
        pattern, check = matched[0]
        extra = {}
        if bare == "quarterdeck doctor":  # it checks the deployment's own settings too
            extra = {
                "QUARTERDECK_DATA_DIR": str(deployment.data_dir),
                "QUARTERDECK_HTTP_PORT": str(up.http_port),
                "QUARTERDECK_METRICS_PORT": str(up.metrics_port),
            }
        out, err = tour.run(tour.substitute(command), extra)
        check(out, err)
        seen.add(pattern)
    assert seen == {p for p, _ in checks}, {p for p, _ in checks} - seen

    # What the hostile prompt came back as: visible escapes, literal brackets, never controls.
    for args in (["run", "show", hostile_id], ["run", "logs", hostile_id]):
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "Done: fix" in result.stdout, result.stdout  # the model's answer is shown
        for control in ("\x1b", "\x07", "\u202e"):
            assert control not in result.stdout, (args, result.stdout)
        flat = _flat(result.stdout)
        assert "\\x1b]0;pwned\\x07" in flat and "[bold red]it[/]" in flat, result.stdout
        assert "\\u202eboom" in flat

    # The README's sample output line is what submit prints.
    assert SUBMITTED.search(README.read_text().split("## A five-minute tour", 1)[1])
    # `up` said it was ready (a JSON event: its stderr is not a terminal), and the start-up
    # chatter stayed at debug.
    log = up.log.read_text()
    ready = [json.loads(x) for x in log.splitlines() if '"quarterdeck_ready"' in x]
    assert len(ready) == 1, log[-3000:]
    assert ready[0]["provider"] == "simulated" and ready[0]["auth"] is False
    assert ready[0]["api_url"] == deployment.url and ready[0]["postgres"].startswith("embedded")
    # Start-up state is out of full collections (kit/heap.py): their pauses stay short.
    assert ready[0]["heap_frozen"] > 50_000, ready[0]
    for chatter in ("Running commandline", "migration_applied", "Uvicorn running on"):
        assert chatter not in log, chatter
