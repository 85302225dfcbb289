"""A local, scripted fake of an OpenAI-compatible chat completions server (vLLM, Ollama, llama.cpp).

Same scripting model as :mod:`quarterdeck.chaos.messages_api` (the base is
:mod:`quarterdeck.chaos.fake_http`): push :class:`Reply` objects, read
``server.requests``. A 200 completion is served as JSON, or as ``chat.completion.chunk`` SSE (with a
trailing usage chunk when ``stream_options.include_usage`` is set, then ``data: [DONE]``) when the
request streams.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quarterdeck.chaos.fake_http import Event, Reply, ScriptedServer, chunks, next_id


def tool_call(name: str, arguments: dict[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": id or next_id("call"),
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def completion(
    content: str | None = "ok",
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int | None = None,
    model: str = "qwen2.5-coder",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    body = {
        "id": next_id("chatcmpl"),
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": usage,
    }
    return Reply(body=body, headers=headers or {}, delay=delay)


def error(
    status: int,
    error_type: str,
    message: str = "scripted failure",
    headers: dict[str, str] | None = None,
    code: Any = None,
) -> Reply:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return Reply(status=status, body=body, headers=headers or {})


def completion_events(
    body: dict[str, Any], include_usage: bool = True, chunk: int = 4
) -> list[Event]:
    """Split a completion into chunks the way vLLM does: role, content, tool-call fragments."""
    base = {
        "id": body["id"],
        "object": "chat.completion.chunk",
        "created": body["created"],
        "model": body["model"],
    }
    choice = body["choices"][0]
    msg = choice["message"]

    def chunk_of(delta: dict[str, Any], finish: str | None = None) -> tuple[None, Any]:
        return (
            None,
            {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            },
        )

    events: list[Event] = [chunk_of({"role": "assistant", "content": ""})]
    if msg.get("content"):
        events += [chunk_of({"content": c}) for c in chunks(msg["content"], chunk)]
    for index, call in enumerate(msg.get("tool_calls") or []):
        events.append(
            chunk_of(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in chunks(call["function"]["arguments"], chunk * 2):
            events.append(
                chunk_of({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    events.append(chunk_of({}, choice["finish_reason"]))
    if include_usage:
        events.append((None, {**base, "choices": [], "usage": body["usage"]}))
    events.append((None, "[DONE]"))
    return events


def stream_error(
    reply: Reply,
    after: int,
    message: str = "engine overloaded",
    error_type: str = "server_error",
    code: Any = 503,
) -> Reply:
    """``reply`` streamed, then an in-band ``{"error": ...}`` chunk after ``after`` chunks."""
    events = completion_events(reply.body)[:after]
    events.append((None, {"error": {"message": message, "type": error_type, "code": code}}))
    return Reply(body=reply.body, headers=reply.headers, events=events)


class OpenAIAPIServer(ScriptedServer):
    """``POST /v1/chat/completions`` and ``GET /v1/models``."""

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ]

    async def _chat(self, request: Request) -> Response:
        recorded = await self.record(request)
        reply = self.next_reply() or completion()
        if reply.delay and not await self.pause(request, reply.delay):
            return Response(status_code=499)
        payload = recorded.json if isinstance(recorded.json, dict) else {}
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        def to_events(body: dict[str, Any]) -> list[Event]:
            return completion_events(body, include_usage=include_usage)

        base = {"x-request-id": next_id("req")}
        return self.respond(reply, bool(payload.get("stream")), to_events, base)

    async def _models(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": "qwen2.5-coder", "object": "model", "created": 0, "owned_by": "local"},
                ],
            }
        )
