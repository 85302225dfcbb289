"""SLO rule generation: the committed rules match slo.yaml, and the generated alerts follow the
multi-window, multi-burn-rate scheme (windows, factors, traffic guard, labels, annotations).

Behaviour of the generated rules on data (firing, quiet night, zero traffic) is proven by
``promtool test rules`` in tests/integration/test_deploy_monitoring.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from quarterdeck import metrics
from quarterdeck.monitoring.cli import app
from quarterdeck.monitoring.slo import (
    SLODefinitionError,
    dump_rules,
    load_slo_file,
    render_slo_rules,
)

ROOT = Path(__file__).resolve().parents[2]
SLO_FILE = ROOT / "deploy" / "monitoring" / "slo.yaml"
RULES_FILE = ROOT / "deploy" / "monitoring" / "rules" / "slo_rules.yml"


@pytest.fixture
def definition() -> dict[str, Any]:
    return load_slo_file(SLO_FILE)


def _alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def _records(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in rules["groups"] for r in g["rules"] if "record" in r]


def test_committed_rules_file_is_what_the_generator_produces(definition: dict[str, Any]) -> None:
    regenerated = dump_rules(render_slo_rules(definition))
    assert RULES_FILE.read_text() == regenerated, (
        "deploy/monitoring/rules/slo_rules.yml is stale: run `quarterdeck monitoring slo-rules "
        "deploy/monitoring/slo.yaml --output deploy/monitoring/rules/slo_rules.yml`"
    )


def test_generation_is_deterministic(definition: dict[str, Any]) -> None:
    first = dump_rules(render_slo_rules(copy.deepcopy(definition)))
    assert first == dump_rules(render_slo_rules(copy.deepcopy(definition)))
    assert yaml.safe_load(first) == render_slo_rules(definition)


def test_page_and_ticket_use_the_workbook_windows_and_factors(definition: dict[str, Any]) -> None:
    rules = render_slo_rules(definition)
    by_slo: dict[str, dict[str, str]] = {}
    for alert in _alerts(rules):
        by_slo.setdefault(alert["labels"]["slo"], {})[alert["labels"]["severity"]] = alert["expr"]
    assert set(by_slo) == {"availability", "latency"}

    avail = by_slo["availability"]  # objective 0.999: budget 0.001
    page, ticket = avail["critical"], avail["warning"]
    assert "slo:sli_error:ratio_rate1h" in page and "slo:sli_error:ratio_rate5m" in page
    assert "slo:sli_error:ratio_rate6h" in page and "slo:sli_error:ratio_rate30m" in page
    assert "> 0.0144" in page and "> 0.006" in page  # 14.4 x 0.001 and 6 x 0.001
    assert "slo:sli_error:ratio_rate3d" in ticket and "slo:sli_error:ratio_rate6h" in ticket
    assert "> 0.001" in ticket and "ratio_rate1h" not in ticket

    latency = by_slo["latency"]  # objective 0.99: budget 0.01
    assert "> 0.144" in latency["critical"] and "> 0.06" in latency["critical"]
    assert "> 0.01" in latency["warning"]


def test_every_condition_has_the_minimum_traffic_guard(definition: dict[str, Any]) -> None:
    for alert in _alerts(render_slo_rules(definition)):
        clauses = alert["expr"].split("\nor\n")
        for clause in clauses:
            assert "slo:sli_events:rate" in clause and "* 3600 >= 12" in clause, clause


def test_recording_rules_cover_every_window_for_every_slo(definition: dict[str, Any]) -> None:
    records = _records(render_slo_rules(definition))
    names = {(r["record"], r["labels"]["slo"]) for r in records}
    for slo in ("availability", "latency"):
        for window in ("5m", "30m", "1h", "6h", "3d"):
            assert (f"slo:sli_error:ratio_rate{window}", slo) in names
            assert (f"slo:sli_events:rate{window}", slo) in names
        assert ("slo:objective:ratio", slo) in names
        assert ("slo:error_budget:ratio", slo) in names


def test_alerts_follow_monitoring_mixin_conventions(definition: dict[str, Any]) -> None:
    for alert in _alerts(render_slo_rules(definition)):
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert {"summary", "description", "runbook_url"} <= set(alert["annotations"])
        assert alert["annotations"]["runbook_url"].startswith("https://")


def test_latency_threshold_is_a_bucket_bound_of_the_duration_histogram(
    definition: dict[str, Any],
) -> None:
    """A threshold between buckets would silently round to the next bound."""
    buckets = set(metrics.REQUEST_DURATION._upper_bounds)
    for slo in definition["slos"]:
        sli = slo["sli"]
        if "histogram" in sli:
            assert sli["histogram"] == "claude_agent_request_duration_seconds"
            assert float(sli["threshold_seconds"]) in buckets


def test_latency_sli_matches_both_bucket_label_spellings(definition: dict[str, Any]) -> None:
    rules = render_slo_rules(definition)
    latency = next(r for r in _records(rules) if r["labels"]["slo"] == "latency")
    assert 'le=~"30(\\\\.0)?"' in latency["expr"]


def test_custom_windows_override_the_defaults(definition: dict[str, Any]) -> None:
    definition["windows"] = [{"long": "2h", "short": "10m", "factor": 10, "severity": "critical"}]
    rules = render_slo_rules(definition)
    alerts = _alerts(rules)
    assert {a["labels"]["severity"] for a in alerts} == {"critical"}
    assert all("ratio_rate2h" in a["expr"] and "ratio_rate10m" in a["expr"] for a in alerts)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["slos"][0].update(objective=1.0), "objective"),
        (lambda d: d["slos"][0].update(objective="99.9"), "objective"),
        (lambda d: d["slos"].append(dict(d["slos"][0])), "defined twice"),
        (lambda d: d["slos"][0].update(sli={"errors": "x"}), "sli"),
        (
            lambda d: d["slos"][0].update(sli={"errors": "not a selector!", "total": "y"}),
            "selector",
        ),
        (lambda d: d["slos"][1]["sli"].update(threshold_seconds=0), "threshold_seconds"),
        (lambda d: d.update(service="Has Spaces"), "service"),
        (lambda d: d.update(slos=[]), "slos"),
        (lambda d: d.update(min_events_per_hour=-1), "min_events_per_hour"),
        (lambda d: d.update(period="a month"), "duration"),
        (
            lambda d: d.update(
                windows=[{"long": "5m", "short": "1h", "factor": 1, "severity": "x"}]
            ),
            "shorter",
        ),
    ],
)
def test_bad_definitions_are_rejected_with_the_key_named(
    definition: dict[str, Any], mutate: Any, message: str
) -> None:
    mutate(definition)
    with pytest.raises(SLODefinitionError, match=message):
        render_slo_rules(definition)


def test_load_rejects_a_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "slo.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(SLODefinitionError, match="mapping"):
        load_slo_file(bad)


def test_cli_writes_the_rules_and_check_detects_staleness(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "rules" / "slo_rules.yml"
    result = runner.invoke(app, ["slo-rules", str(SLO_FILE), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == RULES_FILE.read_text()

    ok = runner.invoke(app, ["slo-rules", str(SLO_FILE), "--output", str(out), "--check"])
    assert ok.exit_code == 0, ok.output
    out.write_text(out.read_text() + "# hand edit\n")
    stale = runner.invoke(app, ["slo-rules", str(SLO_FILE), "--output", str(out), "--check"])
    assert stale.exit_code == 1


def test_cli_prints_to_stdout_and_reports_bad_files(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["slo-rules", str(SLO_FILE)])
    assert printed.exit_code == 0
    assert printed.stdout == RULES_FILE.read_text()

    bad = tmp_path / "slo.yaml"
    bad.write_text("service: quarterdeck\nslos: []\n")
    failed = runner.invoke(app, ["slo-rules", str(bad)])
    assert failed.exit_code == 2
