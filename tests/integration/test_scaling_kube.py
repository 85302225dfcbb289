"""The scaler's Kubernetes side (scaling/kube.py) through the official client, against the fake API
server: the scale subresource, the refusal when an HPA owns the Deployment, pod-deletion-cost."""

from __future__ import annotations

import pytest

from quarterdeck.exceptions import ScalingConflict, ScalingError
from quarterdeck.scaling.kube import (
    DELETION_COST,
    INT32_MAX,
    KubernetesScaleTarget,
    ReplicaState,
    deletion_cost,
    kubernetes_scale_target,
)
from tests.support.fake_kubernetes import FakeKubernetes

NS, WORKER = "qd", "claude-agent-worker"
LABELS = {"app": "claude-agent", "tier": "worker"}
SCALE = f"/apis/apps/v1/namespaces/{NS}/deployments/{WORKER}/scale"


@pytest.fixture
def k8s(fake_k8s: FakeKubernetes) -> FakeKubernetes:
    fake_k8s.reset()
    fake_k8s.add_deployment(NS, WORKER, 3, LABELS)
    return fake_k8s


def target(k8s: FakeKubernetes, deployment: str = WORKER) -> KubernetesScaleTarget:
    return kubernetes_scale_target(k8s.base_url, NS, deployment)


def cost_of(k8s: FakeKubernetes, pod: str) -> str | None:
    annotations: dict[str, str] = k8s.pods[(NS, pod)]["metadata"].get("annotations", {})
    return annotations.get(DELETION_COST)


async def test_reads_and_writes_through_the_scale_subresource(k8s: FakeKubernetes):
    t = target(k8s)
    assert t.name == f"{NS}/{WORKER}"
    assert await t.read() == ReplicaState(replicas=3, ready=0)
    k8s.set_ready(NS, WORKER, 2)
    assert await t.read() == ReplicaState(replicas=3, ready=2)
    k8s.requests.clear()
    await t.write(7)
    assert k8s.replicas_of(NS, WORKER) == 7
    (write,) = [r for r in k8s.requests if r.method != "GET"]
    assert (write.method, write.path, write.json) == ("PATCH", SCALE, {"spec": {"replicas": 7}})
    assert "merge-patch+json" in write.headers["content-type"]
    assert (await t.read()).replicas == 7
    reads = [r.path for r in k8s.requests if r.method == "GET"]
    assert SCALE in reads and f"/apis/apps/v1/namespaces/{NS}/deployments/{WORKER}/status" in reads


async def test_the_fake_rejects_negative_replicas_and_the_error_carries_the_reason(
    k8s: FakeKubernetes,
):
    with pytest.raises(ScalingError, match=r"422 Invalid.*greater than or equal to 0") as info:
        await target(k8s).write(-1)
    assert info.value.status == 502
    assert k8s.replicas_of(NS, WORKER) == 3


def test_the_fake_takes_json_patch_and_put_with_optimistic_concurrency(k8s: FakeKubernetes):
    """What other writers (``kubectl scale``, an HPA) send reaches the same state."""
    from kubernetes.client import ApiException

    apps = target(k8s).apps
    ops = [{"op": "test", "path": "/spec/replicas", "value": 3}]
    apps.patch_namespaced_deployment_scale(
        WORKER, NS, [*ops, {"op": "replace", "path": "/spec/replicas", "value": 5}]
    )
    assert k8s.requests[-1].headers["content-type"] == "application/json-patch+json"
    assert k8s.replicas_of(NS, WORKER) == 5
    scale = apps.read_namespaced_deployment_scale(WORKER, NS)
    assert scale.status.selector == "app=claude-agent,tier=worker"
    assert scale.status.replicas == 5
    stale = scale.metadata.resource_version
    scale.spec.replicas = 6
    apps.replace_namespaced_deployment_scale(WORKER, NS, scale)
    assert k8s.replicas_of(NS, WORKER) == 6
    scale.metadata.resource_version = stale
    with pytest.raises(ApiException) as info:
        apps.replace_namespaced_deployment_scale(WORKER, NS, scale)
    assert info.value.status == 409
    assert k8s.replicas_of(NS, WORKER) == 6


async def test_an_hpa_on_the_deployment_makes_the_scaler_refuse(k8s: FakeKubernetes):
    t = target(k8s)
    await t.check_owner()  # no HPA at all
    k8s.add_hpa(NS, "other-hpa", "Deployment", "claude-agent-api")
    k8s.add_hpa(NS, "not-a-deployment", "StatefulSet", WORKER)
    await t.check_owner()  # HPAs on something else do not refuse
    k8s.add_hpa(NS, "keda-hpa-claude-agent-worker", "Deployment", WORKER)
    with pytest.raises(ScalingConflict, match="keda-hpa-claude-agent-worker") as info:
        await t.check_owner()
    assert info.value.status == 409
    assert info.value.extra == {"hpa": ["keda-hpa-claude-agent-worker"]}
    hpa_lists = [r for r in k8s.requests if r.path.endswith("/horizontalpodautoscalers")]
    assert hpa_lists and hpa_lists[-1].path.startswith("/apis/autoscaling/v2/namespaces/qd/")


async def test_mark_busy_ranks_idle_pods_first_and_patches_only_changes(k8s: FakeKubernetes):
    for pod in ("w-a", "w-b", "w-c"):
        k8s.add_pod(NS, pod, LABELS)
    k8s.add_pod(NS, "api-1", {"app": "claude-agent", "tier": "api"})
    t = target(k8s)
    assert await t.mark_busy({"w-a": 3, "w-c": 1}) == 3
    assert cost_of(k8s, "w-a") == str(deletion_cost(3))
    assert cost_of(k8s, "w-c") == str(deletion_cost(1))
    assert cost_of(k8s, "w-b") == "0", "an idle pod is the first to go"
    assert int(cost_of(k8s, "w-a") or 0) > int(cost_of(k8s, "w-c") or 0) > 0
    assert cost_of(k8s, "api-1") is None, "pods outside the Deployment's selector are untouched"
    lists = [r for r in k8s.requests if r.path == f"/api/v1/namespaces/{NS}/pods"]
    assert lists, "pods are listed by the scale's selector"

    k8s.requests.clear()
    assert await t.mark_busy({"w-a": 3, "w-c": 0}) == 1, "only w-c changed"
    patches = [r for r in k8s.requests if r.method == "PATCH"]
    assert [r.path.rsplit("/", 1)[1] for r in patches] == ["w-c"]
    assert patches[0].json == {"metadata": {"annotations": {DELETION_COST: "0"}}}
    assert cost_of(k8s, "w-c") == "0"


async def test_mark_busy_skips_a_pod_that_vanished_meanwhile(k8s: FakeKubernetes):
    for pod in ("w-a", "w-b"):
        k8s.add_pod(NS, pod, LABELS)
    t = target(k8s)
    original = t.core.patch_namespaced_pod

    def vanishing(name, namespace, body, **kw):  # w-a is deleted between the list and its patch
        if name == "w-a":
            k8s.remove_pod(NS, "w-a")
        return original(name, namespace, body, **kw)

    t.core.patch_namespaced_pod = vanishing  # type: ignore[method-assign]
    assert await t.mark_busy({"w-a": 2, "w-b": 1}) == 1
    assert cost_of(k8s, "w-b") == str(deletion_cost(1))
    assert (NS, "w-a") not in k8s.pods
    assert any(r.method == "PATCH" and r.path.endswith("/pods/w-a") for r in k8s.requests)


def test_deletion_cost_is_zero_when_idle_grows_with_runs_and_fits_int32():
    assert deletion_cost(0) == deletion_cost(-1) == 0
    assert 0 < deletion_cost(1) < deletion_cost(2)
    assert deletion_cost(10**12) == INT32_MAX


async def test_api_errors_become_scaling_errors(k8s: FakeKubernetes):
    missing = target(k8s, "no-such-deployment")
    for call in (missing.read(), missing.write(2), missing.mark_busy({})):
        with pytest.raises(
            ScalingError, match=r'404 NotFound: deployments.apps "no-such-deployment"'
        ):
            await call
    gone = kubernetes_scale_target("http://127.0.0.1:1", NS, WORKER)  # nothing listens there
    gone.apps.api_client.configuration.retries = 0
    with pytest.raises(ScalingError, match="Deployment qd/claude-agent-worker failed") as info:
        await gone.read()
    assert info.value.__cause__ is not None
