"""The monitoring bundle in deploy/monitoring is valid for the real tools and matches the code.

Uses Debian's ``promtool`` and ``amtool`` (packages ``prometheus`` and
``prometheus-alertmanager``; ``make test`` installs them). Proves:

* every rule file loads (``promtool check rules``) and every rule's unit tests pass
  (``promtool test rules``), and every alert has both a firing and a not-firing test case;
* ``prometheus.yml`` is a valid config whose rule files exist (``promtool check config``);
* ``alertmanager.yml`` is valid (``amtool check-config``) and gives every alert ONE path
  (``amtool config routes test``, issue 15): Quarterdeck's receiver, whose own notifier then pages
  PagerDuty for critical and posts warnings to Slack, or, for the alerts meaning Quarterdeck
  cannot receive (``notify: direct``), PagerDuty/Slack directly and not Quarterdeck; so every
  shipped critical alert reaches PagerDuty exactly once and every warning Slack exactly once;
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
    """Every series name the registry can expose, including histogram/counter suffixes, and
    the names of collectors that export only at times (the scaler's leader-only gauges)."""
    names: set[str] = set()
    for registered in REGISTRY._collector_to_names.values():
        names |= set(registered)
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
    # The headless metrics Service: API and worker pods alike (the API Service has no metrics).
    assert keep["action"] == "keep" and keep["regex"] == "claude-agent-metrics;metrics"
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


QUARTERDECK_RECEIVER = "/v1/alerts/alertmanager"
DIRECT_ALERTS = {"AgentDown", "QuarterdeckAPIDown", "QuarterdeckDatabaseDown"}
"""What means Quarterdeck cannot take the path: its API is down (no receiver) or its database is
(it can neither record an incident nor send one: the outbox is in Postgres)."""


def routed_receivers(labels: dict[str, str]) -> list[str]:
    """The receivers Alertmanager would notify for an alert with ``labels`` (amtool)."""
    result = run(
        tool("amtool"),
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        *(f"{k}={v}" for k, v in sorted(labels.items())),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def quarterdeck_channels(labels: dict[str, str]) -> set[str]:
    """Where Quarterdeck's own notifier sends the incident its receiver opens for the alert:
    the service's severity mapping and the Notifier's routing, with both channels configured."""
    from datetime import UTC, datetime

    from pydantic import SecretStr

    from quarterdeck.incidents.models import Incident, IncidentStatus, Severity, Source
    from quarterdeck.incidents.notify import NotificationSettings, Notifier
    from quarterdeck.incidents.service import ALERT_SEVERITY
    from quarterdeck.store.pool import Database

    settings = NotificationSettings(
        slack_webhook_url=SecretStr("https://hooks.slack.invalid/x"),
        pagerduty_routing_key=SecretStr("routing-key"),
    )
    notifier = Notifier(settings, Database("postgresql://unused/x"))  # routing only: no query
    now = datetime.now(UTC)
    incident = Incident(
        id="inc_test",
        service="claude-agents",
        severity=ALERT_SEVERITY.get(labels.get("severity", "").lower(), Severity.medium),
        title=labels["alertname"],
        description="",
        affected_components=[],
        suggested_actions=[],
        details={},
        status=IncidentStatus.open,
        source=Source.alertmanager,
        dedup_key="alertmanager:x",
        fingerprint="x",
        occurrences=1,
        opened_at=now,
        last_seen_at=now,
        acknowledged_at=None,
        acknowledged_by=None,
        resolved_at=None,
        resolved_by=None,
        resolution_note=None,
        escalated_at=None,
    )
    return {channel for channel, _ in notifier.on_open(incident)}


def paths_to(labels: dict[str, str]) -> dict[str, int]:
    """How many times one firing alert reaches PagerDuty, Slack and Quarterdeck."""
    config = yaml.safe_load((MON / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    count = {"pagerduty": 0, "slack": 0, "quarterdeck": 0}
    for name in routed_receivers(labels):
        receiver = receivers[name]
        count["pagerduty"] += len(receiver.get("pagerduty_configs", []))
        count["slack"] += len(receiver.get("slack_configs", []))
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].endswith(QUARTERDECK_RECEIVER), hook["url"]
            count["quarterdeck"] += 1
            for channel in quarterdeck_channels(labels):
                count[channel] += 1
    return count


def shipped_alerts() -> list[dict[str, str]]:
    return [{"alertname": r["alert"], **r["labels"]} for r in load_rules() if "alert" in r]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        # critical: one page, through Quarterdeck (which also posts it to Slack once)
        (
            {"alertname": "AuditChainVerificationFailed", "severity": "critical"},
            {"pagerduty": 1, "slack": 1, "quarterdeck": 1},
        ),
        # warning: one Slack message, through Quarterdeck; no page
        (
            {"alertname": "HighLatency", "severity": "warning"},
            {"pagerduty": 0, "slack": 1, "quarterdeck": 1},
        ),
        # info: recorded as an incident, nobody notified
        ({"alertname": "X", "severity": "info"}, {"pagerduty": 0, "slack": 0, "quarterdeck": 1}),
        # Quarterdeck down: one page and one Slack message straight from Alertmanager, and not
        # to Quarterdeck (back up, it would page a second time)
        (
            {"alertname": "AgentDown", "severity": "critical", "notify": "direct"},
            {"pagerduty": 1, "slack": 1, "quarterdeck": 0},
        ),
        (
            {"alertname": "QuarterdeckAPIDown", "severity": "critical", "notify": "direct"},
            {"pagerduty": 1, "slack": 1, "quarterdeck": 0},
        ),
        # a direct warning: Slack once, no page
        (
            {"alertname": "X", "severity": "warning", "notify": "direct"},
            {"pagerduty": 0, "slack": 1, "quarterdeck": 0},
        ),
    ],
)
def test_each_severity_reaches_each_channel_by_exactly_one_path(
    labels: dict[str, str], expected: dict[str, int]
) -> None:
    assert len(routed_receivers(labels)) == 1, "one receiver: no `continue` fan-out"
    assert paths_to(labels) == expected


@pytest.mark.parametrize("labels", shipped_alerts(), ids=lambda labels: labels["alertname"])
def test_every_shipped_alert_pages_or_posts_once(labels: dict[str, str]) -> None:
    paths = paths_to(labels)
    severity = labels["severity"]
    assert paths["pagerduty"] == (1 if severity == "critical" else 0), paths
    assert paths["slack"] == (1 if severity in {"critical", "warning"} else 0), paths
    direct = labels.get("notify") == "direct"
    assert paths["quarterdeck"] == (0 if direct else 1), paths


def test_only_alerts_quarterdeck_cannot_receive_bypass_it() -> None:
    direct = {a["alertname"] for a in shipped_alerts() if a.get("notify") == "direct"}
    assert direct == DIRECT_ALERTS
    # The database alert reads a metric every API pod sets on each /ready probe.
    from quarterdeck.metrics import DEPENDENCY_UP

    rule = next(r for r in load_rules() if r.get("alert") == "QuarterdeckDatabaseDown")
    assert "claude_agent_dependency_up" in rule["expr"] and 'dependency="database"' in rule["expr"]
    assert DEPENDENCY_UP._name == "claude_agent_dependency_up"


def test_when_nothing_is_up_one_page_covers_the_parts() -> None:
    """AgentDown, QuarterdeckAPIDown (both direct) and QuarterdeckWorkersDown fire together when
    every pod is down: AgentDown's inhibition keeps that to one page (amtool cannot evaluate
    inhibitions offline, so the rule is checked as data, with Alertmanager's matcher syntax)."""
    config = yaml.safe_load((MON / "alertmanager.yml").read_text())
    parts = {"QuarterdeckAPIDown", "QuarterdeckWorkersDown", "AgentInstanceDown"}
    rule = next(
        r for r in config["inhibit_rules"] if r["source_matchers"] == ['alertname="AgentDown"']
    )
    (target,) = rule["target_matchers"]
    pattern = re.fullmatch(r'alertname=~"(.+)"', target)
    assert pattern is not None
    assert {a for a in parts if re.fullmatch(pattern.group(1), a)} == parts
    rules = {r["alert"]: r for r in load_rules() if "alert" in r}
    assert rules["AgentDown"]["labels"]["job"] == "claude-agents"
    for name in parts - {"AgentInstanceDown"}:  # that one carries its target's job label
        assert rules[name]["labels"]["job"] == "claude-agents", name
    assert rule["equal"] == ["job"]


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
