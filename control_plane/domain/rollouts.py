"""Rollouts: the pure part. Which build each device gets, its next desired state, and status derivation.

Nothing here publishes, stores or reads the clock: services pass `now` and apply the results. A later issue
adds canary/waves/gates as more pure planning on these same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from control_plane.domain.artifacts import ArtifactWish, NoArtifact, choose_artifact
from control_plane.domain.fleet import Device
from control_plane.domain.registry import Build
from control_plane.domain.selectors import Selector
from edge_agent.protocol import (
    ApplyPhase,
    DesiredState,
    ModelAssignment,
    ModelHealth,
    ReportedState,
    SignedDesiredState,
)


class RolloutStrategy(str, Enum):
    ALL_AT_ONCE = "all-at-once"


class RolloutPhase(str, Enum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DeviceRolloutStatus(str, Enum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    ACTIVATED = "activated"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (DeviceRolloutStatus.ACTIVATED, DeviceRolloutStatus.FAILED)


@dataclass(frozen=True)
class RolloutDevice:
    device_id: str
    target: str
    build_id: str
    generation: int
    status: DeviceRolloutStatus
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True)
class Rollout:
    id: str
    model: str
    version: int
    selector: Selector
    strategy: RolloutStrategy
    phase: RolloutPhase
    created_at: datetime
    updated_at: datetime
    devices: tuple[RolloutDevice, ...]


@dataclass(frozen=True)
class DevicePlan:
    """One device's part of a new rollout: the build it gets (and the one to fall back to), its next generation."""

    device: Device
    build: Build
    generation: int
    fallback: Build | None = None


@dataclass(frozen=True)
class DesiredUpdate:
    """A device's next desired state, signed, as it is stored and published."""

    device_id: str
    generation: int
    signed: SignedDesiredState


class PlanError(ValueError):
    """Why a rollout cannot be planned; `missing_targets` is set when builds are missing."""

    def __init__(self, message: str, missing_targets: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing_targets = tuple(missing_targets)


def select_devices(devices: Iterable[Device], selector: Selector) -> list[Device]:
    return sorted((d for d in devices if selector.matches(d.labels, d.gpu_class)), key=lambda d: d.id)


def next_generation(device: Device) -> int:
    """Above both what we last issued and what the device says it applied (survives a reset database)."""
    applied = device.reported.applied_generation if device.reported is not None else 0
    return max(device.desired_generation, applied) + 1


def plan_all_at_once(
    devices: Sequence[Device],
    builds: Iterable[Build],
    preferences: Mapping[str, Sequence[str]] | None = None,
    wish: ArtifactWish = ArtifactWish(),
) -> list[DevicePlan]:
    """Every selected device gets the artifact `choose_artifact` picks for its class and hardware (the class's
    `runtime.preference` from `preferences`, ONNX when a class is not in it), or PlanError naming what is missing."""
    if not devices:
        raise PlanError("the selector matched no devices")
    unclassified = sorted(d.id for d in devices if d.gpu_class is None)
    if unclassified:
        raise PlanError(f"devices {unclassified} have not reported a GPU class yet")
    candidates = list(builds)
    plans: list[DevicePlan] = []
    missing: dict[str, str] = {}
    for d in devices:
        gpu_class = str(d.gpu_class)
        preference = (preferences or {}).get(gpu_class) or ("onnx",)
        try:
            pick = choose_artifact(gpu_class, d.hardware, preference, candidates, wish)
        except NoArtifact as exc:
            missing.setdefault(gpu_class, str(exc))
            continue
        plans.append(DevicePlan(d, pick.primary, next_generation(d), pick.fallback))
    if missing:
        raise PlanError("; ".join(missing[c] for c in sorted(missing)), sorted(missing))
    return plans


def compose_desired(
    device_id: str,
    previous: DesiredState | None,
    assignment: ModelAssignment,
    generation: int,
    now: datetime,
    rollout_id: str,
) -> DesiredState:
    """The device's full desired state: its other models kept, this model (re)placed."""
    others = [m for m in (previous.models if previous else []) if m.name != assignment.name]
    models = sorted([*others, assignment], key=lambda m: m.name)
    return DesiredState(device_id=device_id, generation=generation, issued_at=now, rollout_id=rollout_id, models=models)


def derive_device_status(
    current: DeviceRolloutStatus,
    generation: int,
    model: str,
    version: int,
    reported: ReportedState | None,
    published: bool,
) -> tuple[DeviceRolloutStatus, str | None]:
    """A device's status in a rollout from its latest report. Terminal statuses stay as they are."""
    if current.terminal:
        return current, None
    if reported is not None:
        if reported.applied_generation >= generation and any(
            m.name == model and m.version == version and m.health is ModelHealth.SERVING for m in reported.models
        ):
            return DeviceRolloutStatus.ACTIVATED, None
        last = reported.last_apply
        if last is not None and last.generation == generation and last.phase is ApplyPhase.FAILED:
            return DeviceRolloutStatus.FAILED, last.reason or "the device reported a failed apply"
    if published:
        return DeviceRolloutStatus.IN_PROGRESS, None
    return DeviceRolloutStatus.PENDING, None


def derive_phase(statuses: Iterable[DeviceRolloutStatus]) -> RolloutPhase:
    values = list(statuses)
    if values and all(s is DeviceRolloutStatus.ACTIVATED for s in values):
        return RolloutPhase.SUCCEEDED
    if values and all(s.terminal for s in values):
        return RolloutPhase.FAILED
    return RolloutPhase.IN_PROGRESS


def status_counts(statuses: Iterable[DeviceRolloutStatus]) -> Mapping[str, int]:
    counts = {s.value: 0 for s in DeviceRolloutStatus}
    for status in statuses:
        counts[status.value] += 1
    return counts


def refresh_rollout(rollout: Rollout, device_id: str, reported: ReportedState | None, now: datetime) -> Rollout:
    """The rollout after a new report from one of its devices: that device's status and the phase re-derived."""
    devices = []
    for row in rollout.devices:
        if row.device_id == device_id:
            status, reason = derive_device_status(
                row.status,
                row.generation,
                rollout.model,
                rollout.version,
                reported,
                row.status is not DeviceRolloutStatus.PENDING,
            )
            if status is not row.status:
                row = replace(row, status=status, reason=reason, updated_at=now)
        devices.append(row)
    return _with_devices(rollout, devices, now)


def supersede(rollout: Rollout, device_ids: Iterable[str], by_rollout: str, now: datetime) -> Rollout:
    """Fail the open device rows of an older rollout of the same model that a newer rollout replaces."""
    moved = set(device_ids)
    devices = [
        replace(row, status=DeviceRolloutStatus.FAILED, reason=f"superseded by rollout {by_rollout}", updated_at=now)
        if row.device_id in moved and not row.status.terminal
        else row
        for row in rollout.devices
    ]
    return _with_devices(rollout, devices, now)


def mark_published(rollout: Rollout, reported: Mapping[str, ReportedState | None], now: datetime) -> Rollout:
    """After the desired states went out: every pending device is in progress (or already done, by its report)."""
    devices = []
    for row in rollout.devices:
        status, reason = derive_device_status(
            row.status, row.generation, rollout.model, rollout.version, reported.get(row.device_id), True
        )
        devices.append(replace(row, status=status, reason=reason, updated_at=now))
    return _with_devices(rollout, devices, now)


def _with_devices(rollout: Rollout, devices: Sequence[RolloutDevice], now: datetime) -> Rollout:
    if tuple(devices) == rollout.devices:
        return rollout
    phase = derive_phase(d.status for d in devices)
    return replace(rollout, devices=tuple(devices), phase=phase, updated_at=now)
