"""The chaos suite: inject the production faults Quarterdeck claims to survive, and measure.

Six scenarios (provider 429/529, a dead primary model, Redis killed, Postgres restarted, a worker
SIGKILLed, the leader replica SIGKILLed), each against a fresh *local* deployment the runner
starts and controls itself; see :mod:`.deploy` for why a remote cluster is out of scope. Each
reports runs lost, runs duplicated (or turns billed twice), detection and recovery times, and
whether incidents, notifications, metrics and breakers agree with what happened.

The names below are imported on first use (:mod:`quarterdeck.kit.lazy`): every ``quarterdeck``
command goes through this package for ``chaos.cli``, and the runner brings uvicorn and Starlette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from quarterdeck.chaos.runner import Result, Runner
    from quarterdeck.chaos.scenarios import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Result", "Runner", "Scenario"]
__getattr__ = lazy_exports(
    __name__,
    {
        "quarterdeck.chaos.runner": ("Result", "Runner"),
        "quarterdeck.chaos.scenarios": ("SCENARIOS", "Scenario"),
    },
)
