"""HTTP endpoint listing the agent types a run may select, so clients need not hard-code them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from quarterdeck.agents.templates import AgentCatalog, AgentType
from quarterdeck.security.auth import Permission, require

router = APIRouter(prefix="/v1/agent-types", tags=["agents"])


def _catalog(request: Request) -> AgentCatalog:
    catalog: AgentCatalog = request.app.state.runtime.agent_catalog
    return catalog


@router.get(
    "",
    response_model=list[AgentType],
    summary="List the available agent types",
    dependencies=[Depends(require(Permission.AGENTS_READ))],
)
async def list_agent_types(request: Request) -> list[AgentType]:
    return _catalog(request).list()
