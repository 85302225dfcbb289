"""The Runs page: tenant reach, filters and search, keyset pages, submitting, bulk cancel, and
the live "runs changed" signal (the hub's all-runs subscription and its SSE stream)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest

from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunCreate, RunFilter, RunStatus
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from quarterdeck.store.pool import connect_once
from tests.support.live_app import serving
from tests.support.ui import HTML, browser_of, csrf_of, sign_in, started

ADMIN = "ui-runs-bootstrap-admin-key-0123456789"
ROW = re.compile(r'<tr data-run-id="(run_[0-9A-Z]+)"')


@pytest.fixture
async def rt(make_settings: object) -> AsyncIterator[Runtime]:
    settings = make_settings(auth_enabled=True, admin_api_key=ADMIN)  # type: ignore[operator]
    async with started(settings) as runtime:  # no workers: runs stay queued
        yield runtime


@pytest.fixture
async def browser(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_of(rt) as client:
        yield client


async def submit(rt: Runtime, tenant: str, prompt: str, **kw: object) -> str:
    run, _ = await rt.runs.submit(RunCreate(prompt=prompt, **kw), tenant=tenant)
    return run.id


async def post_form(
    client: httpx.AsyncClient, url: str, pairs: list[tuple[str, str]]
) -> httpx.Response:
    """A form with repeated fields (``run_id`` per selected row), as a browser posts it."""
    headers = {**HTML, "content-type": "application/x-www-form-urlencoded"}
    return await client.post(url, content=urlencode(pairs), headers=headers)


def rows(page: httpx.Response) -> list[str]:
    assert page.status_code == 200, page.text[:500]
    return ROW.findall(page.text)


async def test_lists_filters_searches_and_pages_within_the_viewers_reach(
    rt: Runtime, browser: httpx.AsyncClient
) -> None:
    acme = [await submit(rt, "acme", f"tidy module {i} please") for i in range(5)]
    zebra = await submit(rt, "acme", "Rename the zebra parser", agent_type="reviewer", model="b")
    other = await submit(rt, "globex", "zebra work of another tenant", agent_type="reviewer")
    cancelled = (await rt.runs.cancel(acme[0], "acme")).id
    zebra_model = (await rt.runs.get(zebra, "acme")).model

    key = (await rt.auth.create("ui", Role.submitter, "acme")).api_key
    assert (await sign_in(browser, key)).status_code == 303
    page = await browser.get("/ui/runs", headers=HTML)
    assert "<h1>Runs</h1>" in page.text and 'id="submit-run"' in page.text
    assert set(rows(page)) == {*acme, zebra}  # never globex's run
    assert 'name="tenant"' not in page.text  # a tenant's key cannot pick another tenant
    assert f'<input type="checkbox" name="run_id" value="{zebra}" data-row' in page.text
    assert 'sse-connect="/ui/live/changes"' in page.text and "data-live" in page.text

    async def listed(query: str) -> list[str]:
        return rows(await browser.get(f"/ui/runs?{query}", headers=HTML))

    assert await listed("status=cancelled") == [cancelled]
    assert set(await listed("status=cancelled&status=queued")) == {*acme, zebra}
    assert await listed("agent_type=reviewer") == [zebra]
    assert await listed(f"model={zebra_model}") == [zebra]
    assert await listed("q=zebra") == [zebra]  # a prompt word, case-folded; not globex's
    assert await listed("q=zebra+rename") == [zebra]
    assert await listed(f"q={zebra}") == [zebra]  # a whole id
    assert await listed(f"q={zebra[:-6].lower()}") == [zebra]  # an id prefix, any case
    assert await listed(f"q={other}") == []
    assert await listed("q=nowhere") == []
    assert await listed("after=2000-01-01T00:00&before=2000-01-02T00:00") == []
    # Another tenant's runs: refused as the API refuses it, on the page and in the fragment.
    assert (await browser.get("/ui/runs?tenant=globex", headers=HTML)).status_code == 403
    assert (await browser.get("/ui/runs?status=nope", headers=HTML)).status_code == 422
    assert (await browser.get("/ui/runs?cursor=x", headers=HTML)).status_code == 422
    fragment = await browser.get("/ui/runs/rows?q=zebra", headers=HTML)
    assert rows(fragment) == [zebra] and "<html" not in fragment.text

    # Keyset pages: disjoint, newest first, filters kept in the links.
    more = [await submit(rt, "acme", f"bulk {i}") for i in range(52)]
    first = await browser.get("/ui/runs?status=queued", headers=HTML)
    match = re.search(r'href="([^"]+)" id="runs-next"', first.text)
    assert match, "no next page link"
    nxt = match.group(1).replace("&amp;", "&")
    assert "status=queued" in nxt and "cursor=" in nxt
    second = await browser.get(nxt, headers=HTML)
    one, two = rows(first), rows(second)
    assert len(one) == 50 and not set(one) & set(two)
    assert set(one) | set(two) == {*acme[1:], zebra, *more}
    assert one + two == sorted(one + two, reverse=True)
    assert "data-live" not in second.text and 'id="runs-newest"' in second.text

    # An all-tenant viewer sees both tenants, a tenant column and filter, and may narrow.
    operator = (await rt.auth.create("ops", Role.operator, "*")).api_key
    browser.cookies.clear()
    assert (await sign_in(browser, operator)).status_code == 303
    assert await listed("q=zebra") == [other, zebra]
    assert await listed("q=zebra&tenant=globex") == [other]
    page = await browser.get("/ui/runs?q=zebra", headers=HTML)
    assert 'name="tenant"' in page.text and "data-row" not in page.text  # no runs:write

    # The API takes the same filters, with the same reach.
    api = {"authorization": f"Bearer {key}"}
    found = await browser.get("/v1/runs", params={"q": "zebra"}, headers=api)
    assert found.status_code == 200 and [r["id"] for r in found.json()["items"]] == [zebra]
    by_model = await browser.get(
        "/v1/runs", params={"model": zebra_model, "agent_type": "reviewer"}, headers=api
    )
    assert [r["id"] for r in by_model.json()["items"]] == [zebra]
    assert (await browser.get("/v1/runs?tenant=globex", headers=api)).status_code == 403
    assert (await browser.get("/v1/runs?tenant=acme", headers=api)).status_code == 200
    assert (await browser.get("/v1/runs?q=" + "x" * 201, headers=api)).status_code == 422
    assert (await browser.get("/v1/runs?q=a%00b", headers=api)).status_code == 422


async def test_submitting_from_the_page(rt: Runtime, browser: httpx.AsyncClient) -> None:
    key = (await rt.auth.create("ui", Role.submitter, "acme")).api_key
    assert (await sign_in(browser, key)).status_code == 303
    csrf = await csrf_of(browser, "/ui/runs")
    form = {"csrf": csrf, "prompt": "Write the changelog", "agent_type": "coder", "max_turns": "3"}
    done = await browser.post("/ui/runs", data=form, headers=HTML)
    assert done.status_code == 303 and done.headers["location"].startswith("/ui/runs/run_")
    run = await rt.runs.get(done.headers["location"].rsplit("/", 1)[1], None)
    assert (run.tenant, run.prompt, run.agent_type) == ("acme", "Write the changelog", "coder")
    # Blank prompt: the form again, 422, with what was typed and why.
    blank = {**form, "prompt": "   ", "model": "kept-model"}
    again = await browser.post("/ui/runs", data=blank, headers=HTML)
    assert again.status_code == 422
    assert 'id="submit-error"' in again.text and "blank" in again.text
    assert 'value="kept-model"' in again.text and '<option value="coder" selected>' in again.text
    # Without the CSRF token nothing is submitted; an auditor may not even look.
    assert (await browser.post("/ui/runs", data={"prompt": "x"}, headers=HTML)).status_code == 403
    assert len((await rt.runs.list_page(RunFilter(), None)).items) == 1
    auditor = (await rt.auth.create("aud", Role.auditor, "*")).api_key
    browser.cookies.clear()
    assert (await sign_in(browser, auditor)).status_code == 303
    assert (await browser.get("/ui/runs", headers=HTML)).status_code == 403
    assert (await browser.get("/ui/runs/rows", headers=HTML)).status_code == 403


async def test_bulk_cancel_confirms_and_never_reaches_another_tenant(
    rt: Runtime, browser: httpx.AsyncClient
) -> None:
    mine = [await submit(rt, "acme", f"mine {i}") for i in range(3)]
    theirs = await submit(rt, "globex", "theirs")
    done = await submit(rt, "acme", "already over")
    await rt.runs.cancel(done, "acme")
    key = (await rt.auth.create("ui", Role.submitter, "acme")).api_key
    assert (await sign_in(browser, key)).status_code == 303
    csrf = await csrf_of(browser, "/ui/runs")
    picked = [("run_id", i) for i in [*mine, theirs, done]]

    async def status(run_id: str) -> RunStatus:
        return (await rt.runs.get(run_id, None)).status

    forged = await post_form(browser, "/ui/runs/cancel", picked)
    assert forged.status_code == 403
    asked = await post_form(browser, "/ui/runs/cancel", [*picked, ("csrf", csrf)])
    assert asked.status_code == 200 and "Cancel 5 selected runs?" in asked.text
    assert all(f'name="run_id" value="{i}"' in asked.text for i in mine)
    assert {await status(i) for i in mine} == {RunStatus.queued}
    bad = [("run_id", "run_nope"), ("csrf", csrf), ("confirmed", "yes")]
    assert (await post_form(browser, "/ui/runs/cancel", bad)).status_code == 422
    yes = [*picked, ("csrf", csrf), ("confirmed", "yes")]
    result = await post_form(browser, "/ui/runs/cancel", yes)
    assert result.status_code == 303
    assert result.headers["location"] == "/ui/runs?cancelled=3&not_found=1&finished=1"
    assert {await status(i) for i in mine} == {RunStatus.cancelled}
    assert await status(theirs) is RunStatus.queued
    page = await browser.get(result.headers["location"], headers=HTML)
    assert re.search(r"3 runs cancelled, 1 already finished, 1 not found", page.text)


async def test_the_live_signal_fires_when_any_run_changes(rt: Runtime) -> None:
    rt.hub.all_interval = 0.1
    with rt.hub.subscribe_all() as changed:
        await asyncio.sleep(0.3)  # the first poll only notes where the events are
        changed.clear()
        await submit(rt, "acme", "wake the pages")
        await asyncio.wait_for(changed.wait(), 10)
    # A new first subscriber starts woken (its page was read before it subscribed), and a run
    # that moves before the hub's first poll for it still wakes it (that poll has no reference;
    # it used to take the moved run as its reference and the page never heard of the change).
    rt.hub.all_interval = 1.0
    with rt.hub.subscribe_all() as changed:
        assert changed.is_set()
        changed.clear()
        await submit(rt, "acme", "moved before the first poll")
        await asyncio.wait_for(changed.wait(), 10)
    # A tenant's page hears of its own tenant's runs only, not when another tenant is busy.
    rt.hub.all_interval = 0.1
    with rt.hub.subscribe_all("globex") as theirs, rt.hub.subscribe_all("acme") as ours:
        await asyncio.sleep(0.5)  # past the first poll, which wakes everyone
        theirs.clear()
        ours.clear()
        await submit(rt, "acme", "only acme hears of this")
        await asyncio.wait_for(ours.wait(), 10)
        await asyncio.sleep(0.5)
        assert not theirs.is_set()

    key = (await rt.auth.create("ui", Role.submitter, "acme")).api_key
    async with serving(rt) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        assert (await sign_in(client, key)).status_code == 303

        async def first_runs_event() -> list[str]:
            seen: list[str] = []
            async with client.stream("GET", "/ui/live/changes", headers=HTML) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                assert stream.headers["cache-control"] == "no-store"
                assert stream.headers["x-accel-buffering"] == "no"
                async for line in stream.aiter_lines():
                    seen.append(line)
                    if line == "event: runs":
                        return seen
            return seen

        async def keep_changing() -> None:
            while True:  # until the stream has said so
                await submit(rt, "acme", "another change")
                await asyncio.sleep(0.2)

        changer = asyncio.create_task(keep_changing())
        try:
            seen = await asyncio.wait_for(first_runs_event(), 15)
        finally:
            changer.cancel()
        assert seen[0] == "retry: 3000" and seen[-1] == "event: runs"

        # A draining server ends its streams (the browser reconnects elsewhere) rather than
        # holding up its shutdown for their lifetime.
        async def until_the_end() -> None:
            async with client.stream("GET", "/ui/live/changes", headers=HTML) as stream:
                async for line in stream.aiter_lines():
                    if line == "event: runs":  # the first, at once: then drain
                        rt.draining = True

        try:
            await asyncio.wait_for(until_the_end(), 10)
        finally:
            rt.draining = False
    # A stream that ended leaves no subscription behind: the hub stops polling for it.
    await asyncio.sleep(0.2)
    assert not rt.hub._all


async def test_the_in_memory_twin_filters_as_postgres_does(rt: Runtime) -> None:
    ids = [
        await submit(rt, "acme", "Fix the flaky parser test"),
        await submit(rt, "acme", "parser docs", agent_type="reviewer", model="m2"),
        await submit(rt, "globex", "flaky scheduler", agent_type="reviewer"),
    ]
    twin = InMemoryRunStore()
    for run in [await rt.runs.get(i, None) for i in ids]:
        fields = ("id", "tenant", "agent_type", "operation", "prompt", "model", "max_attempts")
        made = {k: getattr(run, k) for k in fields}
        made |= {"idempotency_key": None, "request_hash": None, "job_id": 0, "params": {}}
        made |= {"budget_usd": None, "key_id": None}
        await twin.create([(made, None)])
    model = (await rt.runs.get(ids[1], None)).model
    cases = [
        (None, RunFilter(q="flaky")),
        ("acme", RunFilter(q="flaky")),
        (None, RunFilter(q="parser flaky")),
        (None, RunFilter(q=ids[1][:12])),
        (None, RunFilter(agent_type="reviewer", tenant="globex")),
        ("acme", RunFilter(tenant="globex")),
        (None, RunFilter(model=model)),
    ]
    for reach, f in cases:
        want = [r.id for r in await rt.run_store.list_runs(reach, f)]
        assert [r.id for r in await twin.list_runs(reach, f)] == want, (reach, f)
        assert want or f.tenant == "globex", f  # every case but the refused one finds runs


async def test_an_event_committed_after_a_later_one_still_wakes_its_pages(rt: Runtime) -> None:
    """Event ids are drawn at insert: a transaction can commit id N after N+1 was seen."""
    ours_run = await submit(rt, "acme", "slow to commit")
    theirs_run = await submit(rt, "globex", "quick to commit")
    rt.hub.all_interval = 0.1
    slow, quick = await connect_once(rt.db.url), await connect_once(rt.db.url)
    try:
        with rt.hub.subscribe_all("acme") as ours:
            await asyncio.sleep(0.5)  # past the first poll
            ours.clear()
            async with slow.transaction():
                await slow.execute(
                    "INSERT INTO run_events (run_id, type) VALUES ($1, 'probe')", ours_run
                )
                await quick.execute(
                    "INSERT INTO run_events (run_id, type) VALUES ($1, 'probe')", theirs_run
                )
                await asyncio.sleep(0.5)  # polls see globex's newer event, not acme's yet
                assert not ours.is_set()
            await asyncio.wait_for(ours.wait(), 10)
    finally:
        await slow.close()
        await quick.close()
