"""Where each step of a rollout stands, as operators see it: waiting, running, baking or done, with its devices
counted by status and the step's latest gate verdict.

Derived from the persisted `RolloutState` alone (pure: no I/O, no clock; the per-step counts the planner keeps and
the rollout row stores), so the API and anything else that shows a rollout say the same thing. Also what a rollout
waits for (its in-flight devices, each with why it has not answered: offline since when, or online and working,
and until when it is waited for), from presence facts the caller reads for those few devices. This module must
never decide anything about a rollout: the planner does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from control_plane.domain.fleet import Presence
from control_plane.domain.rollout_progress import IN_FLIGHT, DeviceStatus, DeviceTrack, RolloutState, Verdict

WAITS_SHOWN = 20  # in-flight devices a rollout's view names (the counts say how many there are in all)


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
    bake_ends_at: datetime | None = None  # the step is baking: when its bake time is over (the server's time)


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
        bake_ends_at=bake_end(state) if index == state.step_index else None,
    )


def bake_end(state: RolloutState) -> datetime | None:
    """When the current step's bake is over, while it bakes (its gate may still fail it earlier)."""
    if state.phase.final or state.baked_since is None:
        return None
    return state.baked_since + timedelta(seconds=state.spec.bake_s)


@dataclass(frozen=True)
class Seen:
    """What the control plane knows of a device's presence (read for the few devices a view names)."""

    presence: Presence
    last_seen: datetime | None


@dataclass(frozen=True)
class Wait:
    """A device the rollout waits for: its status (in progress or restoring), why, and until when."""

    device_id: str
    step: str
    status: DeviceStatus
    published_at: datetime | None
    deadline: datetime | None
    why: str


def in_flight(state: RolloutState, at_most: int = WAITS_SHOWN) -> list[DeviceTrack]:
    """The first `at_most` devices (by id) being installed or restored; no walk when there are none."""
    if not state.count(IN_FLIGHT):
        return []
    found: list[DeviceTrack] = []
    for track in state.devices:
        if track.status in IN_FLIGHT:
            found.append(track)
            if len(found) >= at_most:
                break
    return found


def waits(state: RolloutState, tracks: Iterable[DeviceTrack], seen: Mapping[str, Seen]) -> list[Wait]:
    """Why each of these in-flight devices has not answered yet: offline (since when), never heard from, or no
    longer in the fleet; online ones are working on it. Each is waited for until its deadline, then counts as
    timed out (or not restored)."""
    deadline = timedelta(seconds=state.spec.device_deadline_s)
    out = []
    for track in tracks:
        until = track.published_at + deadline if track.published_at is not None else None
        doing = "restoring its previous version" if track.status is DeviceStatus.RESTORING else "installing"
        out.append(Wait(track.device_id, track.step, track.status, track.published_at, until,
                        _why(seen.get(track.device_id), doing)))  # fmt: skip
    return out


def _why(seen: Seen | None, doing: str) -> str:
    if seen is None:
        return "not in the fleet any more (forgotten); counts as failed at its deadline"
    if seen.presence is Presence.ONLINE:
        return f"online, {doing}"
    last = seen.last_seen.isoformat(timespec="seconds") if seen.last_seen is not None else None
    if seen.presence is Presence.OFFLINE:
        return f"offline since {last}" if last else "offline"
    return f"not heard from since {last}" if last else "never heard from"
