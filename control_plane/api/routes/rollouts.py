"""Rollouts: start one (all-at-once), list them, show one with per-device status."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.deps import RolloutsDep
from control_plane.api.schemas import RolloutOut, RolloutRequest
from control_plane.domain.artifacts import ArtifactWish
from control_plane.domain.selectors import Selector

router = APIRouter(prefix="/v1/rollouts", tags=["rollouts"])


@router.post("", status_code=201)
def create_rollout(request: RolloutRequest, rollouts: RolloutsDep) -> RolloutOut:
    selector = Selector(labels=dict(request.selector.labels), gpu_class=request.selector.gpu_class)
    wish = ArtifactWish(kind=request.kind, precision=request.precision)
    return RolloutOut.of(rollouts.create(request.model, request.version, selector, request.strategy, wish))


@router.get("")
def list_rollouts(rollouts: RolloutsDep) -> list[RolloutOut]:
    return [RolloutOut.of(r) for r in rollouts.list_rollouts()]


@router.get("/{rollout_id}")
def get_rollout(rollout_id: str, rollouts: RolloutsDep) -> RolloutOut:
    return RolloutOut.of(rollouts.get_rollout(rollout_id))
