"""``export_argo``: Argo Rollouts manifests that Argo's own CRD schemas accept, and that say what
our spec says (issue 20).

The schemas are Argo's, vendored (tests/data/argo/PROVENANCE.md). Kubernetes prunes unknown
fields rather than rejecting them and JSON Schema allows them by default, so each object schema
with ``properties`` is closed here first: a misspelt field must fail the test, as it fails
``kubectl apply --validate=strict``. The PromQL is checked with ``promtool`` (the real parser and
engine) where it is installed.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.rollouts.analysis import wilson_lower_bound
from quarterdeck.rollouts.argo import export_argo, to_yaml
from quarterdeck.rollouts.conditions import evaluate
from quarterdeck.rollouts.queries import POD_VERSION_LABEL
from quarterdeck.rollouts.spec import Analysis, MetricCheck, RolloutSpec, Step, parse_steps

DATA = Path(__file__).resolve().parents[1] / "data" / "argo"
TARGET = "claude-agent-api"

Doc = dict[str, Any]


def _close(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {key: _close(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_close(item) for item in schema]
    return schema


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    name = {"Rollout": "rollout", "AnalysisTemplate": "analysistemplate"}[kind]
    schema = _close(json.loads((DATA / f"{name}.openapi.json").read_text()))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _errors(doc: Doc) -> list[str]:
    found = _validator(doc["kind"]).iter_errors(doc)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def _guide() -> RolloutSpec:
    return RolloutSpec(target=TARGET, image="ghcr.io/x/quarterdeck:2.0.0")


def _blue_green() -> RolloutSpec:
    return RolloutSpec(target=TARGET, image="ghcr.io/x/quarterdeck:2.0.0", strategy="blue-green")


def _manual_with_check() -> RolloutSpec:
    check = MetricCheck(
        name="Tool errors / run",
        query='sum(rate(tool_errors_total{version="{{version}}"}[5m]))',
        success="result < 0.05",
        failure="result >= 0.1 or isNaN(result)",
    )
    return RolloutSpec(
        target=TARGET,
        image="ghcr.io/x/quarterdeck:2.0.0",
        steps=parse_steps("10,50,100", "manual,2m"),
        analysis=Analysis(interval_s=30, max_error_rate=0.02, max_extensions=2, checks=(check,)),
    )


def _replicas() -> RolloutSpec:
    return RolloutSpec(target=TARGET, image="ghcr.io/x/quarterdeck:2.0.0", traffic="replicas")


SPECS = {
    "guide": _guide,
    "blue-green": _blue_green,
    "manual-check": _manual_with_check,
    "replicas": _replicas,
}


def _export(spec: RolloutSpec, **kwargs: Any) -> tuple[Doc, dict[str, Doc]]:
    docs = export_argo(spec, **kwargs)
    rollout, *templates = docs
    assert rollout["kind"] == "Rollout"
    by_name = {t["metadata"]["name"]: t for t in templates}
    assert len(by_name) == len(templates), "template names must be unique"
    return rollout, by_name


def _metric(template: Doc, name: str) -> Doc:
    found: list[Doc] = [m for m in template["spec"]["metrics"] if m["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _refs(rollout: Doc) -> list[Doc]:
    """Every analysis reference in the Rollout: ``(templates, args)`` blocks."""
    strategy = rollout["spec"]["strategy"]
    if "blueGreen" in strategy:
        return [strategy["blueGreen"]["prePromotionAnalysis"]]
    canary = strategy["canary"]
    return [canary["analysis"], *(s["analysis"] for s in canary["steps"] if "analysis" in s)]


# --- Argo's schemas accept what we write -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_document_validates_against_argos_crd_schema(name: str) -> None:
    docs = export_argo(SPECS[name]())
    assert docs[0]["kind"] == "Rollout"
    assert {d["kind"] for d in docs[1:]} == {"AnalysisTemplate"}
    for doc in docs:
        assert doc["apiVersion"] == "argoproj.io/v1alpha1"
        assert _errors(doc) == [], doc["metadata"]["name"]


def test_the_closed_schemas_reject_a_misspelt_field_and_a_wrong_type() -> None:
    rollout, templates = _export(_guide())
    bad = copy.deepcopy(rollout)
    nginx = bad["spec"]["strategy"]["canary"]["trafficRouting"]["nginx"]
    nginx["stableIngres"] = nginx.pop("stableIngress")
    assert any("stableIngres" in e for e in _errors(bad))
    bad = copy.deepcopy(rollout)
    bad["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "5"
    assert any("setWeight" in e for e in _errors(bad))
    template = copy.deepcopy(next(iter(templates.values())))
    template["spec"]["metrics"][0]["provider"]["prometheus"]["qurey"] = "up"
    assert any("qurey" in e for e in _errors(template))
    del template["spec"]["metrics"][0]["provider"]["prometheus"]["qurey"]
    del template["spec"]["metrics"][0]["name"]  # required by the schema
    assert any("'name' is a required property" in e for e in _errors(template))


def test_every_referenced_template_is_exported_and_gets_its_required_args() -> None:
    for make in SPECS.values():
        rollout, templates = _export(make())
        referenced = set()
        for ref in _refs(rollout):
            passed = {a["name"] for a in ref.get("args", [])}
            for item in ref["templates"]:
                template = templates[item["templateName"]]
                referenced.add(item["templateName"])
                required = {a["name"] for a in template["spec"]["args"] if "value" not in a}
                assert required <= passed, (item["templateName"], required - passed)
        assert referenced == set(templates), "every exported template is used"


def test_yaml_round_trips_with_kind_first() -> None:
    docs = export_argo(_manual_with_check())
    text = to_yaml(docs)
    assert list(yaml.safe_load_all(text)) == docs
    assert text.startswith("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\n")
    assert text.count("\n---\n") == len(docs) - 1


# --- the plan maps exactly --------------------------------------------------------------------


def test_guide_steps_map_to_set_weight_pause_and_analysis() -> None:
    rollout, _ = _export(_guide())
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    weights = [s["setWeight"] for s in steps if "setWeight" in s]
    pauses = [s["pause"] for s in steps if "pause" in s]
    assert weights == [5, 20, 50, 80, 100]
    assert pauses == [{"duration": "300s"}] + [{"duration": "180s"}] * 4
    kinds = [next(iter(s)) for s in steps]
    assert kinds == ["setWeight", "pause", "analysis"] * 5
    gates = [s["analysis"]["templates"][0]["templateName"] for s in steps if "analysis" in s]
    assert gates == [f"{TARGET}-gate-300s"] + [f"{TARGET}-gate-180s"] * 4
    weight_args = [
        s["analysis"].get("args", []) for s in steps if "analysis" in s
    ]  # throughput per unit of weight, skipped at 100 %
    assert weight_args == [
        [{"name": "canary-weight", "value": str(w)}] for w in (5, 20, 50, 80)
    ] + [[]]


def test_workload_ref_adopts_the_existing_deployment() -> None:
    rollout, _ = _export(_guide(), namespace="team-a", replicas=4)
    spec = rollout["spec"]
    assert spec["workloadRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": TARGET,
        "scaleDown": "onsuccess",
    }
    assert "template" not in spec and "selector" not in spec  # Argo forbids both with a ref
    assert spec["replicas"] == 4
    assert rollout["metadata"]["namespace"] == "team-a"


def test_nginx_routing_names_the_services_and_ingress_and_labels_versions() -> None:
    rollout, _ = _export(
        _guide(), stable_service="api", canary_service="api-next", ingress="api-public"
    )
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["trafficRouting"] == {"nginx": {"stableIngress": "api-public"}}
    assert (canary["stableService"], canary["canaryService"]) == ("api", "api-next")
    assert canary["scaleDownDelaySeconds"] == 600  # stable_soak_s
    # The per-version queries select on this pod label (relabelled by the ServiceMonitor).
    assert canary["canaryMetadata"] == {"labels": {POD_VERSION_LABEL: "canary"}}
    assert canary["stableMetadata"] == {"labels": {POD_VERSION_LABEL: "stable"}}


def test_replica_traffic_has_no_router_and_says_what_weight_it_really_gives() -> None:
    rollout, _ = _export(_replicas(), replicas=3)
    canary = rollout["spec"]["strategy"]["canary"]
    assert "trafficRouting" not in canary
    assert "scaleDownDelaySeconds" not in canary  # Argo allows it only with traffic routing
    note = rollout["metadata"]["annotations"]["quarterdeck.dev/traffic"]
    assert note.startswith("replica ratio")
    assert "5% -> 1/3 pods" in note and "80% -> 2/3 pods" in note
    # Throughput is normalised by the real share of pods, not the asked weight.
    args = [s["analysis"].get("args") for s in canary["steps"] if "analysis" in s]
    assert args[0] == [{"name": "canary-weight", "value": "33.33"}]
    assert args[3] == [{"name": "canary-weight", "value": "66.67"}]


def test_manual_pause_and_window_after_it() -> None:
    rollout, templates = _export(_manual_with_check())
    steps = rollout["spec"]["strategy"]["canary"]["steps"]
    assert steps[:3] == [
        {"setWeight": 10},
        {"pause": {}},
        {
            "analysis": {
                "templates": [
                    {"templateName": f"{TARGET}-gate-30s"},
                    {"templateName": f"{TARGET}-throughput"},
                ],
                "args": [{"name": "canary-weight", "value": "10"}],
            }
        },
    ]
    assert steps[4] == {"pause": {"duration": "120s"}}
    # After a manual pause the samples are counted over one interval (30 s).
    samples = _metric(templates[f"{TARGET}-gate-30s"], "samples")
    assert "[30s]" in samples["provider"]["prometheus"]["query"]


# --- thresholds and Argo's limits --------------------------------------------------------------


def test_guard_fails_fast_on_the_thresholds_with_argos_failure_limit() -> None:
    rollout, templates = _export(_guide())
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["analysis"] == {"templates": [{"templateName": f"{TARGET}-guard"}]}
    guard = templates[f"{TARGET}-guard"]
    errors = _metric(guard, "error-rate-bound")
    assert errors["failureCondition"] == "result > 0.01"  # 1 % -> 0.01, failed when over
    assert "successCondition" not in errors  # no data must not fail it
    assert errors["failureLimit"] == 0  # Argo: Failed when failed > failureLimit
    assert errors["interval"] == "60s" and "count" not in errors  # runs until the end
    latency = _metric(guard, "latency-p95-breach")
    assert latency["failureCondition"] == "result > 5"
    assert evaluate(errors["failureCondition"], 0.0101) is True
    assert evaluate(errors["failureCondition"], 0.01) is False
    assert evaluate(errors["failureCondition"], float("nan")) is False


def test_gate_extends_then_goes_inconclusive_never_failed_by_a_shortfall() -> None:
    spec = _guide()
    _, templates = _export(spec)
    gate = templates[f"{TARGET}-gate-300s"]
    samples = _metric(gate, "samples")
    assert samples["successCondition"] == "result >= 300"  # rule of three at 1 %
    assert samples["count"] == spec.analysis.max_extensions + 1 == 4
    assert samples["inconclusiveLimit"] == spec.analysis.max_extensions
    assert samples["consecutiveSuccessLimit"] == 1
    assert "[300s]" in samples["provider"]["prometheus"]["query"]
    failure = samples["failureCondition"]
    for value in (0.0, 299.0, 1e9, float("nan")):  # a shortfall is never a failure
        assert evaluate(failure, value) is False
    assert evaluate(samples["successCondition"], 299.0) is False
    assert evaluate(samples["successCondition"], 300.0) is True
    error_rate = _metric(gate, "error-rate")
    assert error_rate["successCondition"] == "result <= 0.01"
    assert evaluate(error_rate["successCondition"], float("nan")) is False  # no data: not a pass


def test_min_samples_and_custom_error_rate_flow_into_conditions() -> None:
    spec = RolloutSpec(
        target=TARGET,
        image="i:2",
        analysis=Analysis(max_error_rate=0.005, min_samples=1000, max_latency_p95_s=2.5),
    )
    _, templates = _export(spec)
    guard = templates[f"{TARGET}-guard"]
    assert _metric(guard, "error-rate-bound")["failureCondition"] == "result > 0.005"
    assert _metric(guard, "latency-p95-breach")["failureCondition"] == "result > 2.5"
    gate = templates[f"{TARGET}-gate-300s"]
    assert _metric(gate, "samples")["successCondition"] == "result >= 1000"


def test_user_check_conditions_are_copied_as_written() -> None:
    spec = _manual_with_check()
    _, templates = _export(spec)
    check = spec.analysis.checks[0]
    for name, template in templates.items():
        if "-gate-" not in name:
            continue
        metric = _metric(template, "check-tool-errors-run")
        assert metric["successCondition"] == check.success
        assert metric["failureCondition"] == check.failure
        assert metric["inconclusiveLimit"] == 2 and metric["count"] == 3
        query = metric["provider"]["prometheus"]["query"]
        assert query == 'scalar(sum(rate(tool_errors_total{version="canary"}[5m])))'
    guard = _metric(templates[f"{TARGET}-guard"], "check-tool-errors-run-failure")
    assert guard["failureCondition"] == check.failure and "successCondition" not in guard


def test_blue_green_maps_services_soak_promotion_and_pre_promotion_analysis() -> None:
    rollout, templates = _export(_blue_green(), stable_service="api", canary_service="api-preview")
    blue_green = rollout["spec"]["strategy"]["blueGreen"]
    assert blue_green["activeService"] == "api"
    assert blue_green["previewService"] == "api-preview"
    assert blue_green["autoPromotionEnabled"] is True
    assert blue_green["scaleDownDelaySeconds"] == 600
    assert blue_green["previewMetadata"] == {"labels": {POD_VERSION_LABEL: "canary"}}
    (ref,) = blue_green["prePromotionAnalysis"]["templates"]
    preview = templates[ref["templateName"]]
    names = [m["name"] for m in preview["spec"]["metrics"]]
    assert names[:3] == ["samples", "error-rate", "latency-p95"]
    assert {"error-rate-bound", "latency-p95-breach"} <= set(names)
    # Pre-promotion analysis must end: every metric is bounded by count.
    assert all(m["count"] == 4 for m in preview["spec"]["metrics"])
    manual = RolloutSpec(
        target=TARGET, image="i:2", strategy="blue-green", steps=(Step(100, None),)
    )
    rollout, _ = _export(manual)
    assert rollout["spec"]["strategy"]["blueGreen"]["autoPromotionEnabled"] is False


def test_address_is_an_argument_with_a_default() -> None:
    _, templates = _export(_guide(), prometheus="http://prom.example:9090")
    for template in templates.values():
        args = template["spec"]["args"]
        assert {"name": "prometheus-address", "value": "http://prom.example:9090"} in args
        for metric in template["spec"]["metrics"]:
            assert metric["provider"]["prometheus"]["address"] == "{{args.prometheus-address}}"


def test_duplicate_check_names_get_distinct_metric_names() -> None:
    checks = tuple(MetricCheck("p99!", "sum(x)", success="result < 1") for _ in range(2))
    spec = RolloutSpec(target=TARGET, image="i:2", analysis=Analysis(checks=checks))
    _, templates = _export(spec)
    names = [m["name"] for m in templates[f"{TARGET}-gate-300s"]["spec"]["metrics"]]
    assert names[-2:] == ["check-p99", "check-p99-2"]


def test_an_invalid_spec_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="last step"):
        export_argo(RolloutSpec(target=TARGET, image="i:2", steps=(Step(50, 60.0),)))


# --- the PromQL runs in Prometheus's own engine -------------------------------------------------

PROMTOOL = shutil.which("promtool")


def _series(version: str, status: str) -> str:
    return (
        f'claude_agent_requests_total{{job="claude-agents",version="{version}",status="{status}"}}'
    )


def _queries(docs: list[Doc]) -> list[str]:
    out = []
    for doc in docs[1:]:
        for metric in doc["spec"]["metrics"]:
            out.append(
                metric["provider"]["prometheus"]["query"].replace("{{args.canary-weight}}", "20")
            )
    return out


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_promql_parses_and_computes_what_the_controller_computes(tmp_path: Path) -> None:
    docs = export_argo(_manual_with_check())
    _, templates = _export(_guide())
    guard = templates[f"{TARGET}-guard"]
    wilson = _metric(guard, "error-rate-bound")["provider"]["prometheus"]["query"]
    latency = _metric(guard, "latency-p95-breach")["provider"]["prometheus"]["query"]
    throughput = _metric(templates[f"{TARGET}-throughput"], "throughput-per-weight")
    ratio = throughput["provider"]["prometheus"]["query"].replace("{{args.canary-weight}}", "20")
    # Per 15 s: canary 1 error + 9 successes, stable 40 successes; 60 s windows hold 4 steps.
    series = [
        {
            "series": _series("canary", "error"),
            "values": "0+1x40",
        },
        {
            "series": _series("canary", "success"),
            "values": "0+9x40",
        },
        {
            "series": _series("stable", "success"),
            "values": "0+40x40",
        },
    ]
    # canary 40/60 s at 20 %, stable 160/60 s at 80 %: (40/0.2) / (160/0.8) = 1.0
    cases = [
        (f"vector({wilson})", wilson_lower_bound(4, 40)),
        (f"vector({ratio})", 1.0),
        # No latency series and < 20 requests: NaN, which fails nothing.
        (f"vector({latency}) != bool vector({latency})", 1.0),
    ]
    tests = [
        {"expr": expr, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": value}]}
        for expr, value in cases
    ]
    # Every exported query must at least parse and evaluate.
    tests += [
        {
            "expr": f"count(vector({q}))",
            "eval_time": "5m",
            "exp_samples": [{"labels": "{}", "value": 1}],
        }
        for q in _queries(docs)
    ]
    spec: Doc = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": tests}],
    }
    # Too little canary traffic (4 requests a minute, under 20): throughput is NaN, not judged.
    quiet = [
        {**series[0], "values": "0x40"},
        {**series[1], "values": "0+1x40"},
        series[2],
    ]
    spec["tests"].append(
        {
            "interval": "15s",
            "input_series": quiet,
            "promql_expr_test": [
                {
                    "expr": f"vector({ratio}) != bool vector({ratio})",
                    "eval_time": "5m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                }
            ],
        }
    )
    path = tmp_path / "argo_promql_test.yml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
