"""``/v1/rollouts`` and ``quarterdeck rollout …``, on the embedded Postgres, through the full app
with authentication on.

The API tests give the app the real :class:`RolloutService` with a fixed clock (remaining pauses
are exact); the CLI talks to the app the runtime builds, served by uvicorn on a free port in the
test's loop (``tests/support/live_app.py``).
What the controller would write after applying a weight or judging an analysis is stored with
the repository functions it uses, from a real :func:`analysis.judge` result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from typer.testing import CliRunner

from quarterdeck.app import create_app
from quarterdeck.chaos.process import free_port
from quarterdeck.kit.console import console
from quarterdeck.kit.ids import new_id
from quarterdeck.kit.wiring import services
from quarterdeck.rollouts import repository
from quarterdeck.rollouts.analysis import VersionSample, judge
from quarterdeck.rollouts.cli import app as rollout_cli
from quarterdeck.rollouts.cli import parse_check
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.rollouts.spec import Analysis
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.security.auth import Role
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import asgi_client, serving
from tests.support.ui import started

ADMIN = "rollouts-api-bootstrap-admin-key-0123456789"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"
IMAGE = "registry.example/claude-agent-api:1.4.2"


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    app = create_app(rt.settings, rt)
    services(app).add(RolloutService, RolloutService(rt.db, clock=lambda: NOW))
    return app


def client_of(
    app: FastAPI, key: str | None = ADMIN
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, key)


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return [str(e["field"]) for e in response.json()["errors"]]


async def record_analysis(rt: Runtime, rollout_id: str) -> None:
    """What the controller stores after a step's weight is applied and an interval is judged:
    the real split, and a real verdict (the error rate fails, latency passes)."""
    result = judge(
        Analysis(max_error_rate=0.01, min_samples=100),
        weight=25.0,
        stable=VersionSample(requests=3000, errors=3, latency_p95_s=0.8, rate_per_s=30.0),
        canary=VersionSample(requests=1000, errors=80, latency_p95_s=1.2, rate_per_s=10.0),
    )
    async with rt.db.transaction() as conn:
        row = await repository.get_rollout(conn, rollout_id, lock=True)
        assert row is not None
        state = repository.state_of(row)
        await repository.save_state(
            conn, rollout_id, state, list(row["pending"]), last_analysis=dataclasses.asdict(result)
        )
        await repository.set_applied(
            conn,
            rollout_id,
            [],
            traffic_mode="replicas",
            split="replicas: 1 canary of 4 pods",
            effective_weight=25.0,
        )


# -- the API ------------------------------------------------------------------------------------


async def test_start_read_list_and_page(rt: Runtime, app: FastAPI) -> None:
    async with client_of(app) as api:
        started_ = await api.post("/v1/rollouts", json={"image": IMAGE, "pauses": "5m,3m"})
        assert started_.status_code == 201, started_.text
        r = started_.json()
        assert started_.headers["location"] == f"/v1/rollouts/{r['id']}"
        assert r["id"].startswith("ro_") and r["target"] == "claude-agent-api"
        assert (r["phase"], r["step_index"], r["steps"], r["weight"]) == ("progressing", 0, 5, 5)
        assert r["remaining_pause_s"] == pytest.approx(300.0)
        assert r["created_by"] == "key:admin" or r["created_by"].startswith("key:")

        again = await api.post("/v1/rollouts", json={"image": IMAGE + "-b"})
        assert again.status_code == 409, again.text
        assert again.headers["content-type"].startswith(PROBLEM) and r["id"] in again.text

        others = []
        for target in ("svc-a", "svc-b", "svc-c"):
            one = await api.post("/v1/rollouts", json={"image": IMAGE, "target": target})
            assert one.status_code == 201, one.text
            others.append(one.json()["id"])
        aborted = await api.post(f"/v1/rollouts/{others[0]}/abort", json={"reason": "not today"})
        assert aborted.status_code == 200, aborted.text

        newest_first = [*reversed(others), r["id"]]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = (await api.get("/v1/rollouts", params=params)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first
        live = (await api.get("/v1/rollouts", params={"live": "true"})).json()
        assert [i["id"] for i in live["items"]] == [others[2], others[1], r["id"]]

        detail = await api.get(f"/v1/rollouts/{r['id']}")
        assert detail.status_code == 200, detail.text
        events = detail.json()["events"]
        assert [e["kind"] for e in events] == ["started"] and IMAGE in events[0]["message"]

        missing = await api.get(f"/v1/rollouts/{new_id('ro')}")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith(PROBLEM)
        for path in ("/v1/rollouts/run_1", f"/v1/rollouts/{new_id('run')}/argo"):
            assert "rollout_id" in problem_fields(await api.get(path))
        assert "cursor" in problem_fields(await api.get("/v1/rollouts?cursor=nope"))
        assert any("limit" in f for f in problem_fields(await api.get("/v1/rollouts?limit=0")))


BAD_STARTS: list[tuple[dict[str, Any], str]] = [
    ({}, "image"),
    ({"image": "has space"}, "image"),
    ({"image": IMAGE, "target": "Bad_Name"}, "target"),
    ({"image": IMAGE, "strategy": "big-bang"}, "strategy"),
    ({"image": IMAGE, "steps": "5,20,50"}, "steps"),
    ({"image": IMAGE, "steps": "5,x,100"}, "steps"),
    ({"image": IMAGE, "pauses": "5 parsecs"}, "pauses"),
    ({"image": IMAGE, "max_error_rate": 2}, "max_error_rate"),
    ({"image": IMAGE, "traffic": "carrier-pigeon"}, "traffic"),
    ({"image": IMAGE, "checks": [{"name": "e", "query": "up", "success": "result <<"}]}, "checks"),
]


async def test_a_bad_start_is_422_naming_the_field(app: FastAPI) -> None:
    """One app for every case (a runtime per case would cost more than the cases)."""
    async with client_of(app) as api:
        wrong = []
        for body, field in BAD_STARTS:
            fields = problem_fields(await api.post("/v1/rollouts", json=body))
            if not any(field in f for f in fields):
                wrong.append((body, field, fields))
        assert wrong == []
        assert (await api.get("/v1/rollouts")).json()["items"] == []


async def test_promote_abort_and_their_audit(rt: Runtime, app: FastAPI) -> None:
    async with client_of(app) as api:
        rid = (await api.post("/v1/rollouts", json={"image": IMAGE})).json()["id"]
        step = await api.post(f"/v1/rollouts/{rid}/promote", json={"full": False})
        assert step.status_code == 200, step.text
        assert (step.json()["step_index"], step.json()["weight"]) == (1, 20)
        no_body = await api.post(f"/v1/rollouts/{rid}/promote")  # the body is optional
        assert no_body.status_code == 200 and no_body.json()["weight"] == 50

        for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 501}):
            fields = problem_fields(await api.post(f"/v1/rollouts/{rid}/abort", json=bad))
            assert any("reason" in f for f in fields), (bad, fields)
        done = await api.post(f"/v1/rollouts/{rid}/abort", json={"reason": "p95 regressed"})
        assert done.status_code == 200, done.text
        assert done.json()["phase"] == "aborted"
        assert "p95 regressed" in (done.json()["pause_reason"] or "")

        late = await api.post(f"/v1/rollouts/{rid}/promote", json={"full": True})
        assert late.status_code == 409 and late.headers["content-type"].startswith(PROBLEM)
        twice = await api.post(f"/v1/rollouts/{rid}/abort", json={"reason": "again"})
        assert twice.status_code == 409
        nowhere = await api.post(f"/v1/rollouts/{new_id('ro')}/abort", json={"reason": "x"})
        assert nowhere.status_code == 404

        kinds = [e["kind"] for e in (await api.get(f"/v1/rollouts/{rid}")).json()["events"]]
        assert kinds == ["started", "promoted", "promoted", "aborted"]

        full = (await api.post("/v1/rollouts", json={"image": IMAGE})).json()["id"]
        fully = await api.post(f"/v1/rollouts/{full}/promote", json={"full": True})
        assert fully.status_code == 200 and fully.json()["weight"] == 100

    await rt.audit.flush()
    page = await rt.audit.search(EventFilter(tenant="platform", limit=100))
    mine = [e for e in page.items if e.event_type.startswith("rollout.")]
    assert sorted(e.event_type for e in mine) == sorted(
        ["rollout.started"] * 2 + ["rollout.promoted"] * 3 + ["rollout.aborted"]
    )
    assert any("p95 regressed" in json.dumps(e.data_accessed, default=str) for e in mine)


async def test_argo_export_is_yaml_with_a_rollout(app: FastAPI) -> None:
    async with client_of(app) as api:
        rid = (
            await api.post(
                "/v1/rollouts", json={"image": IMAGE, "target": "svc-a", "traffic": "nginx"}
            )
        ).json()["id"]
        exported = await api.get(f"/v1/rollouts/{rid}/argo")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/yaml")
        listed = yaml.safe_load(exported.text)  # one document: a v1 List
        assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
        docs = listed["items"]
        assert docs[0]["kind"] == "Rollout" and docs[0]["metadata"]["name"] == "svc-a"
        assert docs[0]["spec"]["workloadRef"]["name"] == "svc-a"
        assert {d["kind"] for d in docs[1:]} == {"AnalysisTemplate"}
        assert (await api.get(f"/v1/rollouts/{new_id('ro')}/argo")).status_code == 404


async def test_only_platform_operators_and_admins_reach_rollouts(rt: Runtime, app: FastAPI) -> None:
    async with client_of(app) as api:
        rid = (await api.post("/v1/rollouts", json={"image": IMAGE})).json()["id"]
    keys = {
        "operator*": (await rt.auth.create("op", Role.operator, "*")).api_key,
        "submitter": (await rt.auth.create("sub", Role.submitter, "acme")).api_key,
        "operator-acme": (await rt.auth.create("op-acme", Role.operator, "acme")).api_key,
    }
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/rollouts", None),
        ("GET", f"/v1/rollouts/{rid}", None),
        ("GET", f"/v1/rollouts/{rid}/argo", None),
        ("POST", "/v1/rollouts", {"image": IMAGE, "target": "svc-z"}),
        ("POST", f"/v1/rollouts/{rid}/promote", {"full": False}),
        ("POST", f"/v1/rollouts/{rid}/abort", {"reason": "denied?"}),
    ]
    for method, path, body in calls:
        async with client_of(app, None) as anonymous:
            assert (await anonymous.request(method, path, json=body)).status_code == 401
        for name in ("submitter", "operator-acme"):
            async with client_of(app, keys[name]) as api:
                denied = await api.request(method, path, json=body)
            assert denied.status_code == 403, (name, method, path, denied.text)
            assert denied.headers["content-type"].startswith(PROBLEM)
    async with client_of(app, keys["operator*"]) as api:
        for method, path, body in calls:
            allowed = await api.request(method, path, json=body)
            assert allowed.status_code in (200, 201), (method, path, allowed.text)


# -- the CLI, through a real server ----------------------------------------------------------

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_cli_against_the_server(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The app the runtime builds, with the rollout service it registers (a real clock)."""
    forget_settings_env(monkeypatch)
    monkeypatch.setattr(console, "_width", 200)
    operator = (await rt.auth.create("op", Role.operator, "*")).api_key
    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key

    with logs_to_the_real_stderr(monkeypatch):
        async with serving(rt) as url:

            async def qd(*args: str, key: str = operator) -> Any:
                env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": key}
                return await asyncio.to_thread(runner.invoke, rollout_cli, list(args), env=env)

            empty = await qd("status")
            assert empty.exit_code == 0 and "No rollout is live" in flat(empty.stdout)

            started_ = await qd(
                "start",
                "--image",
                IMAGE,
                "--steps",
                "10,50,100",
                "--pause",
                "2m,manual",
                "--traffic",
                "replicas",
                "--max-latency",
                "2s",
                "--check",
                'errors=sum(rate(http_errors{version="{{version}}"}[1m])):result < 0.05',
                "--json",
            )
            assert started_.exit_code == 0, started_.output
            r = json.loads(started_.stdout)
            rid = r["id"]
            spec = r["spec"]
            assert r["steps"] == 3 and r["weight"] == 10
            assert json.dumps(spec).count("result < 0.05") == 1 and "2.0" in json.dumps(spec)

            await record_analysis(rt, rid)
            status = await qd("status")
            assert status.exit_code == 0, status.output
            text = flat(status.stdout)
            assert rid in text and "progressing" in text and "1/3" in text
            assert "10 % (really 25 %: replicas: 1 canary of 4 pods)" in text
            assert re.search(r"pause left (2m 00s|1m 5\ds)", text), text
            assert "last analysis: fail on 1000 samples" in text
            row = next(line for line in status.stdout.splitlines() if "error-rate" in line)
            assert "0.08" in row and "1 %" in row and "fail" in row  # value, limit, verdict

            one = json.loads((await qd("status", rid, "--json")).stdout)
            assert one["id"] == rid and [e["kind"] for e in one["events"]] == ["started"]
            assert one["last_analysis"]["verdict"] == "fail"

            promoted = await qd("promote", rid)
            assert promoted.exit_code == 0 and "weight 50 %" in flat(promoted.stdout)

            out = tmp_path / "argo.yaml"
            exported = await qd("export", rid, "--format", "argo", "-o", str(out))
            assert exported.exit_code == 0, exported.output
            assert yaml.safe_load(out.read_text())["items"][0]["kind"] == "Rollout"
            to_stdout = await qd("export", rid)
            assert "kind: Rollout" in to_stdout.stdout

            no_reason = await qd("abort", rid)
            assert no_reason.exit_code == 2 and "--reason" in no_reason.output
            aborted = await qd("abort", rid, "--reason", "latency budget gone")
            assert aborted.exit_code == 0 and "aborted" in aborted.stdout
            again = await qd("promote", rid, "--full")
            assert again.exit_code == 1 and "409" in flat(again.output)

            history = flat((await qd("history", "--limit", "5")).stdout)
            assert rid in history and "aborted" in history and "2/3" in history

            bad_check = await qd("start", "--image", IMAGE, "--check", "no-condition-here")
            assert bad_check.exit_code == 2 and "NAME=QUERY:CONDITION" in flat(bad_check.output)
            bad_steps = await qd("start", "--image", IMAGE, "--steps", "5,20")
            assert bad_steps.exit_code == 1 and "422" in flat(bad_steps.output)
            assert "steps" in flat(bad_steps.output)
            missing = await qd("status", new_id("ro"))
            assert missing.exit_code == 1 and "404" in flat(missing.output)
            denied = await qd("history", key=submitter)
            assert denied.exit_code == 1 and "403" in flat(denied.output)


def test_cli_check_syntax_and_no_server() -> None:
    assert parse_check("lat=job:latency:p95{v='{{version}}'}:result < 2") == {
        "name": "lat",
        "query": "job:latency:p95{v='{{version}}'}",
        "success": "result < 2",
    }
    assert parse_check("err=up:!result > 0.1")["failure"] == "result > 0.1"
    for bad in ("nothing", "=up:result < 1", "x=:result < 1", "x=up:", "x=up:!"):
        with pytest.raises(ValueError, match="NAME=QUERY:CONDITION"):
            parse_check(bad)
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(rollout_cli, ["history"], env={"QUARTERDECK_URL": url})
    assert result.exit_code == 1 and "cannot reach Quarterdeck" in flat(result.output)


async def test_agent_configuration_canaries_through_the_api_and_cli(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``POST /v1/canaries`` on the app the runtime builds (its service knows the agent types):
    platform-only, 422 naming the setting, 409 for a second live one, listed by kind, no Argo
    export; and ``quarterdeck canary`` against a real server."""
    from quarterdeck.rollouts.canary_cli import app as canary_cli

    body = {"agent_type": "coder", "set": {"model": "claude-haiku-4-5"}, "min_runs": 20}
    async with client_of(create_app(rt.settings, rt)) as api:  # no controller runs here
        refused = await api.post("/v1/canaries", json=body)
    assert refused.status_code == 409 and "QUARTERDECK_ROLLOUTS_ENABLED" in refused.text
    app = create_app(rt.settings, rt)  # as a deployment whose controller runs
    services(app).add(
        RolloutService, RolloutService(rt.db, catalog=rt.agent_catalog, router=rt.canary_routes)
    )
    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key
    async with client_of(app, submitter) as api:
        denied = await api.post("/v1/canaries", json=body)
    assert denied.status_code == 403 and denied.headers["content-type"].startswith(PROBLEM)
    async with client_of(app) as api:
        bad = await api.post("/v1/canaries", json={**body, "set": {"tools": "run_command"}})
        assert problem_fields(bad) == ["set.tools"]
        bad = await api.post("/v1/canaries", json={**body, "set": {"tools": ["run_command"]}})
        assert all(f.startswith("set.tools") for f in problem_fields(bad))
        bad = await api.post("/v1/canaries", json={**body, "set": {"max_turns": "3"}})
        assert problem_fields(bad) == ["set.max_turns"], bad.text
        bad = await api.post("/v1/canaries", json={**body, "set": {}})
        assert problem_fields(bad) == ["set"], bad.text
        bad = await api.post("/v1/canaries", json={**body, "agent_type": "ghost"})
        assert problem_fields(bad) == ["agent_type"]
        created = await api.post("/v1/canaries", json=body)
        assert created.status_code == 201, created.text
        canary = created.json()
        assert created.headers["location"] == f"/v1/rollouts/{canary['id']}"
        assert (canary["kind"], canary["target"], canary["traffic"]) == (
            "agent-config", "agent:coder", "runs")  # fmt: skip
        assert canary["image"].startswith("coder@") and canary["weight"] == 10
        again = await api.post("/v1/canaries", json=body)
        assert again.status_code == 409 and again.json()["rollout_id"] == canary["id"]
        listed = (await api.get("/v1/rollouts", params={"kind": "agent-config"})).json()
        assert [r["id"] for r in listed["items"]] == [canary["id"]]
        deployments = (await api.get("/v1/rollouts", params={"kind": "deployment"})).json()
        assert canary["id"] not in [r["id"] for r in deployments["items"]]
        argo = await api.get(f"/v1/rollouts/{canary['id']}/argo")
        assert argo.status_code == 409 and "no Argo Rollouts equivalent" in argo.text

    forget_settings_env(monkeypatch)
    monkeypatch.setattr(console, "_width", 200)
    with logs_to_the_real_stderr(monkeypatch):
        async with serving(rt) as url:

            async def qd(*args: str, key: str = ADMIN) -> Any:
                env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": key}
                return await asyncio.to_thread(runner.invoke, canary_cli, list(args), env=env)

            status = await qd("status")
            assert status.exit_code == 0, status.output
            text = flat(status.stdout)
            assert canary["id"] in text and "model: (as configured) -> claude-haiku-4-5" in text
            refused = await qd("start", "--agent-type", "coder", "--set", "tools=x")
            assert refused.exit_code == 2 and "cannot be changed by a canary" in flat(
                refused.output
            )
            aborted = await qd("abort", canary["id"], "--reason", "trial over")
            assert aborted.exit_code == 0 and "aborted" in aborted.stdout
            history = await qd("history")
            assert "aborted" in history.stdout and "coder@" in history.stdout
