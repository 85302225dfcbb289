"""The run page: a real run's story, its held call decided on the page, live updates over SSE,
the diff, and the cancel and resubmit buttons, with the API's role and tenant rules."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import re
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from quarterdeck.runs.models import RunCreate, RunStatus
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.live_app import serving
from tests.support.ui import HTML, csrf_of, sign_in

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio

ADMIN = "ui-run-detail-bootstrap-admin-key-0123456789"
PAGE = "<script>alert(1)</script>\n"
AFTER = re.compile(r'id="timeline-after" name="after" value="(\d+)"')


def settings_for(make_settings: Any, **extra: Any) -> Any:
    return make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
        **extra,
    )


async def browser_for(url: str, key: str, **kwargs: Any) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0), **kwargs)
    signed = await sign_in(client, key)
    assert signed.status_code == 303, signed.text[:300]
    return client


def tar_of(name: str, data: bytes) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


async def close_all(clients: list[httpx.AsyncClient]) -> None:
    """Before the server stops: it waits for every open stream to end."""
    for client in clients:
        await client.aclose()


async def sse_events(client: httpx.AsyncClient, url: str, seen: list[str]) -> None:
    """The event names of a stream, as they arrive, until it ends."""
    async with client.stream("GET", url, headers={"accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                seen.append(line.removeprefix("event: "))


async def test_a_held_run_is_approved_on_its_page_and_the_page_follows_it_live(
    make_settings: Any, messages_api: MessagesAPIServer
) -> None:
    usage = make_usage(input_tokens=1000, output_tokens=50, cache_read=700)
    messages_api.script(
        [
            message(
                text("Writing <b>the page</b>."),
                tool_use("write_file", {"path": "page.html", "content": PAGE}),
                usage=usage,
            ),
            message(tool_use("run_command", {"command": "sudo true; echo ran > proof.txt"})),
            message(text("done")),
        ]
    )
    settings = settings_for(
        make_settings,
        provider="anthropic",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=messages_api.base_url,
        default_model="claude-sonnet-4-5",
    )
    rt = Runtime(settings)
    await rt.start()
    clients: list[httpx.AsyncClient] = []
    try:
        async with serving(rt) as url, contextlib.AsyncExitStack() as open_clients:
            open_clients.push_async_callback(close_all, clients)
            ops_key = (await rt.auth.create("ops", Role.operator, "acme")).api_key
            dev_key = (await rt.auth.create("dev", Role.submitter, "acme")).api_key
            rival_key = (await rt.auth.create("rival", Role.submitter, "globex")).api_key
            ops = await browser_for(url, ops_key)
            dev = await browser_for(url, dev_key)
            rival = await browser_for(url, rival_key)
            clients += [ops, dev, rival]

            run, _ = await rt.runs.submit(
                RunCreate(prompt="make <i>page</i>", workspace={"type": "empty"}), tenant="acme"
            )
            held: list[Any] = []
            for _ in range(300):
                held = await rt.approvals.list("acme", "pending")
                if held:
                    break
                await asyncio.sleep(0.05)
            assert held and held[0].run_id == run.id, "no tool call was held"
            approval = held[0]

            page = await ops.get(f"/ui/runs/{run.id}", headers=HTML)
            assert page.status_code == 200, page.text[:500]
            body = page.text
            assert f'<h1 class="mono run-id">{run.id}</h1>' in body
            assert re.search(r'<span id="run-status"><span class="status s-running">', body)
            assert 'id="timeline"' in body and "write_file" in body
            assert "Writing &lt;b&gt;the page&lt;/b&gt;." in body  # what the model said: text
            assert "make &lt;i&gt;page&lt;/i&gt;" in body and "<i>page" not in body
            assert "700 cache read" in body and 'data-sort="700"' in body  # timeline, Turns
            assert f'sse-connect="/ui/runs/{run.id}/live?after=' in body
            assert f'id="approval-{approval.id}"' in body and "sudo true" in body
            assert 'name="decision" value="approve"' in body
            assert 'name="decision" value="reject"' in body
            # Holding the call wrote a run event, so watching pages refresh their held calls.
            events = await rt.runs.events(run.id, "acme")
            assert any(e.type == "approval_requested" for e in events)
            fragment = await ops.get(f"/ui/runs/{run.id}/fragments/held", headers=HTML)
            assert f'id="approval-{approval.id}"' in fragment.text
            assert 'data-live hx-get="/ui/runs/' + run.id + '/fragments/held"' in body
            assert "Cancel run" not in body and "Resubmit" not in body  # operators: no runs:write
            assert "/ui/audit?run_id=" not in body  # nor audit:read
            after = AFTER.search(body)
            assert after is not None

            # Another tenant's run and a malformed id are pages that are not there.
            for who, path in (
                (rival, f"/ui/runs/{run.id}"),
                (rival, f"/ui/runs/{run.id}/diff"),
                (ops, "/ui/runs/run_nope"),
                (ops, "/ui/runs/not-a-run/fragments/head"),
            ):
                missing = await who.get(path, headers=HTML)
                assert missing.status_code == 404, path
                assert missing.headers["content-type"].startswith("text/html")
                assert "Not found" in missing.text
            refused = await rival.get(f"/ui/runs/{run.id}/live")
            assert refused.status_code == 404
            # A submitter sees the held call but may not decide it; no form without CSRF.
            dev_page = (await dev.get(f"/ui/runs/{run.id}", headers=HTML)).text
            assert "An operator or an admin decides this call." in dev_page
            decide = f"/ui/runs/{run.id}/approvals/{approval.id}"
            dev_csrf = await csrf_of(dev, f"/ui/runs/{run.id}")
            no = await dev.post(decide, data={"csrf": dev_csrf, "decision": "approve"})
            assert no.status_code == 403
            assert (await ops.post(decide, data={"decision": "approve"})).status_code == 403

            seen: list[str] = []
            stream = asyncio.create_task(
                sse_events(ops, f"/ui/runs/{run.id}/live?after={after.group(1)}", seen)
            )
            await asyncio.sleep(0.3)
            assert seen == [], "nothing moved while the call was held"
            csrf = await csrf_of(ops, f"/ui/runs/{run.id}")
            decided = await ops.post(
                decide, data={"csrf": csrf, "decision": "approve", "note": "fine <here>"}
            )
            assert decided.status_code == 303
            assert decided.headers["location"] == f"/ui/runs/{run.id}"
            assert (await rt.approvals.get(approval.id, "acme")).status == "approved"
            await asyncio.wait_for(stream, 30)
            assert seen[0] == "changed" and seen[-1] == "done", seen

            done = await rt.runs.get(run.id, None)
            assert done.status is RunStatus.succeeded, done.error
            finished = (await ops.get(f"/ui/runs/{run.id}", headers=HTML)).text
            assert re.search(r'<span id="run-status"><span class="status s-succeeded">', finished)
            assert "sse-connect" not in finished and 'id="approvals"' not in finished
            assert '<span class="status s-ask" title="policy decision">ask</span>' in finished
            assert "approved by key:" in finished and "fine &lt;here&gt;" in finished
            assert '<div class="diff"><pre>' in finished  # short: shown on the page itself
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in finished

            diff = await ops.get(f"/ui/runs/{run.id}/diff", headers=HTML)
            assert diff.status_code == 200
            assert '<span class="gi">+&lt;script&gt;alert(1)&lt;/script&gt;</span>' in diff.text
            assert "<script>alert" not in diff.text
            raw = await ops.get(f"/ui/runs/{run.id}/diff.txt")
            assert raw.headers["content-type"] == "text/plain; charset=utf-8"
            assert raw.headers["content-disposition"] == f'attachment; filename="{run.id}.diff"'
            assert "+<script>alert(1)</script>" in raw.text

            # The live fragments: only rows after the cursor, the cursor moved out of band.
            head = await ops.get(f"/ui/runs/{run.id}/fragments/head", headers=HTML)
            assert 'id="run-status"' in head.text and "<html" not in head.text
            rows = await ops.get(
                f"/ui/runs/{run.id}/fragments/timeline",
                params={"after": after.group(1)},
                headers=HTML,
            )
            assert "write_file" not in rows.text and "run_command" in rows.text
            assert 'hx-swap-oob="true"' in rows.text and "beforeend:#turns-rows" in rows.text
            # The audit log link, for whoever may read it.
            admin = await browser_for(url, ADMIN)
            clients.append(admin)
            assert (
                f'href="/ui/audit?run_id={run.id}"'
                in (await admin.get(f"/ui/runs/{run.id}", headers=HTML)).text
            )
            # A finished run's stream says so at once and ends.
            last = AFTER.search(finished)
            assert last is not None
            seen.clear()
            live = f"/ui/runs/{run.id}/live?after={last.group(1)}"
            await asyncio.wait_for(sse_events(ops, live, seen), 10)
            assert seen == ["done"]
            seen.clear()  # a page drawn before the end: refreshed, then told it is over
            await asyncio.wait_for(sse_events(ops, f"/ui/runs/{run.id}/live", seen), 10)
            assert seen == ["changed", "done"]
    finally:
        await rt.stop()


@pytest.fixture
async def queued(make_settings: Any, tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    """A runtime that takes runs but runs none (so they stay queued), served on a port."""
    (tmp_path / "src").mkdir()
    rt = Runtime(settings_for(make_settings, workspace_roots=[tmp_path]), with_workers=False)
    await rt.start()
    try:
        async with serving(rt) as url:
            yield rt, url
    finally:
        await rt.stop()


async def test_cancel_asks_first_and_resubmit_never_widens_access(
    queued: tuple[Runtime, str], tmp_path: Path
) -> None:
    rt, url = queued
    dev_key = (await rt.auth.create("dev", Role.submitter, "acme")).api_key
    ops_key = (await rt.auth.create("ops", Role.operator, "acme")).api_key
    rival_key = (await rt.auth.create("rival", Role.submitter, "globex")).api_key
    clients = [
        await browser_for(url, key, follow_redirects=False)
        for key in (dev_key, ops_key, rival_key, ADMIN)
    ]
    dev, ops, rival, admin = clients
    try:
        run, _ = await rt.runs.submit(
            RunCreate(
                prompt="do it again",
                operation="review",
                max_turns=7,
                timeout_s=120,
                metadata={"team": "a"},
                budget_usd=2.5,
            ),
            tenant="acme",
        )
        page = (await dev.get(f"/ui/runs/{run.id}", headers=HTML)).text
        assert 'data-confirm="Cancel this run?"' in page and ">Cancel run</button>" in page
        assert ">Resubmit</button>" in page
        nothing = await dev.get(f"/ui/runs/{run.id}/diff", headers=HTML)
        assert nothing.status_code == 200 and "has no diff yet (status queued)" in nothing.text
        assert (await dev.get(f"/ui/runs/{run.id}/diff.txt")).status_code == 409

        cancel = f"/ui/runs/{run.id}/cancel"
        csrf = await csrf_of(dev, f"/ui/runs/{run.id}")
        assert (await dev.post(cancel, headers=HTML)).status_code == 403  # no CSRF token
        ops_csrf = await csrf_of(ops, f"/ui/runs/{run.id}")
        assert (await ops.post(cancel, data={"csrf": ops_csrf})).status_code == 403
        rival_csrf = await csrf_of(rival)
        assert (await rival.post(cancel, data={"csrf": rival_csrf})).status_code == 404
        asked = await dev.post(cancel, data={"csrf": csrf}, headers=HTML)
        assert asked.status_code == 200 and "Are you sure?" in asked.text
        assert (await rt.runs.get(run.id, None)).status is RunStatus.queued, "asked, not cancelled"
        yes = await dev.post(cancel, data={"csrf": csrf, "confirmed": "yes"}, headers=HTML)
        assert yes.status_code == 303 and yes.headers["location"] == f"/ui/runs/{run.id}"
        assert (await rt.runs.get(run.id, None)).status is RunStatus.cancelled
        after = (await dev.get(f"/ui/runs/{run.id}", headers=HTML)).text
        assert "s-cancelled" in after and "Cancel run" not in after
        live = await dev.get(f"/ui/runs/{run.id}/live")
        assert "event: done" in live.text

        # Resubmit: the same request again, in the viewer's tenant.
        again = await dev.post(f"/ui/runs/{run.id}/resubmit", data={"csrf": csrf})
        assert again.status_code == 303
        new_id = again.headers["location"].rsplit("/", 1)[1]
        assert new_id != run.id
        copy = await rt.runs.get(new_id, None)
        assert (copy.tenant, copy.status, copy.prompt) == ("acme", RunStatus.queued, run.prompt)
        assert (copy.agent_type, copy.model, copy.operation) == (
            run.agent_type,
            run.model,
            "review",
        )
        assert copy.params == run.params and copy.budget_usd == 2.5
        assert copy.key_id is not None and copy.key_id != run.key_id  # submitted by this key

        # A run copied from the server's disk: only an admin may ask for that again.
        source = {"type": "path", "value": str(tmp_path / "src")}
        on_disk, _ = await rt.runs.submit(
            RunCreate(prompt="from disk", workspace=source), tenant="acme", admin=True
        )
        forbidden = await dev.post(f"/ui/runs/{on_disk.id}/resubmit", data={"csrf": csrf})
        assert forbidden.status_code == 403
        admin_csrf = await csrf_of(admin)
        by_admin = await admin.post(f"/ui/runs/{on_disk.id}/resubmit", data={"csrf": admin_csrf})
        assert by_admin.status_code == 303
        admin_copy = await rt.runs.get(by_admin.headers["location"].rsplit("/", 1)[1], None)
        assert admin_copy.params["workspace"] == source and admin_copy.tenant == "acme"

        # An uploaded archive is not kept: the page says so and the post is refused.
        upload, _ = await rt.runs.submit(
            RunCreate(prompt="from tar", workspace={"type": "tar", "value": tar_of("a", b"b")}),
            tenant="acme",
        )
        tar_page = (await dev.get(f"/ui/runs/{upload.id}", headers=HTML)).text
        assert "Cannot resubmit" in tar_page and ">Resubmit</button>" not in tar_page
        refused = await dev.post(f"/ui/runs/{upload.id}/resubmit", data={"csrf": csrf})
        assert refused.status_code == 409
    finally:
        for client in clients:
            await client.aclose()
