"""Leadership for singleton loops (the health monitor) through a Postgres advisory lock.

Every replica runs a :class:`LeaderElector`; the one that holds ``pg_try_advisory_lock(key)`` on
its own dedicated connection is the leader. The lock lives exactly as long as that session, which
gives the properties we need without another moving part (no Redis, no Kubernetes API):

- a leader process that dies (SIGKILL, OOM, node loss) loses its session and Postgres frees the
  lock; a non-leader retrying every ``retry_s`` (5 s) takes over within one retry after the
  server notices. TCP keepalives are set on the session (idle 5 s, 3 probes 2 s apart) so even a
  silently vanished client is noticed in about 11 s, which keeps hand-over within ~15 s;
- a leader that loses *its* connection (database restart, network cut) stops being leader at
  once (a termination listener, and a ``SELECT 1`` every ``retry_s``), so two monitors never run
  against the same database at the same time for longer than one ping timeout.

The error is always on the safe side: for a moment there may be no leader, never two that both
believe it for long. Deployments without Postgres session affinity (e.g. behind PgBouncer in
transaction mode, where session locks do not work) use the Kubernetes ``Lease`` elector in
:mod:`quarterdeck.health.lease` instead (``QUARTERDECK_HEALTH_LEADER_BACKEND``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import asyncpg
import structlog
from prometheus_client import Gauge

from quarterdeck.metrics import REGISTRY
from quarterdeck.store import locks
from quarterdeck.store.pool import CONNECTION_ERRORS

log = structlog.get_logger(__name__)

HEALTH_MONITOR_KEY = locks.HEALTH_MONITOR
"""Advisory lock key of the health monitor (every key is in :mod:`quarterdeck.store.locks`)."""

LEADER = Gauge(
    "claude_agent_leader",
    "1 while this process holds the named singleton role (advisory lock), else 0",
    ["role"],
    registry=REGISTRY,
)

_SESSION_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
    TimeoutError,
)
_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "application_name": "quarterdeck-leader",
}


class Elector(Protocol):
    """What the health monitor needs from an elector (advisory lock or Kubernetes Lease)."""

    @property
    def is_leader(self) -> bool: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class LeaderElector:
    """Holds (or keeps trying to take) one advisory lock on a dedicated connection.

    ``run()`` loops until ``stop()``; read ``is_leader`` at any time. ``on_change(bool)`` is
    called on every transition, e.g. to reset state a new leader must rebuild from the database.
    """

    def __init__(
        self,
        url: str,
        key: int = HEALTH_MONITOR_KEY,
        retry_s: float = 5.0,
        *,
        role: str = "health_monitor",
        connect_timeout_s: float = 5.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.url = url
        self.key = key
        self.retry_s = retry_s
        self.role = role
        self.connect_timeout_s = connect_timeout_s
        self.on_change = on_change
        self._conn: asyncpg.Connection | None = None
        self._leader = False
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        LEADER.labels(role).set(0)

    @property
    def is_leader(self) -> bool:
        return self._leader and self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The Postgres backend holding (or trying for) the lock; for operators and tests."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def run(self) -> None:
        """Try for the lock every ``retry_s`` until stopped; keep checking the session once held."""
        try:
            while not self._stop.is_set():
                try:
                    await self._step()
                except _SESSION_ERRORS as exc:
                    log.warning("leader.session_lost", role=self.role, error=str(exc) or "timeout")
                    await self._drop_connection()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.retry_s)
        finally:
            await self._release()

    async def stop(self) -> None:
        """Give leadership up now (unlock and close), so a successor need not wait for a retry."""
        self._stop.set()
        await self._release()

    async def wait_until(self, leader: bool, timeout: float) -> bool:
        """Wait until ``is_leader == leader``; False on timeout (tests, start-up logs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.is_leader is not leader:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.1))
        return True

    async def _step(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._set(False)
            self._conn = await asyncio.wait_for(
                asyncpg.connect(self.url, server_settings=_KEEPALIVES),
                timeout=self.connect_timeout_s,
            )
            self._conn.add_termination_listener(self._on_terminated)
        timeout = max(1.0, min(self.retry_s, self.connect_timeout_s))
        if self._leader:
            await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=timeout)
            return
        got = await asyncio.wait_for(
            self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key), timeout=timeout
        )
        self._set(bool(got))

    def _on_terminated(self, _conn: object) -> None:
        if self._leader:
            log.warning("leader.connection_closed", role=self.role)
        self._set(False)

    def _set(self, leader: bool) -> None:
        if leader is self._leader:
            return
        self._leader = leader
        LEADER.labels(self.role).set(1 if leader else 0)
        log.info("leader.acquired" if leader else "leader.lost", role=self.role, key=self.key)
        self._changed.set()
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception:  # a faulty callback must not cost us the lock loop
                log.exception("leader.on_change_failed", role=self.role)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._set(False)
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        self._set(False)
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=2.0)  # ending the session frees the lock
        except Exception:
            conn.terminate()
