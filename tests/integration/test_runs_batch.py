"""``POST /v1/runs/batch``: many runs in one transaction, idempotent, validated per item."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.asyncio


async def test_a_batch_is_accepted_and_every_run_succeeds(client: httpx.AsyncClient):
    prompts = [f"task {i}" for i in range(25)]
    r = await client.post(
        "/v1/runs/batch",
        json={"runs": [{"prompt": p, "budget_usd": 5.5} for p in prompts]},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["count"] == 25 and len({x["id"] for x in body["runs"]}) == 25
    for item in body["runs"]:
        assert item["location"] == f"/v1/runs/{item['id']}" and item["status"] == "queued"
    for item, prompt in zip(body["runs"], prompts, strict=True):
        done = (await client.get(f"{item['location']}/wait", params={"timeout": 30})).json()
        assert done["status"] == "succeeded" and done["prompt"] == prompt
        assert done["budget_usd"] == 5.5
        events = (await client.get(f"{item['location']}/events")).json()
        assert events[0]["type"] == "status" and events[0]["data"]["status"] == "queued"


async def test_a_replayed_batch_returns_the_same_ids_and_a_changed_one_is_409(
    client: httpx.AsyncClient,
):
    headers = {"Idempotency-Key": "batch-1"}
    body = {"runs": [{"prompt": "a"}, {"prompt": "b"}]}
    first = await client.post("/v1/runs/batch", json=body, headers=headers)
    again = await client.post("/v1/runs/batch", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert [x["id"] for x in first.json()["runs"]] == [x["id"] for x in again.json()["runs"]]
    assert again.headers["idempotent-replayed"] == "true"
    changed = await client.post(
        "/v1/runs/batch", json={"runs": [{"prompt": "a"}, {"prompt": "c"}]}, headers=headers
    )
    assert changed.status_code == 409
    assert changed.headers["content-type"].startswith("application/problem+json")
    listing = (await client.get("/v1/runs")).json()
    assert len(listing["items"]) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "runs"),
        ({"runs": []}, "runs"),
        ({"runs": [{"prompt": "x"}] * 1001}, "runs"),
        ({"runs": [{"prompt": "ok"}, {"prompt": ""}]}, "runs.1.prompt"),
        ({"runs": [{"prompt": "ok"}, {"prompt": "x", "agent_type": "nope"}]}, "runs.1.agent_type"),
        (
            {"runs": [{"prompt": "x", "workspace": {"type": "tar", "value": "AAAA"}}]},
            "runs.0.workspace",
        ),
    ],
)
async def test_a_bad_item_rejects_the_whole_batch_naming_it(
    client: httpx.AsyncClient, body: dict[str, object], field: str
):
    r = await client.post("/v1/runs/batch", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert any(e["field"] == field for e in problem["errors"]), problem
    assert (await client.get("/v1/runs")).json()["items"] == []


async def test_concurrent_single_submissions_share_a_commit_and_a_conflict_fails_alone(
    client: httpx.AsyncClient, runtime: object
):
    import asyncio

    bodies = [({"prompt": f"p{i}"}, {}) for i in range(20)]
    bodies += [
        ({"prompt": "first"}, {"Idempotency-Key": "k1"}),
        ({"prompt": "second"}, {"Idempotency-Key": "k1"}),
    ]
    answers = await asyncio.gather(*(client.post("/v1/runs", json=b, headers=h) for b, h in bodies))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(202) == 21 and codes.count(409) == 1, codes
    submits = runtime.runs.submissions.submits
    assert submits.batches < submits.items, "some submissions shared a transaction"
    ids = {r.json()["id"] for r in answers if r.status_code == 202}
    assert len(ids) == 21
    for run_id in ids:
        done = (await client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 30})).json()
        assert done["status"] == "succeeded"
    listing = (await client.get("/v1/runs", params={"limit": 100})).json()
    assert len(listing["items"]) == 21
