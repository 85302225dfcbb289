"""A fault-injectable stand-in for the Anthropic Messages API, plus a webhook receiver.

The chaos suite needs a provider it can break on command without paying for tokens or patching
the SDK: the deployment under test points ``QUARTERDECK_ANTHROPIC_BASE_URL`` here and drives it
with the real ``anthropic`` SDK (streaming, as production does). Every request gets a short
scripted conversation: ``list_files`` tool calls until turn ``turns``, then a final text answer,
so a run needs a known number of turns and bills a known number of tokens per turn.

:meth:`FakeProvider.set_fault` switches the answer per model at runtime (``healthy``, ``429``
with ``retry-after``, ``529`` overloaded, ``500``, or ``429+529`` alternating); ``"*"`` is the
default for every model without its own entry and also governs the free ``GET /v1/models``
probe the health check makes. It lives in-process (uvicorn in a daemon thread), so the runner
flips faults with a plain method call.

``POST /hooks/webhook`` records incident notifications so the runner can check each one arrived
exactly once without any external receiver.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Fault = Literal["healthy", "429", "529", "500", "429+529"]
FAULTS: tuple[str, ...] = ("healthy", "429", "529", "500", "429+529")
INPUT_TOKENS = 120
OUTPUT_TOKENS = 30
_ids = itertools.count(1)


@dataclass(frozen=True)
class Notification:
    """One webhook delivery as received: the event kind and the incident it is about."""

    event: str
    incident_id: str
    service: str
    delivery_id: int
    at: float


class FakeProvider:
    """``POST /v1/messages``, ``GET /v1/models`` and ``POST /hooks/webhook`` on a free port."""

    def __init__(self, turns: int = 3, latency_s: float = 0.2, retry_after_s: float = 1.0) -> None:
        self.turns = turns
        self.latency_s = latency_s
        self.retry_after_s = retry_after_s
        self._faults: dict[str, Fault] = {"*": "healthy"}
        self._lock = threading.Lock()
        self._flip = itertools.count()
        self.answered: Counter[tuple[str, int]] = Counter()  # (model, status) -> count
        self.notifications: list[Notification] = []
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------------
    def set_fault(self, fault: Fault, model: str = "*") -> None:
        """Switch what ``model`` (or every model, ``"*"``) answers from now on."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults[model] = fault

    def heal(self) -> None:
        with self._lock:
            self._faults = {"*": "healthy"}

    def fault_for(self, model: str) -> Fault:
        with self._lock:
            for name, fault in self._faults.items():
                if name != "*" and model.startswith(name):
                    return fault
            return self._faults["*"]

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/hooks/webhook"

    # -- HTTP ------------------------------------------------------------------------------------
    def _error(self, fault: Fault) -> Response | None:
        if fault == "healthy":
            return None
        status = int(fault) if fault != "429+529" else (429 if next(self._flip) % 2 else 529)
        kinds = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}
        body = {"type": "error", "error": {"type": kinds[status], "message": "chaos: injected"}}
        headers = {"retry-after": f"{self.retry_after_s:g}"} if status == 429 else {}
        return JSONResponse(body, status_code=status, headers=headers)

    async def _messages(self, request: Request) -> Response:
        payload: dict[str, Any] = json.loads(await request.body())
        model = str(payload.get("model", ""))
        failure = self._error(self.fault_for(model))
        if failure is not None:
            self._count(model, failure.status_code)
            return failure
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        turn = 1 + sum(1 for m in payload.get("messages", []) if m.get("role") == "assistant")
        message = self._reply(model, turn)
        self._count(model, 200)
        if not payload.get("stream"):
            return JSONResponse(message)
        return StreamingResponse(_sse(message), media_type="text/event-stream")

    def _reply(self, model: str, turn: int) -> dict[str, Any]:
        content: list[dict[str, Any]]
        if turn < self.turns:
            tool = {"type": "tool_use", "id": f"toolu_{next(_ids):08d}", "name": "list_files"}
            content = [{"type": "text", "text": f"turn {turn}: looking"}, {**tool, "input": {}}]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": "done: nothing to change"}], "end_turn"
        return {
            "id": f"msg_{next(_ids):08d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
        }

    async def _models(self, request: Request) -> Response:
        failure = self._error(self.fault_for("*"))
        if failure is not None and failure.status_code != 429:
            return failure
        data = [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Sonnet"}]
        return JSONResponse({"data": data, "has_more": False, "first_id": None, "last_id": None})

    async def _webhook(self, request: Request) -> Response:
        body: dict[str, Any] = json.loads(await request.body())
        incident = body.get("incident") or {}
        note = Notification(
            str(body.get("event")),
            str(incident.get("id")),
            str(incident.get("service")),
            int(body.get("delivery_id") or 0),
            time.time(),
        )
        with self._lock:
            self.notifications.append(note)
        return JSONResponse({"ok": True})

    def _count(self, model: str, status: int) -> None:
        with self._lock:
            self.answered[(model, status)] += 1

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeProvider:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        routes = [
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/hooks/webhook", self._webhook, methods=["POST"]),
        ]
        config = uvicorn.Config(
            Starlette(routes=routes),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            backlog=2048,
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="chaos-fake-api",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("the fake Messages API did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


async def _sse(message: dict[str, Any]) -> AsyncIterator[bytes]:
    """The event sequence the real API streams for ``message`` (usage split as documented)."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
        else:
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events += [
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
