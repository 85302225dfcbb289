"""An unauthenticated 400 MB upload to a real ``quarterdeck serve`` (auth on, the test Postgres)
is refused without being buffered: the answer (401) comes long before the client could send it
all, the connection is closed, and the server's peak memory barely moves (issue 16: it went from
112 MB to 1.28 GB before). A short refused body, though, is skipped and its keep-alive connection
serves the next request (uvicorn's own handling of an unread body, checked on the real server)."""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

ADMIN = "bootstrap-admin-key-for-the-memory-test-0123456789"
UPLOAD = 400 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_GROWTH = 50 * 1024 * 1024


def memory(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak so far) of ``pid``, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB$", status, re.M)
    assert found, status
    return int(found.group(1)) * 1024


def chunked_upload(port: int, path: str, total: int = UPLOAD) -> tuple[int, int, bytes]:
    """POST ``total`` bytes, chunked, with no key, reading while sending: the answer's status,
    how many body bytes went out before it came, and the raw answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    frame = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
    sock.sendall(head.encode())
    sock.setblocking(False)
    sent, pending, answer, closed = 0, memoryview(frame), b"", False
    deadline = time.monotonic() + 120
    try:
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            want_write = [sock] if sent < total and not closed else []
            readable, writable, _ = select.select([sock], want_write, [], 1.0)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                answer += data
                continue
            if writable:
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True  # the server closed: stop sending, read what it answered
                    continue
                sent += n
                pending = pending[n:]
                if pending:
                    continue
                pending = memoryview(frame)
                if sent >= total:  # all of it went out (no gate): end the body, await the answer
                    sock.setblocking(True)
                    sock.sendall(b"0\r\n\r\n")
                    sock.setblocking(False)
        sock.setblocking(True)
        sock.settimeout(5)
        try:  # the rest of the answer, up to the close
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    finally:
        sock.close()
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, f"no HTTP answer after {sent} bytes: {answer[:200]!r}"
    return int(match.group(1)), sent, answer


def answers_on_one_connection(port: int, requests: list[bytes]) -> list[bytes]:
    """Send each request on one keep-alive connection after the answer to the one before."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for request in requests:
            sock.sendall(request)
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = reader.readline()
                assert line, f"closed after {len(answers)} answers"
                head += line
            length = re.search(rb"content-length: (\d+)", head, re.I)
            assert length, head
            answers.append(head + reader.read(int(length.group(1))))
    return answers


def test_an_unauthenticated_400_mb_upload_is_refused_unbuffered(
    deployment: Deployment, db_url: str
) -> None:
    server = deployment.start(
        "serve",
        POSTGRES_URL=db_url,
        QUARTERDECK_AUTH_ENABLED="true",
        QUARTERDECK_ADMIN_API_KEY=ADMIN,
        QUARTERDECK_HEALTH_MONITOR_ENABLED="false",
        QUARTERDECK_MAINTENANCE_ENABLED="false",
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:  # warm both paths up
        assert client.post("/v1/runs", json={"prompt": "hi"}).status_code == 401
        assert client.post("/v1/messages", json={}).status_code == 401
        assert client.get("/v1/runs", headers={"x-api-key": ADMIN}).status_code == 200
    before = memory(server.pid, "VmRSS")
    for path in ("/v1/runs", "/v1/messages"):  # the app's gate, and the gateway's fast path
        started = time.monotonic()
        status, sent, answer = chunked_upload(server.http_port, path)
        took = time.monotonic() - started
        assert status == 401, answer[:500]
        assert b"connection: close" in answer.lower(), answer[:500]
        assert sent < UPLOAD // 4, f"{path}: the server read {sent} bytes before answering"
        assert took < 15, took
    peak = memory(server.pid, "VmHWM")
    assert peak - before < MAX_GROWTH, f"peak {peak >> 20} MiB, {before >> 20} MiB before"
    with httpx.Client(base_url=server.url, timeout=30) as client:  # still serving
        assert client.get("/v1/runs", headers={"x-api-key": ADMIN}).status_code == 200
    # A short refused body is skipped (by uvicorn when declared, by the gate when chunked) and
    # the connection serves the next request.
    body = b"x" * 20_000
    declared = b"POST /v1/runs HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunked = b"POST /v1/runs HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    health = b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
    answers = answers_on_one_connection(server.http_port, [declared + body, chunked, health])
    assert [a.split(b" ", 2)[1] for a in answers] == [b"401", b"401", b"200"], answers
