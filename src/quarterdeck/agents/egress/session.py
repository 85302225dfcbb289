"""A run's egress proxy: where its socket lives, who may connect, and where its records go.

The proxy a command uses lives exactly as long as that command: it is opened before
``run_command`` starts the sandbox and closed when the command has ended. Every process a
command starts dies with it (the sandbox's PID namespace), so nothing could use the proxy
afterwards; and no path out of a run -- a crash, a cancellation, a lost lease -- can leave a
socket listening, because the proxy is an ``async with`` around the one call that uses it. Each
connection is audited as it ends (``egress.connection``), and the command's ``tool.call`` event
lists them all.

The socket sits in a fresh directory (mode 0700) owned by the run's sandbox identity and is
itself 0600, so only that run's commands (and the worker) can connect: another run's commands,
under another uid, cannot borrow its allowance or hide in its audit trail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from quarterdeck.agents.egress.policy import AddressCheck, EgressPolicy, address_refusal
from quarterdeck.agents.egress.proxy import EgressProxy, EgressRecord, Resolver, system_resolver

if TYPE_CHECKING:
    from quarterdeck.config import Settings
    from quarterdeck.security.audited import AuditedRun
    from quarterdeck.security.policy import PolicyGate
    from quarterdeck.security.trail import AuditTrail

log = structlog.get_logger(__name__)
SOCKET_NAME = "egress.sock"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; leave room


class RunEgress:
    """Opens per-command egress proxies for runs whose agent type has ``network: egress``."""

    def __init__(
        self,
        policy: EgressPolicy,
        base_dir: Path,
        *,
        trail: AuditTrail | None = None,
        resolver: Resolver = system_resolver,
        address_check: AddressCheck = address_refusal,
    ) -> None:
        self.policy = policy
        self.base_dir = base_dir
        self.trail = trail
        self.resolver = resolver
        self.address_check = address_check

    @classmethod
    def from_settings(
        cls, settings: Settings, gate: PolicyGate | None, trail: AuditTrail | None
    ) -> RunEgress:
        """``egress_allowed_hosts``, the policy gate's host rules, sockets under the data dir."""
        return cls(
            EgressPolicy(settings.egress_allowed_hosts, gate),
            Path(settings.data_dir) / "egress",
            trail=trail,
        )

    def _socket_dir(self, run_id: str, owner: tuple[int, int] | None) -> Path:
        base = self.base_dir
        if len(str(base)) + 40 > _MAX_SOCKET_PATH:  # a deep data dir: a short path instead
            base = Path(tempfile.gettempdir()) / "quarterdeck-egress"
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o711)  # enter, not list: a run finds only its own directory
        path = Path(tempfile.mkdtemp(prefix=f"{run_id[-10:]}-", dir=base))
        if owner is not None:
            os.chown(path, *owner)
        return path

    @contextlib.asynccontextmanager
    async def open(
        self, run: AuditedRun, owner: tuple[int, int] | None
    ) -> AsyncIterator[EgressProxy]:
        """A started proxy for ``run``'s next command, connectable by ``owner`` (uid, gid)."""
        directory = self._socket_dir(run.id, owner)

        def audit(record: EgressRecord) -> None:
            if self.trail is not None:
                self.trail.egress_connection(run, record.to_dict())

        proxy = EgressProxy(
            run.id,
            directory / SOCKET_NAME,
            self.policy,
            audit,
            resolver=self.resolver,
            address_check=self.address_check,
            owner=owner,
        )
        try:
            async with proxy:
                yield proxy
        finally:
            shutil.rmtree(directory, ignore_errors=True)
