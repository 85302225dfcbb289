"""Issue 13 benchmark: what the Anthropic-compatible gateway adds to a call, beside LiteLLM's proxy.

One run, three paths to the same upstream, the same open-loop load on each:

- **direct**: straight to the Messages API stand-in (:mod:`benchmarks.upstream_server`, in a
  process of its own: the answers of the package's
  :class:`~quarterdeck.chaos.messages_api.MessagesAPIServer`, a plain ``"ok"`` message, JSON or
  SSE, no delay, served at a fifth of that server's CPU, because on this 2-core machine the
  upstream shares the cores with the proxy under test, which a real upstream never does);
- **quarterdeck**: ``POST /v1/messages`` on ``quarterdeck up`` (development defaults, so
  authentication is off; the gateway relays to the stand-in with its own upstream key, meters,
  reserves and records every call as in production);
- **litellm**: LiteLLM's proxy (``litellm[proxy]`` pinned below, in ``.venv-litellm/`` at the repo
  root, created on first use), one worker, no database, its Anthropic ``/v1/messages`` endpoint
  with one ``anthropic/`` model whose ``api_base`` is the stand-in.

Cells: 50, 200 and 500 requests/s x 8 KB and 80 KB Claude-Code-shaped bodies (system blocks,
six tools, a padded history, a ``tool_result`` as the new turn) x ``json`` (full response time)
and ``sse`` (``stream: true``; time to the first SSE event). Within a cell the three paths run
back to back, ``seconds_for(rate)`` each, so they share the machine's state as closely as
sequential runs can; each run starts once every server is idle again (:func:`settle`: an
overloaded proxy still working off its backlog would otherwise take CPU from the next path's
run), and the wait is reported as ``settled_s``. First, ``seq`` cells: ``sequential_n`` requests one at a time on one
connection per path, the per-call cost with no queue anywhere (what the loaded cells add on top
is queueing: a path past its capacity shows seconds there, not its per-call cost).

Open loop: request *i* is sent at ``start + i / rate`` whatever came back; connections are
opened on demand up to ``MAX_CONNECTIONS`` per path, and a request that finds none free is shed
and counted as an error (so an overloaded path cannot stretch the suite). Percentiles cover the
requests that completed, so a shedding path's figures flatter it.

Overhead at percentile *q* = q-th percentile through the gateway minus q-th percentile direct
(the requests are not paired, so this is a difference of distributions, not a per-request
figure). Latency is from the request's first byte written to the response's last byte (json) or
to the end of the first chunk of the event stream (sse), on a client that pre-encodes every
request and parses only status, headers and chunk framing; it collects no garbage during a
timed run (:func:`~benchmarks.harness.client_gc_paused`), and each loaded run reports the share
of the host's CPU time stolen by other guests (a run above ``STEAL_LIMIT_PCT`` is redone, up
to ``STEAL_RERUNS`` times, and the quietest kept: on a shared VM a neighbour took a third of
this one's CPU during some runs). Timing is reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.harness import (
    Bench,
    client_gc_paused,
    host_cpu_ticks,
    percentile,
    steal_pct,
    tree_cpu_seconds,
)
from quarterdeck.chaos.process import Process, free_port, http_ok, port_open

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
LITELLM_VERSION = "1.106.12"
"""Pinned: the newest ``litellm[proxy]`` whose extras all install from PyPI here (1.108 and later
need ``litellm-proxy``/``litellm-proxy-extras`` builds that are not published; 1.107.0 was the
compromised release)."""
LITELLM_VENV = ROOT / ".venv-litellm"
MODEL = "claude-sonnet-4-5"
RATES = (50, 200, 500)
API_PROCESSES = int(os.environ.get("BENCH_GATEWAY_API_PROCESSES", "1"))
"""Quarterdeck's API processes (``QUARTERDECK_API_PROCESSES``) for this run; 1 by default."""
SIZES = {"8KB": 8 * 1024, "80KB": 80 * 1024}
MODES = ("json", "sse")
PATHS = ("direct", "quarterdeck", "litellm")
MAX_CONNECTIONS = 256
TIMEOUT_S = 15.0
STEAL_LIMIT_PCT = 5.0
"""A loaded run during which other guests took more of the host's CPU than this is redone."""
STEAL_RERUNS = 2
UPSTREAM_KEY = "sk-bench-upstream"

T = TypeVar("T")


def seconds_for(rate: int) -> float:
    """At least 6 s per path and cell, and at least 500 requests (a p99 of 5 samples)."""
    return max(6.0, 500 / rate)


# --- a Claude-Code-shaped request body ---------------------------------------------------------
_INSTRUCTIONS = (
    "You are an interactive CLI tool that helps users with software engineering tasks. Use the "
    "instructions below and the tools available to you to assist the user. Keep your responses "
    "short. Do what has been asked; nothing more, nothing less. Never create files unless they "
    "are necessary. Prefer editing an existing file to creating a new one. When you run a "
    "non-trivial bash command, explain what it does and why. Follow the conventions of the code "
    "you edit: mimic its style, use its libraries and utilities, follow its existing patterns. "
    "Never assume a library is available. Always follow security best practices; never "
    "introduce code that exposes or logs secrets. Use the TodoWrite tool to plan the task. "
)
_TOOL_SPECS = {
    "Bash": ("Executes a bash command in a persistent shell session.", ["command", "description"]),
    "Read": ("Reads a file from the local filesystem.", ["file_path", "offset", "limit"]),
    "Edit": ("Performs exact string replacements in files.", ["file_path", "old_string"]),
    "Write": ("Writes a file to the local filesystem.", ["file_path", "content"]),
    "Glob": ("Fast file pattern matching tool.", ["pattern", "path"]),
    "Grep": ("A powerful search tool built on ripgrep.", ["pattern", "path", "glob"]),
}
_CODE = (
    "def handle(request):\n    payload = parse(request.body)\n    if not payload.valid:\n"
    "        return error(400, 'invalid request')\n    result = service.apply(payload)\n"
    "    return respond(200, result.to_json())\n\n"
)


def claude_code_body(size: int, stream: bool) -> bytes:
    """A request of exactly ``size`` bytes shaped like a Claude Code turn: two system blocks
    (the second cached), six tools, a history padded with source text, and a new user turn
    holding a ``tool_result`` (what most Claude Code requests end with)."""
    tools = [
        {
            "name": name,
            "description": desc + " " + _INSTRUCTIONS[:240],
            "input_schema": {
                "type": "object",
                "properties": {p: {"type": "string", "description": f"The {p}"} for p in props},
                "required": props[:1],
                "additionalProperties": False,
            },
        }
        for name, (desc, props) in _TOOL_SPECS.items()
    ]

    def build(pad: str) -> dict[str, Any]:
        return {
            "model": MODEL,
            "max_tokens": 32000,
            "stream": stream,
            "metadata": {"user_id": "user_bench_account_00000000_session_00000000"},
            "system": [
                {"type": "text", "text": "You are Claude Code, Anthropic's official CLI."},
                {"type": "text", "text": _INSTRUCTIONS, "cache_control": {"type": "ephemeral"}},
            ],
            "tools": tools,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Fix the handler." + pad}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "I'll read the handler first."},
                        {
                            "type": "tool_use",
                            "id": "toolu_bench_0001",
                            "name": "Read",
                            "input": {"file_path": "/repo/src/app/handler.py"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_bench_0001",
                            "content": _CODE * 3,
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
            ],
        }

    def dumps(body: dict[str, Any]) -> bytes:
        return json.dumps(body, separators=(",", ":")).encode()

    missing = size - len(dumps(build("")))
    if missing < 0:
        raise ValueError(f"a {size}-byte body is smaller than the request's skeleton")
    source = _CODE.replace("\n", " ")  # no escapes: one character is one byte in the JSON
    pad = (source * (missing // len(source) + 1))[:missing]
    data = dumps(build(pad))
    assert len(data) == size, (len(data), size)
    return data


# --- the load generator -----------------------------------------------------------------------
class Conn:
    """One keep-alive HTTP/1.1 connection that reads Content-Length and chunked answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reusable = True

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, float, float, float]:
        """Send ``request``; (status, start, end of the first body chunk, end of the body)."""
        reader = self.reader
        t0 = time.perf_counter()
        self.writer.write(request)
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed before the status line")
        status = int(line.split()[1])
        length, chunked = -1, False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.reusable = False
        first = 0.0
        if chunked:
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass
                    break
                await reader.readexactly(size + 2)
                if not first:
                    first = time.perf_counter()
        elif length >= 0:
            await reader.readexactly(length)
        else:  # neither: the body runs to the end of the connection
            await reader.read()
            self.reusable = False
        end = time.perf_counter()
        return status, t0, first or end, end

    def close(self) -> None:
        self.writer.close()


@dataclass
class Target:
    """One path to the upstream: where to connect, the request head, its idle connections."""

    name: str
    port: int
    path: str = "/v1/messages"
    idle: list[Conn] = field(default_factory=list)
    live: int = 0

    def request(self, body: bytes) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            "anthropic-version: 2023-06-01\r\n"
            "anthropic-beta: claude-code-20250219,interleaved-thinking-2025-05-14\r\n"
            "x-api-key: sk-bench-client\r\nUser-Agent: claude-cli/2.1.197 (external, cli)\r\n"
            "x-claude-code-session-id: 00000000-0000-4000-8000-000000000000\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def drop_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.live -= len(self.idle)
        self.idle.clear()

    async def prime(self, n: int) -> None:
        """Fresh connections (servers close idle ones after a few seconds), outside the clock."""
        self.drop_idle()
        for _ in range(n):
            self.idle.append(await Conn.open(self.port))
            self.live += 1


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    full: list[float] = field(default_factory=list)  # whole-response time (sse: to the end)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    lags: list[float] = field(default_factory=list)  # send time minus scheduled time

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


async def drive(
    target: Target, request: bytes, stream: bool, rate: float, seconds: float
) -> Sample:
    """Open loop: request i at start + i/rate, each on a free connection or a new one."""
    sample = Sample()
    loop = asyncio.get_running_loop()

    async def one(scheduled: float) -> None:
        conn = target.idle.pop() if target.idle else None
        if conn is None:
            if target.live >= MAX_CONNECTIONS:
                sample.errors["shed"] += 1
                return
            target.live += 1
            try:
                conn = await Conn.open(target.port)
            except OSError:
                target.live -= 1
                sample.errors["connect"] += 1
                return
        sample.lags.append(loop.time() - scheduled)
        try:
            status, t0, first, end = await asyncio.wait_for(conn.exchange(request), TIMEOUT_S)
        except TimeoutError:
            sample.errors["timeout"] += 1
            conn.reusable = False
        except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError):
            sample.errors["connection"] += 1
            conn.reusable = False
        else:
            if status == 200:
                sample.latencies.append((first if stream else end) - t0)
                sample.full.append(end - t0)
            else:
                sample.errors[f"http_{status}"] += 1
        if conn.reusable:
            target.idle.append(conn)
        else:
            conn.close()
            target.live -= 1

    n = int(rate * seconds)
    tasks = []
    start = loop.time() + 0.05
    for i in range(n):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at)))
    sample.sent = n
    await asyncio.gather(*tasks)  # each bounded by TIMEOUT_S
    return sample


async def sequential(target: Target, request: bytes, stream: bool, n: int) -> Sample:
    """``n`` requests one after another on one connection: the cost of a call with no queue."""
    sample = Sample(sent=n)
    await target.prime(1)
    conn = target.idle.pop()
    try:
        for _ in range(n):
            status, t0, first, end = await asyncio.wait_for(conn.exchange(request), TIMEOUT_S)
            if status == 200:
                sample.latencies.append((first if stream else end) - t0)
                sample.full.append(end - t0)
            else:
                sample.errors[f"http_{status}"] += 1
    finally:
        conn.close()
        target.live -= 1
    return sample


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop when installed: the client's own cost is then a smaller share of the figures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# --- the processes ----------------------------------------------------------------------------
def ensure_litellm() -> Path:
    """The ``litellm`` script of ``.venv-litellm`` at ``LITELLM_VERSION``, installed if needed."""
    python = LITELLM_VENV / "bin" / "python"
    script = LITELLM_VENV / "bin" / "litellm"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip() != LITELLM_VERSION or not script.exists():
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            tail = [ln for ln in done.stderr.splitlines() if not ln.startswith("WARNING")]
            raise RuntimeError(f"pip install litellm[proxy]=={LITELLM_VERSION}: {tail[-3:]}")
    return script


def litellm_config(upstream_url: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"anthropic/{MODEL}",
                    "api_base": upstream_url,
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": False},
        # No master key, like Quarterdeck with auth off (1.106 refuses to start without one
        # unless told this is local development).
        "general_settings": {"dangerously_permit_weak_or_unset_master_key": True},
    }


def start_litellm(root: Path, upstream_url: str) -> tuple[Process, int]:
    script = ensure_litellm()
    config = root / "litellm.yaml"
    config.write_text(json.dumps(litellm_config(upstream_url), indent=2))  # JSON is YAML
    port = free_port()
    drop = ("ANTHROPIC_", "OPENAI_", "LITELLM_", "DATABASE_URL", "REDIS_", "QUARTERDECK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price map at start-up
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        DISABLE_ADMIN_UI="True",
    )
    args = [script, "--config", config, "--host", "127.0.0.1", "--port", str(port)]
    proc = Process([*map(str, args), "--num_workers", "1"], log=root / "litellm.log", env=env)
    proc.stop_timeout = 15
    proc.start()
    try:
        proc.wait_ready(http_ok(f"http://127.0.0.1:{port}/health/liveliness"), timeout=240)
    except Exception:
        proc.stop()
        raise
    return proc, port


def start_upstream(root: Path) -> tuple[Process, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUARTERDECK_")}
    args = [sys.executable, "-m", "benchmarks.upstream_server", str(port)]
    proc = Process(args, log=root / "upstream.log", env=env, name="stand-in", cwd=ROOT)
    proc.stop_timeout = 10
    proc.start().wait_ready(port_open(port), timeout=60)
    return proc, port


# --- the suite --------------------------------------------------------------------------------
def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2) if values else float("nan")


def _triple(values: list[float]) -> list[float]:
    return [_ms(values, 50), _ms(values, 95), _ms(values, 99)]


def _fmt(triple: list[float] | None) -> str:
    return "n/a" if triple is None else "/".join(f"{v:.2f}" for v in triple)


async def _smoke(target: Target, body: dict[str, bytes]) -> str | None:
    """One request per mode; None when both answer 200, else what went wrong."""
    for mode in MODES:
        conn = await Conn.open(target.port)
        try:
            request = target.request(body[mode])
            status, *_ = await asyncio.wait_for(conn.exchange(request), 30)
        except Exception as exc:  # reported, not raised: LiteLLM may be what is broken
            return f"{mode}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
        if status != 200:
            return f"{mode}: HTTP {status}"
    return None


def _summary(sample: Sample) -> dict[str, Any]:
    return {
        "sent": sample.sent,
        "ok": len(sample.latencies),
        "errors": dict(sample.errors),
        "ms": _triple(sample.latencies),
        "full_ms": _triple(sample.full),
        "send_lag_p99_ms": _ms(sample.lags, 99) if sample.lags else None,
    }


async def settle(
    servers: list[int], *, idle_share: float = 0.1, window_s: float = 0.5, limit_s: float = 30.0
) -> float:
    """Wait until every server process (and its children) is idle; the seconds waited.

    Why: a path pushed past its capacity (LiteLLM at 500 requests/s) keeps working off its
    backlog after its own run has ended, and that CPU would be taken from the next path's run on
    this 2-core machine. Each loaded run starts from idle servers instead, so every path is
    measured in the same conditions. Idle: less than ``idle_share`` of one core used over
    ``window_s`` (the servers' own timers and heartbeats stay well under it).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < limit_s:
        before = tree_cpu_seconds(servers)
        await asyncio.sleep(window_s)
        if tree_cpu_seconds(servers) - before <= idle_share * window_s:
            break
    return round(loop.time() - start, 1)


async def _measure(
    targets: list[Target],
    rates: tuple[int, ...],
    warmup_s: float,
    sequential_n: int,
    servers: list[int],
) -> list[dict[str, Any]]:
    bodies = {
        (label, mode): claude_code_body(size, mode == "sse")
        for label, size in SIZES.items()
        for mode in MODES
    }
    for target in targets:  # warm-up: pools, JIT-less caches, first-use statements; not reported
        for (_label, mode), body in bodies.items():
            await target.prime(8)
            await drive(target, target.request(body), mode == "sse", 100, warmup_s)
    cells: list[dict[str, Any]] = []
    for label in SIZES:  # no load: one request at a time, so no queue in any figure
        for mode in MODES:
            cell: dict[str, Any] = {"rate": "seq", "size": label, "mode": mode}
            for target in targets:
                request = target.request(bodies[(label, mode)])
                with client_gc_paused():
                    sample = await sequential(target, request, mode == "sse", sequential_n)
                cell[target.name] = _summary(sample)
            cells.append(cell)
    for rate in rates:
        for label in SIZES:
            for mode in MODES:
                cell: dict[str, Any] = {"rate": rate, "size": label, "mode": mode}
                for target in targets:
                    cell[target.name] = await _loaded_run(
                        target, bodies[(label, mode)], mode == "sse", rate, servers
                    )
                cells.append(cell)
    return cells


async def _loaded_run(
    target: Target, body: bytes, stream: bool, rate: int, servers: list[int]
) -> dict[str, Any]:
    """One path's loaded run, redone (at most :data:`STEAL_RERUNS` times) while the hypervisor
    took more than :data:`STEAL_LIMIT_PCT` of the host's CPU for other guests during it; the
    quietest run is kept and the redone count reported beside its steal share."""
    kept: dict[str, Any] | None = None
    for attempt in range(STEAL_RERUNS + 1):
        settled = await settle(servers)
        await target.prime(min(64, max(8, rate // 8)))
        request = target.request(body)
        ticks = host_cpu_ticks()
        with client_gc_paused():
            sample = await drive(target, request, stream, rate, seconds_for(rate))
        stolen = steal_pct(ticks, host_cpu_ticks())
        target.drop_idle()
        if kept is None or stolen < kept["steal_pct"]:
            kept = {**_summary(sample), "settled_s": settled, "steal_pct": stolen}
        kept["reruns"] = attempt
        if stolen <= STEAL_LIMIT_PCT:
            break
    assert kept is not None
    return kept


def overhead(
    rates: tuple[int, ...] = RATES, warmup_s: float = 1.5, sequential_n: int = 200
) -> dict[str, Any]:
    """p50/p95/p99 straight to the stand-in, through Quarterdeck and through LiteLLM, and the
    overhead of each proxy, for every rate x body size x streaming mode (see the module doc)."""
    bench = Bench("gateway")
    upstream: Process | None = None
    litellm: Process | None = None
    litellm_error: str | None = None
    try:
        upstream, upstream_port = start_upstream(bench.root)
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        replica = bench.start(
            "up",
            QUARTERDECK_SIMULATED_LATENCY="0",
            QUARTERDECK_GATEWAY_UPSTREAM_URL=upstream_url,
            QUARTERDECK_GATEWAY_UPSTREAM_API_KEY=UPSTREAM_KEY,
            QUARTERDECK_API_PROCESSES=str(API_PROCESSES),
        )
        qd_port = int(bench.url.rsplit(":", 1)[1])
        targets = [Target("direct", upstream_port), Target("quarterdeck", qd_port)]
        servers = [upstream.pid, replica.pid]
        try:
            litellm, litellm_port = start_litellm(bench.root, upstream_url)
            targets.append(Target("litellm", litellm_port))
            servers.append(litellm.pid)
        except Exception as exc:  # reported in the results, the other paths still measured
            litellm_error = f"{type(exc).__name__}: {str(exc)[-600:]}"

        smoke_bodies = {m: claude_code_body(SIZES["8KB"], m == "sse") for m in MODES}
        for target in list(targets):
            problem = _run(_smoke(target, smoke_bodies))
            if problem is None:
                continue
            if target.name != "litellm":
                raise RuntimeError(f"{target.name} does not answer /v1/messages: {problem}")
            litellm_error = f"litellm /v1/messages: {problem}"
            targets.remove(target)
        cells = _run(_measure(targets, rates, warmup_s, sequential_n, servers))
    finally:
        if litellm is not None:
            litellm.stop()
        bench.stop()
        if upstream is not None:
            upstream.stop()
    return _report(cells, litellm_error)


def _report(cells: list[dict[str, Any]], litellm_error: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "legend": "p50/p95/p99 ms; sse=first event, json=full; overhead=path pct - direct pct",
        "quarterdeck": "quarterdeck up, development defaults (auth off), "
        f"{API_PROCESSES} API process{'es' if API_PROCESSES > 1 else ''}",
        "litellm": f"litellm[proxy]=={LITELLM_VERSION}, 1 worker, no DB, /v1/messages",
        "litellm_error": litellm_error,
        "errors_legend": "direct/quarterdeck/litellm of N sent (non-200, timeout, shed)",
        "steal_legend": "direct/quarterdeck/litellm: % of the host's CPU time taken by the "
        "hypervisor for other guests during the kept run (noise, not any path's cost); a run "
        f"above {STEAL_LIMIT_PCT:g} % is redone up to {STEAL_RERUNS} times, the quietest kept",
    }
    beaten = compared = 0
    for cell in cells:
        rate = cell["rate"] if cell["rate"] == "seq" else f"{cell['rate']}rps"
        key = f"{rate}.{cell['size']}.{cell['mode']}"
        direct = cell["direct"]["ms"]
        errors = []
        for name in PATHS:
            data = cell.get(name)
            out[f"{key}.{name}"] = _fmt(data["ms"] if data else None)
            errors.append(str(sum(data["errors"].values())) if data else "-")
        for name, short in (("quarterdeck", "qd"), ("litellm", "litellm")):
            data = cell.get(name)
            if data is None:
                out[f"{key}.{short}_overhead"] = "n/a"
                continue
            added = [round(p - d, 2) for p, d in zip(data["ms"], direct, strict=True)]
            data["overhead_ms"] = added
            out[f"{key}.{short}_overhead"] = _fmt(added)
        out[f"{key}.errors"] = f"{'/'.join(errors)} of {cell['direct']['sent']}"
        if "steal_pct" in cell["direct"]:
            out[f"{key}.steal_pct"] = "/".join(
                f"{cell[name]['steal_pct']}"
                + (f" ({cell[name]['reruns']} redone)" if cell[name]["reruns"] else "")
                if name in cell
                else "-"
                for name in PATHS
            )
        if "litellm" in cell:
            compared += 1
            beaten += all(
                q < lt
                for q, lt in zip(cell["quarterdeck"]["ms"], cell["litellm"]["ms"], strict=True)
            )
    out["qd_below_litellm_all_pcts"] = f"{beaten} of {compared} cells" if compared else "n/a"
    out["seq_legend"] = "seq = one request at a time on one connection (no load, no queue)"
    out["goal"] = "500rps 80KB: qd overhead p50<=1 ms, p99<=5 ms; below LiteLLM at every pct"
    RESULTS.mkdir(exist_ok=True)
    detail = RESULTS / f"gateway-cells-{time.strftime('%Y%m%d-%H%M%S')}.json"
    detail.write_text(json.dumps(cells, indent=2))
    out["cells_detail"] = str(detail.relative_to(ROOT))
    return out


if __name__ == "__main__":  # a quick look without run.py: one rate
    with contextlib.suppress(KeyboardInterrupt):
        print(
            json.dumps(overhead(rates=(int(sys.argv[1]) if len(sys.argv) > 1 else 50,)), indent=2)
        )
