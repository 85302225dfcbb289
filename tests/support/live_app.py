"""The full app of a started :class:`Runtime`, served by uvicorn on a free port in the test's own
event loop, for client commands that speak HTTP (the CLI's ``httpx.Client``).

In-process and cheap (no ``quarterdeck up`` subprocess, no second Postgres): the test runs the
command in a thread (``asyncio.to_thread``) while the loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from quarterdeck.chaos.process import free_port


@asynccontextmanager
async def serving(runtime: Any) -> AsyncIterator[str]:
    """Serve ``runtime``'s app (the runtime is started and stopped by the caller); yield its URL."""
    from quarterdeck.app import create_app

    async with serving_app(create_app(runtime.settings, runtime)) as url:
        yield url


@asynccontextmanager
async def serving_app(app: Any) -> AsyncIterator[str]:
    """Serve an app the test built itself (its own services or keys); yield its URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def asgi_client(app: Any, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in process (no socket), presenting ``key`` when one is given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd", headers=headers) as c:
        yield c
