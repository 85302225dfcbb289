"""``quarterdeck doctor``: checks the running server it is pointed at, then this shell's config.

The server is asked (:mod:`.live`): ``/health``, ``/ready`` (Postgres, Redis, migrations,
draining, event loop, as the server sees them), ``/v1/me`` (authentication and the CLI's key)
and ``/v1/system`` (isolation, the Claude Code CLI). Only when no Quarterdeck answers does the
doctor look at what ``quarterdeck up`` would need here: the data dir, an external Postgres,
Redis, this host's sandbox and Claude Code CLI. It never starts an embedded database and never creates the data dir: that is what the
old doctor did, run away from the deployment's directory. A busy port is reported only when no
Quarterdeck answers on it (something else holds it, and ``up`` would fail to listen).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from quarterdeck.config import Settings
from quarterdeck.monitoring.checks import Check, claude_code_check, isolation_checks
from quarterdeck.monitoring.live import quarterdeck_on_port, server_checks

__all__ = ["Check", "isolation_checks", "run_checks"]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def _postgres(settings: Settings) -> list[Check]:
    """Without a running server: an external Postgres is connected to (``up`` would need it);
    the embedded one is only looked for, never started."""
    from quarterdeck.store import migrations
    from quarterdeck.store.pool import connect_once

    if settings.postgres_url is None:
        pg = settings.data_dir / "pg"
        if pg.is_dir():
            detail = f"embedded, in {pg.resolve()} (started by `quarterdeck up`)"
        else:
            detail = f"embedded: none yet in {settings.data_dir}; `quarterdeck up` creates it"
        return [Check("postgres", "ok", detail)]
    checks = []
    try:
        conn = await asyncio.wait_for(connect_once(settings.postgres_url.get_secret_value()), 10)
    except Exception as exc:
        return [
            Check(
                "postgres",
                "fail",
                f"cannot connect: {exc}",
                "set POSTGRES_URL to a reachable server",
            )
        ]
    try:
        version = await conn.fetchval("SHOW server_version")
        checks.append(Check("postgres", "ok", f"external PostgreSQL {version} reachable"))
        have = await migrations.current_version(conn)
        if have < migrations.HEAD:
            checks.append(
                Check(
                    "migrations",
                    "warn",
                    f"schema at {have}, code at {migrations.HEAD}",
                    "run `quarterdeck db upgrade` (or start)",
                )
            )
        else:
            checks.append(Check("migrations", "ok", f"schema at version {have}"))
    finally:
        await conn.close()
    return checks


async def _redis(settings: Settings) -> Check:
    if settings.redis_url is None:
        return Check(
            "redis",
            "ok",
            "not configured: in-process fallbacks are used",
            "set REDIS_URL to share rate limits and breaker state across replicas",
        )
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url.get_secret_value(), socket_timeout=3)
    try:
        await client.ping()
        return Check("redis", "ok", "reachable")
    except Exception as exc:
        return Check(
            "redis",
            "fail",
            f"cannot reach Redis: {exc}",
            "check REDIS_URL, or unset it to run without Redis",
        )
    finally:
        await client.aclose()


def _provider(settings: Settings) -> Check:
    name = settings.provider_name
    if name == "simulated":
        return Check(
            "provider",
            "warn",
            "simulated provider: no real model is called (this shell's settings)",
            "set ANTHROPIC_API_KEY to run real agents",
        )
    if name == "anthropic":
        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        if not key:
            return Check(
                "provider",
                "fail",
                "QUARTERDECK_PROVIDER=anthropic but no key",
                "set ANTHROPIC_API_KEY",
            )
        if not key.startswith("sk-ant-"):
            return Check(
                "provider",
                "warn",
                "ANTHROPIC_API_KEY does not look like an "
                "Anthropic key (expected the sk-ant- prefix)",
            )
        return Check("provider", "ok", f"anthropic, default model {settings.model}")
    return Check("provider", "ok", f"{name}, default model {settings.model}")


def _data_dir(settings: Settings) -> Check:
    """Whether ``up`` could use the data dir, without creating it."""
    path = settings.data_dir
    existing: Path = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK):
        where = "exists" if existing == path else f"will be created (under {existing.resolve()})"
        return Check("data_dir", "ok", f"{path} {where}, writable")
    return Check(
        "data_dir",
        "fail",
        f"{path}: {existing} is not writable",
        "set QUARTERDECK_DATA_DIR to a writable directory",
    )


def _preflight_isolation(settings: Settings, isolation: Mapping[str, Any]) -> list[Check]:
    checks = isolation_checks(isolation)
    weak = isolation["in_use"] == "rlimits" and not settings.sandbox_allow_weak
    if weak and settings.env == "production":
        checks.append(
            Check(
                "sandbox",
                "fail",
                "production refuses to start: agent commands would get rlimits only",
                "give the host bubblewrap with user namespaces, or set "
                "QUARTERDECK_SANDBOX_ALLOW_WEAK=true to accept weak isolation",
            )
        )
    return checks


async def _ports(settings: Settings) -> list[Check]:
    checks = []
    for label, port in (("http_port", settings.http_port), ("metrics_port", settings.metrics_port)):
        if not port or _port_free(settings.http_host, port):
            continue
        if await quarterdeck_on_port(settings.http_host, port):
            continue  # the server itself: nothing to fix
        checks.append(
            Check(
                label,
                "warn",
                f"port {port} is held by something that is not Quarterdeck: `quarterdeck up` "
                "here could not listen on it",
                f"stop what holds it, or set QUARTERDECK_{label.upper()}",
            )
        )
    return checks


async def run_checks(
    settings: Settings,
    url: str,
    api_key: str | None = None,
    local_isolation: Callable[[], Mapping[str, Any]] | None = None,
    check_ports: bool = True,
    preflight: bool = False,
    local_claude_code: Callable[[], Mapping[str, Any]] | None = None,
) -> list[Check]:
    """Every check, in the order shown. ``local_isolation`` gives this host's sandbox report
    (the sandbox sits floors above this module); it is used only when no server answers, or
    with ``preflight``: the checks of a host about to start one (a pod's init step, a deploy
    script), where no server is expected to answer yet. ``local_claude_code`` likewise gives
    this host's Claude Code CLI report (called after ``local_isolation``)."""
    checks = [
        Check("config", "ok", f"{settings.env} mode, data dir {settings.data_dir}"),
        _provider(settings),
    ]
    answered, found = (False, []) if preflight else await server_checks(url, api_key)
    checks += found
    if not answered:
        if settings.embedded_postgres:
            checks.append(_data_dir(settings))
        checks += await _postgres(settings)
        checks.append(await _redis(settings))
        if local_isolation is not None:
            checks += _preflight_isolation(settings, local_isolation())
        if local_claude_code is not None:
            checks.append(claude_code_check(local_claude_code()))
    if check_ports:
        checks += await _ports(settings)
    return checks
