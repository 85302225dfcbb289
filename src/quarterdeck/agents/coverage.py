"""Test coverage of what an agent left in its workspace (the guide's
``claude_agent_test_coverage_percent``, by agent type and project).

When the workspace has tests, ``python -m coverage run -m pytest`` runs them and
``coverage json`` reports ``totals.percent_covered`` over the workspace's non-test code. Tests are
untrusted, model-written code, so both commands (and ruff) go through the sandbox
(:func:`quarterdeck.agents.sandbox.run_sandboxed`, injectable as ``runner``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import shutil
import sys
from collections.abc import Set as AbstractSet
from pathlib import Path

from pydantic import BaseModel

from quarterdeck import metrics
from quarterdeck.agents.quality import QualityError, Runner, default_runner

_COVERAGE_OUTPUT_LIMIT = 8_000_000
_TEST_OMIT = "tests/*,*/tests/*,test_*.py,*/test_*.py,*_test.py,conftest.py,*/conftest.py,.*/*"
_COVERAGE_RUN = ("run", "--rcfile=/dev/null", "--source=.")
_PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "build", "dist"})


class CoverageResult(BaseModel):
    percent: float | None
    tests_passed: bool
    exit_code: int | None
    summary: str
    covered_lines: int | None = None
    num_statements: int | None = None
    timed_out: bool = False
    error: str | None = None


def has_tests(workspace: Path, *, max_entries: int = 20_000) -> bool:
    """A ``tests/`` directory, or any ``test_*.py`` / ``*_test.py`` outside hidden/vendored dirs."""
    if (workspace / "tests").is_dir():
        return True
    seen = 0
    for _root, dirnames, filenames in os.walk(workspace):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")):
                return True
        seen += len(filenames) + len(dirnames)
        if seen > max_entries:
            return False
    return False


def _summary_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _remove_data(workspace: Path, data_name: str) -> None:
    """Delete the coverage data file(s); the tests may have swapped them for a dir or symlink."""
    for path in workspace.glob(data_name + "*"):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            pass


async def measure_coverage(
    workspace: Path, runner: Runner | None = None, timeout_s: float = 300
) -> CoverageResult | None:
    """Run the workspace's tests under coverage in the sandbox; ``None`` if there are no tests.

    The workspace's own coverage config is ignored (``--rcfile=/dev/null``) and test files are
    omitted, so the figure is "non-test code exercised by the tests" however the agent configured
    things. Caches and bytecode are not written and the data file is removed afterwards, so the
    measurement leaves the workspace (and therefore the run's diff) as it found it.
    """
    if not await asyncio.to_thread(has_tests, workspace):
        return None
    missing = [m for m in ("coverage", "pytest") if importlib.util.find_spec(m) is None]
    if missing:
        raise QualityError(f"{' and '.join(missing)} not installed beside {sys.executable}")
    run = runner or default_runner()
    data_name = f".qd-coverage-{secrets.token_hex(6)}"
    env = {
        "COVERAGE_FILE": data_name,  # relative: the sandbox may mount the workspace elsewhere
        "PYTHONPATH": os.pathsep.join(["src", "."] if (workspace / "src").is_dir() else ["."]),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    py = sys.executable
    cov = [py, "-m", "coverage"]
    try:
        tests = await run(
            [*cov, *_COVERAGE_RUN, f"--omit={_TEST_OMIT}", *_PYTEST],
            workspace,
            timeout_s=timeout_s,
            output_limit=200_000,
            extra_env=env,
        )
        if tests.exit_code in (126, 127):  # the shell could not exec the interpreter at all
            raise QualityError(f"cannot run {py} in the sandbox: {_summary_line(tests.stderr)}")
        passed = tests.exit_code == 0 and not tests.timed_out
        summary = "timed out" if tests.timed_out else _summary_line(tests.stdout)
        base = CoverageResult(
            percent=None,
            tests_passed=passed,
            exit_code=tests.exit_code,
            summary=summary,
            timed_out=tests.timed_out,
        )
        if tests.timed_out:
            return base.model_copy(update={"error": f"tests timed out after {timeout_s:g}s"})
        report = await run(
            [*cov, "json", "--rcfile=/dev/null", "-q", "-o", "-"],
            workspace,
            timeout_s=60.0,
            output_limit=_COVERAGE_OUTPUT_LIMIT,
            extra_env=env,
        )
        try:
            if report.exit_code != 0 or report.truncated:
                raise ValueError(_summary_line(report.stderr) or "no coverage report")
            totals = json.loads(report.stdout)["totals"]
            return base.model_copy(
                update={
                    "percent": round(float(totals["percent_covered"]), 2),
                    "covered_lines": int(totals["covered_lines"]),
                    "num_statements": int(totals["num_statements"]),
                }
            )
        except (ValueError, KeyError, TypeError) as exc:
            return base.model_copy(update={"error": f"no coverage data: {exc}"[:500]})
    finally:
        _remove_data(workspace, data_name)


# --- metrics -------------------------------------------------------------------------------------


def record_coverage(
    agent_type: str,
    project: str | None,
    result: CoverageResult,
    *,
    known_projects: AbstractSet[str] | None = None,
) -> None:
    """Observe coverage; no-op when there was no figure (a failed run is not 0% coverage).

    ``project`` is the workspace's source name (a repository, say), which the submitter
    chooses: it becomes the label only when configured (``QUARTERDECK_METRIC_PROJECTS``, see
    :func:`metrics.project`), or listed in ``known_projects``; anything else is ``other``.
    """
    if result.percent is None:
        return
    if not project:
        label = "workspace"
    elif known_projects is not None:
        label = metrics.bounded(project, frozenset(known_projects))
    else:
        label = metrics.project(project)
    metrics.TEST_COVERAGE.labels(metrics.bounded(agent_type), label).observe(result.percent)
