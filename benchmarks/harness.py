"""Start Quarterdeck processes for a benchmark, each deployment on its own embedded Postgres.

A :class:`Bench` is the chaos suite's :class:`~quarterdeck.chaos.deploy.LocalDeployment` (one
process harness for tests, chaos and benchmarks) on one fixed HTTP port, with quiet logs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from quarterdeck.chaos.deploy import LocalDeployment
from quarterdeck.chaos.process import free_port


class Bench(LocalDeployment):
    def __init__(self, name: str) -> None:
        root = Path(tempfile.mkdtemp(prefix=f"qd-bench-{name}-", dir="/tmp"))
        super().__init__(root=root, http_port=free_port(), stop_timeout=60)

    def stop(self) -> None:
        self.stop_all()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
