"""pytest fixtures for the fake provider APIs.

Each server is started once per process, on first use (uvicorn in a thread costs ~100 ms), and is
reset before every test, so a test sees an empty script and an empty request log. The servers are
module-level singletons rather than session fixtures so that importing one fixture by name is
enough::

    from tests.support.fixtures import messages_api, openai_api  # noqa: F401

Registering this module as a plugin (``pytest_plugins = ["tests.support.fixtures"]``) in the root
conftest works too.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from typing import TypeVar

import pytest

from quarterdeck.chaos.fake_http import ScriptedServer
from quarterdeck.chaos.messages_api import MessagesAPIServer
from tests.support.openai_api import OpenAIAPIServer

S = TypeVar("S", bound=ScriptedServer)

_servers: dict[type[ScriptedServer], ScriptedServer] = {}
_lock = threading.Lock()


def shared_server(kind: type[S]) -> S:
    """The process-wide running instance of ``kind``, started on first call."""
    with _lock:
        server = _servers.get(kind)
        if server is None:
            server = kind()
            server.start()
            atexit.register(server.stop)
            _servers[kind] = server
    assert isinstance(server, kind)
    return server


@pytest.fixture
def messages_api() -> Iterator[MessagesAPIServer]:
    """A running fake Anthropic Messages API with an empty script."""
    server = shared_server(MessagesAPIServer)
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def openai_api() -> Iterator[OpenAIAPIServer]:
    """A running fake OpenAI-compatible chat completions API with an empty script."""
    server = shared_server(OpenAIAPIServer)
    server.reset()
    yield server
    server.reset()
