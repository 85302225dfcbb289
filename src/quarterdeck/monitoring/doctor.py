"""``quarterdeck doctor``: checks the config, Postgres, Redis and the provider key, with fixes."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quarterdeck.config import Settings


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str = ""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def _postgres(settings: Settings) -> list[Check]:
    from quarterdeck.store import migrations
    from quarterdeck.store.pool import connect_once, database_url

    checks = []
    try:
        url = await asyncio.to_thread(database_url, settings)
        conn = await asyncio.wait_for(connect_once(url), 10)
    except Exception as exc:
        hint = (
            "set POSTGRES_URL to a reachable server"
            if settings.postgres_url
            else f"check that {settings.data_dir} is writable; see {settings.data_dir}/pg/log"
        )
        return [Check("postgres", "fail", f"cannot connect: {exc}", hint)]
    try:
        version = await conn.fetchval("SHOW server_version")
        where = "embedded" if settings.embedded_postgres else "external"
        checks.append(Check("postgres", "ok", f"{where} PostgreSQL {version} reachable"))
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
            "simulated provider: no real model is called",
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


def isolation_checks(report: Mapping[str, Any]) -> list[Check]:
    """One check per sandbox mode (``sandbox.<mode>``), from the sandbox's own isolation report
    (passed in: the sandbox lives on a higher floor). A missing mode is a warning; a forced mode
    this host cannot give, or production left with rlimits only, is a failure."""
    checks = []
    for entry in report["modes"]:
        name, in_use = f"sandbox.{entry['mode']}", entry["in_use"]
        tag = " (in use)" if in_use else ""
        if entry["available"]:
            weak = entry["mode"] == "rlimits" and in_use
            status = "warn" if weak else "ok"
            fix = "install bubblewrap and allow user namespaces" if weak else ""
            checks.append(Check(name, status, f"available{tag}: {entry['gives'][0]}", fix))
        else:
            checks.append(Check(name, "warn", f"not available: {entry['missing_because']}"))
    if report.get("problem"):
        checks.append(
            Check("sandbox", "fail", report["problem"], "set QUARTERDECK_SANDBOX_MODE=auto")
        )
    return checks


async def run_checks(
    settings: Settings, check_ports: bool = True, isolation: Mapping[str, Any] | None = None
) -> list[Check]:
    checks = [Check("config", "ok", f"{settings.env} mode, data dir {settings.data_dir}")]
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(settings.data_dir, os.W_OK):
            raise PermissionError("not writable")
        checks.append(Check("data_dir", "ok", f"{settings.data_dir.resolve()} writable"))
    except OSError as exc:
        checks.append(
            Check(
                "data_dir",
                "fail",
                f"{settings.data_dir}: {exc}",
                "set QUARTERDECK_DATA_DIR to a writable directory",
            )
        )
    checks += await _postgres(settings)
    checks.append(await _redis(settings))
    checks.append(_provider(settings))
    if isolation is not None:
        checks += isolation_checks(isolation)
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
    if check_ports:
        for label, port in (
            ("http_port", settings.http_port),
            ("metrics_port", settings.metrics_port),
        ):
            if port and not _port_free(settings.http_host, port):
                checks.append(
                    Check(
                        label,
                        "warn",
                        f"port {port} is in use (Quarterdeck may already be running)",
                        f"set QUARTERDECK_{label.upper()}",
                    )
                )
    return checks
