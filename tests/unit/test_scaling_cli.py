"""``quarterdeck scaler simulate`` on a tiny trace: the table, JSON, the chart, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from quarterdeck.cli import app

TRACE = "arrival_s,duration_s\n" + "".join(f"{i * 2},{120 + i}\n" for i in range(300))


def test_simulate_compares_the_policies_and_writes_json_and_svg(tmp_path: Path) -> None:
    trace = tmp_path / "burst.csv"
    trace.write_text(TRACE)
    svg, out = tmp_path / "chart.svg", tmp_path / "result.json"
    runner = CliRunner()
    args = ["scaler", "simulate", "--trace", str(trace), "--svg", str(svg), "--out", str(out)]
    shown = runner.invoke(app, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert set(data["policies"]) == {"quarterdeck", "guide-hpa", "guide-pressure"}
    assert svg.read_text().startswith("<svg") and json.loads(out.read_text())["policies"]
    one = runner.invoke(app, ["scaler", "simulate", "--trace", str(trace), "-p", "quarterdeck"])
    assert one.exit_code == 0 and "quarterdeck" in one.output and "guide-hpa" not in one.output


def test_simulate_refuses_bad_input_with_a_clear_error(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["scaler", "simulate", "--trace", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "no trace file" in missing.output
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,duration_s\n1,-5\n")
    refused = runner.invoke(app, ["scaler", "simulate", "--trace", str(bad)])
    assert refused.exit_code == 1 and "bad.csv" in refused.output
    policy = runner.invoke(app, ["scaler", "simulate", "-p", "magic"])
    assert policy.exit_code == 1 and "unknown policy 'magic'" in policy.output
    limits = runner.invoke(
        app, ["scaler", "simulate", "--min-replicas", "9", "--max-replicas", "2"]
    )
    assert limits.exit_code == 1


def test_simulate_takes_a_sample_name_and_fits_80_columns() -> None:
    runner = CliRunner()
    shown = runner.invoke(
        app,
        [
            "scaler",
            "simulate",
            "--trace",
            "coding-agent-day",
            "-p",
            "quarterdeck",
            "-p",
            "guide-hpa",
        ],
        env={"COLUMNS": "80"},
    )
    assert shown.exit_code == 0, shown.output
    assert "coding-agent-day" in shown.output
    table = [line for line in shown.output.splitlines() if line.startswith(("┃", "│"))]
    assert table and all(len(line) <= 80 for line in table)
    assert "…" not in shown.output  # no header or value cut short
    assert "quarterdeck" in table[0] and "guide-hpa" in table[0]
    assert any(line.startswith("goal met: ") for line in shown.output.splitlines())
    unknown = runner.invoke(app, ["scaler", "simulate", "--trace", "no-such-day"])
    assert unknown.exit_code == 1 and "overload-day" in unknown.output
