"""Public schemas of rollouts: a rollout with its steps and per-device tracks, and its event records as the
Server-Sent Events stream sends them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import model_validator

from control_plane.api.schemas.base import Out, with_fields
from control_plane.domain.rollout_events import RolloutEventRecord
from control_plane.domain.rollout_progress import (
    DeviceStatus,
    DeviceTrack,
    Operator,
    RolloutPhase,
    RolloutState,
    Verdict,
    allowed_commands,
)
from control_plane.domain.rollout_spec import RolloutRequest, SelectorIn, StrategyType
from control_plane.domain.step_states import StepState, step_summaries

FIRST_PAGE = 100  # devices shown with a rollout unless a page is asked for (GET /v1/rollouts/{id}?limit=&cursor=)


# Read from a DeviceTrack: what the device ran before is flattened.
class RolloutDeviceOut(Out):
    device_id: str
    step: str
    target: str
    build_id: str
    generation: int | None
    status: DeviceStatus
    reason: str | None
    published_at: datetime | None
    previous_version: int | None
    previous_build_id: str | None
    updated_at: datetime | None

    @model_validator(mode="before")
    @classmethod
    def _of_track(cls, value: Any) -> Any:
        if isinstance(value, DeviceTrack):
            previous = value.previous
            return with_fields(
                value,
                previous_version=previous.version if previous else None,
                previous_build_id=previous.build_id if previous else None,
            )
        return value


# Read from a StepSummary (control_plane/domain/step_states.py).
class StepOut(Out):
    name: str
    state: StepState
    devices: int
    counts: dict[str, int]
    verdict: Verdict | None
    verdict_reason: str | None


# Read from a RolloutState: selector and strategy from its spec; steps, commands and counts derived.
class RolloutOut(Out):
    id: str
    model: str
    version: int
    selector: SelectorIn
    strategy: StrategyType
    spec: RolloutRequest
    phase: RolloutPhase
    reason: str | None
    current_step: str | None
    step_started_at: datetime | None
    baked_since: datetime | None
    steps: list[StepOut]
    allowed_commands: list[Operator]
    created_at: datetime
    updated_at: datetime
    devices: list[RolloutDeviceOut]  # one page, by device id; `next_cursor` asks for the next
    counts: dict[str, int]
    next_cursor: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _of_state(cls, value: Any) -> Any:
        page: list[DeviceTrack] | None = None
        cursor = None
        if hasattr(value, "next_cursor") and isinstance(getattr(value, "state", None), RolloutState):
            page, cursor, value = list(value.devices), value.next_cursor, value.state
        if isinstance(value, RolloutState):
            if page is None:  # a whole state (create, commands): its first page
                page = list(value.devices[:FIRST_PAGE])
                cursor = page[-1].device_id if len(value.devices) > FIRST_PAGE else None
            return with_fields(
                value,
                selector=value.spec.selector,
                strategy=value.spec.strategy.type,
                steps=step_summaries(value),
                allowed_commands=sorted(allowed_commands(value.phase), key=lambda c: c.value),
                counts={s.value: value.count([s]) for s in DeviceStatus},
                devices=page,
                next_cursor=cursor,
            )
        return value


def event_json(record: RolloutEventRecord) -> dict[str, object]:
    """One rollout event as sent in the SSE stream's `data:`."""
    return {
        "id": record.id,
        "rollout_id": record.rollout_id,
        "at": record.at.isoformat(),
        "kind": record.kind,
        "device_id": record.device_id,
        "step": record.step,
        "message": record.message,
        "data": dict(record.data),
    }
