"""HTTP endpoints of the agents floor: the agent types a run may select (so clients need not
hard-code them) and ``/v1/system``, the isolation agent commands get on this host."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from quarterdeck.agents.sandbox import isolation_report
from quarterdeck.agents.templates import AgentCatalog, AgentType
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, require

router = APIRouter(prefix="/v1/agent-types", tags=["agents"])
Catalog = Annotated[AgentCatalog, Depends(provide(AgentCatalog))]


@router.get(
    "",
    response_model=list[AgentType],
    summary="List the available agent types",
    dependencies=[Depends(require(Permission.AGENTS_READ))],
)
async def list_agent_types(catalog: Catalog) -> list[AgentType]:
    return catalog.list()


system_router = APIRouter(prefix="/v1/system", tags=["system"])


@system_router.get(
    "",
    summary="What this host gives agent commands: every sandbox mode, and which is in use",
    dependencies=[Depends(require(Permission.HEALTH_READ))],
)
async def system_info() -> dict[str, Any]:
    """Platform-only (``health:read``): the report names host facts (uid, paths, kernel
    limits) an operator needs and a tenant does not."""
    return {"isolation": await asyncio.to_thread(isolation_report)}
