"""Start Quarterdeck processes for a benchmark, each deployment on its own embedded Postgres.

A :class:`Bench` is the chaos suite's :class:`~quarterdeck.chaos.deploy.LocalDeployment` (one
process harness for tests, chaos and benchmarks) on one fixed HTTP port, with quiet logs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from quarterdeck.chaos.deploy import LocalDeployment
from quarterdeck.chaos.process import free_port


class Bench(LocalDeployment):
    def __init__(self, name: str) -> None:
        root = Path(tempfile.mkdtemp(prefix=f"qd-bench-{name}-", dir="/tmp"))
        super().__init__(root=root, http_port=free_port(), stop_timeout=60)

    def stop(self) -> None:
        self.stop_all()


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """No garbage collection in the measuring process while a timed run is on.

    Why: the load generator's own heap (the whole package is imported) takes a full collection
    70-100 ms here, and one landing inside a run stalls every response it is reading: measured,
    a 1-2 % tail of 65-100 ms charged to whichever path happened to be running. Reference
    counting still frees almost everything; the cycles wait for the collection after the run.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def host_cpu_ticks() -> tuple[int, int]:
    """Ticks the hypervisor gave to other guests while this one wanted to run (steal), and all
    ticks, summed over CPUs, so far: the steal share over a run says how much a noisy neighbour
    took from it (figures from such a run mean little)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else 0.0


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds of ``roots`` and all their descendants (a server's worker processes too);
    a process that exited meanwhile counts as nothing."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
        todo.extend(parents.get(pid, ()))
    return total
