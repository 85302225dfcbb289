"""``http_fetch``: the one tool that reaches the network from the worker itself.

It runs in the worker, not the sandbox, so it vets every hop: scheme, the
``http_fetch_allowlist``, and every address the name resolves to (one private, loopback,
link-local or metadata answer taints the name; the check is the egress proxy's
:func:`~quarterdeck.agents.egress.policy.address_refusal`, so one rule governs both). It then
connects to the vetted address, not the name, so a DNS answer cannot change between check and
connect.
"""

from __future__ import annotations

import asyncio
import fnmatch
import socket
from typing import Any

import httpx

from quarterdeck.agents.egress.policy import address_refusal
from quarterdeck.config import Settings
from quarterdeck.toolcalls import HttpFetch, ToolError

MAX_FETCH_BYTES = 1_000_000
MAX_REDIRECTS = 5


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """Empty allowlist: any host. ``example.com`` also admits its subdomains; globs work."""
    if not allowlist:
        return True
    host = host.lower().rstrip(".")
    for pattern in (p.lower().rstrip(".") for p in allowlist):
        if fnmatch.fnmatchcase(host, pattern) or host.endswith("." + pattern.lstrip("*.")):
            return True
    return False


async def _vet(url: httpx.URL, allowlist: list[str], event: dict[str, Any]) -> str:
    """Check one URL (every redirect hop too); return the IP to connect to. Connecting to
    the vetted IP, not the name, stops a DNS answer changing between check and connect."""
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    record: dict[str, Any] = {"url": str(url), "host": host, "port": port, "allowed": False}
    event["network"].append(record)

    def deny(reason: str) -> ToolError:
        record["reason"] = reason
        return ToolError(f"http_fetch refused {url}: {reason}")

    if url.scheme not in ("http", "https"):
        raise deny(f"scheme {url.scheme!r} not allowed (http, https only)")
    if not host:
        raise deny("no host in URL")
    if not host_allowed(host, allowlist):
        raise deny(f"host {host!r} is not in http_fetch_allowlist")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise deny(f"cannot resolve {host!r}: {exc}") from None
    addresses = sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))
    for ip in addresses:  # one bad answer taints the name: refuse rather than pick
        reason = address_refusal(ip)
        if reason:
            raise deny(f"{host} resolves to {reason}")
    record.update(allowed=True, reason="public address", address=addresses[0])
    return addresses[0]


async def http_fetch(args: HttpFetch, settings: Settings, event: dict[str, Any]) -> str:
    """GET or HEAD ``args.url``, following at most :data:`MAX_REDIRECTS` redirects, each hop vetted;
    the body is capped at :data:`MAX_FETCH_BYTES`. Refusals raise :class:`ToolError`."""
    try:
        url = httpx.URL(args.url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ToolError(f"invalid URL: {exc}") from None
    timeout = httpx.Timeout(min(30.0, settings.command_timeout))
    async with httpx.AsyncClient(trust_env=False, timeout=timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            ip = await _vet(url, settings.http_fetch_allowlist, event)
            target = url.copy_with(host=ip if ":" not in ip else f"[{ip}]")
            host_header = url.netloc.decode("ascii").rsplit("@", 1)[-1]
            request = client.build_request(
                args.method,
                target,
                headers={"Host": host_header},
                extensions={"sni_hostname": url.host},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise ToolError(f"http_fetch {url} failed: {type(exc).__name__}: {exc}") from None
            try:
                if response.is_redirect and "location" in response.headers:
                    url = url.join(response.headers["location"])
                    continue
                body, cut = bytearray(), 0
                async for chunk in response.aiter_bytes():
                    room = MAX_FETCH_BYTES - len(body)
                    body += chunk[: max(0, room)]
                    cut += max(0, len(chunk) - room)
                    if cut:
                        break
            finally:
                await response.aclose()
            kind = response.headers.get("content-type", "")
            head = f"HTTP {response.status_code} {response.reason_phrase}\n"
            head += f"content-type: {kind}\n\n"
            if b"\0" in body[:8192]:
                return head + f"[binary body, {len(body)} bytes not shown]"
            text = body.decode(response.encoding or "utf-8", errors="replace")
            if cut:
                text += f"\n[body truncated at {MAX_FETCH_BYTES} bytes]"
            return head + text
    raise ToolError(f"too many redirects (more than {MAX_REDIRECTS})")
