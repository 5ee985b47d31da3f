"""A rollout's state and the planner's vocabulary: phases, device statuses, operator commands, actions.

These are the values the planner (rollout_plan.py) reads and returns, the executor persists and the API shows.
Everything a restarted control plane needs to continue a rollout is in `RolloutState`. Values only: no decisions
beyond what a phase allows, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from control_plane.domain.rollout_spec import RolloutRequest
from edge_agent.protocol import ReportedState


class RolloutPhase(str, Enum):
    IN_PROGRESS = "in_progress"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"

    @property
    def final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset({RolloutPhase.SUCCEEDED, RolloutPhase.ABORTED, RolloutPhase.ROLLED_BACK})


class DeviceStatus(str, Enum):
    WAITING = "waiting"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    ACTIVATED = "activated"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RESTORING = "restoring"
    RESTORED = "restored"
    RESTORE_FAILED = "restore_failed"


MOVED = frozenset({DeviceStatus.IN_PROGRESS, DeviceStatus.ACTIVATED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT})
DONE = frozenset({DeviceStatus.ACTIVATED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT})
BAD = frozenset({DeviceStatus.FAILED, DeviceStatus.TIMED_OUT})


class Operator(str, Enum):
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


class Target(str, Enum):
    INSTALL = "install"
    RESTORE = "restore"


class EventKind(str, Enum):
    CREATED = "created"
    STEP_STARTED = "step_started"
    PUBLISHED = "published"
    DEVICE_STATUS = "device_status"
    GATE_PASSED = "gate_passed"
    GATE_FAILED = "gate_failed"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTING = "aborting"
    ROLLING_BACK = "rolling_back"
    RESTORED = "restored"
    PHASE = "phase"


class Verdict(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    OVERRIDDEN = "overridden"


@dataclass(frozen=True)
class PreviousModel:
    """What a device ran of this model before the rollout (None in a track: the model was not on it)."""

    version: int
    build_id: str


@dataclass(frozen=True)
class DeviceTrack:
    device_id: str
    step: str
    status: DeviceStatus
    generation: int | None
    published_at: datetime | None
    reason: str | None
    previous: PreviousModel | None
    target: str = ""
    build_id: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True)
class GateVerdict:
    step: str
    verdict: Verdict
    reason: str
    at: datetime


@dataclass(frozen=True)
class RolloutState:
    id: str
    model: str
    version: int
    spec: RolloutRequest
    phase: RolloutPhase
    step_index: int
    steps: tuple[str, ...]
    step_started_at: datetime | None
    baked_since: datetime | None
    devices: tuple[DeviceTrack, ...]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    verdicts: tuple[GateVerdict, ...] = ()

    @property
    def current_step(self) -> str | None:
        return self.steps[self.step_index] if self.step_index < len(self.steps) else None


@dataclass(frozen=True)
class TelemetryWindow:
    requests: int
    errors: int
    p99_ms: float | None


@dataclass(frozen=True)
class DeviceView:
    online: bool
    reported: ReportedState | None
    new_telemetry: TelemetryWindow | None = None
    old_telemetry: TelemetryWindow | None = None
    # A push (the Ansible channel) that failed before the agent answered: (generation, reason). The agent reports
    # nothing for that generation, so the failure is known only from the channel.
    undelivered: tuple[int, str] | None = None


FleetView = Mapping[str, DeviceView]


@dataclass(frozen=True)
class Publish:
    device_id: str
    target: Target


@dataclass(frozen=True)
class Note:
    kind: EventKind
    message: str
    device_id: str | None = None
    step: str | None = None
    data: Mapping[str, object] = field(default_factory=dict)


Action = Publish | Note
Outcome = tuple[RolloutState, list[Action]]


class CommandRefused(ValueError):
    """An operator command the rollout's phase does not allow."""


def allowed_commands(phase: RolloutPhase) -> frozenset[Operator]:
    """The operator commands a rollout in `phase` accepts (the API lists them; the planner refuses the rest)."""
    return _ALLOWED.get(phase, frozenset())


_ALLOWED: dict[RolloutPhase, frozenset[Operator]] = {
    RolloutPhase.IN_PROGRESS: frozenset({Operator.PAUSE, Operator.ABORT, Operator.ROLLBACK}),
    RolloutPhase.PAUSED: frozenset({Operator.RESUME, Operator.ABORT, Operator.ROLLBACK}),
    RolloutPhase.SUCCEEDED: frozenset({Operator.ROLLBACK}),
}
