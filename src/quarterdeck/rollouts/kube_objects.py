"""The objects a rollout writes, as JSON built from the stable ones (pure; see :mod:`.kube`).

Kept apart from the client calls so every selector, label and annotation a rollout sets can be
read (and tested) in one place without a server.
"""

from __future__ import annotations

import copy
from typing import Any

from quarterdeck.exceptions import RolloutError
from quarterdeck.rollouts.queries import POD_VERSION_LABEL
from quarterdeck.rollouts.traffic import nginx_canary_annotations

CLASS_ANNOTATION = "kubernetes.io/ingress.class"


def canary_name(target: str) -> str:
    return f"{target}-canary"


def selects(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    """A Service's equality selector picks a pod with ``labels`` (an empty selector: none)."""
    labels = labels or {}
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def backend_services(ingress: dict[str, Any]) -> set[str]:
    """Every Service an Ingress (as JSON) routes to."""
    spec = ingress.get("spec") or {}
    found = {((spec.get("defaultBackend") or {}).get("service") or {}).get("name")}
    for rule in spec.get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            found.add(((path.get("backend") or {}).get("service") or {}).get("name"))
    return {name for name in found if name}


def is_nginx(ingress: dict[str, Any]) -> bool:
    spec, meta = ingress.get("spec") or {}, ingress.get("metadata") or {}
    cls = spec.get("ingressClassName") or (meta.get("annotations") or {}).get(CLASS_ANNOTATION)
    return cls == "nginx"


def canary_deployment(stable: dict[str, Any], image: str) -> dict[str, Any]:
    """The canary Deployment (JSON) for ``stable`` (JSON): see the module docstring."""
    meta, spec = stable["metadata"], copy.deepcopy(stable["spec"])
    template = spec["template"]
    stable_labels = (template.get("metadata") or {}).get("labels") or {}
    if stable_labels.get(POD_VERSION_LABEL) == "canary":
        raise RolloutError(
            f"Deployment {meta['name']}'s pods are labelled {POD_VERSION_LABEL}=canary, so the "
            "canary's selector would match them; label them stable"
        )
    containers = template["spec"]["containers"]
    if not containers:
        raise RolloutError(f"Deployment {meta['name']} has no container to give the new image")
    containers[0]["image"] = image
    template.setdefault("metadata", {}).setdefault("labels", {})[POD_VERSION_LABEL] = "canary"
    spec["selector"].setdefault("matchLabels", {})[POD_VERSION_LABEL] = "canary"
    spec["replicas"] = 0
    labels = {**(meta.get("labels") or {}), POD_VERSION_LABEL: "canary"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": canary_name(meta["name"]), "labels": labels},
        "spec": spec,
    }


def canary_service(stable: dict[str, Any], target: str) -> dict[str, Any]:
    ports = [
        {k: p[k] for k in ("name", "port", "targetPort", "protocol") if k in p}
        for p in stable["spec"].get("ports") or []
    ]
    selector = {**stable["spec"]["selector"], POD_VERSION_LABEL: "canary"}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": canary_name(target), "labels": {POD_VERSION_LABEL: "canary"}},
        "spec": {"type": "ClusterIP", "ports": ports, "selector": selector},
    }


def canary_ingress(stable: dict[str, Any], service: str, target: str) -> dict[str, Any]:
    """The stable Ingress's rules for ``service``, sent to the canary Service, at weight 0."""
    rules = []
    for rule in stable["spec"].get("rules") or []:
        paths = []
        for path in (rule.get("http") or {}).get("paths") or []:
            backend = (path.get("backend") or {}).get("service") or {}
            if backend.get("name") == service:
                moved = copy.deepcopy(path)
                moved["backend"]["service"]["name"] = canary_name(target)
                paths.append(moved)
        if paths:
            rules.append(
                {**({"host": rule["host"]} if rule.get("host") else {}), "http": {"paths": paths}}
            )
    spec: dict[str, Any] = {"rules": rules}
    if stable["spec"].get("ingressClassName"):
        spec["ingressClassName"] = stable["spec"]["ingressClassName"]
    annotations = nginx_canary_annotations(0)
    if CLASS_ANNOTATION in (stable["metadata"].get("annotations") or {}):
        annotations[CLASS_ANNOTATION] = stable["metadata"]["annotations"][CLASS_ANNOTATION]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": canary_name(target), "annotations": annotations},
        "spec": spec,
    }


def rolled_out(deployment: dict[str, Any]) -> bool:
    """``kubectl rollout status``'s test: the controller saw the newest spec, every pod is of the
    new template, no old pod is left and all are ready."""
    meta, spec, status = deployment["metadata"], deployment["spec"], deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    return (
        int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
        and int(status.get("updatedReplicas", 0)) == wanted
        and int(status.get("replicas", wanted)) == wanted
        and int(status.get("readyReplicas", 0)) >= wanted
    )
