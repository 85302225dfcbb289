"""``python -m benchmarks.run``: ``--help`` lists the benchmarks and runs none; a name that
matches no benchmark is an error, not an empty run that writes an empty results file."""

from __future__ import annotations

import pytest
from benchmarks import run


def test_help_lists_every_benchmark_and_runs_none(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "SUITES", {**run.SUITES, "gateway.overhead": _must_not_run})
    run.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m benchmarks.run")
    assert all(f"  {name}\n" in out for name in run.SUITES)


def test_an_unknown_name_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "RESULTS", None)  # writing anything would fail loudly
    with pytest.raises(SystemExit) as exited:
        run.main(["core.throughput", "nope"])
    assert exited.value.code == 2
    assert "no benchmark starts with nope" in capsys.readouterr().err


def _must_not_run() -> dict[str, object]:
    raise AssertionError("--help ran a benchmark")
