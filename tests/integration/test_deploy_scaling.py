"""The worker autoscalers in deploy/kubernetes match the scaler's code, and only one writes.

Rendered with the real ``kubectl kustomize`` (production with each scaling component, and with
the scaler and the Lease together), validated with the ``kubernetes-validate`` schemas where the
kind is built in, and checked against the code:

* exactly one autoscaler writes the worker Deployment's replicas in every combination (the
  fallback HPA, the scaler through the scale subresource, KEDA, or the HPA on the scaler's
  metric), combining two is refused by kustomize, and no manifest pins ``replicas``;
* the scaler's Role grants exactly the calls ``scaling/kube.py`` makes (derived from its source
  and the official client), to the API pods only; the workers never get a token;
* KEDA's ScaledObject uses the fields KEDA documents, on a metric the scaler exports, with the
  scaler's bounds, no stabilization of its own and a fallback that holds;
* the fallback HPA carries the corrections (no memory, in-flight runs at the scaler's target
  utilisation of worker_concurrency, scale-up at once, 300 s down), from a metric that exists;
* scale-down is safe: the worker's grace period covers the drain, under cluster-autoscaler's cap.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from quarterdeck.config import Settings, env_names, load_settings
from quarterdeck.kit.durations import parse_duration
from quarterdeck.scaling import kube
from tests.integration.test_deploy_kubernetes import (
    API,
    K8S_VERSION,
    KUBE,
    WORKER,
    container_of,
    env_of,
    find,
    kubectl,
    registry_series,
    render,
)

COMPONENTS = {
    "scaler": "components/scaler",
    "keda": "components/keda",
    "scaler-hpa": "components/scaler-hpa",
    "lease": "components/kubernetes-lease",
}
COMBOS = [
    "overlays/production",
    "overlays/dev",
    "production+scaler",
    "production+keda",
    "production+scaler-hpa",
    "production+scaler+lease",
    "production+keda+lease",
]
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("keda.sh/v1alpha1", "ScaledObject")}
DESIRED = "claude_agent_scaler_desired_replicas"
IN_FLIGHT = "claude_agent_runs_in_flight"
# keda.sh/v1alpha1 ScaledObject spec fields, from KEDA's ScaledObject specification (2.17).
KEDA_SPEC = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
CLUSTER_AUTOSCALER_GRACE_CAP_S = 600  # max-graceful-termination-sec's default


def compose(directory: Path, name: str) -> Path:
    """A throwaway kustomization: ``production+a+b`` is the production overlay with a and b."""
    base, *extras = name.split("+")
    target = directory / name
    target.mkdir(parents=True, exist_ok=True)
    overlay = os.path.relpath(KUBE / "overlays" / base, target)  # kustomize: no absolute paths
    components = [os.path.relpath(KUBE / COMPONENTS[c], target) for c in extras]
    (target / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{overlay}]\ncomponents: [{', '.join(components)}]\n"
    )
    return target


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kustomize-scaling")


def bundle(name: str, tmp_root: Path) -> list[dict[str, Any]]:
    return render(name if "+" not in name else compose(tmp_root, name))


def api_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    if not any(d["kind"] == "Deployment" and d["metadata"]["name"] == API for d in docs):
        return {}
    return {k: v.get("value", "") for k, v in env_of(container_of(docs, API)).items()}


def targets_worker(doc: dict[str, Any]) -> bool:
    ref = doc["spec"]["scaleTargetRef"]
    return bool(ref.get("kind", "Deployment") == "Deployment" and ref["name"] == WORKER)


def writers(docs: list[dict[str, Any]]) -> list[str]:
    """Everything that writes the worker Deployment's replica count."""
    found = [
        f"{d['kind']}/{d['metadata']['name']}"
        for d in docs
        if d["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"} and targets_worker(d)
    ]
    if api_env(docs).get("QUARTERDECK_SCALER_MODE") == "kubernetes":
        found.append("scaler")
    return found


def configmap_settings(docs: list[dict[str, Any]]) -> dict[str, Any]:
    text = find(docs, "ConfigMap", "claude-agent-config")["data"]["quarterdeck.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def setting(docs: list[dict[str, Any]], name: str, env: dict[str, str]) -> Any:
    """A setting's value as a pod sees it: its environment, else the ConfigMap, else the default."""
    var = env_names()[name]
    if var in env:
        return env[var]
    return configmap_settings(docs).get(name, Settings.model_fields[name].default)


def adapter_rules() -> dict[str, Any]:
    adapter = find(render("prometheus-adapter"), "ConfigMap", "adapter-config")
    rules: dict[str, Any] = yaml.safe_load(adapter["data"]["config.yaml"])
    return rules


def series_of(rule: dict[str, Any]) -> str:
    match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"])
    assert match, rule["seriesQuery"]
    return match.group(1)


def exported(name: str) -> None:
    """``name`` is a series the code exports. The scaler's gauges export only while its leader
    has set them, so they are set here for the look and put back as they were."""
    from quarterdeck.scaling import gauges

    saved = gauges.DESIRED.value
    gauges.DESIRED.set(5)
    try:
        assert name in registry_series(), f"{name} is not exported by the code"
    finally:
        gauges.DESIRED.value = saved


# ------------------------------------------------------------------ rendering and schemas
@pytest.mark.parametrize("name", COMBOS)
def test_every_combination_renders_valid_kubernetes(name: str, tmp_root: Path) -> None:
    docs = bundle(name, tmp_root)
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")


# ------------------------------------------------------------------ one writer, always
@pytest.mark.parametrize(
    ("name", "expected", "mode"),
    [
        ("overlays/production", ["HorizontalPodAutoscaler/claude-agent-hpa"], None),
        ("production+scaler", ["scaler"], "kubernetes"),
        ("production+scaler+lease", ["scaler"], "kubernetes"),
        ("production+keda", ["ScaledObject/claude-agent-worker"], "metric"),
        ("production+keda+lease", ["ScaledObject/claude-agent-worker"], "metric"),
        ("production+scaler-hpa", ["HorizontalPodAutoscaler/claude-agent-scaler-hpa"], "metric"),
    ],
)
def test_exactly_one_autoscaler_writes_the_worker_replicas(
    name: str, expected: list[str], mode: str | None, tmp_root: Path
) -> None:
    docs = bundle(name, tmp_root)
    assert writers(docs) == expected
    assert api_env(docs).get("QUARTERDECK_SCALER_MODE") == mode
    assert "replicas" not in find(docs, "Deployment", WORKER)["spec"], "an apply would reset it"
    consumers = [
        d
        for d in docs
        if d["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"} and DESIRED in yaml.dump(d)
    ]
    # metric mode: the scaler only exports; exactly one thing acts on the number.
    assert len(consumers) == (1 if mode == "metric" else 0)


def test_dev_has_no_autoscaler_and_one_pod() -> None:
    docs = render("overlays/dev")
    assert writers(docs) == []
    assert find(docs, "Deployment", WORKER)["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    "name", ["production+scaler+keda", "production+keda+scaler-hpa", "production+scaler+scaler-hpa"]
)
def test_two_autoscalers_cannot_be_combined(name: str, tmp_root: Path) -> None:
    result = subprocess.run(
        [kubectl(), "kustomize", str(compose(tmp_root, name))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, "both delete the fallback HPA: kustomize must refuse"
    assert "claude-agent-hpa" in result.stderr


# ------------------------------------------------------------------ the scaler's RBAC
def client_calls() -> set[tuple[str, str]]:
    """(API attribute, method) of every client call in scaling/kube.py."""
    source = inspect.getsource(kube)
    calls = set(re.findall(r"self\.(apps|autoscaling|core)\.(\w+)\(", source))
    assert calls, "no client call found: the pattern no longer matches kube.py"
    return calls


def rbac_of(api: str, method: str) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) the API server checks for a client method, from its source."""
    from kubernetes import client

    cls = {
        "apps": client.AppsV1Api,
        "autoscaling": client.AutoscalingV2Api,
        "core": client.CoreV1Api,
    }[api]
    parts = [getattr(cls, f"_{method}_serialize", None), getattr(cls, f"{method}_with_http_info")]
    source = "".join(inspect.getsource(p) for p in parts if p is not None)
    path = re.search(r"'(/apis?/[^']+)'", source)
    http = re.search(r"'(GET|PUT|PATCH|POST|DELETE)'", source)
    assert path and http, method
    segments = path.group(1).strip("/").split("/")
    group, rest = ("", segments[2:]) if segments[0] == "api" else (segments[1], segments[3:])
    assert rest[:2] == ["namespaces", "{namespace}"], path.group(1)
    resource = rest[2] + (f"/{rest[4]}" if len(rest) > 4 else "")
    named = len(rest) > 3
    verb = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}.get(
        http.group(1), "get" if named else "list"
    )
    return group, resource, verb


def grants(role: dict[str, Any]) -> dict[tuple[str, str, str], tuple[str, ...]]:
    return {
        (g, r, v): tuple(rule.get("resourceNames", ()))
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


@pytest.mark.parametrize("name", ["production+scaler", "production+scaler+lease"])
def test_the_scaler_role_grants_exactly_the_calls_the_code_makes(name: str, tmp_root: Path) -> None:
    docs = bundle(name, tmp_root)
    granted = grants(find(docs, "Role", "claude-agent-scaler"))
    assert set(granted) == {rbac_of(api, method) for api, method in client_calls()}
    deployment = api_env(docs)["QUARTERDECK_SCALER_DEPLOYMENT"]
    assert deployment == WORKER
    for (group, resource, _verb), names in granted.items():
        if group == "apps":  # the one Deployment, by name
            assert names == (deployment,), resource
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


@pytest.mark.parametrize("name", ["production+scaler", "production+scaler+lease"])
def test_only_the_api_pods_get_the_scalers_token(name: str, tmp_root: Path) -> None:
    docs = bundle(name, tmp_root)
    api_pod = find(docs, "Deployment", API)["spec"]["template"]["spec"]
    worker_pod = find(docs, "Deployment", WORKER)["spec"]["template"]["spec"]
    assert api_pod["serviceAccountName"] == "claude-agent-scaler"
    assert api_pod["automountServiceAccountToken"] is True
    assert worker_pod["serviceAccountName"] == "claude-agent"
    lease = "lease" in name  # the Lease component mounts a token in every pod, by design
    assert worker_pod["automountServiceAccountToken"] is lease
    account = find(docs, "ServiceAccount", "claude-agent-scaler")
    assert account["automountServiceAccountToken"] is False, "mounted only where a pod asks"
    subjects = {
        (b["roleRef"]["name"], s["name"])
        for b in docs
        if b["kind"] == "RoleBinding"
        for s in b["subjects"]
    }
    # The scaler's Role, and the base Role (the leader Leases) for the same account.
    assert ("claude-agent-scaler", "claude-agent") not in subjects, "never the workers' account"
    assert ("claude-agent-scaler", "claude-agent-scaler") in subjects
    assert ("claude-agent", "claude-agent-scaler") in subjects
    policy = find(docs, "NetworkPolicy", "claude-agent-scaler-kubernetes-api")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app": "claude-agent", "tier": "api"}
    assert {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]} == {443, 6443}
    cidrs = [peer["ipBlock"]["cidr"] for r in policy["spec"]["egress"] for peer in r["to"]]
    assert cidrs == ["192.0.2.10/32"], "a documentation address the operator must replace"


# ------------------------------------------------------------------ settings the pods read
@pytest.mark.parametrize("name", ["production+scaler", "production+keda", "production+scaler-hpa"])
def test_the_scaler_settings_are_valid_and_match_the_autoscalers_bounds(
    name: str, tmp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = bundle(name, tmp_root)
    env = api_env(docs)
    readable = set(env_names().values())
    for var in env:
        assert var in readable, f"{var} is not read by Settings"
    for var in readable | {"QUARTERDECK_CONFIG"}:
        monkeypatch.delenv(var, raising=False)
    for var in ("QUARTERDECK_SCALER_MODE", "QUARTERDECK_SCALER_DEPLOYMENT"):
        monkeypatch.setenv(var, env[var])
    monkeypatch.setenv("QUARTERDECK_SCALER_MIN_REPLICAS", env["QUARTERDECK_SCALER_MIN_REPLICAS"])
    monkeypatch.setenv("QUARTERDECK_SCALER_MAX_REPLICAS", env["QUARTERDECK_SCALER_MAX_REPLICAS"])
    settings = load_settings(None)
    assert settings.scaler_mode == env["QUARTERDECK_SCALER_MODE"]
    bounds = (settings.scaler_min_replicas, settings.scaler_max_replicas)
    others = [d for d in docs if d["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}]
    for doc in others:
        spec = doc["spec"]
        low = spec.get("minReplicas", spec.get("minReplicaCount"))
        high = spec.get("maxReplicas", spec.get("maxReplicaCount"))
        assert (low, high) == bounds, doc["metadata"]["name"]
    # Switching from the fallback HPA to a scaler keeps the same capacity bounds.
    fallback = find(render("overlays/production"), "HorizontalPodAutoscaler", "claude-agent-hpa")
    assert (fallback["spec"]["minReplicas"], fallback["spec"]["maxReplicas"]) == bounds


# ------------------------------------------------------------------ KEDA
def test_the_keda_scaledobject_follows_the_scalers_metric(tmp_root: Path) -> None:
    docs = bundle("production+keda", tmp_root)
    scaled = find(docs, "ScaledObject", "claude-agent-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= KEDA_SPEC, set(spec) - KEDA_SPEC
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": WORKER}
    assert spec["minReplicaCount"] >= 1, "never scale the workers to zero"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue", "fallback needs it"
    meta = trigger["metadata"]
    assert set(meta) <= {
        "serverAddress",
        "query",
        "threshold",
        "activationThreshold",
        "ignoreNullValues",
        "namespace",
        "customHeaders",
        "queryParameters",
        "unsafeSsl",
    }
    assert re.fullmatch(rf"max\({DESIRED}\)", meta["query"]), meta["query"]
    assert float(meta["threshold"]) == 1.0, "AverageValue 1: desired replicas = the value"
    assert meta["serverAddress"].startswith("http")
    assert meta["ignoreNullValues"] == "false", "a vanished series must trip the fallback"
    exported(DESIRED)
    fallback = spec["fallback"]
    assert fallback["failureThreshold"] >= 1 and fallback["replicas"] >= spec["minReplicaCount"]
    assert fallback["behavior"] in {"currentReplicas", "currentReplicasIfHigher"}, "hold"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 0, "the scaler stabilizes"
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"], "KEDA makes its own"


# ------------------------------------------------------------------ HPA on the scaler's metric
def test_the_scaler_hpa_reads_the_external_metric_the_adapter_serves(tmp_root: Path) -> None:
    docs = bundle("production+scaler-hpa", tmp_root)
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == DESIRED
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 0
    rules = adapter_rules()
    values = yaml.safe_load((KUBE / "prometheus-adapter" / "values.yaml").read_text())
    assert values["rules"]["external"] == rules["externalRules"], "Helm values and ConfigMap"
    assert values["rules"]["custom"] == rules["rules"], "Helm values and ConfigMap"
    (rule,) = [r for r in rules["externalRules"] if r["name"]["as"] == DESIRED]
    assert re.fullmatch(rule["name"]["matches"], series_of(rule))
    assert set(rule["resources"]["overrides"]) == {"namespace"}, "external metrics are namespaced"
    assert rule["metricsQuery"].startswith("max("), "the leader's one value"
    exported(series_of(rule))


# ------------------------------------------------------------------ the corrected fallback HPA
def test_the_fallback_hpa_scales_on_runs_in_flight_with_the_guides_mistakes_fixed() -> None:
    docs = render("overlays/production")
    hpa = find(docs, "HorizontalPodAutoscaler", "claude-agent-hpa")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert resources == ["cpu"], "memory dropped: it never falls and pins replicas"
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] == IN_FLIGHT
    assert pods["target"]["type"] == "AverageValue"
    # Knative-style in-flight targeting at the scaler's target utilisation of the concurrency.
    concurrency = int(setting(docs, "worker_concurrency", {}))
    utilization = Settings.model_fields["scaler_target_utilization"].default
    assert int(pods["target"]["averageValue"]) == round(utilization * concurrency) == 16
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0, "the guide's 300 s delayed"
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    (rule,) = [r for r in adapter_rules()["rules"] if r["name"]["as"] == IN_FLIGHT]
    assert series_of(rule) == "claude_agent_active_count"
    exported(series_of(rule))
    assert rule["metricsQuery"].startswith("sum(") and "rate(" not in rule["metricsQuery"]


# ------------------------------------------------------------------ safe scale-down
@pytest.mark.parametrize("name", COMBOS)
def test_the_worker_grace_period_covers_the_drain(name: str, tmp_root: Path) -> None:
    docs = bundle(name, tmp_root)
    env = {k: v.get("value", "") for k, v in env_of(container_of(docs, WORKER)).items()}
    raw = setting(docs, "drain_timeout", env)
    drain = parse_duration(raw) if isinstance(raw, str) else float(raw)
    grace = find(docs, "Deployment", WORKER)["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace >= drain + 10, (grace, drain)
    assert grace <= CLUSTER_AUTOSCALER_GRACE_CAP_S, "cluster-autoscaler would cut the drain"


def test_the_readme_documents_scaling() -> None:
    text = (KUBE / "README.md").read_text()
    section = text[text.index("## Scaling the workers") :]
    for needed in (
        "pod-deletion-cost",
        "max-graceful-termination-sec",
        "components/scaler",
        "components/keda",
        "components/scaler-hpa",
        "QUARTERDECK_SCALER_MODE",
        DESIRED,
        IN_FLIGHT,
    ):
        assert needed in section, needed
    assert kube.DELETION_COST == "controller.kubernetes.io/pod-deletion-cost"
