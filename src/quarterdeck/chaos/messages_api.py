"""The one local stand-in for the Anthropic Messages API, for the tests and the chaos suite alike.

Nothing patches the ``anthropic`` SDK: code under test gets this server's :attr:`base_url` (or
``QUARTERDECK_ANTHROPIC_BASE_URL``) and the real SDK talks to it over a socket, JSON or SSE. It has
to be faithful where the SDK and Quarterdeck look: error bodies (``{"type": "error", ...}``),
``retry-after`` on 429s, ``anthropic-ratelimit-*`` headers, the SSE event sequence (usage on
``message_start``, cumulative usage on ``message_delta``, a ``ping``, ``error`` events mid-stream)
and the cache-accounting usage fields (``cache_read_input_tokens``, the ``cache_creation`` TTL
split). It lives in the package, not in ``tests/``, because ``quarterdeck chaos`` ships it.

What a ``POST /v1/messages`` gets, first match wins:

1. an injected **fault** for the request's model (:meth:`MessagesAPIServer.set_fault`: ``429``
   with ``retry-after``, ``529`` overloaded, ``500``, or ``429+529`` alternating; ``"*"`` is every
   model without its own entry and also governs ``GET /v1/models``). Faults consume no script;
2. the next **scripted** :class:`~.fake_http.Reply` (FIFO; see :func:`message`, :func:`error`,
   :func:`stream_error`), which is how tests say exactly what the API answers, in order;
3. the **default**: with a :class:`Conversation` (the chaos runner's mode) a short agent dialogue,
   ``list_files`` tool calls until turn ``turns`` and then a final answer, billing a known number
   of tokens per turn; without one, a plain ``"ok"`` text message.

In **cache-accounting** mode (:meth:`MessagesAPIServer.cache_accounting`) the default reply's
input-side usage is computed from the request's ``cache_control`` breakpoints against a prompt
cache kept per API key (:mod:`.cache_accounting`, :mod:`quarterdeck.kit.prompt_cache`), JSON and
SSE alike, and breakpoints the API rejects (more than four, a bad ``ttl``) answer its 400.

Every request is in :attr:`~.fake_http.ScriptedServer.requests`, every answer counted per
``(model, status)`` in :attr:`MessagesAPIServer.answered`, and ``POST /hooks/webhook`` records
incident notifications (:class:`Notification`) so the chaos runner needs no other receiver.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quarterdeck.chaos.cache_accounting import CacheAccounting
from quarterdeck.chaos.fake_http import Event, Reply, ScriptedServer, chunks, next_id
from quarterdeck.kit.clock import Clock
from quarterdeck.kit.prompt_cache import CacheRequestError

Fault = Literal["healthy", "429", "529", "500", "429+529"]
FAULTS: tuple[str, ...] = ("healthy", "429", "529", "500", "429+529")
ERROR_TYPES = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}
RATE_LIMIT_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-input-tokens-remaining": "39000",
}


# --- content and replies ---------------------------------------------------------------------
def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def thinking(value: str, signature: str = "sig") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def redacted_thinking(data: str) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or next_id("toolu"), "name": name, "input": input}


def make_usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    split: bool = True,
) -> dict[str, Any]:
    """A usage object as the API sends it; ``split=False`` omits the ``cache_creation`` split."""
    data: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
    }
    if split:
        data["cache_creation"] = {
            "ephemeral_5m_input_tokens": cache_5m,
            "ephemeral_1h_input_tokens": cache_1h,
        }
    return data


def message(
    *content: dict[str, Any],
    stop_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "claude-sonnet-4-5-20250929",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
    event_delay: float = 0.0,
) -> Reply:
    """A successful reply; ``stop_reason`` defaults to tool_use when a tool_use block is present."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    body = {
        "id": next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content) or [text("ok")],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or make_usage(),
    }
    return Reply(body=body, headers=headers or {}, delay=delay, event_delay=event_delay)


def error(
    status: int,
    error_type: str,
    message: str = "scripted failure",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return Reply(status=status, body=body, headers=headers or {}, delay=delay)


def message_events(body: dict[str, Any], chunk: int = 4) -> list[Event]:
    """Convert a message into the SSE event sequence the real API sends for it.

    ``message_start`` carries the input-side usage (and the cache TTL split); ``message_delta``
    carries the *cumulative* usage, as the API documents. A ``ping`` follows the first block start.
    """
    u = body["usage"]
    start = {**body, "content": [], "stop_reason": None, "usage": {**u, "output_tokens": 1}}
    events: list[Event] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body["content"]):
        if block["type"] == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in chunks(block["text"], chunk)]
        elif block["type"] == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": c} for c in chunks(block["thinking"], chunk)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif "input" in block:  # tool_use, server_tool_use: the input streams as JSON
            empty = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": c} for c in chunks(raw, chunk * 2)
            ]
        else:  # redacted_thinking, *_tool_result: whole in content_block_start, no deltas
            empty, deltas = block, []
        start_block = {"type": "content_block_start", "index": index, "content_block": empty}
        events.append(("content_block_start", start_block))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    cumulative = {k: v for k, v in u.items() if k != "cache_creation"}
    stop = {"stop_reason": body["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": cumulative}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def stream_error(
    reply: Reply, after: int, error_type: str = "overloaded_error", message: str = "Overloaded"
) -> Reply:
    """``reply`` streamed, but cut after ``after`` events by an ``error`` event (HTTP 200)."""
    events = message_events(reply.body)[:after]
    events.append(("error", {"type": "error", "error": {"type": error_type, "message": message}}))
    return Reply(body=reply.body, headers=reply.headers, events=events)


@dataclass(frozen=True)
class Conversation:
    """The default dialogue under load: tool calls until turn ``turns``, then a final answer.

    The turn is read from the request (one more than the assistant messages it carries), so a
    run resumed on another worker continues where it was; every turn bills ``input_tokens`` and
    ``output_tokens`` and takes ``latency_s``, so the chaos audit knows what each run must cost.
    """

    turns: int = 3
    latency_s: float = 0.2
    input_tokens: int = 120
    output_tokens: int = 30

    def __call__(self, model: str, payload: Mapping[str, Any]) -> Reply:
        turn = 1 + sum(1 for m in payload.get("messages", []) if m.get("role") == "assistant")
        usage = make_usage(self.input_tokens, self.output_tokens)
        if turn < self.turns:
            content = [text(f"turn {turn}: looking"), tool_use("list_files", {})]
        else:
            content = [text("done: nothing to change")]
        return message(*content, model=model, usage=usage, delay=self.latency_s)


@dataclass(frozen=True)
class Notification:
    """One webhook delivery as received: the event kind and the incident it is about."""

    event: str
    incident_id: str
    service: str
    delivery_id: int
    at: float


# --- the server --------------------------------------------------------------------------------
class MessagesAPIServer(ScriptedServer):
    """``POST /v1/messages``, ``GET /v1/models`` and ``POST /hooks/webhook`` on a free port.

    ``rate_limit_headers`` go on every ``/v1/messages`` answer; the chaos runner passes ``{}``
    because Quarterdeck's client-side buckets believe them, and a 50-requests limit would throttle
    its load instead of the faults it injects.
    """

    models = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")

    def __init__(
        self,
        conversation: Conversation | None = None,
        *,
        retry_after_s: float = 1.0,
        rate_limit_headers: Mapping[str, str] | None = None,
        record_requests: bool = True,
    ) -> None:
        super().__init__(record_requests=record_requests)
        self.conversation = self._initial_conversation = conversation
        self.accounting: CacheAccounting | None = None
        self.retry_after_s = retry_after_s
        self.rate_limit_headers = dict(
            RATE_LIMIT_HEADERS if rate_limit_headers is None else rate_limit_headers
        )
        self._faults: dict[str, Fault] = {"*": "healthy"}
        self._flip = itertools.count()
        self._fault_lock = threading.Lock()
        self.answered: Counter[tuple[str, int]] = Counter()  # (model, status) -> count
        self.notifications: list[Notification] = []

    # -- control ---------------------------------------------------------------------------------
    def set_fault(self, fault: Fault, model: str = "*") -> None:
        """Switch what ``model`` (a prefix; or every model, ``"*"``) answers from now on."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        with self._fault_lock:
            self._faults[model] = fault

    def heal(self) -> None:
        with self._fault_lock:
            self._faults = {"*": "healthy"}

    def fault_for(self, model: str) -> Fault:
        with self._fault_lock:
            for name, fault in self._faults.items():
                if name != "*" and model.startswith(name):
                    return fault
            return self._faults["*"]

    def cache_accounting(
        self, clock: Clock | None = None, conversation: Conversation | None = None
    ) -> CacheAccounting:
        """Compute un-scripted replies' input usage from their breakpoints (until :meth:`reset`),
        with TTLs on ``clock``; ``conversation`` (optional) plays the default dialogue."""
        self.accounting = CacheAccounting(clock)
        if conversation is not None:
            self.conversation = conversation
        return self.accounting

    def reset(self) -> None:
        """Empty script and logs, every model healthy, no cache accounting: the state a fresh
        test expects."""
        super().reset()
        self.heal()
        self.accounting = None
        self.conversation = self._initial_conversation
        with self._lock:
            self.answered.clear()
            self.notifications.clear()

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/hooks/webhook"

    # -- HTTP ------------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/hooks/webhook", self._webhook, methods=["POST"]),
        ]

    def fault_reply(self, fault: Fault) -> Reply | None:
        """The error an injected fault answers with, or None when ``healthy``."""
        if fault == "healthy":
            return None
        status = int(fault) if fault != "429+529" else (429 if next(self._flip) % 2 else 529)
        headers = {"retry-after": f"{self.retry_after_s:g}"} if status == 429 else {}
        return error(status, ERROR_TYPES[status], "chaos: injected", headers=headers)

    def _default(self, model: str, payload: Mapping[str, Any]) -> Reply:
        if self.conversation is None:
            return message(text("ok"))
        return self.conversation(model, payload)

    def _accounted(self, headers: Mapping[str, str], payload: Mapping[str, Any]) -> Reply | None:
        """In cache-accounting mode: the 400 for bad breakpoints, or the scripted reply if any,
        else the default one billed by the cache model. None: not in that mode."""
        accounting = self.accounting
        if accounting is None:
            return None
        try:
            usage = accounting.account(headers, payload)
        except CacheRequestError as exc:
            return error(400, "invalid_request_error", str(exc))
        scripted = self.next_reply()
        if scripted is not None:
            return scripted
        reply = self._default(str(payload.get("model", "")), payload)
        output = int(reply.body.get("usage", {}).get("output_tokens", 5))
        body = {**reply.body, "usage": accounting.usage_json(usage, output)}
        return dataclasses.replace(reply, body=body)

    async def _messages(self, request: Request) -> Response:
        recorded = await self.record(request)
        payload = recorded.json if isinstance(recorded.json, dict) else {}
        model = str(payload.get("model", ""))
        reply = self.fault_reply(self.fault_for(model)) or self._accounted(
            recorded.headers, payload
        )
        if reply is None:
            reply = self.next_reply() or self._default(model, payload)
        if reply.delay and not await self.pause(request, reply.delay):
            self._count(model, 499)
            return Response(status_code=499)
        self._count(model, reply.status)
        base = {"request-id": next_id("req"), **self.rate_limit_headers}
        return self.respond(reply, bool(payload.get("stream")), message_events, base)

    async def _models(self, request: Request) -> Response:
        await self.record(request)
        failure = self.fault_reply(self.fault_for("*"))
        if failure is not None and failure.status != 429:  # the probe is not rate limited
            return JSONResponse(failure.body, status_code=failure.status)
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    async def _webhook(self, request: Request) -> Response:
        body = (await self.record(request)).json or {}
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
