"""Blue-green on the rollout's Kubernetes side (rollouts/kube.py), through the official client
against the fake API server: green at full size from the preview on, every step and the switch
only ingress weights, blue untouched until the soak is over (so a rollback is instant), then
blue rolled to the new image and green removed. And a canary's rollback during its soak, which
puts the stable Deployment's old image back."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from quarterdeck.exceptions import RolloutError
from quarterdeck.rollouts.kube import PREVIOUS_IMAGE
from quarterdeck.rollouts.spec import RolloutSpec, Step
from quarterdeck.rollouts.traffic import CANARY_WEIGHT_ANNOTATION
from tests.integration import test_rollouts_kube as kube_tests
from tests.integration.test_rollouts_kube import (
    API,
    CANARY,
    ING,
    NEW,
    NS,
    OLD,
    SPEC,
    SVC,
    actuator,
    ingress,
    obj,
)
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.fake_kubernetes_apps import DEPLOYMENTS, INGRESSES, SERVICES

k8s = kube_tests.k8s  # the same objects on the shared fake API server (tests/conftest.py)

BLUE_GREEN = RolloutSpec(
    target=API, image=NEW, strategy="blue-green", steps=(Step(0, None), Step(100, 60.0))
)


def image_of(k8s: FakeKubernetes, name: str) -> str:
    return str(obj(k8s, DEPLOYMENTS, name)["spec"]["template"]["spec"]["containers"][0]["image"])


def weight_of(k8s: FakeKubernetes) -> str:
    return str(obj(k8s, INGRESSES, CANARY)["metadata"]["annotations"][CANARY_WEIGHT_ANNOTATION])


def rolls_out_later(k8s: FakeKubernetes) -> threading.Timer:
    """The Deployment controller finishing the stable's rolling update a little later."""
    timer = threading.Timer(
        0.3, lambda: k8s.set_status(NS, API, updatedReplicas=3, readyReplicas=3)
    )
    timer.start()
    return timer


def test_a_preview_step_is_blue_green_only() -> None:
    BLUE_GREEN.validate()
    with pytest.raises(ValueError, match=r"steps\[0\].weight must be in 1..100"):
        RolloutSpec(target=API, image=NEW, steps=(Step(0, None), Step(100, 60.0))).validate()


async def test_blue_green_needs_an_nginx_ingress(k8s: FakeKubernetes) -> None:
    k8s.add_object(INGRESSES, NS, ingress(ING, SVC, cls="traefik"))  # not a router we drive
    with pytest.raises(RolloutError, match="needs an nginx Ingress"):
        await actuator(k8s, BLUE_GREEN)
    with pytest.raises(RolloutError, match="needs an nginx Ingress"):
        await actuator(k8s, RolloutSpec(target=API, image=NEW, strategy="blue-green",
                                        traffic="replicas"))  # fmt: skip


async def test_blue_green_preview_switch_instant_rollback(k8s: FakeKubernetes) -> None:
    t = await actuator(k8s, BLUE_GREEN)
    assert t.mode == "nginx"
    await t.prepare(BLUE_GREEN)
    described = await t.set_weight(BLUE_GREEN, 0)  # the preview: full size, no user traffic
    assert obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 3 and weight_of(k8s) == "0"
    assert "0 %" in described
    assert obj(k8s, SERVICES, CANARY)["spec"]["selector"]["rollouts.quarterdeck.dev/version"] == (
        "canary"
    )  # the preview Service reaches green
    await t.set_weight(BLUE_GREEN, 100)
    await t.promote_fully(BLUE_GREEN)  # the switch
    assert weight_of(k8s) == "100" and obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 3
    assert image_of(k8s, API) == OLD, "blue is kept as it is for the soak"

    k8s.requests.clear()
    await t.rollback(BLUE_GREEN)  # a failure during the soak
    assert weight_of(k8s) == "0" and obj(k8s, DEPLOYMENTS, CANARY)["spec"]["replicas"] == 0
    assert image_of(k8s, API) == OLD
    assert all(r.path != f"/apis/apps/v1/namespaces/{NS}/deployments/{API}"
               for r in k8s.requests if r.method != "GET"), "blue never written"  # fmt: skip


async def test_blue_green_after_the_soak_blue_gets_the_image_then_green_goes(
    k8s: FakeKubernetes,
) -> None:
    t = await actuator(k8s, BLUE_GREEN)
    await t.prepare(BLUE_GREEN)
    await t.set_weight(BLUE_GREEN, 100)
    await t.promote_fully(BLUE_GREEN)
    k8s.requests.clear()
    timer = rolls_out_later(k8s)
    try:
        await t.cleanup(BLUE_GREEN)
    finally:
        timer.cancel()
    assert image_of(k8s, API) == NEW
    writes = [(r.method, r.path.rsplit("/", 2)[-2:][1]) for r in k8s.requests if r.method != "GET"]
    # blue first (while green still serves everything), then traffic back, then green removed
    assert writes[0] == ("PATCH", API) and writes[1] == ("PATCH", CANARY)
    for kind in (DEPLOYMENTS, SERVICES, INGRESSES):
        assert k8s.get_object(kind, NS, CANARY) is None


async def test_a_canary_rolled_back_during_its_soak_gets_its_old_image_back(
    k8s: FakeKubernetes,
) -> None:
    t = await actuator(k8s, SPEC)
    await t.prepare(SPEC)
    await t.set_weight(SPEC, 50)
    timer = rolls_out_later(k8s)
    try:
        await t.promote_fully(SPEC)
    finally:
        timer.cancel()
    stable = obj(k8s, DEPLOYMENTS, API)
    assert image_of(k8s, API) == NEW and stable["metadata"]["annotations"][PREVIOUS_IMAGE] == OLD
    await t.rollback(SPEC)
    assert image_of(k8s, API) == OLD
    assert PREVIOUS_IMAGE not in (obj(k8s, DEPLOYMENTS, API)["metadata"].get("annotations") or {})
    await t.rollback(SPEC)  # again: nothing more to restore
    assert image_of(k8s, API) == OLD


async def test_a_completed_canary_forgets_the_previous_image(k8s: FakeKubernetes) -> None:
    t = await actuator(k8s, SPEC)
    await t.prepare(SPEC)
    timer = rolls_out_later(k8s)
    try:
        await t.promote_fully(SPEC)
    finally:
        timer.cancel()
    await t.cleanup(SPEC)
    annotations: dict[str, Any] = obj(k8s, DEPLOYMENTS, API)["metadata"].get("annotations") or {}
    assert PREVIOUS_IMAGE not in annotations and image_of(k8s, API) == NEW
