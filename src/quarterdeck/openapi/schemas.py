"""The schemas the conformed document adds: the two error bodies and the gateway's requests.

Data, kept apart from the rewriting in ``__init__`` so each reads on its own: what an error of
this API looks like (RFC 9457), what the gateway's errors look like (Anthropic's envelope), and
what the gateway itself checks of a Messages request before relaying it (400 otherwise).
"""

from __future__ import annotations

from typing import Any

from quarterdeck.gateway.api import MAX_MODEL_CHARS, MAX_TOKENS_LIMIT

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ProblemDetails",
    "type": "object",
    "description": "An RFC 9457 problem: every error of this API except the gateway's.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "permission": {"type": "string"},
        "retry_after": {"type": "number"},
    },
}

ANTHROPIC_ERROR_SCHEMA: dict[str, Any] = {
    "title": "AnthropicError",
    "type": "object",
    "description": "Anthropic's error envelope, which the gateway's clients read.",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": "string"},
    },
}

MESSAGES_REQUEST: dict[str, Any] = {
    "title": "MessagesRequest",
    "type": "object",
    "description": "An Anthropic Messages API request, relayed as sent. What the gateway itself "
    "checks is declared here (400 otherwise); the upstream checks the rest.",
    "required": ["model", "messages"],
    "properties": {
        "model": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_MODEL_CHARS,
            # Printable ASCII with something besides spaces (the model name goes into a header).
            "pattern": "^[ -~]*[!-~][ -~]*$",
        },
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {
                        "anyOf": [
                            {"type": "string"},
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["type"],
                                    "properties": {"type": {"type": "string"}},
                                },
                            },
                        ]
                    },
                },
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
        "stream": {"type": "boolean"},
        "system": {"anyOf": [{"type": "string"}, {"type": "array"}, {"type": "null"}]},
        "tools": {"anyOf": [{"type": "array"}, {"type": "null"}]},
    },
}

COUNT_TOKENS_REQUEST: dict[str, Any] = {
    **MESSAGES_REQUEST,
    "title": "CountTokensRequest",
    "description": "A Messages API request whose tokens are counted; forwarded as sent.",
    "properties": {
        **MESSAGES_REQUEST["properties"],
        "model": {"type": "string", "minLength": 1},
        "max_tokens": {},
        "stream": {},
    },
}

SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "With `stream: true`: one server-sent event of the Messages API stream.",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}

UNIX_SECONDS: dict[str, Any] = {
    "type": "string",
    "pattern": "^-?[0-9]{1,10}(\\.[0-9]{1,6})?$",
    "description": "Unix time in seconds.",
}
