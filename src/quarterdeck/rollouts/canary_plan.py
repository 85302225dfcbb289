"""An agent-configuration canary's plan from its request: settings checked against the agent
type (the same validation as the YAML), built on what is in force, versions named.

Why here and not in the request model: what the stable arm runs depends on stored state (an
earlier canary of the type that was promoted left its settings in force), and a setting is only
valid together with the type's others (a thinking budget must stay below ``max_tokens``).
"""

from __future__ import annotations

from typing import Any

from quarterdeck.agents.configured import check_settings, config_version
from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.rollouts.canary_spec import AgentCanarySpec, frozen_settings
from quarterdeck.rollouts.config_analysis import ConfigAnalysis
from quarterdeck.rollouts.models import CanaryCreate
from quarterdeck.rollouts.routing import route_of
from quarterdeck.rollouts.spec import checked_steps

__all__ = ["canary_of", "in_force"]


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def in_force(newest: Any | None) -> dict[str, Any]:
    """The settings new runs of the type get when no canary of it is live: the newest canary's
    candidate if it was promoted, else its stable arm's; none without a canary."""
    if newest is None:
        return {}
    route = route_of(newest["id"], newest["phase"], newest["weight"], newest["spec"])
    if route.live:
        return dict(route.stable)  # the insert will refuse: one live canary per type
    return dict(route.candidate if route.promoted else route.stable)


def canary_of(body: CanaryCreate, catalog: AgentCatalog, newest: Any | None) -> AgentCanarySpec:
    """The frozen plan; ``ValidationFailed`` names the first bad field."""
    catalog.get(body.agent_type)  # 422 naming the known types
    changes = check_settings(body.set)
    base = in_force(newest)
    candidate = base | changes
    stable_agent = catalog.configured(body.agent_type, base)
    candidate_agent = catalog.configured(body.agent_type, candidate)
    steps = checked_steps(body.steps, body.pauses)
    spec = AgentCanarySpec(
        agent_type=body.agent_type,
        settings=frozen_settings(candidate),
        base=frozen_settings(base),
        version=config_version(candidate_agent),
        stable_version=config_version(stable_agent),
        steps=steps,
        analysis=ConfigAnalysis(
            interval_s=body.analysis_interval_s,
            max_extensions=body.max_extensions,
            max_success_drop=body.max_success_drop,
            max_cost_increase=body.max_cost_increase,
            max_turns_increase=body.max_turns_increase,
            max_duration_increase=body.max_duration_increase,
            max_quality_drop=body.max_quality_drop,
            max_coverage_drop=body.max_coverage_drop,
            min_runs=body.min_runs,
        ),
    )
    try:
        spec.validate()
    except ValueError as exc:
        message = str(exc)
        token = message.split(" ", 1)[0].rstrip(":")
        if not token.startswith(("set", "steps", "analysis", "stable_soak")):
            token = "steps" if "step" in message else "set"
        raise _invalid(token, message) from exc
    return spec
