"""What an agent-configuration canary is asked to do: one agent type, a candidate's settings,
steps of the share of new runs, and the limits its runs are judged by.

Why a plan of its own next to :class:`~quarterdeck.rollouts.spec.RolloutSpec`: the steps, pauses,
extensions, promote and abort are the same (the same pure machine runs both), but what moves is
the share of *new runs* that get the candidate (decided at submission, ``runs/config_routes.py``)
and what is judged is how those runs ended (``config_analysis.py``), not requests in Prometheus.

``base`` is what was in force when the canary started (the settings an earlier promoted canary
left, or none: the YAML as it is): the stable arm runs with it, and ``settings`` is ``base`` with
the requested changes, which the candidate arm runs with. So successive canaries build on each
other, and a rollback leaves exactly what was in force before.

Default steps differ from a deployment's because runs last minutes, not milliseconds: 10, 25, 50
and 100 % of new runs, 15 minutes each, every step analysed on all of the canary's finished runs
so far (per-step windows would mostly be empty), and no soak (nothing is left to clean up).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from quarterdeck.rollouts.config_analysis import ConfigAnalysis
from quarterdeck.rollouts.spec import Step

DEFAULT_STEPS = "10,25,50,100"
DEFAULT_PAUSES = "15m"
TARGET_PREFIX = "agent:"

Settings = tuple[tuple[str, Any], ...]


def frozen_settings(values: dict[str, Any]) -> Settings:
    """Settings in a stable order (the spec hash must not depend on dict order)."""
    return tuple(sorted(values.items()))


@dataclass(frozen=True, slots=True)
class AgentCanarySpec:
    agent_type: str
    settings: Settings  # the candidate's settings: base with the requested changes
    base: Settings  # the stable arm's settings (what was in force at the start)
    version: str  # the candidate's configuration version ("coder@3f9a0c1b2d")
    stable_version: str
    steps: tuple[Step, ...]
    analysis: ConfigAnalysis = field(default_factory=ConfigAnalysis)
    stable_soak_s: float = 0.0

    kind: ClassVar[str] = "agent-config"
    strategy: ClassVar[str] = "canary"
    traffic: ClassVar[str] = "runs"

    @property
    def target(self) -> str:
        """``agent:<type>``: one live canary per agent type (a Deployment name has no colon)."""
        return f"{TARGET_PREFIX}{self.agent_type}"

    @property
    def image(self) -> str:
        """What the machine's messages call the new version: the candidate's version."""
        return self.version

    def changes(self) -> dict[str, Any]:
        """The settings the candidate changes relative to the stable arm."""
        base = dict(self.base)
        return {k: v for k, v in self.settings if base.get(k, _MISSING) != v}

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not self.changes():
            raise ValueError("set: the candidate changes nothing the stable arm does not have")
        if not self.steps:
            raise ValueError("steps: at least one step")
        last = 0
        for i, step in enumerate(self.steps):
            if not 0 < step.weight <= 100:
                raise ValueError(f"steps[{i}].weight must be in 1..100, got {step.weight}")
            if step.weight < last:
                raise ValueError(f"steps[{i}].weight must not decrease ({last} -> {step.weight})")
            last = step.weight
        if self.steps[-1].weight != 100:
            raise ValueError("the last step must send 100 % of new runs to the candidate")
        try:
            self.analysis.validate()
        except ValueError as exc:
            raise ValueError(f"analysis.{exc}") from exc
        if self.stable_soak_s < 0:
            raise ValueError("stable_soak must be >= 0")

    def spec_hash(self) -> str:
        raw = json.dumps(to_json(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


_MISSING = object()


def to_json(spec: AgentCanarySpec) -> dict[str, Any]:
    a = spec.analysis
    return {
        "kind": spec.kind,
        "agent_type": spec.agent_type,
        "settings": dict(spec.settings),
        "base": dict(spec.base),
        "version": spec.version,
        "stable_version": spec.stable_version,
        "steps": [{"weight": s.weight, "pause_s": s.pause_s} for s in spec.steps],
        "analysis": {
            "interval_s": a.interval_s,
            "max_extensions": a.max_extensions,
            "max_success_drop": a.max_success_drop,
            "max_cost_increase": a.max_cost_increase,
            "max_turns_increase": a.max_turns_increase,
            "max_duration_increase": a.max_duration_increase,
            "max_quality_drop": a.max_quality_drop,
            "max_coverage_drop": a.max_coverage_drop,
            "min_runs": a.min_runs,
        },
        "stable_soak_s": spec.stable_soak_s,
    }


def from_json(raw: dict[str, Any]) -> AgentCanarySpec:
    """The stored plan with the exact types it was built with (so its hash is unchanged)."""
    a = raw["analysis"]
    return AgentCanarySpec(
        agent_type=raw["agent_type"],
        settings=frozen_settings(dict(raw["settings"])),
        base=frozen_settings(dict(raw["base"])),
        version=raw["version"],
        stable_version=raw["stable_version"],
        steps=tuple(
            Step(int(s["weight"]), None if s["pause_s"] is None else float(s["pause_s"]))
            for s in raw["steps"]
        ),
        analysis=ConfigAnalysis(
            interval_s=float(a["interval_s"]),
            max_extensions=int(a["max_extensions"]),
            max_success_drop=float(a["max_success_drop"]),
            max_cost_increase=float(a["max_cost_increase"]),
            max_turns_increase=float(a["max_turns_increase"]),
            max_duration_increase=float(a["max_duration_increase"]),
            max_quality_drop=float(a["max_quality_drop"]),
            max_coverage_drop=float(a["max_coverage_drop"]),
            min_runs=None if a["min_runs"] is None else int(a["min_runs"]),
        ),
        stable_soak_s=float(raw["stable_soak_s"]),
    )
