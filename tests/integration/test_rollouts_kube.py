"""The rollout's Kubernetes side (rollouts/kube.py) through the official client, against the fake
API server: the canary Deployment, the nginx canary Service and Ingress, the replica counts and
weights per step, promotion, rollback, cleanup, mode detection, errors; and the rollouts
component's Role, derived from the calls the code makes."""

from __future__ import annotations

import inspect
import os
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.exceptions import RolloutError
from quarterdeck.rollouts import kube, kube_sync
from quarterdeck.rollouts.actuator import TrafficActuator
from quarterdeck.rollouts.kube import PINNED, KubernetesTraffic, kubernetes_traffic
from quarterdeck.rollouts.spec import RolloutSpec
from quarterdeck.rollouts.traffic import CANARY_ANNOTATION, CANARY_WEIGHT_ANNOTATION
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.fake_kubernetes_apps import DEPLOYMENTS, INGRESSES, SERVICES

NS, API, SVC, ING = "qd", "claude-agent-api", "claude-agent-service", "claude-agent-ingress"
CANARY = f"{API}-canary"
VERSION = "rollouts.quarterdeck.dev/version"
LABELS = {"app": "claude-agent", "tier": "api"}
OLD, NEW = "quarterdeck:1.0", "quarterdeck:1.1"
SPEC = RolloutSpec(target=API, image=NEW)
APPS = f"/apis/apps/v1/namespaces/{NS}/deployments"
ING_PATH = f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses"
SVC_PATH = f"/api/v1/namespaces/{NS}/services"


def ingress(name: str, service: str, cls: str | None = "nginx") -> dict[str, Any]:
    path = {"path": "/", "pathType": "Prefix"}
    backend = {"service": {"name": service, "port": {"number": 8080}}}
    return {
        "metadata": {"name": name, "annotations": {"nginx.ingress.kubernetes.io/limit-rpm": "100"}},
        "spec": {
            **({"ingressClassName": cls} if cls else {}),
            "tls": [{"hosts": ["a.example"], "secretName": "tls"}],
            "rules": [
                {"host": "a.example", "http": {"paths": [{**path, "backend": backend}]}},
                {
                    "host": "other.example",
                    "http": {
                        "paths": [
                            {
                                **path,
                                "backend": {"service": {"name": "other", "port": {"number": 80}}},
                            }
                        ]
                    },
                },
            ],
        },
    }


@pytest.fixture
def k8s(fake_k8s: FakeKubernetes) -> FakeKubernetes:
    fake_k8s.reset()
    fake_k8s.auto_roll = False
    template = {
        "metadata": {"labels": {**LABELS, VERSION: "stable"}},
        "spec": {
            "containers": [
                {"name": "quarterdeck-api", "image": OLD, "args": ["serve"]},
                {"name": "proxy", "image": "envoy:1"},
            ]
        },
    }
    deployment = {
        "metadata": {"name": API, "labels": dict(LABELS), "generation": 1},
        "spec": {"replicas": 3, "selector": {"matchLabels": dict(LABELS)}, "template": template},
        "status": {
            "observedGeneration": 1,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
        },
    }
    fake_k8s.add_object(DEPLOYMENTS, NS, deployment)
    ports = [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    for name, selector in ((SVC, LABELS), ("claude-agent-metrics", {"app": "claude-agent"})):
        fake_k8s.add_object(
            SERVICES,
            NS,
            {"metadata": {"name": name}, "spec": {"selector": dict(selector), "ports": ports}},
        )
    fake_k8s.add_object(INGRESSES, NS, ingress(ING, SVC))
    return fake_k8s


def obj(k8s: FakeKubernetes, kind: str, name: str) -> dict[str, Any]:
    found = k8s.get_object(kind, NS, name)
    assert found is not None, name
    return found


def writes(k8s: FakeKubernetes) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in k8s.requests if r.method != "GET"]


async def actuator(k8s: FakeKubernetes, spec: RolloutSpec = SPEC, **kw: Any) -> KubernetesTraffic:
    traffic = await kubernetes_traffic(k8s.base_url, NS, spec, **kw)
    traffic.poll_s, traffic.promote_timeout_s = 0.02, 2.0
    return traffic


# ------------------------------------------------------------------ mode detection
async def test_auto_is_nginx_when_an_nginx_ingress_routes_to_the_targets_service(
    k8s: FakeKubernetes,
):
    t = await actuator(k8s)
    typed: TrafficActuator = t  # the controller's Protocol (checked by mypy)
    assert typed.mode == "nginx"
    assert (t.mode, t.service, t.ingress) == ("nginx", SVC, ING)
    assert writes(k8s) == [], "detection only reads"


@pytest.mark.parametrize("cls", [None, "traefik"])
async def test_auto_is_replicas_without_an_nginx_ingress(k8s: FakeKubernetes, cls: str | None):
    k8s.add_object(INGRESSES, NS, ingress(ING, SVC, cls))  # replaces the nginx one
    assert (await actuator(k8s)).mode == "replicas"
    with pytest.raises(RolloutError, match="cannot split traffic by nginx"):
        await actuator(k8s, replace(SPEC, traffic="nginx"))


async def test_the_ingress_class_annotation_counts_and_a_named_ingress_is_used(k8s: FakeKubernetes):
    legacy = ingress("legacy", SVC, None)
    legacy["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "nginx"
    k8s.add_object(INGRESSES, NS, legacy)
    assert (await actuator(k8s, ingress="legacy")).ingress == "legacy"
    assert (await actuator(k8s, ingress="missing")).mode == "replicas"
    k8s.add_object(INGRESSES, NS, ingress("elsewhere", "other"))
    assert (await actuator(k8s, ingress="elsewhere")).mode == "replicas", "not the target's"


async def test_explicit_replicas_reads_only_the_target(k8s: FakeKubernetes):
    t = await actuator(k8s, replace(SPEC, traffic="replicas"))
    assert t.mode == "replicas"
    assert [r.path for r in k8s.requests] == [f"{APPS}/{API}"]


# ------------------------------------------------------------------ replicas mode
async def test_replicas_mode_canary_copy_steps_and_rollback(k8s: FakeKubernetes):
    t = await actuator(k8s, replace(SPEC, traffic="replicas"))
    stable_before = obj(k8s, DEPLOYMENTS, API)
    await t.prepare(SPEC)
    canary = obj(k8s, DEPLOYMENTS, CANARY)
    assert canary["spec"]["replicas"] == 0
    assert canary["spec"]["selector"]["matchLabels"] == {**LABELS, VERSION: "canary"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {**LABELS, VERSION: "canary"}
    images = {c["name"]: c["image"] for c in canary["spec"]["template"]["spec"]["containers"]}
    assert images == {"quarterdeck-api": NEW, "proxy": "envoy:1"}, "the first container only"
    assert canary["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve"]
    assert obj(k8s, DEPLOYMENTS, API)["spec"] == stable_before["spec"]
    assert writes(k8s) == [("POST", APPS)], "no Service or Ingress in replicas mode"

    seen = []
    for weight in (5, 20, 50, 80, 100):
        described = await t.set_weight(SPEC, weight)
        seen.append((obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"], described))
    assert [n for n, _ in seen] == [1, 1, 2, 3, 3]
    assert seen[0][1] == "replicas: 1 canary of 4 pods, really 25 % for a 5 % step"
    assert seen[3][1] == "replicas: 3 canary of 6 pods, really 50 % for a 80 % step"
    assert seen[4][1] == "replicas: 3 canary of 3 pods, 100 % as asked"
    assert obj(k8s, DEPLOYMENTS, API)["spec"]["replicas"] == 3, "the stable side stays whole"

    k8s.requests.clear()
    await t.rollback(SPEC)
    assert obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 0
    assert writes(k8s) == [("PATCH", f"{APPS}/{CANARY}")]
    await t.cleanup(SPEC)
    assert k8s.get_object(DEPLOYMENTS, NS, CANARY) is None
    await t.cleanup(SPEC)  # already gone: 404 is fine


async def test_prepare_twice_replaces_the_leftover_canary(k8s: FakeKubernetes):
    t = await actuator(k8s, replace(SPEC, traffic="replicas"))
    await t.prepare(SPEC)
    await t.set_weight(SPEC, 50)
    newer = replace(SPEC, image="quarterdeck:1.2")
    await t.prepare(newer)
    canary = obj(k8s, DEPLOYMENTS, CANARY)
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == "quarterdeck:1.2"
    assert canary["spec"]["replicas"] == 0
    assert ("PUT", f"{APPS}/{CANARY}") in writes(k8s)


# ------------------------------------------------------------------ nginx mode
async def test_nginx_mode_service_ingress_weights_rollback_and_cleanup(k8s: FakeKubernetes):
    t = await actuator(k8s)
    await t.prepare(SPEC)
    service = obj(k8s, SERVICES, CANARY)
    assert service["spec"]["selector"] == {**LABELS, VERSION: "canary"}
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    stable_service = obj(k8s, SERVICES, SVC)
    assert stable_service["spec"]["selector"] == {**LABELS, VERSION: "stable"}, "no canary pods"
    assert stable_service["metadata"]["annotations"][PINNED] == "true"
    ing = obj(k8s, INGRESSES, CANARY)
    assert ing["metadata"]["annotations"] == {
        CANARY_ANNOTATION: "true",
        CANARY_WEIGHT_ANNOTATION: "0",
    }
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]  # the other host's rule goes elsewhere: not copied
    assert rule["host"] == "a.example"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": CANARY,
        "port": {"number": 8080},
    }

    k8s.requests.clear()
    steps = []
    for weight in (5, 50, 100):
        described = await t.set_weight(SPEC, weight)
        annotations = obj(k8s, INGRESSES, CANARY)["metadata"]["annotations"]
        steps.append(
            (
                obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"],
                annotations[CANARY_WEIGHT_ANNOTATION],
                described,
            )
        )
    assert steps[0] == (1, "5", "nginx: canary-weight 5 % of requests (1 canary of 4 pods)")
    assert [s[:2] for s in steps] == [(1, "5"), (2, "50"), (3, "100")]
    assert writes(k8s)[:2] == [("PATCH", f"{APPS}/{CANARY}"), ("PATCH", f"{ING_PATH}/{CANARY}")], (
        "pods, then traffic"
    )

    k8s.requests.clear()
    await t.rollback(SPEC)
    assert writes(k8s) == [("PATCH", f"{ING_PATH}/{CANARY}"), ("PATCH", f"{APPS}/{CANARY}")], (
        "traffic first"
    )
    assert obj(k8s, INGRESSES, CANARY)["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION] == "0"
    assert obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 0

    k8s.requests.clear()
    await t.cleanup(SPEC)
    assert writes(k8s)[:3] == [
        ("DELETE", f"{ING_PATH}/{CANARY}"),
        ("DELETE", f"{SVC_PATH}/{CANARY}"),
        ("DELETE", f"{APPS}/{CANARY}"),
    ]
    for kind in (DEPLOYMENTS, SERVICES, INGRESSES):
        assert k8s.get_object(kind, NS, CANARY) is None
    restored = obj(k8s, SERVICES, SVC)
    assert restored["spec"]["selector"] == LABELS
    assert PINNED not in (restored["metadata"].get("annotations") or {})
    await t.cleanup(SPEC)


# ------------------------------------------------------------------ promotion
async def test_promote_rolls_the_stable_image_then_takes_the_canary_out(k8s: FakeKubernetes):
    t = await actuator(k8s)
    await t.prepare(SPEC)
    await t.set_weight(SPEC, 50)
    k8s.requests.clear()

    def controller() -> None:  # the Deployment controller finishing the rolling update later
        k8s.set_status(NS, API, updatedReplicas=3, readyReplicas=3)

    timer = threading.Timer(0.3, controller)
    timer.start()
    try:
        await t.promote_fully(SPEC)
    finally:
        timer.cancel()
    stable = obj(k8s, DEPLOYMENTS, API)
    images = {c["name"]: c["image"] for c in stable["spec"]["template"]["spec"]["containers"]}
    assert images == {"quarterdeck-api": NEW, "proxy": "envoy:1"}
    assert stable["spec"]["template"]["metadata"]["labels"][VERSION] == "stable"
    assert stable["metadata"]["generation"] == 2
    polls = [r for r in k8s.requests if r.method == "GET" and r.path == f"{APPS}/{API}"]
    assert len(polls) >= 3, "it waited for the rolling update"
    assert writes(k8s) == [
        ("PATCH", f"{APPS}/{API}"),
        ("PATCH", f"{ING_PATH}/{CANARY}"),
        ("PATCH", f"{APPS}/{CANARY}"),
    ]
    assert obj(k8s, INGRESSES, CANARY)["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION] == "0"
    assert obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 0


async def test_promote_times_out_and_leaves_the_canary_serving(k8s: FakeKubernetes):
    t = await actuator(k8s)
    t.promote_timeout_s = 0.2
    await t.prepare(SPEC)
    await t.set_weight(SPEC, 20)
    with pytest.raises(
        RolloutError, match=r"did not roll out quarterdeck:1.1 .*updated 0, ready 3 of 3"
    ):
        await t.promote_fully(SPEC)
    assert obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 1
    assert obj(k8s, INGRESSES, CANARY)["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION] == "20"


# ------------------------------------------------------------------ errors
async def test_errors_become_rollout_errors(k8s: FakeKubernetes):
    with pytest.raises(
        RolloutError, match=r'HTTP 404 NotFound: deployments.apps "nope" not found'
    ) as info:
        await actuator(k8s, replace(SPEC, target="nope"))
    assert info.value.status == 502
    t = await actuator(k8s)
    with pytest.raises(RolloutError, match=r"scale the canary to 1 .*404"):
        await t.set_weight(SPEC, 5)  # never prepared
    with pytest.raises(ValueError, match="weight"):
        await t.set_weight(SPEC, 101)
    labels = obj(k8s, DEPLOYMENTS, API)
    labels["spec"]["template"]["metadata"]["labels"][VERSION] = "canary"
    k8s.add_object(DEPLOYMENTS, NS, labels)
    with pytest.raises(RolloutError, match="selector would match them"):
        await t.prepare(SPEC)
    del labels["spec"]["template"]["metadata"]["labels"][VERSION]
    k8s.add_object(DEPLOYMENTS, NS, labels)
    k8s.requests.clear()
    with pytest.raises(RolloutError, match="lacks the label"):
        await t.prepare(SPEC)  # pinning the stable Service would leave it no endpoint
    assert writes(k8s) == []
    down = FakeKubernetes().start()
    url = down.base_url
    down.stop()
    with pytest.raises(RolloutError, match="read the target"):
        await kubernetes_traffic(url, NS, SPEC)


# ------------------------------------------------------------------ the component's RBAC
def client_calls() -> set[tuple[str, str]]:
    calls: set[tuple[str, str]] = set()
    for module in (kube, kube_sync):  # the actuator and its synchronous base class
        found = re.findall(
            r"\.(apps|core|networking)\.(\w+_namespaced_\w+)\b", inspect.getsource(module)
        )
        assert len(found) > 2, f"the pattern no longer matches {module.__name__}"
        calls |= set(found)
    return calls


def rbac_of(api: str, method: str) -> tuple[str, str, str]:
    from kubernetes import client

    cls = {
        "apps": client.AppsV1Api,
        "core": client.CoreV1Api,
        "networking": client.NetworkingV1Api,
    }[api]
    parts = [getattr(cls, f"_{method}_serialize", None), getattr(cls, f"{method}_with_http_info")]
    source = "".join(inspect.getsource(p) for p in parts if p is not None)
    path = re.search(r"'(/apis?/[^']+)'", source)
    http = re.search(r"'(GET|PUT|PATCH|POST|DELETE)'", source)
    assert path and http, method
    segments = path.group(1).strip("/").split("/")
    group, rest = ("", segments[2:]) if segments[0] == "api" else (segments[1], segments[3:])
    named = len(rest) > 3
    verb = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}.get(
        http.group(1), "get" if named else "list"
    )
    return group, rest[2], verb


ROOT = Path(__file__).parents[2] / "deploy" / "kubernetes"


def rendered(tmp_path: Path, components: list[str]) -> list[dict[str, Any]]:
    from tests.integration.test_deploy_kubernetes import render

    overlay = os.path.relpath(ROOT / "overlays" / "production", tmp_path)
    paths = [os.path.relpath(ROOT / "components" / c, tmp_path) for c in components]
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{overlay}]\ncomponents: [{', '.join(paths)}]\n"
    )
    return render(tmp_path)


@pytest.mark.parametrize(
    "components", [["rollouts"], ["scaler", "rollouts"], ["rollouts", "scaler"]]
)
def test_the_rollouts_role_grants_exactly_the_calls_the_code_makes(
    tmp_path: Path, components: list[str]
) -> None:
    import kubernetes_validate

    from tests.integration.test_deploy_kubernetes import API as API_DEPLOYMENT
    from tests.integration.test_deploy_kubernetes import K8S_VERSION, find

    docs = rendered(tmp_path, components)
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    role = find(docs, "Role", "claude-agent-rollouts")
    granted: dict[tuple[str, str, str], tuple[str, ...]] = {}
    for rule in role["rules"]:
        for key in (
            (g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        ):
            assert key not in granted, f"{key} granted twice"
            granted[key] = tuple(rule.get("resourceNames", ()))
    assert set(granted) == {rbac_of(api, method) for api, method in client_calls()}
    for (group, resource, verb), names in granted.items():
        if verb in {"get", "update", "patch", "delete"}:  # by name wherever the API allows
            assert names, (group, resource, verb)
            assert set(names) <= {API_DEPLOYMENT, f"{API_DEPLOYMENT}-canary", SVC}
    pod = find(docs, "Deployment", API_DEPLOYMENT)["spec"]["template"]["spec"]
    worker = find(docs, "Deployment", "claude-agent-worker")["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert account == f"claude-agent-{components[-1]}", "the component listed last wins"
    assert pod["automountServiceAccountToken"] is True
    assert (worker["serviceAccountName"], worker["automountServiceAccountToken"]) == (
        "claude-agent",
        False,
    )
    bound = {
        (b["roleRef"]["name"], s["name"])
        for b in docs
        if b["kind"] == "RoleBinding"
        for s in b["subjects"]
    }
    expected = {"claude-agent-rollouts", "claude-agent"} | (
        {"claude-agent-scaler"} if "scaler" in components else set()
    )
    assert {role for role, subject in bound if subject == account} == expected, (
        "every Role, either order"
    )
    assert ("claude-agent-rollouts", "claude-agent") not in bound, "never the workers' account"
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    for tier in ("api", "worker"):  # the label the analysis splits series by, on every pod
        labels = find(docs, "Deployment", f"claude-agent-{tier}")["spec"]["template"]["metadata"][
            "labels"
        ]
        assert labels["rollouts.quarterdeck.dev/version"] == "stable"
    relabel = find(docs, "ServiceMonitor", "claude-agent")["spec"]["endpoints"][0]["relabelings"]
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_rollouts_quarterdeck_dev_version"],
        "targetLabel": "version",
    } in relabel
