"""The egress proxy for real: a UNIX socket, real TCP servers on 127.0.0.1, real bytes.

There is no internet here, so an *allowed* destination is a test host name that an injected
resolver points at 127.0.0.1, with the loopback refusal relaxed for that one address in that
test only; every other test runs the production resolver and address check, which refuse the
same local servers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from quarterdeck.agents.egress import (
    EgressPolicy,
    EgressProxy,
    EgressRecord,
    RunEgress,
    address_refusal,
)
from quarterdeck.agents.guard import Guard
from quarterdeck.agents.planner import AgentPlanner
from quarterdeck.agents.sandbox import (
    Mode,
    capabilities,
    prepare_dir,
    run_identity,
    run_sandboxed,
)
from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.chaos.process import Process, free_port, port_open
from quarterdeck.providers.types import ToolUseBlock
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import Run
from quarterdeck.security.audit import AuditLog
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.security.policy import PolicyGate
from quarterdeck.security.trail import AuditTrail
from tests.conftest import world_readable_tmpdir
from tests.support.runs import running_run

pytestmark = pytest.mark.asyncio
TEST_HOST = "svc.egress-test.example"


@dataclass
class Origin:
    """A local TCP server: ``http`` answers one request, else it echoes."""

    http: bool
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = b""
        if self.http:
            got = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in got.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            got += await reader.readexactly(length)
            body = b"hello from the origin\n"
            reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (
                len(body),
                body,
            )
            writer.write(reply)
            self.sent.append(reply)
        else:
            while chunk := await reader.read(65536):
                got += chunk
                writer.write(chunk)
                await writer.drain()
            self.sent.append(got)
        self.received.append(got)
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Origin:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


class Resolver:
    """Points TEST_HOST at 127.0.0.1 (then, if asked again, at the metadata address)."""

    def __init__(self, answers: list[list[str]] | None = None) -> None:
        self.answers = answers or [["127.0.0.1"]]
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host != TEST_HOST:
            raise OSError(f"no such host {host}")
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def loopback_relaxed(ip: str) -> str | None:
    """The production check, except 127.0.0.1 (the test origin) passes: this test only."""
    return None if ip == "127.0.0.1" else address_refusal(ip)


@pytest.fixture(scope="module")
def gate() -> PolicyGate:
    return PolicyGate.load()


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "egress.sock"


@pytest.fixture
async def http_origin() -> AsyncIterator[Origin]:
    async with Origin(http=True) as origin:
        yield origin


@pytest.fixture
async def echo_origin() -> AsyncIterator[Origin]:
    async with Origin(http=False) as origin:
        yield origin


async def ask(path: Path, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def proxy(
    sock: Path,
    gate: PolicyGate,
    records: list[EgressRecord],
    *,
    allowed: tuple[str, ...] = (TEST_HOST, "localhost"),
    resolver: Resolver | None = None,
    relaxed: bool = False,
) -> EgressProxy:
    return EgressProxy(
        "run_egress_test",
        sock,
        EgressPolicy(allowed, gate),
        records.append,
        resolver=resolver or Resolver(),
        address_check=loopback_relaxed if relaxed else address_refusal,
    )


async def test_a_local_server_is_refused_even_when_allowlisted_by_name(
    sock: Path, gate: PolicyGate, http_origin: Origin
) -> None:
    records: list[EgressRecord] = []
    port = http_origin.port
    async with proxy(sock, gate, records) as p:  # production address check
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        by_name = await ask(sock, f"GET http://localhost:{port}/ HTTP/1.1\r\n\r\n".encode())
        rebound = await ask(sock, f"GET http://{TEST_HOST}:{port}/ HTTP/1.1\r\n\r\n".encode())
        by_ip = await ask(sock, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        assert p.records == records
    assert by_name.startswith(b"HTTP/1.1 403 ") and b"localhost names a loopback" in by_name
    assert rebound.startswith(b"HTTP/1.1 403 ") and b"loopback address 127.0.0.1" in rebound
    assert by_ip.startswith(b"HTTP/1.1 403 ") and b"is an IP address" in by_ip
    assert http_origin.received == []  # nothing reached the server
    assert [(r.allowed, r.rule_id) for r in records] == [
        (False, "egress.local-name"),
        (False, "egress.private-address"),
        (False, "egress.raw-ip"),
    ]
    assert all(r.bytes_up == r.bytes_down == 0 and r.address is None for r in records)
    assert not await asyncio.to_thread(sock.exists)  # closing removes the socket


async def test_allowed_plain_http_is_forwarded_counted_and_recorded(
    sock: Path, gate: PolicyGate, http_origin: Origin
) -> None:
    records: list[EgressRecord] = []
    request = (
        f"POST http://{TEST_HOST}:{http_origin.port}/upload?x=1 HTTP/1.1\r\n"
        f"Host: {TEST_HOST}\r\nProxy-Connection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"
    ).encode()
    async with proxy(sock, gate, records, relaxed=True):
        reply = await ask(sock, request)
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"hello from the origin\n")
    [seen] = http_origin.received
    assert seen.startswith(f"POST /upload?x=1 HTTP/1.1\r\nHost: {TEST_HOST}:".encode())
    assert b"Connection: close" in seen and b"Proxy-Connection" not in seen
    assert seen.endswith(b"\r\n\r\nhello")
    [record] = records
    assert (record.host, record.port, record.method) == (TEST_HOST, http_origin.port, "POST")
    assert (record.allowed, record.address) == (True, "127.0.0.1")
    assert record.bytes_up == len(seen)
    assert record.bytes_down == len(http_origin.sent[0]) == len(reply)
    assert record.ended >= record.started
    assert record.to_dict()["duration_ms"] >= 0


async def test_connect_tunnel_carries_bytes_both_ways_and_counts_them(
    sock: Path, gate: PolicyGate, echo_origin: Origin
) -> None:
    records: list[EgressRecord] = []
    payload = os.urandom(200_000)
    async with proxy(sock, gate, records, relaxed=True):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(f"CONNECT {TEST_HOST}:{echo_origin.port} HTTP/1.1\r\n\r\n".encode())
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        echoed = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    assert echoed == payload
    [record] = records
    assert record.allowed and record.method == "CONNECT"
    assert record.bytes_up == record.bytes_down == len(payload)


async def test_the_checked_answer_is_the_one_connected_to(
    sock: Path, gate: PolicyGate, http_origin: Origin
) -> None:
    """DNS rebinding: the proxy resolves once; a second lookup would say metadata."""
    records: list[EgressRecord] = []
    resolver = Resolver([["127.0.0.1"], ["169.254.169.254"]])
    async with proxy(sock, gate, records, resolver=resolver, relaxed=True):
        reply = await ask(
            sock, f"GET http://{TEST_HOST}:{http_origin.port}/ HTTP/1.1\r\n\r\n".encode()
        )
    assert reply.startswith(b"HTTP/1.1 200")
    assert resolver.calls == [TEST_HOST]
    assert records[0].address == "127.0.0.1"

    mixed = Resolver([["127.0.0.1", "10.0.0.7"]])  # one bad answer taints the name
    async with proxy(sock, gate, records, resolver=mixed, relaxed=True):
        reply = await ask(sock, f"CONNECT {TEST_HOST}:{http_origin.port} HTTP/1.1\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403") and b"private address 10.0.0.7" in reply
    assert len(http_origin.received) == 1


@pytest.mark.parametrize(
    ("request_line", "needle"),
    [
        ("CONNECT 2130706433:443", b"is an IP address"),
        ("CONNECT 0x7f.1:443", b"is an IP address"),
        ("CONNECT [::1]:443", b"is an IP address"),
        ("CONNECT [fd00:ec2::254]:80", b"is an IP address"),
        ("GET http://169.254.169.254/latest/meta-data/", b"is an IP address"),
        ("GET http://metadata.google.internal/computeMetadata/v1/", b"cloud metadata"),
        ("CONNECT pastebin.com:443", b"egress.paste-site"),
        ("CONNECT not-listed.example:443", b"not in egress_allowed_hosts"),
        ("GET http://user@evil.example/", b"user info"),
        ("GET /not-a-proxy-request", b"absolute http:// URI"),
    ],
)
async def test_denied_destinations_get_a_403_saying_why_and_no_dns_lookup(
    sock: Path, gate: PolicyGate, request_line: str, needle: bytes
) -> None:
    records: list[EgressRecord] = []
    resolver = Resolver()
    allowed = (TEST_HOST, "pastebin.com")
    async with proxy(sock, gate, records, allowed=allowed, resolver=resolver, relaxed=True):
        reply = await ask(sock, f"{request_line} HTTP/1.1\r\n\r\n".encode())
    assert reply.split(b" ", 2)[1] in (b"403", b"400")
    assert needle in reply
    assert resolver.calls == []  # refused names are never looked up (no DNS side channel)
    [record] = records
    assert not record.allowed and record.bytes_up == record.bytes_down == 0


async def test_closing_the_proxy_cuts_open_tunnels_and_still_records_them(
    sock: Path, gate: PolicyGate, echo_origin: Origin
) -> None:
    records: list[EgressRecord] = []
    p = await proxy(sock, gate, records, relaxed=True).start()
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(f"CONNECT {TEST_HOST}:{echo_origin.port} HTTP/1.1\r\n\r\nping".encode())
    await reader.readuntil(b"\r\n\r\n")
    assert await reader.readexactly(4) == b"ping"
    await asyncio.wait_for(p.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    [record] = records
    assert record.allowed and record.bytes_up == record.bytes_down == 4
    assert "cut when the proxy closed" in record.reason


async def test_a_real_client_through_the_sandbox_style_bridge(
    sock: Path, gate: PolicyGate, http_origin: Origin, tmp_path: Path
) -> None:
    """curl -> socat on 127.0.0.1 -> the UNIX socket, as inside the sandbox."""
    records: list[EgressRecord] = []
    bridge_port = free_port()
    async with proxy(sock, gate, records, relaxed=True):
        bridge = Process(
            [
                "socat",
                f"TCP-LISTEN:{bridge_port},bind=127.0.0.1,fork,reuseaddr",
                f"UNIX-CONNECT:{sock}",
            ],
            log=tmp_path / "socat.log",
        )
        with bridge.start():
            await asyncio.to_thread(bridge.wait_ready, port_open(bridge_port), 10)
            env = {"PATH": "/usr/bin:/bin", "http_proxy": f"http://127.0.0.1:{bridge_port}"}
            ok = await asyncio.to_thread(
                subprocess.run,
                ["curl", "-sS", "-f", f"http://{TEST_HOST}:{http_origin.port}/x"],
                capture_output=True,
                env=env,
                timeout=20,
            )
            denied = await asyncio.to_thread(
                subprocess.run,
                ["curl", "-sS", "-f", "http://metadata.google.internal/"],
                capture_output=True,
                env=env,
                timeout=20,
            )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"hello from the origin\n"
    assert denied.returncode == 22 and b"403" in denied.stderr
    assert [(r.host, r.allowed) for r in records] == [
        (TEST_HOST, True),
        ("metadata.google.internal", False),
    ]


async def test_every_connection_lands_in_the_runs_audit_trail(
    make_settings, db, gate: PolicyGate, http_origin: Origin
) -> None:
    audit = AuditLog.from_settings(make_settings(), db)
    await audit.start(loops=False)
    run = SimpleNamespace(id="run_01EGRESSAUDIT", tenant="acme", agent_type="coder")
    egress = RunEgress(
        EgressPolicy([TEST_HOST], gate),
        Path(make_settings().data_dir) / "egress",
        trail=AuditTrail(audit),
        resolver=Resolver(),
        address_check=loopback_relaxed,
    )
    try:
        async with egress.open(run, (43210, 43210)) as p:
            info = os.stat(p.socket_path)
            assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (43210, 0o600)
            directory = os.stat(p.socket_path.parent)
            assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (43210, 0o700)
            await ask(
                p.socket_path,
                f"GET http://{TEST_HOST}:{http_origin.port}/ HTTP/1.1\r\n\r\n".encode(),
            )
            await ask(p.socket_path, b"CONNECT pastebin.com:443 HTTP/1.1\r\n\r\n")
        assert not await asyncio.to_thread(p.socket_path.parent.exists)
        await audit.flush()
        page = await audit.search(
            EventFilter(session_id=run.id, event_types=["egress.connection"], limit=10)
        )
    finally:
        await audit.aclose()
    events = sorted(page.items, key=lambda e: e.outcome or "")
    assert [e.outcome for e in events] == ["allowed", "refused"]
    allowed, refused = (e.network_connections[0] for e in events)
    assert (allowed["host"], allowed["port"], allowed["allowed"]) == (
        TEST_HOST,
        http_origin.port,
        True,
    )
    assert allowed["bytes_down"] == len(http_origin.sent[0]) and allowed["bytes_up"] > 0
    assert (refused["host"], refused["allowed"], refused["rule_id"]) == (
        "pastebin.com",
        False,
        "egress.paste-site",
    )
    assert events[1].anomaly is not None and events[1].anomaly["rule_id"] == "egress.paste-site"
    assert all(e.tenant == "acme" and e.agent_id == "coder" for e in events)


async def test_a_sandboxed_command_reaches_the_network_only_through_the_proxy(
    gate: PolicyGate, http_origin: Origin
) -> None:
    """End to end: run_sandboxed(egress_socket=...) in bwrap, curl and urllib inside it."""
    caps = capabilities()
    if caps.modes.get(Mode.BWRAP) is not None or caps.socat is None:
        pytest.skip(f"no bwrap egress bridge here: {caps.modes.get(Mode.BWRAP)}")
    home = world_readable_tmpdir("qd-egress-e2e-")
    ident = run_identity("run_egress_e2e")
    workspace = home / "ws"
    workspace.mkdir()
    prepare_dir(workspace, ident)
    url = f"http://{TEST_HOST}:{http_origin.port}/from-sandbox"
    script = (
        f"curl -sS -f {url}; "
        "curl -sS -f http://metadata.google.internal/ >/dev/null 2>&1; echo metadata=$?; "
        f"curl -sS --noproxy '*' --max-time 3 http://127.0.0.1:{http_origin.port}/ "
        ">/dev/null 2>&1; echo direct=$?; "
        f"python3 -c 'import urllib.request as u; print(u.urlopen(\"{url}\").read().decode().strip())'"
    )
    egress = RunEgress(  # the production layout: a 0700 directory of the run's uid
        EgressPolicy([TEST_HOST], gate),
        home / "egress",
        resolver=Resolver(),
        address_check=loopback_relaxed,
    )
    run = SimpleNamespace(id="run_egress_e2e", tenant="acme", agent_type="coder")
    try:
        async with egress.open(run, ident) as p:
            result = await run_sandboxed(
                script,
                workspace,
                timeout_s=30,
                output_limit=100_000,
                run_as=ident,
                egress_socket=p.socket_path,
            )
        records = p.records
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert "egress proxy only" in result.isolation, result.isolation
    lines = result.stdout.splitlines()
    assert lines[0] == "hello from the origin", (result.stdout, result.stderr)
    assert "metadata=22" in lines  # curl -f: the proxy's 403
    assert "direct=7" in lines  # no way around it: 127.0.0.1 is the sandbox's own loopback
    assert lines[-1] == "hello from the origin"
    assert [(r.host, r.allowed) for r in records] == [
        (TEST_HOST, True),
        ("metadata.google.internal", False),
        (TEST_HOST, True),
    ]
    assert all(r.bytes_down > 0 for r in records if r.allowed)


def _run(run_id: str) -> Run:
    return running_run(run_id)


async def test_an_agent_type_with_egress_gets_a_proxy_per_command_and_its_run_audits_it(
    make_settings, db, gate: PolicyGate, http_origin: Origin
) -> None:
    """The whole path below the executor: agent type ``network: egress`` -> planner -> guard
    -> run_command in the sandbox -> its own proxy -> audit trail in Postgres; a type without
    it gets no proxy at all."""
    caps = capabilities()
    if caps.modes.get(Mode.BWRAP) is not None or caps.socat is None:
        pytest.skip(f"no bwrap egress bridge here: {caps.modes.get(Mode.BWRAP)}")
    settings = make_settings()
    audit = AuditLog.from_settings(settings, db)
    await audit.start(loops=False)
    trail = AuditTrail(audit)
    planner = AgentPlanner(
        settings,
        InMemoryRunStore(),
        AgentCatalog.from_mapping({"coder": {"network": "egress"}}),
        simulated=False,
        guard=Guard(gate, trail=trail),
        egress=RunEgress(
            EgressPolicy([TEST_HOST], gate),
            Path(settings.data_dir) / "egress",
            trail=trail,
            resolver=Resolver(),
            address_check=loopback_relaxed,
        ),
    )
    command = (  # the gate sees no metadata host in this string; the proxy still refuses it
        f"curl -sS http://{TEST_HOST}:{http_origin.port}/; h=metadata.google; "
        "curl -s -o /dev/null -w 'meta=%{http_code}\\n' http://$h.internal/"
    )
    run = _run("run_01EGRESSPLANNER")
    try:
        plan = await planner.plan(run)
        result, event = await plan.tools.run(
            run, ToolUseBlock("tu-1", "run_command", {"command": command})
        )
        reviewer = _run("run_01EGRESSREVIEWER").model_copy(update={"agent_type": "test-writer"})
        plain = await planner.plan(reviewer)
        _, no_net = await plain.tools.run(
            reviewer, ToolUseBlock("tu-2", "run_command", {"command": command})
        )
        await audit.flush()
        events = (await audit.search(EventFilter(session_id=run.id, limit=50))).items
        other = (await audit.search(EventFilter(session_id=reviewer.id, limit=50))).items
    finally:
        await audit.aclose()
    assert "hello from the origin" in result.content and "meta=403" in result.content, result
    assert "net.egress" in event["permissions"]
    assert [(c["host"], c["allowed"]) for c in event["network"]] == [
        (TEST_HOST, True),
        ("metadata.google.internal", False),
    ]
    egress = sorted(
        (e for e in events if e.event_type == "egress.connection"), key=lambda e: e.outcome
    )
    assert [(e.outcome, e.network_connections[0]["host"]) for e in egress] == [
        ("allowed", TEST_HOST),
        ("refused", "metadata.google.internal"),
    ]
    assert egress[1].anomaly is not None and egress[1].anomaly["rule_id"] == "egress.cloud-metadata"
    [call] = [e for e in events if e.event_type == "tool.call"]
    assert len(call.network_connections) == 2
    # test-writer has no network: no proxy, nothing reached the origin a second time
    assert no_net["network"] == [] and "net.egress" not in no_net["permissions"]
    assert not [e for e in other if e.event_type == "egress.connection"]
    assert len(http_origin.received) == 1
