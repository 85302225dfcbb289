"""Finding and checking the Claude Code CLI (``agents/claude_code/install.py``), the catalog's
lazy availability, the doctor's check, and the Makefile's install steps.

Real binaries throughout: small ``claude`` scripts in ``tmp_path`` that print a version (or
hang, or fail), the real pinned CLI under the venv, the real sandbox probe, real ``make``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quarterdeck.agents import sandbox
from quarterdeck.agents.claude_code import install
from quarterdeck.agents.claude_code.install import (
    PINNED_VERSION,
    default_path,
    find_cli,
    probe_cli,
)
from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.config import Settings, load_settings
from quarterdeck.monitoring.checks import claude_code_check

ROOT = Path(__file__).resolve().parents[2]
REAL_CLI = default_path()


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_"):
            monkeypatch.delenv(name)
    install.forget()
    sandbox.configure(sandbox.SandboxConfig())
    yield
    install.forget()
    sandbox.configure(sandbox.SandboxConfig())


def settings(path: Path | str | None = None) -> Settings:
    return load_settings(None, claude_code_path=str(path) if path else None)


def fake_cli(where: Path, body: str) -> Path:
    """An executable ``claude`` script running ``body``; it counts its runs (:func:`runs`)."""
    where.mkdir(parents=True, exist_ok=True)
    script = where / "claude"
    count = where / "runs"
    script.write_text(f"#!/bin/sh\necho run >> {count}\n{body}\n")
    script.chmod(0o755)
    return script


def runs(script: Path) -> int:
    count = script.parent / "runs"
    return len(count.read_text().splitlines()) if count.exists() else 0


def test_the_pinned_cli_is_found_under_the_venv_and_available() -> None:
    """What `make deps` installs (the venv is sys.prefix) is found without any setting, and this
    host (bwrap) can run it."""
    assert REAL_CLI.exists(), "run `make deps`: the pinned CLI is missing"
    assert find_cli(settings()) == REAL_CLI
    found = probe_cli(settings())
    assert found.available and found.problem is None and found.note is None
    assert (found.path, found.version) == (REAL_CLI, PINNED_VERSION)
    assert found.as_dict()["available"] is True


def test_a_configured_cli_is_run_with_a_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARTERDECK_SECRET_FOR_TEST", "s3cret")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-leak")
    script = fake_cli(
        tmp_path / "bin", f'env > {tmp_path}/env.txt\necho "{PINNED_VERSION} (Claude Code)"'
    )
    found = probe_cli(settings(script))
    assert found.available and found.version == PINNED_VERSION and found.path == script
    env = dict(
        line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if line
    )
    assert "QUARTERDECK_SECRET_FOR_TEST" not in env and "ANTHROPIC_API_KEY" not in env
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} <= {
        "PATH",
        "HOME",
        "CLAUDE_CONFIG_DIR",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
    }
    assert env["HOME"] != os.environ.get("HOME") and "qd-claude-probe-" in env["HOME"]
    assert not Path(env["HOME"]).exists()  # the private HOME is removed afterwards


def test_the_probe_runs_once_per_binary_and_again_when_it_changes(tmp_path: Path) -> None:
    script = fake_cli(tmp_path, f'echo "{PINNED_VERSION} (Claude Code)"')
    for _ in range(3):
        assert probe_cli(settings(script)).available
    assert runs(script) == 1
    time.sleep(0.01)  # a new mtime even on coarse clocks
    fake_cli(tmp_path, 'echo "2.1.300 (Claude Code)"')  # replaced (reinstalled)
    assert probe_cli(settings(script)).version == "2.1.300"
    assert runs(script) == 2
    script.unlink()  # removed after start-up: noticed without running anything
    gone = probe_cli(settings(script))
    assert not gone.available and "No such file" in (gone.problem or "")


def test_a_configured_path_that_does_not_exist_is_a_problem_not_a_fallback(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere" / "claude"
    assert find_cli(settings(missing)) == missing  # no silent use of the venv's CLI
    found = probe_cli(settings(missing))
    assert not found.available and found.misconfigured
    assert "QUARTERDECK_CLAUDE_CODE_PATH" in (found.problem or "")
    assert str(missing) in (found.problem or "") and "make deps" in (found.problem or "")
    check = claude_code_check(found.as_dict())
    assert check.status == "fail" and "make deps" in check.fix


def test_another_version_is_available_but_noted(tmp_path: Path) -> None:
    script = fake_cli(tmp_path, 'echo "2.1.150 (Claude Code)"')
    found = probe_cli(settings(script))
    assert found.available and found.version == "2.1.150"
    assert found.note and PINNED_VERSION in found.note and "make deps" in found.note
    check = claude_code_check(found.as_dict())
    assert check.status == "warn" and "2.1.150" in check.detail


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("echo 'true (GNU coreutils) 9.1'", "not a Claude Code version"),
        ("echo 'Error: broken install' >&2; exit 3", "exit 3"),
    ],
)
def test_something_else_called_claude_is_a_problem(tmp_path: Path, body: str, words: str) -> None:
    found = probe_cli(settings(fake_cli(tmp_path, body)))
    assert not found.available and words in (found.problem or "")
    if "exit 3" in words:
        assert "broken install" in (found.problem or "")


def test_a_file_that_cannot_be_run_is_a_problem(tmp_path: Path) -> None:
    plain = tmp_path / "claude"
    plain.write_text("not a program\n")
    found = probe_cli(settings(plain))
    assert not found.available and "cannot be run" in (found.problem or "")


def test_a_cli_that_hangs_times_out_and_leaves_nothing_running(tmp_path: Path) -> None:
    marker = f"sleep 30.{os.getpid()}"  # unique to this test's processes
    script = fake_cli(tmp_path, f"{marker} & {marker}")
    started = time.monotonic()
    found = probe_cli(settings(script), timeout=0.5)
    assert time.monotonic() - started < 5
    assert not found.available and "did not answer within 0.5 s" in (found.problem or "")
    for _ in range(100):  # the whole process group was killed (SIGKILL lands at once)
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False)
        if left.returncode == 1:
            break
        time.sleep(0.02)
    assert left.returncode == 1, left.stdout
    probe_cli(settings(script), timeout=0.5)  # a timeout is not cached: asked again
    assert runs(script) == 2


def test_path_fallbacks_venv_then_path_then_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_cli(settings()) is None
    found = probe_cli(settings())
    assert not found.available and not found.misconfigured
    assert "not installed" in (found.problem or "") and "make deps" in (found.problem or "")
    assert claude_code_check(found.as_dict()).status == "warn"  # native types still run

    on_path = fake_cli(tmp_path / "bin", f'echo "{PINNED_VERSION} (Claude Code)"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    assert find_cli(settings()) == on_path
    venv = fake_cli(
        tmp_path / "venv" / "claude-code" / "node_modules" / ".bin",
        f'echo "{PINNED_VERSION} (Claude Code)"',
    )
    assert find_cli(settings()) == venv  # the venv's wins over PATH


def test_runs_need_the_bwrap_sandbox_unless_the_process_runs_none() -> None:
    assert sandbox.capabilities().available(sandbox.Mode.BWRAP), "this host has bwrap"
    sandbox.configure(sandbox.SandboxConfig(mode="rlimits"))
    found = probe_cli(settings())
    assert not found.available and found.version == PINNED_VERSION
    assert "need the bwrap sandbox; this host gives rlimits" in (found.problem or "")
    assert "QUARTERDECK_SANDBOX_MODE=auto" in found.fix
    assert probe_cli(settings(), need_sandbox=False).available  # an API-only process


def test_the_catalog_probes_lazily_and_only_for_claude_code_types(tmp_path: Path) -> None:
    script = fake_cli(tmp_path, "echo 'nope' >&2; exit 1")
    catalog = AgentCatalog.from_settings(settings(script))
    assert runs(script) == 0  # building it ran nothing
    assert catalog.unavailable_reason("coder") is None
    assert runs(script) == 0  # nor did asking about a native type
    reason = catalog.unavailable_reason("claude-code")
    assert reason and "exit 1" in reason and runs(script) == 1
    assert AgentCatalog.from_mapping({}).unavailable_reason("claude-code") is None  # no probe
    real = AgentCatalog.from_settings(settings())
    assert real.unavailable_reason("claude-code") is None


def test_doctor_check_shapes() -> None:
    ok = claude_code_check(
        {"available": True, "version": PINNED_VERSION, "path": "/x/claude", "note": None}
    )
    assert ok.status == "ok" and PINNED_VERSION in ok.detail and "/x/claude" in ok.detail
    sandboxless = claude_code_check(
        {"available": False, "problem": "needs bwrap", "fix": "get bwrap", "misconfigured": False}
    )
    assert sandboxless.status == "warn" and "needs bwrap" in sandboxless.detail
    assert sandboxless.fix == "get bwrap"


# ----------------------------------------------------------------------------- packaging
def test_the_pin_is_the_same_in_the_makefile_the_dockerfile_and_the_code() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^CLAUDE_CODE_VERSION := {re.escape(PINNED_VERSION)}$", makefile, re.M)
    assert f"ARG CLAUDE_CODE_VERSION={PINNED_VERSION}" in dockerfile
    assert "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" in dockerfile
    assert "QUARTERDECK_CLAUDE_CODE_PATH=/opt/claude-code/node_modules/.bin/claude" in dockerfile
    assert "COPY --from=claude-code /opt/claude-code /opt/claude-code" in dockerfile
    assert re.search(r"^up: .*\bclaude-code\b", makefile, re.M), "make up installs the CLI"


def _make(tmp_path: Path, npm_body: str, target: str) -> subprocess.CompletedProcess[str]:
    """Run the real Makefile against a scratch venv, with ``npm`` being ``npm_body``."""
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    npm = fake_bin / "npm"
    npm.write_text(f"#!/bin/sh\n{npm_body}\n")
    npm.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    quarterdeck = venv / "bin" / "quarterdeck"
    quarterdeck.write_text('#!/bin/sh\necho "quarterdeck $1 started"\n')
    quarterdeck.chmod(0o755)
    (venv / ".installed").touch()  # pip's part is done (newer than pyproject.toml)
    make = shutil.which("make")
    assert make, "make is needed"
    return subprocess.run(
        [make, "-C", str(ROOT), f"VENV={venv}", target],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path)},
        check=False,
    )


def test_make_up_warns_and_starts_when_the_cli_cannot_be_installed(tmp_path: Path) -> None:
    result = _make(
        tmp_path, "echo 'npm ERR! network ENOTFOUND registry.npmjs.org' >&2; exit 1", "up"
    )
    assert result.returncode == 0, result.stderr
    assert "ENOTFOUND" in result.stderr
    assert "claude-code agent type is unavailable" in result.stderr
    assert "quarterdeck up started" in result.stdout
    assert not (tmp_path / "venv" / "claude-code" / "node_modules" / ".bin" / "claude").exists()


def test_make_installs_the_pinned_cli_into_the_venv_prefix(tmp_path: Path) -> None:
    # A stand-in npm: records its arguments and installs a claude that prints its version.
    npm = f"""echo "$@" > {tmp_path}/npm-args
prefix=$(echo "$@" | sed 's/.*--prefix \\([^ ]*\\).*/\\1/')
mkdir -p "$prefix/node_modules/.bin"
printf '#!/bin/sh\\necho "{PINNED_VERSION} (Claude Code)"\\n' > "$prefix/node_modules/.bin/claude"
chmod +x "$prefix/node_modules/.bin/claude\""""
    result = _make(tmp_path, npm, "claude-code")
    assert result.returncode == 0, result.stderr
    args = (tmp_path / "npm-args").read_text()
    assert f"--prefix {tmp_path}/venv/claude-code" in args
    assert f"@anthropic-ai/claude-code@{PINNED_VERSION}" in args
    assert f"{PINNED_VERSION} (Claude Code)" in result.stdout
    assert "unavailable" not in result.stderr
