"""Run ``quarterdeck`` as real subprocesses against an embedded Postgres, as a deployment would.

:class:`Deployment` is the chaos suite's :class:`~quarterdeck.chaos.deploy.LocalDeployment` (one
process harness for the tests, the chaos runner and the benchmarks) with the e2e defaults: one
fixed HTTP port, so a process started after a kill answers at the same :attr:`url`; info logs;
a short dequeue timeout; a minute to drain on SIGTERM.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from quarterdeck.chaos.deploy import LocalDeployment, Replica
from tests.conftest import free_port, world_readable_tmpdir

BIN = Path(sys.executable).parent / "quarterdeck"
Proc = Replica  # what a test holds: .popen, .kill(), .stop() -> exit code


class Deployment(LocalDeployment):
    """One data directory (so one embedded Postgres) shared by every process started from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            env_extra={"QUARTERDECK_WORKER_DEQUEUE_TIMEOUT": "2s", "LOG_LEVEL": "info"},
            root=root,
            http_port=free_port(),
            stop_timeout=60,
        )

    @property
    def procs(self) -> list[Replica]:
        return self.replicas


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    dep = Deployment(world_readable_tmpdir("qd-e2e-"))
    yield dep
    dep.stop_all()
