"""The Messages API stand-in in a process of its own, for ``benchmarks.gateway``.

``python -m benchmarks.upstream_server PORT`` serves :class:`MessagesAPIServer` (default reply:
a plain ``"ok"`` message, JSON or SSE, no delay, no rate-limit headers, no request log) with
uvicorn on ``127.0.0.1:PORT`` until SIGTERM. In its own process it does not share the load
generator's event loop, so the direct path and the relayed paths see the same upstream.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette

from quarterdeck.chaos.messages_api import MessagesAPIServer
from quarterdeck.kit.heap import freeze_startup_heap


def main(port: int) -> None:
    stand_in = MessagesAPIServer(rate_limit_headers={}, record_requests=False)
    freeze_startup_heap()  # as ``quarterdeck up`` does: no 40 ms full collections mid-run
    uvicorn.run(
        Starlette(routes=stand_in.routes()),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=2048,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]))
