"""The asyncpg pool, and the one place driver errors become Quarterdeck errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, cast

import asyncpg
import structlog

from quarterdeck.config import Settings
from quarterdeck.exceptions import StoreError, Unavailable, ValidationFailed

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Errors that mean "the database is not there right now" rather than "the query is wrong".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    # The protocol state machine of a connection whose server went away mid-operation (seen
    # when Postgres restarts under load): the connection is unusable, the database may be back.
    asyncpg.exceptions.InternalClientError,
)

# Errors that mean "a value given to the query cannot be stored": SQLSTATE class 22, "data
# exception" (a NUL in text, a number out of range, text too long), which asyncpg also raises
# for its own check of an argument (an int past int64). The caller's input, not the database's
# health. Checked before CONNECTION_ERRORS: asyncpg's client-side ``DataError`` is an
# ``InterfaceError`` and would otherwise read as "database unavailable".
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions._base.DataError,
)


class UnstorableValue(ValidationFailed, ValueError):
    """422: Postgres refused a value of the request (the last resort behind the API's own
    validation, so no such input ever surfaces as a 500). Also a ``ValueError``, as asyncpg's
    argument errors are, so code that skips an unstorable row (the gateway's call recorder)
    still recognises it."""

    type_slug = "unstorable-value"
    title = "Value cannot be stored"

    def __init__(self, reason: str) -> None:
        detail = f"a value in the request cannot be stored: {reason}"
        super().__init__(detail, errors=[{"field": "request", "message": reason}])


class _PooledConnection(asyncpg.Connection):
    """A pool connection released without asyncpg's reset query.

    The default reset (``UNLISTEN *``, ``RESET ALL``, advisory unlock, ``CLOSE ALL``) is a round
    trip on every release, and a run takes several connections from the pool. Pooled connections
    never carry session state here: LISTEN, session advisory locks and migrations use dedicated
    connections, so there is nothing to reset. An open transaction is still rolled back.
    """

    def get_reset_query(self) -> str:
        return ""


def database_url(settings: Settings) -> str:
    if settings.postgres_url is not None:
        return settings.postgres_url.get_secret_value()
    from quarterdeck.store.embedded import start_embedded

    return start_embedded(settings.data_dir)


class Database:
    """Owns the pool. Repositories take a connection from :meth:`acquire` or :meth:`transaction`."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 20) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            database_url(settings), min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=self.min_size,
                max_size=self.max_size,
                command_timeout=60,
                max_inactive_connection_lifetime=300,
                init=_init_connection,
                connection_class=_PooledConnection,
            )
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"cannot connect to Postgres: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise StoreError(f"cannot open the Postgres pool: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def recycle(self) -> None:
        """Drop every pooled connection so the next use reconnects (after a database restart)."""
        if self._pool is not None:
            await self._pool.expire_connections()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("database pool is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self.pool.acquire() as conn:
                yield cast(asyncpg.Connection, conn)
        except DATA_ERRORS as exc:
            raise UnstorableValue(str(exc)) from exc
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"database unavailable: {exc}") from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield cast(asyncpg.Connection, conn)
        except DATA_ERRORS as exc:
            raise UnstorableValue(str(exc)) from exc
        except CONNECTION_ERRORS as exc:
            raise Unavailable(f"database unavailable: {exc}") from exc

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self.acquire() as conn:
            return await fn(conn)

    async def ping(self) -> None:
        async with self.acquire() as conn:
            await conn.fetchval("SELECT 1")


async def _init_connection(conn: asyncpg.Connection) -> None:
    import json

    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect_once(url: str) -> asyncpg.Connection:
    """A single, non-pooled connection with the same codecs (for listeners and migrations)."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(url)
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"cannot connect to Postgres: {exc}") from exc
    await _init_connection(conn)
    return conn
