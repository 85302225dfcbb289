"""Schemathesis against the real server: the OpenAPI document says what the server does.

``quarterdeck serve`` (real Postgres, the gateway's simulated upstream, the health monitor) runs
as its own process, once with authentication off and once on (schemathesis sends an admin key,
made by the auth service in the deployment's database), and schemathesis 4.32 runs every check
it has (``--checks all``): 0 server errors and 0 conformance failures (an undocumented status,
content type or header, a schema-valid request refused, a schema-violating one accepted, a 405
without ``Allow``, authentication declared but not enforced...). Every operation of the
document must have been tested.

Bounds, each so the run is deterministic (fixed seed, derandomized) and fits its budget (about
40 s for both modes on two cores):

- ``max-examples`` per operation is small. The coverage phase (every parameter's boundaries and
  every undeclared method of every path, where the document was most wrong) runs with auth off;
  with auth on, the fuzzing phase sends each operation the key, and ``ignored_auth`` the same
  request without it and with a wrong one.
- ``GET /v1/runs/{run_id}/wait`` gets ``timeout=0`` (it would otherwise wait up to 300 s per
  case for runs that never run: this deployment has no workers), and ``GET …/events`` gets
  ``stream=false`` (the live SSE stream of a run that never ends would never end either).
- The stateful phase is off: it chains operations by links, which the document does not
  declare, so it would only repeat the cases above.
- No generated text contains U+0000: the document says (in ``info``) that no text may, and every
  route refuses it with 422 (``tests/integration/test_bad_input.py`` proves that per input
  class); without the option, schemathesis reads that 422 as a valid value refused.
- The operations listed in ``_config`` get a fixed value or a narrowed check, each with its
  reason beside it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.engine import Status, events, from_schema

from quarterdeck.chaos.process import Process, free_port, http_ok
from quarterdeck.gateway.repository import encode_cursor as gateway_cursor
from quarterdeck.security.audit.reader import encode_cursor as audit_cursor
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.auth.service import AuthService

MAX_EXAMPLES = 2
SEED = 16
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACCEPT_422 = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
SINCE, UNTIL = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
CALLS = gateway_cursor(NOW, "call_0")
EVENTS = audit_cursor(NOW, "default", 0)


@dataclass
class Served:
    """``quarterdeck serve`` (the full API, no workers) on a free port, as its own process: in
    this process, the server's thread and schemathesis share one GIL, which made the same run
    four times slower."""

    base_url: str
    admin_key: str | None
    process: Process


def _config(served: Served) -> schemathesis.Config:
    headers = {"Authorization": f"Bearer {served.admin_key}"} if served.admin_key else {}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "continue-on-failure": True,
            "request-timeout": 10,
            "headers": headers,
            "cache": {"enabled": False},
            "checks": {"enabled": True},
            "phases": {
                "examples": {"enabled": True},
                # The coverage phase (every parameter's boundaries, every undeclared method of
                # every path: two thirds of the time) answers the same with a key or without,
                # so it runs with auth off; with auth on, fuzzing sends every operation the key,
                # and ignored_auth the same request without it and with a wrong one.
                "coverage": {"enabled": served.admin_key is None},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                "allow-x00": False,
                "database": "none",  # no .hypothesis/ example store in the checkout
            },
            "operations": [
                {"include-path": "/v1/runs/{run_id}/wait", "parameters": {"query.timeout": 0}},
                {
                    "include-path": "/v1/runs/{run_id}/events",
                    "parameters": {"query.stream": False},
                },
                # Rules JSON Schema cannot state, answered 422 naming the field: a workspace
                # source is checked against this server (a path under its roots, a tar that
                # unpacks, a git host it allows; test_bad_workspaces.py covers them); a key's
                # role fits its tenant (admin is `*`, a submitter one tenant), its expiry is in
                # the future and its fallback names known models.
                {
                    "include-path": ["/v1/runs", "/v1/runs/batch", "/v1/admin/keys"],
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPT_422}},
                },
                {
                    "include-path": "/v1/admin/keys/{key_id}",
                    "include-method": "PATCH",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPT_422}},
                },
                # A report's month must not be in the future: a rule against the clock.
                {
                    "include-path-regex": "^/v1/reports",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPT_422}},
                },
                # Opaque cursors: valid only as the server issued them (the document says so).
                {"include-path": "/v1/gateway/calls", "parameters": {"query.cursor": CALLS}},
                {"include-path": "/v1/audit/events", "parameters": {"query.cursor": EVENTS}},
                # A rule between two fields (since < until), which JSON Schema cannot state.
                {
                    "include-path": "/v1/gateway/usage",
                    "parameters": {"query.since": SINCE, "query.until": UNTIL},
                },
                {
                    "include-path": "/v1/compliance/report",
                    "parameters": {"query.from": SINCE, "query.to": UNTIL},
                },
                {
                    "include-path": "/v1/maintenance",
                    "include-method": "GET",
                    "parameters": {"query.from": SINCE, "query.to": UNTIL},
                },
                # A window's end after its start and at most 7 days on: two fields again.
                {
                    "include-path": "/v1/maintenance",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPT_422}},
                },
                # Durations ("30d", "> 0 and at most 100 years") are stated in the description:
                # JSON Schema cannot state a range over a unit-suffixed string.
                {
                    "include-path-regex": "/retention",
                    "include-method": "PUT",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                # The receiver is lenient by design (pydantic's lax mode: "3" for 3, Unix
                # seconds for a time), so that no delivery it can read is dropped.
                {
                    "include-path": "/v1/alerts/alertmanager",
                    "checks": {"negative_data_rejection": {"enabled": False}},
                },
            ],
        }
    )


def _line(recorder: Any, case_id: str, check: Any) -> str:
    """One failed check: operation, check, why, and the request and response it was about."""
    failure = check.failure_info.failure
    line = (
        f"{recorder.label}: {check.name}: {failure.title}: "
        + " ".join(str(failure.message).split())[:300]
    )
    interaction = recorder.interactions.get(case_id)
    if interaction is not None:
        request, response = interaction.request, interaction.response
        line += f" | {request.method} {request.uri} {(request.body or b'')[:200]!r}"
        if response is not None:
            line += f" -> {response.status_code} {(response.content or b'')[:200]!r}"
    return line


def failures_of(served: Served) -> tuple[list[str], set[str]]:
    """Every failed check and engine error, one line each, and the operations that ran."""
    schema = schemathesis.openapi.from_url(
        f"{served.base_url}/openapi.json", config=_config(served)
    )
    found: list[str] = []
    ran: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            if recorder.cases:
                ran.add(recorder.label)
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.status != Status.FAILURE or check.failure_info is None:
                        continue
                    found.append(_line(recorder, case_id, check))
        elif isinstance(event, events.NonFatalError):
            found.append(f"{event.label}: error: {event.info.title}: {event.info.message[:300]}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return sorted(set(found)), ran


@pytest.fixture
async def serve(
    db: Any, db_url: str, data_dir: Path, tmp_path: Path
) -> AsyncIterator[Callable[[bool], Awaitable[Served]]]:
    started: list[Process] = []

    async def start(auth: bool) -> Served:
        key = None
        if auth:  # an admin key of the deployment's database, made as any admin key is
            created = await AuthService(db, required=True).create("openapi", Role.admin, "*")
            key = created.api_key
        port = free_port()
        env = {
            **os.environ,
            "QUARTERDECK_POSTGRES_URL": db_url,
            "QUARTERDECK_DATA_DIR": str(data_dir),
            "QUARTERDECK_HTTP_HOST": "127.0.0.1",
            "QUARTERDECK_HTTP_PORT": str(port),
            "QUARTERDECK_METRICS_PORT": "0",
            "QUARTERDECK_AUTH_ENABLED": "true" if auth else "false",
            "QUARTERDECK_RATE_LIMIT_KEY_PER_MINUTE": "0",
            "QUARTERDECK_RATE_LIMIT_TENANT_PER_MINUTE": "0",
            "QUARTERDECK_LOG_LEVEL": "warning",
        }
        quarterdeck = Path(sys.executable).parent / "quarterdeck"
        process = Process(
            [str(quarterdeck), "serve"], log=tmp_path / f"serve-{port}.log", env=env
        ).start()
        started.append(process)
        await asyncio.to_thread(
            process.wait_ready, http_ok(f"http://127.0.0.1:{port}/health"), timeout=60
        )
        return Served(f"http://127.0.0.1:{port}", key, process)

    yield start
    for process in started:
        process.stop(timeout=10)


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
async def test_the_server_does_what_its_openapi_document_says(serve: Any, auth: bool) -> None:
    served = await serve(auth)
    failures, ran = await asyncio.to_thread(failures_of, served)  # schemathesis blocks
    async with httpx.AsyncClient() as client:
        document = (await client.get(f"{served.base_url}/openapi.json")).json()
    operations = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    assert len(operations) > 40 and operations <= ran, f"not tested: {operations - ran}"
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
