"""The monitoring bundle in deploy/monitoring is valid for the real tools and matches the code.

Uses Debian's ``promtool`` and ``amtool`` (packages ``prometheus`` and
``prometheus-alertmanager``; ``make test`` installs them). Proves:

* every rule file loads (``promtool check rules``) and every rule's unit tests pass
  (``promtool test rules``), and every alert has both a firing and a not-firing test case;
* ``prometheus.yml`` is a valid config whose rule files exist (``promtool check config``);
* ``alertmanager.yml`` is valid (``amtool check-config``) and routes critical alerts to PagerDuty,
  warnings to Slack and everything to Quarterdeck's webhook (``amtool config routes test``);
* every alert carries the monitoring-mixin labels/annotations and has a runbook section;
* every metric named by an alert or a dashboard panel exists in Quarterdeck's registry or is a
  recording rule, and every dashboard expression parses as PromQL (promtool);
* dashboards use the datasource template variable, never a hard-coded UID.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import quarterdeck.runtime  # noqa: F401  (registers every metric a server process exports)
from quarterdeck.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
RULE_FILES = sorted((MON / "rules").glob("*.yml"))
TEST_FILES = sorted((MON / "tests").glob("*.yml"))
DASHBOARDS = sorted((MON / "grafana" / "dashboards").glob("*.json"))

# Metrics alerts may use that Quarterdeck does not export: Prometheus's own and cAdvisor's.
EXTERNAL_METRICS = {"up", "container_memory_working_set_bytes", "container_spec_memory_limit_bytes"}
PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "le",
}


def tool(name: str) -> str:
    """Path of a required CLI; fail (not skip) so CI cannot pass without really checking."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed. `make test` installs it (Debian packages prometheus and "
            f"prometheus-alertmanager: apt-get install -y prometheus prometheus-alertmanager)."
        )
    return path


def run(*args: str, cwd: Path = MON) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def exported_metric_names() -> set[str]:
    """Every series name the registry can expose, including histogram/counter suffixes."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
        names |= {sample.name for sample in family.samples}
    return names


def load_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def recording_rule_names() -> set[str]:
    return {r["record"] for r in load_rules() if "record" in r}


def metric_names_in(expr: str) -> set[str]:
    """Series names a PromQL expression selects (identifiers not used as functions/keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables outside selectors
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def dashboard_targets() -> list[tuple[str, str, str]]:
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((path.name, panel["title"], target["expr"]))
    return found


# --------------------------------------------------------------------------- promtool: rules
def test_promtool_check_rules_accepts_every_rule_file() -> None:
    result = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(test_file: Path) -> None:
    result = run(tool("promtool"), "test", "rules", str(test_file.relative_to(MON)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in load_rules() if "alert" in r}
    assert alerts, "no alert rules found"
    assert alerts - firing == set(), "alerts without a firing test case"
    assert alerts - silent == set(), "alerts without a not-firing test case"


def test_the_guides_five_alerts_are_present() -> None:
    alerts = {r["alert"] for r in load_rules() if "alert" in r}
    assert {
        "HighErrorRate",
        "HighLatency",
        "HighAPIUsage",
        "AgentDown",
        "HighMemoryUsage",
    } <= alerts
    assert {
        "CircuitBreakerOpen",
        "QueueBacklogGrowing",
        "TenantBudgetNearlyExhausted",
        "IncidentOpenTooLong",
        "AuditChainVerificationFailed",
        "AvailabilityErrorBudgetBurn",
        "LatencyErrorBudgetBurn",
    } <= alerts


def test_alerts_follow_monitoring_mixin_conventions_and_have_runbooks() -> None:
    runbooks = (MON / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^## (.+)$", runbooks, flags=re.M)
    }
    for rule in load_rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        anchor = annotations["runbook_url"].rsplit("#", 1)[-1]
        assert anchor in anchors, f"{name}: runbooks.md has no section #{anchor}"


def test_alert_metrics_exist_in_the_registry_or_recording_rules() -> None:
    known = exported_metric_names() | recording_rule_names() | EXTERNAL_METRICS
    for rule in load_rules():
        missing = metric_names_in(rule["expr"]) - known
        assert not missing, f"{rule.get('alert') or rule.get('record')}: unknown {missing}"


def test_metric_name_extraction_sees_through_promql_syntax() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, agent_type) (rate(a_bucket{le="1",x=~"$v"}[5m])))'
        ' / on (slo) b:rec * 3600 > 1 and absent(up{job="x"} == 1)'
    )
    assert metric_names_in(expr) == {"a_bucket", "b:rec", "up"}


# ---------------------------------------------------------------------- promtool: config
def test_promtool_check_config_accepts_prometheus_yml(tmp_path: Path) -> None:
    """Debian builds Prometheus without Kubernetes SD, so its promtool rejects
    kubernetes_sd_configs. In that case check a copy whose SD blocks are swapped for file_sd
    (everything else, including relabelling and rule files, is checked as written) and check the
    SD blocks' fields against upstream's schema here."""
    promtool = tool("promtool")
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    assert {j["job_name"] for j in config["scrape_configs"]} >= {
        "claude-agents",
        "redis-exporter",
        "postgres-exporter",
        "kubernetes-nodes",
    }
    result = run(promtool, "check", "config", "prometheus.yml")
    if (
        result.returncode != 0
        and "kubernetes_sd_configs not found" in result.stdout + result.stderr
    ):
        for job in config["scrape_configs"]:
            for sd in job.pop("kubernetes_sd_configs", []):
                assert set(sd) <= {
                    "role",
                    "namespaces",
                    "selectors",
                    "api_server",
                    "attach_metadata",
                }
                assert sd["role"] in {
                    "node",
                    "pod",
                    "service",
                    "endpoints",
                    "endpointslice",
                    "ingress",
                }
                job["file_sd_configs"] = [{"files": ["targets.json"]}]
        shutil.copytree(MON / "rules", tmp_path / "rules")
        (tmp_path / "targets.json").write_text("[]")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        result = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # rule_files are checked too: every rule file is loaded by the config.
    assert {str(Path(p)) for p in config["rule_files"]} == {
        str(p.relative_to(MON)) for p in RULE_FILES
    }


def test_quarterdeck_job_scrapes_each_pod_on_the_metrics_port() -> None:
    config = yaml.safe_load((MON / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "claude-agents")
    assert job["metrics_path"] == "/metrics"
    assert "static_configs" not in job, "a static Service target mixes replicas' counters"
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "claude-agent-service;metrics"
    targets = {
        t
        for j in config["scrape_configs"]
        for s in j.get("static_configs", [])
        for t in s["targets"]
    }
    assert {"redis-exporter:9121", "postgres-exporter:9187"} <= targets
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]


# --------------------------------------------------------------------------- alertmanager
def test_amtool_check_config_accepts_alertmanager_yml() -> None:
    result = run(tool("amtool"), "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            ["severity=critical", "alertname=AgentDown"],
            {"quarterdeck-webhook", "pagerduty-critical"},
        ),
        (["severity=warning", "alertname=HighLatency"], {"quarterdeck-webhook", "slack-warnings"}),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receivers: set[str]) -> None:
    result = run(
        tool("amtool"), "config", "routes", "test", "--config.file=alertmanager.yml", *labels
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(result.stdout.strip().split(",")) == receivers


def test_alertmanager_webhook_points_at_quarterdeck() -> None:
    config = yaml.safe_load((MON / "alertmanager.yml").read_text())
    hooks = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert any(u.endswith(":8080/v1/alerts/alertmanager") for u in hooks), hooks


# ------------------------------------------------------------------------------ grafana
def test_dashboards_cover_the_four_areas() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {
        "Quarterdeck / Fleet overview",
        "Quarterdeck / Cost and tokens",
        "Quarterdeck / Reliability",
        "Quarterdeck / Quality",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_template_variables_and_no_hard_coded_datasource(path: Path) -> None:
    doc = json.loads(path.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "agent_type"} <= set(variables)
    uids = re.findall(r'"uid":\s*"([^"]*)"', path.read_text())
    assert set(uids) == {"${datasource}", doc["uid"]}, "hard-coded datasource UID"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert any(p.get("targets") for p in doc["panels"])


def test_dashboard_metrics_exist_in_the_registry_or_recording_rules() -> None:
    known = exported_metric_names() | recording_rule_names() | {"up"}
    targets = dashboard_targets()
    assert len(targets) > 20
    for dashboard, panel, expr in targets:
        missing = metric_names_in(expr) - known
        assert not missing, f"{dashboard} / {panel}: unknown metrics {missing} in {expr}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """promtool parses every panel query (Grafana variables replaced by sample values)."""
    substitutions = {
        "$__rate_interval": "1m",
        "$__range": "6h",
        "$__interval": "1m",
        "$namespace": ".*",
        "$agent_type": ".*",
    }
    rules = []
    for i, (_, _, expr) in enumerate(dashboard_targets()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = run(tool("promtool"), "check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_files_are_valid() -> None:
    prov = MON / "grafana" / "provisioning"
    dashboards = yaml.safe_load((prov / "dashboards" / "quarterdeck.yaml").read_text())
    provider = dashboards["providers"][0]
    assert dashboards["apiVersion"] == 1 and provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    sources = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
