"""The little HTTP the egress proxy speaks: a request head in, a rewritten head or an answer out.

Only what a proxy client sends is understood: ``CONNECT host:port`` (a tunnel, used for every
``https://`` URL) and a request with an absolute ``http://`` URI. Everything else is refused with
a 400 that says why, rather than guessed at. Forwarded plain-HTTP requests carry
``Connection: close``: one request per connection keeps every request on a connection that was
checked, at the price of keep-alive, which a proxied build tool does not miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from quarterdeck.exceptions import QuarterdeckError

MAX_HEAD_BYTES = 16 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "host",
    }
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class EgressRequestError(QuarterdeckError):
    """A request the proxy cannot understand; answered with ``status`` and never raised out."""

    status = 400
    type_slug = "egress-bad-request"
    title = "Bad proxy request"


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a request goes: ``path`` is None for a CONNECT tunnel."""

    host: str
    port: int
    path: str | None = None


def parse_head(data: bytes) -> RequestHead:
    """The request line and headers of ``data`` (everything up to the blank line)."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise EgressRequestError("request head is not text") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[2].startswith("HTTP/1."):
        raise EgressRequestError(f"malformed request line {lines[0][:200]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise EgressRequestError(f"malformed header line {line[:200]!r}")
        headers.append((name, value.strip()))
    return RequestHead(parts[0].upper(), parts[1], parts[2], headers)


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EgressRequestError(f"bad port {text!r} in {what}")
    return int(text)


def destination(head: RequestHead) -> Destination:
    """Where ``head`` asks to go: ``CONNECT host:port`` or an absolute ``http://`` URI."""
    if head.method == "CONNECT":
        host, sep, digits = head.target.rpartition(":")
        if not sep or not host:
            raise EgressRequestError(f"CONNECT needs host:port, not {head.target[:200]!r}")
        return Destination(host.strip("[]"), _port(digits, "CONNECT target"))
    scheme = head.target.split(":", 1)[0].lower()
    if scheme == "https":
        raise EgressRequestError("https:// URLs go through CONNECT (set HTTPS_PROXY)")
    if scheme != "http" or "://" not in head.target:
        raise EgressRequestError(
            f"a proxy request needs an absolute http:// URI, not {head.target[:200]!r}"
        )
    try:
        parts = urlsplit(head.target)
        port = parts.port or 80
    except ValueError as exc:
        raise EgressRequestError(f"bad URL {head.target[:200]!r}: {exc}") from None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise EgressRequestError("URLs with user info are refused (they disguise the host)")
    if not parts.hostname:
        raise EgressRequestError(f"no host in {head.target[:200]!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.hostname, port, path)


def forwarded_head(head: RequestHead, dest: Destination) -> bytes:
    """The head sent upstream: origin-form target, our ``Host``, no hop-by-hop headers."""
    host = dest.host if dest.port == 80 else f"{dest.host}:{dest.port}"
    lines = [f"{head.method} {dest.path} {head.version}", f"Host: {host}"]
    named = {n.strip().lower() for n in _header(head, "connection").split(",")}
    lines += [
        f"{name}: {value}"
        for name, value in head.headers
        if name.lower() not in _HOP_BY_HOP and name.lower() not in named
    ]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _header(head: RequestHead, name: str) -> str:
    return ", ".join(v for n, v in head.headers if n.lower() == name)


def answer(status: int, body: str = "") -> bytes:
    """A complete response of our own (a refusal, an error, or the tunnel's 200)."""
    reason = _REASONS.get(status, "Error")
    if status == 200:
        return b"HTTP/1.1 200 Connection established\r\n\r\n"
    data = body.encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n"
        "X-Quarterdeck-Egress: refused\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + data
