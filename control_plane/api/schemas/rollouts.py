"""Public schemas of rollouts: a rollout with its steps (devices counted by status, the bake's end, each gate's
thresholds and, for the current step, its values against them), what it waits for, its per-device tracks, and its
event records as the Server-Sent Events stream sends them. Bounded: the waits name at most WAITS_SHOWN devices and
devices come a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, model_validator

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
from control_plane.domain.rollout_spec import OnFail, RolloutRequest, SelectorIn, StrategyType
from control_plane.domain.step_states import WAITS_SHOWN, StepState, step_summaries

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


class GateOut(Out):
    """A step's gate as it applies to the step: `max_failed` counted for its devices."""

    max_failed: int
    min_requests: int
    max_error_rate: float | None
    max_p99_ms: float | None
    max_p99_ratio: float | None
    on_fail: OnFail


# Read from a GateReading (control_plane/domain/rollout_gates.py).
class ReadingOut(Out):
    name: str
    value: float | None
    threshold: float
    ok: bool | None = Field(description="None: not judged yet (fewer requests than the gate needs).")
    bound: str = Field(description="max: the value must stay at or below the threshold; min: must reach it.")


# Read from a Wait (control_plane/domain/step_states.py).
class WaitOut(Out):
    device_id: str
    step: str
    status: DeviceStatus
    published_at: datetime | None
    deadline: datetime | None
    why: str


# Read from a StepSummary (control_plane/domain/step_states.py), with its gate from the rollout's spec.
class StepOut(Out):
    name: str
    state: StepState
    devices: int
    counts: dict[str, int]
    verdict: Verdict | None
    verdict_reason: str | None
    bake_ends_at: datetime | None = None
    gate: GateOut | None = None
    readings: list[ReadingOut] = Field(default_factory=list, description="The current step's gate values now.")


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
    as_of: datetime | None = Field(default=None, description="The server's time of this answer.")
    waiting_for: list[WaitOut] = Field(
        default_factory=list, description=f"The first {WAITS_SHOWN} devices in flight and why each has not answered."
    )

    @model_validator(mode="before")
    @classmethod
    def _of_state(cls, value: Any) -> Any:
        page: list[DeviceTrack] | None = None
        cursor, live = None, {}
        if hasattr(value, "next_cursor") and isinstance(getattr(value, "state", None), RolloutState):
            live = {"as_of": value.as_of, "waiting_for": list(value.waits), "readings": list(value.readings)}
            page, cursor, value = list(value.devices), value.next_cursor, value.state
        if isinstance(value, RolloutState):
            if page is None:  # a whole state (create, commands): its first page
                page = list(value.devices[:FIRST_PAGE])
                cursor = page[-1].device_id if len(value.devices) > FIRST_PAGE else None
            return with_fields(
                value,
                selector=value.spec.selector,
                strategy=value.spec.strategy.type,
                steps=_steps(value, live.pop("readings", [])),
                allowed_commands=sorted(allowed_commands(value.phase), key=lambda c: c.value),
                counts={s.value: value.count([s]) for s in DeviceStatus},
                devices=page,
                next_cursor=cursor,
                **live,
            )
        return value


def _steps(state: RolloutState, readings: list[Any]) -> list[StepOut]:
    """Each step with its gate (the spec's, `max_failed` counted for the step) and, for the current one, the
    gate's values now."""
    out = []
    for step in step_summaries(state):
        gate = state.spec.gate_for(step.name)
        current = step.name == state.current_step
        shown = with_fields(gate, max_failed=gate.max_failed.of(step.devices), on_fail=gate.on_fail)
        out.append(
            StepOut.model_validate(
                with_fields(step, gate=GateOut.model_validate(shown), readings=readings if current else [])
            )
        )
    return out


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
