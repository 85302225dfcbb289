"""HTTP endpoints for progressive delivery: start, watch, promote, abort and export a rollout.

Thin: parse, call :class:`RolloutService`, audit the writes. A rollout changes the platform's
own Deployment, which belongs to no tenant, so every route needs a platform-only permission
(``rollouts:read`` / ``rollouts:write``, a key of tenant ``*``), as scaling and incidents do.
Promote and abort are a person's decisions (the state machine says so), so each is recorded in
the change log with the key that made it, like acknowledging an incident.

Ids are checked here (``ro_<ulid>``): a malformed one is a 422 naming the field, before the
service is asked, and an unknown well-formed one the service's 404.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.rollouts.models import (
    STRICT,
    CanaryCreate,
    Rollout,
    RolloutCreate,
    RolloutDetail,
    RolloutPage,
)
from quarterdeck.rollouts.service import MAX_PAGE, RolloutService
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import Changes

router = APIRouter(tags=["rollouts"])
Rollouts = Annotated[RolloutService, Depends(provide(RolloutService))]
CanWrite = Annotated[Principal, Depends(require(Permission.ROLLOUTS_WRITE))]

ID_PREFIX = "ro"
MAX_LIMIT = MAX_PAGE
MAX_REASON = 500
YAML = "text/yaml"


class PromoteRequest(BaseModel):
    """``POST /v1/rollouts/{id}/promote``: skip the rest of this step, or (``full``) all of
    them."""

    model_config = STRICT
    full: bool = False


class AbortRequest(BaseModel):
    """``POST /v1/rollouts/{id}/abort``: why; stored with the rollout and in the change log."""

    model_config = STRICT

    reason: str = Field(min_length=1, max_length=MAX_REASON, pattern=r"\S")


def check_id(value: str, field: str = "rollout_id") -> str:
    """``value`` if it is a rollout id, else a 422 naming ``field``."""
    if not is_id(value, ID_PREFIX):
        raise ValidationFailed(
            f"{field} {value[:80]!r} is not a rollout id (ro_<ulid>)",
            errors=[{"field": field, "message": "malformed"}],
        )
    return value


def actor_of(principal: Principal) -> str:
    """Who started, promoted or aborted, as the rollout's events name them."""
    return f"key:{principal.key_id}"


@router.post(
    "/v1/rollouts",
    status_code=201,
    response_model=Rollout,
    summary="Start a rollout",
    description="Validates the steps, pauses and checks (422 naming the field) and starts "
    "the first step. Only one rollout per target is live at a time (409).",
)
async def start_rollout(
    body: RolloutCreate,
    response: Response,
    principal: CanWrite,
    rollouts: Rollouts,
    changes: Changes,
) -> Rollout:
    rollout = await rollouts.start(body, by=actor_of(principal))
    await changes.record(
        principal.key_id,
        "rollout.started",
        "platform",
        {"rollout_id": rollout.id, "target": rollout.target, "image": rollout.image},
    )
    response.headers["Location"] = f"/v1/rollouts/{rollout.id}"
    return rollout


@router.post(
    "/v1/canaries",
    status_code=201,
    response_model=Rollout,
    summary="Start an agent-configuration canary",
    description="Routes a share of new runs of `agent_type` to the candidate settings (`set`: "
    "model, system_prompt, max_turns, max_tokens, thinking_budget, cache_ttl, timeout_s, "
    "budget_usd), compares how the two arms' runs end and promotes or rolls back. It is a "
    "rollout of kind `agent-config` (target `agent:<type>`): read, promote and abort it under "
    "`/v1/rollouts/{id}`. One live canary per agent type (409).",
)
async def start_canary(
    body: CanaryCreate,
    response: Response,
    principal: CanWrite,
    rollouts: Rollouts,
    changes: Changes,
) -> Rollout:
    rollout = await rollouts.start_canary(body, by=actor_of(principal))
    await changes.record(
        principal.key_id,
        "canary.started",
        "platform",
        {"rollout_id": rollout.id, "agent_type": body.agent_type, "version": rollout.image,
         "set": sorted(body.set)},
    )  # fmt: skip
    response.headers["Location"] = f"/v1/rollouts/{rollout.id}"
    return rollout


@router.get(
    "/v1/rollouts",
    response_model=RolloutPage,
    summary="Rollouts, newest first",
    dependencies=[Depends(require(Permission.ROLLOUTS_READ))],
)
async def list_rollouts(
    rollouts: Rollouts,
    live: Annotated[bool, Query(description="Only rollouts not yet finished.")] = False,
    kind: Annotated[
        Literal["deployment", "agent-config"] | None,
        Query(description="Only Deployment rollouts, or only agent-configuration canaries."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="A `next_cursor` as returned: older rollouts."),
    ] = None,
) -> RolloutPage:
    if cursor is not None:
        check_id(cursor, "cursor")
    return await rollouts.list(limit=limit, cursor=cursor, live_only=live, kind=kind)


@router.get(
    "/v1/rollouts/{rollout_id}",
    response_model=RolloutDetail,
    summary="One rollout with its events",
    dependencies=[Depends(require(Permission.ROLLOUTS_READ))],
)
async def get_rollout(rollout_id: str, rollouts: Rollouts) -> RolloutDetail:
    return await rollouts.get(check_id(rollout_id))


@router.post(
    "/v1/rollouts/{rollout_id}/promote",
    response_model=Rollout,
    summary="Promote: skip the rest of the current step (`full`: every step)",
)
async def promote_rollout(
    rollout_id: str,
    principal: CanWrite,
    rollouts: Rollouts,
    changes: Changes,
    body: PromoteRequest | None = None,
) -> Rollout:
    full = (body or PromoteRequest()).full
    done = await rollouts.promote(check_id(rollout_id), full=full, by=actor_of(principal))
    await changes.record(
        principal.key_id, "rollout.promoted", "platform", {"rollout_id": done.id, "full": full}
    )
    return done


@router.post(
    "/v1/rollouts/{rollout_id}/abort",
    response_model=Rollout,
    summary="Abort: send all traffic back to the stable version",
)
async def abort_rollout(
    rollout_id: str,
    body: AbortRequest,
    principal: CanWrite,
    rollouts: Rollouts,
    changes: Changes,
) -> Rollout:
    reason = body.reason.strip()
    done = await rollouts.abort(check_id(rollout_id), reason=reason, by=actor_of(principal))
    await changes.record(
        principal.key_id, "rollout.aborted", "platform", {"rollout_id": done.id, "reason": reason}
    )
    return done


@router.get(
    "/v1/rollouts/{rollout_id}/argo",
    response_class=Response,
    summary="The rollout as Argo Rollouts manifests (YAML)",
    description="A `Rollout` and its `AnalysisTemplate`s in one `v1` `List` (`kubectl apply -f` "
    "takes it), for running the same plan under Argo Rollouts instead of Quarterdeck's "
    "controller.",
    responses={
        200: {
            "content": {
                YAML: {
                    "schema": {
                        "type": "object",
                        "required": ["apiVersion", "kind", "items"],
                        "properties": {
                            "apiVersion": {"const": "v1"},
                            "kind": {"const": "List"},
                            "items": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                }
            }
        }
    },
    dependencies=[Depends(require(Permission.ROLLOUTS_READ))],
)
async def export_rollout(rollout_id: str, rollouts: Rollouts) -> Response:
    rollout = await rollouts.get(check_id(rollout_id))
    return Response(rollouts.export_argo(rollout), media_type=YAML)
