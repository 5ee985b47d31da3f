"""A rollout's state and the planner's vocabulary: phases, device statuses, operator commands, actions.

These are the values the planner (rollout_plan.py) reads and returns, the executor persists and the API shows.
Everything a restarted control plane needs to continue a rollout is in `RolloutState`. Values only: no decisions
beyond what a phase allows, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any

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
IN_FLIGHT = frozenset({DeviceStatus.IN_PROGRESS, DeviceStatus.RESTORING})


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
    # Chosen with `build_id` when the rollout was created (0010): the build the agent falls back to, if any.
    fallback_build_id: str | None = None


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
    # The devices whose tracks changed since the state was loaded or last stored: what the executor writes.
    touched: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    # Derived, never stored as such: the track index and the per-step counts, valid for the `devices` tuple they
    # were made from (kept under "of"). `replace` hands them on; `with_tracks` updates them in O(changed tracks).
    _derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def current_step(self) -> str | None:
        return self.steps[self.step_index] if self.step_index < len(self.steps) else None

    def track(self, device_id: str) -> DeviceTrack | None:
        at = self._index().get(device_id)
        return None if at is None else self.devices[at]

    def step_counts(self, step: str) -> Mapping[DeviceStatus, int]:
        """How many of the step's devices have each status (a status no device has may be missing)."""
        return self._counts().get(step, {})

    def count(self, statuses: Iterable[DeviceStatus], step: str | None = None) -> int:
        """How many devices (of `step`, or of every step) have one of `statuses`."""
        wanted = frozenset(statuses)
        per_step = [self.step_counts(step)] if step is not None else list(self._counts().values())
        return sum(n for counts in per_step for s, n in counts.items() if s in wanted)

    def in_flight_since(self) -> datetime | None:
        """When the earliest in-flight (in progress or restoring) device was published, or a moment before it."""
        cache = self._cache()
        if "flight_from" not in cache:
            cache["flight_from"] = min(
                (t.published_at for t in self.devices if t.status in IN_FLIGHT and t.published_at is not None),
                default=None,
            )
        found: datetime | None = cache["flight_from"]
        return found

    def refresh_in_flight_since(self) -> None:
        """Drop the (possibly early) bound `in_flight_since` inherited; computed again when next asked."""
        self._cache().pop("flight_from", None)

    def _cache(self) -> dict[str, Any]:
        if self._derived.get("of") is not self.devices:
            object.__setattr__(self, "_derived", {"of": self.devices})
        return self._derived

    def _index(self) -> dict[str, int]:
        cache = self._cache()
        if "index" not in cache:
            cache["index"] = {t.device_id: i for i, t in enumerate(self.devices)}
        index: dict[str, int] = cache["index"]
        return index

    def _counts(self) -> dict[str, dict[DeviceStatus, int]]:
        cache = self._cache()
        if "counts" not in cache:
            counts: dict[str, dict[DeviceStatus, int]] = {}
            for t in self.devices:
                per = counts.setdefault(t.step, {})
                per[t.status] = per.get(t.status, 0) + 1
            cache["counts"] = counts
        found: dict[str, dict[DeviceStatus, int]] = cache["counts"]
        return found


def with_tracks(state: RolloutState, tracks: Iterable[DeviceTrack], **changes: Any) -> RolloutState:
    """`state` with these tracks (by device id, each already in the rollout) replaced: O(len(tracks)) work on the
    index and counts, which the new state inherits; the devices are remembered in `touched`."""
    new_tracks = list(tracks)
    if not new_tracks:
        return replace(state, **changes) if changes else state
    index = state._index()
    counts = {step: dict(per) for step, per in state._counts().items()}
    devices = list(state.devices)
    for track in new_tracks:
        at = index[track.device_id]
        old = devices[at]
        counts[old.step][old.status] -= 1
        per = counts.setdefault(track.step, {})
        per[track.status] = per.get(track.status, 0) + 1
        devices[at] = track
    touched = state.touched | {t.device_id for t in new_tracks}
    as_tuple = tuple(devices)
    derived: dict[str, Any] = {"of": as_tuple, "index": index, "counts": counts}
    flight_from = state._cache().get("flight_from", "unknown")
    if flight_from != "unknown":
        # A lower bound: a device leaving flight leaves it early (a refresh makes it exact), one entering lowers it.
        entering = [t.published_at for t in new_tracks if t.status in IN_FLIGHT and t.published_at is not None]
        derived["flight_from"] = min([*entering, *([flight_from] if flight_from else [])], default=None)
    return replace(state, devices=as_tuple, touched=touched, _derived=derived, **changes)


def with_counts(state: RolloutState, counts: Mapping[str, Mapping[DeviceStatus, int]]) -> RolloutState:
    """A rollout read without its tracks (the API's view of one) with its stored per-step counts."""
    state._cache()["counts"] = {step: dict(per) for step, per in counts.items()}
    return state


def settled(state: RolloutState) -> RolloutState:
    """The state once stored: nothing touched (the index and counts carried over)."""
    return replace(state, touched=frozenset()) if state.touched else state


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
