"""Rollouts: the pure part. Which build each device gets, its next desired state, and status derivation.

Nothing here publishes, stores or reads the clock: services pass `now` and apply the results. The staged part
(steps, gates, rollback) is `rollout_plan`; this module picks builds and composes desired states.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from control_plane.domain.artifacts import ArtifactWish, NoArtifact, choose_artifact
from control_plane.domain.fleet import Device
from control_plane.domain.registry import Build
from control_plane.domain.selectors import Selector
from edge_agent.protocol import (
    DesiredState,
    ModelAssignment,
    SignedDesiredState,
)
from edge_agent.protocol.vocabulary import ArtifactKind


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
    # (build id, model, version) of every build the document sends (`reports.builds_in`), taken when it was composed:
    # the store records them as issued to the device without parsing the signed document again.
    builds: tuple[tuple[str, str, int], ...]


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
    preferences: Mapping[str, Sequence[ArtifactKind]] | None = None,
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
        preference = (preferences or {}).get(gpu_class) or (ArtifactKind.ONNX,)
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
    assignment: ModelAssignment | str,
    generation: int,
    now: datetime,
    rollout_id: str,
) -> DesiredState:
    """The device's full desired state: its other models kept, this model (re)placed, or removed when
    `assignment` is only the model's name (a restore to a device that did not have the model before)."""
    name = assignment if isinstance(assignment, str) else assignment.name
    others = [m for m in (previous.models if previous else []) if m.name != name]
    models = sorted([*others, *([] if isinstance(assignment, str) else [assignment])], key=lambda m: m.name)
    return DesiredState(device_id=device_id, generation=generation, issued_at=now, rollout_id=rollout_id, models=models)
