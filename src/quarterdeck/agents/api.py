"""HTTP endpoint listing the agent types a run may select, so clients need not hard-code them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

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
