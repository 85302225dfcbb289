"""Quality accounting end to end: real ruff, real pytest + coverage, through the real sandbox.

Expected scores are worked out by hand from the formula in ``quarterdeck.agents.quality`` so a
change to the weights or the curve shows up here as a deliberate edit, not a silent drift.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quarterdeck import metrics
from quarterdeck.agents import coverage, quality, sandbox


@dataclass
class Sandboxed:
    runner: quality.Runner
    ident: tuple[int, int] | None


def _world_readable_dir(prefix: str) -> Path:
    """A temp dir the sandbox user can enter (pytest's own tmp_path root is mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
async def sandboxed() -> Sandboxed:
    """The real sandbox, as the identity that can run this interpreter.

    On this dev box the venv's interpreter lives under ``/root`` (mode 0700), which the
    unprivileged sandbox user cannot enter; then we keep every other layer (namespaces, rlimits,
    no-new-privs, scrubbed env) and only skip the uid drop. In the container image Python lives
    in ``/usr/local`` and the first probe succeeds.
    """
    ident = sandbox.shared_identity()
    probe_dir = _world_readable_dir("qd-probe-")
    try:
        sandbox.prepare_dir(probe_dir, ident)
        probe = await sandbox.run_sandboxed(
            [sys.executable, "-c", "import coverage, pytest"],
            probe_dir,
            timeout_s=60,
            output_limit=10_000,
        )
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if probe.exit_code == 0 or ident is None:
        return Sandboxed(sandbox.run_sandboxed, ident)
    return Sandboxed(functools.partial(sandbox.run_sandboxed, run_as=(0, 0)), (0, 0))


@pytest.fixture
def make_ws(sandboxed: Sandboxed) -> Iterator[Callable[[dict[str, str]], Path]]:
    """Build a workspace from ``{relative path: content}``, owned by the sandbox identity."""
    made: list[Path] = []

    def make(files: dict[str, str]) -> Path:
        root = _world_readable_dir("qd-quality-")
        made.append(root)
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        sandbox.prepare_dir(root, sandboxed.ident)
        return root

    yield make
    for root in made:
        shutil.rmtree(root, ignore_errors=True)


CLEAN = '''"""A tidy module."""


def area(width: float, height: float) -> float:
    return width * height
'''
# F401 (os, weight 3) + B006 (weight 2) + E711 (weight 1) + F821 (weight 3) = 9 weighted
MIXED = """import os


def f(items=[]):
    if items == None:
        return undefined
    return items
"""


async def test_clean_file_scores_one(make_ws: Callable[..., Path], sandboxed: Sandboxed) -> None:
    ws = make_ws({"pkg/clean.py": CLEAN})
    result = await quality.score_python(ws, ["pkg/clean.py"], runner=sandboxed.runner)
    assert result is not None
    assert (result.score, result.findings, result.changed_lines) == (1.0, 0, 5)
    assert result.language == "python" and result.formula == quality.FORMULA
    assert result.files == ["pkg/clean.py"]


async def test_findings_lower_the_score_as_hand_calculated(
    make_ws: Callable[..., Path], sandboxed: Sandboxed
) -> None:
    ws = make_ws({"mixed.py": MIXED, "clean.py": CLEAN})
    result = await quality.score_python(
        ws, ["mixed.py", "clean.py"], {"mixed.py": 25, "clean.py": 5}, runner=sandboxed.runner
    )
    assert result is not None
    assert sorted(d["code"] for d in result.details) == ["B006", "E711", "F401", "F821"]
    assert {d["code"]: d["weight"] for d in result.details} == {
        "F401": 3,
        "F821": 3,
        "B006": 2,
        "E711": 1,
    }
    # weighted 9 over 30 changed lines: density 0.3, score 1 / (1 + 10 * 0.3) = 0.25
    assert (result.findings, result.weighted_findings, result.changed_lines) == (4, 9, 30)
    assert result.score == 0.25

    # Without counts every line of each file counts as changed: 7 + 5 = 12 lines,
    # density 9 / 12 = 0.75, score 1 / 8.5 = 0.1176... -> 0.118
    whole = await quality.score_python(ws, ["mixed.py", "clean.py"], runner=sandboxed.runner)
    assert whole is not None and (whole.changed_lines, whole.score) == (12, 0.118)


async def test_only_findings_on_changed_lines_count_when_line_numbers_given(
    make_ws: Callable[..., Path], sandboxed: Sandboxed
) -> None:
    ws = make_ws({"mixed.py": MIXED})
    # the agent only touched lines 5-6 (E711 and F821): weighted 4 over 2 lines
    result = await quality.score_python(
        ws, ["mixed.py"], runner=sandboxed.runner, changed_line_numbers={"mixed.py": {5, 6}}
    )
    assert result is not None
    assert sorted(d["code"] for d in result.details) == ["E711", "F821"]
    assert (result.weighted_findings, result.changed_lines) == (4, 2)
    assert result.score == round(1 / (1 + 10 * 4 / 2), 3) == 0.048


async def test_syntax_error_scores_zero(make_ws: Callable[..., Path], sandboxed: Sandboxed) -> None:
    ws = make_ws({"broken.py": "def f(:\n    return 1\n", "clean.py": CLEAN})
    result = await quality.score_python(ws, ["broken.py", "clean.py"], runner=sandboxed.runner)
    assert result is not None
    assert result.score == 0.0 and result.syntax_error
    assert any(d["code"] == "invalid-syntax" and d["weight"] is None for d in result.details)


async def test_no_python_change_is_none(make_ws: Callable[..., Path], sandboxed: Sandboxed) -> None:
    ws = make_ws({"README.md": "# hi\n", "data.json": "{}", "real.py": CLEAN})
    os.symlink("/etc/hostname", ws / "link.py")
    changed = ["README.md", "data.json", "gone.py", "../real.py", "/etc/passwd.py", "link.py"]
    assert await quality.score_python(ws, changed, runner=sandboxed.runner) is None


async def test_output_flood_falls_back_to_exact_rule_counts(
    make_ws: Callable[..., Path], sandboxed: Sandboxed, monkeypatch: pytest.MonkeyPatch
) -> None:
    imports = "".join(f"import mod{i}\n" for i in range(40))
    ws = make_ws({"many.py": imports})
    full = await quality.score_python(ws, ["many.py"], runner=sandboxed.runner)
    monkeypatch.setattr(quality, "_RUFF_OUTPUT_LIMIT", 2_000)  # 40 findings are ~28 kB of JSON
    counted = await quality.score_python(ws, ["many.py"], runner=sandboxed.runner)
    assert full is not None and counted is not None
    assert counted.findings == full.findings == 40
    assert counted.score == full.score == round(1 / (1 + 10 * 120 / 40), 3)
    assert counted.details == []


def test_count_changed_lines_on_a_handwritten_diff() -> None:
    diff = """\
diff --git a/app/main.py b/app/main.py
index 1111111..2222222 100644
--- a/app/main.py
+++ b/app/main.py
@@ -1,5 +1,6 @@
 import sys
-import os
+import pathlib
+import json
~
 def main():
     return 0
@@ -20,3 +21,3 @@ def helper():
 x = 1
-y = 2
+++y = 3
 z = 4
diff --git a/new.py b/new.py
new file mode 100644
--- /dev/null
+++ b/new.py
@@ -0,0 +1,2 @@
+print("hi")
+print("there")
\\ No newline at end of file
diff --git a/old.py b/old.py
deleted file mode 100644
--- a/old.py
+++ /dev/null
@@ -1,2 +0,0 @@
-a = 1
-b = 2
diff --git a/trim.py b/trim.py
--- a/trim.py
+++ b/trim.py
@@ -3,2 +3 @@
 keep = True
-drop = True
""".replace("\n~\n", "\n \n")  # a blank context line is a single space in a real diff
    assert quality.count_changed_lines(diff) == {"app/main.py": 3, "new.py": 2, "trim.py": 0}
    lines = quality.diff_line_numbers(diff)
    assert lines["app/main.py"] == {2, 3, 22}  # "+++y = 3" is content, not a header
    assert lines["new.py"] == {1, 2}
    assert quality.count_changed_lines("") == {}


def test_count_changed_lines_matches_git(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}

    def run(*args: str) -> str:
        out = subprocess.run([git, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    (tmp_path / "a.py").write_text("".join(f"line{i}\n" for i in range(1, 21)))
    (tmp_path / "gone.py").write_text("x\n")
    run("init", "-q")
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    lines = (tmp_path / "a.py").read_text().splitlines()
    lines[1] = "changed2"  # line 2 modified
    lines[9:10] = ["new10a", "new10b"]  # line 10 replaced by two -> lines 10, 11
    del lines[15]  # a deletion adds nothing
    (tmp_path / "a.py").write_text("\n".join(lines) + "\n")
    (tmp_path / "gone.py").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new file.py").write_text("a\nb\n")
    run("add", "-A")
    diff = run("-c", "core.quotePath=false", "diff", "--cached", "--no-renames", "HEAD")
    assert quality.diff_line_numbers(diff) == {"a.py": {2, 10, 11}, "sub/new file.py": {1, 2}}


COVERED_PROJECT = {
    "src/calc.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
}


async def test_coverage_of_a_tiny_project(
    make_ws: Callable[..., Path], sandboxed: Sandboxed
) -> None:
    ws = make_ws(COVERED_PROJECT)
    before = sorted(p.relative_to(ws) for p in ws.rglob("*"))
    result = await coverage.measure_coverage(ws, runner=sandboxed.runner)
    assert result is not None, "tests exist"
    assert result.error is None, result
    assert result.tests_passed and result.exit_code == 0
    assert "1 passed" in result.summary
    assert result.percent is not None and 0 < result.percent < 100
    # calc.py: both defs and add's return run, sub's return does not; tests are omitted.
    assert (result.covered_lines, result.num_statements, result.percent) == (3, 4, 75.0)
    # no data file, bytecode or pytest cache left behind (the sandbox's own tmp dir aside)
    after = sorted(p.relative_to(ws) for p in ws.rglob("*") if sandbox.TMP_DIRNAME not in p.parts)
    assert after == before


async def test_failing_tests_still_measure_coverage(
    make_ws: Callable[..., Path], sandboxed: Sandboxed
) -> None:
    project = dict(COVERED_PROJECT)
    project["test_more.py"] = (
        "from calc import sub\n\n\ndef test_sub():\n    assert sub(1, 1) == 5\n"
    )
    result = await coverage.measure_coverage(make_ws(project), runner=sandboxed.runner)
    assert result is not None
    assert not result.tests_passed and result.exit_code == 1
    assert "1 failed, 1 passed" in result.summary
    assert result.percent == 100.0


async def test_no_coverage_data_is_an_error_not_zero(
    make_ws: Callable[..., Path], sandboxed: Sandboxed
) -> None:
    ws = make_ws({"tests/test_x.py": "import not_a_module\n\n\ndef test_x():\n    pass\n"})
    result = await coverage.measure_coverage(ws, runner=sandboxed.runner)
    assert result is not None
    assert result.percent is None and not result.tests_passed
    assert result.error and "no coverage data" in result.error


async def test_test_timeout_is_reported(make_ws: Callable[..., Path], sandboxed: Sandboxed) -> None:
    slow = "import time\n\n\ndef test_slow():\n    time.sleep(60)\n"
    ws = make_ws({"src/calc.py": COVERED_PROJECT["src/calc.py"], "slow_test.py": slow})
    result = await coverage.measure_coverage(ws, runner=sandboxed.runner, timeout_s=3)
    assert result is not None
    assert result.timed_out and result.percent is None and not result.tests_passed
    assert result.error and "timed out" in result.error


async def test_workspace_without_tests_is_none(
    make_ws: Callable[..., Path], sandboxed: Sandboxed
) -> None:
    ws = make_ws({"src/calc.py": COVERED_PROJECT["src/calc.py"], ".venv/test_vendor.py": ""})
    assert await coverage.measure_coverage(ws, runner=sandboxed.runner) is None
    assert coverage.has_tests(make_ws({"pkg/calc_test.py": ""}))


def _count(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0


def _sum(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0


def test_metrics_are_recorded_with_bounded_labels() -> None:
    q_name, c_name = "claude_agent_code_quality_score", "claude_agent_test_coverage_percent"
    q_labels = {"agent_type": "test-writer", "language": "python"}
    q_before = _count(q_name, q_labels), _sum(q_name, q_labels)
    result = quality.QualityResult(score=0.25, findings=4, weighted_findings=9, changed_lines=30)
    quality.record_quality("test-writer", result)
    assert _count(q_name, q_labels) == q_before[0] + 1
    assert _sum(q_name, q_labels) == pytest.approx(q_before[1] + 0.25)

    cov = coverage.CoverageResult(percent=75.0, tests_passed=True, exit_code=0, summary="")
    cases = [
        ("calc-repo", None, "calc-repo"),  # configured below (QUARTERDECK_METRIC_PROJECTS)
        ("other-repo", None, "other"),  # a project nobody configured
        ("run_01HXYZ/with spaces", None, "other"),  # free text never becomes a label
        ("unlisted", {"calc-repo"}, "other"),
        (None, None, "workspace"),
    ]
    metrics.configure_labels(metrics.LabelBounds(projects=["calc-repo"]))
    try:
        for project, known, label in cases:
            labels = {"agent_type": "test-writer", "project": label}
            before = _count(c_name, labels)
            coverage.record_coverage("test-writer", project, cov, known_projects=known)
            assert _count(c_name, labels) == before + 1, project
    finally:
        metrics.configure_labels(None)

    # no figure, nothing observed: a failed test run is not "0% covered"
    labels = {"agent_type": "test-writer", "project": "workspace"}
    before = _count(c_name, labels)
    failed = cov.model_copy(update={"percent": None, "error": "no coverage data"})
    coverage.record_coverage("test-writer", None, failed)
    assert _count(c_name, labels) == before
