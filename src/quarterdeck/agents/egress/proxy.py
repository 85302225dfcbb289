"""The egress proxy: the only way out of a sandbox that has no network of its own.

One :class:`EgressProxy` serves one run, on a UNIX socket in a directory only the run's sandbox
identity can enter; the sandbox bind-mounts that socket and bridges it to ``127.0.0.1:3128``
inside (``HTTP(S)_PROXY``). For each connection it reads one request head, asks
:class:`~.policy.EgressPolicy` about the name, resolves the name *once*, asks again about every
address, and connects to an address it checked (a second lookup could answer differently: DNS
rebinding). A refusal is a ``403`` whose body says why. Every connection, allowed or refused,
ends in one :class:`EgressRecord` handed to ``on_connection``: the caller audits it.

Resolution and the address check are constructor arguments, so a test can point a name at a
local server and relax the loopback refusal for that test only; production uses the system
resolver and :func:`~.policy.address_refusal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from quarterdeck.agents.egress.http import (
    MAX_HEAD_BYTES,
    Destination,
    EgressRequestError,
    answer,
    destination,
    forwarded_head,
    parse_head,
)
from quarterdeck.agents.egress.policy import (
    AddressCheck,
    EgressPolicy,
    Verdict,
    address_refusal,
    connect_order,
)
from quarterdeck.kit.clock import Clock, SystemClock
from quarterdeck.kit.unix_server import UnixServer

log = structlog.get_logger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
HEAD_TIMEOUT_S = 30.0
RESOLVE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 300.0
MAX_CONNECTIONS = 64
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class EgressRecord:
    """One connection through the proxy, as audited. ``bytes_up`` went from the command to the
    destination (request head included), ``bytes_down`` came back; both 0 when refused."""

    run_id: str
    host: str
    port: int
    method: str
    allowed: bool
    reason: str
    rule_id: str | None
    address: str | None
    bytes_up: int
    bytes_down: int
    started: datetime
    ended: datetime

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started"], out["ended"] = self.started.isoformat(), self.ended.isoformat()
        out["duration_ms"] = round((self.ended - self.started).total_seconds() * 1000, 3)
        return out


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Conn:
    """What one connection learned, for its record."""

    def __init__(self, started: datetime) -> None:
        self.started = started
        self.host, self.port, self.method = "", 0, ""
        self.verdict = Verdict(False, "no request", "egress.bad-request")
        self.address: str | None = None
        self.up = self.down = 0
        self.silent = False  # closed before sending a byte (a port probe): nothing to record


class EgressProxy(UnixServer):
    """An HTTP proxy on a UNIX socket for one run. Use ``async with`` or start/close."""

    def __init__(
        self,
        run_id: str,
        socket_path: Path,
        policy: EgressPolicy,
        on_connection: Callable[[EgressRecord], None],
        *,
        resolver: Resolver = system_resolver,
        address_check: AddressCheck = address_refusal,
        owner: tuple[int, int] | None = None,
        clock: Clock | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.run_id = run_id
        super().__init__(socket_path, limit=MAX_HEAD_BYTES, mode=0o600, owner=owner)
        self.policy = policy
        self.on_connection = on_connection
        self.resolver = resolver
        self.address_check = address_check
        self.clock = clock or SystemClock()
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.records: list[EgressRecord] = []

    # -- one connection ----------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(self.clock.wall())
        try:
            if self.open_connections > self.max_connections:
                conn.verdict = Verdict(
                    False, f"more than {self.max_connections} open connections", "egress.busy"
                )
                await _send(writer, answer(503, conn.verdict.reason + "\n"))
                return
            await self._serve(reader, writer, conn)
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            if conn.verdict.allowed:
                conn.verdict = replace(
                    conn.verdict, reason=f"{conn.verdict.reason}; ended: {exc!r}"
                )
        except asyncio.CancelledError:
            if conn.verdict.allowed:
                conn.verdict = replace(
                    conn.verdict, reason=f"{conn.verdict.reason}; cut when the proxy closed"
                )
        except Exception:  # a bug must not kill the proxy; the record still says what happened
            log.exception("egress.proxy_failed", run_id=self.run_id)
            conn.verdict = Verdict(conn.verdict.allowed, "internal proxy error", "egress.error")
        finally:
            writer.close()
            self._record(conn)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            conn.silent = not exc.partial
            conn.verdict = Verdict(False, "connection closed mid-request", "egress.bad-request")
            return
        except (asyncio.LimitOverrunError, ValueError):
            conn.verdict = Verdict(False, "request head too large", "egress.bad-request")
            await _send(writer, answer(400, conn.verdict.reason + "\n"))
            return
        except TimeoutError:
            conn.verdict = Verdict(False, "no request head in time", "egress.bad-request")
            await _send(writer, answer(400, conn.verdict.reason + "\n"))
            return
        try:
            head = parse_head(raw[:-4])
            conn.method = head.method
            dest = destination(head)
        except EgressRequestError as exc:
            conn.verdict = Verdict(False, exc.detail, "egress.bad-request")
            await _send(writer, answer(400, exc.detail + "\n"))
            return
        conn.host, conn.port = dest.host, dest.port
        upstream = await self._open(dest, conn)
        if upstream is None:
            failed = conn.verdict.rule_id in ("egress.connect-failed", "egress.unresolved")
            status = 502 if failed else 403
            text = f"quarterdeck egress refused {dest.host}:{dest.port}: {conn.verdict.reason}\n"
            await _send(writer, answer(status, text))
            return
        up_reader, up_writer = upstream
        try:
            if dest.path is None:
                await _send(writer, answer(200))
            else:
                first = forwarded_head(head, dest)
                up_writer.write(first)
                conn.up += len(first)
            await self._pipe(reader, writer, up_reader, up_writer, conn)
        finally:
            up_writer.close()

    async def _open(
        self, dest: Destination, conn: _Conn
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Decide, resolve once, check every answer, connect to a checked address."""
        verdict = self.policy.check_host(dest.host, dest.port)
        conn.host = verdict.host or dest.host
        conn.verdict = verdict
        if not verdict.allowed:
            return None
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                addresses = connect_order(await self.resolver(verdict.host, dest.port))
        except (OSError, TimeoutError) as exc:
            conn.verdict = Verdict(
                False, f"cannot resolve {verdict.host}: {exc}", "egress.unresolved"
            )
            return None
        checked = self.policy.check_addresses(verdict.host, addresses, self.address_check)
        if not checked.allowed:
            conn.verdict = checked
            return None
        failures = []
        for ip in addresses:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    opened = await asyncio.open_connection(ip, dest.port, limit=_CHUNK)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{ip}: {exc or 'timed out'}")
                continue
            conn.address = ip
            return opened
        conn.verdict = Verdict(
            False, f"cannot connect: {'; '.join(failures)}", "egress.connect-failed"
        )
        return None

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        conn: _Conn,
    ) -> None:
        """Copy both ways, counting, until the destination is done (then the client gets a
        moment to finish) or nothing moved for ``idle_timeout_s``."""
        loop = asyncio.get_running_loop()
        last = [loop.time()]

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await src.read(_CHUNK):
                    dst.write(chunk)
                    if up:
                        conn.up += len(chunk)
                    else:
                        conn.down += len(chunk)
                    last[0] = loop.time()
                    await dst.drain()
                if dst.can_write_eof():
                    dst.write_eof()

        async def idle() -> None:
            while loop.time() - last[0] < self.idle_timeout_s:
                await asyncio.sleep(min(5.0, self.idle_timeout_s))

        upward = asyncio.create_task(copy(reader, up_writer, True))
        downward = asyncio.create_task(copy(up_reader, writer, False))
        watchdog = asyncio.create_task(idle())
        try:
            await asyncio.wait({downward, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if downward.done() and not upward.done():
                await asyncio.wait(
                    {upward, watchdog}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            for task in (upward, downward, watchdog):
                task.cancel()
            await asyncio.gather(upward, downward, watchdog, return_exceptions=True)
        if watchdog.done() and not watchdog.cancelled():
            conn.verdict = replace(
                conn.verdict,
                reason=f"{conn.verdict.reason}; closed after {self.idle_timeout_s:g}s idle",
            )

    def _record(self, conn: _Conn) -> None:
        if conn.silent:
            return
        record = EgressRecord(
            run_id=self.run_id,
            host=_printable(conn.host, 255),
            port=conn.port,
            method=_printable(conn.method, 32),
            allowed=conn.verdict.allowed,
            reason=_printable(conn.verdict.reason, 1000),
            rule_id=conn.verdict.rule_id,
            address=conn.address,
            bytes_up=conn.up,
            bytes_down=conn.down,
            started=conn.started,
            ended=self.clock.wall(),
        )
        self.records.append(record)
        try:
            self.on_connection(record)
        except Exception:  # auditing must not break the proxy; loud in the log
            log.exception("egress.record_failed", run_id=self.run_id, host=record.host)


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()


def _printable(text: str, limit: int) -> str:
    """Client-chosen text as stored: bounded, no control characters (Postgres refuses NUL)."""
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
