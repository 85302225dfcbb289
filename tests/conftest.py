"""Shared fixtures: a real embedded Postgres for the session, and a fresh database per test.

Each test database is cloned from a migrated template (``CREATE DATABASE ... TEMPLATE``), which
takes a fraction of a second and keeps tests independent without re-running migrations.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from quarterdeck.chaos.process import free_port as free_port  # re-exported for tests
from quarterdeck.config import Settings, load_settings
from quarterdeck.store import migrations
from quarterdeck.store.embedded import start_embedded
from tests.support.fake_kubernetes import FakeKubernetes

pytest_plugins = ["tests.support.receivers"]

_counter = itertools.count()


def world_readable_tmpdir(prefix: str) -> Path:
    """A temp dir the embedded Postgres (which runs as its own user under root) can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def with_database(url: str, name: str) -> str:
    return re.sub(
        r"/[^/?]*(\?|$)", rf"/{name}\1", url.replace("://", ":__SLASH__", 1), count=1
    ).replace(":__SLASH__", "://", 1)


@pytest.fixture(scope="session")
def pg_base_url() -> str:
    data_dir = world_readable_tmpdir("qd-test-pg-")
    return start_embedded(data_dir)


@pytest.fixture(scope="session")
async def template_url(pg_base_url: str) -> str:
    conn = await asyncpg.connect(pg_base_url)
    try:
        await conn.execute("DROP DATABASE IF EXISTS qd_template")
        await conn.execute("CREATE DATABASE qd_template")
    finally:
        await conn.close()
    url = with_database(pg_base_url, "qd_template")
    await migrations.upgrade(url)
    return url


@pytest.fixture
async def db_url(pg_base_url: str, template_url: str) -> AsyncIterator[str]:
    name = f"qd_test_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(pg_base_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE qd_template")
    finally:
        await conn.close()
    yield with_database(pg_base_url, name)
    conn = await asyncpg.connect(pg_base_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[object]:
    """An open pool on the test's own database."""
    from quarterdeck.store.pool import Database

    database = Database(db_url, min_size=1, max_size=10)
    await database.open()
    yield database
    await database.close()


@pytest.fixture(scope="module")
def fake_k8s() -> Iterator[FakeKubernetes]:
    """The Kubernetes API stand-in, one per test module (a test resets what it needs)."""
    server = FakeKubernetes()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = world_readable_tmpdir("qd-test-data-")
    yield path


@pytest.fixture
def make_settings(db_url: str, data_dir: Path) -> object:
    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "postgres_url": db_url,
            "data_dir": data_dir,
            "metrics_port": 0,
            "worker_dequeue_timeout": 1.0,
            "drain_timeout": 5.0,
        }
        base.update(overrides)
        return load_settings(None, **base)

    return make


@pytest.fixture
async def runtime(make_settings: object) -> AsyncIterator[object]:
    from quarterdeck.runtime import Runtime

    rt = Runtime(make_settings())  # type: ignore[operator]
    await rt.start()
    yield rt
    await rt.stop()


@pytest.fixture
async def client(runtime: object) -> AsyncIterator[httpx.AsyncClient]:
    from quarterdeck.app import create_app

    app = create_app(runtime.settings, runtime)  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as c:
        yield c


async def eventually(predicate: object, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``predicate`` (sync or async) until truthy, failing after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
