"""Where the Claude Code CLI is, which version it is, and whether this process can run it.

A ``claude-code`` agent type is only as good as the binary behind it, so the catalog, the
submission check, the worker and ``quarterdeck doctor`` all ask this one module, and all say the
same thing: what is wrong and how to fix it. The answer is probed, not assumed: the CLI is run
with ``--version`` (offline, scrubbed environment, private ``HOME``), because a file that exists
may still be a placeholder npm left behind, another program called ``claude``, or a version
Quarterdeck was not tested with.

The probe runs lazily (never at import or start-up: many tests build runtimes) and once per
process per binary: the result is cached under the file's identity (device, inode, size, mtime),
so a CLI removed or replaced after start-up is noticed by the next check (a ``stat``), without
running it again. A timeout is not cached: a busy host should not disable the agent type until
restart.

The CLI also needs the bubblewrap sandbox (it runs a whole session, not one command, and gets its
sockets bound in), so a process that will execute runs (``need_sandbox``) reports a host without
bwrap as a problem too. An API-only process (``quarterdeck serve``) checks only the binary: the
worker re-checks both when it starts the run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quarterdeck.agents.sandbox.probe import capabilities, current_config
from quarterdeck.agents.sandbox.report import mode_in_use
from quarterdeck.agents.sandbox.spec import SAFE_PATH, Mode

if TYPE_CHECKING:
    from quarterdeck.agents.templates import AgentType
    from quarterdeck.config import Settings

PACKAGE = "@anthropic-ai/claude-code"
PINNED_VERSION = "2.1.197"
"""The version the runner is built and tested against (the newest that runs on Node 20)."""
PATH_SETTING = "QUARTERDECK_CLAUDE_CODE_PATH"
_NPM = f"npm install --prefix .venv/claude-code {PACKAGE}@{PINNED_VERSION}"
INSTALL_HINT = f"install it with `make deps` ({_NPM}) or set {PATH_SETTING}"
SETTING_HINT = (
    f"point {PATH_SETTING} at the claude CLI, or unset it and install the CLI with `make deps` "
    f"({_NPM})"
)
VERSION_TIMEOUT_S = 15.0
RUNNER = "claude-code"
_VERSION = re.compile(r"^(\d+\.\d+\.\d+\S*) \(Claude Code\)\s*$")


@dataclass(frozen=True)
class ClaudeCodeInstall:
    """What was found: the binary, its version, and (when it cannot be used) the problem, which
    says what is wrong and how to fix it (``fix`` repeats the how, for ``doctor``'s fix column).
    ``note`` is a warning that does not make it unavailable (an unpinned version);
    ``misconfigured``: the binary ``QUARTERDECK_CLAUDE_CODE_PATH`` names does not work."""

    path: Path | None
    version: str | None
    problem: str | None
    note: str | None = None
    fix: str = ""
    misconfigured: bool = False

    @property
    def available(self) -> bool:
        return self.problem is None and self.path is not None and self.version is not None

    def as_dict(self) -> dict[str, Any]:
        """The shape ``/v1/system`` and ``quarterdeck doctor`` share."""
        return {
            "path": str(self.path) if self.path else None,
            "version": self.version,
            "pinned_version": PINNED_VERSION,
            "available": self.available,
            "problem": self.problem,
            "note": self.note,
            "fix": self.fix,
            "misconfigured": self.misconfigured,
        }


def default_path() -> Path:
    """Where ``make deps`` installs the CLI: a prefix inside the venv (``sys.prefix``)."""
    return Path(sys.prefix) / "claude-code" / "node_modules" / ".bin" / "claude"


def find_cli(settings: Settings) -> Path | None:
    """The CLI to use: ``claude_code_path`` when set (returned even when missing, so that
    :func:`probe_cli` reports the setting as wrong instead of silently using another binary),
    else the venv's, else ``claude`` on ``PATH``; None when there is none."""
    if settings.claude_code_path:
        return Path(settings.claude_code_path).expanduser().absolute()
    local = default_path()
    if os.path.exists(local):
        return local
    found = shutil.which("claude")
    return Path(found) if found else None


_cache: dict[tuple[str, int, int, int, int], tuple[str | None, str | None]] = {}
_lock = threading.Lock()


def forget() -> None:
    """Drop every cached probe (tests; an operator's reinstall is noticed without it)."""
    with _lock:
        _cache.clear()


def _run_version(path: Path, timeout: float) -> tuple[str | None, str | None]:
    """(version, None) or (None, what went wrong) for ``<path> --version``."""
    home = tempfile.mkdtemp(prefix="qd-claude-probe-")
    env = {
        "PATH": os.environ.get("PATH") or SAFE_PATH,
        "HOME": home,
        "CLAUDE_CONFIG_DIR": home,
        # Nothing of ours leaks in, and nothing is fetched: --version must work offline.
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    try:
        proc = subprocess.Popen(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=home,
            start_new_session=True,  # a timeout kills whatever it started, too
        )
    except OSError as exc:
        shutil.rmtree(home, ignore_errors=True)
        return None, f"{path} cannot be run ({exc.strerror or exc})"
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return None, f"`{path} --version` did not answer within {timeout:g} s"
    finally:
        shutil.rmtree(home, ignore_errors=True)
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0:
        tail = (err.decode(errors="replace").strip() or text).splitlines()[-3:]
        said = f": {' / '.join(tail)}" if tail else ""
        return None, f"`{path} --version` failed (exit {proc.returncode}){said}"
    first = text.splitlines()[0] if text else ""
    match = _VERSION.match(first)
    if match is None:
        return None, (
            f"`{path} --version` printed {first[:80]!r}, not a Claude Code version: "
            "is it the claude CLI?"
        )
    return match.group(1), None


def _version_of(path: Path, timeout: float) -> tuple[str | None, str | None]:
    st = path.stat()  # raises OSError when missing: the caller says so
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _cache:
            return _cache[key]
        result = _run_version(path, timeout)
        if result[0] is not None or "did not answer" not in (result[1] or ""):
            _cache[key] = result
        return result


def sandbox_problem() -> tuple[str, str] | None:
    """(why this host cannot give a claude-code run its sandbox, how to fix it), or None when
    commands get bwrap."""
    mode, problem = mode_in_use()
    if mode is Mode.BWRAP:
        return None
    host_fix = "give the host bubblewrap with user namespaces (see `quarterdeck doctor`)"
    missing = capabilities().modes[Mode.BWRAP]
    if mode is None:  # the configured mode is not available here
        what = f"claude-code runs need the bwrap sandbox; this host gives none: {problem}"
        return what, host_fix if missing else "set QUARTERDECK_SANDBOX_MODE=auto (or bwrap)"
    if missing is None:  # bwrap works here, but a weaker mode was asked for
        what = f"QUARTERDECK_SANDBOX_MODE={current_config().mode} chose {mode}"
        fix = "set QUARTERDECK_SANDBOX_MODE=auto (or bwrap)"
    else:
        what, fix = missing, host_fix
    return f"claude-code runs need the bwrap sandbox; this host gives {mode}: {what}", fix


def probe_cli(
    settings: Settings, *, need_sandbox: bool = True, timeout: float = VERSION_TIMEOUT_S
) -> ClaudeCodeInstall:
    """Find the CLI, run its ``--version`` (cached per binary), and check the sandbox."""
    configured = bool(settings.claude_code_path)
    path = find_cli(settings)
    if path is None:
        looked = f"{PATH_SETTING} is unset, not in {default_path()}, no `claude` on PATH"
        return ClaudeCodeInstall(
            None,
            None,
            f"the Claude Code CLI is not installed ({looked}); {INSTALL_HINT}",
            fix=INSTALL_HINT,
        )
    hint = SETTING_HINT if configured else INSTALL_HINT
    try:
        version, problem = _version_of(path, timeout)
    except OSError as exc:
        version, problem = None, f"{path}: {exc.strerror or exc}"
        if configured:
            problem = f"{PATH_SETTING} is {settings.claude_code_path!r}, but {problem}"
    if problem is not None:
        return ClaudeCodeInstall(
            path, None, f"{problem}; {hint}", fix=hint, misconfigured=configured
        )
    note = None
    if version != PINNED_VERSION:
        note = (
            f"Claude Code {version} is not the pinned {PINNED_VERSION} Quarterdeck is tested "
            "with; `make deps` installs the pinned one"
        )
    if need_sandbox:
        sandbox = sandbox_problem()
        if sandbox is not None:
            what, fix = sandbox
            return ClaudeCodeInstall(path, version, f"{what}; {fix}", note, fix=fix)
    return ClaudeCodeInstall(path, version, None, note)


class ClaudeCodeProbe:
    """The catalog's availability check for this process: None for an agent type it can run,
    else why not (native types are always runnable). Probes only when asked."""

    def __init__(
        self, settings: Settings, *, need_sandbox: bool = True, timeout: float = VERSION_TIMEOUT_S
    ) -> None:
        self.settings = settings
        self.need_sandbox = need_sandbox
        self.timeout = timeout

    def install(self) -> ClaudeCodeInstall:
        return probe_cli(self.settings, need_sandbox=self.need_sandbox, timeout=self.timeout)

    def __call__(self, agent_type: AgentType) -> str | None:
        if agent_type.runner != RUNNER:
            return None
        return self.install().problem
