"""Destination hosts: extraction from URLs and command arguments, canonical form, scope.

Egress rules must see through the usual disguises, so every host is canonicalised before it is
compared: lower case, no trailing dot, no brackets or port, and any IPv4 literal in decimal,
octal, hex or shortened form (``2852039166``, ``0xA9FEA9FE``, ``0251.0376.0251.0376``,
``127.1``) or IPv4-mapped IPv6 becomes its dotted-quad form. ``scope`` then says what kind of
destination it is (``name`` for DNS names, or the address class of an IP literal); wildcard DNS
services such as ``169.254.169.254.nip.io`` are scoped by the address embedded in the name.
Nothing here resolves DNS: the gate stays pure.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Scope = Literal[
    "loopback", "private", "link_local", "multicast", "reserved", "unspecified", "public", "name"
]
SCOPES: tuple[str, ...] = (
    "loopback",
    "private",
    "link_local",
    "multicast",
    "reserved",
    "unspecified",
    "public",
    "name",
)

URL_RE = re.compile(
    r"\b(?:https?|ftps?|wss?|sftp|scp|ssh|git|rsync|telnet|gopher|dict|ldaps?|"
    r"tftp|smb|file)://[^\s'\"<>`|;]+",
    re.IGNORECASE,
)
_DEV_TCP = re.compile(r"/dev/(?:tcp|udp)/([^/\s]+)/(\d+)")
_HOSTISH = re.compile(
    r"^(?:[^@\s/]+@)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?(?:[/?#].*)?$"
)
_EMBEDDED_IP = re.compile(
    r"(?:^|[.-])(\d{1,3}[.-]\d{1,3}[.-]\d{1,3}[.-]\d{1,3})\.(?:nip\.io|"
    r"sslip\.io|xip\.io|traefik\.me|localtest\.me)$"
)
_IPV4ISH = re.compile(r"[0-9a-fA-FxX.]+")
_HOST_CHARS = re.compile(r"[a-z0-9_.:-]+")
_SHELL_EXPANSION = re.compile(r"[$`]")
_URL_HOST = re.compile(r"^[a-z+.-]+://(?:[^@/]*@)?(\[[^\]]*\]|[^:/?#]*)", re.I)
_DYNAMIC = re.compile(r"\$\([^)]*\)|`[^`]*`|\$\{?\w+\}?")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


@dataclass(frozen=True, slots=True)
class HostFact:
    """One destination the call would connect to."""

    raw: str
    host: str
    port: int | None
    scope: Scope
    is_ip: bool
    tld: str
    allowlisted: bool


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP literal in any spelling ``inet_aton`` accepts, or IPv6; else None."""
    text = host.strip("[]").split("%", 1)[0]
    if ":" in text:
        try:
            addr = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        return addr.ipv4_mapped or addr
    if not text or not _IPV4ISH.fullmatch(text) or not text[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def _scope(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Scope:
    if addr.is_loopback:
        return "loopback"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if addr.is_private:
        return "private"
    if addr.is_reserved or not addr.is_global:
        return "reserved"
    return "public"


class HostList:
    """A list of host patterns: ``example.com`` (and its subdomains), ``*.example.*`` globs,
    IP literals in any spelling (compared canonically) or CIDR networks (``10.0.0.0/8``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        self.globs: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            text = entry.strip().lower().rstrip(".")
            if not text:
                continue
            addr = parse_ip(text)
            if "/" in text:
                try:
                    self.networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError:
                    self.exact.add(text)
            elif addr is not None:
                self.exact.add(str(addr))
            elif any(c in text for c in "*?["):
                self.globs.append(text)
            else:
                self.exact.add(text)
                self.suffixes.append("." + text)
        self._suffixes = tuple(self.suffixes)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        if host in self.exact or host.endswith(self._suffixes):
            return True
        if self.networks:
            addr = parse_ip(host)
            if addr is not None and any(addr in net for net in self.networks):
                return True
        return any(fnmatch.fnmatchcase(host, g) for g in self.globs)


def canonical(host: str) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    text = host.strip().lower().rstrip(".")
    addr = parse_ip(text)
    return (str(addr) if addr is not None else text.strip("[]")), addr


def make_host(raw: str, host: str, port: int | None, allow: HostList) -> HostFact | None:
    if "$" in host or "`" in host:  # $(whoami).evil.example: judge the name around it
        host = _DYNAMIC.sub("x", host)
    name, addr = canonical(host)
    if not name or not _HOST_CHARS.fullmatch(name):
        return None
    scope: Scope
    if addr is not None:
        scope = _scope(addr)
    elif name in _LOCAL_NAMES or name.endswith(".localhost"):
        scope = "loopback"
    else:
        embedded = _EMBEDDED_IP.search(name)
        inner = parse_ip(embedded.group(1).replace("-", ".")) if embedded else None
        scope = _scope(inner) if inner is not None else "name"
    tld = "" if addr is not None else name.rsplit(".", 1)[-1]
    return HostFact(raw, name, port, scope, addr is not None, tld, name in allow)


def from_url(url: str, allow: HostList) -> HostFact | None:
    """The host of a URL (``\\`` read as ``/`` like browsers do); None for ``file:`` URLs."""
    if url.split(":", 1)[0].lower() == "file":
        return None
    url = _SHELL_EXPANSION.split(url, maxsplit=1)[0]  # a shell variable expands into the path
    host: str | None
    port: int | None
    try:
        parts = urlsplit(url.replace("\\", "/"))
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port or bracket: still judge the host
        found = _URL_HOST.match(url)
        host, port = (found.group(1), None) if found else (None, None)
    if not host:
        return None
    return make_host(url, host, port, allow)


def from_hostish(arg: str, allow: HostList) -> HostFact | None:
    """``host``, ``host:port``, ``user@host``, ``host/path`` without a scheme (curl accepts
    these); only taken when it plausibly names a host (has a dot, is an IP, or localhost)."""
    found = _HOSTISH.match(_DYNAMIC.sub("x", arg) if "$" in arg or "`" in arg else arg)
    if not found:
        return None
    host = found.group(1)
    if not (parse_ip(host) or "." in host.strip(".") or host.lower() in _LOCAL_NAMES):
        return None
    return make_host(arg, host, int(found.group(2)) if found.group(2) else None, allow)


def urls_in(text: str) -> list[str]:
    return URL_RE.findall(text) if "://" in text else []


def dev_tcp_hosts(text: str, allow: HostList) -> list[HostFact]:
    """Hosts of bash's ``/dev/tcp/HOST/PORT`` pseudo-files (a favourite of reverse shells)."""
    out = []
    for found in _DEV_TCP.finditer(text):
        fact = make_host(found.group(0), found.group(1), int(found.group(2)), allow)
        if fact is not None:
            out.append(fact)
    return out
