"""Calls of the official Kubernetes client from asyncio, with the API's answer kept in errors.

Why here: the client is synchronous, so every call runs in a thread, and a refusal must reach
the person as the API server said it (``HTTP 403 Forbidden: deployments.apps "x" is
forbidden: …``), not as a stack trace. The scaler and the rollout controller both need exactly
this, each raising its own error type.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from quarterdeck.exceptions import QuarterdeckError

__all__ = ["api_client", "api_message", "call_in_thread"]

T = TypeVar("T")


async def call_in_thread(
    what: str, fn: Callable[[], T], error: type[QuarterdeckError], where: str
) -> T:
    """``fn`` in a thread; API and transport errors become ``error`` naming ``what`` and
    ``where`` (``on Deployment ns/x``, ``in ns``)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return await asyncio.to_thread(fn)
    except ApiException as exc:
        raise error(f"Kubernetes API: {what} {where} failed: {api_message(exc)}") from exc
    except (HTTPError, OSError) as exc:
        raise error(f"Kubernetes API: {what} {where} failed: {type(exc).__name__}: {exc}") from exc


def api_message(exc: Any) -> str:
    """``HTTP 404 NotFound: deployments.apps "x" not found`` from an ApiException's Status."""
    text = f"HTTP {exc.status} {exc.reason}"
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    if isinstance(body, dict) and body.get("message"):
        text = f"HTTP {exc.status} {body.get('reason') or exc.reason}: {body['message']}"
    return text


def api_client(api_url: str | None) -> Any:
    """An ``ApiClient``: ``api_url`` when given (tests: the fake API server), else the pod's
    in-cluster config, else the local kubeconfig."""
    from kubernetes import client, config

    if api_url:
        configuration = client.Configuration()
        configuration.host = api_url
        return client.ApiClient(configuration)
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()
