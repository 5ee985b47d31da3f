"""Where each step of a rollout stands, as operators see it: waiting, running, baking or done, with its devices
counted by status and the step's latest gate verdict.

Derived from the persisted `RolloutState` alone (pure: no I/O, no clock; the per-step counts the planner keeps and
the rollout row stores), so the API and anything else that shows a rollout say the same thing. This module must
never decide anything about a rollout: the planner does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from control_plane.domain.rollout_progress import DeviceStatus, RolloutState, Verdict


class StepState(str, Enum):
    WAITING = "waiting"  # not started yet (or never started: the rollout ended before it)
    RUNNING = "running"  # its devices are being published to and watched
    BAKING = "baking"  # every device is done; the gate watches telemetry for the bake time
    DONE = "done"  # passed, or judged before the rollout ended


@dataclass(frozen=True)
class StepSummary:
    name: str
    state: StepState
    devices: int
    counts: Mapping[str, int]  # every DeviceStatus value -> how many of the step's devices have it
    verdict: Verdict | None
    verdict_reason: str | None


def status_counts(statuses: Iterable[DeviceStatus]) -> dict[str, int]:
    """How many of each status, with every status present (zero when none has it)."""
    counts = {s.value: 0 for s in DeviceStatus}
    for status in statuses:
        counts[status.value] += 1
    return counts


def step_state(state: RolloutState, index: int, judged: bool) -> StepState:
    """The state of step `index`; `judged`: the step has a gate verdict."""
    if index < state.step_index:
        return StepState.DONE
    if index > state.step_index or state.step_started_at is None or state.phase.final:
        return StepState.DONE if state.phase.final and judged else StepState.WAITING
    return StepState.BAKING if state.baked_since is not None else StepState.RUNNING


def step_summaries(state: RolloutState) -> tuple[StepSummary, ...]:
    return tuple(_summary(state, index, name) for index, name in enumerate(state.steps))


def _summary(state: RolloutState, index: int, name: str) -> StepSummary:
    counts = state.step_counts(name)
    verdicts = [v for v in state.verdicts if v.step == name]
    last = verdicts[-1] if verdicts else None
    return StepSummary(
        name=name,
        state=step_state(state, index, judged=last is not None),
        devices=sum(counts.values()),
        counts={s.value: counts.get(s, 0) for s in DeviceStatus},
        verdict=last.verdict if last else None,
        verdict_reason=last.reason if last else None,
    )
