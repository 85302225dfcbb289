"""HTTP endpoints of the agents floor: the agent types a run may select (so clients need not
hard-code them), each with whether this deployment can run it now, and ``/v1/system``, the
isolation agent commands get on this host and the Claude Code CLI claude-code runs use."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import Field

from quarterdeck.agents.claude_code.install import ClaudeCodeProbe
from quarterdeck.agents.sandbox import isolation_report
from quarterdeck.agents.templates import AgentCatalog, AgentType
from quarterdeck.kit.wiring import provide, provide_optional
from quarterdeck.security.auth import Permission, require

router = APIRouter(prefix="/v1/agent-types", tags=["agents"])
Catalog = Annotated[AgentCatalog, Depends(provide(AgentCatalog))]
MaybeCatalog = Annotated[AgentCatalog | None, Depends(provide_optional(AgentCatalog))]


class AgentTypeInfo(AgentType):
    """An agent type as listed: its template, and whether a run of it can be submitted now."""

    available: bool = Field(
        description="False when this deployment cannot run the type (e.g. a claude-code type "
        "without its CLI); a run submitted to it is refused with 422."
    )
    unavailable_reason: str | None = Field(
        default=None, description="Why it is unavailable, and how to fix it."
    )


def _listing(catalog: AgentCatalog) -> list[AgentTypeInfo]:
    out = []
    for agent_type in catalog.list():
        reason = catalog.unavailable_reason(agent_type.name)
        out.append(
            AgentTypeInfo(
                **agent_type.model_dump(), available=reason is None, unavailable_reason=reason
            )
        )
    return out


@router.get(
    "",
    response_model=list[AgentTypeInfo],
    summary="List the agent types, each with whether it can run here",
    dependencies=[Depends(require(Permission.AGENTS_READ))],
)
async def list_agent_types(catalog: Catalog) -> list[AgentTypeInfo]:
    # Off the event loop: the first listing runs the Claude Code CLI's --version.
    return await asyncio.to_thread(_listing, catalog)


system_router = APIRouter(prefix="/v1/system", tags=["system"])


def _system(catalog: AgentCatalog | None) -> dict[str, Any]:
    probe = catalog.availability if catalog is not None else None
    claude_code = probe.install().as_dict() if isinstance(probe, ClaudeCodeProbe) else None
    return {"isolation": isolation_report(), "claude_code": claude_code}


@system_router.get(
    "",
    summary="What this host gives agent commands: every sandbox mode, which is in use, and the "
    "Claude Code CLI",
    dependencies=[Depends(require(Permission.HEALTH_READ))],
)
async def system_info(catalog: MaybeCatalog) -> dict[str, Any]:
    """Platform-only (``health:read``): the report names host facts (uid, paths, kernel
    limits) an operator needs and a tenant does not."""
    return await asyncio.to_thread(_system, catalog)
