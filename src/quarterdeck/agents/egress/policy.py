"""Where the egress proxy may connect: pure decisions, made before and after DNS resolution.

A command that has network only through the proxy names its destination as a host name in a
``CONNECT host:port`` line or an absolute ``http://`` URL. The decision has two halves, because
a name means nothing until it is resolved and an answer means nothing without the name:

1. :meth:`EgressPolicy.check_host`, on the name alone: refuse IP literals in every spelling
   (a real service has a name; ``2130706433``, ``0x7f.1`` and ``[::1]`` are disguises), names
   that are not plain DNS names, names that mean this machine (``localhost``) or embed an
   address (``10.0.0.1.nip.io``), cloud metadata names, then whatever the policy gate says of
   an ``http_fetch`` to the same host (the paste sites, exfiltration sinks, blocked TLDs and
   metadata rules of ``rules.yaml``, and allowlist mode: one policy governs both paths), and
   finally every host not on ``egress_allowed_hosts`` (empty: nothing is allowed).
2. :meth:`EgressPolicy.check_addresses`, on every address the name resolved to: one loopback,
   private, link-local, metadata or otherwise non-global answer refuses the whole name (DNS
   rebinding), and the proxy then connects to an address it checked, never to the name again.

Both halves are pure (no I/O, no clock); the proxy does the resolving and connecting.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quarterdeck.security.policy.hosts import HostList, make_host, parse_ip

if TYPE_CHECKING:
    from quarterdeck.security.policy import PolicyGate

AddressCheck = Callable[[str], "str | None"]
"""Why an address must not be connected to (None: it may be)."""

#: Names of cloud metadata services: refused here whatever the gate's rule files say, because
#: they hand out the machine's credentials. (Their addresses are refused after resolution too.)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("169.254.169.253"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


@dataclass(frozen=True, slots=True)
class Verdict:
    """One decision: ``rule_id`` names what refused it (or flagged it, when allowed)."""

    allowed: bool
    reason: str
    rule_id: str | None = None
    host: str = ""


def address_refusal(ip: str) -> str | None:
    """Why the proxy must not connect to ``ip``; None for a public unicast address."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"{ip!r} is not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        inner = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if inner is None and addr in _NAT64:  # 64:ff9b::a9fe:a9fe is 169.254.169.254 via NAT64
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None and address_refusal(str(inner)):
            return f"{addr} embeds {address_refusal(str(inner))}"
    if addr in METADATA_ADDRESSES:
        return f"cloud metadata address {addr}"
    for attr in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(addr, f"is_{attr}"):
            return f"{attr.replace('_', '-')} address {addr}"
    if not addr.is_global:
        return f"non-global address {addr}"
    return None


def canonical_host(host: str) -> str:
    """Lower case, no brackets, no trailing dot: the form every check and record uses."""
    return host.strip().strip("[]").lower().rstrip(".")


class EgressPolicy:
    """The host decisions of one deployment (immutable; share it between runs)."""

    def __init__(self, allowed_hosts: Iterable[str], gate: PolicyGate | None = None) -> None:
        self.allowed_hosts = tuple(h.strip() for h in allowed_hosts if h.strip())
        self._allow = HostList(self.allowed_hosts)
        self._none = HostList(())
        self.gate = gate

    def check_host(self, host: str, port: int) -> Verdict:
        """The decision on a destination name, before it is resolved."""
        name = canonical_host(host)

        def refuse(rule: str, reason: str) -> Verdict:
            return Verdict(False, reason, rule, name)

        if not 0 < port < 65536:
            return refuse("egress.bad-port", f"port {port} is out of range")
        if parse_ip(name) is not None or ":" in name:
            return refuse(
                "egress.raw-ip", f"{host} is an IP address; connect by host name (DNS-checked)"
            )
        if not name or len(name) > 253 or not name.isascii():
            return refuse("egress.bad-host", f"{host!r} is not a DNS host name")
        labels = name.split(".")
        if not all(_LABEL.match(label) for label in labels):
            return refuse("egress.bad-host", f"{host!r} is not a DNS host name")
        if _NUMERIC_LABEL.match(labels[-1]):
            return refuse("egress.raw-ip", f"{host} is a numeric address, not a host name")
        if name in METADATA_NAMES:
            return refuse("egress.cloud-metadata", f"{name} is a cloud metadata service")
        fact = make_host(name, name, port, self._none)
        if fact is not None and fact.scope != "name":
            return refuse("egress.local-name", f"{name} names a {fact.scope} address")
        flagged: tuple[str | None, str] = (None, "")
        if self.gate is not None:
            scheme = "http" if port == 80 else "https"
            decision = self.gate.check("http_fetch", {"url": f"{scheme}://{name}:{port}/"})
            if decision.action in ("deny", "require_approval"):
                return refuse(decision.rule_id or "egress.policy", decision.reason)
            if decision.action == "flag":
                flagged = (decision.rule_id, f" (flagged by policy rule {decision.rule_id})")
        if name not in self._allow:
            return refuse(
                "egress.not-allowed",
                f"{name} is not in egress_allowed_hosts"
                + ("" if self.allowed_hosts else " (empty: no host is allowed)"),
            )
        return Verdict(True, "allowed by egress_allowed_hosts" + flagged[1], flagged[0], name)

    @staticmethod
    def check_addresses(
        host: str, addresses: Sequence[str], refusal: AddressCheck = address_refusal
    ) -> Verdict:
        """The decision on what ``host`` resolved to: all of it must pass, or none is used."""
        name = canonical_host(host)
        if not addresses:
            return Verdict(
                False, f"{name} did not resolve to any address", "egress.unresolved", name
            )
        for ip in addresses:
            why = refusal(ip)
            if why:
                return Verdict(False, f"{name} resolves to {why}", "egress.private-address", name)
        return Verdict(True, f"{name} resolves to public addresses only", None, name)


def connect_order(addresses: Iterable[str]) -> list[str]:
    """Distinct addresses, IPv4 first (the common case that works), in a stable order."""
    return sorted(set(addresses), key=lambda a: (":" in a, a))
