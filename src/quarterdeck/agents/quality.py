"""Quality accounting for what an agent changed: a static-analysis score and test coverage.

Both feed the guide's histograms (``claude_agent_code_quality_score`` by agent type and language,
``claude_agent_test_coverage_percent`` by agent type and project) so a dashboard can compare, say,
the ``coder`` and ``test-writer`` types, or catch a model rollout that writes sloppier code.

**Code quality score (Python).** ``ruff`` checks only the changed ``.py`` files with a fixed rule
set (``--select E,F,W,B,UP,SIM,C90 --isolated``; ``--isolated`` ignores any ruff configuration in
the workspace, so an agent cannot raise its own score by disabling rules)::

    weighted = 3 * (pyflakes F findings) + 2 * (bugbear B findings) + 1 * (every other finding)
    density  = weighted / max(changed_lines, 1)
    score    = 1 / (1 + 10 * density)        rounded to 3 decimals; 0.0 if any syntax error

``changed_lines`` is the number of added or modified lines in those files (from a unified diff via
:func:`count_changed_lines`; a file the caller gives no count for counts all its lines, as a new
file). So no findings scores 1.0, one plain finding per 10 changed lines 0.5, one per changed line
about 0.09, and a file that does not parse (E9 / ``invalid-syntax``) 0.0 - broken code is not
"mostly fine". Pyflakes findings weigh most because they are usually real bugs (undefined names,
unused imports hiding typos); style findings weigh least. Normalising by changed lines keeps a
large change from being punished for its size. When line numbers are given
(``changed_line_numbers``, see :func:`diff_line_numbers`) only findings on changed lines count,
so pre-existing problems in a file the agent merely touched are not charged to it.

**Coverage.** When the workspace has tests, ``python -m coverage run -m pytest`` runs them and
``coverage json`` reports ``totals.percent_covered`` over the workspace's non-test code. Tests are
untrusted, model-written code, so both commands (and ruff) go through the sandbox
(:func:`quarterdeck.agents.sandbox.run_sandboxed`, injectable as ``runner``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Awaitable, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from quarterdeck import metrics
from quarterdeck.exceptions import QuarterdeckError

if TYPE_CHECKING:  # imported lazily at run time: the sandbox pulls in OS specifics
    from quarterdeck.agents.sandbox import SandboxLimits

FORMULA = (
    "score = 1 / (1 + 10 * density); density = (3*F + 2*B + 1*other ruff findings) / "
    "max(changed_lines, 1); any syntax error (E9/invalid-syntax) scores 0; rounded to 3 decimals"
)
RUFF_RULES = "E,F,W,B,UP,SIM,C90"
WEIGHTS = {"F": 3, "B": 2}
MAX_DETAILS = 200
_RUFF_OUTPUT_LIMIT = 4_000_000
_COVERAGE_OUTPUT_LIMIT = 8_000_000
_TEST_OMIT = "tests/*,*/tests/*,test_*.py,*/test_*.py,*_test.py,conftest.py,*/conftest.py,.*/*"
_COVERAGE_RUN = ("run", "--rcfile=/dev/null", "--source=.")
_PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider")
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "build", "dist"})


class CommandOutcome(Protocol):
    """What the sandbox returns (``quarterdeck.agents.sandbox.CommandResult``), as far as we use it."""

    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool


class Runner(Protocol):
    """The signature of ``run_sandboxed``. To run as a run's own sandbox identity (its workspace
    is owned by it), pass ``functools.partial(run_sandboxed, run_as=ident)``; tests inject stand-ins.
    """

    def __call__(
        self,
        command: str | list[str],
        cwd: Path,
        *,
        timeout_s: float,
        output_limit: int,
        network: bool = ...,
        limits: SandboxLimits | None = ...,
        extra_env: dict[str, str] | None = ...,
    ) -> Awaitable[CommandOutcome]: ...


class QualityError(QuarterdeckError):
    """The analyser itself failed (missing, crashed, timed out): no score, rather than a wrong one."""

    type_slug = "quality-error"
    title = "Quality analysis failed"


class QualityResult(BaseModel):
    language: str = "python"
    score: float = Field(ge=0.0, le=1.0)
    findings: int
    weighted_findings: int
    changed_lines: int
    syntax_error: bool = False
    files: list[str] = Field(default_factory=list)
    formula: str = FORMULA
    details: list[dict[str, Any]] = Field(default_factory=list)


class CoverageResult(BaseModel):
    percent: float | None
    tests_passed: bool
    exit_code: int | None
    summary: str
    covered_lines: int | None = None
    num_statements: int | None = None
    timed_out: bool = False
    error: str | None = None


def _default_runner() -> Runner:
    from quarterdeck.agents.sandbox import run_sandboxed  # lazy: sandbox pulls in OS specifics

    return run_sandboxed


# --- diffs ---------------------------------------------------------------------------------------
_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _diff_path(header: str) -> str | None:
    raw = header[4:].split("\t", 1)[0].strip()
    if raw.startswith('"') and raw.endswith('"'):
        raw = raw[1:-1]
    return None if raw == "/dev/null" else raw


def diff_line_numbers(diff_text: str) -> dict[str, set[int]]:
    """New-side line numbers added or modified per file in a unified diff (``git diff`` or ``diff -u``).

    Deleted files are left out; a file with only deletions maps to an empty set. Hunk line counts
    are tracked so content lines that happen to start with ``+++``/``---`` are not taken for headers.
    """
    result: dict[str, set[int]] = {}
    old_path: str | None = None
    current: set[int] | None = None
    old_left = new_left = 0
    line_no = 0
    for line in diff_text.splitlines():
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag == "+":
                if current is not None:
                    current.add(line_no)
                line_no += 1
                new_left -= 1
            elif tag == "-":
                old_left -= 1
            elif tag == "\\":
                pass  # "\ No newline at end of file"
            else:  # context line (a lone "" is an empty context line some tools emit)
                line_no += 1
                old_left -= 1
                new_left -= 1
            continue
        if line.startswith("--- "):
            old_path = _diff_path(line)
        elif line.startswith("+++ "):
            path = _diff_path(line)
            if path is None:
                current = None
                continue
            if path.startswith("b/") and (old_path is None or old_path.startswith("a/")):
                path = path[2:]
            current = result.setdefault(path, set())
        elif match := _HUNK.match(line):
            old_left = int(match.group(1) or 1)
            line_no = int(match.group(2))
            new_left = int(match.group(3) or 1)
    return result


def count_changed_lines(diff_text: str) -> dict[str, int]:
    """Added plus modified lines per file in a unified diff (a modified line is a -/+ pair)."""
    return {path: len(lines) for path, lines in diff_line_numbers(diff_text).items()}


# --- static analysis -----------------------------------------------------------------------------
def ruff_binary() -> str:
    beside = Path(sys.executable).parent / "ruff"
    if beside.is_file():
        return str(beside)
    found = shutil.which("ruff")
    if found is None:
        raise QualityError("ruff is not installed (looked beside the interpreter and on PATH)")
    return found


def _python_files(workspace: Path, changed_files: list[str]) -> list[str]:
    """Changed ``.py`` files that exist inside the workspace, as clean relative posix paths.

    Paths come from the agent's own changes, so anything absolute, escaping (``..``) or a symlink
    is dropped rather than analysed: the score is about files in the workspace, nothing else.
    """
    root = workspace.resolve()
    out: list[str] = []
    for name in changed_files:
        rel = PurePosixPath(name.replace("\\", "/"))
        if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".py":
            continue
        path = workspace / rel
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root):
            continue
        clean = str(PurePosixPath(*[p for p in rel.parts if p != "."]))
        if clean not in out:
            out.append(clean)
    return out


def _weight(code: str | None) -> int | None:
    """Finding weight; ``None`` for a syntax error, which zeroes the score."""
    if code is None or code == "invalid-syntax" or code.startswith("E9"):
        return None
    return WEIGHTS.get(code[:1], 1)


def _match_file(filename: str, files: list[str]) -> str:
    posix = filename.replace("\\", "/")
    for rel in sorted(files, key=len, reverse=True):
        if posix == rel or posix.endswith("/" + rel):
            return rel
    return posix


def _file_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


async def _ruff(runner: Runner, workspace: Path, files: list[str], timeout_s: float) -> list[Any]:
    """Ruff's findings as JSON dicts; on an output flood, per-rule counts marked ``stats``."""
    base = [ruff_binary(), "check", "--output-format", "json", "--select", RUFF_RULES]
    base += ["--isolated", "--no-cache", "--exit-zero"]
    for extra in ([], ["--statistics"]):
        out = await runner(
            [*base, *extra, "--", *files],
            workspace,
            timeout_s=timeout_s,
            output_limit=_RUFF_OUTPUT_LIMIT,
        )
        if out.timed_out or out.exit_code != 0:
            why = "timed out" if out.timed_out else f"exited {out.exit_code}"
            raise QualityError(f"ruff {why}: {out.stderr.strip()[-500:]}")
        if out.truncated and not extra:
            continue  # too many findings to list: per-rule counts are small and still exact
        try:
            parsed = json.loads(out.stdout or "[]")
            if not isinstance(parsed, list):
                raise ValueError("not a list")
        except ValueError as exc:
            raise QualityError(f"ruff printed unparsable output: {exc}") from exc
        if extra:
            return [
                {"code": r.get("code") or r.get("name"), "count": int(r["count"]), "stats": True}
                for r in parsed
            ]
        return parsed
    raise AssertionError("unreachable")


async def score_python(
    workspace: Path,
    changed_files: list[str],
    changed_lines: Mapping[str, int] | None = None,
    runner: Runner | None = None,
    *,
    changed_line_numbers: Mapping[str, AbstractSet[int]] | None = None,
    timeout_s: float = 60.0,
) -> QualityResult | None:
    """Score the changed Python files (see the module docstring); ``None`` when none changed.

    Raises :class:`QualityError` when ruff cannot run, so a caller records nothing instead of a
    score that looks real.
    """
    files = _python_files(workspace, changed_files)
    if not files:
        return None
    run = runner or _default_runner()
    raw = await _ruff(run, workspace, files, timeout_s)

    total_lines = 0
    for rel in files:
        if changed_lines is not None and rel in changed_lines:
            total_lines += max(int(changed_lines[rel]), 0)
        elif changed_line_numbers is not None and rel in changed_line_numbers:
            total_lines += len(changed_line_numbers[rel])
        else:
            total_lines += _file_lines(workspace / rel)

    findings = weighted = 0
    syntax_error = False
    details: list[dict[str, Any]] = []
    for item in raw:
        code = item.get("code") or "invalid-syntax"  # older ruff: null code for syntax errors
        weight = _weight(code)
        count = int(item.get("count", 1))  # > 1 only in the statistics fallback (no locations)
        if not item.get("stats"):
            rel = _match_file(str(item.get("filename", "")), files)
            row = int((item.get("location") or {}).get("row") or 0)
            only = None if changed_line_numbers is None else changed_line_numbers.get(rel)
            if weight is not None and only is not None and row not in only:
                continue  # pre-existing problem on a line the agent did not touch
            if len(details) < MAX_DETAILS:
                message = str(item.get("message", ""))[:300]
                details.append(
                    {"file": rel, "line": row, "code": code, "message": message, "weight": weight}
                )
        findings += count
        if weight is None:
            syntax_error = True
        else:
            weighted += weight * count

    density = weighted / max(total_lines, 1)
    score = 0.0 if syntax_error else round(1.0 / (1.0 + 10.0 * density), 3)
    return QualityResult(
        score=score,
        findings=findings,
        weighted_findings=weighted,
        changed_lines=total_lines,
        syntax_error=syntax_error,
        files=files,
        details=details,
    )


# --- coverage ------------------------------------------------------------------------------------
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
    run = runner or _default_runner()
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
def record_quality(agent_type: str, result: QualityResult) -> None:
    metrics.CODE_QUALITY.labels(
        metrics.bounded(agent_type), metrics.bounded(result.language)
    ).observe(result.score)


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
