"""Every route is built when the app is, so no request pays for it on the event loop.

FastAPI builds an included router's routes lazily, the first time a request is routed through
it (~120 ms for all of ours, in stalls of 8-18 ms per router that held every call in flight).
``create_app`` walks them up front; here, requests to routes of several routers must not build
any route state. In process, without a database: the answers may be 503, routing still runs.
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
