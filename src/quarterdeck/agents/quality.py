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

**Coverage** of the workspace's tests is :mod:`quarterdeck.agents.coverage`.
"""

from __future__ import annotations

import json
import re
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


def default_runner() -> Runner:
    """The sandbox, for ruff here and for the tests `coverage` runs: both run untrusted code."""
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
    run = runner or default_runner()
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
def record_quality(agent_type: str, result: QualityResult) -> None:
    metrics.CODE_QUALITY.labels(
        metrics.bounded(agent_type), metrics.bounded(result.language)
    ).observe(result.score)
