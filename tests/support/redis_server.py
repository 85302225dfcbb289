"""A real ``redis-server`` on a free loopback port, for integration and chaos tests.

Use the fixture::

    from tests.support.redis_server import redis_server  # noqa: F401

    async def test_x(redis_server: RedisServer) -> None:
        ... redis_server.url ...
        redis_server.kill()      # SIGKILL: an abrupt crash, nothing flushed
        redis_server.start()     # same port again, empty (no persistence)

or drive :class:`RedisServer` directly (it is also a context manager). It is the chaos suite's
:class:`~quarterdeck.chaos.deploy.RedisProcess` (one process harness for every test), so a test
Redis and a chaos Redis behave the same. Tests are skipped when ``redis-server`` is not installed
(``make deps`` installs it from Debian).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quarterdeck.chaos.deploy import RedisProcess as RedisServer
from quarterdeck.chaos.deploy import redis_server_binary

__all__ = ["RedisServer", "redis_server", "redis_server_binary"]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running, empty ``redis-server`` for one test; stopped afterwards whatever happened."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (make deps installs it)")
    with RedisServer() as server:
        yield server
