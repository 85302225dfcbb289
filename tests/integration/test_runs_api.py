"""The runs API against a real embedded Postgres, with a live worker pool and simulated agents."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import eventually

pytestmark = pytest.mark.asyncio


async def test_submit_answers_202_with_location_and_runs_to_success(client: httpx.AsyncClient):
    r = await client.post("/v1/runs", json={"prompt": "fix the failing test"})
    assert r.status_code == 202
    run = r.json()
    assert r.headers["location"] == f"/v1/runs/{run['id']}"
    assert run["status"] == "queued"
    assert run["agent_type"] == "coder" and run["operation"] == "task"
    assert run["model"].startswith("simulated-")
    done = (await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 30})).json()
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1 and done["turns"] >= 1
    assert done["input_tokens"] > 0 and done["output_tokens"] > 0
    assert done["started_at"] and done["finished_at"] and done["result"]


async def test_idempotency_key_replays_same_run_and_rejects_a_different_body(
    client: httpx.AsyncClient,
):
    headers = {"Idempotency-Key": "abc-123"}
    first = await client.post("/v1/runs", json={"prompt": "one"}, headers=headers)
    again = await client.post("/v1/runs", json={"prompt": "one"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post("/v1/runs", json={"prompt": "two"}, headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "abc-123" in other.json()["detail"]
    listing = (await client.get("/v1/runs")).json()
    assert len(listing["items"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "agent_type": "Bad Type!"}, "agent_type"),
        ({"prompt": "x", "max_turns": 0}, "max_turns"),
        ({"prompt": "x", "unexpected": 1}, "unexpected"),
        ({"prompt": 5}, "prompt"),
    ],
)
async def test_validation_errors_are_problem_json_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
):
    r = await client.post("/v1/runs", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 422 and problem["title"]
    assert any(e["field"] == field for e in problem["errors"]), problem


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x\x00y"},
        {"prompt": "x", "metadata": {"k": "v\x00"}},
        {"prompt": "x", "model": "claude\x00"},
    ],
)
async def test_nul_characters_are_a_422_not_a_database_error(
    client: httpx.AsyncClient, body: dict[str, object]
):
    r = await client.post("/v1/runs", json=body)
    assert r.status_code == 422, r.text
    assert "NUL" in r.json()["detail"]
    r = await client.post("/v1/runs/batch", json={"runs": [{"prompt": "ok"}, body]})
    assert r.status_code == 422, r.text


async def test_malformed_json_and_wrong_content_are_4xx_problems(client: httpx.AsyncClient):
    r = await client.post(
        "/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post("/v1/runs", content=b"[]", headers={"content-type": "application/json"})
    assert r.status_code == 422


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient):
    missing = await client.get("/v1/runs/run_01M8599ARQ1524NZR6Z93S6N28")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad = await client.get("/v1/runs/../../etc")
    assert bad.status_code in (404, 422)
    bad = await client.get("/v1/runs/not-an-id")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "run_id"
    unknown_route = await client.get("/v1/nothing-here")
    assert unknown_route.status_code == 404
    assert unknown_route.headers["content-type"].startswith("application/problem+json")


async def test_list_filters_and_cursor_pagination(client: httpx.AsyncClient, runtime: object):
    ids = []
    for i in range(7):
        body = {"prompt": f"task {i}", "agent_type": "reviewer" if i % 2 else "coder"}
        ids.append((await client.post("/v1/runs", json=body)).json()["id"])
    for run_id in ids:
        await client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 30})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/runs", params=params)).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(ids, reverse=True)
    reviewers = (await client.get("/v1/runs", params={"agent_type": "reviewer"})).json()["items"]
    assert {r["agent_type"] for r in reviewers} == {"reviewer"} and len(reviewers) == 3
    ok = (await client.get("/v1/runs", params={"status": "succeeded"})).json()["items"]
    assert len(ok) == 7
    none = (await client.get("/v1/runs", params={"status": "queued"})).json()["items"]
    assert none == []
    future = await client.get("/v1/runs", params={"created_after": "2999-01-01T00:00:00Z"})
    assert future.json()["items"] == []
    bad = await client.get("/v1/runs", params={"status": "bogus"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("query.status")
    bad = await client.get("/v1/runs", params={"limit": 0})
    assert bad.status_code == 422


async def test_events_json_and_sse_resume_with_last_event_id(client: httpx.AsyncClient):
    run = (await client.post("/v1/runs", json={"prompt": "write a test"})).json()
    await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 30})
    events = (await client.get(f"/v1/runs/{run['id']}/events")).json()
    types = [e["type"] for e in events]
    assert types[0] == "status" and events[0]["data"]["status"] == "queued"
    assert "turn" in types and "tool_call" in types
    assert events[-1]["data"]["status"] == "succeeded"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)

    async def read_sse(headers: dict[str, str]) -> list[dict[str, object]]:
        out = []
        async with client.stream(
            "GET",
            f"/v1/runs/{run['id']}/events",
            headers={"Accept": "text/event-stream", **headers},
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: {}":
                    out.append(json.loads(line[6:]))
        return out

    streamed = await read_sse({})
    assert [e["id"] for e in streamed] == [e["id"] for e in events]
    resumed = await read_sse({"Last-Event-ID": str(events[2]["id"])})
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    bad = await client.get(
        f"/v1/runs/{run['id']}/events",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "x"},
    )
    assert bad.status_code == 422


async def test_openapi_docs_are_served(client: httpx.AsyncClient):
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/runs" in spec["paths"] and "/v1/runs/{run_id}/events" in spec["paths"]


async def test_health_and_ready(client: httpx.AsyncClient, runtime: object):
    assert (await client.get("/health")).json()["status"] == "ok"
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"migrations", "draining", "event_loop"}
    assert ready.json()["dependencies"]["database"]["ok"] is True
    runtime.draining = True  # type: ignore[attr-defined]
    not_ready = await client.get("/ready")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["draining"]["ok"] is False
    assert (await client.get("/health")).status_code == 200
    runtime.draining = False  # type: ignore[attr-defined]


async def test_cancel_queued_running_and_finished(make_settings: object):
    from quarterdeck.app import create_app
    from quarterdeck.runtime import Runtime

    rt = Runtime(make_settings(simulated_latency="30s", worker_concurrency=2))  # type: ignore[operator]
    await rt.start()
    try:
        app = create_app(rt.settings, rt)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as c:
            runs = [
                (await c.post("/v1/runs", json={"prompt": f"slow {i}"})).json() for i in range(3)
            ]

            async def two_running() -> bool:
                items = (await c.get("/v1/runs", params={"status": "running"})).json()["items"]
                return len(items) == 2

            await eventually(two_running, timeout=20)
            running = (await c.get("/v1/runs", params={"status": "running"})).json()["items"]
            queued = (await c.get("/v1/runs", params={"status": "queued"})).json()["items"]
            assert len(queued) == 1
            q = (await c.post(f"/v1/runs/{queued[0]['id']}/cancel")).json()
            assert q["status"] == "cancelled" and q["error"] == "cancelled before it started"
            # A running run sleeping through a 30 s model call ends only if cancel reaches it.
            await c.post(f"/v1/runs/{running[0]['id']}/cancel")
            stopped = (
                await c.get(f"/v1/runs/{running[0]['id']}/wait", params={"timeout": 10})
            ).json()
            assert stopped["status"] == "cancelled"
            again = await c.post(f"/v1/runs/{running[0]['id']}/cancel")
            assert again.status_code == 409
            assert "already cancelled" in again.json()["detail"]
            other = (await c.get(f"/v1/runs/{running[1]['id']}")).json()
            assert other["status"] == "running"
            assert runs
    finally:
        await rt.stop()


async def test_agent_types_are_listed_and_unknown_ones_refused(client: httpx.AsyncClient):
    types = (await client.get("/v1/agent-types")).json()
    names = {t["name"] for t in types}
    assert {"coder", "reviewer", "test-writer"} <= names
    reviewer = next(t for t in types if t["name"] == "reviewer")
    assert "write_file" not in reviewer["tools"] and "read_file" in reviewer["tools"]
    r = await client.post("/v1/runs", json={"prompt": "x", "agent_type": "wizard"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "coder" in r.json()["detail"] and r.json()["errors"][0]["field"] == "agent_type"


async def test_workspace_and_budget_are_validated(client: httpx.AsyncClient):
    bad = await client.post("/v1/runs", json={"prompt": "x", "workspace": {"type": "git"}})
    assert bad.status_code == 422
    bad = await client.post(
        "/v1/runs", json={"prompt": "x", "workspace": {"type": "tar", "value": "%%%"}}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "workspace.value"
    bad = await client.post("/v1/runs", json={"prompt": "x", "budget_usd": -1})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "budget_usd"
    ok = await client.post("/v1/runs", json={"prompt": "x", "budget_usd": 5})
    assert ok.status_code == 202 and ok.json()["budget_usd"] == 5
    no_diff = await client.get(f"/v1/runs/{ok.json()['id']}/diff")
    assert no_diff.status_code in (404, 409)
