"""A Unix-socket server that can be closed for real: every open connection is cut.

``asyncio.Server.close`` stops listening but leaves the connections it accepted running. The
worker's per-run sockets (the egress proxy, the policy gate of a claude-code run, its gateway
bridge) must not outlive their run, so this base tracks each connection's handler task and
cancels them all on :meth:`UnixServer.close`. Subclasses implement :meth:`UnixServer.handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Self


class UnixServer:
    def __init__(
        self,
        socket_path: Path,
        *,
        limit: int = 64 * 1024,
        mode: int = 0o600,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """``limit``: the longest line a handler's ``readline`` takes; ``mode`` and ``owner``:
        who may connect (a sandboxed uid needs one or the other)."""
        self.socket_path = socket_path
        self.limit, self.mode, self.owner = limit, mode, owner
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        return len(self._handlers)

    async def start(self) -> Self:
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self.socket_path), limit=self.limit
        )
        os.chmod(self.socket_path, self.mode)
        if self.owner is not None:
            os.chown(self.socket_path, *self.owner)
        return self

    async def close(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.handle(reader, writer)
        finally:
            self._handlers.discard(task)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection (counted in :attr:`open_connections` while it runs)."""
        raise NotImplementedError
