"""Rollouts: start one (staged per docs/rollouts.md), list them, show one, and the operator's commands.

The event stream (`GET /v1/rollouts/{id}/events`) lives in `rollout_events.py`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from control_plane.api.deps import RolloutsDep
from control_plane.api.paging import link_next
from control_plane.api.schemas.rollouts import RolloutOut
from control_plane.domain.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT
from control_plane.domain.rollout_progress import Operator
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.services.rollouts import DEFAULT_PAGE, MAX_PAGE

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])


@router.post("", status_code=201)
def create_rollout(request: RolloutRequest, rollouts: RolloutsDep) -> RolloutOut:
    return RolloutOut.model_validate(rollouts.create(request))


@router.get("")
def list_rollouts(
    request: Request,
    response: Response,
    rollouts: RolloutsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rollouts per page.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR, description="Where the page starts: from the previous page's Link.")
    ] = None,
) -> list[RolloutOut]:
    """One page of rollouts, newest first, without their devices (counts per step and status); the next page's URL
    comes in the `Link: <...>; rel="next"` header, absent on the last page (decision 0013)."""
    page = rollouts.rollouts_page(limit, cursor)
    link_next(request, response, page.next_cursor)
    return [RolloutOut.model_validate(r) for r in page.items]


@router.get("/{rollout_id}")
def get_rollout(
    rollout_id: str,
    rollouts: RolloutsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> RolloutOut:
    """The rollout with its counts per step and status and one page of its devices (`next_cursor`: the next)."""
    return RolloutOut.model_validate(rollouts.rollout_page(rollout_id, limit, cursor))


@router.post("/{rollout_id}/{command}")
def command_rollout(rollout_id: str, command: Operator, rollouts: RolloutsDep) -> RolloutOut:
    """pause | resume | abort | rollback; 409 naming the phase when it does not allow the command."""
    return RolloutOut.model_validate(rollouts.command(rollout_id, command))
