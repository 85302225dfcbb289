"""What a new replica would otherwise build or load on the event loop during its first requests.

FastAPI builds an included router's routes lazily, the first time a request is routed through
it (~120 ms for all of ours, in stalls of 8-18 ms per router that held every call in flight);
``create_app`` walks them up front. anyio loads its asyncio backend on the first sync
dependency; ``server.warm_up`` does it at start-up. In process, without a database: the answers
may be 503, routing still runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.config import load_settings


async def test_no_route_is_built_while_requests_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = getattr(fastapi.routing, "_populate_api_route_state", None)
    if build is None:  # pragma: no cover - a FastAPI that builds routes eagerly
        pytest.skip("this FastAPI builds its routes when they are declared")
    app = create_app(load_settings(None, data_dir=tmp_path, gateway_enabled=True))
    built: list[str] = []

    def counting(route: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        built.append(path)
        return build(route, path, *args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "_populate_api_route_state", counting)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
        for path in ("/health", "/v1/runs", "/v1/gateway/calls", "/v1/rollouts", "/v1/models"):
            await client.get(path)
    assert built == []


def test_the_server_warm_up_loads_the_thread_pool_backend_before_any_request() -> None:
    """A fresh interpreter: importing the server leaves anyio's asyncio backend unloaded (the
    first sync dependency would load it on the loop); ``warm_up`` loads it at start-up."""
    import subprocess
    import sys

    probe = (
        "import asyncio, sys\n"
        "from quarterdeck.server import warm_up\n"
        "backend = 'anyio._backends._asyncio'\n"
        "before = backend in sys.modules\n"
        "asyncio.run(warm_up())\n"
        "print(before, backend in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "True"]
