"""What ``quarterdeck doctor`` asks the running server: ``/health``, ``/ready``, ``/v1/me``,
``/v1/system`` (isolation, the Claude Code CLI), and whether a busy port is held by Quarterdeck or by something else.

The doctor used to check only its own shell: it opened the database itself (starting a second
embedded Postgres when run away from the data dir) and warned that 8080 and 9090 were in use,
by the very server it was meant to check. The server knows its dependencies better than any
shell: ``/ready`` pings Postgres and Redis from the process that uses them and says whether the
migrations are applied and whether it is draining. So the doctor asks it, and reports each
answer as a check with what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from quarterdeck.monitoring.checks import Check, Status, claude_code_check, isolation_checks

TIMEOUT_S = 5.0
LOCAL_ANY = {"", "0.0.0.0", "::", "[::]"}


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def is_quarterdeck_health(body: Mapping[str, Any] | None) -> bool:
    """The shape of Quarterdeck's ``/health``: the API's (``dependencies``) or the metrics
    port's (``checks``)."""
    return body is not None and "status" in body and ("dependencies" in body or "checks" in body)


async def quarterdeck_on_port(host: str, port: int) -> bool:
    """Whether the thing listening on ``host:port`` answers ``/health`` as Quarterdeck does."""
    target = "127.0.0.1" if host in LOCAL_ANY else host
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(f"http://{target}:{port}/health")
    except httpx.HTTPError:
        return False
    return is_quarterdeck_health(_json(response))


async def server_checks(base: str, api_key: str | None) -> tuple[bool, list[Check]]:
    """(whether a Quarterdeck answered at ``base``, the checks of what it reported)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S, headers=headers) as client:
        try:
            health = await client.get("/health")
        except httpx.HTTPError as exc:
            return False, [
                Check(
                    "server",
                    "fail",
                    f"Quarterdeck is not running at {base} ({type(exc).__name__}: {exc})",
                    "start it with `quarterdeck up`, or point QUARTERDECK_URL (or --url) at "
                    "the running server",
                )
            ]
        if not is_quarterdeck_health(_json(health)):
            return False, [
                Check(
                    "server",
                    "fail",
                    f"something that is not Quarterdeck answers at {base} "
                    f"(HTTP {health.status_code} on /health)",
                    "point QUARTERDECK_URL (or --url) at the Quarterdeck API",
                )
            ]
        checks = [Check("server", "ok", f"Quarterdeck answers at {base} (/health ok)")]
        checks += await _ready(client)
        checks.append(await _auth(client, api_key))
        checks += await _isolation(client)
    return True, checks


async def _ready(client: httpx.AsyncClient) -> list[Check]:
    try:
        response = await client.get("/ready")
    except httpx.HTTPError as exc:
        return [Check("ready", "fail", f"/ready did not answer: {exc}", "see the server's log")]
    body = _json(response) or {}
    word = body.get("status", f"HTTP {response.status_code}")
    status: Status = "ok" if word == "ready" else "warn" if word == "degraded" else "fail"
    fix = "" if status == "ok" else "see the checks below and the server's log"
    checks = [Check("ready", status, f"/ready says {word}", fix)]
    local = body.get("checks", {})
    for name, fix in (
        ("migrations", "the server applies them at start: wait, or run `quarterdeck db upgrade`"),
        ("draining", "the server got SIGTERM and is stopping; start it again"),
        ("event_loop", "the server's event loop is overloaded: see its CPU and log"),
    ):
        if name in local:
            checks.append(_local(name, local[name], fix))
    dependencies = body.get("dependencies", {})
    database = dependencies.get("database")
    if database is not None:
        checks.append(
            _dependency(
                "postgres",
                database,
                "the server cannot reach Postgres: check its POSTGRES_URL, or the embedded "
                "Postgres log under its data dir (pg/log)",
            )
        )
    redis = dependencies.get("redis")
    if redis is None:
        checks.append(
            Check(
                "redis",
                "ok",
                "not configured on the server: in-process fallbacks are used",
                "set REDIS_URL to share rate limits and breaker state across replicas",
            )
        )
    else:
        checks.append(
            _dependency("redis", redis, "the server cannot reach Redis: check its REDIS_URL")
        )
    return checks


def _local(name: str, state: Mapping[str, Any], fix: str) -> Check:
    ok = bool(state.get("ok"))
    detail = {
        "migrations": "applied" if ok else "not applied yet",
        "draining": "not draining" if ok else "draining (shutting down)",
        "event_loop": f"lag {state.get('lag_ms', '?')} ms"
        + ("" if ok else f" (over {state.get('max_lag_ms', '?')} ms)"),
    }[name]
    return Check(name, "ok" if ok else "fail", detail, "" if ok else fix)


def _dependency(name: str, state: Mapping[str, Any], fix: str) -> Check:
    if state.get("ok"):
        return Check(name, "ok", f"the server reaches it ({state.get('latency_ms', '?')} ms)")
    return Check(name, "fail", f"the server cannot reach it: {state.get('error', 'down')}", fix)


async def _auth(client: httpx.AsyncClient, api_key: str | None) -> Check:
    try:
        response = await client.get("/v1/me")
    except httpx.HTTPError as exc:
        return Check("auth", "warn", f"/v1/me did not answer: {exc}")
    body = _json(response) or {}
    if response.status_code == 200 and body.get("method") == "disabled":
        return Check(
            "auth",
            "warn",
            "authentication is OFF on the server: every caller acts as an admin",
            "development only: set QUARTERDECK_AUTH_ENABLED=true (production turns it on)",
        )
    if response.status_code == 200:
        return Check(
            "auth",
            "ok",
            f"on; QUARTERDECK_API_KEY is key {body.get('key_id')} "
            f"({body.get('role')}, tenant {body.get('tenant')})",
        )
    if response.status_code == 401 and api_key:
        return Check(
            "auth",
            "fail",
            "the server rejects QUARTERDECK_API_KEY (unknown, revoked or expired)",
            "set QUARTERDECK_API_KEY to a valid key (`quarterdeck keys list`)",
        )
    if response.status_code == 401:
        return Check(
            "auth",
            "ok",
            "on; no QUARTERDECK_API_KEY set here, so client commands will be refused",
            "set QUARTERDECK_API_KEY to a key (`quarterdeck keys create`)",
        )
    return Check("auth", "warn", f"/v1/me answered HTTP {response.status_code}")


async def _isolation(client: httpx.AsyncClient) -> list[Check]:
    try:
        response = await client.get("/v1/system")
    except httpx.HTTPError as exc:
        return [Check("sandbox", "warn", f"/v1/system did not answer: {exc}")]
    body = _json(response) or {}
    report = body.get("isolation")
    if response.status_code == 200 and isinstance(report, dict):
        claude_code = body.get("claude_code")  # the server's own probe of the CLI
        extra = [claude_code_check(claude_code)] if isinstance(claude_code, dict) else []
        return isolation_checks(report) + extra
    if response.status_code in (401, 403):
        return [
            Check(
                "sandbox",
                "warn",
                "the server's isolation is not shown: /v1/system needs a key with health:read",
                "set QUARTERDECK_API_KEY to an admin or operator key of tenant '*'",
            )
        ]
    return [Check("sandbox", "warn", f"/v1/system answered HTTP {response.status_code}")]
