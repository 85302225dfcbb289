"""Gateway call records on real Postgres: the batched recorder, hold settlement, the read API with
real auth and tenant scoping, usage grouping, and ``quarterdeck gateway`` against a live server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from quarterdeck import metrics
from quarterdeck.app import create_app
from quarterdeck.chaos.messages_api import (
    MessagesAPIServer,
    make_usage,
    message,
    stream_error,
    text,
    thinking,
    tool_use,
)
from quarterdeck.gateway import repository
from quarterdeck.gateway.cli import app as gateway_cli
from quarterdeck.gateway.meter import StreamMeter, meter_json
from quarterdeck.gateway.models import CallFilter, GatewayCall
from quarterdeck.gateway.reads import GatewayCalls
from quarterdeck.gateway.recorder import DROPPED, CallRecorder
from quarterdeck.gateway.reports_api import router as reports_router
from quarterdeck.kit.wiring import services
from quarterdeck.providers.types import Usage
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.permissions import Role
from quarterdeck.store.pool import Database
from tests.conftest import eventually, free_port

pytest_plugins = ["tests.support.fixtures"]

ADMIN = "bootstrap-admin-key-for-tests-0123456789"
PROBLEM = "application/problem+json"
T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
_seq = iter(range(1, 1_000_000))


def call(
    *,
    tenant: str = "acme",
    at: datetime = T0,
    model: str = "claude-sonnet-4-5",
    cost: str = "0.01",
    **fields: Any,
) -> GatewayCall:
    n = next(_seq)
    fields.setdefault("usage", Usage(input_tokens=100, output_tokens=10))
    return GatewayCall(
        id=f"gwc_{n:08d}",
        created_at=at,
        tenant=tenant,
        key_id=fields.pop("key_id", "key_a"),
        model=model,
        stream=fields.pop("stream", True),
        status=fields.pop("status", 200),
        cost_usd=Decimal(cost),
        **fields,
    )


async def add_hold(db: Database, hold_id: str, tenant: str = "acme") -> None:
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO budget_holds (id, tenant, amount_usd, expires_at) "
            "VALUES ($1, $2, 1, now() + interval '15 minutes')",
            hold_id,
            tenant,
        )


async def holds(db: Database) -> set[str]:
    async with db.acquire() as conn:
        return {r["id"] for r in await conn.fetch("SELECT id FROM budget_holds")}


async def stored(db: Database) -> dict[str, Any]:
    async with db.acquire() as conn:
        return {r["id"]: dict(r) for r in await conn.fetch("SELECT * FROM gateway_calls")}


# --- the meter, on the stand-in's real bytes --------------------------------------------------
async def test_the_meter_reads_the_stand_ins_stream_and_json_alike(messages_api: MessagesAPIServer):
    usage = make_usage(input_tokens=10, output_tokens=7, cache_read=2000, cache_1h=100)
    reply = message(
        thinking("plan"), text("héllo " * 50), tool_use("ls", {"dir": "."}), usage=usage
    )
    messages_api.script([reply, reply])
    body = {"model": "claude-opus-4-5", "max_tokens": 64, "messages": [], "stream": True}
    meter = StreamMeter()
    async with (
        httpx.AsyncClient(base_url=messages_api.base_url) as client,
        client.stream("POST", "/v1/messages", json=body) as response,
    ):
        async for chunk in response.aiter_raw():
            meter.feed(chunk)
        plain = await client.post("/v1/messages", json={**body, "stream": False})
    streamed, whole = meter.result(), meter_json(plain.content)
    assert streamed.finished and whole.finished
    assert streamed.usage == whole.usage == Usage(10, 7, 100, 0, 100, 2000)
    assert [t.input for t in streamed.tool_uses] == [t.input for t in whole.tool_uses]
    assert streamed.text_chars >= whole.text_chars  # (plus the tool input's JSON)


async def test_the_meter_reads_a_stand_in_error_after_200(messages_api: MessagesAPIServer):
    messages_api.script([stream_error(message(text("partial"), usage=make_usage(30, 9)), 4)])
    body = {"model": "claude-opus-4-5", "max_tokens": 64, "messages": [], "stream": True}
    meter = StreamMeter()
    async with (
        httpx.AsyncClient(base_url=messages_api.base_url) as client,
        client.stream("POST", "/v1/messages", json=body) as response,
    ):
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            meter.feed(chunk)
    m = meter.result()
    assert m.error_type == "overloaded_error" and not m.finished and m.usage.input_tokens == 30


# --- the recorder ------------------------------------------------------------------------------
async def test_a_flush_writes_the_calls_and_settles_their_holds(db: Database):
    await add_hold(db, "hold_1")
    await add_hold(db, "hold_other")  # another call's, still in flight
    recorder = CallRecorder(db)
    usage = Usage(
        input_tokens=10,
        output_tokens=7,
        cache_creation_input_tokens=130,
        cache_creation_5m_tokens=30,
        cache_creation_1h_tokens=100,
        cache_read_input_tokens=2000,
    )
    first = call(hold_id="hold_1", usage=usage, cost="0.002225", session_id="sess-1")
    recorder.record(first)
    recorder.record(call())
    assert recorder.pending == 2
    assert await recorder.flush()
    rows = await stored(db)
    assert set(rows) == {first.id, f"gwc_{int(first.id[4:]) + 1:08d}"}
    row = rows[first.id]
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (10, 7, 2000)
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (30, 100)
    assert row["cost_usd"] == Decimal("0.002225") and row["session_id"] == "sess-1"
    assert await holds(db) == {"hold_other"}
    assert recorder.pending == 0 and recorder.written == 2


async def test_calls_and_hold_deletions_commit_together_or_not_at_all(db: Database):
    """A flush whose hold deletion fails (a real trigger refusing it) stores no call either."""
    await add_hold(db, "hold_t")
    async with db.acquire() as conn:
        await conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'holds are frozen'; END $$;"
            "CREATE TRIGGER frozen BEFORE DELETE ON budget_holds "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    recorder = CallRecorder(db)
    recorder.record(call(hold_id="hold_t"))
    assert not await recorder.flush()
    assert await stored(db) == {} and await holds(db) == {"hold_t"}
    assert recorder.pending == 1  # kept for the retry
    async with db.acquire() as conn:
        await conn.execute("DROP TRIGGER frozen ON budget_holds")
    assert await recorder.flush()
    assert len(await stored(db)) == 1 and await holds(db) == set()


async def test_the_background_task_survives_a_closed_pool_and_loses_nothing(db_url: str):
    database = Database(db_url, min_size=1, max_size=2)
    await database.open()
    recorder = CallRecorder(database, flush_interval_s=0.02)
    await recorder.start()
    try:
        recorder.record(call())
        await eventually(lambda: recorder.written == 1, timeout=10)
        await database.close()  # Postgres unreachable for this pool: flushes fail
        accepted = [call() for _ in range(5)]
        for c in accepted:
            recorder.record(c)  # still never blocks, never raises
        failures = metrics.REGISTRY.get_sample_value(
            "quarterdeck_gateway_record_flush_failures_total"
        )
        await eventually(
            lambda: (
                (
                    metrics.REGISTRY.get_sample_value(
                        "quarterdeck_gateway_record_flush_failures_total"
                    )
                    or 0
                )
                >= (failures or 0) + 2
            ),
            timeout=10,
        )
        assert recorder.pending == 5
        await database.open()
        await eventually(lambda: recorder.pending == 0, timeout=15)
        assert {c.id for c in accepted} <= set(await stored(database))
    finally:
        await recorder.aclose()
        await database.close()


async def test_a_killed_connection_is_retried_on_a_fresh_one(db: Database):
    recorder = CallRecorder(db)
    recorder.record(call())
    assert await recorder.flush()
    async with db.acquire() as conn:  # kill every other connection of the pool, for real
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    recorder.record(call())
    ok = await recorder.flush()
    if not ok:  # the dead connection failed this attempt: the next one must succeed
        assert recorder.pending == 1
        assert await recorder.flush()
    assert len(await stored(db)) == 2


async def test_a_batch_whose_commit_was_lost_is_retried_without_duplicates(db: Database):
    done = call(hold_id="hold_d")
    await add_hold(db, "hold_d")
    async with db.transaction() as conn:  # the earlier attempt committed, its answer was lost
        await repository.insert_calls(conn, [done])
    recorder = CallRecorder(db)
    fresh = call()
    recorder.record(done)
    recorder.record(fresh)
    assert await recorder.flush()
    assert set(await stored(db)) == {done.id, fresh.id}
    assert await holds(db) == set()


async def test_a_row_postgres_rejects_is_dropped_alone(db: Database):
    await add_hold(db, "hold_bad")
    recorder = CallRecorder(db)
    bad = call(model="claude\x00evil", hold_id="hold_bad")  # NUL: not storable as text
    good = call()
    recorder.record(bad)
    recorder.record(good)
    before = DROPPED.labels(reason="invalid")._value.get()
    assert await recorder.flush()
    assert set(await stored(db)) == {good.id}
    assert await holds(db) == set()  # the hold is settled all the same
    assert DROPPED.labels(reason="invalid")._value.get() == before + 1


async def test_a_malformed_call_never_blocks_the_calls_behind_it(db: Database):
    recorder = CallRecorder(db)
    broken = call()
    broken.usage = None  # type: ignore[assignment]  # a relay bug, as it would arrive
    wrong_type = call(status="teapot")
    good = call()
    for c in (broken, wrong_type, good):
        recorder.record(c)  # the metrics fail on `broken`: still no exception here
    assert recorder.pending == 3
    assert await recorder.flush()
    assert set(await stored(db)) == {good.id}
    assert recorder.dropped == 2


async def test_over_capacity_calls_are_dropped_and_counted_never_raised(db: Database):
    recorder = CallRecorder(db, capacity=2)
    before = DROPPED.labels(reason="buffer_full")._value.get()
    for _ in range(3):
        recorder.record(call())
    assert recorder.pending == 2 and recorder.dropped == 1
    assert DROPPED.labels(reason="buffer_full")._value.get() == before + 1


async def test_aclose_writes_everything_accepted_in_batches(db: Database):
    recorder = CallRecorder(db, flush_interval_s=60, max_batch=7)
    await recorder.start()
    for _ in range(50):
        recorder.record(call())
    await recorder.aclose()
    assert len(await stored(db)) == 50 and recorder.pending == 0


async def test_record_counts_the_guides_metrics_for_gateway_traffic(db: Database):
    def sample(name: str, model: str) -> float:
        value = metrics.REGISTRY.get_sample_value(name, {"agent_type": "gateway", "model": model})
        return value or 0.0

    tokens = sample("claude_agent_tokens_used_total", "claude-haiku-4-5")
    cost = sample("claude_agent_api_cost_total", "claude-haiku-4-5")
    recorder = CallRecorder(db)
    recorder.record(
        call(
            model="claude-haiku-4-5",
            usage=Usage(input_tokens=40, output_tokens=2),
            cost="0.5",
            ttfb_ms=12.0,
            duration_ms=80.0,
        )
    )
    assert sample("claude_agent_tokens_used_total", "claude-haiku-4-5") == tokens + 42
    assert sample("claude_agent_api_cost_total", "claude-haiku-4-5") == pytest.approx(cost + 0.5)
    ttft = metrics.REGISTRY.get_sample_value(
        "claude_agent_provider_time_to_first_token_seconds_count",
        {"provider": "anthropic", "model": "claude-haiku-4-5"},
    )
    assert ttft is not None and ttft >= 1


# --- the repository ----------------------------------------------------------------------------
async def test_list_pages_newest_first_with_a_cursor(db: Database):
    made = [call(at=T0 + timedelta(seconds=i // 2)) for i in range(7)]  # ties on created_at
    async with db.transaction() as conn:
        await repository.insert_calls(conn, made)
    expected = [c.id for c in sorted(made, key=lambda c: (c.created_at, c.id), reverse=True)]
    seen: list[str] = []
    cursor = None
    async with db.acquire() as conn:
        while True:
            page = await repository.list_calls(conn, CallFilter(limit=3, cursor=cursor), None)
            seen += [i.id for i in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == expected


async def test_usage_groups_by_any_dimension(db: Database):
    day2 = T0 + timedelta(days=1)
    async with db.transaction() as conn:
        await repository.insert_calls(
            conn,
            [
                call(model="m1", cost="1", session_id="s1"),
                call(model="m1", cost="2", at=day2, status=529, error_type="overloaded_error"),
                call(model="m2", cost="4", tenant="beta", key_id="key_b", cost_estimated=True),
                call(model="m2", cost="8", at=T0 - timedelta(days=40)),  # outside the window
            ],
        )
        since, until = T0 - timedelta(days=1), T0 + timedelta(days=5)
        by_model = await repository.usage(conn, since, until, ["model"], None)
        by_day_tenant = await repository.usage(conn, since, until, ["day", "tenant"], None)
        total = await repository.usage(conn, since, until, [], "acme")
        nothing = await repository.usage(conn, since, until, ["model"], "nobody")
    assert [(r.group, r.calls, r.cost_usd) for r in by_model] == [
        ({"model": "m1"}, 2, Decimal(3)),
        ({"model": "m2"}, 1, Decimal(4)),
    ]
    assert by_model[0].errors == 1 and by_model[1].cost_estimated_calls == 1
    assert [(r.group, r.calls) for r in by_day_tenant] == [
        ({"day": "2026-11-03", "tenant": "acme"}, 1),
        ({"day": "2026-11-03", "tenant": "beta"}, 1),
        ({"day": "2026-11-04", "tenant": "acme"}, 1),
    ]
    assert len(total) == 1 and total[0].calls == 2 and total[0].input_tokens == 200
    assert nothing == []


# --- the API, with real auth -------------------------------------------------------------------
@dataclass
class Deployment:
    runtime: Runtime
    client: httpx.AsyncClient
    app: Any

    async def key(self, role: Role, tenant: str) -> tuple[str, str]:
        created = await self.runtime.auth.create("test", role, tenant)
        return created.api_key, created.id

    async def seed(self, calls: list[GatewayCall]) -> None:
        async with self.runtime.db.transaction() as conn:
            await repository.insert_calls(conn, calls)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def dep(make_settings: Callable[..., Any]) -> AsyncIterator[Deployment]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        health_monitor_enabled=False,
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    app = create_app(settings, rt)
    if not any(getattr(r, "path", "") == "/v1/gateway/calls" for r in app.routes):
        app.include_router(reports_router)  # until the lead wires it into create_app
    services(app).add(GatewayCalls, GatewayCalls(rt.db))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd")
    try:
        yield Deployment(rt, client, app)
    finally:
        await client.aclose()
        await rt.stop()


async def test_a_tenant_key_sees_only_its_tenant_and_star_sees_all(dep: Deployment):
    await dep.seed([call(tenant="acme"), call(tenant="acme"), call(tenant="beta")])
    acme, _ = await dep.key(Role.submitter, "acme")
    beta, _ = await dep.key(Role.submitter, "beta")
    auditor, _ = await dep.key(Role.auditor, "*")

    r = await dep.client.get("/v1/gateway/calls", headers=bearer(acme))
    assert r.status_code == 200, r.text
    assert {c["tenant"] for c in r.json()["items"]} == {"acme"} and len(r.json()["items"]) == 2
    r = await dep.client.get("/v1/gateway/calls", headers=bearer(beta))
    assert [c["tenant"] for c in r.json()["items"]] == ["beta"]
    r = await dep.client.get("/v1/gateway/calls", params={"tenant": "acme"}, headers=bearer(beta))
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM

    r = await dep.client.get("/v1/gateway/calls", headers=bearer(auditor))
    assert sorted(c["tenant"] for c in r.json()["items"]) == ["acme", "acme", "beta"]
    r = await dep.client.get("/v1/gateway/calls", params={"tenant": "beta"}, headers=bearer(ADMIN))
    assert [c["tenant"] for c in r.json()["items"]] == ["beta"]

    u = await dep.client.get(
        "/v1/gateway/usage",
        params={"since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"},
        headers=bearer(beta),
    )
    assert u.status_code == 200, u.text
    assert [(row["calls"], row["cost_usd"]) for row in u.json()["rows"]] == [(1, 0.01)]
    u = await dep.client.get(
        "/v1/gateway/usage",
        params={"since": "2026-11-01T00:00:00Z", "group_by": "tenant"},
        headers=bearer(auditor),
    )
    assert [(row["group"]["tenant"], row["calls"]) for row in u.json()["rows"]] == [
        ("acme", 2),
        ("beta", 1),
    ]


async def test_filters_cursor_and_view_fields_over_http(dep: Deployment):
    key, key_id = await dep.key(Role.submitter, "acme")
    made = [call(key_id=key_id, at=T0 + timedelta(seconds=i)) for i in range(5)]
    made.append(call(key_id=key_id, model="claude-opus-4-5", session_id="s-9", status=529))
    await dep.seed(made)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        r = await dep.client.get("/v1/gateway/calls", params=params, headers=bearer(key))
        assert r.status_code == 200, r.text
        seen += [c["id"] for c in r.json()["items"]]
        if not r.json()["next_cursor"]:
            break
        params["cursor"] = r.json()["next_cursor"]
    assert len(seen) == 6 and len(set(seen)) == 6
    r = await dep.client.get(
        "/v1/gateway/calls", params={"session_id": "s-9", "status": 529}, headers=bearer(key)
    )
    (only,) = r.json()["items"]
    assert only["model"] == "claude-opus-4-5" and only["key_id"] == key_id
    assert only["cost_usd"] == 0.01 and only["input_tokens"] == 100


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/gateway/calls", {"limit": 0}),
        ("/v1/gateway/calls", {"limit": "many"}),
        ("/v1/gateway/calls", {"status": 42}),
        ("/v1/gateway/calls", {"since": "yesterday"}),
        ("/v1/gateway/calls", {"cursor": "not-a-cursor"}),
        ("/v1/gateway/calls", {"colour": "red"}),
        ("/v1/gateway/usage", {"group_by": "model,planet"}),
        ("/v1/gateway/usage", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
        ("/v1/gateway/usage", {"until": "soon"}),
    ],
)
async def test_bad_parameters_are_422_problems(dep: Deployment, path: str, params: dict[str, Any]):
    r = await dep.client.get(path, params=params, headers=bearer(ADMIN))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM


async def test_reading_needs_gateway_read(dep: Deployment):
    assert (await dep.client.get("/v1/gateway/calls")).status_code == 401
    r = await dep.client.get("/v1/gateway/usage")
    assert r.status_code == 401 and r.headers["content-type"] == PROBLEM


async def test_usage_defaults_to_the_current_utc_month(dep: Deployment):
    now = datetime.now(UTC)
    await dep.seed([call(at=now, cost="0.25"), call(at=now - timedelta(days=62), cost="9")])
    r = await dep.client.get("/v1/gateway/usage", headers=bearer(ADMIN))
    body = r.json()
    assert datetime.fromisoformat(body["since"]) == now.replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    assert [row["cost_usd"] for row in body["rows"]] == [0.25]


# --- the CLI against a live server -------------------------------------------------------------
@pytest.fixture
async def live(dep: Deployment) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(dep.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def cli(url: str, key: str, *args: str) -> Any:
    env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": key}
    return await asyncio.to_thread(CliRunner().invoke, gateway_cli, list(args), env=env)


async def test_cli_calls_and_usage_json_against_a_live_app(dep: Deployment, live: str):
    key, _ = await dep.key(Role.submitter, "acme")
    await dep.seed(
        [call(at=T0, model="m1", cost="1.5"), call(at=T0, model="m2"), call(tenant="beta")]
    )
    result = await cli(live, key, "calls", "--json", "--limit", "1")
    assert result.exit_code == 0, result.output
    page = json.loads(result.stdout)
    assert len(page["items"]) == 1 and page["next_cursor"]
    result = await cli(live, key, "calls", "--json", "--cursor", page["next_cursor"])
    rest = json.loads(result.stdout)["items"]
    assert len(rest) == 1 and {c["tenant"] for c in rest} == {"acme"}

    result = await cli(
        live, key, "usage", "--json", "--by", "model", "--since", "2026-11-01T00:00:00+00:00"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(r["group"]["model"], r["cost_usd"]) for r in report["rows"]] == [
        ("m1", 1.5),
        ("m2", 0.01),
    ]

    result = await cli(live, key, "usage", "--since", "2026-11-01T00:00:00+00:00", "--by", "day")
    assert result.exit_code == 0 and "2026-11-03" in result.stdout
    result = await cli(live, key, "calls")
    assert result.exit_code == 0 and "claude" not in result.stdout and "m1" in result.stdout


async def test_cli_errors_are_clear_and_exit_non_zero(dep: Deployment, live: str):
    key, _ = await dep.key(Role.submitter, "acme")
    result = await cli(live, key, "usage", "--by", "planet")
    assert result.exit_code == 1
    assert "422" in result.output and "planet" in result.output
    result = await cli(live, "not-a-key", "calls")
    assert result.exit_code == 1 and "401" in result.output
    result = await cli(f"http://127.0.0.1:{free_port()}", key, "calls")
    assert result.exit_code == 1 and "cannot reach" in result.output
